"""Every console script answers -h, and nnUNetv2_advmim_evaluate runs as a command."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_advmim.evaluation.evaluate import evaluate_folders

SPACING_3D = (2.5, 0.8, 1.0)  # array-axis order (z, y, x)


def write_nifti(arr, path, spacing, origin=None):
    """Write an array in (z, y, x) / (y, x) order with spacing in the same order (SimpleITK wants x first)."""
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    if origin is not None:
        img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def make_cases_3d(rng, n=3, shape=(12, 24, 20)):
    cases = {}
    for i in range(n):
        ref = np.zeros(shape, np.uint8)
        ref[3:9, 4:14, 5:13] = 1
        ref[4:8, 15:21, 6:12] = 2
        pred = np.roll(ref, i, axis=1)
        pred[rng.random(shape) < 0.01] = 1
        if i == 2:
            pred[pred == 2] = 0  # label 2 missed in one case
        cases[f"case_{i:03d}"] = (ref, pred)
    return cases


def test_console_scripts(tmp_path):
    """The installed commands run and the evaluate command gives the in-process values (``-np 1``: every
    worker process pays MONAI's import, several seconds, so the suite leaves the worker pool out)."""
    import subprocess

    for cmd in ("nnUNetv2_advmim_compare", "nnUNetv2_advmim_export_submission"):
        proc = subprocess.run([cmd, "-h"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage" in proc.stdout
    rng = np.random.default_rng(2)
    cases = make_cases_3d(rng, n=2)
    for d in ("ref", "pred"):
        (tmp_path / d).mkdir()
    for c, (r, p) in cases.items():
        write_nifti(r, tmp_path / "ref" / f"{c}.nii.gz", SPACING_3D)
        write_nifti(p, tmp_path / "pred" / f"{c}.nii.gz", SPACING_3D)
    out = tmp_path / "m.json"
    proc = subprocess.run(["nnUNetv2_advmim_evaluate", "-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"),
                           "-o", str(out), "-np", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "foreground mean" in proc.stdout
    data = json.loads(out.read_text())
    serial = evaluate_folders(str(tmp_path / "ref"), str(tmp_path / "pred"))
    assert data["mean"]["1"]["HD95"] == pytest.approx(serial["mean"][1]["HD95"])
    assert data["mean"]["2"]["NSD"] == pytest.approx(serial["mean"][2]["NSD"])
