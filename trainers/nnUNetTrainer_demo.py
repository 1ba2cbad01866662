import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_advmim.data.label_budget import check_label_budget_at_start
from nnunetv2_advmim.runtime.safe_training import SafeCheckpoints
from nnunetv2_advmim.runtime.safety import refuse_finished_run


class nnUNetTrainer_demo(SafeCheckpoints, nnUNetTrainer):
    """Stock nnU-Net on a short schedule for the demo and the CPU: 20 epochs x 15 iterations.

    The supervised baseline of the demo: same plans, loss, augmentation and optimizer as
    ``nnUNetTrainer``, only fewer iterations.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 20
        self.num_iterations_per_epoch = 15
        self.num_val_iterations_per_epoch = 2

    def on_train_start(self):
        refuse_finished_run(self)  # before anything is written: never train over a finished run unless asked
        # stock fold 'all' ignores a label budget's split; a budget without its split would train on hidden labels
        check_label_budget_at_start(self.preprocessed_dataset_folder_base, self.fold, self.__class__.__name__)
        super().on_train_start()


class nnUNetTrainer_demo_finetune(nnUNetTrainer_demo):
    """``nnUNetTrainer_demo`` under its own name, so fine-tuning from pretrained weights
    (``-pretrained_weights``) gets a results folder of its own next to the baseline's."""
