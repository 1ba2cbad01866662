"""Block masks for masked image modeling and the AdvMIM masked domain.

Convention shared by every trainer, loss and network of this package:

- A mask is a ``torch.bool`` tensor of shape ``(B, *grid)``, ``True`` = masked block.
- The block size along axis ``i`` is the network's total downsampling along that axis (product of the
  plan's strides), capped at the patch size: :func:`block_size`.
- ``grid[i] = ceil(patch[i] / block[i])``: :func:`mask_grid`. A last, partial block along an axis is
  cropped when the mask is brought to voxel level (:func:`upsample_mask`).
- Exactly ``round(ratio * prod(grid))`` blocks are masked per sample, each sample draws its own blocks
  (:func:`block_mask`); trainers draw a fresh mask per forward call.
- Applying a mask: input voxels of masked blocks are set to 0 (:func:`apply_input_mask`) and the stem
  features at masked positions are replaced by a learnable mask token, ``x * (1 - m) + token * m``
  (:func:`apply_mask_token`).

The AdvMIM paper's 2D setting (224 px patch, 5 stride-2 stages = 32 px blocks, 7x7 grid) is one instance
of this rule. Nothing here knows about plans, datasets or trainers.
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

Shape = Sequence[int]


def block_size(strides: Sequence[Union[int, Sequence[int]]], patch_size: Shape) -> Tuple[int, ...]:
    """Block edge per axis: product of the per-stage ``strides`` along the axis, capped at ``patch_size``.

    ``strides`` is the plan's list (one entry per stage, each an int or a per-axis list), as stored in
    ``architecture.arch_kwargs.strides`` of nnU-Net plans.
    """
    ndim = len(patch_size)
    total = [1] * ndim
    for s in strides:
        s = [int(s)] * ndim if isinstance(s, (int, float)) else [int(i) for i in s]
        if len(s) != ndim:
            raise ValueError(f"stride {s} has {len(s)} axes but the patch size {tuple(patch_size)} has {ndim}")
        total = [t * i for t, i in zip(total, s)]
    return tuple(min(t, int(p)) for t, p in zip(total, patch_size))


def chosen_block_size(patch_size: Shape, network_block: Shape,
                      override: Optional[Union[int, Sequence[int]]] = None) -> Tuple[int, ...]:
    """Block edge per axis for a patch: ``override`` (voxels, one int for every axis or one per axis) when given,
    else ``network_block`` (the network's own rule, :func:`block_size`); capped at ``patch_size``."""
    ndim = len(patch_size)
    block = network_block if override is None else \
        ([int(override)] * ndim if isinstance(override, (int, float)) else [int(b) for b in override])
    if len(block) != ndim:
        raise ValueError(f"mask block size {tuple(block)} has {len(block)} axes but the patch "
                         f"{tuple(patch_size)} has {ndim}")
    if any(int(b) < 1 for b in block):
        raise ValueError(f"mask block sizes must be >= 1 voxel, got {tuple(block)}")
    return tuple(min(int(b), int(p)) for b, p in zip(block, patch_size))


def mask_grid(patch_size: Shape, block: Shape) -> Tuple[int, ...]:
    """Number of blocks per axis: ``ceil(patch / block)``."""
    if len(patch_size) != len(block):
        raise ValueError(f"patch size {tuple(patch_size)} and block {tuple(block)} differ in dimensionality")
    if any(int(b) < 1 for b in block):
        raise ValueError(f"block sizes must be >= 1, got {tuple(block)}")
    return tuple(math.ceil(int(p) / int(b)) for p, b in zip(patch_size, block))


def num_masked_blocks(grid: Shape, ratio: float) -> int:
    """Blocks masked per sample: ``round(ratio * prod(grid))`` (Python's ``round``)."""
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1], got {ratio}")
    return int(round(float(ratio) * math.prod(int(g) for g in grid)))


RANK_SEED_STRIDE = 1_000_003  # a prime far above the small offsets trainers add to a seed (validation uses seed + 1)


def rank_seed(seed: int, rank: int) -> int:
    """Seed of DDP rank ``rank``'s mask generator: ``seed + RANK_SEED_STRIDE * rank``.

    Rank 0 keeps ``seed`` (a single-process run draws exactly the masks it always drew); every other rank gets its
    own stream, so ranks do not mask their different images with the same blocks."""
    if int(rank) < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    return int(seed) + RANK_SEED_STRIDE * int(rank)


def block_mask(batch: int, grid: Shape, ratio: float, generator: Optional[torch.Generator] = None,
               device: Optional[Union[str, torch.device]] = None) -> torch.Tensor:
    """Random block mask, bool ``(batch, *grid)``, exactly :func:`num_masked_blocks` True per sample.

    Each sample draws its own blocks uniformly without replacement (a random permutation per sample).
    ``generator`` (a CPU ``torch.Generator``) makes the mask reproducible; the mask is drawn on the CPU
    and moved to ``device`` so that the same seed gives the same mask on every device.
    """
    grid = tuple(int(g) for g in grid)
    n_blocks = math.prod(grid)
    n_masked = num_masked_blocks(grid, ratio)
    scores = torch.rand((int(batch), n_blocks), generator=generator)
    order = scores.argsort(dim=1)
    mask = torch.zeros((int(batch), n_blocks), dtype=torch.bool)
    mask.scatter_(1, order[:, :n_masked], True)
    mask = mask.view(int(batch), *grid)
    return mask if device is None else mask.to(device)


def upsample_mask(mask: torch.Tensor, spatial_shape: Shape, block: Shape) -> torch.Tensor:
    """Block mask ``(B, *grid)`` to voxel level, bool ``(B, 1, *spatial_shape)``; the last partial block is cropped."""
    spatial_shape = tuple(int(s) for s in spatial_shape)
    block = tuple(int(b) for b in block)
    expected = mask_grid(spatial_shape, block)
    if mask.dim() != len(spatial_shape) + 1 or tuple(mask.shape[1:]) != expected:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit spatial shape {spatial_shape} with block "
                         f"{block}: expected (B, {', '.join(map(str, expected))}). Build it with "
                         f"block_mask(B, mask_grid(spatial_shape, block), ratio).")
    m = mask.bool()
    for axis, b in enumerate(block):
        m = m.repeat_interleave(b, dim=axis + 1)
    m = m[(slice(None),) + tuple(slice(0, s) for s in spatial_shape)]
    return m.unsqueeze(1)


def apply_input_mask(x: torch.Tensor, mask: torch.Tensor, block: Shape) -> torch.Tensor:
    """Zero the voxels of masked blocks in ``x`` (B, C, *spatial); ``mask`` is the block mask (B, *grid)."""
    m = upsample_mask(mask.to(x.device), x.shape[2:], block)
    return x.masked_fill(m, 0)


def apply_mask_token(features: torch.Tensor, voxel_mask: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """``features * (1 - m) + token * m`` for a binary voxel mask.

    ``features``: (B, C, *spatial) stem output; ``voxel_mask``: bool (B, 1, *s) at input resolution (resized by
    nearest neighbour when the stem is strided); ``token``: broadcastable to (1, C, 1, ...), e.g. a shared
    per-channel learnable token. Written with ``torch.where`` so unmasked features pass through bit-exactly and
    the token receives the gradient of every masked position.
    """
    m = voxel_mask.to(features.device)
    if tuple(m.shape[2:]) != tuple(features.shape[2:]):
        m = F.interpolate(m.float(), size=features.shape[2:], mode="nearest") > 0.5
    return torch.where(m, token.to(features.dtype), features)


def network_masks(nets: dict, shape: Shape, ratio: float, generator: Optional[torch.Generator], device,
                  block: Optional[Union[int, Sequence[int]]] = None) -> dict:
    """Per network, the mask of one batch of input shape ``shape`` (B, C, *spatial): a block mask on the network's
    own grid (``net.mask_grid``), or, when ``block`` sets the block size (voxels, :func:`chosen_block_size`), a
    voxel mask of those blocks."""
    masks = {}
    spatial = tuple(shape[2:])
    for name, net in nets.items():
        if block is None:
            masks[name] = block_mask(shape[0], net.mask_grid(spatial), ratio, generator, device)
            continue
        edge = chosen_block_size(spatial, net.mask_block_size(spatial), block)
        m = block_mask(shape[0], mask_grid(spatial, edge), ratio, generator)
        masks[name] = upsample_mask(m, spatial, edge).to(device)
    return masks
