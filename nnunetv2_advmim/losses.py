"""AdvMIM's unsupervised loss terms on plain tensors (DESIGN.md section 6).

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
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1

from nnunetv2_advmim.adversarial import lsgan_generator_loss

__all__ = [
    "pseudo_labels_and_certainty",
    "certainty_weighted_ce",
    "certainty_weighted_dice",
    "cross_teaching_dice",
    "sigmoid_rampup",
    "advmim_unsupervised_losses",
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
    """Pseudo-label ``argmax p(O(x_u))`` and certainty ``max p(O(x_u))`` of a partner's logits (DESIGN.md s. 6).

    Both are detached (computed under ``no_grad``). Returns ``(labels, certainty)``, each ``(B, 1, *spatial)``;
    labels are ``torch.long``, certainty is float32 in ``[1/K, 1]``.
    """
    probs = torch.softmax(logits.float(), dim=1)
    certainty, labels = probs.max(dim=1, keepdim=True)
    return labels.long(), certainty


def certainty_weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                          eps: float = 1e-8) -> torch.Tensor:
    """Certainty-weighted cross-entropy ``wCE = sum_v w_v CE_v / sum_v w_v`` (DESIGN.md section 6).

    ``logits`` (B, K, *spatial); ``labels`` (B, 1, *spatial) integer class indices; ``weights`` (B, 1, *spatial)
    non-negative voxel weights (the partner's certainty). Normalised by the sum of the weights over the whole
    batch (``eps`` guards an all-zero weight map, which gives 0). Computed in float32 so AMP does not lose it.
    """
    _check_logits_target(logits, labels, "certainty_weighted_ce")
    _check_logits_target(logits, weights, "certainty_weighted_ce")
    ce = F.cross_entropy(logits.float(), labels[:, 0].long(), reduction="none")
    w = weights[:, 0].detach().float()
    return (ce * w).sum() / w.sum().clamp_min(eps)


def certainty_weighted_dice(logits: torch.Tensor, labels: torch.Tensor, weights: Optional[torch.Tensor] = None,
                            do_bg: bool = True, batch_dice: bool = False, smooth: float = 1e-5) -> torch.Tensor:
    """Certainty-weighted soft Dice loss ``1 - mean_k (2 sum w p_k y_k + s) / (sum w p_k + sum w y_k + s)``.

    DESIGN.md section 6 (``wDice``); with ``weights=None`` it is the plain soft Dice used for cross teaching.
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


def cross_teaching_dice(logits: torch.Tensor, labels: torch.Tensor, do_bg: bool = True,
                        smooth: float = 1e-5) -> torch.Tensor:
    """Cross-teaching Dice ``Dice(N(x_u), y_O)`` on the partner's hard pseudo-labels (CTCT; DESIGN.md s. 6).

    Unweighted soft Dice loss (``certainty_weighted_dice`` with ``weights=None``), background included.
    """
    return certainty_weighted_dice(logits, labels, None, do_bg=do_bg, smooth=smooth)


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Sigmoid ramp-up ``exp(-5 (1 - t)^2)`` with ``t = clip(current / rampup_length, 0, 1)`` (DESIGN.md s. 6).

    Laine & Aila's schedule used by CTCT/AdvMIM for lambda_ct. ``rampup_length <= 0`` means no ramp (1.0).
    Goes from ``exp(-5) ~ 0.0067`` at ``current = 0`` to 1.0 at ``current >= rampup_length``.
    """
    if rampup_length <= 0:
        return 1.0
    t = min(max(float(current) / float(rampup_length), 0.0), 1.0)
    return float(torch.exp(torch.tensor(-5.0 * (1.0 - t) ** 2, dtype=torch.float64)))


def advmim_unsupervised_losses(logits_u_masked: torch.Tensor, logits_u: Optional[torch.Tensor],
                               partner_logits_u: torch.Tensor,
                               discriminator: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                               lambda_u: float = 1.0, lambda_ct: float = 0.1, lambda_adv: float = 0.001,
                               rampup: float = 1.0, do_bg: bool = True) -> Dict[str, torch.Tensor]:
    """The unlabeled part of AdvMIM's loss ``L_N`` for one network N (DESIGN.md section 6).

    Args:
        logits_u_masked: ``N^m(x_u)``, full-resolution logits of the masked unlabeled batch.
        logits_u: ``N(x_u)``, full-resolution logits of the unmasked unlabeled batch (None: no cross teaching,
            e.g. when ``lambda_ct`` is 0 and the trainer skips that forward).
        partner_logits_u: ``O(x_u)``, the partner's unmasked logits on the same batch; pseudo-labels and
            certainty are taken from it under ``no_grad``.
        discriminator: ``D_N`` (called on ``softmax(logits_u_masked)``); None or ``lambda_adv == 0`` skips the
            adversarial term (CTCT / no-adversarial ablations). The generator loss also produces gradients in
            D's parameters: zero D's gradients before its own step (see ``adversarial.py``).
        lambda_u, lambda_ct, lambda_adv: the weights of DESIGN.md section 6; ``rampup`` multiplies lambda_ct
            (``sigmoid_rampup`` of the training progress).

    Returns a dict of float32 tensors: ``masked_ce``, ``masked_dice``, ``cross_teaching``, ``adversarial``
    (unweighted terms; skipped terms are 0), ``certainty`` (mean partner certainty, detached, for logging)
    and ``total`` = the weighted sum to add to the supervised DCCE terms.
    """
    labels, certainty = pseudo_labels_and_certainty(partner_logits_u)
    zero = logits_u_masked.new_zeros((), dtype=torch.float32)
    out = {"masked_ce": zero, "masked_dice": zero, "cross_teaching": zero, "adversarial": zero}
    total = zero
    if lambda_u != 0:
        out["masked_ce"] = certainty_weighted_ce(logits_u_masked, labels, certainty)
        out["masked_dice"] = certainty_weighted_dice(logits_u_masked, labels, certainty, do_bg=do_bg)
        total = total + lambda_u * (out["masked_ce"] + out["masked_dice"])
    if lambda_ct != 0 and logits_u is not None:
        out["cross_teaching"] = cross_teaching_dice(logits_u, labels, do_bg=do_bg)
        total = total + lambda_ct * rampup * out["cross_teaching"]
    if lambda_adv != 0 and discriminator is not None:
        out["adversarial"] = lsgan_generator_loss(discriminator(torch.softmax(logits_u_masked.float(), dim=1)))
        total = total + lambda_adv * out["adversarial"]
    out["certainty"] = certainty.mean()
    out["total"] = total
    return out
