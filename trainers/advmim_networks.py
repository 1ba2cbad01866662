"""The parts of ``nnUNetTrainerAdvMIM`` that build and run its networks: S and C (from the plans, with the weights the
environment names), compile and DDP, the step mode, the optimizers of S, C and the discriminators, the
foreground-aware unlabeled crops (the ensemble's pseudo-labels), mixed precision and device moves. A mixin of the trainer; its settings are the
trainer's class attributes.
"""
import os

import torch
import torch.distributed as dist
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2_advmim.architectures.ensemble import AdvMIMEnsemble
from nnunetv2_advmim.architectures.from_plans import build_branch
from nnunetv2_advmim.data.pseudo_sampling import refresh_due, refresh_locations
from nnunetv2_advmim.methods.adversarial import PatchDiscriminator, discriminator_optimizer
from nnunetv2_advmim.methods.advmim import BRANCHES
from nnunetv2_advmim.methods.schedules import adamw_warmup_poly, sgd_poly
from nnunetv2_advmim.methods.step_modes import choose_step_mode, ddp_find_unused_parameters, most_memory_saving
from nnunetv2_advmim.runtime.distributed import all_gather
from nnunetv2_advmim.runtime.memory import cuda_step_peak_bytes
from nnunetv2_advmim.runtime.precision import amp_dtype, autocast_context
from nnunetv2_advmim.runtime.weights import load_branch_weights
from nnunetv2_advmim.wrappers import unwrap_model

PRETRAINED_ENV = {"hybrid": "nnUNet_advmim_pretrained_hybrid", "cnn": "nnUNet_advmim_pretrained_cnn"}


class AdvMIMNetworks:
    """Networks, optimizers and pseudo-label locations of ``nnUNetTrainerAdvMIM`` (module docstring)."""

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        """The network ``predict_with`` names (what ``nnUNetv2_predict`` rebuilds and ``network_weights`` holds)."""
        return build_branch(cls.predict_with, configuration_manager, num_input_channels, num_output_channels,
                            enable_deep_supervision)

    def compiles_networks(self) -> bool:
        return super()._do_i_compile() if self.compile_networks is None else bool(self.compile_networks)

    def _do_i_compile(self):
        return False  # nnU-Net's own compile of self.network is replaced by compiles_networks (S and C)

    def _both_networks(self) -> dict:
        """S and C (the one ``self.network`` is among them), with the weights the environment variables name."""
        nets = {"hybrid": self.network.hybrid, "cnn": self.network.cnn} if isinstance(self.network, AdvMIMEnsemble) \
            else {self.predict_with: self.network}
        for b in BRANCHES:
            if b not in nets:
                nets[b] = build_branch(b, self.configuration_manager, self.num_input_channels,
                                       self.label_manager.num_segmentation_heads,
                                       self.enable_deep_supervision).to(self.device)
            path = os.environ.get(PRETRAINED_ENV[b])
            if path:
                load_branch_weights(nets[b], path, b)
                self.print_to_log_file(f"Loaded {b} branch weights from {path} (${PRETRAINED_ENV[b]})")
            nets[b].zero_masked_input = self.zero_masked_input
        return nets

    def _wrap(self, nets: dict) -> dict:
        """S and C compiled (when nnU-Net would compile) and DDP-wrapped under DDP, as ``train_step`` runs them."""
        if self.compiles_networks():
            self.print_to_log_file("Using torch.compile for both AdvMIM networks...")
            nets = {b: torch.compile(m) for b, m in nets.items()}
        if self.is_ddp:
            # memory mode and CTCT leave some parameters without gradient in the synchronised backward
            unused = ddp_find_unused_parameters(self.step_mode, self.masked_domain)
            nets = {b: DDP(torch.nn.SyncBatchNorm.convert_sync_batchnorm(m), device_ids=[self.local_rank],
                           find_unused_parameters=unused) for b, m in nets.items()}
            self.discriminators = {b: DDP(d, device_ids=[self.local_rank]) for b, d in self.discriminators.items()}
            self.network = nets[self.predict_with] if self.predict_with in nets else \
                AdvMIMEnsemble(unwrap_model(nets["hybrid"]), unwrap_model(nets["cnn"]))
        return nets

    def _choose_step_mode(self, cnn: torch.nn.Module) -> None:
        """Resolve ``step_mode = "auto"`` (``methods.step_modes.choose_step_mode``) and log the choice and why. On a
        GPU the stock step's memory is measured as one forward + backward of C (the plan's CNN) at the plan's batch
        and patch; the memory available is what the driver reports free plus what this process holds already. DDP
        ranks agree on the most memory-saving of their choices. Explicit modes are kept as they are."""
        if self.step_mode != "auto":
            return
        free = stock = None
        if self.device.type == "cuda":
            x = torch.zeros((self.batch_size, self.num_input_channels, *self.configuration_manager.patch_size),
                            device=self.device)
            stock = cuda_step_peak_bytes(cnn, x, self._autocast)
            free = torch.cuda.mem_get_info(self.device)[0] + torch.cuda.memory_reserved(self.device)
        mode, reason = choose_step_mode(free, stock, self.device.type)
        modes = all_gather(mode, self.is_ddp)
        if most_memory_saving(modes) != mode:
            mode, reason = most_memory_saving(modes), f"the mode every rank can afford ({modes})"
        self.step_mode = mode
        self.print_to_log_file(f"step_mode 'auto' -> '{mode}': {reason}")

    def configure_optimizers(self, nets=None):
        """C: nnU-Net's SGD + poly. S: AdamW + warm-up + poly (``hybrid_optimizer = "sgd"``: C's SGD and poly).
        D: Adam, constant (or SGD + poly, ``disc_optimizer``). Returns the predicting network's for nnU-Net's hooks."""
        if self.hybrid_optimizer not in ("adamw", "sgd"):
            raise ValueError(f"hybrid_optimizer must be 'adamw' or 'sgd', got {self.hybrid_optimizer!r}")
        if self.disc_real not in ("labeled", "unlabeled"):
            raise ValueError(f"disc_real must be 'labeled' or 'unlabeled', got {self.disc_real!r}")
        nets = nets or {b: unwrap_model(m) for b, m in self.branches.items()}
        made = {b: sgd_poly(nets[b].parameters(), self.initial_lr, self.num_epochs, self.weight_decay,
                            self.sgd_momentum, self.sgd_nesterov) for b in ("cnn", "hybrid")
                if b == "cnn" or self.hybrid_optimizer == "sgd"}
        if self.hybrid_optimizer == "adamw":
            made["hybrid"] = adamw_warmup_poly(nets["hybrid"].parameters(), self.hybrid_lr, self.num_epochs,
                                               self.hybrid_weight_decay, self.hybrid_betas, self.hybrid_warmup_fraction)
        self.branch_optimizers = {b: opt for b, (opt, _) in made.items()}
        self.branch_schedulers = {b: sched for b, (_, sched) in made.items()}
        made = {b: discriminator_optimizer(unwrap_model(d).parameters(), self.disc_optimizer, self.disc_lr,
                                           self.num_epochs, betas=self.disc_betas, weight_decay=self.disc_weight_decay)
                for b, d in self.discriminators.items()}
        self.disc_optimizers = {b: opt for b, (opt, _) in made.items()}
        self.disc_schedulers = {b: sched for b, (_, sched) in made.items() if sched is not None}
        primary = "cnn" if self.predict_with == "cnn" else "hybrid"
        return self.branch_optimizers[primary], self.branch_schedulers[primary]

    def _build_discriminators(self, cnn: torch.nn.Module) -> dict:
        patch = self.configuration_manager.patch_size
        if min(PatchDiscriminator.output_size(patch, 4, self.disc_kernel_size, self.disc_head_stride)) < 1:
            raise ValueError(f"{self.__class__.__name__}: the discriminator with {self.disc_kernel_size}x"
                             f"{self.disc_kernel_size} kernels and a stride-{self.disc_head_stride} head reduces the "
                             f"plan's patch {tuple(patch)} to nothing; set disc_kernel_size = 3 and disc_head_stride "
                             f"= 1 (the default discriminator) or use a plan with a larger patch")
        return {b: PatchDiscriminator(self.label_manager.num_segmentation_heads, unwrap_model(cnn).encoder.conv_op,
                                      kernel_size=self.disc_kernel_size, head_stride=self.disc_head_stride).to(self.device)
                for b in BRANCHES}

    def _build_ce_loss(self):
        """nnU-Net's own loss (deep supervision and ignore label as ``_build_loss``) with the Dice weight 0: CE alone."""
        loss = self._build_loss()
        (loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss).weight_dice = 0
        return loss

    def set_deep_supervision_enabled(self, enabled: bool):
        for m in self.branches.values():
            unwrap_model(m).decoder.deep_supervision = enabled

    def _maybe_refresh_pseudo_locations(self) -> None:
        if self.unlabeled_oversample_foreground > 0 and refresh_due(
                self.current_epoch, self.pseudo_locations_every,
                bool(self.dataloader_train.unlabeled_loader.pseudo_locations)):
            self._refresh_pseudo_locations()

    @torch.no_grad()
    def _refresh_pseudo_locations(self) -> None:
        """Foreground locations of the ensemble's pseudo-labels for the next window of unlabeled cases, handed to
        the unlabeled loader (``data.pseudo_sampling.refresh_locations``); under DDP each rank predicts a share."""
        self.set_deep_supervision_enabled(False)
        try:
            found, self._pseudo_cursor = refresh_locations(
                self.dataloader_train, self._ensemble_predictor(), self._pseudo_cursor,
                self.pseudo_locations_max_cases, self.label_manager.foreground_labels,
                self.unlabeled_oversample_foreground, seed=self.current_epoch, rank=self.local_rank,
                world=dist.get_world_size() if self.is_ddp else 1, gather=lambda f: all_gather(f, self.is_ddp))
        finally:
            self.set_deep_supervision_enabled(self.enable_deep_supervision)
        with_fg = sum(any(len(v) for v in locs.values()) for locs in found.values())
        self.print_to_log_file(f"Pseudo-label locations of {len(found)} unlabeled cases ({with_fg} with foreground); "
                               f"{self.unlabeled_oversample_foreground:.0%} of unlabeled crops centred on them")

    def _ensemble_predictor(self) -> nnUNetPredictor:
        """nnU-Net's sliding-window predictor (no mirroring) over the mean of S and C as they run now."""
        nets = {b: unwrap_model(m, keep_compiled=True) for b, m in self.branches.items()}
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=True, device=self.device, verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
        ensemble = AdvMIMEnsemble(nets["hybrid"], nets["cnn"])
        predictor.manual_initialization(ensemble, self.plans_manager, self.configuration_manager, None,
                                        self.dataset_json, self.__class__.__name__, None)
        predictor.network = ensemble  # the branches as they run: undo the predictor's own torch.compile wrap
        return predictor

    # ------------------------------------------------------------------ execution
    def autocast_dtype(self):
        """None (float32), torch.bfloat16 or torch.float16 from ``self.amp`` (CUDA only; the CPU runs float32)."""
        return amp_dtype(self.amp, self.device)

    def _autocast(self):
        return autocast_context(self.autocast_dtype(), self.device)

    def _scaler(self, which: str = "net"):
        """nnU-Net's GradScaler (or the discriminators' own) when training in fp16, else None (bf16/float32)."""
        if self.autocast_dtype() != torch.float16:
            return None
        attr = "grad_scaler" if which == "net" else "disc_grad_scaler"
        if getattr(self, attr) is None:
            setattr(self, attr, torch.amp.GradScaler("cuda"))
        return getattr(self, attr)

    def _to_device(self, x):
        return [t.to(self.device, non_blocking=True) for t in x] if isinstance(x, list) \
            else x.to(self.device, non_blocking=True)
