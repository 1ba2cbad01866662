"""AdvMIM on shorter schedules than nnU-Net's default 1000 epochs x 250 iterations.

One AdvMIM iteration trains two networks, each on plain and masked labeled and unlabeled crops, and costs several
stock iterations (docs/runtime.md), so the default schedule takes days where stock nnU-Net takes hours. These
variants change the number of epochs only (250 iterations each), as nnU-Net's own ``nnUNetTrainer_250epochs`` does
for the stock trainer; every ramp-up and learning-rate schedule follows the shorter length.
"""
from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM
from nnunetv2_advmim.trainers.one_choice import OneChoice


class nnUNetTrainerAdvMIM_250epochs(OneChoice, nnUNetTrainerAdvMIM):
    """The default AdvMIM, 250 epochs."""
    choice = {"num_epochs": 250}


class nnUNetTrainerAdvMIM_100epochs(OneChoice, nnUNetTrainerAdvMIM):
    """The default AdvMIM, 100 epochs."""
    choice = {"num_epochs": 100}


class nnUNetTrainerAdvMIM_50epochs(OneChoice, nnUNetTrainerAdvMIM):
    """The default AdvMIM, 50 epochs."""
    choice = {"num_epochs": 50}
