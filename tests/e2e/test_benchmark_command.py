"""nnUNetv2_advmim_benchmark: smoke test of the whole command on a tiny 2D setting."""
import json

import pytest

from helpers import run_cmd


def test_benchmark_command_end_to_end(tmp_path, nnunet_env):
    """The stock-style command on the default (synthetic) dataset: plan, every item timed once, JSON complete."""
    out = tmp_path / "bench.json"
    env = dict(nnunet_env, nnUNet_n_proc_DA="1")
    proc = run_cmd(["nnUNetv2_advmim_benchmark", "-c", "2d", "-device", "cpu", "-n", "1", "--warmup", "0",
                    "--synthetic-shape", "32", "32", "--batch", "2", "--data-batches", "2", "-np", "1", "--threads", "1",
                    "--workdir", str(tmp_path / "work"), "-o", str(out)], env=env, timeout=300)
    assert "targets:" in proc.stdout
    r = json.loads(out.read_text())
    from nnunetv2_advmim.methods.step_modes import STEP_MODES
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
