"""The stand-alone measurements live in ``nnunetv2_advmim.benchmark`` and run with ``python -m``: each module answers
``--help`` from any folder, the ACDC wrapper script keeps its hard time limit, and the study-noise figures say which
folder of CSV files is missing and how to pass one; the trainer variants both scripts write log training phases in the
lines each script parses."""
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from helpers import REPO
import torch

from nnunetv2_advmim.benchmark import acdc_gpu, study_noise, training_loop
from nnunetv2_advmim.benchmark.phase_timing import phase_logging_methods

WRAPPER = os.path.join(REPO, "nnunetv2_advmim", "benchmark", "acdc_gpu.sh")
MODULES = ("acdc_gpu", "architectures", "preprocess_unlabeled", "study_noise", "training_loop", "mim_steps")


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_module_runs_with_python_m_outside_the_repository(name, tmp_path):
    proc = subprocess.run([sys.executable, "-m", f"nnunetv2_advmim.benchmark.{name}", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:"), proc.stdout[:500]


def _fake_command(folder, name, body):
    """An executable ``folder/name`` shell script: stands in for a real command found through PATH."""
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write("#!/usr/bin/env bash\n" + body + "\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize("extra,limit", [((), "570"), (("--cpu-smoke",), "3600")])
def test_wrapper_runs_the_module_under_its_hard_limit(tmp_path, extra, limit):
    record = tmp_path / "timeout_args"
    _fake_command(tmp_path, "timeout", f'printf "%s\\n" "$@" > "{record}"')
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    env.pop("ACDC_GPU_TIMEOUT", None)
    subprocess.run(["bash", WRAPPER, "-d", "27", "-o", "x.json", *extra], env=env, check=True, timeout=60)
    assert record.read_text().splitlines() == ["--kill-after=10", limit, "python", "-m",
                                               "nnunetv2_advmim.benchmark.acdc_gpu", "-d", "27", "-o", "x.json",
                                               *extra]


def test_wrapper_hard_limit_stops_the_run_and_its_children(tmp_path):
    # the "python" found first on PATH starts a child and waits: the limit must end both, with timeout's status 124
    pid_file = tmp_path / "child.pid"
    _fake_command(tmp_path, "python", f'sleep 60 & echo $! > "{pid_file}"; wait')
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", ACDC_GPU_TIMEOUT="2")
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", WRAPPER, "-d", "27", "-o", "x.json"], env=env, timeout=60)
    assert proc.returncode == 124 and time.perf_counter() - t0 < 30
    child = int(pid_file.read_text())
    for _ in range(50):  # the signal reached the child's process group; give the kernel a moment to reap it
        if not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the child {child} of the stopped run is still alive")


def test_study_noise_names_the_missing_results_folder(tmp_path, capsys):
    missing = tmp_path / "study_results"
    with pytest.raises(SystemExit, match=f"{missing} does not exist.*--results DIR"):
        study_noise.main(["--results", str(missing)])
    missing.mkdir()
    shutil.copy(os.path.join(study_noise.RESULTS, "scarce2d_1000it_runs.csv"), missing)
    with pytest.raises(SystemExit, match="lacks scarce2d_1000it_reruns_runs.csv, scarce2d_1000it_noadv_runs.csv, "
                                         "scarce2d_1000it_reruns.csv; pass --results DIR"):
        study_noise.main(["--results", str(missing)])
    assert capsys.readouterr().out == ""  # nothing printed before the error


def test_study_noise_reads_the_clone_or_a_copy_alike(tmp_path, capsys):
    assert os.path.samefile(study_noise.RESULTS, os.path.join(REPO, "docs", "study_results"))
    study_noise.main(["--tau", "0"])
    from_clone = capsys.readouterr().out
    copy = shutil.copytree(study_noise.RESULTS, tmp_path / "copy")
    study_noise.main(["--tau", "0", "--results", str(copy)])
    assert capsys.readouterr().out == from_clone
    assert "Run-to-run sd of stock nnU-Net" in from_clone and "\n| 0 | " in from_clone


class _LoggingTrainer:
    """The parts of nnUNetTrainer the generated phase-logging methods call."""

    def __init__(self):
        self.device, self.current_epoch, self.step_mode, self.lines = torch.device("cpu"), 3, "memory", []

    def on_train_epoch_start(self):
        pass

    def on_train_epoch_end(self, train_outputs):
        pass

    def print_to_log_file(self, *args):
        self.lines.append("2026-12-06 10:00:00: " + " ".join(str(a) for a in args))


@pytest.mark.parametrize("tag,note", [("ACDCGPU", ""), ("LOOPCHECK", ", step mode {self.step_mode}")])
def test_phase_log_lines_are_what_each_script_parses(tag, note):
    namespace = {"time": time, "torch": torch, "Base": _LoggingTrainer}
    exec("class Timed(Base):\n" + phase_logging_methods(tag, note), namespace)
    trainer = namespace["Timed"]()
    trainer.on_train_epoch_start()
    time.sleep(0.05)
    trainer.on_train_epoch_end([{}] * 7)
    if tag == "ACDCGPU":
        phases = acdc_gpu.train_phases(trainer.lines)
    else:
        phases, mode, _ = training_loop.analyse_training(trainer.lines)
        assert mode == "memory"
    assert list(phases) == [3] and phases[3][1] == 7 and 0.05 <= phases[3][0] < 5, trainer.lines
