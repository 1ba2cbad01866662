"""Label-efficiency study protocol on plain lists, small plans, and the scarce synthetic preset."""
import csv
import json
import math
import os
import types

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_advmim.commands.small_plan import make_small_plans
from nnunetv2_advmim.commands.study import (aggregate, arm_file_id, arm_parts, draw_order, format_plan, labeled_cases,
                                            main, paired_difference, paired_standard_error, parse_arm, parse_runs,
                                            plan_study, run_key, run_to_run_sd, split_validation, study_budget,
                                            study_lock, variant_name, variants_source, write_outputs)
from nnunetv2_advmim.commands.study.design import between_draw_sd, cheapest_design, expected_paired_se
from nnunetv2_advmim.commands.study.report import _fmt_delta
from nnunetv2_advmim.env import find_trainer
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
    class Base:  # what the variant reads and sets of an nnU-Net trainer
        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            self.num_epochs, self.warmup_epochs = 1000, 20
            self.num_iterations_per_epoch = self.num_val_iterations_per_epoch = 250

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
        self.num_iterations_per_epoch = self.num_val_iterations_per_epoch = 250

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
    assert "class T_study5x2_cnn(T_study5x2):\n    choice = {'predict_with': 'cnn'}" in source

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


def test_ablation_arms_change_one_known_choice_each():
    """trainers/nnUNetTrainerAdvMIM_ablations.py: found by nnU-Net's lookup among the installed trainers; each arm
    sets attributes nnUNetTrainerAdvMIM defines, away from their defaults. (nnU-Net imports the trainer folder's
    modules under bare names, so the parent is the class the arms' module imports, not a second lookup's copy.)"""
    import inspect
    import re
    from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM as base
    defaults = {}
    # nnU-Net's own attributes (initial_lr, set in its __init__), then AdvMIM's settings (class attributes)
    defaults.update(re.findall(r"self\.(\w+) = ([^#\n]+?)\s*(?:#|\n)", inspect.getsource(nnUNetTrainer.__init__)))
    defaults.update({k: repr(v) for k, v in vars(base).items() if isinstance(v, (bool, int, float, str, tuple, type(None)))
                     and not k.startswith("_")})
    names = ["rampups", "batchDice", "discUnlabeled", "block16", "sgdDisc", "fgUnlabeled", "uRampup", "ratio50",
             "noMaskedUnlabeled", "halfLR", "noMaskedLabeled"]
    for name in names:
        cls = find_trainer(f"nnUNetTrainerAdvMIM_{name}")
        assert issubclass(cls, base) and cls.choice
        for attr, value in cls.choice.items():
            assert attr in defaults, (name, attr)
            assert repr(value) != defaults[attr], (name, attr)


def test_pretraining_ablation_arms_change_one_known_choice_each():
    """trainers/nnUNetTrainerMIM_ablations.py: found by nnU-Net's lookup among the installed trainers; each
    pretrainer sets attributes its parent's __init__ defines, away from their defaults."""
    import inspect
    import re
    names = {"nnUNetTrainerAnatoMask_normalised": "nnUNetTrainerAnatoMask",
             "nnUNetTrainerAnatoMask_raw": "nnUNetTrainerAnatoMask",
             "nnUNetTrainerMPSAMS_excludeFlat": "nnUNetTrainerMPSAMS",
             "nnUNetTrainerMIM_noIntensityAug": "nnUNetTrainerMIM",
             "nnUNetTrainerAnatoMask_noIntensityAug": "nnUNetTrainerAnatoMask"}
    from nnunetv2_advmim.trainers import nnUNetTrainerMIM as mim_module
    for name, parent in names.items():
        cls, base = find_trainer(name), getattr(mim_module, parent)
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


USER_ARMS = {
    "nnUNetTrainerAdvMIM_myRampups": ("nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM", "nnUNetTrainerAdvMIM",
                                      {"u_rampup_fraction": 0.4}),
    "nnUNetTrainerAnatoMask_myRanking": ("nnunetv2_advmim.trainers.nnUNetTrainerMIM", "nnUNetTrainerAnatoMask",
                                         {"anatomask_ranking": "normalised"}),
}


@pytest.mark.parametrize("name", sorted(USER_ARMS))
def test_study_variant_of_an_ablation_arm_loads_its_file(monkeypatch, tmp_path, name):
    """An arm defined in a user's nnUNet_extTrainer folder, with no method of its own: the study's variant source
    finds its file (nnU-Net's lookup leaves no module behind) and the variant keeps the arm's choice."""
    import sys
    module, parent, choice = USER_ARMS[name]
    (tmp_path / f"my_{name}.py").write_text(
        f"from {module} import {parent}\nfrom nnunetv2_advmim.trainers.one_choice import OneChoice\n\n\n"
        f"class {name}(OneChoice, {parent}):\n    choice = {choice!r}\n")
    monkeypatch.setenv("nnUNet_extTrainer", str(tmp_path))
    cls = find_trainer(name)
    assert cls.__module__ not in sys.modules  # what made inspect.getfile fail for these arms
    source = variants_source([(variant_name(name, 5, 2), cls, 5, 2, 1)])
    assert os.path.join(str(tmp_path), cls.__module__ + ".py") in source
    namespace = {}
    exec(compile(source, "study_trainers.py", "exec"), namespace)
    variant = namespace[variant_name(name, 5, 2)]
    assert variant.__mro__[1].__name__ == name and cls.choice.items() <= variant.choices().items()


def test_study_lock_allows_one_process_per_folder(tmp_path):
    """A study running in another process holds the lock: a second study is refused with its host and process id;
    once that process is gone (killed: no clean-up ran) the folder is free again."""
    import subprocess
    import sys
    import time
    holder = ("import sys, time\nfrom nnunetv2_advmim.commands.study import study_lock\n"
              "with study_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n")
    other = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=f"process {other.pid} on host .*another folder"):
            with study_lock(str(tmp_path)):
                pass
    finally:
        other.kill()
        other.wait()
    time.sleep(0.1)
    with study_lock(str(tmp_path)):  # the killed study's lock went with its process
        pass


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


def test_paired_standard_error_is_the_std_of_the_differences_over_sqrt_draws():
    """Differences +0.03, 0.00, -0.03: mean 0, sample std 0.03, SE 0.03 / sqrt(3) = 0.01732 (1.7 Dice points)."""
    def rec(arm, draw, dice):
        return {"arm": arm, "n": 4, "draw": draw, "foreground_mean": {"Dice": dice}}

    records = [rec("stock", 0, 0.30), rec("stock", 1, 0.40), rec("stock", 2, 0.50),
               rec("semi", 0, 0.33), rec("semi", 1, 0.40), rec("semi", 2, 0.47)]
    delta = paired_difference(records, "semi", 4, "stock")
    assert delta == pytest.approx((0.0, 0.03, 3))
    assert paired_standard_error(delta) == pytest.approx(0.03 / math.sqrt(3)) == pytest.approx(0.017320508)
    assert _fmt_delta(delta) == "+0.0 ± 3.0 (SE 1.7, 3 draws)"
    assert _fmt_delta((0.046, float("nan"), 1)) == "+4.6 (1 draw)"
    assert math.isnan(paired_standard_error((0.046, float("nan"), 1)))


def test_study_md_and_csv_give_the_paired_standard_error(tmp_path):
    """Reference S on draws 0 and 1 (0.30, 0.40), arm T (0.35, 0.40): differences +0.05 and 0.00, mean 0.025,
    std 0.035355, SE 0.025 (2.5 points); the reference's row has no 'vs'."""
    def record(arm, draw, dice):
        return {"arm": arm, "n": 4, "draw": draw, "run": 0, "n_labeled": 4, "iterations": 10, "train_s": 1.0,
                "labels": {"1": "a"}, "mean": {"1": {"Dice": dice, "HD95": 1.0, "NSD": 0.5}},
                "foreground_mean": {"Dice": dice, "HD95": 1.0, "NSD": 0.5}, "labeled": ["c0"]}

    study = types.SimpleNamespace(arms=[("S", [4]), ("T", [4])], pretrainers=[], finetune_arms=lambda p: [p],
                                  reported=lambda arm: [arm], folder=str(tmp_path), epochs=1, iterations=10,
                                  match_time=None, dataset_name="Dataset1_X", configuration="2d", plans="P",
                                  pool=["c0"], val=["c1"], counts=[4], draws=2, seed=0, raw=str(tmp_path), postprocess=False)
    write_outputs(study, [record("S", 0, 0.30), record("S", 1, 0.40), record("T", 0, 0.35), record("T", 1, 0.40)],
                  [])
    md = (tmp_path / "study.md").read_text()
    assert "| +2.5 ± 3.5 (SE 2.5, 2 draws) |" in md and "SE = that standard deviation / sqrt(draws)" in md
    with open(tmp_path / "study.csv") as f:
        rows = {r["arm"]: r for r in csv.DictReader(f)}
    assert [rows["S"][k] for k in ("vs_reference", "vs_mean", "vs_se", "vs_draws")] == ["", "", "", ""]
    assert rows["T"]["vs_reference"] == "S" and rows["T"]["vs_draws"] == "2"
    assert float(rows["T"]["vs_mean"]) == pytest.approx(0.025) and float(rows["T"]["vs_se"]) == pytest.approx(0.025)
    assert float(rows["T"]["vs_std"]) == pytest.approx(math.sqrt(0.00125))
    assert float(rows["T"]["Dice_mean_mean"]) == pytest.approx(0.375)  # the columns that were there stay


def test_expected_paired_se():
    # sqrt((0 + 2.3^2 / 1 + 2.3^2 / 1) / 3) = sqrt(10.58 / 3) = 1.8779: 3 draws x 1 run cannot reach SE 1
    assert expected_paired_se(2.3, 0.0, 1, 1, 3) == pytest.approx(1.877942)
    # sqrt((1^2 + 2^2 / 1 + 2^2 / 4) / 5) = sqrt(6 / 5) = 1.0954
    assert expected_paired_se(2.0, 1.0, 1, 4, 5) == pytest.approx(math.sqrt(1.2))
    with pytest.raises(ValueError):
        expected_paired_se(2.0, 1.0, 0, 4, 5)


def test_cheapest_design_reaches_the_target_at_the_least_cost():
    """sigma 2.3 (5.29 per run), target SE 1, an arm run costs 10 reference runs. tau 0: 1 arm + 2 reference runs per
    draw need 5.29 + 2.645 = 7.935 -> 8 draws, cost 8 x 12 = 96 (1 + 1: 11 draws, 121; 1 + 3: 8, 104; 1 + 4: 7, 98;
    2 + 4 on 4 draws and 4 + 8 on 2 draws also cost 96 at the same SE: more draws win the tie).
    tau 1.5: 2.25 + 5.29 + 1.3225 = 8.8625 -> 9 draws of 1 + 4, cost 126 (1 + 2: 11 draws, 132; 1 + 3: 10, 130).
    tau 3: 9 + 7.935 = 16.935 -> 17 draws of 1 + 2, cost 204 (1 + 1: 20 draws, 220; 1 + 4: 16, 224)."""
    d = cheapest_design(1.0, 2.3, 0.0, 10)
    assert (d["draws"], d["r_arm"], d["r_ref"], d["cost"]) == (8, 1, 2, 96)
    assert d["se"] == pytest.approx(math.sqrt(7.935 / 8))
    d = cheapest_design(1.0, 2.3, 1.5, 10)
    assert (d["draws"], d["r_arm"], d["r_ref"], d["cost"]) == (9, 1, 4, 126)
    assert d["se"] == pytest.approx(math.sqrt(8.8625 / 9))
    d = cheapest_design(1.0, 2.3, 3.0, 10)
    assert (d["draws"], d["r_arm"], d["r_ref"], d["cost"]) == (17, 1, 2, 204)
    # equal costs (ratio 1), sigma 2: 8 draws x (1 + 1), 4 x (2 + 2), 2 x (4 + 4) all cost 16 at SE 1: most draws
    d = cheapest_design(1.0, 2.0, 0.0, 1)
    assert (d["draws"], d["r_arm"], d["r_ref"], d["cost"], d["se"]) == (8, 1, 1, 16, pytest.approx(1.0))
    # no noise at all: still two draws, an SE is not estimated from one
    assert cheapest_design(1.0, 0.0, 0.0)["draws"] == 2
    with pytest.raises(ValueError, match="positive"):
        cheapest_design(0.0, 2.3, 0.0)


def test_between_draw_sd_removes_the_run_noise():
    assert between_draw_sd(3.0, [4.0, 2.0]) == pytest.approx(math.sqrt(9 - 3))
    assert between_draw_sd(1.0, [4.0]) == 0.0  # noise larger than the spread: floored at 0
    assert math.isnan(between_draw_sd(float("nan"), [4.0])) and math.isnan(between_draw_sd(1.0, []))


def _dice_record(arm, draw, dice, n=4):
    return {"arm": arm, "n": n, "draw": draw, "foreground_mean": {"Dice": dice}}


def test_plan_study_estimates_sigma_and_tau_from_the_runs():
    """Reference S: 0.30, 0.34 on draw 0, 0.40, 0.44 on draw 1; arm T one run each, 0.40 and 0.38. In Dice points:
    sigma^2 = (2 x 2^2 + 2 x 2^2) / 2 = 8; differences +8 and -4 (mean +2, variance 72); noise per draw
    8 x (1/1 + 1/2) = 12; tau^2 = 72 - 12 = 60. Target SE 5, arm 10x a reference run: every design needs 3 draws
    (variance >= 68 > 2 x 25), the cheapest 1 + 2 runs (72 / 3 = 24 <= 25), cost 3 x 12 = 36."""
    records = [_dice_record("S", 0, 0.30), _dice_record("S", 0, 0.34), _dice_record("S", 1, 0.40),
               _dice_record("S", 1, 0.44), _dice_record("T", 0, 0.40), _dice_record("T", 1, 0.38)]
    (plan,) = plan_study(records, "S", 5.0, 10.0)
    assert (plan["arm"], plan["n"]) == ("T", "4")
    assert plan["sigma"] == pytest.approx(math.sqrt(8)) and plan["tau"] == pytest.approx(math.sqrt(60))
    assert not plan["tau_assumed"] and plan["delta"][0] == pytest.approx(0.02)
    d = plan["design"]
    assert (d["draws"], d["r_arm"], d["r_ref"], d["cost"]) == (3, 1, 2, 36)
    assert d["se"] == pytest.approx(math.sqrt(72 / 3))
    line = format_plan(plan, "S", 5.0)
    assert line.startswith("n=4 T: vs +2.0 ± 8.5 (SE 6.0, 2 draws); run-to-run sd 2.8, between-draw sd 7.7 -> SE 5")
    assert "3 draws, each with 1 run(s) of the arm and 2 of S (expected SE 4.90, cost 36 trainings of S)" in line
    # given values replace the estimates: sigma 2, tau 0 -> 4 x (1 + 1) = 8 <= 2 x 25: 2 draws x (1 + 1), cost 22
    (plan,) = plan_study(records, "S", 5.0, 10.0, sigma=2.0, tau=0.0)
    assert (plan["design"]["draws"], plan["design"]["r_arm"], plan["design"]["r_ref"]) == (2, 1, 1)


def test_plan_study_without_repeated_runs_or_with_one_draw():
    one_run = [_dice_record("S", 0, 0.30), _dice_record("S", 1, 0.40), _dice_record("T", 0, 0.40),
               _dice_record("T", 1, 0.38)]
    (plan,) = plan_study(one_run, "S", 1.0)
    assert plan["design"] is None and "give --sigma" in format_plan(plan, "S", 1.0)
    one_draw = [_dice_record("S", 0, 0.30), _dice_record("S", 0, 0.34), _dice_record("T", 0, 0.40)]
    (plan,) = plan_study(one_draw, "S", 1.0)
    assert plan["tau_assumed"] and plan["tau"] == 0.0 and "(assumed: one draw)" in format_plan(plan, "S", 1.0)


def test_plan_se_on_the_command_line(tmp_path, capsys):
    assert main(["--plan-se", "1", "--sigma", "2.3", "--tau", "1.5"]) == 0
    assert "9 draws, each with 1 run(s) of the arm and 4 of the reference" in capsys.readouterr().out
    arms = tmp_path / "arms"
    arms.mkdir()
    records = [_dice_record("S", 0, 0.30), _dice_record("S", 0, 0.34), _dice_record("S", 1, 0.40),
               _dice_record("S", 1, 0.44), _dice_record("T", 0, 0.40), _dice_record("T", 1, 0.38)]
    for i, r in enumerate(records):
        (arms / f"{i}.json").write_text(json.dumps(r))
    assert main(["--plan-se", "5", "-o", str(tmp_path), "-tr", "S", "T"]) == 0
    assert "3 draws, each with 1 run(s) of the arm and 2 of S" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--plan-se", "1"])  # neither a study folder nor --sigma


def test_one_choice_variant_of_a_variant_keeps_its_parents_choices():
    """A variant's parent may be a variant: its choices apply first; a class attribute (read before any instance,
    as nnU-Net's build_network_architecture reads predict_with) is set on the variant class too."""
    from nnunetv2_advmim.trainers.one_choice import OneChoice

    class Parent:
        predict_with = "cnn"

        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            self.lambda_u, self.other = 1.0, "kept"

    class A(OneChoice, Parent):
        choice = {"lambda_u": 0.5, "predict_with": "hybrid"}

    class B(OneChoice, A):
        choice = {"other": "changed"}

    assert A.predict_with == "hybrid" and Parent.predict_with == "cnn" and B.__mro__[1] is A
    b = B({}, "2d", 0, {})
    assert (b.lambda_u, b.other, b.predict_with) == (0.5, "changed", "hybrid")
