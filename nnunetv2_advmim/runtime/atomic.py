"""Crash-safe JSON files: the one writer every JSON file of this package goes through, and backups that never
move the live file away.

:func:`write_json_atomic` writes into a uniquely named temporary file in the target's folder, flushes and fsyncs
it, renames it onto the target with ``os.replace`` (atomic within one file system) and fsyncs the folder, so the
rename itself survives a power cut. A crash at any point leaves either the old file or the new one, never half a
file and never no file. Two writers of the same target never share a temporary file.

:func:`keep_backup` keeps a copy of a file under a new name by hard link (or by copy where links are not
supported) while the file itself stays in place: a crash right after the backup still leaves the live file.
"""
import json
import os
import shutil
import tempfile
import time
from typing import IO, Any, Callable, Optional

__all__ = ["fsync_folder", "current_umask", "replace_atomically", "write_json_atomic", "keep_backup", "backup_name"]


def fsync_folder(folder: str) -> None:
    """fsync a folder so renames and new names in it are on disk (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def replace_atomically(path: str, write: Callable[[IO], None], binary: bool = False,
                       prefix: Optional[str] = None, suffix: str = ".tmp") -> None:
    """Give ``path`` the content ``write(f)`` writes, atomically (module docstring): a unique temporary file
    ``<prefix><random><suffix>`` in ``path``'s folder (prefix default ``.<name>.``), flushed and fsynced, renamed
    onto ``path``, then the folder fsynced. Whatever fails, the temporary file is removed and ``path`` is as it
    was."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{os.path.basename(path)}.", suffix=suffix, dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the file the mode open() would
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_folder(folder)


def write_json_atomic(path: str, content: Any, indent: Optional[int] = 2, sort_keys: bool = False) -> None:
    """Write ``content`` as JSON to ``path`` atomically (module docstring); creates the folder if needed."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = json.dumps(content, indent=indent, sort_keys=sort_keys)  # serialise first: a bad value writes nothing
    replace_atomically(path, lambda f: f.write(text))


def backup_name(path: str) -> str:
    """``<path>.bak-<timestamp>`` (``-1``, ``-2``, ... appended while the name is taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup, i = f"{path}.bak-{stamp}", 1
    while os.path.exists(backup):
        backup, i = f"{path}.bak-{stamp}-{i}", i + 1
    return backup


def keep_backup(path: str) -> str:
    """Keep the current content of ``path`` as :func:`backup_name` (hard link, else a copy) and return its name.

    ``path`` itself is not moved: the caller replaces it afterwards with :func:`write_json_atomic`, which
    gives the live name a new file and leaves the linked backup untouched."""
    backup = backup_name(path)
    try:
        os.link(path, backup)
    except OSError:  # no hard links on this file system
        tmp = backup + ".tmp"
        shutil.copy2(path, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, backup)
    fsync_folder(os.path.dirname(os.path.abspath(path)))
    return backup
