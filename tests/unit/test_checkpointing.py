"""Crash-safe saving, safe loading and RNG states (nnunetv2_advmim.runtime.checkpointing)."""
import glob
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from nnunetv2_advmim.runtime.checkpointing import (CorruptCheckpointError, UnsafeCheckpointError, atomic_save,
                                           restore_run_state, rng_states, run_state, safe_load, set_rng_states)


class _Payload:
    """A custom class: pickled by reference, so loading it could run whatever its module does."""

    def __init__(self):
        self.x = 1


class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _nnunet_like_checkpoint():
    """The kinds of values nnU-Net 2.8.1 + our trainers put into a checkpoint."""
    net = torch.nn.Conv2d(1, 2, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(1, 1, 5, 5)).sum().backward()
    opt.step()
    return {
        "network_weights": net.state_dict(),
        "optimizer_state": opt.state_dict(),
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.5), float("nan")], "ema_fg_dice": [np.float32(0.25)],
                    "dice_per_class_or_region": [[np.float64(0.1), np.float64(0.2)]],
                    "train_losses": [np.float64(1.5)], "epoch_start_timestamps": [time.time()]},
        "_best_ema": np.float64(0.25),
        "current_epoch": 3,
        "init_args": {"plans": {"configurations": {"2d": {"patch_size": [64, 64]}}}, "configuration": "2d",
                      "fold": 0, "dataset_json": {"labels": {"background": 0, "a": 1}},
                      "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainerMIM",
        "inference_allowed_mirroring_axes": (0, 1),
        "mim_state": {"mask_generator": torch.Generator().get_state(), "best_val_loss": 0.3},
        "rank_states": [{"rng_states": rng_states(), "generators": {"mask_generator": torch.Generator().get_state()}}],
        "int64": np.int64(7), "bool": np.bool_(True),
    }


def test_nnunet_checkpoint_contents_load_with_weights_only(tmp_path):
    ckpt = _nnunet_like_checkpoint()
    f = str(tmp_path / "checkpoint_latest.pth")
    atomic_save(ckpt, f)
    back = safe_load(f)
    assert back["init_args"]["device"] == torch.device("cpu")
    assert back["logging"]["mean_fg_dice"][0] == 0.5 and isinstance(back["logging"]["mean_fg_dice"][0], np.float64)
    assert back["_best_ema"] == np.float64(0.25) and back["int64"] == 7 and back["bool"]
    for k, v in ckpt["network_weights"].items():
        assert torch.equal(v, back["network_weights"][k])
    assert back["optimizer_state"]["state"][0]["step"] == ckpt["optimizer_state"]["state"][0]["step"]
    assert os.listdir(tmp_path) == ["checkpoint_latest.pth"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(f).st_mode & 0o777 == 0o666 & ~umask  # same permissions as torch.save(obj, path)


def test_rng_states_round_trip_through_safe_load(tmp_path):
    random.gauss(0, 1), np.random.randn()  # both keep a cached gaussian: part of the state
    f = str(tmp_path / "rng.pth")
    atomic_save({"rng": rng_states()}, f)
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(),
                torch.rand(3).tolist())
    set_rng_states(safe_load(f)["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist())
    assert got == expected


@pytest.mark.parametrize("kind", ["system_call", "custom_class", "numpy_array"])
def test_pickled_objects_are_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    obj = {"system_call": _SystemCall(marker), "custom_class": _Payload(), "numpy_array": np.zeros(3)}[kind]
    f = str(tmp_path / "checkpoint_final.pth")
    torch.save({"network_weights": {}, "x": obj}, f)
    with pytest.raises(UnsafeCheckpointError) as e:
        safe_load(f)
    msg = str(e.value)
    assert f in msg and "Refusing to load" in msg and "foreign code" in msg
    assert {"system_call": "system", "custom_class": "_Payload", "numpy_array": "numpy"}[kind] in msg
    assert not marker.exists()


def test_missing_and_truncated_files_name_the_file_and_the_fix(tmp_path):
    missing = str(tmp_path / "checkpoint_latest.pth")
    with pytest.raises(FileNotFoundError, match="checkpoint_latest.pth does not exist"):
        safe_load(missing)
    f = str(tmp_path / "checkpoint_latest.pth")
    atomic_save(_nnunet_like_checkpoint(), f)
    data = open(f, "rb").read()
    for cut in (len(data) // 2, len(data) - 30, 0):
        open(f, "wb").write(data[:cut])
        with pytest.raises(CorruptCheckpointError) as e:
            safe_load(f)
        assert f in str(e.value) and "incomplete or corrupt" in str(e.value) and "checkpoint_best.pth" in str(e.value)


def test_error_while_writing_keeps_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    f = str(tmp_path / "checkpoint_latest.pth")
    atomic_save({"epoch": 1, "w": torch.ones(3)}, f)
    real_save = torch.save

    def broken_save(obj, fobj, *a, **k):
        real_save(obj, fobj, *a, **k)  # half the bytes reach the disk, then the "disk is full"
        fobj.seek(fobj.tell() // 2)
        fobj.truncate()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        atomic_save({"epoch": 2, "w": torch.zeros(1000)}, f)
    monkeypatch.setattr(torch, "save", real_save)
    back = safe_load(f)
    assert back["epoch"] == 1 and torch.equal(back["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["checkpoint_latest.pth"]


_WRITER = textwrap.dedent('''
    import sys, torch
    from nnunetv2_advmim.runtime.checkpointing import atomic_save
    big = {"epoch": 2, "w": torch.ones(64 * 1024 * 1024)}  # 256 MiB: writing takes a noticeable time
    print("writing", flush=True)
    atomic_save(big, sys.argv[1])
    print("done", flush=True)
''')


def test_sigkill_while_writing_keeps_previous_checkpoint(tmp_path):
    """A writer SIGKILLed in the middle of atomic_save: the previous checkpoint still loads; the orphaned
    temporary file matches no checkpoint pattern and the next save of that file removes it."""
    f = str(tmp_path / "checkpoint_latest.pth")
    atomic_save({"epoch": 1, "w": torch.arange(4.0)}, f)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, f], stdout=subprocess.PIPE, text=True)
    tmp_pattern = str(tmp_path / ".checkpoint_latest.pth.tmp.*")
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            tmps = glob.glob(tmp_pattern)
            if tmps and os.path.getsize(tmps[0]) > 1024 * 1024:  # the big write is under way
                break
            assert proc.poll() is None, "writer finished before it could be killed"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    leftovers = glob.glob(tmp_pattern)
    assert len(leftovers) == 1  # killed mid-write (the temporary file was never renamed)
    back = safe_load(f)
    assert back["epoch"] == 1 and torch.equal(back["w"], torch.arange(4.0))
    assert sorted(glob.glob(str(tmp_path / "checkpoint_*.pth"))) == [f]  # what nnU-Net's --c looks for
    atomic_save({"epoch": 3}, f)  # the dead writer's temporary file is cleaned up
    assert os.listdir(tmp_path) == ["checkpoint_latest.pth"] and safe_load(f)["epoch"] == 3


def test_our_weight_loaders_refuse_pickled_objects(tmp_path):
    """check_weights and mim_benchmark read checkpoints through safe_load."""
    from nnunetv2_advmim.runtime.weights import load_network_weights
    from nnunetv2_advmim.benchmark.mim_steps import loss_curves
    marker = tmp_path / "pwned"
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    ckpt = _nnunet_like_checkpoint()
    ckpt["logging"]["val_losses"] = [np.float64(1.25)]
    atomic_save(ckpt, str(good / "checkpoint_final.pth"))
    ckpt["logging"]["train_losses"].append(_SystemCall(marker))
    torch.save(ckpt, str(bad / "checkpoint_final.pth"))
    assert set(load_network_weights(str(good / "checkpoint_final.pth"))) == set(ckpt["network_weights"])
    assert loss_curves([str(good)]) == {"nnUNetTrainerMIM": {"train": [1.5], "val": [1.25]}}
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_network_weights(str(bad / "checkpoint_final.pth"))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        loss_curves([str(bad)])
    assert not marker.exists()


class _FakeTrainer:
    """What run_state / restore_run_state use of a trainer (single process)."""

    def __init__(self, seed):
        self.is_ddp, self.local_rank, self.nonfinite_guard, self.log = False, 0, None, []
        self.mask_generator = torch.Generator().manual_seed(seed)

    def per_rank_generators(self):
        return {"mask_generator": self.mask_generator}

    def print_to_log_file(self, *args):
        self.log.append(" ".join(map(str, args)))


def _draws(t):
    return (torch.rand(3, generator=t.mask_generator).tolist(), torch.rand(2).tolist(), np.random.rand(2).tolist(),
            random.random())


def test_run_state_restores_global_rngs_and_own_generators(tmp_path):
    t = _FakeTrainer(3)
    _draws(t)
    f = str(tmp_path / "c.pth")
    atomic_save(run_state(t), f)
    expected = _draws(t)
    state = safe_load(f)
    assert len(state["rank_states"]) == 1 and set(state) == {"rank_states", "nonfinite_guard"}
    t2 = _FakeTrainer(99)
    torch.manual_seed(99)
    restore_run_state(t2, state, f)
    assert _draws(t2) == expected and t2.pending_rng_states is state["rank_states"][0]["rng_states"]
    t4 = _FakeTrainer(99)
    restore_run_state(t4, {}, f)
    assert not hasattr(t4, "pending_rng_states")
    assert "holds no RNG states for rank 0" in t4.log[0]
