"""nnUNetv2_advmim_compare on nnU-Net's folder layouts (dataset 930): prediction folders with a reference and
model folders, and trainer result folders with fold_K/validation against gt_segmentations."""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_advmim.evaluation.compare import compare_runs, labeled_cases, main
from nnunetv2_advmim.evaluation.evaluate import evaluate_folders
from nnunetv2_advmim.data.synthetic import make_synthetic_dataset

DATASET = "Dataset930_CmpTiny"
CONFIG = "nnUNetPlans__3d_fullres"


def perturbed(src, dst, shift, drop_label=None):
    """Copy a segmentation keeping its geometry: labels rolled by ``shift`` voxels along x, one label removed."""
    img = sitk.ReadImage(src)
    arr = np.roll(sitk.GetArrayFromImage(img), shift, axis=2)
    if drop_label is not None:
        arr[arr == drop_label] = 0
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, dst)


@pytest.fixture(scope="module")
def layout(nnunet_env):
    raw = make_synthetic_dataset(nnunet_env["nnUNet_raw"], 930, "CmpTiny", dim=3, n_train=5, n_unlabeled=0,
                                 n_test=3, shape=(12, 24, 24), spacing=(2.0, 1.0, 1.0), seed=3, overwrite=True)
    prep = os.path.join(nnunet_env["nnUNet_preprocessed"], DATASET)
    results = os.path.join(nnunet_env["nnUNet_results"], DATASET)
    shutil.rmtree(prep, ignore_errors=True)
    shutil.rmtree(results, ignore_errors=True)
    shutil.copytree(os.path.join(raw, "labelsTr"), os.path.join(prep, "gt_segmentations"))
    shutil.copy(os.path.join(raw, "dataset.json"), prep)
    cases = [f"case_{i:03d}" for i in range(5)]
    splits = [{"train": cases[:4], "val": cases[4:]}, {"train": cases[1:], "val": cases[:1]}]
    json.dump(splits, open(os.path.join(prep, "splits_final.json"), "w"))
    folders = {}
    for trainer, shift, drop in (("nnUNetTrainerGood", 1, None), ("nnUNetTrainerPoor", 3, 3)):
        tdir = os.path.join(results, f"{trainer}__{CONFIG}")
        for fold, split in enumerate(splits):
            val = os.path.join(tdir, f"fold_{fold}", "validation")
            os.makedirs(val)
            for c in split["val"]:
                perturbed(os.path.join(raw, "labelsTr", f"{c}.nii.gz"), os.path.join(val, f"{c}.nii.gz"), shift, drop)
        shutil.copy(os.path.join(raw, "dataset.json"), tdir)
        pred = os.path.join(os.path.dirname(raw), f"pred_{trainer}")
        shutil.rmtree(pred, ignore_errors=True)
        os.makedirs(pred)
        for f in os.listdir(os.path.join(raw, "labelsTs")):
            perturbed(os.path.join(raw, "labelsTs", f), os.path.join(pred, f), shift, drop)
        folders[trainer] = (tdir, pred)
    # a semi-supervised trainer records its own count in debug.json (nnU-Net dumps trainer attributes there)
    json.dump({"num_labeled_cases": "2"}, open(os.path.join(folders["nnUNetTrainerPoor"][0], "fold_0",
                                                            "debug.json"), "w"))
    return raw, prep, folders


def test_labeled_case_count_sources(layout):
    raw, prep, folders = layout
    good, poor = folders["nnUNetTrainerGood"][0], folders["nnUNetTrainerPoor"][0]
    assert labeled_cases(os.path.join(good, "fold_0")) == 4  # splits_final.json
    assert labeled_cases(good) == 4  # both folds train on 4 cases
    assert labeled_cases(os.path.join(poor, "fold_0")) == 2  # debug.json wins
    assert labeled_cases(poor) is None  # folds disagree (2 vs 4)


def test_compare_prediction_folders_table_and_png(layout, tmp_path):
    raw, prep, folders = layout
    runs = {name: {"pred": pred, "model": os.path.join(tdir, "fold_0")} for name, (tdir, pred) in folders.items()}
    out = tmp_path / "cmp"
    res = compare_runs(runs, str(out), reference=os.path.join(raw, "labelsTs"), nsd_tolerance=1.0, verbose=False)
    table = res["table"]
    lines = {line.split("  ")[0].strip(): line for line in table.splitlines()}
    assert "organ Dice" in lines and "lesion HD95 [mm]" in lines and "kidney NSD" in lines
    assert lines["labeled training cases"].split()[-2:] == ["4", "2"]
    assert lines["cases evaluated"].split()[-2:] == ["3", "3"]
    good, poor = res["results"]["nnUNetTrainerGood"], res["results"]["nnUNetTrainerPoor"]
    assert good["mean"][1]["Dice"] > poor["mean"][1]["Dice"]
    assert good["mean"][1]["HD95"] < poor["mean"][1]["HD95"]
    assert poor["mean"][3]["Dice"] == 0.0  # the poor run never predicts the lesion
    # the table's numbers are those of the evaluate command on the same folder
    single = evaluate_folders(os.path.join(raw, "labelsTs"), folders["nnUNetTrainerGood"][1], nsd_tolerance=1.0)
    for label in (1, 2, 3):
        for m in ("Dice", "HD95", "ASD", "NSD"):
            assert good["mean"][label][m] == pytest.approx(single["mean"][label][m])
    cell = f"{single['mean'][1]['Dice']:.3f} ± {single['std'][1]['Dice']:.3f}"
    assert cell in lines["organ Dice"]
    # the figure: 4 metric rows x 3 label columns, a real PNG
    from PIL import Image

    img = Image.open(res["png"])
    assert img.format == "PNG" and img.size[0] > 600 and img.size[1] > 600
    assert (out / "comparison.md").read_text().startswith("| metric | nnUNetTrainerGood | nnUNetTrainerPoor |")
    with pytest.raises(FileExistsError, match="comparison"):
        compare_runs(runs, str(out), reference=os.path.join(raw, "labelsTs"), verbose=False)


def test_compare_result_folders_cli(layout, tmp_path, capsys):
    raw, prep, folders = layout
    out = tmp_path / "cmp_cv"
    argv = ["-i", folders["nnUNetTrainerGood"][0], f"P={folders['nnUNetTrainerPoor'][0]}", "-o", str(out), "-np", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "nnUNetTrainerGood" in printed and " P" in printed
    rows = [line for line in printed.splitlines() if line.startswith("cases evaluated")]
    assert rows[0].split()[-2:] == ["2", "2"]  # the validation cases of both folds pooled, against gt_segmentations
    per_run = json.load(open(out / "nnUNetTrainerGood_metrics.json"))
    assert sorted(c["case"] for c in per_run["cases"]) == ["case_000", "case_004"]
    assert per_run["reference_folder"] == os.path.join(prep, "gt_segmentations")
    # prediction folders need a reference; a result folder's validation cases are not in labelsTs
    assert main(["-i", folders["nnUNetTrainerGood"][1], "-o", str(tmp_path / "x")]) == 1
    assert "reference folder" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="without a reference"):
        compare_runs({"a": folders["nnUNetTrainerGood"][0], "b": {"pred": folders["nnUNetTrainerGood"][1]}},
                     str(tmp_path / "y"), reference=os.path.join(raw, "labelsTs"), verbose=False)
