"""Every console script answers -h, and nnUNetv2_advmim_evaluate runs as a command."""
import json

import pytest

from nnunetv2_advmim.evaluation.evaluate import evaluate_folders
from helpers import write_evaluation_folders



def test_console_scripts(tmp_path):
    """The installed commands run and the evaluate command gives the in-process values (``-np 1``: every
    worker process pays MONAI's import, several seconds, so the suite leaves the worker pool out)."""
    import subprocess

    for cmd in ("nnUNetv2_advmim_compare", "nnUNetv2_advmim_export_submission", "nnUNetv2_advmim_verify_raw"):
        proc = subprocess.run([cmd, "-h"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage" in proc.stdout
    write_evaluation_folders(tmp_path, seed=2)
    out = tmp_path / "m.json"
    proc = subprocess.run(["nnUNetv2_advmim_evaluate", "-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"),
                           "-o", str(out), "-np", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "foreground mean" in proc.stdout
    data = json.loads(out.read_text())
    serial = evaluate_folders(str(tmp_path / "ref"), str(tmp_path / "pred"))
    assert data["mean"]["1"]["HD95"] == pytest.approx(serial["mean"][1]["HD95"])
    assert data["mean"]["2"]["NSD"] == pytest.approx(serial["mean"][2]["NSD"])
