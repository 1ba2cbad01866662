"""Labeled + unlabeled loader: nnU-Net's augmenter with 1 worker, 2D and 3D, no labels in unlabeled batches."""
import glob
import os
import pickle

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunetv2_advmim.data.label_budget import make_budget, training_cases, write_budget
from nnunetv2_advmim.data.semisup_loader import SemiSupervisedLoader, get_semisup_dataloaders
from nnunetv2_advmim.data.unlabeled import preprocess_unlabeled
from helpers import copy_planned


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


def test_semisup_loader_3d_budget_and_unlabeled_images(planned_3d, monkeypatch):
    name, raw, pre = copy_planned(planned_3d, 914, "Loader3D")
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    preprocess_unlabeled(914, ["3d_fullres"], num_processes=1, verbose=False)
    budget = make_budget(training_cases(pre), 2, seed=1, n_folds=2)
    write_budget(pre, budget)
    pool = budget["folds"][0]["unlabeled"] + [f"unlabeled_{i:03d}" for i in range(4)]
    # remove every segmentation file of the pool: the loader must never need them
    for case in budget["folds"][0]["unlabeled"]:
        os.remove(os.path.join(pre, "nnUNetPlans_3d_fullres", case + "_seg.b2nd"))
    for f in glob.glob(os.path.join(pre, "nnUNetPlans_3d_fullres_unlabeled", "*_seg.b2nd")):
        os.remove(f)

    trainer = _trainer(pre, "3d_fullres", 0)
    train_loader, val_loader = get_semisup_dataloaders(trainer, unlabeled_batch_size=3)
    try:
        assert isinstance(train_loader, SemiSupervisedLoader)
        assert sorted(train_loader.unlabeled_loader.dataset.identifiers) == sorted(pool)
        assert sorted(train_loader.labeled_loader._data.identifiers) == budget["labeled"]
        assert train_loader.num_processes_labeled == 1 and train_loader.num_processes_unlabeled == 1
        copy = pickle.loads(pickle.dumps(train_loader))  # what worker processes receive must pickle
        u = copy.unlabeled_loader.generate_train_batch()
        assert set(u) == {"data", "keys"} and tuple(u["data"].shape[:2]) == (3, 1)
        _check_batches(train_loader, trainer, budget["labeled"], pool, 3)
        assert type(train_loader._augmenters[1]).__name__ == "NonDetMultiThreadedAugmenter"
        assert set(next(val_loader)["keys"]) <= set(budget["folds"][0]["val"])
    finally:
        train_loader.finish()
        val_loader._finish()


def test_semisup_loader_2d_and_empty_pool_error(planned_2d, monkeypatch):
    name, raw, pre = copy_planned(planned_2d, 915, "Loader2D")
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    trainer = _trainer(pre, "2d", "all")
    with pytest.raises(RuntimeError, match="unlabeled pool of fold all is empty.*nnUNetv2_advmim_preprocess_unlabeled"):
        get_semisup_dataloaders(trainer)
    preprocess_unlabeled(915, ["2d"], num_processes=1, verbose=False)
    trainer = _trainer(pre, "2d", "all")
    train_loader, val_loader = get_semisup_dataloaders(trainer, unlabeled_batch_size=2)
    try:
        labeled = [f"case_{i:03d}" for i in range(6)]
        _check_batches(train_loader, trainer, labeled, [f"unlabeled_{i:03d}" for i in range(4)], 2)
    finally:
        train_loader.finish()
        val_loader._finish()
