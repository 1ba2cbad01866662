"""One AdvMIM choice changed per trainer: the arms of an ablation study.

Installed with the package, so stock nnU-Net and the study find them by name, e.g.

    nnUNetv2_advmim_study -d 970 -c 2d -p nnUNetPlans_small -n 4 --draws 3 --epochs 50 --iterations 20 \
        -tr nnUNetTrainer nnUNetTrainerAdvMIM nnUNetTrainerAdvMIM_rampups nnUNetTrainerAdvMIM_fgUnlabeled

Every class changes one choice (docs/advmim.md, "Choices the paper leaves open") and keeps the others at their
defaults, so each arm differs from its parent by exactly that choice: ``nnUNetTrainerAdvMIM`` (no adversarial loss)
for the choices that do not concern the discriminators, ``nnUNetTrainerAdvMIM_withAdv`` (the paper's adversarial
loss) for those that do. Add ``:hybrid`` or ``:ensemble`` to an arm to predict with S or with both networks from the
same training.
"""
from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM, nnUNetTrainerAdvMIM_withAdv
from nnunetv2_advmim.trainers.one_choice import OneChoice


class nnUNetTrainerAdvMIM_rampups(OneChoice, nnUNetTrainerAdvMIM_withAdv):
    """lambda_u and lambda_adv ramp up like lambda_ct (sigmoid over the first 40 % of the iterations)."""
    choice = {"u_rampup_fraction": 0.4, "adv_rampup_fraction": 0.4}


class nnUNetTrainerAdvMIM_batchDice(OneChoice, nnUNetTrainerAdvMIM):
    """Dice terms on unlabeled images summed over the batch."""
    choice = {"unlabeled_batch_dice": True}


class nnUNetTrainerAdvMIM_discUnlabeled(OneChoice, nnUNetTrainerAdvMIM_withAdv):
    """The discriminators' real maps come from the unlabeled crops (real and fake differ by the mask only)."""
    choice = {"disc_real": "unlabeled"}


class nnUNetTrainerAdvMIM_block16(OneChoice, nnUNetTrainerAdvMIM):
    """16-voxel mask blocks (4 x 4 blocks on a 64 x 64 patch) instead of the network's downsampling."""
    choice = {"mask_block_size": 16}


class nnUNetTrainerAdvMIM_sgdDisc(OneChoice, nnUNetTrainerAdvMIM_withAdv):
    """SGD discriminators with poly decay from 1e-2 and gradient clipping."""
    choice = {"disc_optimizer": "sgd", "disc_lr": 1e-2, "disc_grad_clip": 12.0}


class nnUNetTrainerAdvMIM_fgUnlabeled(OneChoice, nnUNetTrainerAdvMIM):
    """A third of the unlabeled crops centred on pseudo-label foreground (nnU-Net's labeled share)."""
    choice = {"unlabeled_oversample_foreground": 0.33}


class nnUNetTrainerAdvMIM_uRampup(OneChoice, nnUNetTrainerAdvMIM):
    """lambda_u (the masked-domain pseudo-label terms) ramps up like lambda_ct (sigmoid over the first 40 % of the
    iterations) instead of starting at full weight while the partner's pseudo-labels are still noise."""
    choice = {"u_rampup_fraction": 0.4}


class nnUNetTrainerAdvMIM_ratio50(OneChoice, nnUNetTrainerAdvMIM):
    """Half of the mask blocks masked instead of 70 %: a small structure is hidden less often in the masked domain."""
    choice = {"mask_ratio": 0.5}


class nnUNetTrainerAdvMIM_noMaskedUnlabeled(OneChoice, nnUNetTrainerAdvMIM):
    """The masked domain on labeled crops only (lambda_u = 0): cross teaching plus the masked labeled term. Tells
    whether the masked pseudo-label terms or the masking itself keep a small, late-learned class from emerging."""
    choice = {"lambda_u": 0.0}


class nnUNetTrainerAdvMIM_halfLR(OneChoice, nnUNetTrainerAdvMIM):
    """C's SGD learning rate 5e-3 instead of nnU-Net's 1e-2. C's loss adds the masked labeled term to the plain
    supervised one (and the unlabeled terms), about twice the gradient of stock training's single term, so with SGD
    the same learning rate takes steps about twice as large."""
    choice = {"initial_lr": 5e-3}


class nnUNetTrainerAdvMIM_noMaskedLabeled(OneChoice, nnUNetTrainerAdvMIM):
    """The masked domain on unlabeled crops only (the masked labeled term weighted 0): tells whether asking for a small
    structure hidden under a mask block on labeled crops keeps it from being learned."""
    choice = {"lambda_masked_labeled": 0.0}


# the official code's choices one at a time on top of the default (each the name of what it changes)
class nnUNetTrainerAdvMIM_maskedCEOnly(OneChoice, nnUNetTrainerAdvMIM):
    """The default with the masked unlabeled term wCE only (no wDice), as the official code."""
    choice = {"masked_unlabeled_dice": False}


class nnUNetTrainerAdvMIM_hybridMaskedCE(OneChoice, nnUNetTrainerAdvMIM):
    """The default with S's masked labeled term nnU-Net's CE alone (C keeps CE + Dice), as the official code."""
    choice = {"masked_labeled_ce_only": ("hybrid",)}


class nnUNetTrainerAdvMIM_constantCT(OneChoice, nnUNetTrainerAdvMIM):
    """The default with the cross-teaching weight 0.1 from the first iteration (no ramp-up), as the official code."""
    choice = {"ct_rampup_fraction": 0.0}


class nnUNetTrainerAdvMIM_officialDisc(OneChoice, nnUNetTrainerAdvMIM):
    """The default with the adversarial loss and the official discriminator (4x4 kernels, 4x4 stride-2 head) on SGD
    at lr 0.05, momentum 0.9, weight decay 1e-4, poly, clipping 5."""
    choice = {"adversarial": True, "disc_kernel_size": 4, "disc_head_stride": 2, "disc_optimizer": "sgd",
              "disc_lr": 0.05, "disc_weight_decay": 1e-4, "disc_grad_clip": 5.0}


class nnUNetTrainerAdvMIM_unzeroedInput(OneChoice, nnUNetTrainerAdvMIM):
    """The default with masked input voxels left as they are (only the stem features become the token), as the
    official code."""
    choice = {"zero_masked_input": False}
