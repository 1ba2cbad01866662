"""The data of masked image modeling pretraining: images only, labels never read.

- :func:`pretraining_cases`: every training image of the fold plus the unlabeled pool;
- :func:`get_pretraining_dataloaders`: random crops without foreground oversampling, nnU-Net's training
  augmentation (:func:`pretraining_transforms`: with or without its intensity transforms), read through
  :class:`nnunetv2_advmim.data.unlabeled.UnlabeledDataset` and
  :class:`nnunetv2_advmim.data.semisup_loader.nnUNetUnlabeledDataLoader`, which never open a segmentation file.
  Validation: held-out images (the fold's validation cases), random crops, no augmentation.
"""
from typing import Dict, Tuple

from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import BrightnessAdditiveTransform, \
    MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.intensity.inversion import InvertImageTransform
from batchgeneratorsv2.transforms.intensity.random_clip import CutOffOutliersTransform
from batchgeneratorsv2.transforms.local.brightness_gradient import BrightnessGradientAdditiveTransform
from batchgeneratorsv2.transforms.local.local_contrast import LocalContrastTransform
from batchgeneratorsv2.transforms.local.local_gamma import LocalGammaTransform
from batchgeneratorsv2.transforms.local.local_smoothing import LocalSmoothingTransform
from batchgeneratorsv2.transforms.noise.blank_rectangle import BlankRectangleTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.noise.median_filter import MedianFilterTransform
from batchgeneratorsv2.transforms.noise.rician import RicianNoiseTransform
from batchgeneratorsv2.transforms.noise.sharpen import SharpeningTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import OneOfTransform, RandomTransform
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunetv2_advmim.data.semisup_loader import make_augmenter, nnUNetUnlabeledDataLoader, timing_free_transforms
from nnunetv2_advmim.data.unlabeled import UnlabeledDataset, find_unlabeled_cases


# Transforms that change intensities rather than geometry: the six of nnU-Net's training pipeline (noise, blur,
# brightness, contrast, low-resolution simulation, gamma) and batchgeneratorsv2's other intensity, noise and local
# intensity transforms, for trainers that build their pipeline from those.
INTENSITY_TRANSFORMS = (
    GaussianNoiseTransform, GaussianBlurTransform, MultiplicativeBrightnessTransform, ContrastTransform,
    SimulateLowResolutionTransform, GammaTransform,
    BrightnessAdditiveTransform, InvertImageTransform, CutOffOutliersTransform, RicianNoiseTransform,
    MedianFilterTransform, SharpeningTransform, BlankRectangleTransform, BrightnessGradientAdditiveTransform,
    LocalContrastTransform, LocalGammaTransform, LocalSmoothingTransform,
)


def is_intensity_transform(transform: BasicTransform) -> bool:
    """True for an ``INTENSITY_TRANSFORMS`` instance, also when wrapped in a ``RandomTransform``."""
    while isinstance(transform, RandomTransform):
        transform = transform.transform
    return isinstance(transform, INTENSITY_TRANSFORMS)


def without_intensity_transforms(transform: BasicTransform) -> BasicTransform:
    """A copy of a transform pipeline with every intensity transform (``is_intensity_transform``) left out.

    ``ComposeTransforms`` and ``OneOfTransform`` are filtered recursively (a ``OneOfTransform`` left empty is
    dropped); spatial transforms, mirroring, masking and the label transforms stay, in their order.
    """
    if isinstance(transform, ComposeTransforms):
        kept = [without_intensity_transforms(t) for t in transform.transforms if not is_intensity_transform(t)]
        return ComposeTransforms([t for t in kept if t is not None])
    if isinstance(transform, OneOfTransform):
        kept = [without_intensity_transforms(t) for t in transform.list_of_transforms if not is_intensity_transform(t)]
        kept = [t for t in kept if t is not None]
        return OneOfTransform(kept) if kept else None
    return None if is_intensity_transform(transform) else transform


def pretraining_transforms(trainer, patch_size, rotation_for_DA, mirror_axes, do_dummy_2d_data_aug) -> BasicTransform:
    """The training transforms of pretraining: the trainer's ``get_training_transforms`` (no deep-supervision
    targets, no cascade), without the intensity transforms when ``trainer.pretrain_intensity_augmentation`` is
    False (the reconstruction targets then carry no augmentation noise; crops, spatial transforms and mirroring
    stay). A seeded trainer (``deterministic_seed``) gets them through ``timing_free_transforms``."""
    cm, lm = trainer.configuration_manager, trainer.label_manager
    transforms = trainer.get_training_transforms(
        patch_size, rotation_for_DA, None, mirror_axes, do_dummy_2d_data_aug, use_mask_for_norm=cm.use_mask_for_norm,
        is_cascaded=False, foreground_labels=lm.foreground_labels,
        regions=lm.foreground_regions if lm.has_regions else None, ignore_label=lm.ignore_label)
    if getattr(trainer, "deterministic_seed", None) is not None:
        transforms = timing_free_transforms(transforms)
    if getattr(trainer, "pretrain_intensity_augmentation", True):
        return transforms
    return without_intensity_transforms(transforms)


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

    Train: random crops of ``initial_patch_size`` (no foreground oversampling) through ``pretraining_transforms``
    (the trainer's own ``get_training_transforms``: nnU-Net's spatial + intensity augmentation, or spatial only
    with ``pretrain_intensity_augmentation = False``; no deep-supervision targets).
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
    tr_transforms = pretraining_transforms(trainer, cm.patch_size, rotation_for_DA, mirror_axes, do_dummy_2d_data_aug)
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
