"""Checkpoints of the trainers that keep nnU-Net's checkpoint layout (stock family: fine-tuning, demo, study
variants of stock trainers), with the guarantees our own trainers give.

- :func:`save_stock_checkpoint`: exactly what ``nnUNetTrainer.save_checkpoint`` stores, written with
  :func:`~nnunetv2_advmim.runtime.checkpointing.atomic_save` (a kill while saving leaves the previous file);
- :func:`load_stock_checkpoint`: :func:`~nnunetv2_advmim.runtime.checkpointing.safe_load` (``weights_only=True``:
  a file carrying pickled objects is refused before anything runs) + what stock ``load_checkpoint`` restores;
- :class:`SafeCheckpoints`: a mixin that puts both in place of the stock methods.
"""
from typing import Union

from nnunetv2_advmim.runtime.checkpointing import apply_nnunet_checkpoint, atomic_save, safe_load
from nnunetv2_advmim.wrappers import unwrap_model

__all__ = ["stock_checkpoint", "save_stock_checkpoint", "load_stock_checkpoint", "SafeCheckpoints"]


def stock_checkpoint(trainer) -> dict:
    """The dict ``nnUNetTrainer.save_checkpoint`` (nnU-Net 2.8.1) writes."""
    return {
        "network_weights": unwrap_model(trainer.network).state_dict(),
        "optimizer_state": trainer.optimizer.state_dict(),
        "grad_scaler_state": trainer.grad_scaler.state_dict() if trainer.grad_scaler is not None else None,
        "logging": trainer.logger.get_checkpoint(),
        "_best_ema": trainer._best_ema,
        "current_epoch": trainer.current_epoch + 1,
        "init_args": trainer.my_init_kwargs,
        "trainer_name": trainer.__class__.__name__,
        "inference_allowed_mirroring_axes": trainer.inference_allowed_mirroring_axes,
    }


def save_stock_checkpoint(trainer, filename: str) -> None:
    """Stock ``save_checkpoint`` (rank 0 writes, ``disable_checkpointing`` honoured), written atomically."""
    if trainer.local_rank != 0:
        return
    if trainer.disable_checkpointing:
        trainer.print_to_log_file("No checkpoint written, checkpointing is disabled")
        return
    atomic_save(stock_checkpoint(trainer), filename)


def load_stock_checkpoint(trainer, filename_or_checkpoint: Union[dict, str]) -> None:
    """Stock ``load_checkpoint`` with the file read by ``safe_load`` (refused before anything is built)."""
    checkpoint = safe_load(filename_or_checkpoint, map_location=trainer.device) \
        if isinstance(filename_or_checkpoint, str) else filename_or_checkpoint
    apply_nnunet_checkpoint(trainer, checkpoint)


class SafeCheckpoints:
    """Mixin for an ``nnUNetTrainer`` subclass: atomic checkpoint writes and ``weights_only`` loading, stock layout.
    List it before the trainer class: ``class MyTrainer(SafeCheckpoints, nnUNetTrainer)``."""

    def save_checkpoint(self, filename: str) -> None:
        save_stock_checkpoint(self, filename)

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        load_stock_checkpoint(self, filename_or_checkpoint)
