from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_advmim.data.label_budget import refuse_fold_all_under_budget
from nnunetv2_advmim.trainers.one_choice import OneChoice


class nnUNetTrainer_demo(OneChoice, nnUNetTrainer):
    """Stock nnU-Net on a short schedule for the demo and the CPU: 20 epochs x 15 iterations.

    The supervised baseline of the demo: same plans, loss, augmentation and optimizer as
    ``nnUNetTrainer``, only fewer iterations.
    """
    choice = {"num_epochs": 20, "num_iterations_per_epoch": 15, "num_val_iterations_per_epoch": 2}

    def on_train_start(self):
        # stock fold 'all' ignores the label budget's split and would train on every labeled case
        refuse_fold_all_under_budget(self.preprocessed_dataset_folder_base, self.fold, self.__class__.__name__)
        super().on_train_start()


class nnUNetTrainer_demo_finetune(nnUNetTrainer_demo):
    """``nnUNetTrainer_demo`` under its own name, so fine-tuning from pretrained weights
    (``-pretrained_weights``) gets a results folder of its own next to the baseline's."""
