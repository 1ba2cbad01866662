"""Is a checkpoint file usable, and what to do with one that is not.

A file that exists is not yet a finished run: a kill while a stock trainer saves (``torch.save`` straight onto the
target) leaves a truncated file under the final name. :func:`checkpoint_loads` answers by loading it
(``weights_only=True``, onto the CPU); :func:`move_aside` renames a bad file out of the way, keeping it for
inspection, so the run can be trained again instead of failing on it at every attempt.
"""
import os
import time
from typing import Optional

from nnunetv2_advmim.runtime.atomic import fsync_folder
from nnunetv2_advmim.runtime.checkpointing import CheckpointError, safe_load

__all__ = ["checkpoint_problem", "checkpoint_loads", "move_aside", "usable_checkpoint"]


def checkpoint_problem(path: str) -> Optional[str]:
    """None if ``path`` loads with ``safe_load`` onto the CPU as a dict, else why not (missing included)."""
    try:
        ckpt = safe_load(path, map_location="cpu")
    except FileNotFoundError:
        return "it does not exist"
    except CheckpointError as e:
        return str(e)
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        return "it is not an nnU-Net checkpoint (no 'network_weights')"
    return None


def checkpoint_loads(path: str) -> bool:
    """Whether ``path`` is a checkpoint that loads (:func:`checkpoint_problem`)."""
    return checkpoint_problem(path) is None


def move_aside(path: str, reason: str = "corrupt") -> str:
    """Rename ``path`` to ``<path>.<reason>-<timestamp>`` (``-1``, ``-2``... while taken); returns the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, i = f"{path}.{reason}-{stamp}", 1
    while os.path.exists(target):
        target, i = f"{path}.{reason}-{stamp}-{i}", i + 1
    os.replace(path, target)
    fsync_folder(os.path.dirname(os.path.abspath(path)))
    return target


def usable_checkpoint(path: str, log=print) -> bool:
    """True if ``path`` exists and loads; a file that exists but does not load is moved aside (:func:`move_aside`)
    with a line to ``log`` saying why and where it went, and False is returned, as for a missing file."""
    if not os.path.isfile(path):
        return False
    problem = checkpoint_problem(path)
    if problem is None:
        return True
    moved = move_aside(path)
    log(f"  {path} does not load ({problem.splitlines()[0]}); moved it to {moved} and training that model again")
    return False
