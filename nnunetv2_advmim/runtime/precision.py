"""Mixed precision and the optimizer step every trainer runs: scale, unscale, clip, check, step.

:func:`amp_dtype` turns an ``amp`` setting into an autocast dtype (:func:`autocast_context` enters it);
:func:`guarded_step` is the one sequence that
applies gradients, used for networks and discriminators alike::

    backward (scaled under fp16) -> unscale -> clip -> one finiteness check (agreed by all DDP ranks)
        -> step -> scaler update

It returns whether the optimizers stepped: False for a step the check rejected and for a step the fp16 gradient
scaler skipped (inf gradients after scaling), so work that must follow only applied steps (an EMA teacher update,
the AdvMIM discriminator step) can depend on it.
"""
import contextlib
from typing import Dict, Optional

import torch

from nnunetv2_advmim.runtime.numerics import NonFiniteGuard, all_ranks_agree_finite

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
NNUNET_GRAD_CLIP = 12.0  # nnU-Net's gradient-norm clipping in its train_step; our trainers keep it


def autocast_context(dtype: Optional[torch.dtype], device: torch.device):
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op context for float32 (``dtype`` None)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype for an ``amp`` setting ('auto': bf16 where the GPU supports it, else fp16; 'bf16'; 'fp16';
    'off'); None = float32. AMP is only used on CUDA, as nnU-Net does."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def scaled_backward(loss: torch.Tensor, scaler: Optional[torch.amp.GradScaler]) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def guarded_step(optimizers: Dict[str, torch.optim.Optimizer], scaler: Optional[torch.amp.GradScaler],
                 losses: Optional[Dict[str, torch.Tensor]] = None, clip: Optional[float] = None,
                 guard: Optional[NonFiniteGuard] = None, checked: Optional[Dict[str, torch.Tensor]] = None) -> bool:
    """Apply the gradients of one training step to ``optimizers`` (name -> optimizer); returns whether it stepped.

    ``losses`` (name -> loss): backwarded here first (scaled by ``scaler`` under fp16); leave out when the caller
    has backwarded already. ``clip``: gradient-norm clipping of each optimizer's parameters. ``guard``: one host
    synchronisation checks ``checked`` (name -> scalar, e.g. loss terms) and, without a scaler, every clipped
    gradient norm (``<name>_grad_norm``); without a guard the same values are checked without counting. Either
    way the verdict is agreed by all DDP ranks. Under fp16 an inf gradient is the GradScaler's business (it skips
    the step and lowers the scale; reported as False and counted by the guard as ``scaler_skipped``). A rejected
    or skipped step leaves weights and optimizer states untouched.
    """
    for loss in (losses or {}).values():
        scaled_backward(loss, scaler)
    checked = dict(checked or {})
    if clip is not None:
        for name, opt in optimizers.items():
            if scaler is not None:
                scaler.unscale_(opt)
            params = [p for group in opt.param_groups for p in group["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
            if scaler is None:
                checked[f"{name}_grad_norm" if name else "grad_norm"] = norm
    ok = guard.step_ok(checked) if guard is not None else all_ranks_agree_finite(checked)
    if ok:
        for opt in optimizers.values():
            scaler.step(opt) if scaler is not None else opt.step()
    if scaler is not None:
        if not ok and clip is None:
            # update() needs the inf checks that unscale_ (run above when clipping) or step records
            for opt in optimizers.values():
                scaler.unscale_(opt)
        scale = scaler.get_scale()
        scaler.update()
        if ok and scaler.get_scale() < scale:  # the scaler found inf gradients and skipped the step
            ok = False
            if guard is not None:
                guard.note_scaler_skip()
    return ok
