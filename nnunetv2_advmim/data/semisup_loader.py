"""Labeled + unlabeled batches per iteration, with nnU-Net's own loaders and augmentation.

``get_semisup_dataloaders(trainer)`` is what a semi-supervised trainer calls from its ``get_dataloaders``. It
mirrors ``nnUNetTrainer.get_dataloaders`` (2.8.1) step by step:

- labeled stream: nnU-Net's ``nnUNetDataLoader`` on the fold's labeled training cases with foreground
  oversampling and the trainer's ``get_training_transforms`` (deep-supervision targets as usual);
- unlabeled stream: :class:`nnUNetUnlabeledDataLoader` on the fold's unlabeled pool
  (:func:`nnunetv2_advmim.data.unlabeled.find_unlabeled_cases`): random crops (no ``class_locations``; a trainer
  may give it pseudo-label locations, ``data.pseudo_sampling``, to centre a share of them on foreground), the *same* spatial + intensity transforms (built by the same trainer method, without
  deep-supervision downsampling), and no targets. The transforms need a segmentation tensor, so each sample
  gets a dummy one built from geometry only (-1 where the crop pads beyond the image, 0 elsewhere, and -1
  where the image is exactly 0 when the plan normalises within a mask); it is dropped after the transforms;
- both through ``NonDetMultiThreadedAugmenter`` (``SingleThreadedAugmenter`` when ``nnUNet_n_proc_DA=0``);
- validation: exactly nnU-Net's validation loader.

With a seeded trainer (``trainer.deterministic_seed`` set, ``nnUNet_advmim_seed``), :func:`timing_free_transforms`
fixes the one timing-dependent choice of nnU-Net's pipeline: ``GaussianBlurTransform(benchmark=True)`` times FFT
against direct convolution and keeps the faster, so under a different machine load the same seed blurs with
another implementation and gives slightly different floats.

:class:`SemiSupervisedLoader` yields ``{'data', 'target', 'keys'}`` (the labeled batch, as nnU-Net's
``train_step`` expects) plus ``{'data_unlabeled', 'keys_unlabeled'}``. Its worker processes start at the first
``next``; call ``finish()`` at the end of training (nnU-Net's ``on_train_end`` only stops its own augmenter
types). Everything here pickles (worker processes receive the data loaders).
"""
from typing import Optional

import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import OneOfTransform, RandomTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from threadpoolctl import threadpool_limits

from nnunetv2_advmim.data.unlabeled import UnlabeledDataset, find_unlabeled_cases, require_unlabeled_pool


class nnUNetUnlabeledDataLoader(nnUNetDataLoader):
    """Random-crop batches of images without targets from an :class:`UnlabeledDataset` (module docstring).

    Uses ``nnUNetDataLoader``'s patch-size handling (2D patches from 3D arrays, ``need_to_pad``) and its
    ``get_bbox``: random crops, or crops centred on pseudo-label foreground when ``pseudo_locations`` and
    ``oversample_foreground_percent`` are set; never reads a segmentation or stored ``class_locations``.
    """

    def __init__(self, data: UnlabeledDataset, batch_size: int, patch_size, final_patch_size, label_manager,
                 transforms=None, mask_from_image: bool = False):
        super().__init__(data, batch_size, patch_size, final_patch_size, label_manager,
                         oversample_foreground_percent=0.0, sampling_probabilities=None, pad_sides=None,
                         probabilistic_oversampling=False, transforms=transforms)
        self.has_ignore = False  # ignore-label sampling needs class_locations of labels: never for unlabeled crops
        self.mask_from_image = mask_from_image
        # foreground-aware crops (off unless a trainer sets both): {case: class locations of its pseudo-labels}
        # (data.pseudo_sampling) and the share of each batch centred on them, as nnU-Net's oversampling
        self.pseudo_locations = {}
        self.oversample_foreground_percent = 0.0

    @property
    def dataset(self) -> UnlabeledDataset:
        """The unlabeled pool the crops come from (batchgenerators keeps it as the private ``_data``), for callers
        such as pseudo-label prediction that need whole images."""
        return self._data

    def _force_fg(self, key: str, sample_idx: int) -> bool:
        """Centre this sample on pseudo-label foreground: the last ``oversample_foreground_percent`` of the batch
        (nnU-Net's rule), for cases whose pseudo-labels are known."""
        return key in self.pseudo_locations and self.oversample_foreground_percent > 0 and \
            self._oversample_last_XX_percent(sample_idx)

    def _dummy_seg(self, image: torch.Tensor, data_shape, bbox_lbs, bbox_ubs) -> torch.Tensor:
        """Label-free stand-in for the segmentation the transforms expect: -1 on padding (and, for masked
        normalisation, where every channel is exactly 0, i.e. outside the preprocessing mask), else 0."""
        seg = torch.full((1, *image.shape[1:]), -1, dtype=torch.int16)
        inside = tuple(slice(max(lb, 0) - lb, min(ub, s) - lb) for lb, ub, s in zip(bbox_lbs, bbox_ubs, data_shape))
        seg[(slice(None),) + inside] = 0
        if self.mask_from_image:
            seg[0][(image == 0).all(0)] = -1
        return seg

    def generate_train_batch(self):
        selected_keys = self.get_indices()
        data_all = None
        with torch.no_grad():
            with threadpool_limits(limits=1, user_api=None):
                for j, key in enumerate(selected_keys):
                    data = self._data.load_data(key)
                    shape = data.shape[1:]
                    force_fg = self._force_fg(key, j)
                    bbox_lbs, bbox_ubs = self.get_bbox(shape, force_fg, self.pseudo_locations.get(key) if force_fg
                                                       else None)
                    bbox = [[lb, ub] for lb, ub in zip(bbox_lbs, bbox_ubs)]
                    image = torch.from_numpy(crop_and_pad_nd(data, bbox, 0)).float()
                    seg = self._dummy_seg(image, shape, bbox_lbs, bbox_ubs)
                    if self.patch_size_was_2d:
                        image, seg = image[:, 0], seg[:, 0]
                    if self.transforms is not None:
                        image = self.transforms(**{"image": image, "segmentation": seg})["image"]
                    if data_all is None:
                        data_all = torch.empty((self.batch_size, *image.shape), dtype=torch.float32)
                    data_all[j] = image
        return {"data": data_all, "keys": selected_keys}


def timing_free_transforms(transform):
    """``transform`` (changed in place and returned) with every ``GaussianBlurTransform`` inside ``ComposeTransforms``,
    ``OneOfTransform`` and ``RandomTransform`` set to ``benchmark=False``: blurring then always uses the same
    implementation, whatever the machine load when the first batches are drawn."""
    if isinstance(transform, GaussianBlurTransform):
        transform.benchmark = False
    elif isinstance(transform, RandomTransform):
        timing_free_transforms(transform.transform)
    elif isinstance(transform, ComposeTransforms):
        for t in transform.transforms:
            timing_free_transforms(t)
    elif isinstance(transform, OneOfTransform):
        for t in transform.list_of_transforms:
            timing_free_transforms(t)
    return transform


def make_augmenter(data_loader, num_processes: int, num_cached: int, pin_memory: bool):
    """The augmenter nnU-Net's ``get_dataloaders`` would use for this worker count."""
    if num_processes == 0:
        return SingleThreadedAugmenter(data_loader, None)
    return NonDetMultiThreadedAugmenter(data_loader=data_loader, transform=None, num_processes=num_processes,
                                        num_cached=num_cached, seeds=None, pin_memory=pin_memory, wait_time=0.002)


class SemiSupervisedLoader:
    """Yields one labeled and one unlabeled batch per ``next`` (module docstring). Pickles before it starts."""

    def __init__(self, labeled_loader: nnUNetDataLoader, unlabeled_loader: nnUNetUnlabeledDataLoader,
                 num_processes_labeled: int, num_processes_unlabeled: int, pin_memory: bool = False):
        self.labeled_loader = labeled_loader
        self.unlabeled_loader = unlabeled_loader
        self.num_processes_labeled = num_processes_labeled
        self.num_processes_unlabeled = num_processes_unlabeled
        self.pin_memory = pin_memory
        self._augmenters = None

    def _start(self):
        self._augmenters = (
            make_augmenter(self.labeled_loader, self.num_processes_labeled, max(6, self.num_processes_labeled // 2),
                       self.pin_memory),
            make_augmenter(self.unlabeled_loader, self.num_processes_unlabeled,
                       max(6, self.num_processes_unlabeled // 2), self.pin_memory),
        )

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._augmenters is None:
            self._start()
        labeled = next(self._augmenters[0])
        unlabeled = next(self._augmenters[1])
        return {"data": labeled["data"], "target": labeled["target"], "keys": labeled["keys"],
                "data_unlabeled": unlabeled["data"], "keys_unlabeled": unlabeled["keys"]}

    next = __next__

    def update_unlabeled(self, **attributes) -> None:
        """Set attributes of the unlabeled data loader (e.g. ``pseudo_locations``); its worker processes hold
        copies, so they are restarted with the new state at the next ``next``. The labeled stream keeps running."""
        for k, v in attributes.items():
            setattr(self.unlabeled_loader, k, v)
        if self._augmenters is not None:
            if hasattr(self._augmenters[1], "_finish"):
                self._augmenters[1]._finish()
            self._augmenters = (self._augmenters[0], make_augmenter(
                self.unlabeled_loader, self.num_processes_unlabeled, max(6, self.num_processes_unlabeled // 2),
                self.pin_memory))

    @property
    def unlabeled_keys(self) -> list:
        """The unlabeled pool's case identifiers, in the loader's order."""
        return list(self.unlabeled_loader.indices)

    @property
    def unlabeled_dataset(self):
        """The unlabeled pool (``UnlabeledDataset``: ``load_data(key)`` gives a preprocessed image, no labels)."""
        return self.unlabeled_loader.dataset

    def add_pseudo_locations(self, locations: dict, oversample_foreground_percent: float) -> None:
        """Centre ``oversample_foreground_percent`` of the unlabeled crops on pseudo-label foreground: ``locations``
        (``{case: {label: voxels}}``, ``data.pseudo_sampling``) join those known already; workers restart."""
        self.update_unlabeled(pseudo_locations={**self.unlabeled_loader.pseudo_locations, **locations},
                              oversample_foreground_percent=oversample_foreground_percent)

    def finish(self):
        """Stop the worker processes (call at the end of training; the next ``next`` would start new ones)."""
        if self._augmenters is not None:
            for a in self._augmenters:
                if hasattr(a, "_finish"):
                    a._finish()
            self._augmenters = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_augmenters"] = None  # running worker processes do not travel; a copy starts its own
        return state


def split_semisup_keys(trainer):
    """(labeled training keys, validation keys, unlabeled pool ``{id: folder}``) of the trainer's fold.

    Labeled keys = the fold's training keys from ``trainer.do_split()`` minus the unlabeled pool, so a case of
    the pool never contributes labels, also with fold ``all`` (whose stock split lists every case).
    """
    tr_keys, val_keys = trainer.do_split()
    folder_base = trainer.preprocessed_dataset_folder_base
    data_identifier = trainer.configuration_manager.data_identifier
    pool = find_unlabeled_cases(folder_base, data_identifier, trainer.fold)
    require_unlabeled_pool(pool, folder_base, data_identifier, trainer.fold, trainer.configuration_name)
    labeled = [k for k in tr_keys if k not in pool]
    if not labeled:
        raise RuntimeError(f"Fold {trainer.fold} of {folder_base} has no labeled training case left after removing "
                           f"the unlabeled pool; check splits_final.json / label_budget.json.")
    if trainer.fold == "all":
        val_keys = list(labeled)  # stock 'all' validates on its training cases; never on unlabeled ones
    return labeled, list(val_keys), pool


def get_semisup_dataloaders(trainer, unlabeled_batch_size: Optional[int] = None):
    """(train loader, validation augmenter) for a semi-supervised ``nnUNetTrainer`` subclass (module docstring).

    ``unlabeled_batch_size`` defaults to the plan's batch size (``trainer.batch_size``). Worker processes:
    ``nnUNet_n_proc_DA`` split between the two streams (at least one each).
    """

    if trainer.is_cascaded:
        raise NotImplementedError("Semi-supervised loading does not support cascade configurations (3d_cascade_fullres):"
                                  " unlabeled cases have no previous-stage segmentation. Use 3d_fullres, 3d_lowres or 2d.")
    if trainer.dataset_class is None:
        trainer.dataset_class = infer_dataset_class(trainer.preprocessed_dataset_folder)
    if not hasattr(trainer, "batch_size"):  # set by trainer.initialize(); allow use on an uninitialised trainer
        trainer._set_batch_size_and_oversample()
    cm, lm = trainer.configuration_manager, trainer.label_manager
    patch_size = cm.patch_size
    deep_supervision_scales = trainer._get_deep_supervision_scales()
    rotation_for_DA, do_dummy_2d_data_aug, initial_patch_size, mirror_axes = \
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    common = dict(use_mask_for_norm=cm.use_mask_for_norm, is_cascaded=False, foreground_labels=lm.foreground_labels,
                  regions=lm.foreground_regions if lm.has_regions else None, ignore_label=lm.ignore_label)
    tr_transforms = trainer.get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                                    do_dummy_2d_data_aug, **common)
    unlabeled_transforms = trainer.get_training_transforms(patch_size, rotation_for_DA, None, mirror_axes,
                                                           do_dummy_2d_data_aug, **common)
    if getattr(trainer, "deterministic_seed", None) is not None:
        tr_transforms, unlabeled_transforms = map(timing_free_transforms, (tr_transforms, unlabeled_transforms))
    val_transforms = trainer.get_validation_transforms(deep_supervision_scales, is_cascaded=False,
                                                       foreground_labels=lm.foreground_labels,
                                                       regions=common["regions"], ignore_label=lm.ignore_label)

    labeled_keys, val_keys, pool = split_semisup_keys(trainer)
    trainer.print_to_log_file(f"Semi-supervised data: {len(labeled_keys)} labeled training cases, {len(pool)} "
                              f"unlabeled cases, {len(val_keys)} validation cases")
    dataset_tr = trainer.dataset_class(trainer.preprocessed_dataset_folder, labeled_keys,
                                       folder_with_segs_from_previous_stage=None)
    dataset_val = trainer.dataset_class(trainer.preprocessed_dataset_folder, val_keys,
                                        folder_with_segs_from_previous_stage=None)
    dl_tr = nnUNetDataLoader(dataset_tr, trainer.batch_size, initial_patch_size, patch_size, lm,
                             oversample_foreground_percent=trainer.oversample_foreground_percent,
                             sampling_probabilities=None, pad_sides=None, transforms=tr_transforms,
                             probabilistic_oversampling=trainer.probabilistic_oversampling)
    dl_u = nnUNetUnlabeledDataLoader(UnlabeledDataset(pool), unlabeled_batch_size or trainer.batch_size,
                                     initial_patch_size, patch_size, lm, transforms=unlabeled_transforms,
                                     mask_from_image=any(cm.use_mask_for_norm))
    dl_val = nnUNetDataLoader(dataset_val, trainer.batch_size, patch_size, patch_size, lm,
                              oversample_foreground_percent=trainer.oversample_foreground_percent,
                              sampling_probabilities=None, pad_sides=None, transforms=val_transforms,
                              probabilistic_oversampling=trainer.probabilistic_oversampling)

    n = get_allowed_n_proc_DA()
    pin_memory = trainer.device.type == "cuda"
    if n == 0:
        n_lab, n_unl = 0, 0
    else:
        n_lab = max(1, (n + 1) // 2)
        n_unl = max(1, n - n_lab)
    train_loader = SemiSupervisedLoader(dl_tr, dl_u, n_lab, n_unl, pin_memory)
    val_loader = make_augmenter(dl_val, 0 if n == 0 else max(1, n // 2), max(3, n // 4), pin_memory)
    return train_loader, val_loader
