"""The data of masked image modeling pretraining: images only, labels never read.

- :func:`pretraining_cases`: every training image of the fold plus the unlabeled pool;
- :func:`get_pretraining_dataloaders`: random crops without foreground oversampling, nnU-Net's training
  augmentation, read through :class:`nnunetv2_advmim.data.unlabeled.UnlabeledDataset` and
  :class:`nnunetv2_advmim.data.semisup_loader.nnUNetUnlabeledDataLoader`, which never open a segmentation file.
  Validation: held-out images (the fold's validation cases), random crops, no augmentation.
"""
from typing import Dict, Tuple

from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunetv2_advmim.data.semisup_loader import make_augmenter, nnUNetUnlabeledDataLoader
from nnunetv2_advmim.data.unlabeled import UnlabeledDataset, find_unlabeled_cases


def pretraining_cases(trainer, include_validation: bool = False) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(training cases, validation cases) as ``{identifier: preprocessed folder}``.

    Training = every training case of the fold (``trainer.do_split()``; its labels are never read) plus the
    fold's unlabeled pool (preprocessed ``imagesUnlabeled`` and label-budget unlabeled cases). Validation = the
    fold's held-out cases (with fold ``all``, nnU-Net's convention: the training cases), which join the
    training images only with ``include_validation``.
    """
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
    tr = make_augmenter(dl_tr, n, max(6, n // 2), pin_memory)
    va = make_augmenter(dl_val, 0 if n == 0 else max(1, n // 2), max(3, n // 4), pin_memory)
    return tr, va
