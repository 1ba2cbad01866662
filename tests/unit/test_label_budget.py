"""Label budget: reproducible, disjoint from validation, existing splits backed up."""
import json
import os

import pytest

from nnunetv2_advmim.data.label_budget import (BUDGET_FILE, SPLITS_FILE, budget_to_splits, make_budget,
                                               refuse_fold_all_under_budget, write_budget)

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


def test_fold_all_refused_under_a_budget(tmp_path):
    folder = str(tmp_path)
    refuse_fold_all_under_budget(folder, "all")  # no budget: fold 'all' is stock nnU-Net's business
    write_budget(folder, make_budget(POOL, 4, seed=3, n_folds=5))
    for fold in (0, "0", 4):
        refuse_fold_all_under_budget(folder, fold)  # a fold of the budget's split trains on the labeled cases only
    with pytest.raises(RuntimeError) as e:
        refuse_fold_all_under_budget(folder, "all", "nnUNetTrainerAdvMIM")
    msg = str(e.value)
    assert msg.startswith("nnUNetTrainerAdvMIM refuses fold 'all'")
    assert os.path.join(folder, "label_budget.json") in msg and "keeps 4 case(s) labeled in 5 fold(s)" in msg
    assert "fold 0..4" in msg and "remove" in msg
    (tmp_path / "label_budget.json").write_text("{not json")  # an unreadable budget file is refused as well
    with pytest.raises(RuntimeError, match="label_budget.json defines a label budget"):
        refuse_fold_all_under_budget(folder, "all")
