"""The AdvMIM step's execution modes compute the same gradients as the straightforward version.

``nnunetv2_advmim.methods.advmim.advmim_generator_step`` in ``fast``, ``balanced`` and ``memory`` mode against ``reference``
(every term its own forward, one backward), on S (hybrid CNN-Transformer) and C (maskable plain CNN) built from a
tiny 2D plan, nnU-Net's DC+CE loss with deep supervision and patch discriminators, in float64 so the tolerance can
be tight. Networks are in eval mode only to switch off the hybrid's stochastic depth (instance norm is per sample
in both modes).
"""

import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunetv2_advmim.methods.adversarial import PatchDiscriminator
from nnunetv2_advmim.architectures.from_plans import build_branch
from nnunetv2_advmim.methods.advmim import AdvMIMWeights, advmim_generator_step
from nnunetv2_advmim.methods.step_modes import STEP_MODES
from nnunetv2_advmim.methods.masking import block_mask

from helpers import TINY_2D_PLAN as PLAN

K, B, P = 3, 2, 16


def _setup(seed=0):
    torch.manual_seed(seed)
    nets = {b: build_branch(b, PLAN, 1, K, True).double().eval() for b in ("hybrid", "cnn")}
    discs = {b: PatchDiscriminator(K, torch.nn.Conv2d, features=(4, 8, 8, 8)).double() for b in nets}
    x_l, x_u = torch.randn(B, 1, P, P, dtype=torch.float64), torch.randn(B, 1, P, P, dtype=torch.float64)
    y = torch.randint(0, K, (B, 1, P, P)).double()
    target = [y, y[:, :, ::2, ::2], y[:, :, ::4, ::4]]
    masks = {b: block_mask(2 * B, nets[b].mask_grid((P, P)), 0.7) for b in nets}
    dc_ce = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                           weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    loss = DeepSupervisionWrapper(dc_ce, [4 / 7, 2 / 7, 1 / 7])
    return nets, discs, x_l, x_u, target, masks, loss


def _run(mode, masked=True, adversarial=True, lambda_ct=0.1):
    nets, discs, x_l, x_u, target, masks, loss = _setup()
    out = advmim_generator_step(nets, x_l, target, x_u, loss, masks if masked else None,
                                discs if adversarial else None, mode,
                                # a large lambda_adv so the adversarial gradient is visible
                                weights=AdvMIMWeights(lambda_ct=lambda_ct, rampup=0.5, lambda_u=1.0, lambda_adv=0.5))
    grads = {b: {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None} for b, net in nets.items()}
    disc_grads = [p.grad for d in discs.values() for p in d.parameters()]
    return out, grads, disc_grads


@pytest.mark.parametrize("masked,adversarial", [(True, True), (False, False)])
def test_every_mode_gives_the_reference_gradients(masked, adversarial):
    ref, ref_grads, _ = _run("reference", masked, adversarial)
    for b in ref_grads:
        assert len(ref_grads[b]) > 0 and all(g.abs().sum() > 0 for n, g in ref_grads[b].items()
                                             if "mask_token" not in n or masked)
    for mode in STEP_MODES:
        out, grads, disc_grads = _run(mode, masked, adversarial)
        assert all(g is None for g in disc_grads), f"{mode}: the generator terms wrote gradients into D"
        for b in ref_grads:
            assert grads[b].keys() == ref_grads[b].keys(), (mode, b)
            for n, g in grads[b].items():
                assert torch.allclose(g, ref_grads[b][n], rtol=1e-7, atol=1e-12), f"{mode}: {b}.{n} gradient differs"
            for k, v in ref["terms"][b].items():
                assert torch.allclose(out["terms"][b][k], v, rtol=1e-9, atol=1e-12), (mode, b, k)
            if masked:
                assert torch.allclose(out["real"][b], ref["real"][b]) and torch.allclose(out["fake"][b], ref["fake"][b])


def test_reference_terms_match_the_loss_written_out():
    """The reference step's total is L_N of the AdvMIM paper with the step's weights (rampup 0.5, lambda_adv 0.5)."""
    ref, _, _ = _run("reference")
    for b in ("hybrid", "cnn"):
        t = ref["terms"][b]
        expected = (t["sup"] + t["masked_sup"] + 1.0 * (t["masked_ce"] + t["masked_dice"]) + 0.1 * 0.5 *
                    t["cross_teaching"] + 0.5 * t["adversarial"])
        assert torch.allclose(t["total"], expected, rtol=1e-6)  # our unsupervised terms compute in float32
        assert t["adversarial"] > 0 and t["cross_teaching"] > 0 and 0 < t["certainty"] <= 1


def test_modes_pass_schedules_and_batch_sizes():
    """Which forwards each mode runs (network, batch size, masked rows): the time/memory difference of the modes."""
    for mode, expected in {
        "fast": [("hybrid", 4 * B, 2 * B), ("cnn", 4 * B, 2 * B)],
        "balanced": [("cnn", B, 0), ("hybrid", 4 * B, 2 * B), ("cnn", 4 * B, 2 * B)],
        "memory": [("cnn", B, 0)] + [(b, B, n) for b in ("hybrid", "cnn") for n in (0, 0, B, B)],
        "reference": [(b, B, n) for b in ("hybrid", "cnn") for n in (0, 0, B, B)],
    }.items():
        nets, discs, x_l, x_u, target, masks, loss = _setup()
        calls = []
        for b, net in nets.items():
            orig = net.forward
            net.forward = lambda x, mask=None, _b=b, _o=orig: (
                calls.append((_b, x.shape[0], 0 if mask is None else int(mask.flatten(1).any(1).sum()))),
                _o(x, mask=mask))[1]
        advmim_generator_step(nets, x_l, target, x_u, loss, masks, discs, mode)
        assert calls == expected, mode


def test_unknown_mode_is_a_clear_error():
    nets, discs, x_l, x_u, target, masks, loss = _setup()
    with pytest.raises(ValueError, match="fast"):
        advmim_generator_step(nets, x_l, target, x_u, loss, masks, discs, "quick")


def test_weights_object_and_the_unlabeled_probabilities():
    """``weights=`` carries the ramp-ups into the step (lambda_u 1 ramped by 0.5 trains as lambda_u 0.5), and the
    step returns N(x_u), whose softmax is the alternative "real" maps of the discriminators."""
    from nnunetv2_advmim.methods.advmim import AdvMIMWeights

    grads = []
    for weights in (AdvMIMWeights(lambda_u=1.0, lambda_adv=0.5, rampup_u=0.5, rampup_adv=0.2),
                    AdvMIMWeights(lambda_u=0.5, lambda_adv=0.1)):
        nets, discs, x_l, x_u, target, masks, loss = _setup()
        out = advmim_generator_step(nets, x_l, target, x_u, loss, masks, discs, "memory", weights=weights)
        grads.append({b: [p.grad.clone() for p in net.parameters() if p.grad is not None] for b, net in nets.items()})
        with torch.no_grad():
            for b, net in nets.items():
                expected = torch.softmax(net(x_u)[0], 1)
                assert torch.allclose(torch.softmax(out["logits_u"][b], 1), expected, rtol=1e-9, atol=1e-12)
    for b in grads[0]:
        for g0, g1 in zip(grads[0][b], grads[1][b]):
            assert torch.allclose(g0, g1, rtol=1e-7, atol=1e-12)


def test_ddp_unused_parameter_search_where_a_parameter_misses_its_gradient():
    """DDP reduces a gradient bucket only when all its parameters got a gradient in the synchronised backward.
    fast/balanced with the masked domain give every parameter one in their single backward per network; memory
    mode's last pass (masked unlabeled) does not reach the deep-supervision heads; CTCT never reaches the mask
    token."""
    from nnunetv2_advmim.methods.advmim import AdvMIMWeights, part_loss
    from nnunetv2_advmim.methods.step_modes import MASKED_UNLABELED
    from nnunetv2_advmim.methods.step_modes import ddp_find_unused_parameters, forward_parts

    assert ddp_find_unused_parameters("memory") and ddp_find_unused_parameters("memory", masked_domain=False)
    assert ddp_find_unused_parameters("fast", masked_domain=False)
    assert not ddp_find_unused_parameters("fast") and not ddp_find_unused_parameters("balanced")
    with pytest.raises(ValueError, match="unknown AdvMIM step mode"):
        ddp_find_unused_parameters("quick")
    with pytest.raises(ValueError, match="'reference'.*does not run under DDP"):  # asked only under DDP
        ddp_find_unused_parameters("reference")
    for mode in ("fast", "balanced"):
        _, grads, _ = _run(mode)
        nets = _setup()[0]
        assert all(grads[b].keys() == {n for n, _ in nets[b].named_parameters()} for b in nets), mode
    _, grads, _ = _run("fast", masked=False, adversarial=False)
    assert all("mask_token" not in n for b in grads for n in grads[b])
    nets, discs, x_l, x_u, target, masks, loss = _setup()
    net = nets["cnn"]
    out = forward_parts(net, (MASKED_UNLABELED,), x_l, x_u, masks["cnn"])[MASKED_UNLABELED]
    partner = torch.randn(B, K, P, P, dtype=torch.float64)
    part_loss(MASKED_UNLABELED, out, target, loss, partner, discs["cnn"], AdvMIMWeights()).loss.backward()
    missing = {n for n, p in net.named_parameters() if p.grad is None}
    n_heads = len(net.decoder.seg_layers)
    assert missing == {f"decoder.seg_layers.{i}.{w}" for i in range(n_heads - 1) for w in ("weight", "bias")}


def test_auto_step_mode_picks_the_fastest_mode_that_fits():
    from nnunetv2_advmim.methods.step_modes import (STEP_MODE_MEMORY_MARGIN, STEP_MODE_MEMORY_RATIO,
                                                    choose_step_mode, most_memory_saving)

    gib = 2 ** 30
    assert STEP_MODE_MEMORY_RATIO == {"fast": 7.65, "balanced": 4.29, "memory": 1.30}
    assert STEP_MODE_MEMORY_MARGIN == 1.15
    # stock step 1 GiB: fast needs 7.65 * 1.15 = 8.7975 GiB, balanced 4.29 * 1.15 = 4.9335 GiB
    assert choose_step_mode(9 * gib, gib, "cuda")[0] == "fast"
    assert choose_step_mode(int(8.79 * gib), gib, "cuda")[0] == "balanced"
    assert choose_step_mode(5 * gib, gib, "cuda")[0] == "balanced"
    mode, reason = choose_step_mode(int(4.93 * gib), gib, "cuda")
    assert mode == "memory" and "'balanced' would need about 4.9 GiB" in reason and "4.9 GiB available" in reason
    mode, reason = choose_step_mode(80 * gib, 4 * gib, "cuda")  # H100-like: 35.2 GiB for fast fits into 80
    assert mode == "fast" and "estimated peak 35.2 GiB (7.65x the stock step's 4.00 GiB, x1.15 margin)" in reason
    assert choose_step_mode(40 * gib, 6 * gib, "cuda")[0] == "balanced"  # fast 52.8 GiB, balanced 29.6 GiB
    # off the GPU the fastest mode is memory whatever the budget; unknown figures fall back to memory
    assert choose_step_mode(10 ** 15, 1, "cpu")[0] == "memory"
    assert choose_step_mode(None, gib, "cuda")[0] == "memory" and choose_step_mode(9 * gib, None, "cuda")[0] == "memory"
    # DDP ranks agree on the most memory-saving choice
    assert most_memory_saving(["fast", "memory"]) == "memory" and most_memory_saving(["fast", "balanced"]) == "balanced"
    assert most_memory_saving(["fast", "fast"]) == "fast"
