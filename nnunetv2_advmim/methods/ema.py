"""EMA teacher for AnatoMask pretraining (Li et al., ECCV 2024).

``theta_teacher <- d(s) * theta_teacher + (1 - d(s)) * theta_student`` after every optimizer step ``s``, with the
decay rising linearly from ``decay_start`` (0.999) to ``decay_end`` (0.9999) over the first ``ramp_fraction``
(a quarter) of all training iterations and constant afterwards. Buffers (e.g. norm statistics) are copied
from the student. The teacher never receives gradients and stays in eval mode.
"""
import copy
from typing import Any, Dict

import torch
from torch import nn

from nnunetv2_advmim.wrappers import unwrap_model

__all__ = ["EMATeacher", "ema_decay"]


def ema_decay(step: int, total_steps: int, decay_start: float = 0.999, decay_end: float = 0.9999,
              ramp_fraction: float = 0.25) -> float:
    """Decay at update ``step`` (0-based): linear from ``decay_start`` at step 0 to ``decay_end`` at
    ``ramp_fraction * total_steps``, ``decay_end`` afterwards."""
    ramp = ramp_fraction * total_steps
    if ramp <= 0:
        return float(decay_end)
    t = min(max(step / ramp, 0.0), 1.0)
    return float(decay_start + (decay_end - decay_start) * t)


class EMATeacher:
    """Exponential-moving-average copy of a student network with AnatoMask's decay schedule.

    Args:
        student: the network being trained (DDP/compiled wrappers are unwrapped); deep-copied once.
        total_steps: number of updates in the whole training (``num_epochs * num_iterations_per_epoch``).
        decay_start, decay_end, ramp_fraction: schedule of ``ema_decay``.

    Call ``update(student)`` once after every optimizer step. ``state_dict()``/``load_state_dict()`` hold the
    teacher weights and the step counter, so a resumed training continues the same schedule.
    """

    def __init__(self, student: nn.Module, total_steps: int, decay_start: float = 0.999,
                 decay_end: float = 0.9999, ramp_fraction: float = 0.25):
        if not (0.0 <= decay_start <= 1.0 and 0.0 <= decay_end <= 1.0):
            raise ValueError(f"EMATeacher: decays must lie in [0, 1], got {decay_start}, {decay_end}")
        if total_steps < 1:
            raise ValueError(f"EMATeacher: total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.decay_start = float(decay_start)
        self.decay_end = float(decay_end)
        self.ramp_fraction = float(ramp_fraction)
        self.step = 0
        self.teacher = copy.deepcopy(unwrap_model(student))
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    @property
    def decay(self) -> float:
        """The decay the next ``update`` will use."""
        return ema_decay(self.step, self.total_steps, self.decay_start, self.decay_end, self.ramp_fraction)

    @torch.no_grad()
    def update(self, student: nn.Module) -> float:
        """One EMA update from ``student``; returns the decay used and advances the step counter."""
        d = self.decay
        student = unwrap_model(student)
        s_params = dict(student.named_parameters())
        for name, t_p in self.teacher.named_parameters():
            s_p = s_params[name].detach()
            t_p.mul_(d).add_(s_p.to(t_p.dtype), alpha=1.0 - d)
        s_buffers = dict(student.named_buffers())
        for name, t_b in self.teacher.named_buffers():
            t_b.copy_(s_buffers[name])
        self.step += 1
        return d

    def __call__(self, *args, **kwargs):
        return self.teacher(*args, **kwargs)

    def to(self, *args, **kwargs) -> "EMATeacher":
        self.teacher.to(*args, **kwargs)
        return self

    def state_dict(self) -> Dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "step": self.step, "total_steps": self.total_steps,
                "decay_start": self.decay_start, "decay_end": self.decay_end, "ramp_fraction": self.ramp_fraction}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        missing = {"teacher", "step"} - set(state)
        if missing:
            raise KeyError(f"EMATeacher.load_state_dict: checkpoint entry lacks {sorted(missing)}; it was not "
                           f"written by EMATeacher.state_dict()")
        self.teacher.load_state_dict(state["teacher"])
        self.step = int(state["step"])
        for key in ("total_steps", "decay_start", "decay_end", "ramp_fraction"):
            if key in state:
                setattr(self, key, type(getattr(self, key))(state[key]))
