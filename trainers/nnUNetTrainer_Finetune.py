"""``nnUNetTrainer_Finetune``: stock nnU-Net under its own name, for fine-tuning from pretrained weights.

Stock ``nnUNetv2_train D C F -pretrained_weights FILE`` with ``nnUNetTrainer`` writes into the same
``nnUNetTrainer__<plans>__<configuration>/fold_F`` folder as the supervised baseline trained without weights, so the
second run replaces the first. This trainer is ``nnUNetTrainer`` in every setting (network, loss, augmentation,
optimizer, schedule); only its name, and so its results folder, differs. The safety checks of this package apply:
the pretrained file and its own checkpoints are read with ``torch.load(weights_only=True)`` (a checkpoint cannot run
code), checkpoints are written atomically, and training from scratch over a finished run of the same name is
refused.
"""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_advmim.data.label_budget import check_label_budget_at_start
from nnunetv2_advmim.runtime.safe_training import SafeCheckpoints
from nnunetv2_advmim.runtime.safety import refuse_finished_run
from nnunetv2_advmim.runtime.weights import load_branch_weights, route_pretrained_weights
from nnunetv2_advmim.wrappers import unwrap_model


class nnUNetTrainer_Finetune(SafeCheckpoints, nnUNetTrainer):
    """Stock training under its own name; ``-pretrained_weights`` loads with nnU-Net's rule (every tensor but the
    ``.seg_layers.`` must fit) from a stock, MIM or joint AdvMIM pretraining checkpoint (its CNN)."""

    def initialize(self):
        super().initialize()
        # nnUNetv2_train -pretrained_weights calls nnU-Net's loader on self.network; route it to the safe loader
        route_pretrained_weights(self.network, self.load_pretrained_weights)

    def load_pretrained_weights(self, filename: str) -> None:
        load_branch_weights(unwrap_model(self.network), filename, "cnn")
        self.print_to_log_file(f"Loaded pretrained weights from {filename} (every tensor but the segmentation "
                               f"layers)")

    def on_train_start(self):
        refuse_finished_run(self)  # before anything is written: never train over a finished run unless asked
        # stock fold 'all' ignores a label budget's split; a budget without its split would train on hidden labels
        check_label_budget_at_start(self.preprocessed_dataset_folder_base, self.fold, self.__class__.__name__)
        super().on_train_start()
