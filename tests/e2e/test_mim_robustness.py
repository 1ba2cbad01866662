"""MIM pretraining robustness with the stock commands, on the CPU.

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

import numpy as np
import pytest
import torch

from helpers import assert_same_tree, model_fold, pause_methods, run_cmd, sigkill_when_paused, train_cmd
from nnunetv2_advmim.runtime.checkpointing import UnsafeCheckpointError, safe_load

KILL_TRAINERS = '''
import os
import time
import torch
from nnunetv2_advmim.runtime.checkpointing import atomic_save, run_state
from nnunetv2_advmim.wrappers import unwrap_model
from nnunetv2_advmim.trainers.nnUNetTrainerMIM import nnUNetTrainerAnatoMask


def small_network(trainer):
    """Narrow the plan's U-Net (a few channels per stage): the 2D plan's 32..512 channels cost seconds per step
    on 2 busy cores, and what is tested here does not depend on the width."""
    arch = trainer.configuration_manager.network_arch_init_kwargs
    arch['features_per_stage'] = [min(4 * 2 ** i, 16) for i in range(arch['n_stages'])]


class nnUNetTrainerAnatoMask_kill(nnUNetTrainerAnatoMask):
    """3 epochs x 2 iterations, checkpoint every epoch. KILL_TEST_PAUSE=<file>: in epoch 1, after its first
    optimizer step, write <file> and sleep (the test SIGKILLs the process there). KILL_TEST_DUMP=<file>: dump
    the trainer's states at the end of on_train_start (after --c loading)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        small_network(self)
        # nnUNetv2_train -device cpu sets one thread per core; on a busy machine OpenMP threads then wait for
        # each other (epochs of 0.1 s took 9 s). One thread: same results run to run, fast everywhere.
        torch.set_num_threads(1)
        self.num_epochs = 3
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
        self.warmup_epochs = 1
        self.save_every = 1
        self.ema_decay_start, self.ema_decay_end = 0.5, 0.9  # a teacher that visibly moves in 8 steps
        self._steps_this_epoch = 0

''' + pause_methods('KILL_TEST_PAUSE', 1) + '''
    def on_train_start(self):
        super().on_train_start()
        dump = os.environ.get('KILL_TEST_DUMP')
        if dump:
            atomic_save({'network_weights': unwrap_model(self.network).state_dict(),
                         'optimizer_state': self.optimizer.state_dict(), 'rank_states': run_state(self)['rank_states'],
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


def test_sigkill_mid_run_then_resume_continues_exactly(kill_env, tmp_path):
    planned, env = kill_env
    fold = model_fold(planned, "nnUNetTrainerAnatoMask_kill")
    pause = str(tmp_path / "paused")
    returncode = sigkill_when_paused(train_cmd(planned, "nnUNetTrainerAnatoMask_kill"),
                                     dict(env, KILL_TEST_PAUSE=pause), pause, str(tmp_path / "killed_run.txt"), 240,
                                     "epoch 1")
    assert returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(fold, "checkpoint_final.pth"))
    saved = safe_load(os.path.join(fold, "checkpoint_latest.pth"))
    assert saved["current_epoch"] == 1 and saved["mim_state"]["teacher"]["step"] == 2
    shutil.copy(os.path.join(fold, "checkpoint_latest.pth"), tmp_path / "latest_at_kill.pth")

    dump = str(tmp_path / "after_load.pth")
    out = run_cmd(train_cmd(planned, "nnUNetTrainerAnatoMask_kill", "--c"),
                  env=dict(env, KILL_TEST_DUMP=dump)).stdout
    assert "Epoch 0\n" not in out and "Epoch 1\n" in out and "Epoch 2\n" in out  # resumed, not restarted
    after = safe_load(dump)
    assert after["current_epoch"] == saved["current_epoch"]
    for key in ("network_weights", "optimizer_state", "rank_states", "mim_state", "nonfinite_guard"):
        assert_same_tree(saved[key], after[key], key)

    # the interrupted + resumed run ends exactly where an uninterrupted run with the same seed ends
    run_cmd(train_cmd(planned, "nnUNetTrainerAnatoMask_killref"), env=env)
    final = safe_load(os.path.join(fold, "checkpoint_final.pth"))
    ref = safe_load(os.path.join(model_fold(planned, "nnUNetTrainerAnatoMask_killref"), "checkpoint_final.pth"))
    assert final["current_epoch"] == ref["current_epoch"] == 3
    assert final["mim_state"]["teacher"]["step"] == 6
    np.testing.assert_array_equal(final["logging"]["train_losses"], ref["logging"]["train_losses"])
    np.testing.assert_array_equal(final["logging"]["val_losses"], ref["logging"]["val_losses"])
    final["mim_state"].pop("method"), ref["mim_state"].pop("method")  # the trainer names differ
    for key in ("network_weights", "optimizer_state", "mim_state", "rank_states"):
        assert_same_tree(final[key], ref[key], key)


# ------------------------------------------------------------------------------------------ in-process
@pytest.fixture
def one_thread():
    """One intra-op thread for the in-process trainers (tiny networks; see the kill variant's comment)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _trainer(planned, name="nnUNetTrainerAnatoMask_robust"):
    """An AnatoMask trainer on the planned 2D dataset (narrow network), not initialised."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2_advmim.trainers.nnUNetTrainerMIM import nnUNetTrainerAnatoMask

    plans = load_json(os.path.join(planned.preprocessed, "nnUNetPlans.json"))
    plans["continue_training"] = False  # nnU-Net 2.8.1 pops this key in __init__
    cls = type(name, (nnUNetTrainerAnatoMask,), {})
    trainer = cls(plans, planned.configuration, 0, load_json(os.path.join(planned.preprocessed, "dataset.json")),
                  torch.device("cpu"))
    arch = trainer.configuration_manager.network_arch_init_kwargs
    arch["features_per_stage"] = [min(4 * 2 ** i, 16) for i in range(arch["n_stages"])]
    return trainer


class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_trainer_load_checkpoint_refuses_pickled_object(planned_2d, tmp_path, one_thread):
    trainer = _trainer(planned_2d)
    marker = tmp_path / "pwned"
    bad = str(tmp_path / "checkpoint_latest.pth")
    torch.save({"network_weights": {}, "mim_state": {}, "logging": {"x": _SystemCall(marker)}}, bad)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system|nt.system") as e:
        trainer.load_checkpoint(bad)
    assert bad in str(e.value) and not marker.exists()
    assert not trainer.was_initialized  # refused before anything was built or restored


def _snapshot(trainer):
    from nnunetv2_advmim.wrappers import unwrap_model
    net = {k: v.clone() for k, v in unwrap_model(trainer.network).state_dict().items()}
    teacher = {k: v.clone() for k, v in trainer.teacher.teacher.state_dict().items()}
    return net, teacher, len(trainer.optimizer.state), trainer.teacher.step


def _equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_nonfinite_loss_or_gradient_skips_step(planned_2d, one_thread):
    """NaN loss / inf gradient: no optimizer or EMA step, counted by name, logged; N in a row stop training."""
    from nnunetv2_advmim.runtime.numerics import NonFiniteError
    trainer = _trainer(planned_2d, "nnUNetTrainerAnatoMask_guard")
    trainer.max_nonfinite_steps = 3
    trainer.initialize()
    shape = (trainer.batch_size, 1, *trainer.configuration_manager.patch_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x_nan = x.clone()
    x_nan[0, 0, 5, 5] = float("nan")

    before = _snapshot(trainer)
    assert not np.isfinite(trainer.train_step({"data": x_nan})["loss"])
    after = _snapshot(trainer)
    assert _equal(before[0], after[0]) and _equal(before[1], after[1]) and after[2:] == (0, 0)

    param = next(p for p in trainer.network.parameters() if p.requires_grad)
    hook = param.register_hook(lambda g: g * float("inf"))  # finite loss, infinite gradient
    assert np.isfinite(trainer.train_step({"data": x})["loss"])
    hook.remove()
    after = _snapshot(trainer)
    assert _equal(before[0], after[0]) and after[2:] == (0, 0)
    assert trainer.nonfinite_guard.counts == {"loss": 1, "grad_norm": 2}  # NaN input: both; hook: gradient only

    trainer.train_step({"data": x})  # finite: applied, resets the run of bad steps
    after = _snapshot(trainer)
    assert not _equal(before[0], after[0]) and not _equal(before[1], after[1]) and after[3] == 1 and after[2] > 0
    assert trainer.nonfinite_guard.consecutive == 0 and trainer.nonfinite_guard.skipped == 2
    log = open(trainer.log_file).read()
    assert "non-finite loss, grad_norm at step 0: step skipped" in log
    assert "non-finite grad_norm at step 1: step skipped" in log

    # the epoch's mean training loss leaves the skipped steps out
    trainer.on_train_epoch_end([{"loss": np.array(2.0)}, {"loss": np.array(float("nan"))}, {"loss": np.array(4.0)}])
    assert trainer.logger.get_value("train_losses", step=-1) == 3.0

    trainer.train_step({"data": x_nan})
    trainer.train_step({"data": x_nan})
    with pytest.raises(NonFiniteError, match="3 consecutive.*loss.*learning rate"):
        trainer.train_step({"data": x_nan})
    assert trainer.teacher.step == 1


def test_same_seed_same_losses_in_process(planned_2d, monkeypatch, one_thread):
    """Fixed seed + deterministic flags + in-process augmentation: two runs give identical losses."""
    from nnunetv2_advmim.data.pretraining_loader import get_pretraining_dataloaders
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    was_deterministic = torch.are_deterministic_algorithms_enabled()

    def run(seed):
        monkeypatch.setenv("nnUNet_advmim_seed", str(seed))
        trainer = _trainer(planned_2d, "nnUNetTrainerAnatoMask_seeded")
        assert torch.are_deterministic_algorithms_enabled()
        trainer.initialize()
        tr, _ = get_pretraining_dataloaders(trainer)
        return [float(trainer.train_step(next(tr))["loss"]) for _ in range(3)]

    try:
        a, b, c = run(0), run(0), run(1)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    assert a == b
    assert a != c and len(set(a)) == 3  # the seed matters, the losses are not a constant


def test_advmim_checkpoint_is_safe_atomic_and_restores_rng(planned_2d, tmp_path, one_thread):
    """nnUNetTrainerAdvMIM: pickled objects refused before anything is built; its checkpoints carry the RNG
    states and the guard's counters, and loading restores both."""
    import random

    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM

    plans = load_json(os.path.join(planned_2d.preprocessed, "nnUNetPlans.json"))
    plans["continue_training"] = False
    dataset_json = load_json(os.path.join(planned_2d.preprocessed, "dataset.json"))
    cls = type("nnUNetTrainerAdvMIM_robust", (nnUNetTrainerAdvMIM,), {})
    trainer = cls(plans, planned_2d.configuration, 0, dataset_json, torch.device("cpu"))
    marker = tmp_path / "pwned"
    bad = str(tmp_path / "checkpoint_latest.pth")
    torch.save({"advmim": _SystemCall(marker)}, bad)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        trainer.load_checkpoint(bad)
    assert not marker.exists() and not trainer.was_initialized

    trainer.initialize()
    trainer.nonfinite_guard.step_ok({"loss": torch.tensor(float("nan"))})
    ckpt = str(tmp_path / "checkpoint_advmim.pth")
    trainer.save_checkpoint(ckpt)
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temporary file left
    expected = (random.random(), np.random.rand(), torch.rand(2).tolist())  # draws right after saving
    saved = safe_load(ckpt)
    assert saved["nonfinite_guard"]["counts"] == {"loss": 1}

    plans["continue_training"] = False  # popped by the first trainer
    other = cls(plans, planned_2d.configuration, 0, dataset_json, torch.device("cpu"))
    other.load_checkpoint(ckpt)
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == expected
    assert other.nonfinite_guard.counts == {"loss": 1} and other.nonfinite_guard.skipped == 1
    assert other.pending_rng_states is not None  # applied again at the end of on_train_start
