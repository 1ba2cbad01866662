"""Label budget (issue 3): reproducible, disjoint from validation, backups, and stock nnUNetTrainer trains on exactly N."""
import glob
import json
import os

import pytest

from conftest import run_cmd
from nnunetv2_advmim.data.label_budget import (BUDGET_FILE, SPLITS_FILE, budget_to_splits, budget_unlabeled_cases,
                                          make_budget, write_budget)
from nnunetv2_advmim.data.unlabeled import find_unlabeled_cases
from test_unlabeled import copy_planned

POOL = [f"case_{i:03d}" for i in range(20)]


def test_budget_is_reproducible_and_disjoint_from_validation():
    a, b = make_budget(POOL, 4, seed=3, n_folds=5), make_budget(POOL, 4, seed=3, n_folds=5)
    assert a == b and len(a["labeled"]) == 4
    assert make_budget(POOL, 4, seed=4)["labeled"] != a["labeled"]
    all_val = []
    for f in a["folds"]:
        assert not set(f["val"]) & set(a["labeled"]) and not set(f["val"]) & set(f["unlabeled"])
        assert not set(f["unlabeled"]) & set(a["labeled"])
        assert sorted(a["labeled"] + f["unlabeled"] + f["val"]) == POOL
        all_val += f["val"]
    assert sorted(all_val) == sorted(set(POOL) - set(a["labeled"]))  # folds partition the non-labeled cases
    for s in budget_to_splits(a):
        assert s["train"] == a["labeled"]


def test_explicit_cases_and_out_of_range_n():
    b = make_budget(POOL, labeled_cases=["case_007", "case_001"], n_folds=3)
    assert b["labeled"] == ["case_001", "case_007"] and b["seed"] is None and len(b["folds"]) == 3
    for n in (0, 17, 25):
        with pytest.raises(ValueError, match=r"N=%d .*out of range.*1\.\.16" % n):
            make_budget(POOL, n, n_folds=4)
    with pytest.raises(ValueError, match="case_999"):
        make_budget(POOL, labeled_cases=["case_999"])
    with pytest.raises(ValueError, match="disagrees"):
        make_budget(POOL, 3, labeled_cases=["case_001"])
    with pytest.raises(ValueError, match="at least 2"):
        make_budget(POOL, 3, n_folds=1)


def test_existing_split_is_backed_up_not_overwritten(tmp_path):
    folder = str(tmp_path)
    first = make_budget(POOL, 4, seed=0)
    assert write_budget(folder, first) == {}
    assert write_budget(folder, first) == {}  # identical: untouched, no backup
    backups = write_budget(folder, make_budget(POOL, 5, seed=0))
    assert set(backups) == {SPLITS_FILE, BUDGET_FILE}
    with open(backups[SPLITS_FILE]) as f:
        assert json.load(f) == budget_to_splits(first)
    with open(os.path.join(folder, SPLITS_FILE)) as f:
        assert len(json.load(f)[0]["train"]) == 5


TINY_KEYS_TRAINER = '''
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_tinykeys(nnUNetTrainer):
    """Stock trainer, 1 epoch of 2 iterations; logs the identifiers of its training dataset."""
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1

    def get_tr_and_val_datasets(self):
        tr, val = super().get_tr_and_val_datasets()
        self.print_to_log_file("TRAINING_KEYS " + ",".join(sorted(tr.identifiers)))
        return tr, val

    def perform_actual_validation(self, save_probabilities: bool = False):
        pass  # the final validation predicts the validation cases: not what this test checks, and slow on a busy CPU
'''


def test_budget_command_pool_and_stock_training_on_exactly_n(planned_3d, ext_trainers):
    name, raw, pre = copy_planned(planned_3d, 913, "Budget3D")
    env = dict(planned_3d.env)
    run_cmd(["nnUNetv2_advmim_label_budget", "-d", "913", "-n", "2", "--seed", "3", "--folds", "2"], env=env)
    with open(os.path.join(pre, BUDGET_FILE)) as f:
        budget = json.load(f)
    assert len(budget["labeled"]) == 2
    proc = run_cmd(["nnUNetv2_advmim_label_budget", "-d", "913", "-n", "5", "--folds", "2"], env=env, check=False)
    assert proc.returncode == 1 and "out of range" in proc.stdout and "1..4" in proc.stdout
    assert not glob.glob(os.path.join(pre, "*.bak-*"))  # a refused call leaves the files alone

    # unlabeled pool of fold 1: the budget's unlabeled cases, validation only on request, labels never in it
    pool = find_unlabeled_cases(pre, "nnUNetPlans_3d_fullres", 1)
    assert sorted(pool) == budget["folds"][1]["unlabeled"] and len(pool) == 2
    assert not set(pool) & set(budget["folds"][1]["val"]) and not set(pool) & set(budget["labeled"])
    with_val = find_unlabeled_cases(pre, "nnUNetPlans_3d_fullres", 1, include_validation=True)
    assert sorted(with_val) == sorted(budget["folds"][1]["unlabeled"] + budget["folds"][1]["val"])

    # stock nnUNetv2_train on the budget split trains on exactly the N labeled cases
    folder, write = ext_trainers
    write("tinykeys_trainer", TINY_KEYS_TRAINER)
    env["nnUNet_extTrainer"] = folder
    run_cmd(["nnUNetv2_train", "913", "3d_fullres", "1", "-tr", "nnUNetTrainer_tinykeys", "-device", "cpu"], env=env)
    logs = glob.glob(os.path.join(env["nnUNet_results"], name, "nnUNetTrainer_tinykeys__nnUNetPlans__3d_fullres",
                                  "fold_1", "training_log_*.txt"))
    log = open(logs[0]).read()
    assert "This split has 2 training and 2 validation cases." in log
    assert "TRAINING_KEYS " + ",".join(budget["labeled"]) in log

    # a split file edited after the budget is detected instead of silently changing the pool
    splits_file = os.path.join(pre, SPLITS_FILE)
    with open(splits_file) as f:
        splits = json.load(f)
    splits[1]["train"].append(budget["folds"][1]["unlabeled"][0])
    with open(splits_file, "w") as f:
        json.dump(splits, f)
    with pytest.raises(RuntimeError, match="no longer matches"):
        budget_unlabeled_cases(budget, pre, 1)
