"""One pretraining choice changed per trainer: the pretraining arms of an ablation study.

Installed with the package, so stock nnU-Net and the study find them by name, e.g.

    nnUNetv2_advmim_study -d 970 -c 2d -p nnUNetPlans_small -n 4 --draws 3 --epochs 50 --iterations 20 \
        -tr nnUNetTrainer --pretrainer nnUNetTrainerAnatoMask nnUNetTrainerAnatoMask_normalised

Every class sets one attribute (docs/pretraining.md, "Choices and their defaults") and keeps the others at their
defaults, so each arm differs from its parent trainer by exactly that choice. The fine-tuning warm-up is a
fine-tuner, not a pretrainer: ``--finetuner nnUNetTrainer_FinetuneWarmup`` (in a study folder of its own, since
the fine-tuner is one of a study's fixed settings).
"""
from nnunetv2_advmim.trainers.nnUNetTrainerMIM import nnUNetTrainerAnatoMask, nnUNetTrainerMIM, nnUNetTrainerMPSAMS
from nnunetv2_advmim.trainers.one_choice import OneChoice


class nnUNetTrainerAnatoMask_normalised(OneChoice, nnUNetTrainerAnatoMask):
    """Hard blocks ranked by the teacher's error against the block-normalised targets alone (the ranking before
    variance weighting became the default; nearly uniform background blocks can rank hardest)."""
    choice = {"anatomask_ranking": "normalised"}


class nnUNetTrainerAnatoMask_raw(OneChoice, nnUNetTrainerAnatoMask):
    """Hard blocks ranked by the teacher's error against raw intensities."""
    choice = {"anatomask_ranking": "raw"}


class nnUNetTrainerMPSAMS_excludeFlat(OneChoice, nnUNetTrainerMPSAMS):
    """Only blocks inside the foreground that are not near-constant are clustered and can be lesion-like."""
    choice = {"mpsams_exclude_flat": True}


class nnUNetTrainerMIM_noIntensityAug(OneChoice, nnUNetTrainerMIM):
    """Random-block MIM without nnU-Net's intensity transforms."""
    choice = {"pretrain_intensity_augmentation": False}


class nnUNetTrainerAnatoMask_noIntensityAug(OneChoice, nnUNetTrainerAnatoMask):
    """AnatoMask without nnU-Net's intensity transforms."""
    choice = {"pretrain_intensity_augmentation": False}
