"""Block masks on plain tensors."""
import pytest
import torch

from nnunetv2_advmim.methods.masking import (apply_input_mask, apply_mask_token, block_mask, block_size, mask_grid,
                                     num_masked_blocks, upsample_mask)


def test_block_size_is_product_of_strides_capped_at_patch():
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert block_size(strides, (16, 64, 48)) == (4, 8, 8)
    assert block_size(strides, (2, 64, 6)) == (2, 8, 6)  # capped
    assert block_size([1, 2, 2, 2, 2, 2], (224, 224)) == (32, 32)  # AdvMIM paper: 224 px, 32 px blocks
    assert mask_grid((224, 224), (32, 32)) == (7, 7)
    assert mask_grid((20, 64, 50), (4, 8, 16)) == (5, 8, 4)  # ceil
    with pytest.raises(ValueError, match="axes"):
        block_size([[1, 1], [2, 2]], (8, 8, 8))


@pytest.mark.parametrize("grid,ratio", [((7, 7), 0.7), ((2, 4, 3), 0.6), ((3, 5), 0.5), ((4,), 0.0), ((2, 2), 1.0)])
def test_block_mask_masks_exact_count_per_sample(grid, ratio):
    g = torch.Generator().manual_seed(0)
    mask = block_mask(6, grid, ratio, generator=g)
    assert mask.dtype == torch.bool and tuple(mask.shape) == (6, *grid)
    n = round(ratio * torch.Size(grid).numel())
    assert num_masked_blocks(grid, ratio) == n
    assert mask.flatten(1).sum(1).tolist() == [n] * 6


def test_block_mask_seeded_per_sample_and_device():
    m1 = block_mask(4, (7, 7), 0.7, generator=torch.Generator().manual_seed(3))
    m2 = block_mask(4, (7, 7), 0.7, generator=torch.Generator().manual_seed(3), device="cpu")
    m3 = block_mask(4, (7, 7), 0.7, generator=torch.Generator().manual_seed(4))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    assert len({tuple(m.flatten().tolist()) for m in m1}) == 4  # each sample draws its own blocks
    with pytest.raises(ValueError, match="ratio"):
        block_mask(1, (2, 2), 1.5)


def test_upsample_mask_by_hand_with_partial_block():
    mask = torch.tensor([[[True, False, False], [False, False, True]]])  # (1, 2, 3): grid for 4x5 with block 2x2
    voxel = upsample_mask(mask, (4, 5), (2, 2))
    expected = torch.tensor([[1, 1, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [0, 0, 0, 0, 1],
                             [0, 0, 0, 0, 1]], dtype=torch.bool)
    assert voxel.shape == (1, 1, 4, 5) and torch.equal(voxel[0, 0], expected)
    with pytest.raises(ValueError, match="expected"):
        upsample_mask(mask, (4, 8), (2, 2))


def test_apply_input_mask_and_token():
    x = torch.arange(1, 1 + 2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    mask = torch.tensor([[[False, True], [False, False]]])
    out = apply_input_mask(x, mask, (2, 2))
    assert torch.equal(out[:, :, :2, 2:], torch.zeros(1, 2, 2, 2))
    keep = torch.ones(4, 4, dtype=torch.bool)
    keep[:2, 2:] = False
    assert torch.equal(out[:, :, keep], x[:, :, keep])

    token = torch.tensor([-1.0, -2.0]).view(1, 2, 1, 1).requires_grad_()
    feats = apply_mask_token(x, upsample_mask(mask, (4, 4), (2, 2)), token)
    assert torch.equal(feats[0, 0, :2, 2:], torch.full((2, 2), -1.0))
    assert torch.equal(feats[0, 1, :2, 2:], torch.full((2, 2), -2.0))
    assert torch.equal(feats[:, :, keep], x[:, :, keep])
    feats.sum().backward()
    assert token.grad.flatten().tolist() == [4.0, 4.0]  # one gradient per masked position
    # a stem with stride 2: the voxel mask is resized to the feature grid
    small = apply_mask_token(torch.zeros(1, 2, 2, 2), upsample_mask(mask, (4, 4), (2, 2)), token.detach())
    assert small[0, 0].tolist() == [[0.0, -1.0], [0.0, 0.0]]


def test_rank_seed_keeps_rank_0_and_separates_ranks():
    from nnunetv2_advmim.methods.masking import RANK_SEED_STRIDE, rank_seed
    assert RANK_SEED_STRIDE == 1_000_003
    assert rank_seed(12345, 0) == 12345  # a single-process run draws the masks it always drew
    assert rank_seed(12345, 1) == 1_012_348 and rank_seed(12345, 3) == 3_012_354  # 12345 + 1000003 * r
    assert rank_seed(12345, 1) != 12345 + 1  # not the validation generator's seed
    with pytest.raises(ValueError, match="rank must be >= 0"):
        rank_seed(0, -1)
    masks = [block_mask(4, (4, 4), 0.5, torch.Generator().manual_seed(rank_seed(7, r))) for r in range(3)]
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
