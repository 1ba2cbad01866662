"""One study process per study folder: ``<study>/study.lock`` holds the running study's process id."""
import contextlib
import os
from typing import Optional

LOCK_FILE = "study.lock"


@contextlib.contextmanager
def study_lock(folder: str):
    """Hold ``<folder>/study.lock`` (this process's id) while a study runs in ``folder``; refuse when another living
    process holds it. A lock left by a killed study is taken over."""
    path = os.path.join(folder, LOCK_FILE)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            owner = _lock_owner(path)
            if owner is not None and owner != os.getpid() and _process_alive(owner):
                raise RuntimeError(f"another nnUNetv2_advmim_study (process {owner}) is running in {folder}; let it "
                                   f"finish, or give this study another folder (-o). If no study is running there, "
                                   f"delete {path}") from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # left by a study that was killed
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield path
    finally:
        if _lock_owner(path) == os.getpid():
            os.remove(path)


def _lock_owner(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
