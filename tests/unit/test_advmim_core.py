"""Hand-checked values of AdvMIM's per-domain losses, discriminator loss, schedules and ensemble
(nnunetv2_advmim.methods.advmim)."""
import math

import pytest
import torch
from torch import nn

from nnunetv2_advmim.architectures.ensemble import AdvMIMEnsemble
from nnunetv2_advmim.architectures.from_plans import branch_architecture
from nnunetv2_advmim.methods.advmim import AdvMIMWeights, discriminator_loss, part_loss, split_batch
from nnunetv2_advmim.methods.step_modes import LABELED, MASKED_LABELED, MASKED_UNLABELED, UNLABELED
from nnunetv2_advmim.methods.schedules import warmup_poly_lr


def _batch_logits():
    """Deep-supervision style output for [x_l; x_u] with 1 labeled + 1 unlabeled sample, K=2, 1x2 voxels.

    Unlabeled sample: voxel 0 logits (0, ln 3) -> p = (1/4, 3/4); voxel 1 logits (ln 4, 0) -> p = (4/5, 1/5).
    """
    full = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]],
                         [[[0.0, math.log(4.0)]], [[math.log(3.0), 0.0]]]]).requires_grad_(True)
    low = torch.zeros(2, 2, 1, 1, requires_grad=True)
    return [full, low]


def _partner_logits():
    # partner on x_u: voxel 0 p = (0.2, 0.8) -> label 1, w 0.8 ; voxel 1 p = (0.6, 0.4) -> label 0, w 0.6
    return torch.log(torch.tensor([[[[0.2, 0.6]], [[0.8, 0.4]]]]))


def _sup(output, target):
    """Stand-in for nnU-Net's DCCE: records what it saw, returns a known value with a gradient."""
    _sup.seen.append((output, target))
    return output[0].sum() * 0 + 2.0


_sup.seen = []


def _parts(parts, logits, target, n_labeled, sup, partner, discriminator, weights):
    """The training step's per-part losses (``part_loss``) for one forward on ``[x_l; x_u]``, summed per domain."""
    out_l, logits_u = split_batch(logits, n_labeled)
    results = {p: part_loss(p, logits_u if p in (UNLABELED, MASKED_UNLABELED) else out_l, target, sup, partner,
                            discriminator, weights) for p in parts}
    terms = {k: v for r in results.values() for k, v in r.terms.items()}
    terms["total"] = sum(r.loss for r in results.values() if r.loss is not None)
    return terms, results


def plain_domain_loss(logits, target, n_labeled, sup, partner, lambda_ct=0.1, rampup=1.0):
    terms, r = _parts((LABELED, UNLABELED), logits, target, n_labeled, sup, partner, None,
                      AdvMIMWeights(lambda_ct=lambda_ct, rampup=rampup))
    return {**terms, "probs_l": r[LABELED].real, "logits_u": r[UNLABELED].logits_u}


def masked_domain_loss(logits, target, n_labeled, sup, partner, discriminator=None, lambda_u=1.0, lambda_adv=0.001):
    terms, r = _parts((MASKED_LABELED, MASKED_UNLABELED), logits, target, n_labeled, sup, partner, discriminator,
                      AdvMIMWeights(lambda_u=lambda_u, lambda_adv=lambda_adv))
    return {**terms, "probs_u": r[MASKED_UNLABELED].fake}


def test_split_batch_keeps_labeled_scales_and_unlabeled_full_resolution():
    out = _batch_logits()
    labeled, u = split_batch(out, 1)
    assert [t.shape[0] for t in labeled] == [1, 1] and u.shape == (1, 2, 1, 2)
    assert torch.equal(u, out[0][1:])


def test_plain_domain_loss_hand_values():
    _sup.seen.clear()
    out = _batch_logits()
    target = ["T0", "T1"]
    r = plain_domain_loss(out, target, 1, _sup, _partner_logits(), lambda_ct=0.1, rampup=0.5)
    # supervised loss saw only the labeled sample at every scale, and the labeled target
    seen_out, seen_target = _sup.seen[0]
    assert [t.shape[0] for t in seen_out] == [1, 1] and seen_target is target
    # cross teaching: soft Dice (background included) of p(N(x_u)) vs partner labels y = (1, 0), smooth 1e-5
    s = 1e-5
    d0 = (2 * 0.8 + s) / ((0.25 + 0.8) + 1 + s)  # class 0: y=(0,1)
    d1 = (2 * 0.75 + s) / ((0.75 + 0.2) + 1 + s)  # class 1: y=(1,0)
    ct = 1 - (d0 + d1) / 2
    assert r["cross_teaching"].item() == pytest.approx(ct, rel=1e-5)
    assert r["certainty"].item() == pytest.approx(0.7, rel=1e-6)
    assert r["total"].item() == pytest.approx(2.0 + 0.1 * 0.5 * ct, rel=1e-5)
    # the discriminator's "real" = softmax of the labeled full-resolution output, detached
    assert torch.allclose(r["probs_l"], torch.full((1, 2, 1, 2), 0.5)) and not r["probs_l"].requires_grad
    assert not r["logits_u"].requires_grad
    # lambda_ct = 0: no cross-teaching term at all
    r0 = plain_domain_loss(_batch_logits(), target, 1, _sup, _partner_logits(), lambda_ct=0.0)
    assert r0["total"].item() == pytest.approx(2.0) and r0["cross_teaching"].item() == 0.0


class _ConstD(nn.Module):
    """A 'discriminator' whose score is a + b * mean of its input channel 1 (one learnable pair)."""

    def __init__(self, a=0.25, b=0.0):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, p):
        return self.a + self.b * p[:, 1:2]


def test_masked_domain_loss_hand_values_and_frozen_discriminator():
    _sup.seen.clear()
    out = _batch_logits()
    d = _ConstD(a=0.25)
    r = masked_domain_loss(out, "T", 1, _sup, _partner_logits(), d, lambda_u=1.0, lambda_adv=0.001)
    # wCE with partner labels (1, 0) and certainties (0.8, 0.6), normalised by the weight sum
    wce = (0.8 * -math.log(0.75) + 0.6 * -math.log(0.8)) / 1.4
    assert r["masked_ce"].item() == pytest.approx(wce, rel=1e-5)
    # wDice (background included): class 0 y=(0,1): I = .6*.8, P = .8*.25 + .6*.8, G = .6 ; class 1 y=(1,0)
    s = 1e-5
    d0 = (2 * 0.6 * 0.8 + s) / (0.8 * 0.25 + 0.6 * 0.8 + 0.6 + s)
    d1 = (2 * 0.8 * 0.75 + s) / (0.8 * 0.75 + 0.6 * 0.2 + 0.8 + s)
    wdice = 1 - (d0 + d1) / 2
    assert r["masked_dice"].item() == pytest.approx(wdice, rel=1e-5)
    adv = (0.25 - 1) ** 2
    assert r["adversarial"].item() == pytest.approx(adv, rel=1e-6)
    assert r["total"].item() == pytest.approx(2.0 + wce + wdice + 0.001 * adv, rel=1e-5)
    r["total"].backward()
    assert d.a.grad is None and d.b.grad is None, "the generator term must not write gradients into D"
    assert d.a.requires_grad, "frozen() must restore requires_grad"
    assert out[0].grad[1:].abs().sum() > 0
    # the fake maps handed to D's own step are the detached softmax of N^m(x_u)
    assert torch.allclose(r["probs_u"], torch.tensor([[[[0.25, 0.8]], [[0.75, 0.2]]]])) and not r["probs_u"].requires_grad
    # no discriminator (noAdv ablation): adversarial term 0
    r2 = masked_domain_loss(_batch_logits(), "T", 1, _sup, _partner_logits(), None, lambda_u=2.0)
    assert r2["adversarial"].item() == 0.0
    assert r2["total"].item() == pytest.approx(2.0 + 2 * (wce + wdice), rel=1e-5)


def test_unlabeled_terms_do_not_depend_on_labeled_targets():
    """What the unlabeled terms and their gradients see is x_u's logits and the partner's: never a target."""

    def sup_from_target(output, target):
        return (output[0] * target).sum()

    grads, values = [], []
    for target in (torch.zeros(1, 2, 1, 2), torch.ones(1, 2, 1, 2) * 3):
        out = _batch_logits()
        r = masked_domain_loss(out, target, 1, sup_from_target, _partner_logits(), _ConstD(), 1.0, 0.001)
        p = plain_domain_loss(out, target, 1, sup_from_target, _partner_logits(), 0.1, 1.0)
        (r["total"] + p["total"]).backward()
        values.append([r[k].item() for k in ("masked_ce", "masked_dice", "adversarial")] +
                      [p["cross_teaching"].item(), p["certainty"].item()])
        grads.append(out[0].grad[1:].clone())
    assert values[0] == values[1]
    assert torch.equal(grads[0], grads[1])


def test_partner_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same x_u"):
        plain_domain_loss(_batch_logits(), None, 1, _sup, torch.zeros(1, 2, 1, 3))


def test_discriminator_loss_hand_values_and_one_call():
    calls = []

    class D(nn.Module):
        def forward(self, p):
            calls.append(p.shape[0])
            return p[:, :1] * 2  # real maps 0.5 -> 1.0, fake maps 0.25 -> 0.5

    real = torch.full((2, 2, 1, 2), 0.5, requires_grad=True)
    fake = torch.full((1, 2, 1, 2), 0.25, requires_grad=True)
    r = discriminator_loss(D(), real, fake, weight=0.1)
    assert calls == [3]
    assert r["loss"].item() == pytest.approx(0.1 * ((1.0 - 1) ** 2 + 0.5 ** 2))
    assert r["real"].item() == pytest.approx(1.0) and r["fake"].item() == pytest.approx(0.5)
    assert not r["loss"].requires_grad, "maps are detached; only D's parameters could carry a gradient"


def test_warmup_poly_lr_values():
    # 100 epochs, 5 warm-up epochs, lr 3e-4
    assert warmup_poly_lr(0, 100, 3e-4, 5) == pytest.approx(3e-4 / 5)
    assert warmup_poly_lr(4, 100, 3e-4, 5) == pytest.approx(3e-4)
    assert warmup_poly_lr(5, 100, 3e-4, 5) == pytest.approx(3e-4)
    assert warmup_poly_lr(52, 100, 3e-4, 5) == pytest.approx(3e-4 * (1 - 47 / 95) ** 0.9)
    assert warmup_poly_lr(100, 100, 3e-4, 5) == 0.0


def test_ensemble_output_is_log_of_mean_softmax():
    a = torch.tensor([[[[2.0]], [[0.0]]]])
    b = torch.tensor([[[[0.0]], [[1.0]]]])
    out = AdvMIMEnsemble.combine(a, b)
    expected = (torch.softmax(a, 1) + torch.softmax(b, 1)) / 2
    assert torch.allclose(torch.softmax(out, 1), expected, atol=1e-6)
    assert torch.allclose(torch.exp(out).sum(1), torch.ones(1, 1, 1))
    lists = AdvMIMEnsemble.combine([a, a], [b, b])
    assert len(lists) == 2 and torch.allclose(lists[1], out)


def test_branch_architectures_from_plans():
    kw = dict(n_stages=3, features_per_stage=[8, 16, 32], conv_op="torch.nn.modules.conv.Conv2d",
              kernel_sizes=[[3, 3]] * 3, strides=[[1, 1], [2, 2], [2, 2]], n_conv_per_stage=[2, 2, 2],
              n_conv_per_stage_decoder=[2, 2], conv_bias=True, norm_op=None, norm_op_kwargs=None, dropout_op=None,
              dropout_op_kwargs=None, nonlin=None, nonlin_kwargs=None)
    plain = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    name, hkw, imp = branch_architecture("hybrid", plain, kw, ["conv_op"])
    assert name.endswith("HybridTransformerUNet") and hkw["transformer_stages"] == 2 and imp == ["conv_op"]
    name, ckw, _ = branch_architecture("cnn", plain, kw, ["conv_op"])
    assert name.endswith("MaskablePlainConvUNet") and ckw == kw
    # a hybrid plan gives a plain maskable CNN with the same stages
    name, ckw2, _ = branch_architecture("cnn", name.replace("MaskablePlainConvUNet", "HybridTransformerUNet"), hkw,
                                        ["conv_op"])
    assert name.endswith("MaskablePlainConvUNet") and "transformer_stages" not in ckw2 and "depth" not in ckw2
    with pytest.raises(ValueError, match="PlainConvUNet or ResidualEncoderUNet"):
        branch_architecture("cnn", "some.other.Net", kw, [])


def test_load_branch_weights_lists_every_mismatch_and_refuses_pickles(tmp_path):
    from nnunetv2_advmim.runtime.weights import load_branch_weights
    from nnunetv2_advmim.runtime.checkpointing import UnsafeCheckpointError

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 2, 1))
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    sd["0.weight"] = torch.zeros(8, 1, 3, 3)
    del sd["1.bias"]
    torch.save({"network_weights": sd}, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as e:
        load_branch_weights(net, str(tmp_path / "bad.pth"), "cnn")
    msg = str(e.value)
    assert "bad.pth" in msg and "0.weight: expected (4, 1, 3, 3), checkpoint has (8, 1, 3, 3)" in msg
    assert "missing: 1.bias" in msg and "1 tensors missing, 1 of another shape" in msg
    good = {k: torch.ones_like(v) for k, v in net.state_dict().items()}
    torch.save({"network_weights": good, "evil": _ConstD()}, tmp_path / "pickle.pth")
    with pytest.raises(UnsafeCheckpointError, match="pickle.pth"):
        load_branch_weights(net, str(tmp_path / "pickle.pth"), "cnn")
    torch.save({"network_weights": good}, tmp_path / "ok.pth")
    load_branch_weights(net, str(tmp_path / "ok.pth"), "cnn")
    assert all(torch.equal(v, torch.ones_like(v)) for v in net.state_dict().values())
