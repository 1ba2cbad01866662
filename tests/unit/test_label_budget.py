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


# ------------------------------------------------------------------------------ crash safety of the writer
def _write_budget_files(folder, n_labeled=4, seed=0):
    budget = make_budget(POOL, n_labeled, seed=seed, n_folds=5)
    write_budget(str(folder), budget)
    return budget


def test_crash_while_writing_new_splits_leaves_the_old_splits_in_place(tmp_path, monkeypatch):
    """A crash after the backup but before the new file is complete: splits_final.json must still exist (stock
    nnU-Net would otherwise draw a fresh 5-fold split over every case, labels included) and hold the old split."""
    import nnunetv2_advmim.data.label_budget as lb
    _write_budget_files(tmp_path, 4, seed=0)
    old = json.load(open(tmp_path / SPLITS_FILE))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(lb.json, "dump", crash)
    monkeypatch.setattr(lb.json, "dumps", crash)
    with pytest.raises(KeyboardInterrupt):
        _write_budget_files(tmp_path, 6, seed=1)
    assert json.load(open(tmp_path / SPLITS_FILE)) == old
    backups = [p for p in os.listdir(tmp_path) if p.startswith(SPLITS_FILE + ".bak-")]
    assert len(backups) == 1 and json.load(open(tmp_path / backups[0])) == old
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temporary file left behind


def test_json_writer_fsyncs_file_and_folder_through_a_unique_temporary(tmp_path, monkeypatch):
    import nnunetv2_advmim.data.label_budget as lb
    synced, replaced = [], []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        replaced.append((str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "x.json"
    lb.write_json_atomic(str(target), {"a": 1})
    lb.write_json_atomic(str(target), {"a": 2})
    assert json.load(open(target)) == {"a": 2}
    assert synced.count(False) == 2 and synced.count(True) == 2  # the file, then its folder, per write
    (src1, dst1), (src2, dst2) = replaced
    assert dst1 == dst2 == str(target) and src1 != src2 != str(target) + ".tmp"
    assert os.path.dirname(src1) == str(tmp_path)  # same folder: os.replace stays atomic
    assert sorted(os.listdir(tmp_path)) == ["x.json"]


def test_missing_splits_under_a_budget_is_an_error_naming_the_fix(tmp_path):
    from nnunetv2_advmim.data.label_budget import budget_unlabeled_cases
    budget = _write_budget_files(tmp_path)
    assert budget_unlabeled_cases(budget, str(tmp_path), 0) == budget["folds"][0]["unlabeled"]
    os.remove(tmp_path / SPLITS_FILE)
    with pytest.raises(RuntimeError) as e:
        budget_unlabeled_cases(budget, str(tmp_path), 0)
    msg = str(e.value)
    assert str(tmp_path / SPLITS_FILE) in msg and "nnUNetv2_advmim_label_budget" in msg


def test_training_start_check_refuses_a_budget_without_splits(tmp_path):
    from nnunetv2_advmim.data.label_budget import check_label_budget_at_start
    _write_budget_files(tmp_path)
    check_label_budget_at_start(str(tmp_path), 0, "nnUNetTrainer_demo")  # consistent: passes
    check_label_budget_at_start(str(tmp_path / "none"), "all", "nnUNetTrainer_demo")  # no budget: anything goes
    with pytest.raises(RuntimeError, match="refuses fold 'all'"):
        check_label_budget_at_start(str(tmp_path), "all", "nnUNetTrainer_demo")
    splits = json.load(open(tmp_path / SPLITS_FILE))
    splits[1]["train"] = splits[1]["train"][:-1]
    json.dump(splits, open(tmp_path / SPLITS_FILE, "w"))
    with pytest.raises(RuntimeError, match="no longer matches"):
        check_label_budget_at_start(str(tmp_path), 1, "nnUNetTrainer_demo")
    os.remove(tmp_path / SPLITS_FILE)
    with pytest.raises(RuntimeError) as e:
        check_label_budget_at_start(str(tmp_path), 0, "nnUNetTrainer_demo")
    assert SPLITS_FILE in str(e.value) and "nnUNetv2_advmim_label_budget" in str(e.value)


def test_corrupt_budget_or_splits_file_is_an_error_naming_the_file(tmp_path):
    from nnunetv2_advmim.data.label_budget import budget_unlabeled_cases, load_budget
    budget = _write_budget_files(tmp_path)
    (tmp_path / SPLITS_FILE).write_text('[{"train": [')
    with pytest.raises(RuntimeError) as e:
        budget_unlabeled_cases(budget, str(tmp_path), 0)
    assert str(tmp_path / SPLITS_FILE) in str(e.value)
    (tmp_path / BUDGET_FILE).write_text("{not json")
    with pytest.raises(RuntimeError) as e:
        load_budget(str(tmp_path))
    assert str(tmp_path / BUDGET_FILE) in str(e.value) and "nnUNetv2_advmim_label_budget" in str(e.value)
