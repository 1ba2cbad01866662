"""AdvMIM: a run killed after a checkpoint and resumed with ``nnUNetv2_train ... --c`` ends exactly where an
uninterrupted run with the same seed ends: weights of S, C and both discriminators, all four optimizers, the
pseudo-label cursor and locations, the RNG states and every logged loss.

4 epochs x 2 iterations, a checkpoint every epoch, killed (SIGKILL) in epoch 2 after its first step, so the resume
starts from the checkpoint of epoch 1 and must redo that step exactly. Pseudo-label locations are refreshed every
epoch over a window of one case, so the cursor and the locations matter. Seeded (``nnUNet_advmim_seed``) with
augmentation in the training process (``nnUNet_n_proc_DA=0``), on the CPU with one thread. The variant also turns
cuDNN benchmarking on before training starts, as ``nnUNetv2_train`` does on a GPU machine, and checks that the
trainer switches it off again. Uses the session dataset ``advmim_2d`` (conftest; read only).
"""
import os
import shutil
import signal

import numpy as np
import pytest

from helpers import assert_same_tree, model_fold, pause_methods, run_cmd, sigkill_when_paused, train_cmd
from nnunetv2_advmim.runtime.checkpointing import safe_load

RESUME_TRAINERS = '''
import os
import time
import torch
from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM_withAdv


class nnUNetTrainerAdvMIM_resume(nnUNetTrainerAdvMIM_withAdv):
    """4 epochs x 2 iterations, checkpoint every epoch, pseudo-label locations every epoch (one case per refresh).
    ADVMIM_TEST_PAUSE=<file>: in epoch 2, after its first step, write <file> and sleep (the test kills it there)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        torch.set_num_threads(1)  # identical results run to run, and fast on a busy machine
        self.num_epochs = 4
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
        self.save_every = 1
        self.unlabeled_oversample_foreground = 0.5
        self.pseudo_locations_every = 1
        self.pseudo_locations_max_cases = 1
        self._steps_this_epoch = 0

    def on_train_start(self):
        torch.backends.cudnn.benchmark = True  # what nnUNetv2_train does after building the trainer on a GPU
        super().on_train_start()
        if torch.backends.cudnn.benchmark:
            raise RuntimeError("seeded run left cuDNN benchmarking on")

''' + pause_methods('ADVMIM_TEST_PAUSE', 2) + '''
    def perform_actual_validation(self, save_probabilities: bool = False):
        pass  # prediction of the validation cases is tested elsewhere


class nnUNetTrainerAdvMIM_resumeref(nnUNetTrainerAdvMIM_resume):
    """The same run, never interrupted (another name: another results folder)."""
'''

LOSS_KEYS = ("train_losses", "val_losses", "mean_fg_dice", "ema_fg_dice")


@pytest.fixture
def resume_env(advmim_2d, ext_trainers):
    folder, write = ext_trainers
    write("advmim_resume_trainers", RESUME_TRAINERS)
    env = dict(advmim_2d.env, nnUNet_extTrainer=folder, nnUNet_n_proc_DA="0", nnUNet_advmim_seed="0")
    env.pop("ADVMIM_TEST_PAUSE", None)
    for t in ("nnUNetTrainerAdvMIM_resume", "nnUNetTrainerAdvMIM_resumeref"):
        shutil.rmtree(os.path.dirname(model_fold(advmim_2d, t)), ignore_errors=True)
    return advmim_2d, env


def test_killed_advmim_run_resumes_exactly(resume_env, tmp_path):
    ds, env = resume_env
    fold = model_fold(ds, "nnUNetTrainerAdvMIM_resume")
    pause = str(tmp_path / "paused")
    returncode = sigkill_when_paused(train_cmd(ds, "nnUNetTrainerAdvMIM_resume"), dict(env, ADVMIM_TEST_PAUSE=pause),
                                     pause, str(tmp_path / "killed_run.txt"), 600, "epoch 2")
    assert returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(fold, "checkpoint_final.pth"))
    saved = safe_load(os.path.join(fold, "checkpoint_latest.pth"))
    assert saved["current_epoch"] == 2
    assert saved["advmim"]["pseudo_sampling"]["locations"]  # refreshed in epoch 1 and saved

    out = run_cmd(train_cmd(ds, "nnUNetTrainerAdvMIM_resume", "--c"), env=env).stdout
    assert "Epoch 0\n" not in out and "Epoch 2\n" in out and "Epoch 3\n" in out  # resumed, not restarted

    run_cmd(train_cmd(ds, "nnUNetTrainerAdvMIM_resumeref"), env=env)
    final = safe_load(os.path.join(fold, "checkpoint_final.pth"))
    ref = safe_load(os.path.join(model_fold(ds, "nnUNetTrainerAdvMIM_resumeref"), "checkpoint_final.pth"))
    assert final["current_epoch"] == ref["current_epoch"] == 4
    for key in ("weights", "optimizers", "discriminators", "disc_optimizers", "pseudo_sampling"):
        assert_same_tree(final["advmim"][key], ref["advmim"][key], key)
    assert set(final["advmim"]["discriminators"]) == {"hybrid", "cnn"}
    for key in ("network_weights", "optimizer_state", "rank_states", "nonfinite_guard"):
        assert_same_tree(final[key], ref[key], key)
    logged = [k for k in ref["logging"] if k in LOSS_KEYS or k.startswith("advmim_")]
    assert len(logged) > 10 and "advmim_hybrid_disc_loss" in logged
    for key in logged:
        assert len(ref["logging"][key]) == 4, key
        np.testing.assert_array_equal(final["logging"][key], ref["logging"][key], err_msg=key)
