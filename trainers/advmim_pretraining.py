"""``AdvMIMPretraining``: the mixin that pretrains both of AdvMIM's networks in one MIM run (the ``*_AdvMIM`` trainers
of ``nnUNetTrainerMIM.py``)."""
import contextlib

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.utilities.collate_outputs import collate_outputs
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2_advmim.architectures.from_plans import build_pretraining_branch
from nnunetv2_advmim.runtime.checkpointing import safe_load
from nnunetv2_advmim.wrappers import unwrap_model


class AdvMIMPretraining:
    """Mixin: pretrain both of AdvMIM's networks in one run, for ``nnUNetTrainerAdvMIM -pretrained_weights``.

    C (the plans' CNN, maskable, as AdvMIM builds it) is ``self.network``; S (the hybrid CNN-Transformer converted
    from the same plans) trains beside it on the same batches with its own masks, optimizer, learning-rate schedule
    and, for AnatoMask, its own EMA teacher: each iteration runs the method's single-network step once per network
    (:meth:`as_hybrid` binds S's parts to the trainer's attributes for S's step). Validation, the best checkpoint
    and ``train_losses`` use the mean of both networks' reconstruction losses; both are logged.

    The checkpoint keeps nnU-Net's layout with C as ``network_weights`` (so stock fine-tuning of the CNN loads it
    too) and adds ``branch_weights`` (S); ``mim_state`` holds S's optimizer and teacher for ``--c``.
    """

    BOUND = ("network", "optimizer", "lr_scheduler", "teacher")  # what one network's MIM step uses

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        """C, as AdvMIM builds it from these plans, with ``num_input_channels`` outputs."""
        return build_pretraining_branch("cnn", configuration_manager, num_input_channels)

    def initialize(self):
        super().initialize()  # C: network, optimizer, schedule (and teacher)
        hybrid = build_pretraining_branch("hybrid", self.configuration_manager, self.num_input_channels)
        hybrid = hybrid.to(self.device)
        if self._do_i_compile():
            hybrid = torch.compile(hybrid)
        if self.is_ddp:
            hybrid = DDP(torch.nn.SyncBatchNorm.convert_sync_batchnorm(hybrid), device_ids=[self.local_rank])
        self.hybrid_parts = {"network": hybrid}
        with self.as_hybrid():
            self.optimizer, self.lr_scheduler = self.configure_optimizers()
            if hasattr(self, "new_teacher"):
                self.teacher = self.new_teacher(self.network)
        self.print_to_log_file(f"Pretraining both AdvMIM networks: C ({type(unwrap_model(self.network)).__name__}) "
                               f"and S ({type(unwrap_model(hybrid)).__name__})")

    @contextlib.contextmanager
    def as_hybrid(self):
        """Within this context the trainer's network, optimizer, schedule and teacher are S's."""
        saved = {a: getattr(self, a) for a in self.BOUND if hasattr(self, a)}
        for a, v in self.hybrid_parts.items():
            setattr(self, a, v)
        try:
            yield
        finally:
            for a in self.BOUND:
                if hasattr(self, a):
                    self.hybrid_parts[a] = getattr(self, a)
            for a, v in saved.items():
                setattr(self, a, v)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        with self.as_hybrid():
            self.network.train()
            self.lr_scheduler.step(self.current_epoch)

    def train_step(self, batch: dict) -> dict:
        cnn = super().train_step(batch)
        with self.as_hybrid():
            hybrid = super().train_step(batch)
        return self._both_losses(cnn, hybrid)

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        self._print_branch_losses('train', train_outputs)

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self.hybrid_parts["network"].eval()

    def validation_step(self, batch: dict) -> dict:
        cnn = super().validation_step(batch)
        with self.as_hybrid():
            hybrid = super().validation_step(batch)
        return self._both_losses(cnn, hybrid)

    def on_validation_epoch_end(self, val_outputs):
        super().on_validation_epoch_end(val_outputs)
        self._print_branch_losses('val', val_outputs)

    @staticmethod
    def _both_losses(cnn: dict, hybrid: dict) -> dict:
        """One step's output for both networks: the mean loss (what nnU-Net logs and selects on) and each network's."""
        return {'loss': (cnn['loss'] + hybrid['loss']) / 2, 'loss_cnn': cnn['loss'], 'loss_hybrid': hybrid['loss']}

    def _print_branch_losses(self, stage: str, outputs) -> None:
        collated = collate_outputs(outputs)
        means = {b: float(np.nanmean(np.asarray(collated[f'loss_{b}'], dtype=np.float64))) for b in ("cnn", "hybrid")}
        self.print_to_log_file(f"{stage} reconstruction loss per network: C {means['cnn']:.4f}, S {means['hybrid']:.4f}")

    def mim_state_dict(self) -> dict:
        state = super().mim_state_dict()
        with self.as_hybrid():
            state['hybrid'] = {'mim_state': super().mim_state_dict(), 'optimizer': self.optimizer.state_dict()}
        return state

    def load_mim_state_dict(self, state: dict) -> None:
        super().load_mim_state_dict(state)
        if 'hybrid' not in state:
            raise RuntimeError(f"The checkpoint's mim_state has no S network: it was not written by a joint AdvMIM "
                               f"pretraining and cannot resume {self.__class__.__name__}.")
        with self.as_hybrid():
            super().load_mim_state_dict(state['hybrid']['mim_state'])
            self.optimizer.load_state_dict(state['hybrid']['optimizer'])

    def checkpoint_extras(self) -> dict:
        hybrid = unwrap_model(self.hybrid_parts["network"])
        return {**super().checkpoint_extras(),
                'branch_weights': {'hybrid': {k: v.detach().cpu() for k, v in hybrid.state_dict().items()}}}

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        ckpt = safe_load(filename_or_checkpoint, map_location=self.device)
        unwrap_model(self.hybrid_parts["network"]).load_state_dict(ckpt['branch_weights']['hybrid'])

    def perform_actual_validation(self, save_probabilities: bool = False):
        super().perform_actual_validation(save_probabilities)
        if self.local_rank == 0:
            with self.as_hybrid():
                out = self.save_mim_examples(join(self.output_folder, 'mim_examples_hybrid.png'))
            self.print_to_log_file(f"MIM pretraining of S: wrote the visual check {out}")
