"""Numerical safety and reproducibility for long trainings.

``NonFiniteGuard`` checks the loss terms and gradient norms of one training step with a single host
synchronisation. A step with a non-finite term is skipped by the caller (no optimizer step, no EMA update, so
weights and optimizer states stay untouched), counted per term name and logged; after ``max_consecutive``
skipped steps in a row training stops with ``NonFiniteError`` naming the term(s) and the usual fixes.

Under DDP the decision is the ranks' joint one (:func:`all_ranks_agree_finite`, an all-reduce with MIN before any
rank steps or raises): a NaN on one rank makes every rank skip the step, so weights never diverge between ranks,
and the consecutive counters stay equal, so all ranks stop together instead of one rank leaving the others waiting
in the next collective. A step the fp16 gradient scaler skips (inf gradients after scaling) is counted apart
(``scaler_skipped``); it never stops training, the scaler lowers its scale and goes on.

``discriminator_collapsed`` flags adversarial training whose discriminator loss has stayed near zero for many
epochs (the LSGAN discriminator loss ``L_D`` sits near 0.1 * 0.25 * 2 when balanced; a
value near 0 means D separates the two domains perfectly or the adversarial term has vanished).

``enable_determinism`` / ``seed_from_env``: with ``nnUNet_advmim_seed=<int>`` set, our trainers
seed python/numpy/torch and switch torch to deterministic algorithms; together with ``nnUNet_n_proc_DA=0``
(augmentation in the training process: worker processes deliver batches in a non-deterministic order) two runs
on the CPU give identical losses.
"""
import math
import os
import random
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

__all__ = ["NonFiniteError", "NonFiniteGuard", "all_ranks_agree_finite", "ranks_agree", "discriminator_collapsed",
           "SEED_ENV", "seed_everything", "enable_determinism", "keep_cudnn_deterministic", "seed_from_env"]

SEED_ENV = "nnUNet_advmim_seed"

_FIX = ("lower the learning rate (initial_lr), check the input data for NaN/inf voxels, "
        "or disable mixed precision (AMP)")


def _distributed_world() -> int:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 1
    return torch.distributed.get_world_size()


def ranks_agree(local_ok: bool) -> bool:
    """``local_ok`` of every DDP rank combined with MIN (one all-reduce): True only if it is True on every rank.
    Without an initialised process group (or with one rank) it is ``local_ok``. Every rank must call it."""
    if _distributed_world() == 1:
        return bool(local_ok)
    dist = torch.distributed
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    flag = torch.tensor([1 if local_ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def all_ranks_agree_finite(terms: Dict[str, torch.Tensor]) -> bool:
    """True when every term (scalar tensors or numbers) is finite on every DDP rank (:func:`ranks_agree`); one host
    synchronisation for the local check."""
    tensors = [v.detach().float().reshape(-1) for v in terms.values() if isinstance(v, torch.Tensor)]
    numbers_ok = all(math.isfinite(float(v)) for v in terms.values() if not isinstance(v, torch.Tensor))
    tensors_ok = not tensors or bool(torch.isfinite(torch.cat([t.to(tensors[0].device) for t in tensors])).all())
    return ranks_agree(numbers_ok and tensors_ok)


class NonFiniteError(RuntimeError):
    """Raised when too many consecutive training steps had non-finite loss terms or gradients."""


class NonFiniteGuard:
    """Detects non-finite loss terms / gradient norms and decides whether a step may be applied.

    Args:
        max_consecutive: number of non-finite steps in a row after which ``NonFiniteError`` is raised
            (must be >= 1).
        log: callable taking one line of text (e.g. ``trainer.print_to_log_file``).

    Attributes:
        skipped: total number of skipped (non-finite) steps.
        consecutive: current number of non-finite steps in a row.
        counts: term name -> total number of steps in which that term was non-finite.
        consecutive_counts: term name -> number of non-finite occurrences in the current run of bad steps.
        steps: number of ``step_ok`` calls (used in the log line).
        scaler_skipped: steps the fp16 gradient scaler skipped after the guard let them pass
            (:meth:`note_scaler_skip`).
    """

    def __init__(self, max_consecutive: int = 20, log: Callable[[str], None] = print):
        if int(max_consecutive) < 1:
            raise ValueError(f"NonFiniteGuard: max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = int(max_consecutive)
        self.log = log
        self.skipped = 0
        self.consecutive = 0
        self.steps = 0
        self.counts: Dict[str, int] = {}
        self.consecutive_counts: Dict[str, int] = {}
        self.scaler_skipped = 0

    def note_scaler_skip(self) -> None:
        """Count a step the gradient scaler skipped (inf gradients under fp16); no error, the scale adapts."""
        self.scaler_skipped += 1

    def step_ok(self, terms: Dict[str, torch.Tensor]) -> bool:
        """True when every term is finite; otherwise count, log and return False (skip the step).

        ``terms`` maps names to scalar tensors (any device; python numbers are accepted too). All terms are
        checked with one ``torch.isfinite`` over a stacked tensor and a single host transfer; under DDP the
        verdict is then agreed by all ranks (:func:`ranks_agree`), so every rank must call this once per step.
        """
        step = self.steps
        self.steps += 1
        if not terms:
            ranks_agree(True)  # the other ranks may have terms: take part in the vote
            self.consecutive = 0
            self.consecutive_counts = {}
            return True
        names = list(terms.keys())
        values = []
        device = None
        for n in names:
            v = terms[n]
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise ValueError(f"NonFiniteGuard: term '{n}' must be a scalar tensor, got shape "
                                     f"{tuple(v.shape)}")
                device = v.device if device is None else device
        for n in names:
            v = terms[n]
            if isinstance(v, torch.Tensor):
                values.append(v.detach().reshape(()).to(device=device, dtype=torch.float32))
            else:
                values.append(torch.tensor(float(v), dtype=torch.float32, device=device))
        finite = torch.isfinite(torch.stack(values)).cpu()  # the one host sync
        if ranks_agree(bool(finite.all())):
            self.consecutive = 0
            self.consecutive_counts = {}
            return True
        bad = [n for n, ok in zip(names, finite.tolist()) if not ok] or ["(a value on another DDP rank)"]
        self.skipped += 1
        self.consecutive += 1
        for n in bad:
            self.counts[n] = self.counts.get(n, 0) + 1
            self.consecutive_counts[n] = self.consecutive_counts.get(n, 0) + 1
        self.log(f"non-finite {', '.join(bad)} at step {step}: step skipped "
                 f"({self.consecutive} in a row, {self.skipped} skipped in total)")
        if self.consecutive >= self.max_consecutive:
            worst = sorted(self.consecutive_counts.items(), key=lambda kv: -kv[1])
            named = ", ".join(f"{n} ({c}x)" for n, c in worst)
            raise NonFiniteError(
                f"{self.consecutive} consecutive training steps had non-finite values (last at step {step}): "
                f"{named}. Training stopped. Fix: {_FIX}; then resume with --c from the last checkpoint.")
        return False

    def state_dict(self) -> dict:
        """Plain ints and a name -> int dict (loads with ``torch.load(weights_only=True)``)."""
        return {"max_consecutive": self.max_consecutive, "skipped": self.skipped, "consecutive": self.consecutive,
                "steps": self.steps, "counts": dict(self.counts),
                "consecutive_counts": dict(self.consecutive_counts), "scaler_skipped": self.scaler_skipped}

    def load_state_dict(self, d: dict) -> None:
        """Restore the counters from ``state_dict()``. ``max_consecutive`` stays as configured in ``__init__``."""
        self.skipped = int(d.get("skipped", 0))
        self.consecutive = int(d.get("consecutive", 0))
        self.steps = int(d.get("steps", 0))
        self.counts = {str(k): int(v) for k, v in dict(d.get("counts", {})).items()}
        self.consecutive_counts = {str(k): int(v) for k, v in dict(d.get("consecutive_counts", {})).items()}
        self.scaler_skipped = int(d.get("scaler_skipped", 0))


def discriminator_collapsed(disc_losses: Sequence[float], threshold: float = 1e-3, epochs: int = 10) -> bool:
    """True when the last ``epochs`` per-epoch discriminator losses are all below ``threshold``.

    A near-zero LSGAN discriminator loss for many epochs means adversarial training collapsed: D separates the
    original and masked domains perfectly (the generator term cannot close the gap) or the term vanished.
    Fewer than ``epochs`` values -> False. Non-finite values never count as collapsed.
    """
    if epochs < 1:
        raise ValueError(f"discriminator_collapsed: epochs must be >= 1, got {epochs}")
    tail = [float(v) for v in list(disc_losses)[-epochs:]]
    if len(tail) < epochs:
        return False
    return all(math.isfinite(v) and v < threshold for v in tail)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and CUDA)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def enable_determinism(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and CUDA), and make torch deterministic:
    ``torch.use_deterministic_algorithms(True)``, cuDNN deterministic without benchmarking, and the cuBLAS
    workspace setting deterministic CUDA matmuls need (set before CUDA starts; an existing value is kept)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    seed_everything(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def keep_cudnn_deterministic(seed: Optional[int]) -> None:
    """For a seeded run (``seed`` not None): cuDNN deterministic, benchmarking off. ``nnUNetv2_train`` switches
    benchmarking back on after building the trainer, so seeded trainers call this again in ``on_train_start``."""
    if seed is not None:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def seed_from_env(env_var: str = SEED_ENV) -> Optional[int]:
    """The integer in ``env_var`` (None when unset or empty); a non-integer is a clear error."""
    value = os.environ.get(env_var, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"Environment variable {env_var}={value!r} must be an integer seed (e.g. {env_var}=0), or "
                         f"unset for non-deterministic training.") from None
