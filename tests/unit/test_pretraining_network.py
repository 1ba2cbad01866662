"""The MIM pretraining network fits the stock network's weights; the warm-up + cosine schedule."""

import pytest
import torch


SMALL_ARCH = {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv2d",
              "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]], "n_conv_per_stage": [1, 1, 1],
              "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
              "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
              "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
              "nonlin_kwargs": {"inplace": True}}
REQ = ["conv_op", "norm_op", "dropout_op", "nonlin"]
STOCK_CNN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def test_pretraining_network_keys_fit_stock_network():
    """Pretraining network = stock network + mask_token; only seg_layers differ in shape."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunetv2_advmim.runtime.weights import compare_state_dicts
    from nnunetv2_advmim.architectures.from_plans import pretraining_arch
    name, kw, req = pretraining_arch(STOCK_CNN, SMALL_ARCH, REQ)
    assert name.endswith("MaskablePlainConvUNet")
    pre = get_network_from_plans(name, kw, req, 2, 2, deep_supervision=False)
    stock = get_network_from_plans(STOCK_CNN, SMALL_ARCH, REQ, 2, 5, deep_supervision=True)
    r = compare_state_dicts(stock.state_dict(), pre.state_dict())
    assert r["loadable"] and r["unused"] == ["mask_token"] and r["skipped"]
    x = torch.randn(2, 2, 32, 32)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)  # block 4x4 = total stride
    mask[:, :2] = True
    assert pre(x, mask=mask).shape == x.shape  # a reconstruction of every input channel
    hname, hkw, _ = pretraining_arch(STOCK_CNN, SMALL_ARCH, REQ, hybrid=True, num_heads=4, depth=1)
    assert hname.endswith("HybridTransformerUNet") and hkw["depth"] == 1
    with pytest.raises(ValueError, match="no maskable version"):
        pretraining_arch("my.own.Net", SMALL_ARCH, REQ)


def test_warmup_cosine_schedule_endpoints():
    from nnunetv2_advmim.methods.schedules import WarmupCosineLRScheduler, warmup_cosine_lr
    lrs = [warmup_cosine_lr(e, 1e-4, 100, 20) for e in range(100)]
    assert lrs[0] == pytest.approx(1e-4 / 20) and lrs[19] == pytest.approx(1e-4)
    assert lrs[20] == pytest.approx(1e-4) and lrs[60] == pytest.approx(0.5e-4) and lrs[99] < 1e-6
    assert all(a <= b for a, b in zip(lrs[:20], lrs[1:21])) and all(a >= b for a, b in zip(lrs[20:], lrs[21:]))
    assert warmup_cosine_lr(0, 1e-4, 2, 20) == pytest.approx(1e-4)  # warm-up capped to the run length
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = WarmupCosineLRScheduler(opt, 1e-4, 100, 20)
    sched.step(60)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-4)
