"""One process per folder: an exclusive ``fcntl.flock`` lock held for the whole life of the holder.

The kernel drops the lock when the holder exits, however it exits (also SIGKILL), so there is no "stale" lock to
guess about: whether the file is empty, names a process that looks dead, or names another host (a shared file
system) does not matter, only whether some process holds the lock now. The file records the holder's host name
and process id, for the message a second process gets. The file itself stays in place (removing it on release
would let two processes lock two different files of the same name).
"""
import contextlib
import fcntl
import json
import os
import socket
from typing import Iterator, Optional

__all__ = ["LockHeldError", "lock_holder", "hold_lock"]


class LockHeldError(RuntimeError):
    """Another process holds the lock."""


def lock_holder(path: str) -> Optional[dict]:
    """``{"host": ..., "pid": ...}`` recorded in a lock file, or None (missing, empty or unreadable)."""
    try:
        with open(path) as f:
            record = json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


@contextlib.contextmanager
def hold_lock(path: str, what: str = "another process", fix: str = "") -> Iterator[str]:
    """Hold an exclusive lock on ``path`` while the block runs; ``LockHeldError`` at once if another process (or
    another open of the file in this process) holds it. ``what`` and ``fix`` complete the error message."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            holder = lock_holder(path) or {}
            who = (f"process {holder.get('pid')} on host {holder.get('host')}" if holder
                   else "a process that has not written its name yet")
            raise LockHeldError(f"{what} ({who}) holds {path}. {fix}".strip()) from None
        record = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released: nobody holds it (the lock itself goes with the close below)
    finally:
        os.close(fd)
