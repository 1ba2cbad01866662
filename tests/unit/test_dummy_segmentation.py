"""Labeled + unlabeled loader (issue 3): nnU-Net's augmenter with 1 worker, 2D and 3D, no labels in unlabeled batches."""
import os

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunetv2_advmim.data.semisup_loader import nnUNetUnlabeledDataLoader


def _trainer(pre, configuration, fold):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    plans = load_json(os.path.join(pre, "nnUNetPlans.json"))
    plans["continue_training"] = False  # nnUNetv2_train puts this key into the plans it hands the trainer
    return nnUNetTrainer(plans, configuration, fold, load_json(os.path.join(pre, "dataset.json")),
                         device=torch.device("cpu"))


def _check_batches(loader, trainer, labeled, pool, unlabeled_bs):
    patch = tuple(trainer.configuration_manager.patch_size)
    for _ in range(2):
        b = next(loader)
        assert set(b) == {"data", "target", "keys", "data_unlabeled", "keys_unlabeled"}
        assert tuple(b["data"].shape) == (trainer.batch_size, 1, *patch)
        assert isinstance(b["target"], list) and tuple(b["target"][0].shape) == (trainer.batch_size, 1, *patch)
        assert set(b["keys"]) <= set(labeled)
        assert tuple(b["data_unlabeled"].shape) == (unlabeled_bs, 1, *patch)
        assert torch.isfinite(b["data_unlabeled"]).all() and b["data_unlabeled"].std() > 0
        assert set(b["keys_unlabeled"]) <= set(pool)


def test_dummy_segmentation_is_geometry_only():
    dl = nnUNetUnlabeledDataLoader.__new__(nnUNetUnlabeledDataLoader)
    dl.mask_from_image = True
    image = torch.ones((2, 4, 6))
    image[:, 3, 5] = 0  # every channel exactly 0: outside a masked normalisation
    seg = dl._dummy_seg(image, data_shape=(10, 8), bbox_lbs=[-1, 4], bbox_ubs=[3, 10])
    expected = np.zeros((1, 4, 6), dtype=np.int16)
    expected[0, 0, :] = -1  # row -1 is padding
    expected[0, :, 4:] = -1  # columns 8, 9 are padding
    expected[0, 3, 5] = -1
    np.testing.assert_array_equal(seg.numpy(), expected)
