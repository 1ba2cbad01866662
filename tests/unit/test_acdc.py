"""ACDC: the papers' split and protocols (values), and the converter on a miniature ACDC folder (in process)."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import write_fake_acdc
from nnunetv2_advmim.data import acdc_split
from nnunetv2_advmim.data.acdc_split import (TEST_PATIENTS, TRAIN_PATIENTS, VAL_PATIENTS, full_split,
                                             labeled_patients, protocol_budget, restrict_split)
from nnunetv2_advmim.data.convert_acdc import convert_acdc, main as convert_main
from nnunetv2_advmim.data.label_budget import budget_to_splits, main as budget_main

# the fake folder: acdc-7's labeled patients, two more training patients, one validation and one test patient
PAPERS_7 = ["patient099", "patient038", "patient050", "patient100", "patient058", "patient021", "patient049"]
FAKE = PAPERS_7 + ["patient020", "patient072", "patient028", "patient011"]


def test_split_is_the_100_training_patients_in_three_disjoint_parts():
    assert (len(TRAIN_PATIENTS), len(VAL_PATIENTS), len(TEST_PATIENTS)) == (70, 10, 20)
    parts = [set(TRAIN_PATIENTS), set(VAL_PATIENTS), set(TEST_PATIENTS)]
    assert sum(len(p) for p in parts) == len(set.union(*parts))
    assert set.union(*parts) == {f"patient{i:03d}" for i in range(1, 101)}


def test_protocols_are_the_first_patients_of_train_list():
    assert labeled_patients("acdc-3") == PAPERS_7[:3]
    assert labeled_patients("acdc-7") == PAPERS_7
    assert labeled_patients("acdc-all") == list(TRAIN_PATIENTS)
    with pytest.raises(ValueError, match="unknown protocol 'acdc-5'"):
        labeled_patients("acdc-5")


def _frames(patients):
    return [f"{p}_frame{f:02d}" for p in patients for f in (1, 12)]


def test_protocol_budget_labels_every_frame_of_the_protocol_patients():
    cases = _frames(TRAIN_PATIENTS + VAL_PATIENTS)
    b3 = protocol_budget(cases, "acdc-3")
    assert b3["labeled"] == sorted(_frames(PAPERS_7[:3])) and b3["n_labeled"] == 6
    assert b3["labeled_patients"] == PAPERS_7[:3] and b3["n_folds"] == 1
    fold = b3["folds"][0]
    assert fold["val"] == sorted(_frames(VAL_PATIENTS))
    assert fold["unlabeled"] == sorted(_frames(TRAIN_PATIENTS[3:])) and len(fold["unlabeled"]) == 134
    assert budget_to_splits(b3) == [{"train": b3["labeled"], "val": fold["val"]}]
    b7 = protocol_budget(cases, "acdc-7")
    assert len(b7["labeled"]) == 14 and set(b3["labeled"]) < set(b7["labeled"])
    assert len(b7["folds"][0]["unlabeled"]) == 126
    ball = protocol_budget(cases, "acdc-all")
    assert len(ball["labeled"]) == 140 and ball["folds"][0]["unlabeled"] == []


def test_protocol_budget_refuses_test_patients_missing_and_foreign_cases():
    cases = _frames(TRAIN_PATIENTS + VAL_PATIENTS)
    with pytest.raises(ValueError, match="test patients patient001"):
        protocol_budget(cases + ["patient001_frame01"], "acdc-3")
    with pytest.raises(ValueError, match="patient101"):
        protocol_budget(cases + ["patient101_frame01"], "acdc-3")
    with pytest.raises(ValueError, match="labels patients patient038.*which this dataset lacks"):
        protocol_budget([c for c in cases if not c.startswith("patient038")], "acdc-3")
    with pytest.raises(ValueError, match="patient028 of the split have no preprocessed"):
        protocol_budget([c for c in cases if not c.startswith("patient028")], "acdc-3")
    with pytest.raises(ValueError, match="'case_001' is not named patientXXX_frameYY"):
        protocol_budget(cases + ["case_001"], "acdc-3")
    # a split restricted to the patients present (a converted partial folder) is complete again
    split = restrict_split(full_split(), FAKE)
    assert split == {"train": PAPERS_7 + ["patient020", "patient072"], "val": ["patient028"], "test": ["patient011"]}
    b = protocol_budget(_frames(split["train"] + split["val"]), "acdc-7", split)
    assert b["folds"][0]["unlabeled"] == sorted(_frames(["patient020", "patient072"]))


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch):
    for k in ("nnUNet_raw", "nnUNet_preprocessed"):
        (tmp_path / k).mkdir()
        monkeypatch.setenv(k, str(tmp_path / k))
    return tmp_path


def test_convert_writes_cases_labels_spacing_and_the_split(tmp_path, nnunet_dirs):
    acdc, frames = write_fake_acdc(tmp_path / "ACDC", FAKE)
    result = convert_acdc(acdc, 27, allow_missing=True)
    out = nnunet_dirs / "nnUNet_raw" / "Dataset027_ACDC"
    assert result["folder"] == str(out) and len(result["missing"]) == 89
    train_val = [c for p in FAKE[:-1] for c in frames[p]]
    assert sorted(os.listdir(out / "imagesTr")) == sorted(f"{c}_0000.nii.gz" for c in train_val)
    assert sorted(os.listdir(out / "labelsTr")) == sorted(f"{c}.nii.gz" for c in train_val)
    assert sorted(os.listdir(out / "imagesTs")) == sorted(f"{c}_0000.nii.gz" for c in frames["patient011"])
    assert sorted(os.listdir(out / "labelsTs")) == sorted(f"{c}.nii.gz" for c in frames["patient011"])
    # the frames are the originals: same voxels, ACDC's anisotropic spacing (x, y, z) and label values
    case = frames["patient099"][1]
    src = sitk.ReadImage(os.path.join(acdc, "training", "patient099", f"{case}.nii.gz"))
    img = sitk.ReadImage(str(out / "imagesTr" / f"{case}_0000.nii.gz"))
    seg = sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz"))
    assert img.GetSpacing() == pytest.approx((1.5, 1.5, 10.0)) and seg.GetSpacing() == img.GetSpacing()
    assert np.array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(src))
    assert set(np.unique(sitk.GetArrayFromImage(seg))) == {0, 1, 2, 3}
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert dataset["numTraining"] == 20 and dataset["file_ending"] == ".nii.gz"
    recorded = dataset[acdc_split.SPLIT_KEY]
    assert recorded["train"] == PAPERS_7 + ["patient020", "patient072"] and recorded["complete"] is False
    assert acdc_split.split_of_dataset(dataset)["val"] == ["patient028"]
    splits = json.loads((nnunet_dirs / "nnUNet_preprocessed" / "Dataset027_ACDC" / "splits_final.json").read_text())
    assert splits == [{"train": sorted(c for p in FAKE[:-2] for c in frames[p]), "val": sorted(frames["patient028"])}]
    assert not (out / "imagesTs" / "patient101_frame01_0000.nii.gz").exists()  # testing/ is not converted
    # a second conversion into the same folder needs --overwrite
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_acdc(acdc, 27, allow_missing=True)
    convert_acdc(acdc, 27, allow_missing=True, overwrite=True)


def test_convert_names_missing_patients_and_bad_files(tmp_path, nnunet_dirs, capsys):
    acdc, frames = write_fake_acdc(tmp_path / "ACDC", FAKE)
    assert convert_main(["-i", acdc, "-d", "28"]) == 1
    err = capsys.readouterr().err
    assert "lacks 89 of the 100 patients" in err and "--allow-missing-patients" in err
    for p in ("patient001", "patient002", "patient039", "patient015"):  # test, val and train patients alike
        assert p in err
    assert not (nnunet_dirs / "nnUNet_raw" / "Dataset028_ACDC").exists()
    os.remove(os.path.join(acdc, "training", "patient038", f"{frames['patient038'][1]}_gt.nii.gz"))
    assert convert_main(["-i", acdc, "-d", "28", "--allow-missing-patients"]) == 1
    assert f"{frames['patient038'][1]}.nii.gz: its label {frames['patient038'][1]}_gt.nii.gz is missing" in \
        capsys.readouterr().err
    assert convert_main(["-i", str(tmp_path), "-d", "28"]) == 1
    assert "has no training/ folder" in capsys.readouterr().err


def test_budget_command_refuses_a_protocol_with_n_or_folds(capsys):
    for extra in (["-n", "6"], ["--folds", "2"]):
        with pytest.raises(SystemExit) as e:
            budget_main(["-d", "27", "--protocol", "acdc-3"] + extra)
        assert e.value.code == 2
        assert "--protocol fixes the labeled cases and the fold" in capsys.readouterr().err
