"""Label-efficiency study protocol on plain lists, small plans, and the scarce synthetic preset."""
import json
import math
import os

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_advmim.commands.small_plan import make_small_plans
from nnunetv2_advmim.commands.study import (aggregate, arm_file_id, arm_parts, draw_order, find_trainer,
                                            labeled_cases, paired_difference, parse_arm, parse_runs, run_key,
                                            run_to_run_sd, split_validation, study_budget, study_lock, variant_name,
                                            variants_source)
from nnunetv2_advmim.data.label_budget import budget_to_splits, budget_unlabeled_cases
from nnunetv2_advmim.data.synthetic import SCARCE_LABELS, make_scarce_case, scarce_structures
from nnunetv2_advmim.runtime.weights import advmim_network_weights

CASES = [f"case_{i:03d}" for i in range(20)]


def test_validation_is_fixed_and_disjoint_from_the_pool():
    val, pool = split_validation(CASES, 4, seed=0)
    assert len(val) == 4 and len(pool) == 16 and not set(val) & set(pool) and set(val) | set(pool) == set(CASES)
    assert split_validation(CASES, 4, seed=0) == (val, pool)
    assert split_validation(CASES, 4, seed=1)[0] != val
    with pytest.raises(ValueError, match="out of range"):
        split_validation(CASES, 20, seed=0)


def test_draws_are_nested_across_counts_and_differ_between_draws():
    _, pool = split_validation(CASES, 4, seed=0)
    for draw in range(3):
        two, four, eight = (set(labeled_cases(pool, n, draw, 0)) for n in (2, 4, 8))
        assert len(two) == 2 and len(four) == 4 and len(eight) == 8
        assert two < four < eight
    assert draw_order(pool, 0, 0) != draw_order(pool, 1, 0)
    assert labeled_cases(pool, "all", 2, 0) == sorted(pool)
    with pytest.raises(ValueError, match="pool holds only 16"):
        labeled_cases(pool, 17, 0, 0)


def test_study_budget_is_a_label_budget_the_trainers_read(tmp_path):
    val, pool = split_validation(CASES, 4, seed=0)
    labeled = labeled_cases(pool, 4, 0, 0)
    budget = study_budget(labeled, pool, val)
    assert budget_to_splits(budget) == [{"train": labeled, "val": val}]
    (tmp_path / "splits_final.json").write_text(json.dumps(budget_to_splits(budget)))
    unlabeled = budget_unlabeled_cases(budget, str(tmp_path), 0)
    assert sorted(unlabeled) == sorted(set(pool) - set(labeled))  # validation cases are never unlabeled data


def test_parse_arm():
    assert parse_arm("nnUNetTrainer", [2, 4, "all"]) == ("nnUNetTrainer", [2, 4, "all"])
    assert parse_arm("nnUNetTrainerAdvMIM@4,all", [2, 4, "all"]) == ("nnUNetTrainerAdvMIM", [4, "all"])
    with pytest.raises(ValueError, match="not among"):
        parse_arm("nnUNetTrainerAdvMIM@8", [2, 4])


def test_variant_source_sets_the_schedule_and_scales_warm_up():
    class Base:
        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            self.num_epochs, self.warmup_epochs = 1000, 20

    Base.__module__ = "nnunetv2.training.nnUNetTrainer.nnUNetTrainer"  # resolvable by package import
    source = variants_source([(variant_name("nnUNetTrainer", 50, 20), Base, 50, 20, 3)], threads=1)
    source = source.replace("from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import Base as _Base0\n", "")
    namespace = {"_Base0": Base}
    exec(compile(source, "study_trainers.py", "exec"), namespace)
    trainer = namespace["nnUNetTrainer_study50x20"]({}, "2d", 0, {})
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (50, 20, 3)
    assert trainer.warmup_epochs == 1  # 20 of 1000 epochs -> 1 of 50

    def share_of_num_epochs(self, plans, configuration, fold, dataset_json, device=None):
        self.num_epochs, self.warmup_epochs = 1000, None  # None: a share of num_epochs, resolved at optimizer set-up

    Base.__init__ = share_of_num_epochs
    trainer = namespace["nnUNetTrainer_study50x20"]({}, "2d", 0, {})
    assert trainer.warmup_epochs is None and trainer.num_epochs == 50


def test_aggregate_mean_and_sample_std_over_draws():
    def record(draw, dice_a, dice_b):
        mean = {"1": {"Dice": dice_a, "HD95": 2.0, "NSD": 0.5}, "2": {"Dice": dice_b, "HD95": 4.0, "NSD": 0.7}}
        return {"arm": "T", "n": 4, "draw": draw, "n_labeled": 4, "iterations": 10, "train_s": 3.0,
                "labels": {"1": "a", "2": "b"}, "mean": mean,
                "foreground_mean": {"Dice": (dice_a + dice_b) / 2, "HD95": 3.0, "NSD": 0.6}}

    (row,) = aggregate([record(0, 0.5, 0.7), record(1, 0.7, 0.9)])
    assert row["draws"] == 2
    assert row["Dice_a"] == pytest.approx((0.6, np.sqrt(0.02)))  # sample std of 0.5, 0.7
    assert row["Dice_mean"] == pytest.approx((0.7, np.sqrt(0.02)))
    assert row["HD95_b"][0] == 4.0


def test_small_plans_shrink_features_and_stages():
    arch = {"n_stages": 4, "features_per_stage": [32, 64, 128, 256], "kernel_sizes": [[3, 3]] * 4,
            "strides": [[1, 1], [2, 2], [2, 2], [2, 2]], "n_conv_per_stage": [2] * 4,
            "n_conv_per_stage_decoder": [2] * 3}
    plans = {"plans_name": "nnUNetPlans", "configurations": {"2d": {"batch_size": 2, "architecture": {
        "network_class_name": "x", "arch_kwargs": arch}}}}
    new = make_small_plans(plans, "2d", "nnUNetPlans_small", base_features=8, max_features=16, stages=3,
                           batch_size=4)
    kw = new["configurations"]["2d"]["architecture"]["arch_kwargs"]
    assert new["plans_name"] == "nnUNetPlans_small" and new["configurations"]["2d"]["batch_size"] == 4
    assert kw["features_per_stage"] == [8, 16, 16] and kw["n_stages"] == 3
    assert len(kw["strides"]) == 3 and len(kw["n_conv_per_stage_decoder"]) == 2
    assert plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["n_stages"] == 4  # source untouched
    with pytest.raises(ValueError, match="stages"):
        make_small_plans(plans, "2d", "p", stages=5)


def test_scarce_cases_vary_where_few_labels_cannot_follow():
    from scipy import ndimage

    def brighter_than_surroundings(img, mask, seg):
        ring = ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_dilation(mask) & (seg == 0)
        return img[mask].mean() > img[ring].mean()

    rng = np.random.default_rng(0)
    organ_sizes, polarity = [], {"organ": [], "vessel": [], "nodule": []}
    for _ in range(30):
        img, seg = make_scarce_case(rng, (64, 64))
        assert set(np.unique(seg)) == set(SCARCE_LABELS.values())
        organ_sizes.append((seg == 1).sum())
        polarity["organ"].append(brighter_than_surroundings(img, seg == 1, seg))
        polarity["vessel"].append(brighter_than_surroundings(img, seg == 2, seg))
        polarity["nodule"].append(img[seg == 3].mean() > img[seg == 1].mean())
    assert max(organ_sizes) > 3 * min(organ_sizes)  # pose and size vary widely
    for name, flags in polarity.items():  # brighter than their surroundings in some cases, darker in others
        assert 5 <= sum(flags) <= 25, (name, sum(flags))
    _, seg3 = make_scarce_case(rng, (24, 28, 28))
    assert set(np.unique(seg3)) == set(SCARCE_LABELS.values())


def test_scarce_nodule_look_alikes_outside_the_organ_stay_unlabeled():
    """Blobs with the nodules' contrast also sit in the tissue outside the organ: only the context tells them apart,
    and they are background in the segmentation."""
    cases_with_mimics = 0
    for seed in range(12):
        m = scarce_structures(np.random.default_rng(seed), (64, 64))
        img, seg = make_scarce_case(np.random.default_rng(seed), (64, 64))
        assert not (m["mimic"] & (m["organ"] | m["vessel"] | m["nodule"])).any()
        assert (seg[m["mimic"]] == 0).all() and (seg[m["nodule"]] == SCARCE_LABELS["nodule"]).all()
        if m["mimic"].sum() < 10:
            continue
        cases_with_mimics += 1
        tissue = m["body"] & (seg == 0) & ~m["mimic"]
        nodule_step = np.median(img[seg == 3]) - np.median(img[seg == 1])
        mimic_step = np.median(img[m["mimic"]]) - np.median(img[tissue])
        assert np.sign(mimic_step) == np.sign(nodule_step) and abs(mimic_step) > 0.2 * abs(nodule_step), seed
    assert cases_with_mimics >= 4


def test_arms_that_predict_with_another_network_of_the_same_training():
    assert parse_arm("nnUNetTrainerAdvMIM:cnn@4", [2, 4]) == ("nnUNetTrainerAdvMIM:cnn", [4])
    assert arm_parts("nnUNetTrainerAdvMIM:ensemble") == ("nnUNetTrainerAdvMIM", "ensemble")
    assert arm_parts("nnUNetTrainer") == ("nnUNetTrainer", None)
    assert arm_file_id("nnUNetTrainerAdvMIM:cnn") == "nnUNetTrainerAdvMIM_as_cnn"
    with pytest.raises(ValueError, match="hybrid"):
        parse_arm("nnUNetTrainerAdvMIM:teacher", [4])
    with pytest.raises(ValueError, match="empty"):
        parse_arm(":cnn", [4])
    source = variants_source([], None, [("T_study5x2_cnn", "T_study5x2", "cnn")])
    assert "class T_study5x2_cnn(T_study5x2):\n    predict_with = 'cnn'" in source

    a, b = torch.zeros(2), torch.ones(3)
    ckpt = {"advmim": {"weights": {"hybrid": {"x.w": a}, "cnn": {"y.w": b}}}}
    assert advmim_network_weights(ckpt, "cnn") == {"y.w": b}
    assert advmim_network_weights(ckpt, "ensemble") == {"hybrid.x.w": a, "cnn.y.w": b}
    with pytest.raises(ValueError, match="AdvMIM-family"):
        advmim_network_weights({"network_weights": {}}, "cnn")
    with pytest.raises(ValueError, match="unknown"):
        advmim_network_weights(ckpt, "teacher")


def test_vs_column_is_paired_on_the_draws_both_arms_have():
    def rec(arm, draw, dice, n=4):
        return {"arm": arm, "n": n, "draw": draw, "foreground_mean": {"Dice": dice}}

    records = [rec("stock", 0, 0.30), rec("stock", 1, 0.50), rec("stock", 2, 0.40), rec("semi", 0, 0.35),
               rec("semi", 2, 0.40), rec("semi", 0, 0.9, n=8)]
    mean, std, count = paired_difference(records, "semi", 4, "stock")
    # draws 0 and 2 only: +0.05 and 0.00 (an unpaired comparison with stock's mean 0.40 would say -0.025)
    assert count == 2 and mean == pytest.approx(0.025) and std == pytest.approx(np.std([0.05, 0.0], ddof=1))
    assert paired_difference(records, "semi", 8, "stock") is None


def test_ablation_examples_change_one_known_choice_each(monkeypatch):
    """docs/examples/advmim_ablations.py: found by nnU-Net's lookup through nnUNet_extTrainer; each arm sets
    attributes nnUNetTrainerAdvMIM defines, away from their defaults."""
    import inspect
    import re
    examples = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "examples")
    monkeypatch.setenv("nnUNet_extTrainer", os.path.abspath(examples))
    base = find_trainer("nnUNetTrainerAdvMIM")
    defaults = {}
    for cls in (nnUNetTrainer, base):  # nnU-Net's own attributes (initial_lr), then AdvMIM's
        defaults.update(re.findall(r"self\.(\w+) = ([^#\n]+?)\s*(?:#|\n)", inspect.getsource(cls.__init__)))
    names = ["rampups", "batchDice", "discUnlabeled", "block16", "sgdDisc", "fgUnlabeled", "uRampup", "ratio50",
             "noMaskedUnlabeled", "halfLR", "noMaskedLabeled"]
    for name in names:
        cls = find_trainer(f"nnUNetTrainerAdvMIM_{name}")
        assert issubclass(cls, base) and cls.choice
        for attr, value in cls.choice.items():
            assert attr in defaults, (name, attr)
            assert repr(value) != defaults[attr], (name, attr)


def test_pretraining_ablation_examples_change_one_known_choice_each(monkeypatch):
    """docs/examples/pretraining_ablations.py: found by nnU-Net's lookup through nnUNet_extTrainer; each pretrainer
    sets attributes its parent's __init__ defines, away from their defaults."""
    import inspect
    import re
    examples = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "examples")
    monkeypatch.setenv("nnUNet_extTrainer", os.path.abspath(examples))
    names = {"nnUNetTrainerAnatoMask_normalised": "nnUNetTrainerAnatoMask",
             "nnUNetTrainerAnatoMask_raw": "nnUNetTrainerAnatoMask",
             "nnUNetTrainerMPSAMS_excludeFlat": "nnUNetTrainerMPSAMS",
             "nnUNetTrainerMIM_noIntensityAug": "nnUNetTrainerMIM",
             "nnUNetTrainerAnatoMask_noIntensityAug": "nnUNetTrainerAnatoMask"}
    for name, parent in names.items():
        cls, base = find_trainer(name), find_trainer(parent)
        assert issubclass(cls, base) and cls.choice
        defaults = {}
        for c in reversed([c for c in base.__mro__ if "__init__" in vars(c) and c.__module__ != "nnunetv2.training."
                           "nnUNetTrainer.nnUNetTrainer" and c is not object]):
            defaults.update(re.findall(r"self\.(\w+) = ([^#\n]+?)\s*(?:#|\n)", inspect.getsource(c.__init__)))
        for attr, value in cls.choice.items():
            assert attr in defaults, (name, attr)
            assert repr(value) != defaults[attr] and repr(value).replace('"', "'") != defaults[attr], (name, attr)


def test_one_choice_sets_known_attributes_and_refuses_unknown_ones():
    from nnunetv2_advmim.trainers.one_choice import OneChoice

    class Parent:
        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            self.lambda_u, self.other = 1.0, "kept"

    class Good(OneChoice, Parent):
        choice = {"lambda_u": 0.5}

    class Typo(OneChoice, Parent):
        choice = {"lamda_u": 0.5}

    t = Good({}, "2d", 0, {})
    assert (t.lambda_u, t.other) == (0.5, "kept")
    with pytest.raises(AttributeError, match="Typo: Parent has no attribute 'lamda_u'"):
        Typo({}, "2d", 0, {})


@pytest.mark.parametrize("name", ["nnUNetTrainerAdvMIM_rampups", "nnUNetTrainerAnatoMask_normalised"])
def test_study_variant_of_an_ablation_arm_loads_its_file(monkeypatch, name):
    """An arm defined in an nnUNet_extTrainer folder, with no method of its own: the study's variant source finds
    its file (nnU-Net's lookup leaves no module behind) and the variant keeps the arm's choice."""
    import sys
    examples = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "examples"))
    monkeypatch.setenv("nnUNet_extTrainer", examples)
    cls = find_trainer(name)
    assert cls.__module__ not in sys.modules  # what made inspect.getfile fail for these arms
    source = variants_source([(variant_name(name, 5, 2), cls, 5, 2, 1)])
    assert os.path.join(examples, cls.__module__ + ".py") in source
    namespace = {}
    exec(compile(source, "study_trainers.py", "exec"), namespace)
    variant = namespace[variant_name(name, 5, 2)]
    assert variant.__mro__[1].__name__ == name and variant.choice == cls.choice


def test_study_lock_allows_one_process_per_folder(tmp_path):
    """A living process's lock refuses a second study; a lock left by a killed study (its process gone) is taken
    over; the lock is released when the study ends, also on an error."""
    import subprocess
    import sys
    lock = tmp_path / "study.lock"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(str(other.pid))
        with pytest.raises(RuntimeError, match=f"process {other.pid}.*another folder"):
            with study_lock(str(tmp_path)):
                pass
        assert lock.read_text() == str(other.pid)  # the other study's lock is left alone
    finally:
        other.kill()
        other.wait()
    with study_lock(str(tmp_path)):  # its process is gone: a stale lock
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()
    with pytest.raises(KeyError):
        with study_lock(str(tmp_path)):
            raise KeyError("a failing study")
    assert not lock.exists()


def test_runs_per_arm_from_the_command_line():
    arms = ["nnUNetTrainer", "nnUNetTrainerAdvMIM", "nnUNetTrainerAdvMIM:hybrid"]
    assert parse_runs([], arms) == {a: 1 for a in arms}
    assert parse_runs(["nnUNetTrainer=4"], arms) == {"nnUNetTrainer": 4, "nnUNetTrainerAdvMIM": 1,
                                                     "nnUNetTrainerAdvMIM:hybrid": 1}
    assert parse_runs(["2", "nnUNetTrainer=3"], arms) == {"nnUNetTrainer": 3, "nnUNetTrainerAdvMIM": 2,
                                                          "nnUNetTrainerAdvMIM:hybrid": 2}
    with pytest.raises(ValueError, match="not an arm of this study"):
        parse_runs(["nnUNetTrainerCTCT=2"], arms)
    for bad in ("0", "nnUNetTrainer=x", "nnUNetTrainer="):
        with pytest.raises(ValueError, match="at least 1"):
            parse_runs([bad], arms)
    assert (run_key(4, 2), run_key(4, 2, 0), run_key(4, 2, 3), run_key("all", 0, 1)) == (
        "n4_d2", "n4_d2", "n4_d2_r3", "nall_d0_r1")


def test_several_runs_of_a_draw_enter_with_their_mean():
    """Two runs on draw 0 (Dice 0.4 and 0.6, HD95 NaN in one) and one on draw 1 (0.7): the row is over 2 draws of
    0.5 and 0.7, and the paired difference takes each arm's mean over its runs of a draw."""
    def record(arm, draw, run, dice, hd95):
        return {"arm": arm, "n": 4, "draw": draw, "run": run, "n_labeled": 4, "iterations": 10, "train_s": 2.0 + run,
                "labels": {"1": "a"}, "mean": {"1": {"Dice": dice, "HD95": hd95, "NSD": 0.5}},
                "foreground_mean": {"Dice": dice, "HD95": hd95, "NSD": 0.5}}

    records = [record("T", 0, 0, 0.4, float("nan")), record("T", 0, 1, 0.6, 3.0), record("T", 1, 0, 0.7, 5.0)]
    (row,) = aggregate(records)
    assert (row["draws"], row["runs"]) == (2, 3)
    assert row["Dice_a"] == pytest.approx((0.6, np.std([0.5, 0.7], ddof=1)))
    assert row["HD95_mean"] == pytest.approx((4.0, np.std([3.0, 5.0], ddof=1)))  # the NaN run is left out
    assert row["train_s"] == pytest.approx(np.mean([2.5, 2.0]))
    assert row["run_sd"] == pytest.approx(math.sqrt((0.1 ** 2 + 0.1 ** 2) / 1))  # draw 0 only: 0.4 and 0.6
    records += [record("S", 0, 0, 0.30, 1.0), record("S", 0, 1, 0.40, 1.0), record("S", 0, 2, 0.50, 1.0),
                record("S", 1, 0, 0.70, 1.0)]
    mean, std, count = paired_difference(records, "T", 4, "S")
    assert count == 2 and mean == pytest.approx(np.mean([0.5 - 0.4, 0.0])) and std == pytest.approx(
        np.std([0.1, 0.0], ddof=1))


def test_run_to_run_sd_pools_the_draws_with_several_runs():
    """Draw 0: 0.30, 0.34 (squares 0.0004 + 0.0004), draw 1: 0.40, 0.44, 0.42 (0.0004 + 0.0004 + 0), draw 2: one run
    (no degree of freedom): sqrt(0.0016 / 3) = 0.0231. One run per draw, or a NaN run as the second: NaN."""
    def record(draw, dice):
        return {"draw": draw, "foreground_mean": {"Dice": dice}}

    records = [record(0, 0.30), record(0, 0.34), record(1, 0.40), record(1, 0.44), record(1, 0.42), record(2, 0.9)]
    assert run_to_run_sd(records) == pytest.approx(math.sqrt(0.0016 / 3))
    assert math.isnan(run_to_run_sd([record(0, 0.3), record(1, 0.5)]))
    assert math.isnan(run_to_run_sd([record(0, 0.3), record(0, float("nan"))]))
