"""nnUNetv2_advmim_plan_hybrid on a planned dataset, then stock nnUNetv2_train runs the hybrid plans on the CPU."""
import json
import os

import pytest
import torch

from helpers import TINY_TRAINER, run_cmd
from nnunetv2_advmim.architectures.from_plans import HYBRID as HYBRID_CLASS
from nnunetv2_advmim.commands.plan_hybrid import main, plan_hybrid

PLANS = "nnUNetPlans_hybridtest"  # our own identifier: the shared dataset's nnUNetPlans stay untouched


def test_plan_hybrid_then_stock_train(planned_3d, ext_trainers):
    """Stock nnUNetv2_train (with its final validation, i.e. nnU-Net's sliding-window predictor) on hybrid plans."""
    env = dict(planned_3d.env)
    pre = env["nnUNet_preprocessed"]
    dst = plan_hybrid(planned_3d.id, target_plans=PLANS, preprocessed_root=pre, depth=1, num_heads=4)
    with open(dst) as f:
        plans = json.load(f)
    with open(os.path.join(planned_3d.preprocessed, "nnUNetPlans.json")) as f:
        source = json.load(f)
    conf = plans["configurations"]["3d_fullres"]
    assert conf["architecture"]["network_class_name"] == HYBRID_CLASS
    assert conf["data_identifier"] == source["configurations"]["3d_fullres"]["data_identifier"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        plan_hybrid(planned_3d.id, target_plans=PLANS, preprocessed_root=pre)
    with pytest.raises(SystemExit):
        main(["-d", str(planned_3d.id), "--output-plans", PLANS, "--preprocessed", pre])

    folder, write = ext_trainers
    write("hybridtiny_trainer", TINY_TRAINER)
    env["nnUNet_extTrainer"] = folder
    run_cmd(["nnUNetv2_train", str(planned_3d.id), "3d_fullres", "0", "-tr", "nnUNetTrainer_tiny", "-p", PLANS,
             "-device", "cpu"], env=env)
    out = os.path.join(planned_3d.results, f"nnUNetTrainer_tiny__{PLANS}__3d_fullres")
    ckpt = torch.load(os.path.join(out, "fold_0", "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    n = conf["architecture"]["arch_kwargs"]["n_stages"]
    assert f"encoder.stages.{n - 1}.blocks.0.attn.qkv.weight" in ckpt["network_weights"]
    assert "mask_token" in ckpt["network_weights"]
