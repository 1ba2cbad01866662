import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_advmim.data.label_budget import check_label_budget_at_start
from nnunetv2_advmim.methods.schedules import EpochLR, warmup_epochs_for, warmup_poly_lr
from nnunetv2_advmim.runtime.safe_training import SafeCheckpoints
from nnunetv2_advmim.runtime.safety import refuse_finished_run


class nnUNetTrainer_FinetuneWarmup(SafeCheckpoints, nnUNetTrainer):
    """Stock nnU-Net with a linear learning-rate warm-up, for fine-tuning from pretrained weights.

    ``lr = initial_lr * (epoch + 1) / W`` for the first ``W`` epochs, then nnU-Net's poly decay over the remaining
    epochs (``methods.schedules.warmup_poly_lr``), so the first updates do not wash out pretrained weights with the
    full learning rate of a randomly initialised decoder head. ``W = warmup_epochs``; ``None`` (default) = 10 % of
    ``num_epochs``, at least 1 (``warmup_epochs_for``). Network, loss, augmentation and SGD are the stock ones;
    weights come through the stock ``-pretrained_weights`` flag.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.warmup_epochs = None
        self.warmup_fraction = 0.1

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()  # the stock SGD; its poly schedule is replaced
        warmup = warmup_epochs_for(self.num_epochs, self.warmup_epochs, self.warmup_fraction)
        num_epochs, initial_lr = self.num_epochs, self.initial_lr
        self.print_to_log_file(f"{self.__class__.__name__} settings: warmup_epochs={warmup} (linear from "
                               f"{initial_lr / warmup:.2e} to initial_lr={initial_lr:.2e}), then poly decay over "
                               f"{num_epochs - warmup} epochs")
        return optimizer, EpochLR(optimizer, lambda epoch: warmup_poly_lr(epoch, num_epochs, initial_lr, warmup))

    def on_train_start(self):
        refuse_finished_run(self)  # before anything is written: never train over a finished run unless asked
        # stock fold 'all' ignores a label budget's split; a budget without its split would train on hidden labels
        check_label_budget_at_start(self.preprocessed_dataset_folder_base, self.fold, self.__class__.__name__)
        super().on_train_start()
