"""nnunetv2-advmim: semi-supervised and self-supervised training for nnU-Net v2.

Kept free of heavy imports: ``nnunetv2_advmim._startup`` imports this package at every interpreter
start-up (through ``nnunetv2_advmim.pth``).
"""
__version__ = "0.1.0"
