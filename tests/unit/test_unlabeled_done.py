"""A preprocessed unlabeled case counts as done only when its files load (a kill while nnU-Net writes them leaves
files that exist but do not load; such a case is redone)."""
import os
import pickle

import blosc2
import numpy as np

from helpers import truncate_file
from nnunetv2_advmim.data.unlabeled import _sort_out_done_cases, case_is_done


def _case(folder, name="unl_000"):
    out = os.path.join(folder, name)
    blosc2.asarray(np.random.default_rng(0).normal(size=(1, 16, 16)).astype(np.float32), urlpath=out + ".b2nd",
                   mode="w")
    with open(out + ".pkl", "wb") as f:
        pickle.dump({"spacing": [1.0, 1.0, 1.0], "shape_before_cropping": (1, 16, 16), "note": "x" * 200}, f)
    return out


def test_complete_case_is_done(tmp_path):
    assert case_is_done(_case(str(tmp_path)))


def test_truncated_properties_are_not_done(tmp_path):
    out = _case(str(tmp_path))
    truncate_file(out + ".pkl")
    assert not case_is_done(out)


def test_corrupt_image_array_is_not_done(tmp_path):
    out = _case(str(tmp_path))
    with open(out + ".b2nd", "wb") as f:
        f.write(b"\0" * 64)
    assert not case_is_done(out)


def test_missing_image_array_is_not_done(tmp_path):
    out = _case(str(tmp_path))
    os.remove(out + ".b2nd")
    assert not case_is_done(out)


def test_case_older_than_the_plans_is_not_done(tmp_path):
    out = _case(str(tmp_path))
    plans = tmp_path / "plans.json"
    plans.write_text("{}")
    os.utime(out + ".pkl", (1, 1))
    assert not case_is_done(out, str(plans))


def test_finished_cases_are_skipped_and_outdated_ones_counted(tmp_path):
    folder = str(tmp_path)
    plans = tmp_path / "plans.json"
    plans.write_text("{}")
    _case(folder, "done")
    os.utime(_case(folder, "old") + ".pkl", (1, 1))  # finished with plans older than plans.json
    cases = {"done": ["d_0000.nii.gz"], "old": ["o_0000.nii.gz"], "new": ["n_0000.nii.gz"]}
    todo, skipped, outdated = _sort_out_done_cases(cases, folder, str(plans), overwrite=False)
    assert todo == [(os.path.join(folder, "old"), ["o_0000.nii.gz"]), (os.path.join(folder, "new"), ["n_0000.nii.gz"])]
    assert skipped == ["done"] and outdated == 1
    todo, skipped, outdated = _sort_out_done_cases(cases, folder, str(plans), overwrite=True)
    assert [t[0] for t in todo] == [os.path.join(folder, c) for c in cases] and skipped == [] and outdated == 0
