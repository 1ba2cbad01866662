"""Short CPU schedules for the demo (``nnUNetv2_advmim_demo``) and for trying the trainers on a laptop: stock
nnU-Net, AdvMIM and CTCT with fewer epochs and iterations, everything else as their full-length parents."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_advmim.data.label_budget import check_label_budget_at_start
from nnunetv2_advmim.runtime.safe_training import SafeCheckpoints
from nnunetv2_advmim.runtime.safety import refuse_finished_run
from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM, nnUNetTrainerCTCT
from nnunetv2_advmim.trainers.one_choice import OneChoice


class nnUNetTrainer_demo(SafeCheckpoints, OneChoice, nnUNetTrainer):
    """Stock nnU-Net on a short schedule for the demo and the CPU: 20 epochs x 15 iterations.

    The supervised baseline of the demo: same plans, loss, augmentation and optimizer as
    ``nnUNetTrainer``, only fewer iterations.
    """
    choice = {"num_epochs": 20, "num_iterations_per_epoch": 15, "num_val_iterations_per_epoch": 2}

    def on_train_start(self):
        refuse_finished_run(self)  # before anything is written: never train over a finished run unless asked
        # stock fold 'all' ignores a label budget's split; a budget without its split would train on hidden labels
        check_label_budget_at_start(self.preprocessed_dataset_folder_base, self.fold, self.__class__.__name__)
        super().on_train_start()


class nnUNetTrainer_demo_finetune(nnUNetTrainer_demo):
    """``nnUNetTrainer_demo`` under its own name, so fine-tuning from pretrained weights
    (``-pretrained_weights``) gets a results folder of its own next to the baseline's."""


class nnUNetTrainerAdvMIM_demo(OneChoice, nnUNetTrainerAdvMIM):
    """AdvMIM on a short CPU schedule for the demo: 10 epochs x 6 iterations (fewer than ``nnUNetTrainer_demo``:
    each iteration trains two networks, each on [x_l; x_u] plain and masked; timings in docs/demo.md)."""
    choice = {"num_epochs": 10, "num_iterations_per_epoch": 6, "num_val_iterations_per_epoch": 2}


class nnUNetTrainerCTCT_demo(nnUNetTrainerCTCT):
    """CTCT on a short CPU schedule for the demo: 10 epochs x 10 iterations."""
    choice = {"num_epochs": 10, "num_iterations_per_epoch": 10, "num_val_iterations_per_epoch": 2}
