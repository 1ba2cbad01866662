"""Learning-rate and loss-weight schedules, each a pure function of the step or epoch (a resumed run continues
the same schedule).

- :func:`sigmoid_rampup`: the ramp-up of AdvMIM's cross-teaching weight ``lambda_ct``;
- :func:`warmup_poly_lr` / :class:`EpochLR`: warm-up + poly decay of AdvMIM's hybrid branch and of fine-tuning with
  a warm-up (:func:`warmup_epochs_for` picks its length);
- :func:`warmup_cosine_lr` / :class:`WarmupCosineLRScheduler`: warm-up + cosine decay of MIM pretraining;
- :func:`sgd_poly` and :func:`adamw_warmup_poly`: an optimizer with its schedule (AdvMIM's C and S).
"""
import math
from typing import Callable, Optional

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from torch.optim.lr_scheduler import _LRScheduler


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Sigmoid ramp-up ``exp(-5 (1 - t)^2)`` with ``t = clip(current / rampup_length, 0, 1)`` .

    Laine & Aila's schedule used by CTCT/AdvMIM for lambda_ct. ``rampup_length <= 0`` means no ramp (1.0).
    Goes from ``exp(-5) ~ 0.0067`` at ``current = 0`` to 1.0 at ``current >= rampup_length``.
    """
    if rampup_length <= 0:
        return 1.0
    t = min(max(float(current) / float(rampup_length), 0.0), 1.0)
    return float(torch.exp(torch.tensor(-5.0 * (1.0 - t) ** 2, dtype=torch.float64)))


def warmup_poly_lr(epoch: int, num_epochs: int, initial_lr: float, warmup_epochs: int, exponent: float = 0.9) -> float:
    """Linear warm-up to ``initial_lr`` over ``warmup_epochs`` then nnU-Net's poly decay to 0 (hybrid branch S).

    ``lr = initial_lr * (epoch + 1) / warmup_epochs`` for ``epoch < warmup_epochs``, then
    ``initial_lr * (1 - (epoch - warmup) / (num_epochs - warmup)) ** exponent`` (nnU-Net's
    ``Lin_incr_LRScheduler`` followed by ``PolyLRScheduler_offset``, as its Primus transformer trainers use).
    A pure function of the epoch, so a resumed run continues the same schedule.
    """
    if epoch < warmup_epochs:
        return initial_lr * (epoch + 1) / warmup_epochs
    span = max(1, num_epochs - warmup_epochs)
    return initial_lr * max(0.0, 1 - (epoch - warmup_epochs) / span) ** exponent


def warmup_epochs_for(num_epochs: int, warmup_epochs: Optional[int] = None, fraction: float = 0.1) -> int:
    """Warm-up length in epochs: ``warmup_epochs`` when given, else ``floor(fraction * num_epochs)``; at least 1
    and at most ``num_epochs`` (1000 epochs, fraction 0.1 -> 100; 5 epochs -> 1)."""
    w = int(warmup_epochs) if warmup_epochs is not None else int(math.floor(fraction * num_epochs + 1e-9))
    return max(1, min(w, int(num_epochs)))


class EpochLR:
    """Sets the learning rate of an optimizer from ``fn(epoch)`` at ``step(epoch)`` (nnU-Net's scheduler protocol)."""

    def __init__(self, optimizer: torch.optim.Optimizer, fn: Callable[[int], float]):
        self.optimizer = optimizer
        self.fn = fn
        self.step(0)

    def step(self, current_step: int = 0) -> None:
        lr = self.fn(int(current_step))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]


def warmup_cosine_lr(step: int, initial_lr: float, max_steps: int, warmup_steps: int) -> float:
    """AnatoMask's schedule: ``lr * (step + 1) / warmup`` during the first ``warmup_steps``
    steps, then ``lr * 0.5 * (1 + cos(pi * (step - warmup) / (max_steps - warmup)))``."""
    warmup_steps = max(0, min(int(warmup_steps), int(max_steps) - 1))
    if step < warmup_steps:
        return initial_lr * (step + 1) / warmup_steps
    span = max(1, int(max_steps) - warmup_steps)
    t = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return initial_lr * 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupCosineLRScheduler(_LRScheduler):
    """Per-epoch warm-up + cosine scheduler with the interface of nnU-Net's ``PolyLRScheduler``
    (``step(current_epoch)`` sets the lr of every parameter group)."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_steps: int = 20,
                 current_step: Optional[int] = None):
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.warmup_steps = warmup_steps
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = warmup_cosine_lr(current_step, self.initial_lr, self.max_steps, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return self._last_lr


def sgd_poly(params, lr: float, num_epochs: int, weight_decay: float, momentum: float, nesterov: bool):
    """(SGD, nnU-Net's poly schedule): nnU-Net's optimizer with the given momentum settings."""
    opt = torch.optim.SGD(params, lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)
    return opt, PolyLRScheduler(opt, lr, num_epochs)


def adamw_warmup_poly(params, lr: float, num_epochs: int, weight_decay: float, betas, warmup_fraction: float):
    """(AdamW, linear warm-up over ``warmup_fraction`` of the epochs (at least one) then poly decay): the settings
    of nnU-Net's transformer (Primus) trainers."""
    opt = torch.optim.AdamW(params, lr, betas=betas, weight_decay=weight_decay)
    warmup = max(1, int(round(warmup_fraction * num_epochs)))
    return opt, EpochLR(opt, lambda e: warmup_poly_lr(e, num_epochs, lr, warmup))


def keep_warmup_share(trainer, choices: dict) -> dict:
    """``choices`` (a variant's attributes) plus ``warmup_epochs`` rescaled to keep its share of the schedule when
    ``choices`` change ``num_epochs`` and the trainer's warm-up is a number of epochs (``None``, a share of
    ``num_epochs`` resolved later, is left alone), at least one epoch."""
    epochs, warmup = choices.get("num_epochs"), getattr(trainer, "warmup_epochs", None)
    if epochs is None or warmup is None or "warmup_epochs" in choices:
        return choices
    return {**choices, "warmup_epochs": max(1, round(warmup * epochs / trainer.num_epochs))}
