"""AdvMIM semi-supervised training and its variants inside nnU-Net.

``nnUNetv2_train D C F -tr nnUNetTrainerAdvMIM`` trains S (the hybrid CNN-Transformer) and C (the plan's CNN,
maskable subclass) on one labeled and one unlabeled batch per iteration (``nnunetv2_advmim.data.semisup_loader``).
``self.network`` is the network ``predict_with`` names (C by default), saved as ``network_weights`` and used by
``nnUNetv2_predict``. The algorithm (both networks' losses and both discriminators) is
``nnunetv2_advmim.methods.advmim``; ``train_step`` moves the batch, draws the masks, calls it and logs.

The paper's adversarial loss is off by default (``adversarial``; ``nnUNetTrainerAdvMIM_withAdv`` trains it); why,
and the measurements behind every default, are in docs/advmim.md.

How the passes are scheduled is ``self.step_mode`` (``methods.step_modes``); the default ``auto`` picks the fastest
mode whose estimated peak fits the GPU and logs why. AMP: ``self.amp`` = ``auto`` (bf16 where the GPU supports it,
else fp16 with nnU-Net's GradScaler), ``fp16`` or ``off``; the CPU runs in float32. S and C are compiled with
``torch.compile`` when nnU-Net would compile its network (CUDA, ``nnUNet_compile``).

Variants set class attributes (``OneChoice``): ``nnUNetTrainerCTCT`` (cross teaching only),
``nnUNetTrainerAdvMIM_withAdv`` (the paper's adversarial loss), ``nnUNetTrainerAdvMIM_paper`` (the official code's
configuration), the official choices one at a time, the inference network (``_Hybrid``, ``_Ensemble``) and short
``_demo`` schedules. They live in this one module so each class exists once (nnU-Net imports this file under its
bare name).
"""
import contextlib
import os
from typing import List, Union

import numpy as np
import torch
import torch.distributed as dist
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from torch import autocast
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2_advmim.architectures.ensemble import AdvMIMEnsemble
from nnunetv2_advmim.architectures.from_plans import BRANCHES, build_branch
from nnunetv2_advmim.data.label_budget import refuse_fold_all_under_budget
from nnunetv2_advmim.data.pseudo_sampling import next_cases, predict_locations, refresh_due
from nnunetv2_advmim.data.semisup_loader import get_semisup_dataloaders
from nnunetv2_advmim.evaluation.progress import plot_advmim_progress
from nnunetv2_advmim.methods.adversarial import PatchDiscriminator, discriminator_optimizer
from nnunetv2_advmim.methods.advmim import (AdvMIMWeights, advmim_generator_step, choose_step_mode,
                                            ddp_find_unused_parameters, discriminator_loss, full_resolution,
                                            most_memory_saving)
from nnunetv2_advmim.methods.masking import block_mask, chosen_block_size, mask_grid, rank_seed, upsample_mask
from nnunetv2_advmim.methods.schedules import EpochLR, sigmoid_rampup, warmup_poly_lr
from nnunetv2_advmim.runtime.checkpointing import (atomic_save, restore_pending_rng_states, restore_run_state,
                                                   run_state, safe_load, strip_module_prefix, unwrap_model)
from nnunetv2_advmim.runtime.memory import cuda_step_peak_bytes
from nnunetv2_advmim.runtime.numerics import NonFiniteGuard, discriminator_collapsed, enable_determinism, seed_from_env
from nnunetv2_advmim.runtime.precision import amp_dtype, guarded_step, scaled_backward
from nnunetv2_advmim.runtime.safety import refuse_finished_run
from nnunetv2_advmim.runtime.weights import load_branch_weights, load_pretrained_branches, route_pretrained_weights
from nnunetv2_advmim.trainers.one_choice import OneChoice

PRETRAINED_ENV = {"hybrid": "nnUNet_advmim_pretrained_hybrid", "cnn": "nnUNet_advmim_pretrained_cnn"}
# the settings logged at the start of training (the log file and the logger's config)
SETTINGS = ("predict_with", "masked_domain", "adversarial", "mask_ratio", "zero_masked_input", "lambda_masked_labeled",
            "masked_labeled_ce_only", "lambda_u", "masked_unlabeled_dice", "u_rampup_fraction", "lambda_ct",
            "ct_rampup_fraction", "lambda_adv", "adv_rampup_fraction", "unlabeled_batch_dice", "mask_block_size",
            "initial_lr", "weight_decay", "sgd_momentum", "sgd_nesterov", "hybrid_optimizer", "hybrid_lr",
            "hybrid_weight_decay", "grad_clip", "disc_real", "disc_optimizer", "disc_lr", "disc_weight_decay",
            "disc_grad_clip", "disc_kernel_size", "disc_head_stride", "unlabeled_oversample_foreground",
            "pseudo_locations_every", "num_epochs", "num_iterations_per_epoch", "step_mode")
STEP_KEYS = ("sup", "cross_teaching", "masked_sup", "masked_ce", "masked_dice", "adversarial", "total", "certainty",
             "disc_loss", "disc_real", "disc_fake")


def _no_sync(net):
    return net.no_sync() if isinstance(net, DDP) else contextlib.nullcontext()


class nnUNetTrainerAdvMIM(nnUNetTrainer):
    """AdvMIM: masked domain and cross teaching between S and C; predicts with C. The adversarial loss is off
    (``adversarial``; ``nnUNetTrainerAdvMIM_withAdv`` turns it on).

    ``predict_with``: 'cnn' (C), 'hybrid' (S, the paper's choice) or 'ensemble' (mean of both softmaxes).
    ``-pretrained_weights`` of a checkpoint holding both networks starts both (:meth:`load_pretrained_weights`).
    """

    predict_with = "cnn"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # the weights of L_N (nnunetv2_advmim.methods.advmim)
        self.masked_domain = True
        self.adversarial = False  # the paper's adversarial loss (patch discriminators)
        self.mask_ratio = 0.7
        self.mask_seed = 12345
        # one stream per DDP rank (rank 0 = mask_seed): ranks mask their different batches with different blocks;
        # saved and restored per rank with the RNG states (checkpointing.run_state)
        self.mask_generator = torch.Generator().manual_seed(rank_seed(self.mask_seed, self.local_rank))
        self.lambda_u = 1.0
        self.lambda_masked_labeled = 1.0  # weight of the masked labeled term (nnU-Net's loss on masked x_l)
        self.lambda_ct = 0.1
        self.ct_rampup_fraction = 0.4  # sigmoid ramp-up of lambda_ct over the first 40 % of the iterations
        self.lambda_adv = 0.001
        self.disc_loss_weight = 0.1
        # the official code's loss choices (nnUNetTrainerAdvMIM_paper): wDice in the masked unlabeled term (False: wCE
        # only), the networks whose masked labeled term is nnU-Net's CE alone (the official code: S), and whether
        # masked input voxels are zeroed before the stem (the official code only replaces the stem features)
        self.masked_unlabeled_dice = True
        self.masked_labeled_ce_only = ()
        self.zero_masked_input = True
        # choices the paper leaves open or makes for other data; the defaults are the paper's (docs/advmim.md)
        self.u_rampup_fraction = 0.0  # sigmoid ramp-up of lambda_u over this fraction of the iterations (0: none)
        self.adv_rampup_fraction = 0.0  # the same for lambda_adv
        self.unlabeled_batch_dice = False  # Dice terms on x_u over the batch (True), per sample (False), or the plan's (None)
        self.mask_block_size = None  # None: the network's total downsampling per axis; an int or a tuple: voxels
        self.disc_real = "labeled"  # the discriminator's "real" maps: p(N(x_l)) ("labeled") or p(N(x_u)) ("unlabeled")
        self.unlabeled_batch_size = None  # None: the plan's batch size (per GPU under DDP, as nnU-Net splits it)
        # foreground-aware unlabeled crops: this share of each unlabeled batch is centred on the foreground of the
        # ensemble's pseudo-labels (0: random crops, the paper's), recomputed every pseudo_locations_every epochs
        # for up to pseudo_locations_max_cases cases of the pool (a window that cycles through it)
        self.unlabeled_oversample_foreground = 0.0
        self.pseudo_locations_every = 5
        self.pseudo_locations_max_cases = 64
        self._pseudo_cursor = 0
        # optimizers (docs/advmim.md): C keeps nnU-Net's SGD + poly (self.initial_lr, self.weight_decay);
        # S (transformer blocks) AdamW + linear warm-up + poly, the settings of nnU-Net's Primus trainers
        self.hybrid_lr = 3e-4
        self.hybrid_weight_decay = 5e-2
        self.hybrid_betas = (0.9, 0.98)
        self.hybrid_warmup_fraction = 0.05
        self.hybrid_optimizer = "adamw"  # or "sgd": the same SGD and poly schedule as C (the official code)
        self.sgd_momentum = 0.99  # C's SGD (and S's with hybrid_optimizer "sgd"): nnU-Net's momentum and Nesterov
        self.sgd_nesterov = True
        self.disc_optimizer = "adam"  # "adam" (constant disc_lr) or "sgd" (momentum 0.9, poly decay of disc_lr)
        self.disc_lr = 1e-4
        self.disc_betas = (0.9, 0.99)
        self.disc_weight_decay = 0.0
        self.disc_grad_clip = None  # gradient-norm clipping of the discriminators (None: none)
        self.disc_kernel_size = 3  # 4 with disc_head_stride 2: the official discriminator (PatchDiscriminator)
        self.disc_head_stride = 1
        self.grad_clip = 12.0
        # execution: pass scheduling, mixed precision, torch.compile (None: nnU-Net's rule). "auto": the fastest mode
        # whose estimated peak fits the GPU ('memory' on the CPU), chosen in initialize (_choose_step_mode)
        self.step_mode = "auto"
        self.amp = "auto"
        self.compile_networks = None
        self.branches = self.discriminators = self.branch_optimizers = self.branch_schedulers = None
        self.disc_optimizers = self.disc_schedulers = None
        self.disc_grad_scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" else None
        self.nonfinite_guard = NonFiniteGuard(max_consecutive=20, log=self.print_to_log_file)
        self.deterministic_seed = seed_from_env()  # nnUNet_advmim_seed: seeded, deterministic algorithms (docs/robustness.md)
        if self.deterministic_seed is not None:
            enable_determinism(self.deterministic_seed)
        self._epoch_lambda_ct = []
        self._register_log_keys()

    # ------------------------------------------------------------------ networks
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        """The network ``predict_with`` names (what ``nnUNetv2_predict`` rebuilds and ``network_weights`` holds)."""
        return build_branch(cls.predict_with, configuration_manager, num_input_channels, num_output_channels,
                            enable_deep_supervision)

    def _build(self, kind: str) -> torch.nn.Module:
        return build_branch(kind, self.configuration_manager, self.num_input_channels,
                            self.label_manager.num_segmentation_heads, self.enable_deep_supervision)

    def _compile_branches(self) -> bool:
        return super()._do_i_compile() if self.compile_networks is None else bool(self.compile_networks)

    def _do_i_compile(self):
        return False  # nnU-Net's own compile of self.network is replaced by _compile_branches (S and C)

    def initialize(self):
        if self.was_initialized:
            raise RuntimeError("You have called self.initialize even though the trainer was already initialized.")
        if self.label_manager.has_regions:
            raise NotImplementedError(f"{self.__class__.__name__}: region-based training (sigmoid outputs) is not "
                                      f"supported; AdvMIM's pseudo-labels are softmax argmax labels.")
        self._set_batch_size_and_oversample()
        self.num_input_channels = determine_num_input_channels(self.plans_manager, self.configuration_manager,
                                                               self.dataset_json)
        self.network = self.build_network_architecture(
            self.plans_manager, self.configuration_manager, self.num_input_channels,
            self.label_manager.num_segmentation_heads, self.enable_deep_supervision).to(self.device)
        nets = {"hybrid": self.network.hybrid, "cnn": self.network.cnn} if isinstance(self.network, AdvMIMEnsemble) \
            else {self.predict_with: self.network}
        for b in BRANCHES:
            if b not in nets:
                nets[b] = self._build(b).to(self.device)
            path = os.environ.get(PRETRAINED_ENV[b])
            if path:
                load_branch_weights(nets[b], path, b)
                self.print_to_log_file(f"Loaded {b} branch weights from {path} (${PRETRAINED_ENV[b]})")
        for net in nets.values():
            net.zero_masked_input = self.zero_masked_input
        self.discriminators = self._build_discriminators(nets["cnn"]) if self.masked_domain and self.adversarial \
            else {}
        self._choose_step_mode(nets["cnn"])  # before DDP wrapping (its settings depend on the mode) and compiling
        self.optimizer, self.lr_scheduler = self.configure_optimizers(nets)
        if self._compile_branches():
            self.print_to_log_file("Using torch.compile for both AdvMIM networks...")
            nets = {b: torch.compile(m) for b, m in nets.items()}
        if self.is_ddp:
            # memory mode and CTCT leave some parameters without gradient in the synchronised backward
            unused = ddp_find_unused_parameters(self.step_mode, self.masked_domain)
            wrap = lambda m: DDP(torch.nn.SyncBatchNorm.convert_sync_batchnorm(m), device_ids=[self.local_rank],
                                 find_unused_parameters=unused)
            nets = {b: wrap(m) for b, m in nets.items()}
            self.discriminators = {b: self._ddp_discriminator(m) for b, m in self.discriminators.items()}
            self.network = nets[self.predict_with] if self.predict_with in nets else \
                AdvMIMEnsemble(unwrap_model(nets["hybrid"]), unwrap_model(nets["cnn"]))
        self.branches = nets
        self.loss = self._build_loss()
        self.masked_labeled_loss = {b: self._build_ce_loss() for b in self.masked_labeled_ce_only}
        # nnUNetv2_train -pretrained_weights loads into self.network only; a checkpoint of both networks (joint MIM
        # pretraining, nnUNetTrainerAnatoMask_AdvMIM) must reach S and C (load_pretrained_weights below)
        route_pretrained_weights(self.network, self.load_pretrained_weights)
        self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        self.was_initialized = True
        settings = {k: getattr(self, k) for k in SETTINGS}
        self.print_to_log_file(f"AdvMIM ({self.__class__.__name__}): "
                               + ", ".join(f"{k}={v}" for k, v in settings.items())
                               + f"; unlabeled Dice over the batch {self._unlabeled_batch_dice()}")
        self.logger.update_config({"hparas": {"advmim": settings}})

    def _choose_step_mode(self, cnn: torch.nn.Module) -> None:
        """Resolve ``step_mode = "auto"`` (``methods.advmim.choose_step_mode``) and log the choice and why. On a GPU
        the stock step's memory is measured as one forward + backward of C (the plan's CNN) at the plan's batch and
        patch; the memory available is what the driver reports free plus what this process holds already. DDP ranks
        agree on the most memory-saving of their choices. Explicit modes are kept as they are."""
        if self.step_mode != "auto":
            return
        free = stock = None
        if self.device.type == "cuda":
            x = torch.zeros((self.batch_size, self.num_input_channels, *self.configuration_manager.patch_size),
                            device=self.device)
            stock = cuda_step_peak_bytes(cnn, x, self._autocast)
            free = torch.cuda.mem_get_info(self.device)[0] + torch.cuda.memory_reserved(self.device)
        mode, reason = choose_step_mode(free, stock, self.device.type)
        if self.is_ddp:
            modes = [None] * dist.get_world_size()
            dist.all_gather_object(modes, mode)
            if most_memory_saving(modes) != mode:
                mode, reason = most_memory_saving(modes), f"the mode every rank can afford ({modes})"
        self.step_mode = mode
        self.print_to_log_file(f"step_mode 'auto' -> '{mode}': {reason}")

    def configure_optimizers(self, nets=None):
        """C: nnU-Net's SGD + poly. S: AdamW + warm-up + poly (``hybrid_optimizer = "sgd"``: C's SGD and poly).
        D: Adam, constant (or SGD + poly, ``disc_optimizer``). Returns the predicting network's for nnU-Net's hooks."""
        if self.hybrid_optimizer not in ("adamw", "sgd"):
            raise ValueError(f"hybrid_optimizer must be 'adamw' or 'sgd', got {self.hybrid_optimizer!r}")
        nets = nets or {b: unwrap_model(m) for b, m in self.branches.items()}

        def sgd(net):
            opt = torch.optim.SGD(net.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                  momentum=self.sgd_momentum, nesterov=self.sgd_nesterov)
            return opt, PolyLRScheduler(opt, self.initial_lr, self.num_epochs)

        made = {"cnn": sgd(nets["cnn"])}
        if self.hybrid_optimizer == "sgd":
            made["hybrid"] = sgd(nets["hybrid"])
        else:
            hyb_opt = torch.optim.AdamW(nets["hybrid"].parameters(), self.hybrid_lr, betas=self.hybrid_betas,
                                        weight_decay=self.hybrid_weight_decay)
            warmup = max(1, int(round(self.hybrid_warmup_fraction * self.num_epochs)))
            made["hybrid"] = (hyb_opt, EpochLR(hyb_opt, lambda e: warmup_poly_lr(e, self.num_epochs, self.hybrid_lr,
                                                                                 warmup)))
        self.branch_optimizers = {b: opt for b, (opt, _) in made.items()}
        self.branch_schedulers = {b: sched for b, (_, sched) in made.items()}
        if self.disc_real not in ("labeled", "unlabeled"):
            raise ValueError(f"disc_real must be 'labeled' or 'unlabeled', got {self.disc_real!r}")
        self._build_disc_optimizers()
        primary = "cnn" if self.predict_with == "cnn" else "hybrid"
        return self.branch_optimizers[primary], self.branch_schedulers[primary]

    def _build_discriminators(self, cnn: torch.nn.Module) -> dict:
        conv_op = unwrap_model(cnn).encoder.conv_op
        patch = self.configuration_manager.patch_size
        if min(PatchDiscriminator.output_size(patch, 4, self.disc_kernel_size, self.disc_head_stride)) < 1:
            raise ValueError(f"{self.__class__.__name__}: the discriminator with {self.disc_kernel_size}x"
                             f"{self.disc_kernel_size} kernels and a stride-{self.disc_head_stride} head reduces the "
                             f"plan's patch {tuple(patch)} to nothing; set disc_kernel_size = 3 and disc_head_stride "
                             f"= 1 (the default discriminator) or use a plan with a larger patch")
        return {b: PatchDiscriminator(self.label_manager.num_segmentation_heads, conv_op,
                                      kernel_size=self.disc_kernel_size, head_stride=self.disc_head_stride).to(self.device)
                for b in BRANCHES}

    def _build_ce_loss(self):
        """nnU-Net's own loss (deep supervision and ignore label as ``_build_loss``) with the Dice weight 0: CE alone."""
        loss = self._build_loss()
        (loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss).weight_dice = 0
        return loss

    def _ddp_discriminator(self, d: torch.nn.Module) -> torch.nn.Module:
        return DDP(d, device_ids=[self.local_rank])

    def _build_disc_optimizers(self) -> None:
        made = {b: discriminator_optimizer(d.parameters(), self.disc_optimizer, self.disc_lr, self.num_epochs,
                                           betas=self.disc_betas, weight_decay=self.disc_weight_decay)
                for b, d in self.discriminators.items()}
        self.disc_optimizers = {b: opt for b, (opt, _) in made.items()}
        self.disc_schedulers = {b: sched for b, (_, sched) in made.items() if sched is not None}

    def _disc_settings(self) -> dict:
        return {"optimizer": self.disc_optimizer, "lr": self.disc_lr, "grad_clip": self.disc_grad_clip}

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

    def set_deep_supervision_enabled(self, enabled: bool):
        for m in self.branches.values():
            unwrap_model(m).decoder.deep_supervision = enabled

    # ------------------------------------------------------------------ data
    def get_dataloaders(self):
        return get_semisup_dataloaders(self, unlabeled_batch_size=self.unlabeled_batch_size)

    def on_train_start(self):
        refuse_finished_run(self)  # before anything is written: never train over a finished run unless asked
        refuse_fold_all_under_budget(self.preprocessed_dataset_folder_base, self.fold, self.__class__.__name__)
        super().on_train_start()
        restore_pending_rng_states(self)

    def on_train_end(self):
        super().on_train_end()
        if self.dataloader_train is not None and hasattr(self.dataloader_train, "_finish"):
            self.dataloader_train._finish()

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self):
        self._maybe_refresh_pseudo_locations()  # before the branches go back to train mode
        for m in list(self.branches.values()) + list(self.discriminators.values()):
            m.train()
        for b, s in self.branch_schedulers.items():
            if s is not self.lr_scheduler:
                s.step(self.current_epoch)
        for s in (self.disc_schedulers or {}).values():
            s.step(self.current_epoch)
        super().on_train_epoch_start()  # steps self.lr_scheduler, logs its lr
        self.print_to_log_file(f"lr hybrid {self.branch_optimizers['hybrid'].param_groups[0]['lr']:.2e}, "
                               f"cnn {self.branch_optimizers['cnn'].param_groups[0]['lr']:.2e}")
        self._epoch_iteration = 0
        self._epoch_lambda_ct = []

    def _maybe_refresh_pseudo_locations(self) -> None:
        if self.unlabeled_oversample_foreground > 0 and refresh_due(
                self.current_epoch, self.pseudo_locations_every,
                bool(self.dataloader_train.unlabeled_loader.pseudo_locations)):
            self._refresh_pseudo_locations()

    @torch.no_grad()
    def _refresh_pseudo_locations(self) -> None:
        """Predict the next window of unlabeled cases with the ensemble of S and C (sliding window, no mirroring),
        store the foreground locations of the argmax with the unlabeled loader (``data.pseudo_sampling``) and turn
        its oversampling on. Under DDP each rank predicts a share of the window and all ranks get every result."""
        loader = self.dataloader_train
        keys, self._pseudo_cursor = next_cases(loader.unlabeled_loader.indices, self._pseudo_cursor,
                                               self.pseudo_locations_max_cases)
        mine = keys[self.local_rank::dist.get_world_size()] if self.is_ddp else keys
        nets = {b: unwrap_model(m, keep_compiled=True) for b, m in self.branches.items()}
        self.set_deep_supervision_enabled(False)
        try:
            predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                        perform_everything_on_device=True, device=self.device, verbose=False,
                                        verbose_preprocessing=False, allow_tqdm=False)
            ensemble = AdvMIMEnsemble(nets["hybrid"], nets["cnn"])
            predictor.manual_initialization(ensemble, self.plans_manager, self.configuration_manager, None,
                                            self.dataset_json, self.__class__.__name__, None)
            predictor.network = ensemble  # the branches as they run: undo the predictor's own torch.compile wrap
            found = predict_locations(predictor, loader.unlabeled_loader._data, mine,
                                      self.label_manager.foreground_labels, seed=self.current_epoch)
        finally:
            self.set_deep_supervision_enabled(self.enable_deep_supervision)
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, found)
            found = {k: v for g in gathered for k, v in g.items()}
        locations = {**loader.unlabeled_loader.pseudo_locations, **found}
        with_fg = sum(any(len(v) for v in locs.values()) for locs in found.values())
        self.print_to_log_file(f"Pseudo-label locations of {len(found)} unlabeled cases ({with_fg} with foreground); "
                               f"{self.unlabeled_oversample_foreground:.0%} of unlabeled crops centred on them")
        loader.update_unlabeled(pseudo_locations=locations,
                                oversample_foreground_percent=self.unlabeled_oversample_foreground)

    def _rampup(self, fraction: float = None) -> float:
        """Sigmoid ramp-up factor now, over ``fraction`` of the iterations (default: lambda_ct's)."""
        fraction = self.ct_rampup_fraction if fraction is None else fraction
        total = self.num_epochs * self.num_iterations_per_epoch
        it = self.current_epoch * self.num_iterations_per_epoch + getattr(self, "_epoch_iteration", 0)
        return sigmoid_rampup(it, fraction * total)

    def _unlabeled_batch_dice(self) -> bool:
        if self.unlabeled_batch_dice is None:
            return bool(self.configuration_manager.batch_dice)
        return bool(self.unlabeled_batch_dice)

    def _loss_weights(self) -> AdvMIMWeights:
        return AdvMIMWeights(lambda_u=self.lambda_u, lambda_ct=self.lambda_ct, lambda_adv=self.lambda_adv,
                             rampup=self._rampup(), rampup_u=self._rampup(self.u_rampup_fraction),
                             rampup_adv=self._rampup(self.adv_rampup_fraction),
                             batch_dice=self._unlabeled_batch_dice(), lambda_ml=self.lambda_masked_labeled,
                             masked_unlabeled_dice=self.masked_unlabeled_dice)

    def _masks(self, shape) -> dict:
        """Per network, the mask of ``[x_l; x_u]`` (``shape`` = that batch's input shape): a block mask on the
        network's own grid, or a voxel mask when ``mask_block_size`` sets the block."""
        masks = {}
        generator = getattr(self, "mask_generator", None)  # per rank (DDP ranks draw different masks)
        for b, net in self.branches.items():
            net = unwrap_model(net)
            spatial = tuple(shape[2:])
            if self.mask_block_size is None:
                masks[b] = block_mask(shape[0], net.mask_grid(spatial), self.mask_ratio, generator, self.device)
                continue
            block = chosen_block_size(spatial, net.mask_block_size(spatial), self.mask_block_size)
            m = block_mask(shape[0], mask_grid(spatial, block), self.mask_ratio, generator)
            masks[b] = upsample_mask(m, spatial, block).to(self.device)
        return masks

    def _amp_dtype(self):
        """None (float32), torch.bfloat16 or torch.float16 from ``self.amp`` (CUDA only; the CPU runs float32)."""
        return amp_dtype(self.amp, self.device)

    def _autocast(self):
        dtype = self._amp_dtype()
        return autocast(self.device.type, dtype=dtype) if dtype is not None else dummy_context()

    def _scaler(self, which: str = "net"):
        """nnU-Net's GradScaler (or the discriminators' own) when training in fp16, else None (bf16/float32)."""
        if self._amp_dtype() != torch.float16:
            return None
        attr = "grad_scaler" if which == "net" else "disc_grad_scaler"
        if getattr(self, attr) is None:
            setattr(self, attr, torch.amp.GradScaler("cuda"))
        return getattr(self, attr)

    def _backward(self, loss: torch.Tensor) -> None:
        scaled_backward(loss, self._scaler())

    def train_step(self, batch: dict) -> dict:
        """One AdvMIM iteration. No host synchronisation except the one finiteness check."""
        x_l = batch["data"].to(self.device, non_blocking=True)
        x_u = batch["data_unlabeled"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        weights = self._loss_weights()
        for opt in list(self.branch_optimizers.values()) + list(self.disc_optimizers.values()):
            opt.zero_grad(set_to_none=True)
        masks = None
        if self.masked_domain:
            masks = self._masks((x_l.shape[0] + x_u.shape[0],) + tuple(x_l.shape[1:]))
        out = advmim_generator_step(
            self.branches, x_l, target, x_u, self.loss, masks,
            {b: unwrap_model(d) for b, d in self.discriminators.items()}, self.step_mode,
            backward=self._backward, autocast=self._autocast, no_sync=_no_sync, ddp=self.is_ddp, weights=weights,
            masked_labeled_loss=self.masked_labeled_loss)
        terms = out["terms"]
        real = out["real"] if self.disc_real == "labeled" else \
            {b: torch.softmax(logits, 1) for b, logits in out["logits_u"].items()}

        disc_losses = {}
        for b, d in self.discriminators.items():  # discriminators on detached maps (backward after the check)
            with self._autocast():
                dl = discriminator_loss(d, real[b], out["fake"][b], self.disc_loss_weight)
            disc_losses[b] = dl["loss"]
            terms[b].update({"disc_loss": dl["loss"].detach().float(), "disc_real": dl["real"],
                             "disc_fake": dl["fake"]})

        checked = {f"{b}_{k}": terms[b][k] for b in BRANCHES for k in ("total", "disc_loss") if k in terms[b]}
        ok = guarded_step(self.branch_optimizers, self._scaler(), clip=self.grad_clip, guard=self.nonfinite_guard,
                          checked=checked)  # the one host sync of the step
        if ok and disc_losses:  # each discriminator with its own optimizer (and GradScaler under fp16)
            guarded_step({b: self.disc_optimizers[b] for b in disc_losses}, self._scaler("disc"), losses=disc_losses,
                         clip=self.disc_grad_clip)
        self._epoch_iteration = getattr(self, "_epoch_iteration", 0) + 1
        zero = x_l.new_zeros((), dtype=torch.float32)
        values = torch.stack([terms[b].get(k, zero).float() for b in BRANCHES for k in STEP_KEYS])
        self._epoch_lambda_ct.append(self.lambda_ct * weights.rampup)
        return {"loss": (terms["hybrid"]["total"] + terms["cnn"]["total"]).detach(), "advmim_terms": values,
                "finite": ok}

    @staticmethod
    def step_terms(output: dict) -> dict:
        """``train_step``'s output as ``{"loss": float, "<branch>_<term>": float, ...}`` (syncs; for tests/debugging)."""
        keys = [f"{b}_{k}" for b in BRANCHES for k in STEP_KEYS]
        return {"loss": float(output["loss"]), **dict(zip(keys, output["advmim_terms"].tolist()))}

    def on_train_epoch_end(self, train_outputs: List[dict]):
        """nnU-Net's ``train_losses`` and our per-term means, from tensors kept on the device during the epoch
        (one transfer per epoch). Steps skipped as non-finite are left out of the means."""
        kept = [o for o in train_outputs if o.get("finite", True)] or train_outputs
        loss = torch.stack([o["loss"].float() for o in kept]).mean()
        values = torch.cat([loss[None], torch.stack([o["advmim_terms"] for o in kept]).mean(0)]).cpu().numpy()
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, values)
            values = np.mean(np.stack(gathered), 0)
        self.logger.log("train_losses", float(values[0]), self.current_epoch)
        keys = [f"{b}_{k}" for b in BRANCHES for k in STEP_KEYS]
        for k, v in zip(keys, values[1:]):
            self.logger.log(f"advmim_{k}", float(v), self.current_epoch)
        self.logger.log("advmim_lambda_ct", float(np.mean(self._epoch_lambda_ct)) if self._epoch_lambda_ct else 0.0,
                        self.current_epoch)
        self._epoch_lambda_ct = []
        hist = self.logger.local_logger.my_fantastic_logging
        for b in self.discriminators:
            if discriminator_collapsed(hist.get(f"advmim_{b}_disc_loss", [])):
                self.print_to_log_file(f"WARNING: the {b} discriminator's loss has stayed near 0 for many epochs: "
                                       f"adversarial training has collapsed (D separates original and masked domain "
                                       f"perfectly, so its generator signal is uninformative). Consider a lower "
                                       f"disc_lr or lambda_adv, or nnUNetTrainerAdvMIM (no adversarial loss).")

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self):
        for m in self.branches.values():
            m.eval()
        self.network.eval()

    def validation_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        with self._autocast():
            outs = {b: net(data) for b, net in self.branches.items()}
            out = AdvMIMEnsemble.combine(outs["hybrid"], outs["cnn"]) if self.predict_with == "ensemble" \
                else outs[self.predict_with]
            loss = self.loss(out, target)
        t0 = target[0] if isinstance(target, list) else target
        result = {"loss": loss.detach().cpu().numpy()}
        for name, o in [("", out)] + [(f"_{b}", outs[b]) for b in BRANCHES]:
            tp, fp, fn = self._hard_tp_fp_fn(full_resolution(o), t0)
            result.update({f"tp_hard{name}": tp, f"fp_hard{name}": fp, f"fn_hard{name}": fn})
        return result

    def _hard_tp_fp_fn(self, output: torch.Tensor, target: torch.Tensor):
        """Foreground tp/fp/fn of the argmax segmentation, as nnU-Net's ``validation_step`` (ignore label masked)."""
        seg = output.argmax(1)[:, None]
        onehot = torch.zeros(output.shape, device=output.device, dtype=torch.float16).scatter_(1, seg, 1)
        mask = None
        if self.label_manager.has_ignore_label:
            mask = (target != self.label_manager.ignore_label).float()
            target = torch.where(target == self.label_manager.ignore_label, torch.zeros_like(target), target)
        tp, fp, fn, _ = get_tp_fp_fn_tn(onehot, target, axes=[0] + list(range(2, output.ndim)), mask=mask)
        return tuple(v.detach().cpu().numpy()[1:] for v in (tp, fp, fn))

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        super().on_validation_epoch_end(val_outputs)
        outputs = collate_outputs(val_outputs)
        for b in BRANCHES:
            tp, fp, fn = (np.sum(outputs[f"{k}_hard_{b}"], 0) for k in ("tp", "fp", "fn"))
            if self.is_ddp:
                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, (tp, fp, fn))
                tp, fp, fn = (np.sum([g[i] for g in gathered], 0) for i in range(3))
            dice = [2 * i / (2 * i + j + k) if (2 * i + j + k) > 0 else np.nan for i, j, k in zip(tp, fp, fn)]
            self.logger.log(f"advmim_{b}_pseudo_dice", float(np.nanmean(dice)) if not np.all(np.isnan(dice))
                            else float("nan"), self.current_epoch)

    def on_epoch_end(self):
        log = self.logger.local_logger.my_fantastic_logging
        self.print_to_log_file("AdvMIM " + ", ".join(
            f"{k[7:]} {log[k][-1]:.4f}" for k in self._all_log_keys() if log.get(k)))
        super().on_epoch_end()  # increments current_epoch
        if self.local_rank == 0:
            plot_advmim_progress(log, self._plot_groups(), join(self.output_folder, "progress_advmim.png"))

    # ------------------------------------------------------------------ logging
    @staticmethod
    def _step_log_keys():
        return [f"{b}_{k}" for b in BRANCHES for k in STEP_KEYS] + ["lambda_ct"]

    def _all_log_keys(self):
        return [f"advmim_{k}" for k in self._step_log_keys()] + [f"advmim_{b}_pseudo_dice" for b in BRANCHES]

    def _register_log_keys(self):
        log = self.logger.local_logger.my_fantastic_logging
        for k in self._all_log_keys():
            log.setdefault(k, [])

    def _plot_groups(self):
        g = {f"{b} losses": [f"advmim_{b}_{k}" for k in ("sup", "masked_sup", "masked_ce", "masked_dice",
                                                        "cross_teaching", "total")] for b in BRANCHES}
        g["adversarial (generator) and discriminator"] = [f"advmim_{b}_{k}" for b in BRANCHES for k in (
            "adversarial", "disc_loss", "disc_real", "disc_fake")]
        g["mean pseudo-label certainty, lambda_ct(t)"] = [f"advmim_{b}_certainty" for b in BRANCHES] + \
            ["advmim_lambda_ct"]
        g["pseudo Dice per branch"] = [f"advmim_{b}_pseudo_dice" for b in BRANCHES] + ["mean_fg_dice"]
        return g

    # ------------------------------------------------------------------ checkpoints
    def per_rank_generators(self) -> dict:
        """Generators saved and restored per DDP rank with the RNG states (``checkpointing.run_state``)."""
        return {"mask_generator": self.mask_generator}

    def save_checkpoint(self, filename: str) -> None:
        """Stock layout (``network_weights`` = the inference network) plus ``advmim``: both branches, both
        discriminators, every optimizer and grad scaler; plus the RNG states and the non-finite guard's counters.
        Tensors shared with ``network_weights`` are stored once. Written atomically (temporary file + rename:
        a crash while writing leaves the previous checkpoint intact; ``checkpointing.atomic_save``). Every DDP rank
        calls this (nnU-Net does) and hands its RNG states to rank 0, which writes the file."""
        if self.disable_checkpointing:
            if self.local_rank == 0:
                self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        per_rank = run_state(self)  # collective under DDP: before the other ranks return
        if self.local_rank != 0:
            return
        checkpoint = {
            "network_weights": unwrap_model(self.network).state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema_after_this_epoch(),
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            "advmim": {
                "predict_with": self.predict_with,
                "weights": {b: unwrap_model(m).state_dict() for b, m in self.branches.items()},
                "optimizers": {b: o.state_dict() for b, o in self.branch_optimizers.items()},
                "discriminators": {b: unwrap_model(d).state_dict() for b, d in self.discriminators.items()},
                "disc_optimizers": {b: o.state_dict() for b, o in self.disc_optimizers.items()},
                "disc": self._disc_settings() if self.discriminators else None,
                "disc_grad_scaler": self.disc_grad_scaler.state_dict() if self.disc_grad_scaler is not None else None,
                # the schedules (poly, warm-up + poly, lambda_ct ramp-up) are functions of current_epoch
            },
            **per_rank,
        }
        atomic_save(checkpoint, filename)

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
        checkpoint = safe_load(filename_or_checkpoint, map_location=self.device) \
            if isinstance(filename_or_checkpoint, str) else filename_or_checkpoint
        if not self.was_initialized:
            self.initialize()
        extra = checkpoint.get("advmim")
        if extra is None:
            raise RuntimeError(f"{filename_or_checkpoint} has no AdvMIM state (not written by an AdvMIM trainer); to "
                               f"start from a stock checkpoint use -pretrained_weights (the network it predicts with, "
                               f"{self.predict_with}), ${PRETRAINED_ENV['cnn']} (C) or ${PRETRAINED_ENV['hybrid']} (S)")
        source = filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else "The checkpoint"
        self._check_same_training(source, extra, checkpoint.get("trainer_name"))
        for b, m in self.branches.items():
            unwrap_model(m).load_state_dict(strip_module_prefix(extra["weights"][b]))
            self.branch_optimizers[b].load_state_dict(extra["optimizers"][b])
        for b, d in self.discriminators.items():
            unwrap_model(d).load_state_dict(strip_module_prefix(extra["discriminators"][b]))
            self.disc_optimizers[b].load_state_dict(extra["disc_optimizers"][b])
        # fp16 scalers may be created lazily (_scaler): create them so a saved scale is not lost on resume
        if checkpoint.get("grad_scaler_state") is not None and self._scaler("net") is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
        if extra.get("disc_grad_scaler") is not None and self._scaler("disc") is not None:
            self.disc_grad_scaler.load_state_dict(extra["disc_grad_scaler"])
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._register_log_keys()
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        restore_run_state(self, checkpoint, filename_or_checkpoint if isinstance(filename_or_checkpoint, str)
                          else "The checkpoint")


class nnUNetTrainerAdvMIM_withAdv(nnUNetTrainerAdvMIM):
    """AdvMIM with the paper's adversarial loss: a patch discriminator per network tells its softmax maps of labeled
    images from those of masked unlabeled images, and lambda_adv pushes the masked predictions toward the former."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.adversarial = True


class nnUNetTrainerCTCT(nnUNetTrainerAdvMIM):
    """Ablation / baseline: cross teaching between CNN and Transformer only (no masked domain, no adversarial)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.masked_domain = False
        self.adversarial = False


class nnUNetTrainerAdvMIM_Hybrid(nnUNetTrainerAdvMIM):
    """AdvMIM (the default's training); validates and predicts with S (``network_weights`` = S), as the paper does."""

    predict_with = "hybrid"


class nnUNetTrainerAdvMIM_Ensemble(nnUNetTrainerAdvMIM):
    """AdvMIM (the default's training); validates and predicts with the mean of both softmaxes (``network_weights``
    = S and C)."""

    predict_with = "ensemble"


class nnUNetTrainerAdvMIM_demo(nnUNetTrainerAdvMIM):
    """AdvMIM on a short CPU schedule for the demo: 10 epochs x 6 iterations.

    Fewer iterations than ``nnUNetTrainer_demo`` because each one trains two networks, each on [x_l; x_u] plain
    and masked (the demo's timings: docs/demo.md)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 10
        self.num_iterations_per_epoch = 6
        self.num_val_iterations_per_epoch = 2


class nnUNetTrainerCTCT_demo(nnUNetTrainerCTCT):
    """CTCT on a short CPU schedule for the demo: 10 epochs x 10 iterations."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 10
        self.num_iterations_per_epoch = 10
        self.num_val_iterations_per_epoch = 2


class nnUNetTrainerAdvMIM_paper(nnUNetTrainerAdvMIM):
    """AdvMIM as the official code trains it, wherever an nnU-Net plan allows; predicts with S (docs/advmim.md lists
    every difference): adversarial loss on both networks with the official discriminator (4x4 kernels, a 4x4
    stride-2 head) and its SGD; S and C on SGD at lr 0.05, momentum 0.9, weight decay 1e-4, poly, clipping 5;
    cross teaching at a constant 0.1; masked unlabeled term wCE only; S's masked labeled term CE only; masked input
    voxels not zeroed; 120 epochs of 250 iterations (the official 30k iterations). Network, patch, batch size,
    augmentation and supervised loss are the plan's and nnU-Net's. With ``-pretrained_weights`` of a joint
    pretraining (``nnUNetTrainerAnatoMask_AdvMIM``), S starts pretrained, as the paper's S starts from ImageNet."""

    predict_with = "hybrid"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 120
        self.adversarial = True
        self.initial_lr = 0.05
        self.weight_decay = 1e-4
        self.sgd_momentum = 0.9
        self.sgd_nesterov = False
        self.hybrid_optimizer = "sgd"
        self.grad_clip = 5.0
        self.ct_rampup_fraction = 0.0
        self.masked_unlabeled_dice = False
        self.masked_labeled_ce_only = ("hybrid",)
        self.zero_masked_input = False
        self.disc_optimizer = "sgd"
        self.disc_lr = 0.05
        self.disc_weight_decay = 1e-4
        self.disc_grad_clip = 5.0
        self.disc_kernel_size = 4
        self.disc_head_stride = 2


# the official code's choices one at a time on top of the default (each the name of what it changes)
class nnUNetTrainerAdvMIM_maskedCEOnly(OneChoice, nnUNetTrainerAdvMIM):
    """The default with the masked unlabeled term wCE only (no wDice), as the official code."""
    choice = {"masked_unlabeled_dice": False}


class nnUNetTrainerAdvMIM_hybridMaskedCE(OneChoice, nnUNetTrainerAdvMIM):
    """The default with S's masked labeled term nnU-Net's CE alone (C keeps CE + Dice), as the official code."""
    choice = {"masked_labeled_ce_only": ("hybrid",)}


class nnUNetTrainerAdvMIM_constantCT(OneChoice, nnUNetTrainerAdvMIM):
    """The default with the cross-teaching weight 0.1 from the first iteration (no ramp-up), as the official code."""
    choice = {"ct_rampup_fraction": 0.0}


class nnUNetTrainerAdvMIM_officialDisc(OneChoice, nnUNetTrainerAdvMIM):
    """The default with the adversarial loss and the official discriminator (4x4 kernels, 4x4 stride-2 head) on SGD
    at lr 0.05, momentum 0.9, weight decay 1e-4, poly, clipping 5."""
    choice = {"adversarial": True, "disc_kernel_size": 4, "disc_head_stride": 2, "disc_optimizer": "sgd",
              "disc_lr": 0.05, "disc_weight_decay": 1e-4, "disc_grad_clip": 5.0}


class nnUNetTrainerAdvMIM_unzeroedInput(OneChoice, nnUNetTrainerAdvMIM):
    """The default with masked input voxels left as they are (only the stem features become the token), as the
    official code."""
    choice = {"zero_masked_input": False}
