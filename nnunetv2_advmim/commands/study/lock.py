"""One study process per study folder: an exclusive kernel lock on ``<study>/study.lock`` for the study's life
(``runtime.locking``; the file names the holder's host and process id for the message)."""
import os

from nnunetv2_advmim.runtime.locking import hold_lock

LOCK_FILE = "study.lock"


def study_lock(folder: str):
    """Hold ``<folder>/study.lock`` while a study runs in ``folder`` (released however the study ends); refuse at once
    while another study holds it (it would rewrite the study's trainer variants)."""
    return hold_lock(os.path.join(folder, LOCK_FILE), "another nnUNetv2_advmim_study",
                     "Let it finish, or give this study another folder (-o).")
