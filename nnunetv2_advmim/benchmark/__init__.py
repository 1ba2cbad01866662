"""Measurements: ``nnUNetv2_advmim_benchmark`` (cli, measure), the MIM pretraining step timings (mim_steps) and the
stand-alone measurements run with ``python -m nnunetv2_advmim.benchmark.<module>``: acdc_gpu (through its
hard-limit wrapper acdc_gpu.sh), architectures, preprocess_unlabeled, study_noise, training_loop; phase_timing holds
the training-phase logging of the trainer variants that acdc_gpu and training_loop write."""
