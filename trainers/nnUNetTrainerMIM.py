"""Masked image modeling pretraining trainers: random blocks, AnatoMask, MPS-AMS.

Pretrain, then fine-tune with the stock flag::

    nnUNetv2_train D C F -tr nnUNetTrainerAnatoMask
    nnUNetv2_train D C F -tr nnUNetTrainer -pretrained_weights \
        $nnUNet_results/<Dataset>/nnUNetTrainerAnatoMask__nnUNetPlans__C/fold_F/checkpoint_final.pth

Every trainer trains the plans' downstream network (maskable subclass, outputs = input channels, no deep
supervision; ``nnunetv2_advmim.architectures.from_plans.build_pretraining_network``) on every training image plus the
unlabeled pool (random crops, no labels read), with the block-normalised MSE on masked blocks
(``nnunetv2_advmim.methods.mim.masked_reconstruction_loss``), AdamW (lr 1e-4, weight decay 1e-5), 20-epoch warm-up
then cosine, nnU-Net's gradient clipping (``runtime.precision.NNUNET_GRAD_CLIP``). ``_Hybrid`` variants train the
hybrid CNN-Transformer U-Net converted from the same plans (AdvMIM's S); a plan that already names
``HybridTransformerUNet`` (``-p nnUNetPlans_hybrid``) gives the same with the plain trainer names.

Validation: reconstruction loss on the fold's held-out images, always with *random* masks at ratio 0.6 drawn
from a fixed seed, so the curves of the three strategies are comparable (``val_losses`` in ``progress.png``).
``checkpoint_best.pth`` = lowest validation reconstruction loss. Checkpoints carry ``mim_state`` (mask generator
state, EMA teacher and its step counter, best loss), so ``--c`` continues the same teacher and schedules; the
schedules themselves are functions of the epoch. Checkpoints are written atomically (temporary file + rename,
``nnunetv2_advmim.runtime.checkpointing.atomic_save``), carry the RNG states of python/numpy/torch (restored after
``on_train_start``, so with ``nnUNet_n_proc_DA=0`` a resumed run continues bit for bit) and the non-finite
guard's counters, and are loaded with ``weights_only=True`` (``safe_load``: foreign pickled objects are refused).
``train_step`` skips the optimizer and EMA steps when the loss or the gradient norm is not finite
(``nnunetv2_advmim.runtime.numerics.NonFiniteGuard``; ``max_nonfinite_steps`` in a row stop training). With
``nnUNet_advmim_seed=<int>`` and ``nnUNet_n_proc_DA=0`` training is seeded and deterministic (two runs on the CPU
give identical losses). The final "validation" (also ``--val``) writes ``mim_examples.png`` (masked inputs,
masks with AnatoMask's hard / MPS-AMS's lesion-like blocks in red, targets and reconstructions) instead of
segmentation metrics.
"""
import os
from time import time

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs

from nnunetv2_advmim.architectures.from_plans import build_pretraining_network
from nnunetv2_advmim.data.pretraining_loader import get_pretraining_dataloaders
from nnunetv2_advmim.evaluation.mim_examples import example_batch, save_mim_figure
from nnunetv2_advmim.methods import mim
from nnunetv2_advmim.methods.ema import EMATeacher
from nnunetv2_advmim.methods.masking import block_mask, mask_grid, rank_seed
from nnunetv2_advmim.methods.schedules import WarmupCosineLRScheduler
from nnunetv2_advmim.runtime.checkpointing import (apply_nnunet_checkpoint, restore_pending_rng_states,
                                                   restore_run_state, safe_load, save_trainer_checkpoint)
from nnunetv2_advmim.runtime.distributed import all_gather
from nnunetv2_advmim.runtime.numerics import (SEED_ENV, NonFiniteGuard, enable_determinism, keep_cudnn_deterministic,
                                             seed_from_env)
from nnunetv2_advmim.runtime.precision import NNUNET_GRAD_CLIP, amp_dtype, autocast_context, guarded_step
from nnunetv2_advmim.runtime.safety import refuse_finished_run
from nnunetv2_advmim.trainers.advmim_pretraining import AdvMIMPretraining
from nnunetv2_advmim.trainers.one_choice import OneChoice
from nnunetv2_advmim.wrappers import unwrap_model

MIM_LOG_KEYS = ("mim_mask_ratio", "mim_hard_ratio")


class nnUNetTrainerMIM(nnUNetTrainer):
    """Random-block masked image modeling (SimMIM/SparK-style baseline): ratio 0.6, uniform blocks.

    ``pretrain_intensity_augmentation`` (every MIM trainer; default True): False leaves nnU-Net's intensity
    transforms out of the training pipeline (``pretraining_loader.pretraining_transforms``).
    """

    hybrid = False  # True: pretrain the hybrid CNN-Transformer converted from the plans (``_Hybrid`` variants)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-4
        self.weight_decay = 1e-5
        self.warmup_epochs = 20
        self.oversample_foreground_percent = 0.0  # no foreground oversampling: labels are never read
        self.enable_deep_supervision = False
        self.mask_ratio = 0.6
        self.val_mask_ratio = 0.6
        # False: no intensity transforms (noise, blur, brightness, contrast, low resolution, gamma) in the training
        # pipeline, so the reconstruction targets carry no augmentation noise; spatial transforms and mirroring stay
        self.pretrain_intensity_augmentation = True
        self.mask_seed = 12345
        self.num_example_images = 4
        # one stream per DDP rank (rank 0 = mask_seed): ranks mask their different images with different blocks
        self.mask_generator = torch.Generator().manual_seed(rank_seed(self.mask_seed, self.local_rank))
        self._best_val_loss = None
        self.max_nonfinite_steps = 20  # non-finite loss/gradient steps in a row before training stops
        self.nonfinite_guard = None  # built in initialize() (after variants changed max_nonfinite_steps)
        # RNG states of a resumed run: load_checkpoint sets them, the end of on_train_start applies them
        self.pending_rng_states = None
        for k in MIM_LOG_KEYS:
            self.logger.local_logger.my_fantastic_logging.setdefault(k, [])
        self.deterministic_seed = seed_from_env()
        if self.deterministic_seed is not None:
            enable_determinism(self.deterministic_seed)
            self.print_to_log_file(f"{SEED_ENV}={self.deterministic_seed}: seeded, deterministic algorithms on"
                                   + ("" if os.environ.get("nnUNet_n_proc_DA") == "0" else
                                      "; set nnUNet_n_proc_DA=0 too, augmentation workers deliver batches in a "
                                      "non-deterministic order"))

    def initialize(self):
        super().initialize()
        self.nonfinite_guard = NonFiniteGuard(self.max_nonfinite_steps, log=self.print_to_log_file)

    # ------------------------------------------------------------------------------ network, loss, data
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        """The plans' network, maskable, with ``num_input_channels`` outputs (``num_output_channels`` and deep
        supervision are ignored: a reconstruction has the input's channels)."""
        return build_pretraining_network(configuration_manager, num_input_channels, hybrid=cls.hybrid)

    def set_deep_supervision_enabled(self, enabled: bool):
        unwrap_model(self.network).decoder.deep_supervision = False

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, WarmupCosineLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.warmup_epochs)

    def _build_loss(self):
        return mim.masked_reconstruction_loss

    def get_dataloaders(self):
        return get_pretraining_dataloaders(self)

    def plot_network_architecture(self):
        pass  # hiddenlayer cannot trace forward(x, mask); nnU-Net only logs its failure anyway

    # ------------------------------------------------------------------------------ masking (per method)
    def mask_block(self, data: torch.Tensor) -> tuple:
        """Block edge per axis for this batch: the network's total downsampling."""
        return unwrap_model(self.network).mask_block_size(tuple(data.shape[2:]))

    def epoch_mask_ratio(self) -> float:
        return self.mask_ratio

    def epoch_hard_ratio(self) -> float:
        return 0.0

    def select_mask(self, data: torch.Tensor, block: tuple, generator: torch.Generator):
        """(mask, highlighted blocks or None) for one batch; both ``(B, *grid)`` bool on the data's device."""
        grid = mask_grid(data.shape[2:], block)
        return block_mask(data.shape[0], grid, self.epoch_mask_ratio(), generator, data.device), None

    def after_optimizer_step(self) -> None:
        pass

    def _autocast(self):
        return autocast_context(amp_dtype("fp16", self.device), self.device)  # nnU-Net's fp16 autocast on CUDA

    def mim_settings(self) -> dict:
        """The masking and data choices of this run, logged once at the start of training."""
        return {'mask_ratio': self.mask_ratio, 'val_mask_ratio': self.val_mask_ratio,
                'pretrain_intensity_augmentation': self.pretrain_intensity_augmentation}

    # ------------------------------------------------------------------------------ train / validate
    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.logger.log('mim_mask_ratio', self.epoch_mask_ratio(), self.current_epoch)
        self.logger.log('mim_hard_ratio', self.epoch_hard_ratio(), self.current_epoch)
        self.print_to_log_file(f"mask ratio {self.epoch_mask_ratio():.4f}, hard/lesion share "
                               f"{self.epoch_hard_ratio():.4f}")

    def train_step(self, batch: dict) -> dict:
        data = batch['data'].to(self.device, non_blocking=True)
        block = self.mask_block(data)
        mask, _ = self.select_mask(data, block, self.mask_generator)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            pred = self.network(data, mask=mask)
            loss = self.loss(pred, data, mask, block)
        ok = guarded_step({"": self.optimizer}, self.grad_scaler, losses={"": loss}, clip=NNUNET_GRAD_CLIP,
                          guard=self.nonfinite_guard, checked={'loss': loss})
        if ok:
            self.after_optimizer_step()
        return {'loss': loss.detach().cpu().numpy()}

    def on_train_epoch_end(self, train_outputs):
        """Mean training loss of the epoch over the applied steps (skipped non-finite steps are left out and
        counted by the guard; NaN when every step was skipped)."""
        losses = np.asarray(collate_outputs(train_outputs)['loss'], dtype=np.float64).ravel()
        losses = np.concatenate(all_gather(losses, self.is_ddp))
        finite = losses[np.isfinite(losses)]
        self.logger.log('train_losses', float(finite.mean()) if finite.size else float('nan'), self.current_epoch)

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self._val_generator = torch.Generator().manual_seed(self.mask_seed + 1)

    def validation_step(self, batch: dict) -> dict:
        data = batch['data'].to(self.device, non_blocking=True)
        block = self.mask_block(data)
        mask = block_mask(data.shape[0], mask_grid(data.shape[2:], block), self.val_mask_ratio, self._val_generator,
                          data.device)
        with self._autocast():
            loss = self.loss(self.network(data, mask=mask), data, mask, block)
        return {'loss': loss.detach().cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs):
        losses = collate_outputs(val_outputs)['loss']
        loss_here = float(np.vstack(all_gather(losses, self.is_ddp)).mean())
        self.logger.log('val_losses', loss_here, self.current_epoch)
        # no segmentation: the Dice entries of nnU-Net's logger stay NaN (progress.png plots losses)
        self.logger.log('mean_fg_dice', float('nan'), self.current_epoch)
        self.logger.log('dice_per_class_or_region', [float('nan')], self.current_epoch)

    def on_epoch_end(self):
        self.logger.log('epoch_end_timestamps', time(), self.current_epoch)
        tr = self.logger.get_value('train_losses', step=-1)
        val = self.logger.get_value('val_losses', step=-1)
        self.print_to_log_file('train_loss (masked reconstruction)', np.round(tr, decimals=4))
        self.print_to_log_file('val_loss (masked reconstruction, random masks)', np.round(val, decimals=4))
        self.print_to_log_file(f"Epoch time: {np.round(self.logger.get_value('epoch_end_timestamps', step=-1) - self.logger.get_value('epoch_start_timestamps', step=-1), decimals=2)} s")
        # best first, so checkpoint_latest carries this epoch's best loss (a resumed run compares against it)
        is_best = self._best_val_loss is None or val < self._best_val_loss
        if is_best:
            self._best_val_loss = val
        if (self.current_epoch + 1) % self.save_every == 0 and self.current_epoch != (self.num_epochs - 1):
            self.save_checkpoint(join(self.output_folder, 'checkpoint_latest.pth'))
        if is_best:
            self.print_to_log_file(f"New best validation reconstruction loss: {np.round(val, decimals=4)}")
            self.save_checkpoint(join(self.output_folder, 'checkpoint_best.pth'))
        if self.local_rank == 0:
            self.logger.plot_progress_png(self.output_folder)
        self.current_epoch += 1

    # ------------------------------------------------------------------------------ checkpoints
    def mim_state_dict(self) -> dict:
        return {'method': self.__class__.__name__, 'mask_generator': self.mask_generator.get_state(),
                'best_val_loss': self._best_val_loss}

    def load_mim_state_dict(self, state: dict) -> None:
        # mim_state holds rank 0's generator; every rank's own comes from the run state (restore_run_state)
        if not self.is_ddp or self.local_rank == 0:
            self.mask_generator.set_state(state['mask_generator'].cpu())  # CPU generator; the file may map to CUDA
        self._best_val_loss = state['best_val_loss']

    def per_rank_generators(self) -> dict:
        """Generators saved and restored per DDP rank with the RNG states (``checkpointing.run_state``)."""
        return {'mask_generator': self.mask_generator}

    def on_train_start(self):
        refuse_finished_run(self)  # before anything is written: never train over a finished run unless asked
        super().on_train_start()
        keep_cudnn_deterministic(self.deterministic_seed)  # nnUNetv2_train turns benchmarking on after __init__
        restore_pending_rng_states(self)
        self.print_to_log_file(f"{self.__class__.__name__} settings: "
                               + ", ".join(f"{k}={v}" for k, v in self.mim_settings().items()))

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus ``mim_state``, RNG states and the non-finite guard's counters, written
        atomically. Tensors are stored on the CPU, so stock ``load_pretrained_weights`` (which has no
        ``map_location``) also works on a machine without the GPU. Every DDP rank calls this (nnU-Net does) and
        hands its RNG states to rank 0, which writes the file."""
        weights = {k: v.detach().cpu() for k, v in unwrap_model(self.network).state_dict().items()}
        save_trainer_checkpoint(self, filename, {'mim_state': self.mim_state_dict(), **self.checkpoint_extras()},
                                network_weights=weights)

    def checkpoint_extras(self) -> dict:
        """Top-level checkpoint entries beyond nnU-Net's and ``mim_state`` (none here)."""
        return {}

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if not isinstance(filename_or_checkpoint, str):
            raise TypeError(f"{self.__class__.__name__}.load_checkpoint needs a checkpoint file path (nnU-Net 2.8.1 "
                            f"cannot load checkpoint dicts), got {type(filename_or_checkpoint).__name__}")
        checkpoint = safe_load(filename_or_checkpoint, map_location=self.device)
        if 'mim_state' not in checkpoint:
            raise RuntimeError(f"{filename_or_checkpoint} was written by {checkpoint.get('trainer_name')} and has no "
                               f"'mim_state' (mask generator, EMA teacher): it cannot resume {self.__class__.__name__}."
                               f" To start from its weights, use -pretrained_weights instead of --c.")
        apply_nnunet_checkpoint(self, checkpoint)
        self.load_mim_state_dict(checkpoint['mim_state'])
        restore_run_state(self, checkpoint, filename_or_checkpoint)

    # ------------------------------------------------------------------------------ final "validation"
    def perform_actual_validation(self, save_probabilities: bool = False):
        """No segmentation to validate: write the visual check ``mim_examples.png`` instead."""
        if self.local_rank != 0:
            return
        out = self.save_mim_examples(join(self.output_folder, 'mim_examples.png'))
        self.print_to_log_file(f"MIM pretraining: wrote the visual check {out} (no segmentation validation)")

    @torch.no_grad()
    def save_mim_examples(self, filename: str, num_images: int = None, seed: int = 0) -> str:
        """PNG of masked validation images, their masks, targets and reconstructions (``mim_visualize``)."""
        data = example_batch(self, num_images or self.num_example_images, seed).to(self.device)
        block = self.mask_block(data)
        generator = torch.Generator().manual_seed(seed)
        self.network.eval()
        mask, highlight = self.select_mask(data, block, generator)
        pred = self.network(data, mask=mask)
        return save_mim_figure(filename, data, mask, pred, block, highlight,
                               title=f"{self.__class__.__name__}, after {self.current_epoch} epochs")


class nnUNetTrainerAnatoMask(nnUNetTrainerMIM):
    """AnatoMask (Li et al., ECCV 2024): the EMA teacher's errors on a random mask pick hard blocks.

    Per iteration: random M1 (ratio 0.6); ``n_hard = floor(n_masked * r(epoch))`` highest-error blocks of M1
    (teacher's error scored by ``anatomask_ranking``: 'variance_weighted' = the error against block-normalised
    targets times the block's intensity variance, the default (docs/pretraining.md); 'normalised' (the
    loss's error alone) or 'raw', see ``mim.block_ranking_errors``), random others up to ``n_masked``; ``r`` =
    masking dynamics with ``r_max`` (0.5) and ``hard_schedule`` ('easy_to_hard' or 'hard_to_easy'). The teacher is
    updated after every optimizer step (decay 0.999 -> 0.9999 over the first quarter of all iterations).
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.r_max = 0.5
        self.hard_schedule = 'easy_to_hard'
        self.anatomask_ranking = 'variance_weighted'  # or 'normalised', 'raw' (mim.ANATOMASK_RANKINGS)
        self.ema_decay_start = 0.999
        self.ema_decay_end = 0.9999
        self.ema_ramp_fraction = 0.25
        self.teacher = None

    def initialize(self):
        if self.anatomask_ranking not in mim.ANATOMASK_RANKINGS:
            raise ValueError(f"{self.__class__.__name__}.anatomask_ranking must be one of {mim.ANATOMASK_RANKINGS}, "
                             f"got {self.anatomask_ranking!r}")
        super().initialize()
        self.teacher = self.new_teacher(self.network)

    def new_teacher(self, network) -> EMATeacher:
        """The EMA teacher of ``network`` (decay schedule over all iterations of this training)."""
        return EMATeacher(network, self.num_epochs * self.num_iterations_per_epoch, self.ema_decay_start,
                          self.ema_decay_end, self.ema_ramp_fraction)

    def epoch_hard_ratio(self) -> float:
        return mim.masking_dynamics_ratio(self.current_epoch, self.num_epochs, self.r_max, self.hard_schedule)

    def select_mask(self, data, block, generator):
        base = block_mask(data.shape[0], mask_grid(data.shape[2:], block), self.epoch_mask_ratio(), generator,
                          data.device)
        with self._autocast():  # the teacher's extra forward; errors are computed in float32
            return mim.anatomask_select(self.teacher, data, base, block, self.current_epoch, self.num_epochs,
                                        self.r_max, self.hard_schedule, generator, ranking=self.anatomask_ranking)

    def mim_settings(self) -> dict:
        return {**super().mim_settings(), 'r_max': self.r_max, 'hard_schedule': self.hard_schedule,
                'anatomask_ranking': self.anatomask_ranking, 'ema_decay_start': self.ema_decay_start,
                'ema_decay_end': self.ema_decay_end}

    def after_optimizer_step(self) -> None:
        self.teacher.update(self.network)

    def mim_state_dict(self) -> dict:
        state = super().mim_state_dict()
        state['teacher'] = {k: (v.detach().cpu() if torch.is_tensor(v) else v)
                            for k, v in self.teacher.state_dict().items()}
        state['teacher']['teacher'] = {k: v.detach().cpu() for k, v in self.teacher.teacher.state_dict().items()}
        return state

    def load_mim_state_dict(self, state: dict) -> None:
        super().load_mim_state_dict(state)
        if 'teacher' not in state:
            raise RuntimeError("The checkpoint's mim_state has no EMA teacher: it was not written by an AnatoMask "
                               "trainer and cannot resume one.")
        self.teacher.load_state_dict(state['teacher'])


class nnUNetTrainerMPSAMS(nnUNetTrainerMIM):
    """MPS-AMS (Wang et al., ICASSP 2023), reconstructed (no public code).

    Masked patches selection: per image, k-means on block intensity statistics; blocks of the rarest cluster
    (``n_lesion_clusters`` of ``n_clusters``) are lesion-like and masked first (up to ``lesion_fraction`` of
    the masked blocks), the rest at random. Adaptive masking: ratio rises linearly from ``ratio_start`` (0.25)
    to ``ratio_end`` (0.75) over training. No label is used. ``mpsams_exclude_flat`` (off by default): only blocks
    inside the foreground (at least ``mpsams_min_nonzero_fraction`` nonzero voxels) and not near-constant (std
    above ``mpsams_flat_std_fraction`` of the image's) are clustered and can be lesion-like
    (``mim.lesion_candidate_blocks``); the random part can still mask the others.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.ratio_start = 0.25
        self.ratio_end = 0.75
        self.n_clusters = 4
        self.n_lesion_clusters = 1
        self.kmeans_iters = 10
        self.lesion_fraction = 1.0
        self.mpsams_exclude_flat = False
        self.mpsams_flat_std_fraction = 0.05
        self.mpsams_min_nonzero_fraction = 0.5

    def epoch_mask_ratio(self) -> float:
        return mim.adaptive_mask_ratio(self.current_epoch, self.num_epochs, self.ratio_start, self.ratio_end)

    def epoch_hard_ratio(self) -> float:
        return self.lesion_fraction

    def select_mask(self, data, block, generator):
        return mim.mpsams_mask(data, block, self.epoch_mask_ratio(), generator, self.n_clusters,
                               self.n_lesion_clusters, self.kmeans_iters, self.lesion_fraction,
                               exclude_flat=self.mpsams_exclude_flat, flat_std_fraction=self.mpsams_flat_std_fraction,
                               min_nonzero_fraction=self.mpsams_min_nonzero_fraction)

    def mim_settings(self) -> dict:
        return {**super().mim_settings(), 'ratio_start': self.ratio_start, 'ratio_end': self.ratio_end,
                'n_clusters': self.n_clusters, 'n_lesion_clusters': self.n_lesion_clusters,
                'lesion_fraction': self.lesion_fraction, 'mpsams_exclude_flat': self.mpsams_exclude_flat,
                'mpsams_flat_std_fraction': self.mpsams_flat_std_fraction,
                'mpsams_min_nonzero_fraction': self.mpsams_min_nonzero_fraction}


# -------------------------------------------------------------------------------------------------- AdvMIM's two networks
class nnUNetTrainerMIM_AdvMIM(AdvMIMPretraining, nnUNetTrainerMIM):
    """Random-block MIM of both AdvMIM networks (C and S) in one run; load with ``nnUNetTrainerAdvMIM
    -pretrained_weights``."""


class nnUNetTrainerAnatoMask_AdvMIM(AdvMIMPretraining, nnUNetTrainerAnatoMask):
    """AnatoMask pretraining of both AdvMIM networks (C and S, one EMA teacher each) in one run; load with
    ``nnUNetTrainerAdvMIM -pretrained_weights``."""


class nnUNetTrainerMPSAMS_AdvMIM(AdvMIMPretraining, nnUNetTrainerMPSAMS):
    """MPS-AMS pretraining of both AdvMIM networks (C and S) in one run; load with ``nnUNetTrainerAdvMIM
    -pretrained_weights``."""


# -------------------------------------------------------------------------------------------------- variants
class nnUNetTrainerAnatoMask_HardToEasy(OneChoice, nnUNetTrainerAnatoMask):
    """AnatoMask with the hard-to-easy masking dynamics (r starts at r_max and falls to 0)."""
    choice = {"hard_schedule": "hard_to_easy"}


class nnUNetTrainerMIM_Hybrid(OneChoice, nnUNetTrainerMIM):
    """Random-block MIM of the hybrid CNN-Transformer U-Net (AdvMIM's S) from CNN plans."""
    choice = {"hybrid": True}


class nnUNetTrainerAnatoMask_Hybrid(OneChoice, nnUNetTrainerAnatoMask):
    """AnatoMask pretraining of the hybrid CNN-Transformer U-Net (AdvMIM's S) from CNN plans."""
    choice = {"hybrid": True}


class nnUNetTrainerMPSAMS_Hybrid(OneChoice, nnUNetTrainerMPSAMS):
    """MPS-AMS pretraining of the hybrid CNN-Transformer U-Net (AdvMIM's S) from CNN plans."""
    choice = {"hybrid": True}


# the demo's short CPU schedule: 10 epochs x 15 iterations, 2-epoch warm-up, lr 1e-3
DEMO_SCHEDULE = {"num_epochs": 10, "num_iterations_per_epoch": 15, "num_val_iterations_per_epoch": 2,
                 "warmup_epochs": 2, "initial_lr": 1e-3}


class nnUNetTrainerMIM_demo(OneChoice, nnUNetTrainerMIM):
    """Random MIM on the demo's short CPU schedule (``DEMO_SCHEDULE``)."""
    choice = DEMO_SCHEDULE


class nnUNetTrainerAnatoMask_demo(OneChoice, nnUNetTrainerAnatoMask):
    """AnatoMask on the demo's short CPU schedule (``DEMO_SCHEDULE``). With 150 updates the stock EMA decay
    (0.999 -> 0.9999) would leave the teacher at its initial weights, so the demo uses 0.9 -> 0.99 (same linear
    ramp over the first quarter)."""
    choice = {**DEMO_SCHEDULE, "ema_decay_start": 0.9, "ema_decay_end": 0.99}


class nnUNetTrainerMPSAMS_demo(OneChoice, nnUNetTrainerMPSAMS):
    """MPS-AMS on the demo's short CPU schedule (``DEMO_SCHEDULE``)."""
    choice = DEMO_SCHEDULE
