"""Crash-safe checkpoint files, safe loading, RNG states and the resume logic both trainer families share.

- :func:`atomic_save`: ``torch.save`` into a temporary file next to the target, flush + ``fsync``, then
  ``os.replace`` onto the target. A crash (even SIGKILL) while writing leaves the previous file intact; an
  exception removes the temporary file; temporary files of writers that were killed are removed by the next
  save of the same target.
- :func:`safe_load`: ``torch.load(..., weights_only=True)`` with exactly the extra types nnU-Net checkpoints
  legitimately hold allow-listed (numpy *scalars* and dtypes, which nnU-Net's logger stores; ``torch.device``
  in ``init_args`` is accepted by torch itself). Anything else (a custom class, an ``os.system`` reduce, even a
  numpy array) is refused with :class:`UnsafeCheckpointError`; there is no fall-back to ``weights_only=False``.
  Missing and truncated/corrupt files get errors that name the file and what to do.
- :func:`rng_states` / :func:`set_rng_states`: python ``random``, numpy's global generator, torch CPU and CUDA
  generators as plain tensors/lists/ints, so they pass :func:`safe_load`.
- :func:`save_trainer_checkpoint`: the checkpoint both trainer families write (nnU-Net's layout plus their own
  entries and the run state); :func:`apply_nnunet_checkpoint`: what nnU-Net 2.8.1's ``nnUNetTrainer.load_checkpoint`` does with a loaded
  checkpoint dict (2.8.1 itself can only load from a path, with ``weights_only=False``).
- :func:`run_state` / :func:`restore_run_state`: RNG states (of every DDP rank) and non-finite guard counters in
  and out of a checkpoint, so ``--c`` continues a killed run exactly on every rank.
"""
import os
import pickle
import random
import zipfile
from typing import Any, Dict, List

import numpy as np
import torch

from nnunetv2_advmim.runtime.atomic import replace_atomically
from nnunetv2_advmim.runtime.distributed import all_gather
from nnunetv2_advmim.wrappers import unwrap_model

__all__ = ["CheckpointError", "UnsafeCheckpointError", "CorruptCheckpointError", "atomic_save", "safe_load",
           "safe_globals", "rng_states", "set_rng_states", "strip_module_prefix", "save_trainer_checkpoint",
           "apply_nnunet_checkpoint", "run_state", "restore_run_state", "restore_pending_rng_states"]


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be loaded."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """The file holds pickled objects other than tensors and plain containers (possible foreign code)."""


class CorruptCheckpointError(CheckpointError):
    """The file is incomplete (e.g. the writer was killed) or not a torch checkpoint."""


# --------------------------------------------------------------------------------------------- saving
def _tmp_prefix(filename: str) -> str:
    return f".{os.path.basename(filename)}.tmp."


def _remove_stale_temporaries(filename: str) -> None:
    """Remove temporary files of earlier writers of ``filename`` whose process no longer runs."""
    if os.name != "posix":
        return  # os.kill(pid, 0) is no liveness probe on Windows (it sends CTRL_C_EVENT)
    folder = os.path.dirname(os.path.abspath(filename))
    prefix = _tmp_prefix(filename)
    for name in os.listdir(folder):
        if not name.startswith(prefix):
            continue
        try:
            pid = int(name[len(prefix):].split(".", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # that writer still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # runs under another user
        try:
            os.remove(os.path.join(folder, name))
        except FileNotFoundError:
            pass


def atomic_save(obj: Any, filename: str) -> None:
    """``torch.save(obj, filename)`` that never leaves a partial ``filename`` (module docstring).

    The object is written to ``.<name>.tmp.<pid>.<random>`` in the same folder, flushed and fsynced, then
    renamed onto ``filename`` with ``os.replace`` (atomic on POSIX and Windows within one file system).
    """
    filename = os.fspath(filename)
    folder = os.path.dirname(os.path.abspath(filename))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot write checkpoint {filename}: folder {folder} does not exist.")
    _remove_stale_temporaries(filename)
    replace_atomically(filename, lambda f: torch.save(obj, f), binary=True,
                       prefix=f"{_tmp_prefix(filename)}{os.getpid()}.", suffix="")


# --------------------------------------------------------------------------------------------- loading
def _numpy_safe_globals() -> List[Any]:
    """numpy scalar reconstruction + dtypes (what nnU-Net's logger puts into checkpoints; never ndarrays).

    ``numpy.core.multiarray.scalar(dtype, bytes)`` rebuilds one number from its raw bytes (an object dtype
    returns the already-unpickled, already-checked object); ``numpy.dtype`` only describes a type."""
    allowed: List[Any] = [np.dtype]
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar
    allowed += [(scalar, "numpy._core.multiarray.scalar"), (scalar, "numpy.core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # numpy >= 1.25 may pickle dtypes by their class
        for name in ("BoolDType", "Int8DType", "UInt8DType", "Int16DType", "UInt16DType", "Int32DType",
                     "UInt32DType", "Int64DType", "UInt64DType", "LongLongDType", "ULongLongDType",
                     "Float16DType", "Float32DType", "Float64DType", "LongDoubleDType", "Complex64DType",
                     "Complex128DType", "CLongDoubleDType", "ByteDType", "UByteDType", "ShortDType", "UShortDType",
                     "IntDType", "UIntDType", "LongDType", "ULongDType"):
            cls = getattr(dtypes, name, None)
            if cls is not None:
                allowed.append(cls)
    return allowed


def safe_globals() -> List[Any]:
    """The allow-list :func:`safe_load` adds to torch's own ``weights_only`` allow-list."""
    return _numpy_safe_globals()


def _allowed_names() -> set:
    names = set()
    for g in safe_globals():
        names.add(g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}")
    return names


def _describe_refusal(filename: str, error: Exception) -> str:
    """The globals torch refused, e.g. ``posix.system`` or ``mymodule.MyClass``."""
    try:
        found = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(filename)
                 if g not in _allowed_names()]
    except Exception:  # the scan itself failed: fall back to torch's message
        found = []
    if found:
        return "refused: " + ", ".join(found)
    lines = [ln.strip() for ln in str(error).splitlines() if "GLOBAL" in ln or "global" in ln]
    return lines[0] if lines else str(error).splitlines()[0]


def safe_load(filename: str, map_location="cpu") -> Any:
    """Load a checkpoint with ``torch.load(weights_only=True)`` and the allow-list of :func:`safe_globals`.

    Raises ``FileNotFoundError`` (missing file), :class:`CorruptCheckpointError` (truncated / not a torch file)
    or :class:`UnsafeCheckpointError` (pickled objects other than tensors, containers and numpy scalars); every
    message names the file.
    """
    filename = os.fspath(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"Checkpoint {filename} does not exist. Check the path (and nnUNet_results); to "
                                f"resume, use another checkpoint of the run (checkpoint_latest.pth, "
                                f"checkpoint_best.pth or checkpoint_final.pth).")
    if os.path.getsize(filename) == 0 or not zipfile.is_zipfile(filename):
        # torch.save writes zip archives; a truncated one has no central directory
        raise CorruptCheckpointError(
            f"Checkpoint {filename} is incomplete or corrupt (not a complete torch zip archive, "
            f"{os.path.getsize(filename)} bytes): it was probably cut off while being written or copied (or saved "
            f"in torch's legacy non-zip format). Resume from another checkpoint of the run (checkpoint_best.pth or "
            f"an older copy) or copy it again.")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"Refusing to load {filename}: it contains pickled Python objects that are not tensors, plain "
            f"containers or numbers ({_describe_refusal(filename, e)}), and unpickling them could run foreign "
            f"code. Checkpoints written by nnU-Net and nnunetv2_advmim never contain such objects; only load this "
            f"file if you trust its source, by converting it yourself.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CorruptCheckpointError(
            f"Checkpoint {filename} is incomplete or corrupt ({type(e).__name__}: {str(e).splitlines()[0]}). "
            f"Resume from another checkpoint of the run (checkpoint_best.pth or an older copy).") from e


# --------------------------------------------------------------------------------------------- RNG states
def rng_states() -> Dict[str, Any]:
    """RNG states of python ``random``, numpy's global generator, torch CPU and every CUDA device (when CUDA is
    initialised), as plain ints/lists/uint8 tensors (loadable by :func:`safe_load`)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": None if gauss is None else float(gauss)},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state().clone(),
        # only when CUDA is in use: querying would otherwise start a CUDA context (GPU memory) in CPU runs
        "cuda": [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else None,
    }
    return states


def set_rng_states(d: Dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned. CUDA states are restored when CUDA is available and the number
    of devices matches (otherwise they are skipped: e.g. a GPU checkpoint resumed on the CPU)."""
    py = d["python"]  # tensors may come back on a GPU (safe_load(map_location='cuda')): .cpu() everywhere
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].cpu().tolist()), py["gauss_next"]))
    npy = d["numpy"]
    np.random.set_state((npy["name"], npy["keys"].cpu().numpy().astype(np.uint32), int(npy["pos"]),
                         int(npy["has_gauss"]), float(npy["cached_gaussian"])))
    torch.set_rng_state(d["torch"].cpu().to(torch.uint8))
    cuda = d.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda])


# --------------------------------------------------------------------------------------------- trainers
def strip_module_prefix(state_dict: Dict[str, Any], own_keys=None) -> Dict[str, Any]:
    """State dict without DDP's ``module.`` prefixes (kept on keys that ``own_keys`` holds as they are)."""
    return {k[7:] if k.startswith("module.") and (own_keys is None or k not in own_keys) else k: v
            for k, v in state_dict.items()}


_DEFAULT = object()


def save_trainer_checkpoint(trainer, filename: str, extra: Dict[str, Any], network_weights=None,
                            best_ema=_DEFAULT) -> None:
    """Write a trainer's checkpoint: nnU-Net 2.8.1's layout (``network_weights`` = ``trainer.network``'s state dict
    unless given, optimizer, grad scaler, logger, best EMA Dice, epoch + 1, init args, trainer name, mirroring
    axes), the trainer's own entries ``extra`` and :func:`run_state`, written by :func:`atomic_save`.

    Every DDP rank calls this (nnU-Net does at the same epochs): the RNG states are gathered from all ranks, then
    only rank 0 writes. ``best_ema``: the value to store instead of ``trainer._best_ema``."""
    if trainer.disable_checkpointing:
        if trainer.local_rank == 0:
            trainer.print_to_log_file("No checkpoint written, checkpointing is disabled")
        return
    per_rank = run_state(trainer)  # collective under DDP: before the other ranks return
    if trainer.local_rank != 0:
        return
    checkpoint = {
        "network_weights": unwrap_model(trainer.network).state_dict() if network_weights is None else network_weights,
        "optimizer_state": trainer.optimizer.state_dict(),
        "grad_scaler_state": trainer.grad_scaler.state_dict() if trainer.grad_scaler is not None else None,
        "logging": trainer.logger.get_checkpoint(),
        "_best_ema": trainer._best_ema if best_ema is _DEFAULT else best_ema,
        "current_epoch": trainer.current_epoch + 1,
        "init_args": trainer.my_init_kwargs,
        "trainer_name": trainer.__class__.__name__,
        "inference_allowed_mirroring_axes": trainer.inference_allowed_mirroring_axes,
        **extra,
        **per_rank,
    }
    atomic_save(checkpoint, filename)


def apply_nnunet_checkpoint(trainer, checkpoint: dict) -> None:
    """Restore what nnU-Net 2.8.1's ``nnUNetTrainer.load_checkpoint`` restores, from a loaded dict: network
    weights (``module.`` prefixes dropped as nnU-Net does), init args, epoch, logger, best EMA Dice, mirroring
    axes, optimizer and grad scaler."""
    if not trainer.was_initialized:
        trainer.initialize()
    net = unwrap_model(trainer.network)
    weights = strip_module_prefix(checkpoint["network_weights"], net.state_dict().keys())
    trainer.my_init_kwargs = checkpoint["init_args"]
    trainer.current_epoch = checkpoint["current_epoch"]
    trainer.logger.load_checkpoint(checkpoint["logging"])
    trainer._best_ema = checkpoint["_best_ema"]
    trainer.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                              trainer.inference_allowed_mirroring_axes)
    net.load_state_dict(weights)
    trainer.optimizer.load_state_dict(checkpoint["optimizer_state"])
    if trainer.grad_scaler is not None and checkpoint.get("grad_scaler_state") is not None:
        trainer.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])


def _rank_and_world(trainer):
    if getattr(trainer, "is_ddp", False):
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _generators(trainer) -> Dict[str, torch.Generator]:
    """The trainer's own per-rank generators (``trainer.per_rank_generators()``, e.g. the MIM mask generator)."""
    fn = getattr(trainer, "per_rank_generators", None)
    return fn() if fn is not None else {}


def run_state(trainer) -> Dict[str, Any]:
    """What a resumed run needs beyond nnU-Net's checkpoint: the RNG states (masks and augmentation draw from the
    global generators and the trainer's own generators) and the non-finite guard's counters.

    Every rank's states are stored (``rank_states[r]``: its global RNG states and its ``per_rank_generators()``
    states), so under DDP **every rank must call this** (it all-gathers; trainers call it in ``save_checkpoint``
    before returning on ranks other than 0, which every rank runs at the same epochs). Storing the states is the
    only way to an exact per-rank resume: re-deriving them from the seed would mean replaying every draw of the
    run (augmentation, AnatoMask's and MPS-AMS's selections), whose count is not fixed."""
    guard = getattr(trainer, "nonfinite_guard", None)
    own = {"rng_states": rng_states(),
           "generators": {k: g.get_state() for k, g in _generators(trainer).items()}}
    gathered = all_gather(own, _rank_and_world(trainer)[1] > 1)
    return {"rank_states": gathered, "nonfinite_guard": guard.state_dict() if guard is not None else None}


def restore_run_state(trainer, checkpoint: dict, source: str) -> None:
    """Restore :func:`run_state` from a loaded checkpoint: the guard's counters, and this rank's RNG states now (for
    ``--val``) and again after ``on_train_start`` (for ``--c``: ``trainer.pending_rng_states``), plus its
    ``per_rank_generators()``. Each rank restores its own entry of ``rank_states``, so ranks keep drawing different
    numbers and each continues exactly. A rank without an entry (a run resumed with more processes than it was
    saved with) keeps its fresh, rank-seeded generators (copying another rank's states would make two ranks draw
    the same numbers)."""
    guard = getattr(trainer, "nonfinite_guard", None)
    if checkpoint.get("nonfinite_guard") is not None and guard is not None:
        guard.load_state_dict(checkpoint["nonfinite_guard"])
    rank, world = _rank_and_world(trainer)
    per_rank = checkpoint.get("rank_states")
    if per_rank is not None and len(per_rank) != world and rank == 0:
        trainer.print_to_log_file(f"{source} was written by {len(per_rank)} process(es), this run has {world}: the "
                                  f"random numbers continue exactly only if the number of processes is the same.")
    if per_rank is not None and rank < len(per_rank):
        own = per_rank[rank]
        generators = _generators(trainer)
        for name, state in own.get("generators", {}).items():
            if name in generators:
                generators[name].set_state(state.cpu())  # CPU generators; the file may map to CUDA
        states = own["rng_states"]
    else:
        trainer.print_to_log_file(f"{source} holds no RNG states for rank {rank} (written by fewer processes or "
                                  f"not by this package): this rank continues with fresh random numbers.")
        return
    set_rng_states(states)
    trainer.pending_rng_states = states


def restore_pending_rng_states(trainer) -> None:
    """Call at the end of ``on_train_start``: after everything it draws, the next step sees the RNG exactly as the
    saved run did."""
    pending = getattr(trainer, "pending_rng_states", None)
    if pending is not None:
        set_rng_states(pending)
        trainer.pending_rng_states = None
