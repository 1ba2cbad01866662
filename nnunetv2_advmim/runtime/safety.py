"""Refuse to train over a finished run.

Stock ``nnUNetv2_train D C F`` without ``--c`` starts from scratch in the same output folder and overwrites
``checkpoint_final.pth`` (and the plans/dataset/debug files at the start of training) of a run that may have
taken days. Our trainers call :func:`refuse_finished_run` first thing in ``on_train_start``, before any file is
written, and stop with the two ways out:

- ``nnUNetv2_train ... --c``: ``run_training`` loads ``checkpoint_final.pth`` *before* ``on_train_start``
  (``maybe_load_checkpoint``), so the loaded run has ``current_epoch > 0`` (nnU-Net stores ``current_epoch + 1``)
  and is not refused; a finished run then only re-runs the final validation. ``--val`` never calls
  ``on_train_start``.
- an explicit opt-in to start again over it: environment variable ``nnUNet_advmim_overwrite=1`` (or move /
  delete the folder, or train under another fold / trainer name).
"""
import os

OVERWRITE_ENV = "nnUNet_advmim_overwrite"
FINAL_CHECKPOINT = "checkpoint_final.pth"


class FinishedRunError(RuntimeError):
    """The output folder holds a finished run and training from scratch would overwrite it."""


def overwrite_allowed() -> bool:
    return os.environ.get(OVERWRITE_ENV, "").strip().lower() in ("1", "true", "yes")


def refuse_finished_run(trainer) -> None:
    """Raise :class:`FinishedRunError` if ``trainer.output_folder`` holds ``checkpoint_final.pth`` and the trainer
    is about to start from scratch (no checkpoint loaded, i.e. not ``--c``), unless ``nnUNet_advmim_overwrite=1``.

    Call it as the first line of ``on_train_start`` (module docstring)."""
    final = os.path.join(trainer.output_folder, FINAL_CHECKPOINT)
    if not os.path.isfile(final):
        return
    if getattr(trainer, "current_epoch", 0) > 0:  # a checkpoint was loaded (--c): continuing, not overwriting
        return
    if overwrite_allowed():
        if getattr(trainer, "local_rank", 0) == 0:
            trainer.print_to_log_file(f"{OVERWRITE_ENV} is set: training from scratch over the finished run in "
                                      f"{trainer.output_folder}; its checkpoint_final.pth will be overwritten.")
        return
    raise FinishedRunError(
        f"{trainer.output_folder} already holds a finished run ({FINAL_CHECKPOINT}); training from scratch would "
        f"overwrite it. To continue it or re-run its validation, add --c to the nnUNetv2_train command. To start "
        f"again anyway, set {OVERWRITE_ENV}=1 (or move the folder away first).")
