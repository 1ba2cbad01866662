"""MIM pretraining robustness with the stock commands (issue 9 items 1, 2, 4, 5), on the CPU.

- SIGKILL in the middle of a run, ``--c`` restart: the resumed process holds exactly the checkpoint's states
  (weights, optimizer, RNG, mask generator, EMA teacher, guard) right after loading, and its whole run ends
  bit-identical to an uninterrupted run with the same seed (``nnUNet_advmim_seed``, ``nnUNet_n_proc_DA=0``).
- a checkpoint carrying a pickled object is refused by the trainer's ``load_checkpoint`` (nothing runs);
- non-finite loss / gradient: the step is skipped (weights, optimizer, EMA teacher untouched), counted, logged;
  N in a row stop training;
- determinism in-process: two short runs with the same seed and deterministic flags give identical losses.
Uses conftest's ``planned_2d`` (dataset 902, read only); own trainer names keep the result folders apart.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nnunetv2_advmim.checkpointing import UnsafeCheckpointError, safe_load

KILL_TRAINERS = '''
import os
import time
import torch
from nnunetv2_advmim.checkpointing import atomic_save, rng_states
from nnunetv2_advmim.ema import unwrap_model
from nnunetv2_advmim.trainers.nnUNetTrainerMIM import nnUNetTrainerAnatoMask


class nnUNetTrainerAnatoMask_kill(nnUNetTrainerAnatoMask):
    """4 epochs x 2 iterations, checkpoint every epoch. KILL_TEST_PAUSE=<file>: in epoch 1, after its first
    optimizer step, write <file> and sleep (the test SIGKILLs the process there). KILL_TEST_DUMP=<file>: dump
    the trainer's states at the end of on_train_start (after --c loading)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 4
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
        self.warmup_epochs = 1
        self.save_every = 1
        self.ema_decay_start, self.ema_decay_end = 0.5, 0.9  # a teacher that visibly moves in 8 steps
        self._steps_this_epoch = 0

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._steps_this_epoch = 0

    def train_step(self, batch):
        out = super().train_step(batch)
        self._steps_this_epoch += 1
        pause = os.environ.get('KILL_TEST_PAUSE')
        if pause and self.current_epoch == 1 and self._steps_this_epoch == 1:
            open(pause, 'w').close()
            time.sleep(300)
        return out

    def on_train_start(self):
        super().on_train_start()
        dump = os.environ.get('KILL_TEST_DUMP')
        if dump:
            atomic_save({'network_weights': unwrap_model(self.network).state_dict(),
                         'optimizer_state': self.optimizer.state_dict(), 'rng_states': rng_states(),
                         'mim_state': self.mim_state_dict(), 'current_epoch': self.current_epoch,
                         'nonfinite_guard': self.nonfinite_guard.state_dict()}, dump)

    def perform_actual_validation(self, save_probabilities: bool = False):
        pass  # the visual check PNG is tested elsewhere; here it would only cost time


class nnUNetTrainerAnatoMask_killref(nnUNetTrainerAnatoMask_kill):
    """The same run, never interrupted (another name: another results folder)."""
'''


@pytest.fixture
def kill_env(planned_2d, ext_trainers):
    folder, write = ext_trainers
    write("mim_kill_trainers", KILL_TRAINERS)
    env = dict(planned_2d.env)
    env["nnUNet_extTrainer"] = folder
    env["nnUNet_n_proc_DA"] = "0"  # batches drawn in the training process: RNG states fully decide them
    env["nnUNet_advmim_seed"] = "0"
    for k in ("KILL_TEST_PAUSE", "KILL_TEST_DUMP"):
        env.pop(k, None)
    return planned_2d, env


def _cmd(planned, trainer, *extra):
    return ["nnUNetv2_train", str(planned.id), planned.configuration, "0", "-tr", trainer, "-device", "cpu", *extra]


def _fold(planned, trainer):
    return os.path.join(planned.results, f"{trainer}__nnUNetPlans__{planned.configuration}", "fold_0")


def _same_tree(a, b, path="") -> None:
    """Exact equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu()), path
    elif isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            _same_tree(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same_tree(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), (path, a, b)


def test_sigkill_mid_run_then_resume_continues_exactly(kill_env, tmp_path):
    from conftest import run_cmd
    planned, env = kill_env
    fold = _fold(planned, "nnUNetTrainerAnatoMask_kill")
    pause = str(tmp_path / "paused")
    log = open(tmp_path / "killed_run.txt", "w")
    proc = subprocess.Popen(_cmd(planned, "nnUNetTrainerAnatoMask_kill"), env=dict(env, KILL_TEST_PAUSE=pause),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not os.path.exists(pause):
            assert proc.poll() is None, open(tmp_path / "killed_run.txt").read()[-3000:]
            assert time.time() < deadline, "training never reached epoch 1"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the process group of the run started above
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(fold, "checkpoint_final.pth"))
    saved = safe_load(os.path.join(fold, "checkpoint_latest.pth"))
    assert saved["current_epoch"] == 1 and saved["mim_state"]["teacher"]["step"] == 2
    shutil.copy(os.path.join(fold, "checkpoint_latest.pth"), tmp_path / "latest_at_kill.pth")

    t0 = time.time()
    dump = str(tmp_path / "after_load.pth")
    out = run_cmd(_cmd(planned, "nnUNetTrainerAnatoMask_kill", "--c"), env=dict(env, KILL_TEST_DUMP=dump)).stdout
    assert "Epoch 0\n" not in out and "Epoch 1\n" in out and "Epoch 3\n" in out  # resumed, not restarted
    after = safe_load(dump)
    assert after["current_epoch"] == saved["current_epoch"]
    for key in ("network_weights", "optimizer_state", "rng_states", "mim_state", "nonfinite_guard"):
        _same_tree(saved[key], after[key], key)

    # the interrupted + resumed run ends exactly where an uninterrupted run with the same seed ends
    t1 = time.time()
    run_cmd(_cmd(planned, "nnUNetTrainerAnatoMask_killref"), env=env)
    print("TIMING resume", t1 - t0, "ref", time.time() - t1)
    final = safe_load(os.path.join(fold, "checkpoint_final.pth"))
    ref = safe_load(os.path.join(_fold(planned, "nnUNetTrainerAnatoMask_killref"), "checkpoint_final.pth"))
    assert final["current_epoch"] == ref["current_epoch"] == 4
    assert final["mim_state"]["teacher"]["step"] == 8
    np.testing.assert_array_equal(final["logging"]["train_losses"], ref["logging"]["train_losses"])
    np.testing.assert_array_equal(final["logging"]["val_losses"], ref["logging"]["val_losses"])
    final["mim_state"].pop("method"), ref["mim_state"].pop("method")  # the trainer names differ
    for key in ("network_weights", "optimizer_state", "mim_state", "rng_states"):
        _same_tree(final[key], ref[key], key)
