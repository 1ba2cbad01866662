"""The benchmark's figures: efficiency, targets, plans overridden the planner's way."""

import pytest

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
