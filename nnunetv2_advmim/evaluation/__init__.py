"""Evaluation: challenge metrics, the evaluate/compare/export-submission commands, the MIM example figure and the
AdvMIM progress plot."""
