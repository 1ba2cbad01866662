"""Hybrid plans derived from existing plans keep everything but the network."""

import pytest

from nnunetv2_advmim.architectures.from_plans import HYBRID as HYBRID_CLASS
from nnunetv2_advmim.commands.plan_hybrid import make_hybrid_plans


def _resenc_plans():
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv2d",
                            "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]],
                            "n_blocks_per_stage": [1, 3, 4], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    return {"plans_name": "nnUNetResEncUNetMPlans",
            "configurations": {"2d": {"data_identifier": "nnUNetPlans_2d", "patch_size": [32, 32], "batch_size": 2,
                                      "architecture": arch},
                               "2d_child": {"inherits_from": "2d", "batch_size": 4}}}


def test_make_hybrid_plans_keeps_everything_but_the_network():
    plans = _resenc_plans()
    new = make_hybrid_plans(plans, "hyb", depth=2, num_heads=4)
    assert new["plans_name"] == "hyb" and plans["plans_name"] == "nnUNetResEncUNetMPlans"  # source untouched
    conf = new["configurations"]["2d"]
    assert conf["data_identifier"] == "nnUNetPlans_2d" and conf["patch_size"] == [32, 32]
    assert conf["architecture"]["network_class_name"] == HYBRID_CLASS
    kw = conf["architecture"]["arch_kwargs"]
    assert "n_blocks_per_stage" not in kw and kw["n_conv_per_stage"] == [2, 2, 2]
    assert kw["depth"] == 2 and kw["num_heads"] == 4 and kw["transformer_stages"] == 2
    assert kw["strides"] == [[1, 1], [2, 2], [2, 2]]
    assert new["configurations"]["2d_child"] == plans["configurations"]["2d_child"]
    with pytest.raises(ValueError, match="not in plans"):
        make_hybrid_plans(plans, "hyb", ["3d_fullres"])
    with pytest.raises(ValueError, match="inherits"):
        make_hybrid_plans(plans, "hyb", ["2d_child"])
    with pytest.raises(ValueError, match="divisible"):
        make_hybrid_plans(plans, "hyb", num_heads=3)
