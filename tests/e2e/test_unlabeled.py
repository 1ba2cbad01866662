"""imagesUnlabeled preprocessing: same arrays as nnU-Net's own preprocessing, idempotent, clear errors."""
import os
import pickle
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import copy_planned, run_cmd
from nnunetv2_advmim.data.synthetic import make_case
from nnunetv2_advmim.data.paths import load_plans_and_dataset_json
from nnunetv2_advmim.data.unlabeled import (UnlabeledDataset, find_unlabeled_cases, list_unlabeled_cases,
                                       preprocess_case, preprocess_unlabeled,
                                       require_unlabeled_pool, unlabeled_folder)


def _write_image(array, spacing, path):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing([float(s) for s in spacing[::-1]])
    sitk.WriteImage(img, path)


def _read_b2nd(path):
    import blosc2
    return blosc2.open(urlpath=path, mode="r")[:]


def _load_pkl(path):
    with open(path, "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="module")
def unl_3d(planned_3d):
    """Dataset 910: copy of planned_3d; imagesUnlabeled gets a duplicate of case_000 and an image at another
    spacing (forces resampling); preprocessed with the real command and 2 worker processes."""
    name, raw, pre = copy_planned(planned_3d, 910, "Unl3D")
    shutil.copy(os.path.join(raw, "imagesTr", "case_000_0000.nii.gz"),
                os.path.join(raw, "imagesUnlabeled", "dup_000_0000.nii.gz"))
    img, seg = make_case(np.random.default_rng(7), (20, 30, 26))
    _write_image(img, (2.6, 1.3, 0.8), os.path.join(raw, "imagesUnlabeled", "resamp_000_0000.nii.gz"))
    _write_image(seg, (2.6, 1.3, 0.8), os.path.join(str(raw), "resamp_000_label.nii.gz"))  # for the reference only
    out = run_cmd(["nnUNetv2_advmim_preprocess_unlabeled", "-d", "910", "-np", "2"], env=planned_3d.env).stdout
    return name, raw, pre, out


def test_unlabeled_equals_nnunet_preprocessing_3d(unl_3d):
    name, raw, pre, out = unl_3d
    assert "3d_fullres: 6 preprocessed, 0 skipped" in out
    u = os.path.join(pre, "nnUNetPlans_3d_fullres_unlabeled")
    lab = os.path.join(pre, "nnUNetPlans_3d_fullres")
    # the duplicate of case_000 equals what nnUNetv2_plan_and_preprocess wrote for case_000 (with its label)
    a, b = _read_b2nd(os.path.join(u, "dup_000.b2nd")), _read_b2nd(os.path.join(lab, "case_000.b2nd"))
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
    pu, pl = _load_pkl(os.path.join(u, "dup_000.pkl")), _load_pkl(os.path.join(lab, "case_000.pkl"))
    for k in ("spacing", "shape_before_cropping", "bbox_used_for_cropping", "shape_after_cropping_and_before_resampling"):
        assert np.array_equal(np.asarray(pu[k]), np.asarray(pl[k])), k
    assert "class_locations" not in pu and "class_locations" in pl
    # the stored "segmentation" is only the nonzero mask: no label values
    assert set(np.unique(_read_b2nd(os.path.join(u, "dup_000_seg.b2nd")))) <= {-1, 0}
    # stock training folders are untouched: no unlabeled case among the labeled configuration's cases
    assert not any(f.startswith(("unlabeled_", "dup_", "resamp_")) for f in os.listdir(lab))


def test_unlabeled_resampled_equals_run_case_with_label(unl_3d):
    name, raw, pre, _ = unl_3d
    pm, dj = load_plans_and_dataset_json(pre)
    cm = pm.get_configuration("3d_fullres")
    ref, _, props = cm.preprocessor_class(verbose=False).run_case(
        [os.path.join(raw, "imagesUnlabeled", "resamp_000_0000.nii.gz")], os.path.join(raw, "resamp_000_label.nii.gz"),
        pm, cm, dj)
    got = _read_b2nd(os.path.join(pre, "nnUNetPlans_3d_fullres_unlabeled", "resamp_000.b2nd"))
    assert got.shape == ref.shape and got.shape[1:] != (20, 30, 26)  # it really was resampled
    np.testing.assert_array_equal(got, ref.astype(np.float32))
    assert list(_load_pkl(os.path.join(pre, "nnUNetPlans_3d_fullres_unlabeled", "resamp_000.pkl"))["spacing"]) \
        == list(props["spacing"])


def test_preprocess_is_idempotent_and_overwrite_redoes(unl_3d, planned_3d):
    name, raw, pre, _ = unl_3d
    u = os.path.join(pre, "nnUNetPlans_3d_fullres_unlabeled")
    mtimes = {f: os.path.getmtime(os.path.join(u, f)) for f in os.listdir(u)}
    out = run_cmd(["nnUNetv2_advmim_preprocess_unlabeled", "-d", "910", "-c", "3d_fullres", "-np", "1"],
                  env=planned_3d.env).stdout
    assert "0 preprocessed, 6 skipped" in out
    assert {f: os.path.getmtime(os.path.join(u, f)) for f in os.listdir(u)} == mtimes
    report = preprocess_unlabeled(910, ["3d_fullres"], num_processes=1, overwrite=True, verbose=False)
    assert len(report["3d_fullres"]["processed"]) == 6 and sorted(os.listdir(u)) == sorted(mtimes)
    # re-planning rewrites the plans file: cases older than it are redone, the others skipped
    plans_file = os.path.join(pre, "nnUNetPlans.json")
    newest = max(os.path.getmtime(os.path.join(u, f)) for f in os.listdir(u))
    os.utime(plans_file, (newest + 5, newest + 5))
    os.utime(os.path.join(u, "dup_000.pkl"), (newest + 10, newest + 10))
    report = preprocess_unlabeled(910, ["3d_fullres"], num_processes=1, verbose=False)
    assert report["3d_fullres"]["skipped"] == ["dup_000"] and len(report["3d_fullres"]["processed"]) == 5


def test_pool_without_budget_and_dataset_never_reads_segmentations(unl_3d):
    name, raw, pre, _ = unl_3d
    pool = find_unlabeled_cases(pre, "nnUNetPlans_3d_fullres", 0)
    assert sorted(pool) == ["dup_000", "resamp_000"] + [f"unlabeled_{i:03d}" for i in range(4)]
    assert set(pool.values()) == {unlabeled_folder(pre, "nnUNetPlans_3d_fullres")}
    ds = UnlabeledDataset({"case_001": os.path.join(pre, "nnUNetPlans_3d_fullres"), **pool})
    ds = pickle.loads(pickle.dumps(ds))
    data, seg, seg_prev, props = ds.load_case("case_001")  # a labeled file: the label stays unread
    assert seg is None and seg_prev is None and "class_locations" not in props and data.shape[0] == 1
    with pytest.raises(RuntimeError, match="unlabeled pool of fold 0 is empty"):
        require_unlabeled_pool({}, pre, "nnUNetPlans_3d_fullres", 0)


def test_unlabeled_equals_nnunet_preprocessing_2d(planned_2d):
    name, raw, pre = copy_planned(planned_2d, 911, "Unl2D")
    shutil.copy(os.path.join(raw, "imagesTr", "case_003_0000.nii.gz"),
                os.path.join(raw, "imagesUnlabeled", "dup_003_0000.nii.gz"))
    report = preprocess_unlabeled(911, None, num_processes=1, verbose=False)
    assert list(report) == ["2d"] and len(report["2d"]["processed"]) == 5
    a = _read_b2nd(os.path.join(pre, "nnUNetPlans_2d_unlabeled", "dup_003.b2nd"))
    b = _read_b2nd(os.path.join(pre, "nnUNetPlans_2d", "case_003.b2nd"))
    assert a.shape == b.shape
    np.testing.assert_array_equal(a, b)
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    folder = os.path.join(pre, "nnUNetPlans_2d_unlabeled")
    assert infer_dataset_class(folder).get_identifiers(folder)  # readable by nnU-Net's own dataset classes


def _bad_raw(tmp_path, files, channels=1):
    raw = tmp_path / "Dataset919_Bad"
    (raw / "imagesUnlabeled").mkdir(parents=True)
    for f in files:
        (raw / "imagesUnlabeled" / f).write_bytes(b"not an image")
    dj = {"channel_names": {str(i): f"c{i}" for i in range(channels)}, "file_ending": ".nii.gz"}
    return str(raw), dj


def test_bad_unlabeled_files_get_clear_errors(tmp_path, unl_3d):
    raw, dj = _bad_raw(tmp_path, ["a_0000.nii.gz", "b_0000.nrrd", "c.nii.gz"])
    with pytest.raises(ValueError) as e:
        list_unlabeled_cases(raw, dj)
    msg = str(e.value)
    assert "b_0000.nrrd" in msg and "file ending differs" in msg and "c.nii.gz" in msg and "rename" in msg
    raw, dj = _bad_raw(tmp_path / "two", ["a_0000.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz"], channels=2)
    with pytest.raises(ValueError, match=r"case 'a'.*a_0001\.nii\.gz"):
        list_unlabeled_cases(raw, dj)
    # an unreadable image: named in the error, with the fix, and no half-written case left behind
    name, _, pre, _ = unl_3d
    pm, dj = load_plans_and_dataset_json(pre)
    cm = pm.get_configuration("3d_fullres")
    bad = os.path.join(raw, "imagesUnlabeled", "a_0000.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match=r"a_0000\.nii\.gz.*remove the case from imagesUnlabeled"):
        preprocess_case(cm.preprocessor_class(verbose=False), str(out / "a"), [bad], pm, cm, dj)
    assert os.listdir(out) == []


def test_unplanned_dataset_is_refused(nnunet_env):
    from nnunetv2_advmim.data.synthetic import make_synthetic_dataset
    make_synthetic_dataset(nnunet_env["nnUNet_raw"], 918, "NotPlanned", dim=2, n_train=1, n_unlabeled=1, n_test=0,
                           shape=(16, 16), overwrite=True)
    os.makedirs(os.path.join(nnunet_env["nnUNet_preprocessed"], "Dataset918_NotPlanned"), exist_ok=True)
    proc = run_cmd(["nnUNetv2_advmim_preprocess_unlabeled", "-d", "918"], env=nnunet_env, check=False)
    assert proc.returncode == 1 and "has not been planned" in proc.stdout and "nnUNetv2_plan_and_preprocess" in proc.stdout
