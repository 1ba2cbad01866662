"""Hand-computed values for AdvMIM's unsupervised loss terms (nnunetv2_advmim.methods.losses)."""
import math

import pytest
import torch

from nnunetv2_advmim.methods.advmim import AdvMIMWeights, part_loss
from nnunetv2_advmim.methods.step_modes import MASKED_UNLABELED, UNLABELED
from nnunetv2_advmim.methods.losses import (certainty_weighted_ce, certainty_weighted_dice, cross_teaching_dice,
                                            pseudo_labels_and_certainty)
from nnunetv2_advmim.methods.schedules import sigmoid_rampup


def _two_voxel_logits():
    # voxel 0: logits (0, ln 3) -> p = (1/4, 3/4); voxel 1: logits (ln 4, 0) -> p = (4/5, 1/5)
    return torch.tensor([[[[0.0, math.log(4.0)]], [[math.log(3.0), 0.0]]]])  # (B=1, K=2, 1, 2)


def test_pseudo_labels_and_certainty_hand_values_and_detached():
    logits = _two_voxel_logits().requires_grad_(True)
    labels, certainty = pseudo_labels_and_certainty(logits)
    assert labels.shape == (1, 1, 1, 2) and labels.dtype == torch.long
    assert labels.flatten().tolist() == [1, 0]
    assert torch.allclose(certainty.flatten(), torch.tensor([0.75, 0.8]))
    assert not labels.requires_grad and not certainty.requires_grad


def test_certainty_weighted_ce_hand_value():
    logits = _two_voxel_logits().requires_grad_(True)
    labels = torch.tensor([1, 0]).view(1, 1, 1, 2)
    weights = torch.tensor([0.5, 1.0]).view(1, 1, 1, 2)
    expected = (0.5 * -math.log(0.75) + 1.0 * -math.log(0.8)) / 1.5
    loss = certainty_weighted_ce(logits, labels, weights)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # a voxel with weight 0 does not count, however wrong it is
    wrong = torch.tensor([0, 0]).view(1, 1, 1, 2)
    w0 = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    assert certainty_weighted_ce(_two_voxel_logits(), wrong, w0).item() == pytest.approx(-math.log(0.8), rel=1e-6)
    # all-zero weights: 0, not NaN
    assert certainty_weighted_ce(_two_voxel_logits(), labels, torch.zeros(1, 1, 1, 2)).item() == 0.0


def test_certainty_weighted_dice_hand_value():
    logits = _two_voxel_logits()
    labels = torch.tensor([1, 0]).view(1, 1, 1, 2)
    weights = torch.tensor([0.5, 1.0]).view(1, 1, 1, 2)
    # class 0: y=(0,1): I = 1*0.8, P = 0.5*0.25 + 1*0.8 = 0.925, G = 1   -> 1.6/1.925
    # class 1: y=(1,0): I = 0.5*0.75, P = 0.5*0.75 + 1*0.2 = 0.575, G = 0.5 -> 0.75/1.075
    d0, d1 = 1.6 / 1.925, 0.75 / 1.075
    assert certainty_weighted_dice(logits, labels, weights, smooth=0).item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-6)
    assert certainty_weighted_dice(logits, labels, weights, do_bg=False, smooth=0).item() == pytest.approx(1 - d1, rel=1e-6)
    # with the default smooth 1e-5
    s = 1e-5
    ds = ((1.6 + s) / (1.925 + s) + (0.75 + s) / (1.075 + s)) / 2
    assert certainty_weighted_dice(logits, labels, weights).item() == pytest.approx(1 - ds, rel=1e-6)


def test_cross_teaching_dice_hand_value_and_perfect_agreement():
    logits = _two_voxel_logits()
    labels = torch.tensor([1, 0]).view(1, 1, 1, 2)
    # class 0: I = 0.8, P = 0.25 + 0.8, G = 1 ; class 1: I = 0.75, P = 0.75 + 0.2, G = 1
    expected = 1 - (1.6 / 2.05 + 1.5 / 1.95) / 2
    assert cross_teaching_dice(logits, labels, smooth=0).item() == pytest.approx(expected, rel=1e-6)
    # confident and correct -> ~0; equal to the weighted Dice with all weights 1
    sharp = 50 * (torch.nn.functional.one_hot(torch.tensor([[[1, 0, 2]]]), 3).permute(0, 3, 1, 2).float())
    assert cross_teaching_dice(sharp, torch.tensor([[[[1, 0, 2]]]])).item() < 1e-6
    ones = torch.ones(1, 1, 1, 2)
    assert cross_teaching_dice(logits, labels).item() == pytest.approx(
        certainty_weighted_dice(logits, labels, ones).item(), rel=1e-6)


def test_losses_work_in_3d_with_gradients_only_into_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6, generator=g, requires_grad=True)
    partner = torch.randn(2, 3, 4, 5, 6, generator=g, requires_grad=True)
    labels, cert = pseudo_labels_and_certainty(partner)
    loss = certainty_weighted_ce(logits, labels, cert) + certainty_weighted_dice(logits, labels, cert)
    loss.backward()
    assert logits.grad.abs().sum() > 0 and partner.grad is None


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="pseudo-labels/weights must have shape"):
        certainty_weighted_ce(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), torch.ones(1, 1, 4, 4))


def test_sigmoid_rampup_values():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == 1.0
    assert sigmoid_rampup(250, 100) == 1.0
    assert sigmoid_rampup(-3, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(7, 0) == 1.0
    values = [sigmoid_rampup(t, 10) for t in range(11)]
    assert values == sorted(values)


def test_unlabeled_parts_of_the_training_loss_compose_the_term_functions():
    """The unlabeled parts of L_N as training computes them (``advmim.part_loss``) from the term functions."""
    g = torch.Generator().manual_seed(1)
    masked = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    plain = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    partner = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    seen = {}

    class Discriminator(torch.nn.Module):  # constant score 0.5 -> generator loss (0.5 - 1)^2 = 0.25
        def forward(self, p):
            seen["p"] = p
            return p[:, :1] * 0 + 0.5

    discriminator = Discriminator()
    w = AdvMIMWeights(lambda_u=1.0, lambda_ct=0.1, lambda_adv=0.001, rampup=0.5)
    u = part_loss(UNLABELED, plain, None, None, partner, None, w)
    mu = part_loss(MASKED_UNLABELED, [masked, masked[:, :, ::2, ::2]], None, None, partner, discriminator, w)
    labels, cert = pseudo_labels_and_certainty(partner)
    ce = certainty_weighted_ce(masked, labels, cert)
    dc = certainty_weighted_dice(masked, labels, cert)
    ct = cross_teaching_dice(plain, labels)
    assert mu.terms["masked_ce"].item() == pytest.approx(ce.item())
    assert mu.terms["masked_dice"].item() == pytest.approx(dc.item())
    assert u.terms["cross_teaching"].item() == pytest.approx(ct.item())
    assert mu.terms["adversarial"].item() == pytest.approx(0.25)
    assert u.terms["certainty"].item() == pytest.approx(cert.mean().item())
    assert (u.loss + mu.loss).item() == pytest.approx((ce + dc + 0.1 * 0.5 * ct + 0.001 * 0.25).item(), rel=1e-6)
    # the discriminator sees the softmax of the full-resolution masked prediction; its detached copy is D's "fake"
    assert torch.allclose(seen["p"], torch.softmax(masked, 1)) and torch.allclose(mu.fake, seen["p"])
    assert torch.equal(u.logits_u, plain.detach()) and not u.logits_u.requires_grad
    (u.loss + mu.loss).backward()
    assert masked.grad.abs().sum() > 0 and plain.grad.abs().sum() > 0 and partner.grad is None
    # ablations: no discriminator / no cross teaching
    noadv = part_loss(MASKED_UNLABELED, masked, None, None, partner, None, w)
    assert noadv.terms["adversarial"].item() == 0.0 and noadv.loss.item() == pytest.approx((ce + dc).item(), rel=1e-6)
    noct = part_loss(UNLABELED, plain, None, None, partner, None, AdvMIMWeights(lambda_ct=0.0))
    assert noct.loss is None and noct.terms["cross_teaching"].item() == 0.0
