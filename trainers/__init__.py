"""Trainers found by stock nnU-Net through ``nnUNet_extTrainer`` (see ``nnunetv2_advmim.env``).

nnU-Net imports every module of this folder under its bare module name (``nnUNetTrainer_demo``, ...)
and drops it from ``sys.modules`` after the lookup, so modules here use absolute imports only and
keep anything that must pickle (loaders, transforms) in the core package ``nnunetv2_advmim``.
Module names follow nnU-Net's habit of naming the file after the (main) trainer class, which also
keeps them from colliding with other top-level modules.
"""
