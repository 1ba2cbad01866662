"""nnunetv2_advmim.benchmark.acdc_gpu: how it reads training logs, plans the Dice runs and writes its trainer variants (pure
functions, no training; tests/e2e/test_acdc_end_to_end.py runs the script's CPU smoke mode)."""
import ast

import pytest

from nnunetv2_advmim.benchmark import acdc_gpu


@pytest.fixture(scope="module")
def script():
    return acdc_gpu


def test_seconds_per_iteration_leaves_out_the_first_epoch(script):
    lines = ["2026-12-06 04:00:00: Epoch 0",
             "2026-12-06 04:00:09: ACDCGPU epoch 0 train phase 9.0000 s, 25 iterations",
             "2026-12-06 04:00:10: Epoch time: 10.1 s",
             "2026-12-06 04:00:13: ACDCGPU epoch 1 train phase 2.5000 s, 25 iterations",
             "2026-12-06 04:00:16: ACDCGPU epoch 2 train phase 3.0000 s, 25 iterations"]
    phases = script.train_phases(lines)
    assert phases == {0: (9.0, 25), 1: (2.5, 25), 2: (3.0, 25)}
    assert script.seconds_per_iteration(phases) == pytest.approx(0.11)  # median of 0.10 and 0.12
    assert script.seconds_per_iteration({0: (4.0, 2)}) == pytest.approx(2.0)  # one epoch: that one
    assert script.seconds_per_iteration({}) != script.seconds_per_iteration({})  # NaN: nothing measured
    assert script.hours(0.36) == {"hours_30k": pytest.approx(3.0), "hours_250k": pytest.approx(25.0)}


def test_dice_iterations_fit_the_budget_left(script):
    # 300 s left, 2 arms of 20 s start-up + 20 s validation each: 220 s of training at 0.05 + 0.30 s per iteration
    # = 628 iterations, 600 in whole epochs of 50
    assert script.plan_dice_iterations(300, [0.05, 0.30], 20, 20, 50, 5000) == 600
    assert script.plan_dice_iterations(300, [0.05, 0.30], 20, 20, 50, 120) == 100  # the cap, in whole epochs
    assert script.plan_dice_iterations(60, [0.05, 0.30], 20, 20, 50, 5000) == 0  # start-ups eat the budget
    assert script.plan_dice_iterations(300, [float("nan")], 20, 20, 50, 5000) == 0  # nothing timed


def test_dice_from_nnunet_summary_names_the_labels(script):
    summary = {"mean": {"1": {"Dice": 0.7}, "2": {"Dice": 0.8}, "3": {"Dice": 0.9}},
               "foreground_mean": {"Dice": 0.8}}
    labels = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert script.dice_from_summary(summary, labels) == {"per_label": {"RV": 0.7, "MYO": 0.8, "LV": 0.9},
                                                         "mean": 0.8}


def test_variants_import_each_trainer_from_where_it_is_defined(script):
    source = script.variants_source(["nnUNetTrainer", "nnUNetTrainerAdvMIM_paper", "nnUNetTrainerAnatoMask_AdvMIM"])
    ast.parse(source)
    assert "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n" in source
    assert "from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM_paper\n" in source
    assert "from nnunetv2_advmim.trainers.nnUNetTrainerMIM import nnUNetTrainerAnatoMask_AdvMIM\n" in source
    assert "class nnUNetTrainerAdvMIM_paper_acdcgpu(nnUNetTrainerAdvMIM_paper):" in source
    with pytest.raises(ValueError, match="'nnUNetTrainerNope' is neither"):
        script.trainer_module("nnUNetTrainerNope")
