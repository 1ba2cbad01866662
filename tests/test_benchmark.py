"""nnUNetv2_advmim_benchmark (issue 8): CI smoke test of the whole command on a tiny 2D setting, plus its figures."""
import json
import os

import pytest

from conftest import run_cmd
from nnunetv2_advmim.benchmark.measure import efficiency, evaluate_targets, override_plans


def test_efficiency_and_targets():
    assert efficiency(1.0, 2.0, 12.0) == pytest.approx(1.0)  # 4 (1 + 2) / 12
    assert efficiency(0.5, 0.5, 8.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        efficiency(1.0, 1.0, 0.0)
    t = {x["key"]: x for x in evaluate_targets({"E_fast_cpu": 0.9, "memory_mode_vs_stock": 1.6,
                                                 "anatomask_vs_random": 1.4}, "cpu")}
    assert t["E_fast_cpu"]["passed"] and t["E_fast_cpu"]["applies"]
    assert t["memory_mode_vs_stock"]["passed"] is False and not t["memory_mode_vs_stock"]["applies"]
    assert t["anatomask_vs_random"]["passed"]  # <= is inclusive
    assert t["E_fast_gpu"]["passed"] is None and t["data_vs_step"]["value"] is None


def test_override_plans_follows_the_planner():
    plans = {"configurations": {"3d_fullres": {
        "spacing": [2.0, 1.0, 1.0], "patch_size": [24, 32, 32], "batch_size": 4,
        "architecture": {"arch_kwargs": {"n_stages": 3, "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]}}}}}
    new = override_plans(plans, "3d_fullres", [128, 128, 128], 2)
    cfg = new["configurations"]["3d_fullres"]
    arch = cfg["architecture"]["arch_kwargs"]
    assert cfg["patch_size"] == [128, 128, 128] and cfg["batch_size"] == 2
    # the tiny plan has anisotropic spacing 2x1x1: fewer poolings along z, as nnU-Net's planner does
    assert arch["n_stages"] == len(arch["strides"]) == len(arch["features_per_stage"]) == 6
    assert arch["features_per_stage"][-1] == 320 and arch["strides"][1] == [1, 2, 2]
    assert plans["configurations"]["3d_fullres"]["patch_size"] != [128, 128, 128]  # input untouched
    with pytest.raises(ValueError, match="3 numbers"):
        override_plans(plans, "3d_fullres", [64, 64])


def test_benchmark_command_end_to_end(tmp_path, nnunet_env):
    """The stock-style command on the default (synthetic) dataset: plan, every item timed once, JSON complete."""
    out = tmp_path / "bench.json"
    env = dict(nnunet_env, nnUNet_n_proc_DA="1")
    proc = run_cmd(["nnUNetv2_advmim_benchmark", "-c", "2d", "-device", "cpu", "-n", "1", "--warmup", "0",
                    "--synthetic-shape", "32", "32", "--batch", "2", "--data-batches", "2", "-np", "1", "--threads", "1",
                    "--workdir", str(tmp_path / "work"), "-o", str(out)], env=env, timeout=300)
    assert "targets (issue 8)" in proc.stdout
    r = json.loads(out.read_text())
    from nnunetv2_advmim.methods.advmim import STEP_MODES
    expected = {"stock", "S", "C"} | {f"advmim_{m}" for m in STEP_MODES}
    assert set(r["items"]) == expected
    for name, v in r["items"].items():
        assert v["median_s"] > 0 and len(v["times_s"]) == 1, name
        assert v["peak_mib"] > v["resident_mib"] > 0, name
    t_s, t_c = r["items"]["S"]["median_s"], r["items"]["C"]["median_s"]
    assert r["floor_s"] == pytest.approx(4 * (t_s + t_c))
    for m in STEP_MODES:
        step = r["items"][f"advmim_{m}"]["median_s"]
        assert r["modes"][m]["E"] == pytest.approx(4 * (t_s + t_c) / step)
        assert r["modes"][m]["ratio_to_stock"] == pytest.approx(step / r["items"]["stock"]["median_s"])
        assert r["modes"][m]["memory_ratio_to_stock"] > 0
    assert {"random", "anatomask", "mpsams"} <= set(r["mim"])
    assert r["mim"]["random"]["ratio_to_random"] == pytest.approx(1.0)
    assert r["data"]["batches_per_s"] > 0 and r["data"]["workers"] == 1
    assert r["settings"]["batch_size"] == 2 and r["settings"]["patch_size"] == [32, 32]
    assert {t["key"] for t in r["targets"]} == {"E_fast_gpu", "E_fast_cpu", "memory_mode_vs_stock", "data_vs_step",
                                                "anatomask_vs_random"}
    assert r["machine"]["device"] == "cpu" and r["date"] and r["command"].startswith("nnUNetv2_advmim_benchmark")
    # an unknown dataset is a clear error naming the fix, not a traceback
    missing = run_cmd(["nnUNetv2_advmim_benchmark", "-d", "959", "-c", "2d", "-device", "cpu"], env=env, check=False)
    assert missing.returncode == 2 and "nnUNetv2_plan_and_preprocess -d 959" in missing.stdout
    assert "Traceback" not in missing.stdout
    # results are never overwritten
    again = run_cmd(["nnUNetv2_advmim_benchmark", "-d", "951", "-c", "2d", "-o", str(out)], env=env, check=False)
    assert again.returncode != 0 and "exists" in again.stdout
