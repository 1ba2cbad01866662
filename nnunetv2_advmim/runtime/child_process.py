"""Run a long child command (``nnUNetv2_train``) so that it never outlives its parent.

:func:`run_child` starts the command in a process group of its own. SIGTERM or SIGINT to the parent is passed on
to the child's whole group (SIGTERM; SIGKILL after ``grace_s`` seconds) and re-raised in the parent once the child
is gone, so a restarted parent never finds the old child still writing into the same folder. On Linux the child
also gets SIGTERM when the parent dies without a chance to clean up (SIGKILL), through ``PR_SET_PDEATHSIG``.
"""
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from typing import List, Optional

__all__ = ["ChildInterrupted", "run_child", "stop_group"]

_PR_SET_PDEATHSIG = 1
try:  # resolved here, in the parent: the child may only call it (no loading between fork and exec)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


class ChildInterrupted(KeyboardInterrupt):
    """The parent got SIGTERM/SIGINT while the child ran; the child's process group was stopped."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def stop_group(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the process group of ``proc`` (its own, see :func:`run_child`), SIGKILL it after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(cmd: List[str], env: Optional[dict] = None, stdout=None, grace_s: float = 30.0) -> int:
    """Run ``cmd`` to its end and return its exit status (module docstring); raises :class:`ChildInterrupted`
    after stopping the child when this process gets SIGTERM or SIGINT meanwhile."""
    proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.STDOUT if stdout is not None else None,
                            start_new_session=True, preexec_fn=_die_with_parent if _prctl is not None else None)
    received = []
    main_thread = threading.current_thread() is threading.main_thread()

    def forward(signum, frame):
        received.append(signum)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    try:
        deadline = None
        while True:
            try:
                returncode = proc.wait(0.2)
                break
            except subprocess.TimeoutExpired:
                if received and deadline is None:
                    deadline = time.monotonic() + grace_s
                if deadline is not None and time.monotonic() > deadline:
                    stop_group(proc, 0.0)
    except BaseException:
        stop_group(proc, grace_s)
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if received:
        raise ChildInterrupted(received[0])
    return returncode
