"""Masked image modeling core (nnunetv2_advmim.methods.mim): loss, AnatoMask, MPS-AMS."""
import math
from fractions import Fraction

import pytest
import torch

from nnunetv2_advmim.methods.masking import block_mask
from nnunetv2_advmim.methods.mim import (adaptive_mask_ratio, anatomask_mask, anatomask_select, blockify, kmeans,
                                 lesion_like_blocks, masked_reconstruction_loss, masking_dynamics_ratio,
                                 mpsams_mask, normalised_targets, num_hard_blocks, per_block_reconstruction_error,
                                 unblockify)


# ------------------------------------------------------------------------------------------ blocks
@pytest.mark.parametrize("shape, block", [((2, 1, 5, 7), (2, 3)), ((1, 2, 24, 30, 32), (8, 16, 16)),
                                          ((1, 1, 4, 4), (4, 4))])
def test_blockify_round_trip_and_validity(shape, block):
    x = torch.randn(shape)
    xb, valid = blockify(x, block)
    grid = [math.ceil(s / b) for s, b in zip(shape[2:], block)]
    assert xb.shape == (shape[0], shape[1], math.prod(grid), math.prod(block))
    assert valid.sum().item() == math.prod(shape[2:])  # every real voxel once, padding marked invalid
    assert torch.equal(unblockify(xb, block, shape[2:]), x)


def _two_block_image():
    # block (2, 2) on a 2x4 image: left block [[1, 3], [1, 3]] (mean 2, var 1), right [[0, 0], [0, 4]] (mean 1, var 3)
    return torch.tensor([[[[1.0, 3.0, 0.0, 0.0], [1.0, 3.0, 0.0, 4.0]]]])


def test_normalised_targets_hand_values():
    t = normalised_targets(_two_block_image(), (2, 2), eps=0.0)
    s3 = math.sqrt(3.0)
    expected = torch.tensor([[[[-1.0, 1.0, -1 / s3, -1 / s3], [-1.0, 1.0, -1 / s3, 3 / s3]]]])
    assert torch.allclose(t, expected, atol=1e-6)
    # default eps 1e-6 in the denominator
    t_eps = normalised_targets(_two_block_image(), (2, 2))
    assert t_eps[0, 0, 0, 1].item() == pytest.approx(1 / math.sqrt(1 + 1e-6))


def test_partial_blocks_use_only_their_real_voxels():
    # 1x3 image, block (1, 2): blocks [1, 3] and [7] (+ padding); the padding must not enter mean or var
    x = torch.tensor([[[[1.0, 3.0, 7.0]]]])
    t = normalised_targets(x, (1, 2), eps=0.0 + 1e-12)
    assert torch.allclose(t[0, 0, 0, :2], torch.tensor([-1.0, 1.0]), atol=1e-5)
    assert t[0, 0, 0, 2].item() == 0.0  # one-voxel block: x - mean = 0, finite
    err = per_block_reconstruction_error(torch.ones_like(x), x, (1, 2), eps=1e-12)
    assert err.shape == (1, 1, 2)
    assert err[0, 0, 0].item() == pytest.approx((4 + 0) / 2, rel=1e-5)  # (1-(-1))^2, (1-1)^2
    assert err[0, 0, 1].item() == pytest.approx(1.0, rel=1e-5)          # (1-0)^2 on the single real voxel


def test_per_block_error_averages_channels_and_voxels():
    x = torch.cat([_two_block_image(), 2 * _two_block_image() + 1], dim=1)  # 2 channels
    target = normalised_targets(x, (2, 2), eps=0.0)
    offset = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2).repeat_interleave(2, dim=3)  # +1 left block, +2 right
    pred = target + offset * torch.tensor([1.0, 3.0 ** 0.5]).view(1, 2, 1, 1)        # channel 2 scaled by sqrt 3
    err = per_block_reconstruction_error(pred, x, (2, 2), eps=0.0)
    # left: (1 + 3) / 2 = 2 ; right: (4 + 12) / 2 = 8
    assert torch.allclose(err, torch.tensor([[[2.0, 8.0]]]), atol=1e-5)


def test_masked_reconstruction_loss_hand_values_and_gradient_only_on_masked_blocks():
    x = _two_block_image()
    target = normalised_targets(x, (2, 2), eps=0.0)
    pred = target.clone()
    pred[..., 2:] = 0.0  # right block predicted as zeros: error = mean(target^2) = var / var = 1
    pred.requires_grad_(True)
    left, right = torch.tensor([[[True, False]]]), torch.tensor([[[False, True]]])
    assert masked_reconstruction_loss(pred, x, left, (2, 2), eps=0.0).item() == pytest.approx(0.0, abs=1e-10)
    assert masked_reconstruction_loss(pred, x, torch.tensor([[[True, True]]]), (2, 2), eps=0.0).item() == pytest.approx(0.5)
    loss = masked_reconstruction_loss(pred, x, right, (2, 2), eps=0.0)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert pred.grad[..., :2].abs().sum() == 0 and pred.grad[..., 2:].abs().sum() > 0
    # no masked block: 0, not NaN
    assert masked_reconstruction_loss(pred, x, torch.zeros(1, 1, 2, dtype=torch.bool), (2, 2)).item() == 0.0


def test_reconstruction_loss_3d_and_shape_errors():
    x = torch.randn(2, 1, 6, 10, 9)
    mask = block_mask(2, (2, 3, 3), 0.6, torch.Generator().manual_seed(0))
    loss = masked_reconstruction_loss(torch.zeros_like(x), x, mask, (3, 4, 4))
    assert loss.item() == pytest.approx(1.0, abs=1e-3)  # zeros against unit-variance targets
    with pytest.raises(ValueError, match=r"mask must have shape \(B, \*grid\)"):
        masked_reconstruction_loss(x, x, mask[:, :1], (3, 4, 4))
    with pytest.raises(ValueError, match="one positive size per spatial axis"):
        masked_reconstruction_loss(x, x, mask, (3, 4))
    with pytest.raises(ValueError, match="output channels = input channels"):
        per_block_reconstruction_error(torch.zeros(2, 2, 6, 10, 9), x, (3, 4, 4))


# --------------------------------------------------------------------------------------- AnatoMask
def test_masking_dynamics_schedule_every_epoch_and_endpoints():
    E = 10
    for e in range(E):
        assert masking_dynamics_ratio(e, E) == pytest.approx(min(0.5 * (e + 1) / 9, 0.5))
    assert masking_dynamics_ratio(0, E) == pytest.approx(0.5 / 9)
    assert masking_dynamics_ratio(E - 2, E) == pytest.approx(0.5)
    assert masking_dynamics_ratio(E - 1, E) == pytest.approx(0.5)   # clipped to r_max
    assert masking_dynamics_ratio(0, E, r_max=0.8) == pytest.approx(0.8 / 9)
    assert masking_dynamics_ratio(0, E, schedule="hard_to_easy") == pytest.approx(0.5)
    assert masking_dynamics_ratio(E - 1, E, schedule="hard_to_easy") == 0.0
    h2e = [masking_dynamics_ratio(e, E, schedule="hard_to_easy") for e in range(E)]
    assert h2e == sorted(h2e, reverse=True)
    assert masking_dynamics_ratio(0, 1) == 0.5
    with pytest.raises(ValueError, match="schedule"):
        masking_dynamics_ratio(0, E, schedule="random")
    assert num_hard_blocks(10, 0.3) == 3 and num_hard_blocks(29, 0.5) == 14


def test_anatomask_exact_counts_for_every_epoch_and_top_k_hard_blocks():
    E, grid, B = 12, (7, 7), 3
    g = torch.Generator().manual_seed(0)
    n_masked = round(0.6 * 49)  # 29, the masking.py count
    for e in range(E):
        m1 = block_mask(B, grid, 0.6, g)
        errors = torch.rand(B, *grid, generator=g)
        r = masking_dynamics_ratio(e, E)
        mask, hard = anatomask_mask(m1, errors, r, g)
        expected_hard = math.floor(n_masked * min(Fraction(1, 2) * (e + 1) / (E - 1), Fraction(1, 2)))
        assert mask.flatten(1).sum(1).tolist() == [n_masked] * B
        assert hard.flatten(1).sum(1).tolist() == [expected_hard] * B
        assert not (hard & ~m1).any() and not (hard & ~mask).any()
        for b in range(B):  # the hard blocks are the top-n_hard errors inside M1
            inside = errors[b][m1[b]]
            top = torch.topk(inside, expected_hard).values
            assert torch.equal(torch.sort(errors[b][hard[b]]).values, torch.sort(top).values)


def test_anatomask_hand_example():
    m1 = torch.tensor([[[True, True], [True, False]]])
    errors = torch.tensor([[[0.1, 0.9], [0.5, 100.0]]])  # the last block is outside M1: never hard
    mask, hard = anatomask_mask(m1, errors, 0.67, torch.Generator().manual_seed(3))  # floor(3 * 0.67) = 2
    assert hard.tolist() == [[[False, True], [True, False]]]
    assert mask.sum().item() == 3 and mask[0, 0, 1] and mask[0, 1, 0]
    mask0, hard0 = anatomask_mask(m1, errors, 0.0, torch.Generator().manual_seed(3))
    assert hard0.sum().item() == 0 and mask0.sum().item() == 3


def test_anatomask_reproducible_for_a_seed():
    g = torch.Generator().manual_seed(5)
    m1 = block_mask(4, (6, 6), 0.6, g)
    errors = torch.rand(4, 6, 6, generator=g)
    a = anatomask_mask(m1, errors, 0.25, torch.Generator().manual_seed(11))[0]
    b = anatomask_mask(m1, errors, 0.25, torch.Generator().manual_seed(11))[0]
    c = anatomask_mask(m1, errors, 0.25, torch.Generator().manual_seed(12))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_anatomask_select_uses_the_teachers_errors_on_m1():
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    block = (4, 4)
    seen = {}

    def teacher(inp, mask=None):  # perfect reconstruction except a bad block (1, 2)
        seen["mask"] = mask
        out = normalised_targets(inp, block)
        out[:, :, 4:8, 8:12] += 3.0
        return [out, None]  # deep-supervision style list: first entry is used

    m1 = torch.zeros(2, 4, 4, dtype=torch.bool)
    m1[:, 1, 2] = True
    m1[:, 0, :] = True  # 5 blocks in M1
    mask, hard = anatomask_select(teacher, x, m1, block, epoch=0, num_epochs=2, r_max=0.5,
                                  generator=torch.Generator().manual_seed(0))  # r = 0.5 * 1 / 1 -> n_hard = 2
    assert seen["mask"] is m1
    assert hard.flatten(1).sum(1).tolist() == [2, 2] and hard[:, 1, 2].all()
    assert mask.flatten(1).sum(1).tolist() == [5, 5]


# ----------------------------------------------------------------------------------------- MPS-AMS
def test_adaptive_ratio_endpoints_and_exact_counts_every_epoch():
    E = 11
    assert adaptive_mask_ratio(0, E) == pytest.approx(0.25)
    assert adaptive_mask_ratio(5, E) == pytest.approx(0.5)
    assert adaptive_mask_ratio(E - 1, E) == pytest.approx(0.75)
    assert adaptive_mask_ratio(E + 3, E) == pytest.approx(0.75)
    assert adaptive_mask_ratio(0, 1) == 0.75
    assert adaptive_mask_ratio(0, E, 0.1, 0.9) == pytest.approx(0.1)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for e in range(E):
        ratio = adaptive_mask_ratio(e, E)
        mask, _ = mpsams_mask(x, (8, 8), ratio, g)
        assert mask.flatten(1).sum(1).tolist() == [round(ratio * 16)] * 2


def _lesion_image(seed=1):
    # two tissues (left 0, right 1) and one bright "lesion" block at grid position (1, 1) = block 5
    x = torch.zeros(1, 1, 32, 32)
    x[..., :, 16:] = 1.0
    x[..., 8:16, 8:16] = 5.0
    return x + 0.05 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_kmeans_separates_clear_groups():
    pts = torch.tensor([[[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.0, 10.1], [10.1, 10.0]]])
    assign, centers, counts = kmeans(pts, 2, generator=torch.Generator().manual_seed(0))
    assert assign[0, 0] == assign[0, 1] and assign[0, 2] == assign[0, 3] == assign[0, 4]
    assert assign[0, 0] != assign[0, 2]
    assert sorted(counts[0].tolist()) == [2.0, 3.0]


@pytest.mark.parametrize("seed", range(5))
def test_lesion_like_block_is_found_and_masked_first(seed):
    x = _lesion_image()
    lesion = lesion_like_blocks(x, (8, 8), generator=torch.Generator().manual_seed(seed))
    assert lesion.flatten().nonzero().flatten().tolist() == [5]
    mask, lesion2 = mpsams_mask(x, (8, 8), 0.25, torch.Generator().manual_seed(seed))
    assert torch.equal(lesion, lesion2) and mask[0, 1, 1] and mask.sum().item() == 4


def test_mpsams_reproducible_3d_and_lesion_fraction():
    x = torch.randn(2, 2, 8, 12, 12, generator=torch.Generator().manual_seed(0))
    a = mpsams_mask(x, (4, 4, 4), 0.5, torch.Generator().manual_seed(7))[0]
    b = mpsams_mask(x, (4, 4, 4), 0.5, torch.Generator().manual_seed(7))[0]
    assert torch.equal(a, b) and a.shape == (2, 2, 3, 3)
    assert a.flatten(1).sum(1).tolist() == [9, 9]
    # lesion_fraction = 0: lesion-like blocks get no priority (fill is purely random), count still exact
    x2 = _lesion_image()
    hits = sum(bool(mpsams_mask(x2, (8, 8), 0.25, torch.Generator().manual_seed(s), lesion_fraction=0.0)[0][0, 1, 1])
               for s in range(20))
    assert 0 < hits < 20
    with pytest.raises(ValueError, match="lesion_fraction"):
        mpsams_mask(x, (4, 4, 4), 0.5, lesion_fraction=2.0)
