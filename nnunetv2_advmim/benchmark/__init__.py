"""Measurements: ``nnUNetv2_advmim_benchmark`` (cli, measure) and the MIM pretraining step timings (mim_steps)."""
