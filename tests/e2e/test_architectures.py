"""HybridTransformerUNet and the maskable nnU-Net networks on plans from real nnU-Net planning.

Plans come from nnU-Net's own ``ExperimentPlanner``: the two session datasets as planned on disk, plus the
planner's ``get_plans_for_configuration`` (the function ``plan_experiment`` calls per configuration) run on
the 3D synthetic dataset for other median shapes and spacings: isotropic non-cubic, strongly anisotropic,
and realistic large 3D/2D images (tested on smaller patch sizes that fit their total downsampling).
"""
import json
import os

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunetv2_advmim.architectures import HybridTransformerUNet, MaskablePlainConvUNet, MaskableResidualEncoderUNet
from nnunetv2_advmim.architectures.hybrid_unet import TransformerStage as TransformerStageType
from nnunetv2_advmim.methods.masking import block_mask, block_size, mask_grid, upsample_mask
from nnunetv2_advmim.architectures.from_plans import HYBRID as HYBRID_CLASS, hybrid_arch_kwargs

# name -> (spacing, median shape) given to nnU-Net's planner, and the patch sizes the test runs
PLANNER_CASES = {
    "iso3d_noncubic": ((1.0, 1.0, 1.0), (40, 56, 32), None),
    "aniso3d": ((3.0, 0.8, 0.8), (16, 64, 48), None),
    "large3d": ((1.0, 1.0, 1.0), (160, 160, 160), [(32, 32, 64), (64, 32, 32)]),
    "large2d": ((1.0, 1.0), (512, 384), [(64, 128), (192, 64)]),
}


@pytest.fixture(scope="module")
def plans(planned_3d, planned_2d):
    """name -> (configuration dict from nnU-Net planning, patch sizes to run)."""
    import nnunetv2.experiment_planning.experiment_planners.default_experiment_planner as dep

    out = {}
    for planned in (planned_3d, planned_2d):
        with open(os.path.join(planned.preprocessed, "nnUNetPlans.json")) as f:
            conf = json.load(f)["configurations"][planned.configuration]
        out[f"disk_{planned.configuration}"] = (conf, [tuple(conf["patch_size"])])
    saved = dep.nnUNet_raw, dep.nnUNet_preprocessed  # paths are read at import time; point them at the fixture
    dep.nnUNet_raw, dep.nnUNet_preprocessed = planned_3d.env["nnUNet_raw"], planned_3d.env["nnUNet_preprocessed"]
    try:
        planner = dep.ExperimentPlanner(planned_3d.name)
        for name, (spacing, shape, patches) in PLANNER_CASES.items():
            conf = planner.get_plans_for_configuration(np.array(spacing), np.array(shape), name,
                                                       float(np.prod(shape)) * 10, {})
            out[name] = (conf, patches or [tuple(conf["patch_size"])])
    finally:
        dep.nnUNet_raw, dep.nnUNet_preprocessed = saved
    # a non-cubic patch that differs from the planned one: double the first axis of the tiny 3D plan
    conf, (p,) = out["disk_3d_fullres"]
    out["disk_3d_fullres"] = (conf, [p, (8, 16, 24)])
    return out


def _kwargs(conf, **extra):
    arch = conf["architecture"]
    kw = dict(arch["arch_kwargs"])
    for k in arch["_kw_requires_import"]:
        if kw[k] is not None:
            import pydoc
            kw[k] = pydoc.locate(kw[k])
    kw.update(extra)
    return kw


def _hybrid(conf, num_classes=3, **extra):
    """The hybrid from a planned configuration, as plan_hybrid writes it (extra: transformer settings)."""
    kw = _kwargs({"architecture": {"arch_kwargs": hybrid_arch_kwargs(conf["architecture"]["arch_kwargs"]),
                                   "_kw_requires_import": conf["architecture"]["_kw_requires_import"]}},
                 deep_supervision=True, **extra)
    net = HybridTransformerUNet(input_channels=1, num_classes=num_classes, **kw)
    net.apply(net.initialize)
    return net


def _expected_scales(strides, patch):
    sizes, cur = [], np.array(patch)
    for s in strides[:-1]:
        cur = cur // np.array(s)
        sizes.append(tuple(int(i) for i in cur))
    return sizes


def test_plans_cover_2d_3d_isotropic_anisotropic(plans):
    strides = {k: v[0]["architecture"]["arch_kwargs"]["strides"] for k, v in plans.items()}
    assert len(strides["aniso3d"][1]) == 3 and strides["aniso3d"][1][0] == 1  # no pooling along the thick axis first
    assert all(len(set(s)) == 1 for s in strides["iso3d_noncubic"])
    assert len(strides["large2d"][0]) == 2 and len(strides["large3d"]) >= 6


@pytest.mark.parametrize("name", ["disk_3d_fullres", "disk_2d", "iso3d_noncubic", "aniso3d", "large3d", "large2d"])
def test_hybrid_forward_backward_deep_supervision(plans, name):
    conf, patches = plans[name]
    torch.manual_seed(0)
    net = _hybrid(conf, num_classes=3, depth=2, drop_path_rate=0.0)  # DropPath may drop a batch-1 branch
    strides = conf["architecture"]["arch_kwargs"]["strides"]
    assert any(isinstance(s, TransformerStageType) for s in net.encoder.stages)
    for i, patch in enumerate(patches):
        x = torch.randn(1, 1, *patch)
        with torch.set_grad_enabled(i == 0):  # backward once per plan (CPU time), shapes for every patch
            out = net(x)
        assert isinstance(out, list) and len(out) == len(strides) - 1
        expected = _expected_scales(strides, patch)  # full resolution first (strides[0] is 1)
        assert [tuple(o.shape[2:]) for o in out] == expected
        assert all(o.shape[:2] == (1, 3) for o in out)
        if i == 0:
            sum(o.float().square().mean() for o in out).backward()
            for t in net.encoder.stages[-1].blocks:
                assert t.attn.qkv.weight.grad is not None and t.attn.qkv.weight.grad.abs().sum() > 0
            first_conv = net.encoder.stages[0].convs[0].conv.weight
            assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    net.decoder.deep_supervision = False  # what nnU-Net's trainer toggles
    with torch.no_grad():
        out = net(torch.randn(1, 1, *patches[0]))
    assert torch.is_tensor(out) and tuple(out.shape[2:]) == tuple(patches[0])


def _stem_and_next(net):
    """(module whose output is the stem, module that receives the (masked) stem output)."""
    if isinstance(net, ResidualEncoderUNet):
        return net.encoder.stem, net.encoder.stages[0]
    return net.encoder.stages[0], net.encoder.stages[1]


def _build(kind, conf):
    if kind == "hybrid":
        return _hybrid(conf, num_classes=2, depth=1)
    kw = _kwargs(conf, deep_supervision=True)
    if kind == "plain":
        return MaskablePlainConvUNet(input_channels=1, num_classes=2, **kw), PlainConvUNet
    kw["n_blocks_per_stage"] = [1] * kw["n_stages"]
    kw.pop("n_conv_per_stage")
    return MaskableResidualEncoderUNet(input_channels=1, num_classes=2, **kw), ResidualEncoderUNet


@pytest.mark.parametrize("kind,name", [("hybrid", "disk_3d_fullres"), ("hybrid", "disk_2d"),
                                       ("plain", "disk_3d_fullres"), ("resenc", "disk_2d")])
def test_masked_forward(plans, kind, name):
    conf, (patch, *_) = plans[name]
    torch.manual_seed(1)
    if kind == "hybrid":
        net, stock_cls = _build(kind, conf), None
    else:
        net, stock_cls = _build(kind, conf)
        net.apply(net.initialize)
    net.eval()
    x = torch.randn(2, 1, *patch)  # two samples: each draws its own mask
    strides = conf["architecture"]["arch_kwargs"]["strides"]
    block = block_size(strides, patch)
    assert net.mask_block_size(patch) == block and net.mask_grid(patch) == mask_grid(patch, block)

    # mask=None is the stock network, bit for bit, and the state dict is the stock one plus the token
    with torch.no_grad():
        plain = net(x)
        if stock_cls is not None:
            stock = stock_cls(input_channels=1, num_classes=2, **(_kwargs(conf, deep_supervision=True) if kind == "plain"
                                                                  else _resenc_kwargs(conf)))
            missing = stock.load_state_dict(net.state_dict(), strict=False)
            assert missing.missing_keys == [] and missing.unexpected_keys == ["mask_token"]
            stock.eval()
            ref = stock(x)
        else:
            ref = net(x, torch.zeros(2, *net.mask_grid(patch), dtype=torch.bool))
    assert all(torch.equal(a, b) for a, b in zip(plain, ref))

    # masked forward: input zeroed in masked blocks, stem output replaced by the token there
    mask = block_mask(2, net.mask_grid(patch), 0.6, generator=torch.Generator().manual_seed(0))
    vox = upsample_mask(mask, patch, block)
    seen = {}
    stem, nxt = _stem_and_next(net)
    h1 = stem.register_forward_hook(lambda m, i, o: seen.update(stem_in=i[0].detach(), stem_out=o.detach()))
    h2 = nxt.register_forward_pre_hook(lambda m, i: seen.update(after=i[0].detach()))
    net.train()
    out = net(x, mask)
    h1.remove(), h2.remove()
    m = vox.expand_as(seen["stem_in"])
    assert torch.all(seen["stem_in"][m] == 0) and torch.equal(seen["stem_in"][~m], x[~m])
    token = net.mask_token.detach().expand_as(seen["after"])
    mf = vox.expand_as(seen["after"])
    assert torch.equal(seen["after"][mf], token[mf])
    assert torch.equal(seen["after"][~mf], seen["stem_out"][~mf])
    sum(o.mean() for o in out).backward()
    assert net.mask_token.grad is not None and net.mask_token.grad.abs().sum() > 0
    # voxel-level masks are accepted too and give the same result
    net.eval()
    with torch.no_grad():
        a, b = net(x, mask), net(x, vox)
    assert all(torch.equal(i, j) for i, j in zip(a, b))
    with pytest.raises(ValueError, match="expected"):
        net(x, torch.zeros(2, *[g + 1 for g in net.mask_grid(patch)], dtype=torch.bool))


def _resenc_kwargs(conf):
    kw = _kwargs(conf, deep_supervision=True)
    kw["n_blocks_per_stage"] = [1] * kw["n_stages"]
    kw.pop("n_conv_per_stage")
    return kw


def test_checkpoints_load_with_stock_tools(plans, tmp_path):
    """Maskable weights load into the stock network with nnU-Net's load_pretrained_weights; the hybrid is built
    by nnU-Net's get_network_from_plans from a plans entry."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    conf, (patch, *_) = plans["disk_3d_fullres"]
    net = MaskablePlainConvUNet(input_channels=1, num_classes=2, **_kwargs(conf, deep_supervision=False))
    assert set(net.state_dict()) == set(PlainConvUNet(input_channels=1, num_classes=2,
                                                      **_kwargs(conf)).state_dict()) | {"mask_token"}
    torch.save({"network_weights": net.state_dict()}, tmp_path / "ckpt.pth")
    stock = PlainConvUNet(input_channels=1, num_classes=2, **_kwargs(conf))
    load_pretrained_weights(stock, str(tmp_path / "ckpt.pth"))
    assert torch.equal(stock.encoder.stages[0][0].convs[0].conv.weight, net.encoder.stages[0][0].convs[0].conv.weight)

    arch = conf["architecture"]
    hybrid = get_network_from_plans(HYBRID_CLASS, hybrid_arch_kwargs(arch["arch_kwargs"], depth=[1, 2]),
                                    arch["_kw_requires_import"], 1, 4, deep_supervision=True)
    assert isinstance(hybrid, HybridTransformerUNet) and hybrid.decoder.deep_supervision
    assert [len(s.blocks) for s in hybrid.encoder.stages if isinstance(s, TransformerStageType)] == [1, 2]
    torch.save({"network_weights": hybrid.state_dict()}, tmp_path / "hybrid.pth")
    again = get_network_from_plans(HYBRID_CLASS, hybrid_arch_kwargs(arch["arch_kwargs"], depth=[1, 2]),
                                   arch["_kw_requires_import"], 1, 4, deep_supervision=False)
    again.load_state_dict(torch.load(tmp_path / "hybrid.pth")["network_weights"])  # strict, as nnUNetv2_predict


def test_hybrid_settings_and_errors(plans):
    conf, _ = plans["large3d"]
    kw = hybrid_arch_kwargs(conf["architecture"]["arch_kwargs"])
    n = kw["n_stages"]
    net = _hybrid(conf, transformer_stages=[n - 3, n - 1], embed_dim=96, depth=[1, 1], num_heads=[4, 6])
    kinds = [isinstance(s, TransformerStageType) for s in net.encoder.stages]
    assert kinds == [i in (n - 3, n - 1) for i in range(n)]
    stage = net.encoder.stages[n - 1]
    assert stage.blocks[0].attn.num_heads == 6 and isinstance(stage.proj, nn.Module)
    assert stage.output_channels == kw["features_per_stage"][-1]
    out = net(torch.randn(1, 1, 32, 32, 64))
    assert tuple(out[0].shape) == (1, 3, 32, 32, 64)
    with pytest.raises(ValueError, match="divisible"):
        _hybrid(conf, num_heads=7)
    with pytest.raises(ValueError, match="transformer_stages"):
        _hybrid(conf, transformer_stages=[0])
    with pytest.raises(ValueError, match="depth"):
        _hybrid(conf, depth=[1, 2, 3])
