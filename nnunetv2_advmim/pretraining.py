"""Masked image modeling pretraining inside nnU-Net: network, data and schedule parts (DESIGN.md section 7).

What the MIM trainers (``nnunetv2_advmim.trainers.nnUNetTrainerMIM``) build from here:

- :func:`build_pretraining_network`: the *downstream* network of the plans (same class, same arguments),
  swapped for its maskable subclass (``PlainConvUNet`` -> ``MaskablePlainConvUNet``, ``ResidualEncoderUNet`` ->
  ``MaskableResidualEncoderUNet``; ``HybridTransformerUNet`` is maskable already), with
  ``num_output_channels = num_input_channels`` and deep supervision off. Its state-dict keys are the stock
  network's plus ``mask_token``, and only ``decoder.seg_layers.*`` differ in shape, which nnU-Net's
  ``load_pretrained_weights`` skips: the checkpoint loads with the stock ``-pretrained_weights`` flag
  (DESIGN.md section 3). ``hybrid=True`` converts a CNN plan into the hybrid network on the fly with
  :func:`nnunetv2_advmim.plan_hybrid.hybrid_arch_kwargs` (the conversion ``nnUNetv2_advmim_plan_hybrid`` writes).
- :func:`pretraining_cases` / :func:`get_pretraining_dataloaders`: every training image of the fold plus the
  unlabeled pool, random crops without foreground oversampling, nnU-Net's training augmentation, read through
  :class:`nnunetv2_advmim.unlabeled.UnlabeledDataset` and
  :class:`nnunetv2_advmim.semisup_loader.nnUNetUnlabeledDataLoader`, which never open a segmentation file.
  Validation: held-out images (the fold's validation cases), random crops, no augmentation.
- :class:`WarmupCosineLRScheduler`: linear warm-up then cosine decay, stepped per epoch like nnU-Net's
  ``PolyLRScheduler`` (stateless: the lr is a function of the epoch, so ``--c`` resumes it exactly).
"""
import math
import os
from typing import Dict, Optional, Tuple

import torch
from torch.optim.lr_scheduler import _LRScheduler

STOCK_TO_MASKABLE = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet":
        "nnunetv2_advmim.architectures.maskable.MaskablePlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet":
        "nnunetv2_advmim.architectures.maskable.MaskableResidualEncoderUNet",
}
MASKABLE = (
    "nnunetv2_advmim.architectures.maskable.MaskablePlainConvUNet",
    "nnunetv2_advmim.architectures.maskable.MaskableResidualEncoderUNet",
    "nnunetv2_advmim.architectures.MaskablePlainConvUNet",
    "nnunetv2_advmim.architectures.MaskableResidualEncoderUNet",
    "nnunetv2_advmim.architectures.HybridTransformerUNet",
    "nnunetv2_advmim.architectures.hybrid_unet.HybridTransformerUNet",
)
HYBRID_NAMES = MASKABLE[-2:]


def maskable_class_name(network_class_name: str) -> str:
    """Dotted name of the maskable version of a plans' network class (module docstring)."""
    if network_class_name in MASKABLE:
        return network_class_name
    if network_class_name in STOCK_TO_MASKABLE:
        return STOCK_TO_MASKABLE[network_class_name]
    raise ValueError(f"MIM pretraining has no maskable version of the network class '{network_class_name}' named in "
                     f"the plans (architecture.network_class_name). Supported: {sorted(STOCK_TO_MASKABLE)} and "
                     f"{sorted(set(MASKABLE))}. Pretrain with plans that use one of them.")


def pretraining_arch(network_class_name: str, arch_kwargs: dict, kw_requires_import, hybrid: bool = False,
                     **transformer_kwargs) -> Tuple[str, dict, tuple]:
    """(class name, arguments, arguments needing import) of the pretraining network (module docstring)."""
    kwargs = dict(arch_kwargs)
    req = tuple(kw_requires_import)
    if hybrid and network_class_name not in HYBRID_NAMES:
        from nnunetv2_advmim.plan_hybrid import HYBRID_CLASS, hybrid_arch_kwargs
        kwargs = hybrid_arch_kwargs(kwargs, **transformer_kwargs)
        return HYBRID_CLASS, kwargs, tuple(k for k in req if k in kwargs)
    return maskable_class_name(network_class_name), kwargs, req


def build_pretraining_network(configuration_manager, num_input_channels: int, hybrid: bool = False,
                              **transformer_kwargs) -> torch.nn.Module:
    """The plans' downstream network, maskable, ``num_input_channels`` outputs, no deep supervision."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    name, kwargs, req = pretraining_arch(configuration_manager.network_arch_class_name,
                                         configuration_manager.network_arch_init_kwargs,
                                         configuration_manager.network_arch_init_kwargs_req_import, hybrid,
                                         **transformer_kwargs)
    return get_network_from_plans(name, kwargs, req, num_input_channels, num_input_channels, allow_init=True,
                                  deep_supervision=False)


# ---------------------------------------------------------------------------------------------------- data
def pretraining_cases(trainer, include_validation: bool = False) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(training cases, validation cases) as ``{identifier: preprocessed folder}`` (DESIGN.md section 7).

    Training = every training case of the fold (``trainer.do_split()``; its labels are never read) plus the
    fold's unlabeled pool (preprocessed ``imagesUnlabeled`` and label-budget unlabeled cases). Validation = the
    fold's held-out cases (with fold ``all``, nnU-Net's convention: the training cases), which join the
    training images only with ``include_validation``.
    """
    from nnunetv2_advmim.unlabeled import find_unlabeled_cases
    tr_keys, val_keys = trainer.do_split()
    folder = trainer.preprocessed_dataset_folder
    pool = find_unlabeled_cases(trainer.preprocessed_dataset_folder_base, trainer.configuration_manager.data_identifier,
                                trainer.fold, include_validation)
    train = {k: folder for k in tr_keys}
    for k, f in pool.items():
        train.setdefault(k, f)
    if include_validation:
        for k in val_keys:
            train.setdefault(k, folder)
    val = {k: folder for k in val_keys}
    if not train:
        raise RuntimeError(f"No training image for fold {trainer.fold} in {folder}: nothing to pretrain on.")
    if not val:
        raise RuntimeError(f"Fold {trainer.fold} of {trainer.preprocessed_dataset_folder_base} has no validation case "
                           f"for the reconstruction loss; use another fold, fold 'all', or a splits_final.json with "
                           f"validation cases.")
    return train, val


def get_pretraining_dataloaders(trainer, include_validation: bool = False):
    """(train augmenter, validation augmenter) yielding ``{'data', 'keys'}`` batches, never reading labels.

    Train: random crops of ``initial_patch_size`` (no foreground oversampling) through the trainer's own
    ``get_training_transforms`` (nnU-Net's spatial + intensity augmentation, no deep-supervision targets).
    Validation: random crops of the patch size, no augmentation. Workers as in nnU-Net's ``get_dataloaders``
    (``nnUNet_n_proc_DA``; 0 = in-process, deterministic under a seed).
    """
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    from nnunetv2_advmim.semisup_loader import _augmenter, nnUNetUnlabeledDataLoader
    from nnunetv2_advmim.unlabeled import UnlabeledDataset

    if trainer.is_cascaded:
        raise NotImplementedError("MIM pretraining does not support cascade configurations (3d_cascade_fullres): "
                                  "unlabeled images have no previous-stage segmentation. Use 3d_fullres, 3d_lowres "
                                  "or 2d.")
    if trainer.dataset_class is None:
        trainer.dataset_class = infer_dataset_class(trainer.preprocessed_dataset_folder)
    if not hasattr(trainer, "batch_size"):
        trainer._set_batch_size_and_oversample()
    cm, lm = trainer.configuration_manager, trainer.label_manager
    rotation_for_DA, do_dummy_2d_data_aug, initial_patch_size, mirror_axes = \
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    tr_transforms = trainer.get_training_transforms(
        cm.patch_size, rotation_for_DA, None, mirror_axes, do_dummy_2d_data_aug, use_mask_for_norm=cm.use_mask_for_norm,
        is_cascaded=False, foreground_labels=lm.foreground_labels,
        regions=lm.foreground_regions if lm.has_regions else None, ignore_label=lm.ignore_label)
    train, val = pretraining_cases(trainer, include_validation)
    trainer.print_to_log_file(f"MIM pretraining data: {len(train)} training images (labels never read), "
                              f"{len(val)} validation images")
    mask_from_image = any(cm.use_mask_for_norm)
    dl_tr = nnUNetUnlabeledDataLoader(UnlabeledDataset(train), trainer.batch_size, initial_patch_size, cm.patch_size,
                                      lm, transforms=tr_transforms, mask_from_image=mask_from_image)
    dl_val = nnUNetUnlabeledDataLoader(UnlabeledDataset(val), trainer.batch_size, cm.patch_size, cm.patch_size, lm,
                                       transforms=None, mask_from_image=mask_from_image)
    n = get_allowed_n_proc_DA()
    pin_memory = trainer.device.type == "cuda"
    tr = _augmenter(dl_tr, n, max(6, n // 2), pin_memory)
    va = _augmenter(dl_val, 0 if n == 0 else max(1, n // 2), max(3, n // 4), pin_memory)
    return tr, va


# ---------------------------------------------------------------------------------------------- schedule
def warmup_cosine_lr(step: int, initial_lr: float, max_steps: int, warmup_steps: int) -> float:
    """AnatoMask's schedule (DESIGN.md section 7): ``lr * (step + 1) / warmup`` during the first ``warmup_steps``
    steps, then ``lr * 0.5 * (1 + cos(pi * (step - warmup) / (max_steps - warmup)))``."""
    warmup_steps = max(0, min(int(warmup_steps), int(max_steps) - 1))
    if step < warmup_steps:
        return initial_lr * (step + 1) / warmup_steps
    span = max(1, int(max_steps) - warmup_steps)
    t = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return initial_lr * 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupCosineLRScheduler(_LRScheduler):
    """Per-epoch warm-up + cosine scheduler with the interface of nnU-Net's ``PolyLRScheduler``
    (``step(current_epoch)`` sets the lr of every parameter group)."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_steps: int = 20,
                 current_step: Optional[int] = None):
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.warmup_steps = warmup_steps
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = warmup_cosine_lr(current_step, self.initial_lr, self.max_steps, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return self._last_lr


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (used by tests that compare batches)."""
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
