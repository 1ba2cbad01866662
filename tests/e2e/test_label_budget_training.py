"""nnUNetv2_advmim_label_budget on a planned dataset: the unlabeled pool, and stock nnUNetTrainer trains on exactly N."""
import glob
import json
import os

import pytest

from helpers import run_cmd
from nnunetv2_advmim.data.label_budget import BUDGET_FILE, SPLITS_FILE, budget_unlabeled_cases
from nnunetv2_advmim.data.unlabeled import find_unlabeled_cases
from helpers import copy_planned


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


def test_our_label_trainers_refuse_fold_all_under_a_budget(planned_2d):
    """Fold 'all' ignores splits_final.json: with a label budget our trainers that train with labels stop before
    anything is built, naming label_budget.json and the fix."""
    import torch

    from nnunetv2_advmim.data.label_budget import make_budget, training_cases, write_budget
    from nnunetv2_advmim.trainers.nnUNetTrainer_demo import nnUNetTrainer_demo
    from nnunetv2_advmim.trainers.nnUNetTrainer_FinetuneWarmup import nnUNetTrainer_FinetuneWarmup
    from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM, nnUNetTrainerCTCT

    name, raw, pre = copy_planned(planned_2d, 880, "FoldAllBudget")
    with open(os.path.join(pre, "nnUNetPlans.json")) as f:
        plans = json.load(f)
    with open(os.path.join(pre, "dataset.json")) as f:
        dataset_json = json.load(f)
    classes = (nnUNetTrainerAdvMIM, nnUNetTrainerCTCT, nnUNetTrainer_demo, nnUNetTrainer_FinetuneWarmup)
    # continue_training: what nnU-Net's get_trainer_from_args adds (the trainer pops it from the plans)
    make = lambda cls, fold: cls({**plans, "continue_training": False}, "2d", fold, dataset_json,  # noqa: E731
                                 device=torch.device("cpu"))
    write_budget(pre, make_budget(training_cases(pre), 2, seed=0, n_folds=2))
    for cls in classes:
        t = make(cls, "all")
        with pytest.raises(RuntimeError, match=rf"{cls.__name__} refuses fold 'all'.*label_budget.json.*fold 0\.\.1"):
            t.on_train_start()
        assert not t.was_initialized  # refused before initialize(): nothing built, no dataloader started
