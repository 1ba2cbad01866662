"""One AdvMIM choice changed per trainer: the arms of an ablation study.

Put this folder on ``nnUNet_extTrainer`` and name the classes as study arms, e.g.

    export nnUNet_extTrainer=$PWD/docs/examples
    nnUNetv2_advmim_study -d 970 -c 2d -p nnUNetPlans_small -n 4 --draws 3 --epochs 50 --iterations 20 \
        -tr nnUNetTrainer nnUNetTrainerAdvMIM nnUNetTrainerAdvMIM_rampups nnUNetTrainerAdvMIM_fgUnlabeled

Every class sets one attribute (docs/advmim.md, "Choices the paper leaves open") and keeps the others at their
defaults, so each arm differs from ``nnUNetTrainerAdvMIM`` by exactly that choice. Add ``:cnn`` or ``:ensemble``
to an arm to predict with C or with both networks from the same training.
"""
import torch

from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM


class _OneChoice(nnUNetTrainerAdvMIM):
    choice = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for name, value in self.choice.items():
            if not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__}: nnUNetTrainerAdvMIM has no attribute {name!r}")
            setattr(self, name, value)


class nnUNetTrainerAdvMIM_rampups(_OneChoice):
    """lambda_u and lambda_adv ramp up like lambda_ct (sigmoid over the first 40 % of the iterations)."""
    choice = {"u_rampup_fraction": 0.4, "adv_rampup_fraction": 0.4}


class nnUNetTrainerAdvMIM_batchDice(_OneChoice):
    """Dice terms on unlabeled images summed over the batch."""
    choice = {"unlabeled_batch_dice": True}


class nnUNetTrainerAdvMIM_discUnlabeled(_OneChoice):
    """The discriminators' real maps come from the unlabeled crops (real and fake differ by the mask only)."""
    choice = {"disc_real": "unlabeled"}


class nnUNetTrainerAdvMIM_block16(_OneChoice):
    """16-voxel mask blocks (4 x 4 blocks on a 64 x 64 patch) instead of the network's downsampling."""
    choice = {"mask_block_size": 16}


class nnUNetTrainerAdvMIM_sgdDisc(_OneChoice):
    """SGD discriminators with poly decay from 1e-2 and gradient clipping."""
    choice = {"disc_optimizer": "sgd", "disc_lr": 1e-2, "disc_grad_clip": 12.0}


class nnUNetTrainerAdvMIM_fgUnlabeled(_OneChoice):
    """A third of the unlabeled crops centred on pseudo-label foreground (nnU-Net's labeled share)."""
    choice = {"unlabeled_oversample_foreground": 0.33}
