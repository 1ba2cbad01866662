"""Masked image modeling core: block-normalised reconstruction loss, AnatoMask and MPS-AMS mask selection.

Tensors only, 2D and 3D. Conventions shared with ``nnunetv2_advmim.methods.masking``:

- images are ``(B, C, *spatial)``; ``block`` is a per-axis tuple of ints (one entry per spatial axis);
- a mask is a bool tensor ``(B, *grid)`` with ``grid[i] = ceil(spatial[i] / block[i])``, True = masked.

Partial blocks: when a patch size is not a multiple of the block, the last block along that axis is a
*smaller* block. Internally the image is zero-padded to a whole number of blocks together with a validity
map, and every per-block statistic (mean, variance, reconstruction error, intensity features) uses only the
real voxels of the block, so padding never leaks into targets or errors and no grid cell is dropped
(cropping would leave grid cells of the mask without voxels). This matches ``masking.upsample_mask``, which
crops the voxel mask of the last partial block to the patch: a partial block is masked over its real voxels.

Random draws take an optional ``torch.Generator`` (on any device; numbers are drawn on the generator's
device and moved to the data), so a seeded generator reproduces a selection exactly.
"""
import math
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from nnunetv2_advmim.methods.masking import num_masked_blocks

__all__ = [
    "grid_shape", "blockify", "unblockify", "normalised_targets", "per_block_reconstruction_error",
    "masked_reconstruction_loss", "masking_dynamics_ratio", "num_hard_blocks", "anatomask_mask",
    "ANATOMASK_RANKINGS", "block_ranking_errors", "teacher_block_errors", "anatomask_select",
    "adaptive_mask_ratio", "block_statistics", "kmeans", "lesion_candidate_blocks", "lesion_like_blocks",
    "mpsams_mask",
]


# ----------------------------------------------------------------------------------------------- blocks
def _check_image_block(x: torch.Tensor, block: Sequence[int], what: str) -> Tuple[int, ...]:
    if x.ndim not in (4, 5):
        raise ValueError(f"{what}: images must be (B, C, X, Y) or (B, C, X, Y, Z), got shape {tuple(x.shape)}")
    block = tuple(int(b) for b in block)
    if len(block) != x.ndim - 2 or any(b < 1 for b in block):
        raise ValueError(f"{what}: block {block} must have one positive size per spatial axis of an image "
                         f"of shape {tuple(x.shape)}")
    return block


def _check_mask(mask: torch.Tensor, x: torch.Tensor, block: Sequence[int], what: str) -> None:
    block = _check_image_block(x, block, what)
    expected = (x.shape[0], *grid_shape(x.shape[2:], block))
    if tuple(mask.shape) != expected:
        raise ValueError(f"{what}: mask must have shape (B, *grid) = {expected} for images {tuple(x.shape)} and "
                         f"block {tuple(block)}, got {tuple(mask.shape)}")


def grid_shape(spatial: Sequence[int], block: Sequence[int]) -> Tuple[int, ...]:
    """Block grid ``ceil(spatial[i] / block[i])`` (the mask convention)."""
    return tuple(int(math.ceil(int(s) / int(b))) for s, b in zip(spatial, block))


def _interleave_perm(d: int):
    # (B, C, g1, b1, g2, b2, ...) -> (B, C, g1, g2, ..., b1, b2, ...)
    return [0, 1] + [2 + 2 * i for i in range(d)] + [3 + 2 * i for i in range(d)]


def blockify(x: torch.Tensor, block: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split images into blocks: returns ``(blocks, valid)``.

    ``blocks`` is ``(B, C, N, V)`` with ``N = prod(grid)`` blocks in row-major grid order (the order of
    ``mask.flatten(1)``) and ``V = prod(block)`` voxels per block; ``valid`` is a bool ``(N, V)`` map that is
    False for the zero padding of partial last blocks.
    """
    block = _check_image_block(x, block, "blockify")
    B, C, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
    d = len(spatial)
    grid = grid_shape(spatial, block)
    pad = [g * b - s for g, b, s in zip(grid, block, spatial)]
    pad_arg = [p for i in reversed(range(d)) for p in (0, pad[i])]
    split = [v for g, b in zip(grid, block) for v in (g, b)]
    n, v = math.prod(grid), math.prod(block)
    xb = F.pad(x, pad_arg).reshape(B, C, *split).permute(_interleave_perm(d)).reshape(B, C, n, v)
    ones = torch.ones((1, 1, *spatial), dtype=torch.float32, device=x.device)
    valid = F.pad(ones, pad_arg).reshape(1, 1, *split).permute(_interleave_perm(d)).reshape(n, v) > 0
    return xb, valid


def unblockify(blocks: torch.Tensor, block: Sequence[int], spatial: Sequence[int]) -> torch.Tensor:
    """Inverse of ``blockify``: ``(B, C, N, V)`` back to ``(B, C, *spatial)`` (padding cropped)."""
    block = tuple(int(b) for b in block)
    spatial = tuple(int(s) for s in spatial)
    d = len(spatial)
    grid = grid_shape(spatial, block)
    B, C = blocks.shape[:2]
    x = blocks.reshape(B, C, *grid, *block)
    inv = [0, 1] + [v for i in range(d) for v in (2 + i, 2 + d + i)]
    x = x.permute(inv).reshape(B, C, *[g * b for g, b in zip(grid, block)])
    return x[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]


def _block_mean_var(xb: torch.Tensor, valid: torch.Tensor):
    w = valid.to(xb.dtype)
    n = w.sum(-1)  # (N,)
    mean = (xb * w).sum(-1) / n
    var = (((xb - mean[..., None]) ** 2) * w).sum(-1) / n
    return mean, var


def _normalised_blocks(x: torch.Tensor, block: Sequence[int], eps: float):
    xb, valid = blockify(x.float(), block)
    mean, var = _block_mean_var(xb, valid)
    return (xb - mean[..., None]) / torch.sqrt(var[..., None] + eps), valid


def normalised_targets(x: torch.Tensor, block: Sequence[int], eps: float = 1e-6) -> torch.Tensor:
    """Per-block, per-channel normalised image ``(x - mean) / sqrt(var + eps)``.

    Mean and (population, i.e. biased) variance over the real voxels of each block and channel; the biased
    variance keeps one-voxel partial blocks finite. Returned in image layout ``(B, C, *spatial)``, float32.
    """
    t, _ = _normalised_blocks(x, block, eps)
    return unblockify(t, block, x.shape[2:])


# ------------------------------------------------------------------------------- reconstruction loss
def per_block_reconstruction_error(pred: torch.Tensor, x: torch.Tensor, block: Sequence[int],
                                   eps: float = 1e-6) -> torch.Tensor:
    """Mean squared error of ``pred`` against the block-normalised targets of ``x``, per block: ``(B, *grid)``.

    Averaged over channels and the real voxels of each block. Used for the loss and, on the EMA teacher's
    prediction, for AnatoMask's default ranking of blocks (scored against the normalised targets the loss uses,
    not raw intensities as in the official AnatoMask code; the alternatives are in ``block_ranking_errors``).
    """
    block = _check_image_block(x, block, "per_block_reconstruction_error")
    if pred.shape != x.shape:
        raise ValueError(f"per_block_reconstruction_error: prediction {tuple(pred.shape)} must have the image's "
                         f"shape {tuple(x.shape)} (network output channels = input channels)")
    target, valid = _normalised_blocks(x, block, eps)
    pb, _ = blockify(pred.float(), block)
    err = _block_mse(pb, target, valid)  # (B, C, N)
    return err.mean(1).reshape(x.shape[0], *grid_shape(x.shape[2:], block))


def _block_mse(pb: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the real voxels of every block: ``(B, C, N, V)`` pairs -> ``(B, C, N)``."""
    w = valid.to(target.dtype)
    return (((pb - target) ** 2) * w).sum(-1) / w.sum(-1)


def masked_reconstruction_loss(pred: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, block: Sequence[int],
                               eps: float = 1e-6) -> torch.Tensor:
    """MIM loss: mean over masked blocks of the per-block normalised MSE.

    ``loss = sum_b mask_b * err_b / sum_b mask_b``, with ``err_b`` from ``per_block_reconstruction_error``;
    unmasked blocks contribute nothing (no gradient either). A batch without masked blocks gives 0.
    """
    _check_mask(mask, x, block, "masked_reconstruction_loss")
    err = per_block_reconstruction_error(pred, x, block, eps)
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------- helpers
def _rand(shape, generator: Optional[torch.Generator], device) -> torch.Tensor:
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _ranks(keys: torch.Tensor, descending: bool = True) -> torch.Tensor:
    """Rank (0 = first) of every entry along dim 1 when sorted (stable) by ``keys``."""
    order = torch.sort(keys, dim=1, descending=descending, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(keys.shape[1], device=keys.device).expand_as(order).contiguous())
    return ranks


def _select(priority: torch.Tensor, random_keys: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per row, pick exactly ``counts[b]`` entries: all entries with ``priority`` first, the rest at random."""
    keys = random_keys + 2.0 * priority.to(random_keys.dtype)  # random keys are in [0, 1)
    return _ranks(keys) < counts[:, None]


# ----------------------------------------------------------------------------------------- AnatoMask
def masking_dynamics_ratio(epoch: int, num_epochs: int, r_max: float = 0.5,
                           schedule: str = "easy_to_hard") -> float:
    """AnatoMask's masking dynamics: share of the masked blocks chosen as hard blocks at ``epoch`` (0-based).

    ``easy_to_hard`` (default): ``r = r_max * (epoch + 1) / (num_epochs - 1)`` clipped to
    ``[0, r_max]`` (reaches ``r_max`` at ``epoch = num_epochs - 2``). ``hard_to_easy``: the mirror image,
    ``r = r_max * (num_epochs - 1 - epoch) / (num_epochs - 1)``, starting at ``r_max`` and ending at 0.
    With ``num_epochs <= 1`` (no schedule to spread) both return ``r_max``.
    """
    if not 0.0 <= r_max <= 1.0:
        raise ValueError(f"masking_dynamics_ratio: r_max must lie in [0, 1], got {r_max}")
    if num_epochs <= 1:
        return float(r_max)
    if schedule == "easy_to_hard":
        r = r_max * (epoch + 1) / (num_epochs - 1)
    elif schedule == "hard_to_easy":
        r = r_max * (num_epochs - 1 - epoch) / (num_epochs - 1)
    else:
        raise ValueError(f"masking_dynamics_ratio: schedule must be 'easy_to_hard' or 'hard_to_easy', got "
                         f"'{schedule}'")
    return float(min(max(r, 0.0), r_max))


def num_hard_blocks(n_masked: int, r: float) -> int:
    """``n_hard = floor(n_masked * r)``, robust to float round-off (0.3 * 10 -> 3)."""
    return int(math.floor(n_masked * r + 1e-9))


def anatomask_mask(base_mask: torch.Tensor, block_errors: torch.Tensor, hard_ratio: float,
                   generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """AnatoMask's student mask from the teacher's errors on a random mask M1.

    Per sample with ``n_masked = M1.sum()``: the ``n_hard = floor(n_masked * hard_ratio)`` blocks of M1 with
    the highest ``block_errors`` (ties: grid order) are masked, then blocks drawn uniformly at random among
    all other blocks until exactly ``n_masked`` blocks are masked.

    Args: ``base_mask`` M1 ``(B, *grid)`` bool; ``block_errors`` ``(B, *grid)``, only read inside M1.
    Returns ``(mask, hard)``, both ``(B, *grid)`` bool; ``hard`` marks the selected hard blocks.
    """
    if base_mask.shape != block_errors.shape or base_mask.dtype != torch.bool:
        raise ValueError(f"anatomask_mask: base_mask must be bool and shaped like block_errors, got "
                         f"{base_mask.dtype} {tuple(base_mask.shape)} vs {tuple(block_errors.shape)}")
    B = base_mask.shape[0]
    m1 = base_mask.reshape(B, -1)
    n_masked = m1.sum(1)
    n_hard = torch.floor(n_masked.double() * float(hard_ratio) + 1e-9).long()
    scores = block_errors.reshape(B, -1).float().masked_fill(~m1, float("-inf"))
    hard = m1 & (_ranks(scores) < n_hard[:, None])
    mask = _select(hard, _rand(m1.shape, generator, m1.device), n_masked)
    return mask.reshape(base_mask.shape), hard.reshape(base_mask.shape)


ANATOMASK_RANKINGS = ("normalised", "variance_weighted", "raw")


def block_ranking_errors(pred: torch.Tensor, x: torch.Tensor, block: Sequence[int], ranking: str = "normalised",
                         eps: float = 1e-6) -> torch.Tensor:
    """Per-block error ``(B, *grid)`` by which AnatoMask ranks blocks (hardest = highest); ``ranking`` is one of
    ``ANATOMASK_RANKINGS``.

    - ``normalised`` (default): ``per_block_reconstruction_error``, the error the loss uses:
      ``e_b = mean_c mean_v (pred - (x - mu_b) / sqrt(var_b + eps))^2``. In a nearly uniform block (background,
      air, padding) the normalisation lifts noise to unit variance, so such blocks can rank as hardest.
    - ``variance_weighted``: per channel the normalised error times the block's raw intensity variance,
      ``e_b = mean_c var_bc * mean_v (pred - t)^2``, i.e. the error of the prediction rescaled to the block's own
      intensity spread; flat blocks rank low.
    - ``raw``: ``e_b = mean_c mean_v (pred - x)^2`` against the raw intensities (the official AnatoMask code's
      scoring; the network still predicts normalised targets, so bright blocks weigh most).

    Averaged over channels and the real voxels of each block, like ``per_block_reconstruction_error``.
    """
    if ranking == "normalised":
        return per_block_reconstruction_error(pred, x, block, eps)
    if ranking not in ANATOMASK_RANKINGS:
        raise ValueError(f"block_ranking_errors: ranking must be one of {ANATOMASK_RANKINGS}, got '{ranking}'")
    block = _check_image_block(x, block, "block_ranking_errors")
    if pred.shape != x.shape:
        raise ValueError(f"block_ranking_errors: prediction {tuple(pred.shape)} must have the image's shape "
                         f"{tuple(x.shape)} (network output channels = input channels)")
    xb, valid = blockify(x.float(), block)
    pb, _ = blockify(pred.float(), block)
    if ranking == "raw":
        err = _block_mse(pb, xb, valid)
    else:
        mean, var = _block_mean_var(xb, valid)
        err = _block_mse(pb, (xb - mean[..., None]) / torch.sqrt(var[..., None] + eps), valid) * var
    return err.mean(1).reshape(x.shape[0], *grid_shape(x.shape[2:], block))


@torch.no_grad()
def teacher_block_errors(teacher: Callable, x: torch.Tensor, mask: torch.Tensor, block: Sequence[int],
                         eps: float = 1e-6, ranking: str = "normalised") -> torch.Tensor:
    """Per-block error ``(B, *grid)`` of ``teacher(x, mask=mask)`` (no gradients), scored by ``block_ranking_errors``
    with ``ranking``.

    Our networks' convention is ``forward(x, mask=None)``; a list/tuple output (deep
    supervision) uses its first, full-resolution entry.
    """
    _check_mask(mask, x, block, "teacher_block_errors")
    if ranking not in ANATOMASK_RANKINGS:  # before the teacher's forward pass
        raise ValueError(f"teacher_block_errors: ranking must be one of {ANATOMASK_RANKINGS}, got '{ranking}'")
    pred = teacher(x, mask=mask)
    if isinstance(pred, (list, tuple)):
        pred = pred[0]
    return block_ranking_errors(pred.float(), x, block, ranking, eps)


def anatomask_select(teacher: Callable, x: torch.Tensor, base_mask: torch.Tensor, block: Sequence[int],
                     epoch: int, num_epochs: int, r_max: float = 0.5, schedule: str = "easy_to_hard",
                     generator: Optional[torch.Generator] = None, eps: float = 1e-6, ranking: str = "normalised"
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """One AnatoMask selection: teacher errors on M1 (scored by ``ranking``, see ``block_ranking_errors``),
    masking dynamics ratio, hard + random blocks.

    Returns ``(mask, hard)`` as ``anatomask_mask``.
    """
    errors = teacher_block_errors(teacher, x, base_mask, block, eps, ranking)
    r = masking_dynamics_ratio(epoch, num_epochs, r_max, schedule)
    return anatomask_mask(base_mask, errors, r, generator)


# ------------------------------------------------------------------------------------------- MPS-AMS
def adaptive_mask_ratio(epoch: int, num_epochs: int, ratio_start: float = 0.25, ratio_end: float = 0.75) -> float:
    """MPS-AMS adaptive masking ratio: linear from ``ratio_start`` (epoch 0) to ``ratio_end`` (last epoch).

    Reconstruction of Wang et al., ICASSP 2023 (no public code): the ratio rises during
    training instead of a fixed high ratio. ``num_epochs <= 1`` gives ``ratio_end``.
    """
    for r in (ratio_start, ratio_end):
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"adaptive_mask_ratio: ratios must lie in [0, 1], got {ratio_start}, {ratio_end}")
    if num_epochs <= 1:
        return float(ratio_end)
    t = min(max(epoch / (num_epochs - 1), 0.0), 1.0)
    return float(ratio_start + (ratio_end - ratio_start) * t)


def block_statistics(x: torch.Tensor, block: Sequence[int]) -> torch.Tensor:
    """Intensity features per block: mean and standard deviation of every channel, ``(B, N, 2C)``."""
    xb, valid = blockify(x.float(), block)
    mean, var = _block_mean_var(xb, valid)  # (B, C, N)
    return torch.cat([mean, var.sqrt()], dim=1).transpose(1, 2)


def _multinomial(weights: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One index per row drawn with probability proportional to ``weights`` (B, N); uniform if a row is all 0."""
    w = weights.double()
    w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))
    if generator is None:
        return torch.multinomial(w, 1)[:, 0]
    return torch.multinomial(w.to(generator.device), 1, generator=generator)[:, 0].to(weights.device)


def kmeans(features: torch.Tensor, k: int, iters: int = 10, generator: Optional[torch.Generator] = None,
           valid: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched k-means per item: ``features`` ``(B, N, F)`` -> ``(assign (B, N), centers (B, k, F),
    counts (B, k))``.

    k-means++ seeding (first centre uniform, each next one drawn with probability proportional to the squared
    distance to the nearest chosen centre; seeded by ``generator``), then ``iters`` Lloyd iterations. An empty
    cluster keeps its previous centre and has count 0. ``k`` is capped at ``N``.

    ``valid`` (optional bool ``(B, N)``): only these points seed, move and count in the clusters; the others are
    still assigned to their nearest centre but never counted (``None`` = every point).
    """
    B, N, Fdim = features.shape
    k = max(1, min(int(k), N))
    features = features.float()
    w = None if valid is None else valid.to(features.dtype)
    idx = _multinomial(torch.ones((B, N), device=features.device) if w is None else w, generator)
    centers = [features[torch.arange(B, device=features.device), idx]]
    d2 = ((features - centers[0][:, None]) ** 2).sum(-1)
    if w is not None:
        d2 = d2 * w
    for _ in range(1, k):
        idx = _multinomial(d2, generator)
        centers.append(features[torch.arange(B, device=features.device), idx])
        d2 = torch.minimum(d2, ((features - centers[-1][:, None]) ** 2).sum(-1))
        if w is not None:
            d2 = d2 * w
    centers = torch.stack(centers, 1)  # (B, k, F)
    for _ in range(max(int(iters), 0) + 1):
        assign = torch.cdist(features, centers).argmin(-1)  # (B, N)
        onehot = F.one_hot(assign, k).to(features.dtype)  # (B, N, k)
        if w is not None:
            onehot = onehot * w[..., None]
        counts = onehot.sum(1)  # (B, k)
        new_centers = onehot.transpose(1, 2) @ features / counts.clamp_min(1)[..., None]
        centers = torch.where(counts[..., None] > 0, new_centers, centers)
    return assign, centers, counts


def lesion_candidate_blocks(x: torch.Tensor, block: Sequence[int], flat_std_fraction: float = 0.05,
                            min_nonzero_fraction: float = 0.5) -> torch.Tensor:
    """Blocks that may be lesion-like, ``(B, *grid)`` bool: inside the image's foreground and not near-constant.

    A block is left out when (i) fewer than ``min_nonzero_fraction`` of its real voxels are nonzero (a voxel is
    zero when it is exactly 0 in every channel: nnU-Net sets everything outside the nonzero mask to 0 when it
    normalises with the mask, and crops are padded with 0), or (ii) in every channel its standard deviation is at
    most ``flat_std_fraction`` times the image's (population standard deviations over the real voxels of the block
    and over the whole image).
    Without this, the rarest k-means cluster of real scans is often padding, air or a constant background.
    """
    block = _check_image_block(x, block, "lesion_candidate_blocks")
    if not 0.0 <= min_nonzero_fraction <= 1.0 or flat_std_fraction < 0.0:
        raise ValueError(f"lesion_candidate_blocks: min_nonzero_fraction must lie in [0, 1] and flat_std_fraction "
                         f"be >= 0, got {min_nonzero_fraction}, {flat_std_fraction}")
    xf = x.float()
    xb, valid = blockify(xf, block)
    _, var = _block_mean_var(xb, valid)  # (B, C, N)
    image_std = xf.std(dim=tuple(range(2, x.ndim)), unbiased=False)  # (B, C)
    flat = (var.sqrt() <= flat_std_fraction * image_std[..., None]).all(1)  # (B, N)
    w = valid.to(xf.dtype)
    nonzero = ((xb != 0).any(1).to(xf.dtype) * w).sum(-1) / w.sum(-1)  # (B, N) share of nonzero voxels
    candidate = ~flat & (nonzero >= min_nonzero_fraction)
    return candidate.reshape(x.shape[0], *grid_shape(x.shape[2:], block))


def lesion_like_blocks(x: torch.Tensor, block: Sequence[int], n_clusters: int = 4, n_lesion_clusters: int = 1,
                       kmeans_iters: int = 10, generator: Optional[torch.Generator] = None,
                       candidates: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MPS-AMS's unsupervised masked-patch selection: lesion-like blocks ``(B, *grid)`` bool (no labels read).

    Reconstruction: per image, block features = per-channel mean and std
    (``block_statistics``) of the image standardised per channel (so one intensity scale for both features:
    z-scoring every feature on its own would blow noise-level differences of block std up to the size of
    real contrast); ``kmeans`` with ``n_clusters``; clusters are
    ranked rarest first (fewest blocks; ties: centre farthest from the image's mean feature, i.e. most
    atypical), empty clusters last; blocks of the first ``n_lesion_clusters`` clusters are lesion-like.

    ``candidates`` (optional bool ``(B, *grid)``, e.g. ``lesion_candidate_blocks``): only these blocks are
    clustered and can be lesion-like; ``None`` = every block.
    """
    block = _check_image_block(x, block, "lesion_like_blocks")
    grid = grid_shape(x.shape[2:], block)
    valid = None
    if candidates is not None:
        if tuple(candidates.shape) != (x.shape[0], *grid) or candidates.dtype != torch.bool:
            raise ValueError(f"lesion_like_blocks: candidates must be bool (B, *grid) = {(x.shape[0], *grid)}, got "
                             f"{candidates.dtype} {tuple(candidates.shape)}")
        valid = candidates.reshape(x.shape[0], -1).to(x.device)
    xf = x.float()
    dims = tuple(range(2, x.ndim))
    scale = xf.std(dim=dims, unbiased=False, keepdim=True) + 1e-6  # (B, C, 1, ...) image intensity scale
    feats = block_statistics((xf - xf.mean(dim=dims, keepdim=True)) / scale, block)
    assign, centers, counts = kmeans(feats, n_clusters, kmeans_iters, generator, valid)
    atypical = torch.sort(centers.norm(dim=-1), dim=1, descending=True, stable=True).indices  # (B, k)
    size = torch.gather(torch.where(counts > 0, counts, torch.full_like(counts, float("inf"))), 1, atypical)
    order = torch.gather(atypical, 1, torch.sort(size, dim=1, stable=True).indices)  # rarest first
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=x.device).expand_as(order).contiguous())
    lesion_cluster = (rank < n_lesion_clusters) & (counts > 0)
    lesion = torch.gather(lesion_cluster, 1, assign)
    if valid is not None:
        lesion = lesion & valid
    return lesion.reshape(x.shape[0], *grid)


def mpsams_mask(x: torch.Tensor, block: Sequence[int], ratio: float, generator: Optional[torch.Generator] = None,
                n_clusters: int = 4, n_lesion_clusters: int = 1, kmeans_iters: int = 10,
                lesion_fraction: float = 1.0, exclude_flat: bool = False, flat_std_fraction: float = 0.05,
                min_nonzero_fraction: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """MPS-AMS mask: lesion-like blocks first, then random fill, exactly ``round(ratio * n_blocks)`` per image.

    The count is ``nnunetv2_advmim.methods.masking.num_masked_blocks`` (Python's ``round``), as for every mask.

    Up to ``floor(lesion_fraction * n_masked)`` lesion-like blocks (``lesion_like_blocks``; a random subset if
    there are more) are masked first; the remaining masked blocks are drawn uniformly among all other blocks.
    ``exclude_flat``: only ``lesion_candidate_blocks(x, block, flat_std_fraction, min_nonzero_fraction)`` are
    clustered and can be lesion-like (background/padding and near-constant blocks are not); they can still be
    drawn by the random fill. Use with ``adaptive_mask_ratio`` for the ratio. Returns ``(mask, lesion)``, both
    ``(B, *grid)`` bool.
    """
    if not 0.0 <= lesion_fraction <= 1.0:
        raise ValueError(f"mpsams_mask: lesion_fraction must lie in [0, 1], got {lesion_fraction}")
    candidates = lesion_candidate_blocks(x, block, flat_std_fraction, min_nonzero_fraction) if exclude_flat else None
    lesion = lesion_like_blocks(x, block, n_clusters, n_lesion_clusters, kmeans_iters, generator, candidates)
    B = x.shape[0]
    les = lesion.reshape(B, -1)
    n = les.shape[1]
    n_masked = num_masked_blocks((n,), ratio)
    quota = int(math.floor(lesion_fraction * n_masked + 1e-9))
    r1 = _rand(les.shape, generator, x.device)
    chosen_lesion = les & (_ranks(torch.where(les, r1, torch.full_like(r1, -1.0))) < quota)
    counts = torch.full((B,), n_masked, dtype=torch.long, device=x.device)
    mask = _select(chosen_lesion, _rand(les.shape, generator, x.device), counts)
    return mask.reshape(lesion.shape), lesion
