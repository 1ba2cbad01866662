"""nnUNetv2_advmim_verify_raw: every bad image or label file of a raw dataset is named with its fix (exit 1); a
clean dataset passes (exit 0). Dataset IDs 881-883 (raw folders only, in a temp nnUNet_raw)."""
import os

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import truncate_file
from nnunetv2_advmim.commands import verify_raw
from nnunetv2_advmim.data.synthetic import make_synthetic_dataset


def _dataset(tmp_path, monkeypatch, dataset_id, dim=3):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    shape = (8, 16, 16) if dim == 3 else (24, 24)
    return make_synthetic_dataset(str(tmp_path), dataset_id, "VerifyRaw", dim=dim, n_train=3, n_unlabeled=2,
                                  n_test=2, shape=shape)


def _run(capsys, dataset_id):
    code = 0
    try:
        verify_raw.main(["-d", str(dataset_id)])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("dim", [2, 3])
def test_clean_dataset_passes(tmp_path, monkeypatch, capsys, dim):
    _dataset(tmp_path, monkeypatch, 881, dim)
    code, out, err = _run(capsys, 881)
    assert code == 0 and err == ""
    assert "imagesTr 3 case(s), imagesTs 2 case(s), imagesUnlabeled 2 case(s) checked, no problems" in out


def test_every_bad_file_is_named_with_its_fix(tmp_path, monkeypatch, capsys):
    raw = _dataset(tmp_path, monkeypatch, 882)
    # a NaN image in imagesTr: SimpleITK (stock planning's reader) would read the voxels as 0
    nan_file = os.path.join(raw, "imagesTr", "case_001_0000.nii.gz")
    img = sitk.ReadImage(nan_file, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(img)
    arr[0, 0, :4] = np.nan
    nan_img = sitk.GetImageFromArray(arr)
    nan_img.CopyInformation(img)
    sitk.WriteImage(nan_img, nan_file)
    truncated = truncate_file(os.path.join(raw, "imagesTs", "test_000_0000.nii.gz"))
    truncated_u = truncate_file(os.path.join(raw, "imagesUnlabeled", "unlabeled_001_0000.nii.gz"))
    # a label on another grid than its image, and a label value dataset.json does not declare
    label = os.path.join(raw, "labelsTr", "case_002.nii.gz")
    lab = sitk.ReadImage(label)
    small = sitk.GetImageFromArray(sitk.GetArrayFromImage(lab)[:, :8])
    small.SetSpacing(lab.GetSpacing())
    sitk.WriteImage(small, label)
    label_ts = os.path.join(raw, "labelsTs", "test_001.nii.gz")
    lab = sitk.ReadImage(label_ts)
    arr = sitk.GetArrayFromImage(lab)
    arr[0, 0, 0] = 9
    bad_value = sitk.GetImageFromArray(arr)
    bad_value.CopyInformation(lab)
    sitk.WriteImage(bad_value, label_ts)
    os.remove(os.path.join(raw, "labelsTr", "case_000.nii.gz"))

    code, out, err = _run(capsys, 882)
    assert code == 1 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 6, err
    by_file = {f: [e for e in errors if f in e] for f in (nan_file, truncated, truncated_u, label, label_ts)}
    assert all(len(v) == 1 for v in by_file.values()), err
    assert "4 NaN and 0 inf voxel(s) of 2048" in by_file[nan_file][0] and "Replace them" in by_file[nan_file][0]
    assert "truncated or corrupt" in by_file[truncated][0] and "export the file again" in by_file[truncated][0]
    assert "truncated or corrupt" in by_file[truncated_u][0]
    assert "shape (8, 8, 16) differs from its image's (8, 16, 16)" in by_file[label][0]
    assert "label value(s) [9] are not in dataset.json's labels [0, 1, 2, 3]" in by_file[label_ts][0]
    assert any("case_000.nii.gz does not exist: imagesTr case 'case_000' has no label" in e for e in errors)
    assert "6 problem(s) in imagesTr 3 case(s), imagesTs 2 case(s), imagesUnlabeled 2 case(s)" in err


def test_unknown_dataset_and_missing_dataset_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    code, _, err = _run(capsys, 883)
    assert code == 1 and "No dataset with ID 883" in err
    os.makedirs(tmp_path / "Dataset883_Empty")
    code, _, err = _run(capsys, 883)
    assert code == 1 and "dataset.json does not exist" in err


# ------------------------------------------------------------------------------ inputs that used to pass
def _edit_dataset_json(raw, **changes):
    import json
    path = os.path.join(raw, "dataset.json")
    with open(path) as f:
        d = json.load(f)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    with open(path, "w") as f:
        json.dump(d, f)
    return path


@pytest.mark.parametrize("key", ["file_ending", "channel_names"])
def test_dataset_json_without_a_required_key(tmp_path, monkeypatch, capsys, key):
    raw = _dataset(tmp_path, monkeypatch, 884)
    path = _edit_dataset_json(raw, **{key: None})
    code, out, err = _run(capsys, 884)
    assert code == 1 and "Traceback" not in err
    assert path in err and key in err


def test_non_integer_label_value_is_a_problem(tmp_path, monkeypatch, capsys):
    raw = _dataset(tmp_path, monkeypatch, 885)
    label = os.path.join(raw, "labelsTr", "case_000.nii.gz")
    lab = sitk.ReadImage(label)
    arr = sitk.GetArrayFromImage(lab).astype(np.float32)
    arr[0, 0, 0] = 0.5
    out_img = sitk.GetImageFromArray(arr)
    out_img.CopyInformation(lab)
    sitk.WriteImage(out_img, label)
    code, out, err = _run(capsys, 885)
    assert code == 1 and label in err and "0.5" in err and "integer" in err


def test_unlabeled_image_with_another_orientation_is_a_warning(tmp_path, monkeypatch, capsys):
    raw = _dataset(tmp_path, monkeypatch, 886)
    f = os.path.join(raw, "imagesUnlabeled", "unlabeled_000_0000.nii.gz")
    img = sitk.ReadImage(f)
    img.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, f)
    code, out, err = _run(capsys, 886)
    assert code == 0, err
    warning = [line for line in err.splitlines() if f in line]
    assert len(warning) == 1 and warning[0].startswith("WARNING") and "direction" in warning[0]
    assert "imagesTr" in warning[0]


def test_case_name_shared_by_imagesUnlabeled_and_imagesTr_is_a_problem(tmp_path, monkeypatch, capsys):
    import shutil
    raw = _dataset(tmp_path, monkeypatch, 887)
    shutil.copy(os.path.join(raw, "imagesUnlabeled", "unlabeled_000_0000.nii.gz"),
                os.path.join(raw, "imagesUnlabeled", "case_001_0000.nii.gz"))
    code, out, err = _run(capsys, 887)
    assert code == 1 and "case_001" in err and "imagesUnlabeled" in err and "rename" in err


def test_corrupt_budget_and_split_files_are_named(tmp_path, monkeypatch, capsys):
    raw = _dataset(tmp_path, monkeypatch, 888)
    pre = tmp_path / "pre"
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    folder = pre / os.path.basename(raw)
    folder.mkdir(parents=True)
    (folder / "label_budget.json").write_text("{broken")
    (folder / "splits_final.json").write_text("[{")
    code, out, err = _run(capsys, 888)
    assert code == 1
    assert str(folder / "label_budget.json") in err and str(folder / "splits_final.json") in err
    assert "nnUNetv2_advmim_label_budget" in err


def test_size_guard(tmp_path, monkeypatch, capsys):
    raw = _dataset(tmp_path, monkeypatch, 889)
    code = 0
    try:
        verify_raw.main(["-d", "889", "--max-voxels", "1000"])  # the images hold 8 * 16 * 16 = 2048 voxels
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 1 and "2048" in err and "--max-voxels" in err
    assert os.path.join(raw, "imagesTr", "case_000_0000.nii.gz") in err
    try:
        verify_raw.main(["-d", "889", "--max-voxels", "4096"])
    except SystemExit as e:
        assert e.code == 0
    assert "no problems" in capsys.readouterr().out


# ------------------------------------------------------------- the steps of verify_raw_dataset on plain values
def test_num_training_warning_only_on_a_mismatch():
    assert verify_raw.num_training_warning("/d/dataset.json", 3, {"imagesTr": 3}) is None
    assert verify_raw.num_training_warning("/d/dataset.json", "3", {"imagesTr": 3}) is None  # JSON may hold a string
    assert verify_raw.num_training_warning("/d/dataset.json", None, {"imagesTr": 3}) is None
    assert verify_raw.num_training_warning("/d/dataset.json", 3, {"imagesTs": 2}) is None  # imagesTr not checked
    assert verify_raw.num_training_warning("/d/dataset.json", 4, {"imagesTr": 3}) == (
        "/d/dataset.json: numTraining is 4 but imagesTr holds 3 case(s); nnU-Net's planning refuses the mismatch: "
        "correct numTraining.")


class _SpacingReader:
    """A reader over plain values: file name -> spacing; files missing from the table cannot be read."""
    spacing = {}

    def read_images(self, files):
        if files[0] not in self.spacing:
            raise RuntimeError("unreadable")
        return None, {"spacing": self.spacing[files[0]]}


def test_expected_dimensionality_asks_the_pools_in_order(monkeypatch):
    monkeypatch.setattr(_SpacingReader, "spacing", {"tr.png": (999.0, 1.0, 1.0), "ts.nii": (2.0, 1.0, 1.0),
                                                    "u.nii": (2.0, 1.0, 1.0)})
    pools = {"imagesUnlabeled": {"u": ["u.nii"]}, "imagesTs": {"t": ["ts.nii"]}, "imagesTr": {"a": ["tr.png"]}}
    assert verify_raw.expected_dimensionality(pools, _SpacingReader) is True  # imagesTr first, whatever the order
    pools["imagesTr"] = {"a": ["broken"]}  # no readable imagesTr case: imagesTs decides
    assert verify_raw.expected_dimensionality(pools, _SpacingReader) is False
    pools["imagesTs"] = {}
    _SpacingReader.spacing["u.nii"] = (999.0, 0.5, 0.5)
    assert verify_raw.expected_dimensionality(pools, _SpacingReader) is True  # then imagesUnlabeled
    assert verify_raw.expected_dimensionality({"imagesTr": {"a": ["broken"]}}, _SpacingReader) is False  # no verdict
