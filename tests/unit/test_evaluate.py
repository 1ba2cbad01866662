"""nnUNetv2_advmim_evaluate: reading through nnU-Net's readers gives the array values; geometry checks; outputs."""
import csv
import json
import math
import os

import numpy as np
import pytest

from nnunetv2_advmim.evaluation.evaluate import evaluate_folders, file_ending_of, foreground_labels_in, main
from nnunetv2_advmim.evaluation.metrics import label_metrics
from helpers import evaluation_cases_3d, write_evaluation_folders, write_label_map

SPACING_3D = (2.5, 0.8, 1.0)  # array-axis order (z, y, x)


def test_reader_gives_array_values_3d_and_2d(tmp_path):
    rng = np.random.default_rng(0)
    cases = evaluation_cases_3d(rng)
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    for c, (r, p) in cases.items():
        write_label_map(r, ref_dir / f"{c}.nii.gz", SPACING_3D)
        write_label_map(p, pred_dir / f"{c}.nii.gz", SPACING_3D)
    res = evaluate_folders(str(ref_dir), str(pred_dir), nsd_tolerance=1.0)
    assert list(res["labels"]) == [1, 2] and res["num_cases"] == 3
    for entry in res["cases"]:
        r, p = cases[entry["case"]]
        assert entry["spacing"] == pytest.approx(list(SPACING_3D))
        expected = label_metrics(r, p, SPACING_3D, [1, 2], nsd_tolerance=1.0)
        for label in (1, 2):
            for m in ("Dice", "HD95", "ASD", "NSD"):
                assert entry["metrics"][label][m] == pytest.approx(expected[label][m], rel=1e-6), (entry["case"], m)
    assert res["cases"][2]["metrics"][2]["empty"] == "prediction"
    # Dice agrees with nnU-Net's own evaluation of the same files
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    for entry in res["cases"]:
        ref_nn = compute_metrics(entry["reference_file"], entry["prediction_file"], SimpleITKIO(), [1, 2])
        for label in (1, 2):
            assert entry["metrics"][label]["Dice"] == pytest.approx(ref_nn["metrics"][label]["Dice"], rel=1e-9)

    # 2D images: nnU-Net's SimpleITK reader gives (1, y, x) with spacing 999 on the first axis; values are 2D ones
    ref2, pred2 = np.zeros((30, 26), np.uint8), np.zeros((30, 26), np.uint8)
    ref2[5:20, 4:16] = 1
    pred2[7:22, 4:16] = 1
    d2r, d2p = tmp_path / "ref2d", tmp_path / "pred2d"
    d2r.mkdir()
    d2p.mkdir()
    write_label_map(ref2, d2r / "img.nii.gz", (0.6, 1.7))
    write_label_map(pred2, d2p / "img.nii.gz", (0.6, 1.7))
    res2 = evaluate_folders(str(d2r), str(d2p), labels=[1], nsd_tolerance=0.5)
    expected = label_metrics(ref2, pred2, (0.6, 1.7), [1], nsd_tolerance=0.5)[1]
    got = res2["cases"][0]["metrics"][1]
    for m in ("Dice", "HD95", "ASD", "NSD"):
        assert got[m] == pytest.approx(expected[m], rel=1e-6)
    assert got["HD95"] == pytest.approx(2 * 0.6)  # the square moved 2 rows along the 0.6 mm axis


def test_png_through_natural_image_reader(tmp_path):
    """PNG (nnU-Net's NaturalImage2DIO, spacing 1): same values as arrays with unit spacing."""
    from PIL import Image

    ref = np.zeros((20, 20), np.uint8)
    ref[4:12, 4:12] = 1
    pred = np.roll(ref, 3, axis=0)
    for d, a in (("ref", ref), ("pred", pred)):
        (tmp_path / d).mkdir()
        Image.fromarray(a).save(tmp_path / d / "x.png")
    res = evaluate_folders(str(tmp_path / "ref"), str(tmp_path / "pred"))
    got = res["cases"][0]["metrics"][1]
    assert got["Dice"] == pytest.approx(5 / 8) and got["HD95"] == pytest.approx(3.0)


def test_geometry_and_case_checks(tmp_path):
    ref = np.zeros((8, 10, 10), np.uint8)
    ref[2:6, 2:8, 2:8] = 1
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    write_label_map(ref, tmp_path / "ref" / "a.nii.gz", SPACING_3D)
    write_label_map(ref, tmp_path / "ref" / "b.nii.gz", SPACING_3D)
    write_label_map(ref, tmp_path / "pred" / "a.nii.gz", (2.0, 0.8, 1.0))  # wrong spacing
    with pytest.raises(ValueError, match=r"a\.nii\.gz.*spacing"):
        evaluate_folders(str(tmp_path / "ref"), str(tmp_path / "pred"), require_all=False)
    write_label_map(ref, tmp_path / "pred" / "a.nii.gz", SPACING_3D, origin=(5.0, 0.0, 0.0))  # wrong origin
    with pytest.raises(ValueError, match="origin"):
        evaluate_folders(str(tmp_path / "ref"), str(tmp_path / "pred"), require_all=False)
    write_label_map(ref, tmp_path / "pred" / "a.nii.gz", SPACING_3D)
    with pytest.raises(FileNotFoundError, match="b"):  # b has no prediction
        evaluate_folders(str(tmp_path / "ref"), str(tmp_path / "pred"))
    assert evaluate_folders(str(tmp_path / "ref"), str(tmp_path / "pred"),
                            require_all=False)["missing_predictions"] == ["b"]
    write_label_map(ref, tmp_path / "pred" / "zzz.nii.gz", SPACING_3D)
    with pytest.raises(FileNotFoundError, match="zzz"):  # prediction without reference
        evaluate_folders(str(tmp_path / "ref"), str(tmp_path / "pred"), require_all=False)


def test_cli_outputs_and_no_overwrite(tmp_path, capsys):
    write_evaluation_folders(tmp_path, seed=1)
    # label names from a dataset.json (nnUNetv2_predict writes one into prediction folders)
    (tmp_path / "pred" / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "organ": 1, "lesion": 2}, "file_ending": ".nii.gz"}))
    out = tmp_path / "m" / "metrics.json"
    argv = ["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-o", str(out), "--nsd-tolerance",
            "1:2.0", "2:1.0", "-np", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "organ" in printed and "lesion" in printed and "HD95 [mm]" in printed
    data = json.loads(out.read_text())
    assert data["labels"] == {"1": "organ", "2": "lesion"}
    assert data["nsd_tolerance_mm"] == {"1": 2.0, "2": 1.0}
    assert set(data["mean"]["1"]) == {"Dice", "HD95", "ASD", "NSD"}
    rows = list(csv.DictReader(open(tmp_path / "m" / "metrics.csv")))
    per_case = [r for r in rows if r["case"].startswith("case_")]
    assert len(per_case) == 4
    mean_dice_1 = float(next(r for r in rows if r["case"] == "mean" and r["label"] == "1")["Dice"])
    assert mean_dice_1 == pytest.approx(np.mean([float(r["Dice"]) for r in per_case if r["label"] == "1"]), rel=1e-5)
    assert math.isclose(mean_dice_1, data["mean"]["1"]["Dice"], rel_tol=1e-5)
    # an existing result is never replaced silently
    before = out.read_text()
    assert main(argv) == 1
    assert "exists" in capsys.readouterr().err and out.read_text() == before
    assert main(argv + ["--overwrite"]) == 0


def test_cli_stops_on_missing_predictions_unless_chill(tmp_path, capsys):
    """Like stock nnUNetv2_evaluate_folder: a reference case without a prediction stops the command (exit 1, no
    output written); --chill evaluates the predicted cases and lists the missing one."""
    ref, pred = write_evaluation_folders(tmp_path, seed=3, n=3)
    os.remove(pred / "case_002.nii.gz")
    out = tmp_path / "m.json"
    argv = ["-ref", str(ref), "-pred", str(pred), "-o", str(out), "-np", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "case_002" in err and "--chill" in err and not out.exists()
    assert main(argv + ["--chill"]) == 0
    data = json.loads(out.read_text())
    assert data["num_cases"] == 2 and data["missing_predictions"] == ["case_002"]


def test_file_ending_of_and_foreground_labels_in(tmp_path):
    assert file_ending_of("case_1.nii.gz") == ".nii.gz" and file_ending_of("case_1.nii") == ".nii"
    assert file_ending_of("CASE.NII.GZ") == ".NII.GZ" and file_ending_of("notes.txt") is None
    a, b = np.zeros((3, 4, 5), np.uint8), np.zeros((3, 4, 5), np.uint8)
    a[0, 0, :2], a[1, 1, 1] = 1, 3
    b[2, 2, 2], b[0, 3, 4] = 2, 5
    files = [str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nrrd")]  # each file read with its own ending's reader
    write_label_map(a, files[0], SPACING_3D)
    write_label_map(b, files[1], SPACING_3D)
    assert foreground_labels_in(files) == [1, 2, 3, 5]
    assert foreground_labels_in(files, ignore_label=5) == [1, 2, 3]
    assert foreground_labels_in(files[1:], ignore_label=2) == [5]
