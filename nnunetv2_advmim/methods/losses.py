"""AdvMIM's unsupervised loss terms on plain tensors.

Per network N with partner O (``p`` = softmax over the channel axis, ``N^m`` = masked forward)::

    L_N = DCCE(N(x_l), y_l) + DCCE(N^m(x_l), y_l)                        <- nnU-Net's own loss (trainer)
        + lambda_u   * [wCE(N^m(x_u), y_O; w_O) + wDice(N^m(x_u), y_O; w_O)]   <- masked domain, unlabeled
        + lambda_ct(t) * Dice(N(x_u), y_O)                                    <- cross teaching (CTCT)
        + lambda_adv * mean((D_N(p(N^m(x_u))) - 1)^2)                         <- least-squares GAN

with the pseudo-label ``y_O = argmax p(O(x_u))`` and certainty ``w_O = max p(O(x_u))``, both detached.
The supervised DCCE terms are nnU-Net's ``DC_and_CE_loss`` with its deep-supervision wrapper and are not
rewritten here.

Conventions: logits are ``(B, K, *spatial)``; pseudo-labels and certainties use nnU-Net's target layout
``(B, 1, *spatial)`` (labels as ``torch.long``). Every function works for 2D and 3D.

Reuse of nnU-Net: the soft Dice is nnU-Net's ``MemoryEfficientSoftDiceLoss``. Its ``loss_mask`` argument
multiplies prediction and one-hot target voxel-wise in all three sums (intersection, prediction, target),
so a float certainty map passed as ``loss_mask`` is exactly the certainty-weighted soft Dice
``1 - mean_k (2 sum w p_k y_k + s) / (sum w p_k + sum w y_k + s)``; we only turn nnU-Net's ``-dice`` into
``1 - dice`` (a loss that is 0 at perfect agreement). nnU-Net's cross-entropy (``RobustCrossEntropyLoss``)
has no per-voxel weights, so the weighted CE is written here.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1

__all__ = [
    "pseudo_labels_and_certainty",
    "certainty_weighted_ce",
    "certainty_weighted_dice",
    "cross_teaching_dice",
]


def _check_logits_target(logits: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if logits.ndim not in (4, 5):
        raise ValueError(f"{what}: logits must be (B, K, X, Y) or (B, K, X, Y, Z), got shape {tuple(logits.shape)}")
    expected = (logits.shape[0], 1, *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"{what}: pseudo-labels/weights must have shape {expected} (nnU-Net target layout "
                         f"(B, 1, *spatial)), got {tuple(target.shape)}")


@torch.no_grad()
def pseudo_labels_and_certainty(logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-label ``argmax p(O(x_u))`` and certainty ``max p(O(x_u))`` of a partner's logits.

    Both are detached (computed under ``no_grad``). Returns ``(labels, certainty)``, each ``(B, 1, *spatial)``;
    labels are ``torch.long``, certainty is float32 in ``[1/K, 1]``.
    """
    probs = torch.softmax(logits.float(), dim=1)
    certainty, labels = probs.max(dim=1, keepdim=True)
    return labels.long(), certainty


def certainty_weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                          eps: float = 1e-8, ddp: bool = False) -> torch.Tensor:
    """Certainty-weighted cross-entropy ``wCE = sum_v w_v CE_v / sum_v w_v``.

    ``logits`` (B, K, *spatial); ``labels`` (B, 1, *spatial) integer class indices; ``weights`` (B, 1, *spatial)
    non-negative voxel weights (the partner's certainty). Normalised by the sum of the weights over the whole
    batch (``eps`` guards an all-zero weight map, which gives 0). Computed in float32 so AMP does not lose it.

    ``ddp=True`` (under ``torch.distributed`` with several processes): the whole batch is every rank's part, so
    the denominator is the mean over ranks of the weight sums (one all-reduce of a detached scalar). DDP averages
    the gradients of the ranks, so the result is exactly the gradient of ``wCE`` over the concatenated batch, as
    nnU-Net's batch Dice does with ``ddp=True``; each rank's value is its share (their mean is the global wCE).
    """
    _check_logits_target(logits, labels, "certainty_weighted_ce")
    _check_logits_target(logits, weights, "certainty_weighted_ce")
    ce = F.cross_entropy(logits.float(), labels[:, 0].long(), reduction="none")
    w = weights[:, 0].detach().float()
    w_sum = w.sum()
    if ddp and torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(w_sum)
        w_sum = w_sum / torch.distributed.get_world_size()
    return (ce * w).sum() / w_sum.clamp_min(eps)


def certainty_weighted_dice(logits: torch.Tensor, labels: torch.Tensor, weights: Optional[torch.Tensor] = None,
                            do_bg: bool = True, batch_dice: bool = False, smooth: float = 1e-5) -> torch.Tensor:
    """Certainty-weighted soft Dice loss ``1 - mean_k (2 sum w p_k y_k + s) / (sum w p_k + sum w y_k + s)``.

    ``wDice`` of AdvMIM; with ``weights=None`` it is the plain soft Dice used for cross teaching.
    ``p = softmax(logits)``; ``y`` the one-hot pseudo-label; sums over the spatial axes per sample and class
    (over the batch as well with ``batch_dice``), then the mean over classes (and samples). ``do_bg=True``
    keeps the background class, as the CNN-Transformer cross-teaching losses of CTCT/AdvMIM do; nnU-Net's own
    supervised Dice excludes it (``do_bg=False``). Implemented by nnU-Net's ``MemoryEfficientSoftDiceLoss``
    with the weights as ``loss_mask`` (see module docstring), ``ddp=False`` (no cross-GPU gathering).
    """
    _check_logits_target(logits, labels, "certainty_weighted_dice")
    if weights is not None:
        _check_logits_target(logits, weights, "certainty_weighted_dice")
        weights = weights.detach().float()
    dice = MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, batch_dice=batch_dice, do_bg=do_bg,
                                       smooth=smooth, ddp=False)
    return 1 + dice(logits.float(), labels.long(), loss_mask=weights)


def cross_teaching_dice(logits: torch.Tensor, labels: torch.Tensor, do_bg: bool = True, smooth: float = 1e-5,
                        batch_dice: bool = False) -> torch.Tensor:
    """Cross-teaching Dice ``Dice(N(x_u), y_O)`` on the partner's hard pseudo-labels (CTCT).

    Unweighted soft Dice loss (``certainty_weighted_dice`` with ``weights=None``), background included.
    """
    return certainty_weighted_dice(logits, labels, None, do_bg=do_bg, batch_dice=batch_dice, smooth=smooth)
