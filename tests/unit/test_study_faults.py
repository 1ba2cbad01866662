"""The study under faults: one study per folder (a kernel lock, not a guess from the lock file's content), no
training child outliving a stopped study, an arm done only when its checkpoint loads, atomic checkpoints in the
generated trainer variants."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from nnunetv2_advmim.commands.study import runner as study_runner
from nnunetv2_advmim.commands.study import Study, study_lock, variants_source


def _hold(path, content=""):
    """Another holder of the lock: an open file description with the exclusive flock (as another study has it)."""
    with open(path, "w") as f:
        f.write(content)
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@pytest.mark.parametrize("content,match", [
    ("", "another folder"),  # an empty lock: a starting study has created it, its name is not written yet
    (json.dumps({"host": "node-17", "pid": 999999}), "process 999999 on host node-17"),  # a study on another host
])
def test_held_lock_is_not_taken_over(tmp_path, content, match):
    fd = _hold(tmp_path / "study.lock", content)
    try:
        with pytest.raises(RuntimeError, match=match):
            with study_lock(str(tmp_path)):
                pass
    finally:
        os.close(fd)


def test_lock_file_nobody_holds_is_free_whatever_it_says(tmp_path):
    lock = tmp_path / "study.lock"
    lock.write_text(str(os.getppid()))  # a living process id, but no process holds the lock
    with study_lock(str(tmp_path)):
        record = json.loads(lock.read_text())
        assert record["pid"] == os.getpid() and record["host"]
        with pytest.raises(RuntimeError):  # a second study in the same folder, even from this process
            with study_lock(str(tmp_path)):
                pass
    with pytest.raises(KeyError):
        with study_lock(str(tmp_path)):
            raise KeyError("a failing study")
    with study_lock(str(tmp_path)):  # released after the error
        pass


CHILD = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
PARENT = """
import sys
from nnunetv2_advmim.commands.study.runner import _run
_run([sys.executable, '-c', {child!r}, {pidfile!r}], None, {log!r})
"""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purpose
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_study_stops_its_training_child(tmp_path, sig):
    pidfile, log = str(tmp_path / "child.pid"), str(tmp_path / "log.txt")
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(child=CHILD, pidfile=pidfile, log=log)])
    child = None
    try:
        deadline = time.time() + 60
        while not (os.path.exists(pidfile) and open(pidfile).read()):
            assert parent.poll() is None and time.time() < deadline
            time.sleep(0.05)
        child = int(open(pidfile).read())
        parent.send_signal(sig)
        parent.wait(30)
        deadline = time.time() + 20
        while _alive(child) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the training child outlived the stopped study"
        assert parent.returncode != 0
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_killed_study_takes_its_child_along(tmp_path):
    pidfile, log = str(tmp_path / "child.pid"), str(tmp_path / "log.txt")
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(child=CHILD, pidfile=pidfile, log=log)])
    child = None
    try:
        deadline = time.time() + 60
        while not (os.path.exists(pidfile) and open(pidfile).read()):
            assert parent.poll() is None and time.time() < deadline
            time.sleep(0.05)
        child = int(open(pidfile).read())
        parent.kill()  # SIGKILL: no handler runs in the study
        parent.wait(30)
        deadline = time.time() + 20
        while _alive(child) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def _fake_study(tmp_path, monkeypatch):
    model = tmp_path / "results" / "Dataset1_X" / "V__P__2d" / "fold_0"
    model.mkdir(parents=True)
    commands, messages = [], []
    monkeypatch.setattr(study_runner, "_run", lambda cmd, env, log_file: commands.append(cmd) or 1.0)
    fake = SimpleNamespace(dataset_name="Dataset1_X", configuration="2d", plans="P", device="cpu",
                           log=messages.append, _model_folder=lambda results, trainer: str(model),
                           _variant=lambda trainer: "V")
    return fake, model, commands, messages


def _checkpoint(path, epoch=3):
    torch.save({"network_weights": {"w": torch.ones(2)}, "current_epoch": epoch}, str(path))


def test_arm_with_a_loading_final_checkpoint_is_done(tmp_path, monkeypatch):
    fake, model, commands, _ = _fake_study(tmp_path, monkeypatch)
    _checkpoint(model / "checkpoint_final.pth")
    assert Study._train(fake, "T", {"nnUNet_results": str(tmp_path / "results")}, "log") == 0.0
    assert commands == []


def test_corrupt_final_checkpoint_is_moved_aside_and_the_arm_retrained(tmp_path, monkeypatch):
    fake, model, commands, messages = _fake_study(tmp_path, monkeypatch)
    final = model / "checkpoint_final.pth"
    _checkpoint(final)
    data = final.read_bytes()
    final.write_bytes(data[: len(data) // 2])  # killed while torch.save wrote it
    Study._train(fake, "T", {"nnUNet_results": str(tmp_path / "results")}, "log")
    assert len(commands) == 1 and commands[0][:2] == ["nnUNetv2_train", "Dataset1_X"] and "--c" not in commands[0]
    assert not final.exists()
    moved = [f for f in os.listdir(model) if f.startswith("checkpoint_final.pth.corrupt-")]
    assert len(moved) == 1 and (model / moved[0]).read_bytes() == data[: len(data) // 2]
    assert any(str(final) in m and moved[0] in m for m in messages)


def test_corrupt_latest_checkpoint_is_moved_aside_instead_of_resumed(tmp_path, monkeypatch):
    fake, model, commands, messages = _fake_study(tmp_path, monkeypatch)
    (model / "checkpoint_latest.pth").write_bytes(b"PK\x03\x04 cut off")
    Study._train(fake, "T", {"nnUNet_results": str(tmp_path / "results")}, "log", ["-pretrained_weights", "x"])
    assert commands[0][-2:] == ["-pretrained_weights", "x"] and "--c" not in commands[0]
    assert not (model / "checkpoint_latest.pth").exists() and messages
    _checkpoint(model / "checkpoint_latest.pth")
    Study._train(fake, "T", {"nnUNet_results": str(tmp_path / "results")}, "log")
    assert commands[1][-1] == "--c"


def test_generated_variants_of_stock_trainers_save_atomically():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2_advmim.runtime.safe_training import SafeCheckpoints
    from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM

    namespace = {}
    exec(variants_source([("Stock_v", nnUNetTrainer, 2, 3, 1), ("AdvMIM_v", nnUNetTrainerAdvMIM, 2, 3, 1)]),
         namespace)
    assert namespace["Stock_v"].save_checkpoint is SafeCheckpoints.save_checkpoint
    assert namespace["Stock_v"].load_checkpoint is SafeCheckpoints.load_checkpoint
    assert namespace["AdvMIM_v"].save_checkpoint is nnUNetTrainerAdvMIM.save_checkpoint  # atomic already
