"""AdvMIM semi-supervised training and its variants inside nnU-Net.

``nnUNetv2_train D C F -tr nnUNetTrainerAdvMIM`` trains S (the hybrid CNN-Transformer) and C (the plan's CNN,
maskable subclass) on one labeled and one unlabeled batch per iteration (``nnunetv2_advmim.data.semisup_loader``).
``self.network`` is the network ``predict_with`` names (C by default), saved as ``network_weights`` and used by
``nnUNetv2_predict``. The algorithm (both networks' losses and both discriminators) is
``nnunetv2_advmim.methods.advmim.advmim_step``; ``train_step`` moves the batch, draws the masks, calls it, steps
the optimizers and logs.

The paper's adversarial loss is off by default (``adversarial``; ``nnUNetTrainerAdvMIM_withAdv`` trains it); why,
and the measurements behind every default, are in docs/advmim.md.

How the passes are scheduled is ``step_mode`` (``methods.step_modes``); the default ``auto`` picks the fastest mode
whose estimated peak fits the GPU and logs why. AMP: ``amp`` = ``auto`` (bf16 where the GPU supports it, else fp16
with nnU-Net's GradScaler), ``fp16`` or ``off``; the CPU runs in float32. S and C are compiled with
``torch.compile`` when nnU-Net would compile its network (CUDA, ``nnUNet_compile``).

Every setting is a class attribute; variants change some with ``OneChoice`` (``trainers/one_choice.py``): the main
ones below, the ablation arms in ``nnUNetTrainerAdvMIM_ablations.py``, shorter schedules in
``nnUNetTrainerAdvMIM_schedules.py`` and the demo's in ``nnUNetTrainer_demo.py``. Validation and progress logging
are the mixin ``advmim_progress.AdvMIMProgress``.
"""
import contextlib
import torch
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2_advmim.data.label_budget import check_label_budget_at_start
from nnunetv2_advmim.data.semisup_loader import get_semisup_dataloaders
from nnunetv2_advmim.evaluation.progress import pack_terms
from nnunetv2_advmim.methods.advmim import BRANCHES, AdvMIMWeights, advmim_step
from nnunetv2_advmim.methods.masking import network_masks, rank_seed
from nnunetv2_advmim.methods.schedules import sigmoid_rampup
from nnunetv2_advmim.runtime.checkpointing import restore_pending_rng_states
from nnunetv2_advmim.runtime.numerics import (NonFiniteGuard, enable_determinism, keep_cudnn_deterministic,
                                             seed_from_env)
from nnunetv2_advmim.runtime.precision import NNUNET_GRAD_CLIP, guarded_step, scaled_backward
from nnunetv2_advmim.runtime.safety import refuse_finished_run
from nnunetv2_advmim.runtime.weights import route_pretrained_weights
from nnunetv2_advmim.trainers.advmim_checkpoints import AdvMIMCheckpoints
from nnunetv2_advmim.trainers.advmim_networks import AdvMIMNetworks
from nnunetv2_advmim.trainers.advmim_progress import AdvMIMProgress
from nnunetv2_advmim.trainers.one_choice import OneChoice
from nnunetv2_advmim.wrappers import unwrap_model

# the settings logged at the start of training (the log file and the logger's config)
SETTINGS = ("predict_with", "masked_domain", "adversarial", "mask_ratio", "zero_masked_input", "lambda_masked_labeled",
            "masked_labeled_ce_only", "lambda_u", "masked_unlabeled_dice", "u_rampup_fraction", "lambda_ct",
            "ct_rampup_fraction", "lambda_adv", "adv_rampup_fraction", "unlabeled_batch_dice", "mask_block_size",
            "initial_lr", "weight_decay", "sgd_momentum", "sgd_nesterov", "hybrid_optimizer", "hybrid_lr",
            "hybrid_weight_decay", "grad_clip", "disc_real", "disc_optimizer", "disc_lr", "disc_weight_decay",
            "disc_grad_clip", "disc_kernel_size", "disc_head_stride", "unlabeled_oversample_foreground",
            "pseudo_locations_every", "num_epochs", "num_iterations_per_epoch", "step_mode")


def _no_sync(net):
    return net.no_sync() if isinstance(net, DDP) else contextlib.nullcontext()


class nnUNetTrainerAdvMIM(AdvMIMNetworks, AdvMIMCheckpoints, AdvMIMProgress, nnUNetTrainer):
    """AdvMIM: masked domain and cross teaching between S and C; predicts with C. The adversarial loss is off
    (``adversarial``; ``nnUNetTrainerAdvMIM_withAdv`` turns it on).

    ``predict_with``: 'cnn' (C), 'hybrid' (S, the paper's choice) or 'ensemble' (mean of both softmaxes).
    ``-pretrained_weights`` of a checkpoint holding both networks starts both (:meth:`load_pretrained_weights`).
    """

    predict_with = "cnn"
    # the loss L_N (methods.advmim): its parts and weights
    masked_domain = True
    adversarial = False  # the paper's adversarial loss (patch discriminators)
    mask_ratio = 0.7
    mask_seed = 12345
    mask_block_size = None  # None: the network's total downsampling per axis; an int or a tuple: voxels
    lambda_u = 1.0
    lambda_masked_labeled = 1.0  # weight of the masked labeled term (nnU-Net's loss on masked x_l)
    lambda_ct = 0.1
    ct_rampup_fraction = 0.4  # sigmoid ramp-up of lambda_ct over this fraction of the iterations
    lambda_adv = 0.001
    disc_loss_weight = 0.1
    u_rampup_fraction = 0.0  # the same for lambda_u (0: none)
    adv_rampup_fraction = 0.0  # the same for lambda_adv
    unlabeled_batch_dice = False  # Dice terms on x_u over the batch (True), per sample (False), or the plan's (None)
    disc_real = "labeled"  # the discriminator's "real" maps: p(N(x_l)) ("labeled") or p(N(x_u)) ("unlabeled")
    # the official code's loss choices (nnUNetTrainerAdvMIM_paper): wDice in the masked unlabeled term (False: wCE
    # only), the networks whose masked labeled term is nnU-Net's CE alone, whether masked input voxels are zeroed
    # before the stem (the official code only replaces the stem features)
    masked_unlabeled_dice = True
    masked_labeled_ce_only = ()
    zero_masked_input = True
    # data: the unlabeled batch (None: the plan's batch size, per GPU under DDP) and foreground-aware unlabeled crops
    # (this share centred on the foreground of the ensemble's pseudo-labels, 0: random crops as the paper),
    # recomputed every pseudo_locations_every epochs for up to pseudo_locations_max_cases cases of the pool
    unlabeled_batch_size = None
    unlabeled_oversample_foreground = 0.0
    pseudo_locations_every = 5
    pseudo_locations_max_cases = 64
    # optimizers (docs/advmim.md): C keeps nnU-Net's SGD + poly (initial_lr, weight_decay); S AdamW + linear warm-up
    # + poly, the settings of nnU-Net's Primus trainers ("sgd": C's SGD and poly, the official code)
    hybrid_optimizer = "adamw"
    hybrid_lr = 3e-4
    hybrid_weight_decay = 5e-2
    hybrid_betas = (0.9, 0.98)
    hybrid_warmup_fraction = 0.05
    sgd_momentum = 0.99  # C's SGD (and S's with hybrid_optimizer "sgd"): nnU-Net's momentum and Nesterov
    sgd_nesterov = True
    grad_clip = NNUNET_GRAD_CLIP
    disc_optimizer = "adam"  # "adam" (constant disc_lr) or "sgd" (momentum 0.9, poly decay of disc_lr)
    disc_lr = 1e-4
    disc_betas = (0.9, 0.99)
    disc_weight_decay = 0.0
    disc_grad_clip = None  # gradient-norm clipping of the discriminators (None: none)
    disc_kernel_size = 3  # 4 with disc_head_stride 2: the official discriminator (PatchDiscriminator)
    disc_head_stride = 1
    # execution: pass scheduling ("auto": chosen in initialize), mixed precision, torch.compile (None: nnU-Net's rule)
    step_mode = "auto"
    amp = "auto"
    compile_networks = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # one stream per DDP rank (rank 0 = mask_seed): ranks mask their different batches with different blocks;
        # saved and restored per rank with the RNG states (checkpointing.run_state)
        self.mask_generator = torch.Generator().manual_seed(rank_seed(self.mask_seed, self.local_rank))
        self.branches = self.discriminators = self.branch_optimizers = self.branch_schedulers = None
        self.disc_optimizers = self.disc_schedulers = None
        self.disc_grad_scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" else None
        self.nonfinite_guard = NonFiniteGuard(max_consecutive=20, log=self.print_to_log_file)
        self.deterministic_seed = seed_from_env()  # nnUNet_advmim_seed: seeded, deterministic (docs/robustness.md)
        if self.deterministic_seed is not None:
            enable_determinism(self.deterministic_seed)
        self._pseudo_cursor = 0
        self._pending_pseudo_sampling = None  # set by load_checkpoint, handed to the loader in on_train_start
        self._epoch_iteration = 0
        self._epoch_lambda_ct = []
        self._register_log_keys()

    # ------------------------------------------------------------------ networks (AdvMIMNetworks) and data
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
        nets = self._both_networks()
        self.discriminators = self._build_discriminators(nets["cnn"]) if self.masked_domain and self.adversarial \
            else {}
        self._choose_step_mode(nets["cnn"])  # before DDP wrapping (its settings depend on the mode) and compiling
        self.optimizer, self.lr_scheduler = self.configure_optimizers(nets)
        self.branches = self._wrap(nets)
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

    def get_dataloaders(self):
        return get_semisup_dataloaders(self, unlabeled_batch_size=self.unlabeled_batch_size)

    def on_train_start(self):
        refuse_finished_run(self)  # before anything is written: never train over a finished run unless asked
        # stock fold 'all' ignores a label budget's split; a budget without its split would train on hidden labels
        check_label_budget_at_start(self.preprocessed_dataset_folder_base, self.fold, self.__class__.__name__)
        super().on_train_start()
        keep_cudnn_deterministic(self.deterministic_seed)  # nnUNetv2_train turns benchmarking on after __init__
        restore_pending_rng_states(self)
        self.restore_pseudo_sampling()  # the loaders exist from here on

    def on_train_end(self):
        super().on_train_end()
        if self.dataloader_train is not None and hasattr(self.dataloader_train, "finish"):
            self.dataloader_train.finish()

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self):
        self._maybe_refresh_pseudo_locations()  # before the branches go back to train mode
        for m in list(self.branches.values()) + list(self.discriminators.values()):
            m.train()
        for s in self.branch_schedulers.values():
            if s is not self.lr_scheduler:
                s.step(self.current_epoch)
        for s in self.disc_schedulers.values():
            s.step(self.current_epoch)
        super().on_train_epoch_start()  # steps self.lr_scheduler, logs its lr
        self.print_to_log_file(f"lr hybrid {self.branch_optimizers['hybrid'].param_groups[0]['lr']:.2e}, "
                               f"cnn {self.branch_optimizers['cnn'].param_groups[0]['lr']:.2e}")
        self._epoch_iteration = 0
        self._epoch_lambda_ct = []

    def _rampup(self, fraction: float = None) -> float:
        """Sigmoid ramp-up factor now, over ``fraction`` of the iterations (default: lambda_ct's)."""
        fraction = self.ct_rampup_fraction if fraction is None else fraction
        total = self.num_epochs * self.num_iterations_per_epoch
        return sigmoid_rampup(self.current_epoch * self.num_iterations_per_epoch + self._epoch_iteration,
                              fraction * total)

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
        """Per network, the mask of ``[x_l; x_u]`` (``shape`` = that batch's input shape; ``methods.masking``)."""
        return network_masks({b: unwrap_model(n) for b, n in self.branches.items()}, shape, self.mask_ratio,
                             getattr(self, "mask_generator", None), self.device, self.mask_block_size)

    def train_step(self, batch: dict) -> dict:
        """One AdvMIM iteration (``methods.advmim.advmim_step``). No host synchronisation except the one finiteness
        check of the optimizer step."""
        x_l, x_u, target = (self._to_device(batch[k]) for k in ("data", "data_unlabeled", "target"))
        weights = self._loss_weights()
        for opt in list(self.branch_optimizers.values()) + list(self.disc_optimizers.values()):
            opt.zero_grad(set_to_none=True)
        masks = self._masks((x_l.shape[0] + x_u.shape[0],) + tuple(x_l.shape[1:])) if self.masked_domain else None
        out = advmim_step(self.branches, self.discriminators, x_l, target, x_u, self.loss, masks, weights,
                          self.step_mode, disc_real=self.disc_real, disc_weight=self.disc_loss_weight,
                          autocast=self._autocast, backward=lambda loss: scaled_backward(loss, self._scaler()),
                          no_sync=_no_sync, ddp=self.is_ddp, masked_labeled_loss=self.masked_labeled_loss)
        ok = self._optimizer_steps(out["terms"], out["disc_losses"])
        self._epoch_iteration += 1
        self._epoch_lambda_ct.append(self.lambda_ct * weights.rampup)
        terms = out["terms"]
        return {"loss": (terms["hybrid"]["total"] + terms["cnn"]["total"]).detach(), "finite": ok,
                "advmim_terms": pack_terms(terms, x_l.new_zeros((), dtype=torch.float32))}

    def _optimizer_steps(self, terms: dict, disc_losses: dict) -> bool:
        """Step S and C after one finiteness check of every loss term and gradient norm (the step's one host
        sync); then, if they stepped, each discriminator with its own optimizer (and GradScaler under fp16)."""
        checked = {f"{b}_{k}": terms[b][k] for b in BRANCHES for k in ("total", "disc_loss") if k in terms[b]}
        ok = guarded_step(self.branch_optimizers, self._scaler(), clip=self.grad_clip, guard=self.nonfinite_guard,
                          checked=checked)
        if ok and disc_losses:
            guarded_step({b: self.disc_optimizers[b] for b in disc_losses}, self._scaler("disc"), losses=disc_losses,
                         clip=self.disc_grad_clip)
        return ok


# ---------------------------------------------------------------------------------------------------- variants
class nnUNetTrainerAdvMIM_withAdv(OneChoice, nnUNetTrainerAdvMIM):
    """AdvMIM with the paper's adversarial loss: a patch discriminator per network tells its softmax maps of labeled
    images from those of masked unlabeled images, and lambda_adv pushes the masked predictions toward the former."""
    choice = {"adversarial": True}


class nnUNetTrainerCTCT(OneChoice, nnUNetTrainerAdvMIM):
    """Ablation / baseline: cross teaching between CNN and Transformer only (no masked domain, no adversarial)."""
    choice = {"masked_domain": False, "adversarial": False}


class nnUNetTrainerAdvMIM_Hybrid(OneChoice, nnUNetTrainerAdvMIM):
    """AdvMIM (the default's training); validates and predicts with S (``network_weights`` = S), as the paper does."""
    choice = {"predict_with": "hybrid"}


class nnUNetTrainerAdvMIM_Ensemble(OneChoice, nnUNetTrainerAdvMIM):
    """AdvMIM (the default's training); validates and predicts with the mean of both softmaxes (``network_weights``
    = S and C)."""
    choice = {"predict_with": "ensemble"}


class nnUNetTrainerAdvMIM_paper(OneChoice, nnUNetTrainerAdvMIM):
    """AdvMIM as the official code trains it, wherever an nnU-Net plan allows; predicts with S (docs/advmim.md lists
    every difference): adversarial loss on both networks with the official discriminator (4x4 kernels, a 4x4
    stride-2 head) and its SGD; S and C on SGD at lr 0.05, momentum 0.9, weight decay 1e-4, poly, clipping 5;
    cross teaching at a constant 0.1; masked unlabeled term wCE only; S's masked labeled term CE only; masked input
    voxels not zeroed; 120 epochs of 250 iterations (the official 30k iterations). Network, patch, batch size,
    augmentation and supervised loss are the plan's and nnU-Net's. With ``-pretrained_weights`` of a joint
    pretraining (``nnUNetTrainerAnatoMask_AdvMIM``), S starts pretrained, as the paper's S starts from ImageNet."""
    choice = {"predict_with": "hybrid", "num_epochs": 120, "adversarial": True, "initial_lr": 0.05,
              "weight_decay": 1e-4, "sgd_momentum": 0.9, "sgd_nesterov": False, "hybrid_optimizer": "sgd",
              "grad_clip": 5.0, "ct_rampup_fraction": 0.0, "masked_unlabeled_dice": False,
              "masked_labeled_ce_only": ("hybrid",), "zero_masked_input": False, "disc_optimizer": "sgd",
              "disc_lr": 0.05, "disc_weight_decay": 1e-4, "disc_grad_clip": 5.0, "disc_kernel_size": 4,
              "disc_head_stride": 2}
