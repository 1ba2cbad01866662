"""Checkpoints of ``nnUNetTrainerAdvMIM``: nnU-Net's layout plus both networks, both discriminators and every optimizer
(``runtime.checkpointing.save_trainer_checkpoint``), resume only with the trainer that started the run, and
``-pretrained_weights`` into both networks. A mixin of the trainer.
"""
from typing import Union

from nnunetv2_advmim.data.pseudo_sampling import locations_from_state, locations_state
from nnunetv2_advmim.runtime.checkpointing import (apply_nnunet_checkpoint, restore_run_state, safe_load,
                                                   save_trainer_checkpoint, strip_module_prefix)
from nnunetv2_advmim.runtime.weights import load_pretrained_branches
from nnunetv2_advmim.trainers.advmim_networks import PRETRAINED_ENV
from nnunetv2_advmim.wrappers import unwrap_model


class AdvMIMCheckpoints:
    """Save, resume and pretrained weights of ``nnUNetTrainerAdvMIM`` (module docstring)."""

    def per_rank_generators(self) -> dict:
        """Generators saved and restored per DDP rank with the RNG states (``checkpointing.run_state``)."""
        return {"mask_generator": self.mask_generator}

    def _disc_settings(self) -> dict:
        return {"optimizer": self.disc_optimizer, "lr": self.disc_lr, "grad_clip": self.disc_grad_clip}

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's layout (``network_weights`` = the inference network; ``checkpointing.save_trainer_checkpoint``)
        plus ``advmim``: both networks, both discriminators, every optimizer, the discriminators' grad scaler and the
        pseudo-label cursor and locations.
        Tensors shared with ``network_weights`` are stored once. The schedules are functions of the epoch."""
        save_trainer_checkpoint(self, filename, {"advmim": {
            "predict_with": self.predict_with,
            "weights": {b: unwrap_model(m).state_dict() for b, m in self.branches.items()},
            "optimizers": {b: o.state_dict() for b, o in self.branch_optimizers.items()},
            "discriminators": {b: unwrap_model(d).state_dict() for b, d in self.discriminators.items()},
            "disc_optimizers": {b: o.state_dict() for b, o in self.disc_optimizers.items()},
            "disc": self._disc_settings() if self.discriminators else None,
            "disc_grad_scaler": self.disc_grad_scaler.state_dict() if self.disc_grad_scaler is not None else None,
            "pseudo_sampling": self.pseudo_sampling_state(),
        }}, best_ema=self._best_ema_after_this_epoch())

    def pseudo_sampling_state(self) -> dict:
        """The pseudo-label cursor and the locations the unlabeled loader holds, as tensors (the checkpoint loads
        ``weights_only``): without them a resumed run would predict other cases and crop elsewhere."""
        loader = getattr(self, "dataloader_train", None)
        locations = loader.unlabeled_loader.pseudo_locations if loader is not None else {}
        return {"cursor": self._pseudo_cursor, "locations": locations_state(locations)}

    def restore_pseudo_sampling(self) -> None:
        """Hand the state a resumed checkpoint carried to the loader (called from ``on_train_start``)."""
        state = getattr(self, "_pending_pseudo_sampling", None)
        self._pending_pseudo_sampling = None
        if state is None:
            return
        self._pseudo_cursor = int(state["cursor"])
        if state["locations"]:
            self.dataloader_train.update_unlabeled(pseudo_locations=locations_from_state(state["locations"]),
                                                   oversample_foreground_percent=self.unlabeled_oversample_foreground)

    def _best_ema_after_this_epoch(self):
        """The best EMA pseudo Dice once this epoch's best-checkpoint handling has run. nnU-Net's ``on_epoch_end``
        writes checkpoint_latest *before* updating ``_best_ema``, so a run resumed from it would compare against the
        previous best and could overwrite checkpoint_best with a worse epoch; storing the updated value avoids that."""
        ema = self.logger.local_logger.my_fantastic_logging.get("ema_fg_dice")
        if not ema or len(ema) <= self.current_epoch:
            return self._best_ema
        now = ema[self.current_epoch]
        return now if self._best_ema is None or now > self._best_ema else self._best_ema

    def load_pretrained_weights(self, filename: str) -> None:
        """``nnUNetv2_train ... -pretrained_weights FILE``: a checkpoint that holds both networks (joint pretraining by
        ``nnUNetTrainerMIM_AdvMIM``, ``nnUNetTrainerAnatoMask_AdvMIM``, ``nnUNetTrainerMPSAMS_AdvMIM``, or an AdvMIM
        training) loads into S and C; a checkpoint of one network loads into the network it fits, the one this
        trainer predicts with first. nnU-Net's rule for each: every key but ``.seg_layers.`` with equal shape."""
        nets = {b: unwrap_model(m) for b, m in self.branches.items()}
        primary = "cnn" if self.predict_with == "ensemble" else self.predict_with
        for b in load_pretrained_branches(nets, filename, primary):
            self.print_to_log_file(f"Loaded the {b} network's weights from {filename} (-pretrained_weights)")

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        # weights_only=True: a file carrying foreign pickled objects is refused (checkpointing.safe_load), before
        # anything is built
        source = filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else "The checkpoint"
        checkpoint = safe_load(filename_or_checkpoint, map_location=self.device) \
            if isinstance(filename_or_checkpoint, str) else filename_or_checkpoint
        if not self.was_initialized:
            self.initialize()
        extra = checkpoint.get("advmim")
        if extra is None:
            raise RuntimeError(f"{source} has no AdvMIM state (not written by an AdvMIM trainer); to start from a "
                               f"stock checkpoint use -pretrained_weights (the network it predicts with, "
                               f"{self.predict_with}), ${PRETRAINED_ENV['cnn']} (C) or ${PRETRAINED_ENV['hybrid']} (S)")
        self._check_same_training(source, extra, checkpoint.get("trainer_name"))
        self._scaler("net")  # fp16 scalers are created lazily: create them so a saved scale is not lost on resume
        apply_nnunet_checkpoint(self, checkpoint)
        self._register_log_keys()
        for b, m in self.branches.items():
            unwrap_model(m).load_state_dict(strip_module_prefix(extra["weights"][b]))
            self.branch_optimizers[b].load_state_dict(extra["optimizers"][b])
        for b, d in self.discriminators.items():
            unwrap_model(d).load_state_dict(strip_module_prefix(extra["discriminators"][b]))
            self.disc_optimizers[b].load_state_dict(extra["disc_optimizers"][b])
        if extra.get("disc_grad_scaler") is not None and self._scaler("disc") is not None:
            self.disc_grad_scaler.load_state_dict(extra["disc_grad_scaler"])
        restore_run_state(self, checkpoint, source)
        self._pending_pseudo_sampling = extra.get("pseudo_sampling")  # the loaders exist from on_train_start on

    def _check_same_training(self, source: str, extra: dict, trainer_name) -> None:
        """A checkpoint resumes only in a trainer that trains what it trained: the same inference network, the
        adversarial loss on or off as it was, the same discriminator optimizer (its saved states fit only that)."""
        hint = f"; resume it with the trainer that started it ({trainer_name})"
        if extra["predict_with"] != self.predict_with:
            raise RuntimeError(f"{source} was written by a trainer predicting with {extra['predict_with']}, "
                               f"{self.__class__.__name__} predicts with {self.predict_with}{hint}")
        saved = extra.get("disc")
        if bool(saved) != bool(self.discriminators):
            was, now = ("with", "without") if saved else ("without", "with")
            raise RuntimeError(f"{source} was trained {was} the adversarial loss, {self.__class__.__name__} trains "
                               f"{now} it{hint}")
        if saved and saved != self._disc_settings():
            raise RuntimeError(f"{source} was trained with the discriminator settings {saved}, "
                               f"{self.__class__.__name__} has {self._disc_settings()}{hint}")
