"""The whole AdvMIM training loop as a user meets it: compile time, recompiles and the in-loop step time.

The step benchmark (``nnUNetv2_advmim_benchmark``) times one AdvMIM step on random tensors; this script runs the
stock commands start to end on a synthetic 3D dataset and reports what the loop adds:

1. ``nnUNetv2_advmim_make_synthetic`` (3D), ``nnUNetv2_plan_and_preprocess -c 3d_fullres``,
   ``nnUNetv2_advmim_label_budget -n 2``, ``nnUNetv2_advmim_preprocess_unlabeled``;
2. ``nnUNetv2_train D 3d_fullres 0 -tr nnUNetTrainerAdvMIM_loopcheck`` (``--epochs`` x ``--iterations``, validation
   every epoch, nnU-Net's default ``torch.compile`` on CUDA) with ``TORCH_LOGS=recompiles``;
3. ``--c`` with one more epoch; 4. ``--val``; 5. ``nnUNetv2_predict`` on ``imagesTs``;
6. ``nnUNetv2_advmim_benchmark`` on the same plan, the trainer's step mode only (the step time outside the loop).

``nnUNetTrainerAdvMIM_loopcheck`` (written into the work folder) is ``nnUNetTrainerAdvMIM`` with the schedule set
and the seconds of each epoch's training phase (its iterations only, after a device synchronisation) written to
the training log. Reported (``loop.json`` and a summary):

- ``compile_overhead_s``: training phase of epoch 0 minus the median of the later epochs' training phases;
- ``recompiles_after_epoch_0``: lines of ``TORCH_LOGS=recompiles`` output after epoch 1 began (goal: 0), with the
  lines themselves;
- ``loop_step_s``: median training-phase seconds per iteration of epochs >= 1; ``loop_vs_benchmark``: that over
  the benchmark's median step time for the same mode (goal: within 1.10).

Every step runs with a time limit (``--step-timeout``) and ``loop.json`` is rewritten after each, so a run that is
cut short still reports what it measured. Usage (GPU)::

    python -m nnunetv2_advmim.benchmark.training_loop --workdir /tmp/loop -o loop.json
    python -m nnunetv2_advmim.benchmark.training_loop --device cpu --synthetic-shape 24 32 32 --epochs 2 \\
        --iterations 2 --benchmark-rounds 1   # a CPU smoke run: the commands work; the figures mean nothing
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from nnunetv2_advmim.benchmark.phase_timing import phase_logging_methods
from nnunetv2_advmim.runtime.atomic import write_json_atomic

DATASET_ID = 996
TRAINER = "nnUNetTrainerAdvMIM_loopcheck"
TRAINER_SOURCE = '''import os
import time

import torch
from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM


class {name}(nnUNetTrainerAdvMIM):
    """nnUNetTrainerAdvMIM with a short schedule; logs the seconds of each epoch's training phase."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get({epochs_env!r}, "{epochs}"))  # --c / --val runs set more epochs
        self.num_iterations_per_epoch = {iterations}
        self.num_val_iterations_per_epoch = {val_iterations}
'''
EPOCHS_ENV = "LOOPCHECK_EPOCHS"
LOOP_LINE = re.compile(r"LOOPCHECK epoch (\d+) train phase ([0-9.]+) s, (\d+) iterations, step mode (\w+)")


def run_step(name, cmd, env, logs, timeout, report):
    """Run one command (output to ``logs/<name>.log``) within ``timeout`` seconds; record it in ``report``; return
    its output lines."""
    print(f"+ {' '.join(cmd)}", flush=True)
    log_file = os.path.join(logs, f"{name}.log")
    t0 = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = "timeout"
    wall = time.perf_counter() - t0
    report["steps"].append({"name": name, "command": cmd, "returncode": rc, "wall_s": round(wall, 2),
                            "log": log_file})
    print(f"  {name}: exit {rc}, {wall:.1f} s (log: {log_file})", flush=True)
    with open(log_file) as f:
        lines = f.read().splitlines()
    if rc != 0:
        raise RuntimeError(f"{name} failed (exit {rc}); see {log_file}")
    return lines


def analyse_training(lines):
    """Training phases per epoch and the recompile lines after epoch 1 began, from a training's output."""
    phases, mode, recompiles, epoch1_seen = {}, None, [], False
    for line in lines:
        m = LOOP_LINE.search(line)
        if m:
            phases[int(m.group(1))] = (float(m.group(2)), int(m.group(3)))
            mode = m.group(4)
        if re.search(r"Epoch 1$", line.strip()):
            epoch1_seen = True
        if epoch1_seen and "Recompiling" in line:
            recompiles.append(line.strip())
    return phases, mode, recompiles


def summarise(phases, recompiles, bench_step_s):
    out = {"train_phase_s": {str(e): round(t, 4) for e, (t, _) in sorted(phases.items())},
           "recompiles_after_epoch_0": len(recompiles), "recompile_lines": recompiles[:50]}
    later = [(t, n) for e, (t, n) in phases.items() if e >= 1]
    if 0 in phases and later:
        out["compile_overhead_s"] = round(phases[0][0] - statistics.median(t for t, _ in later), 3)
    if later:
        out["loop_step_s"] = statistics.median(t / n for t, n in later)
        if bench_step_s:
            out["benchmark_step_s"] = bench_step_s
            out["loop_vs_benchmark"] = round(out["loop_step_s"] / bench_step_s, 3)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The script's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=None, help="work folder (default: a temporary one, removed after)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--synthetic-shape", type=int, nargs=3, default=(48, 48, 48))
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the first training (default 4)")
    parser.add_argument("--iterations", type=int, default=50, help="training iterations per epoch (default 50)")
    parser.add_argument("--val-iterations", type=int, default=5)
    parser.add_argument("--benchmark-rounds", type=int, default=10, help="timed rounds of the step benchmark")
    parser.add_argument("--step-timeout", type=float, default=1200, help="seconds allowed per command")
    parser.add_argument("-np", type=int, default=4, help="processes for planning and preprocessing")
    parser.add_argument("-o", default="loop.json", help="report file (rewritten after every step)")
    return parser


def loop_environment(work: str, args) -> dict:
    """The commands' environment: nnU-Net's folders inside ``work``, recompiles logged, and the loopcheck trainer
    written into ``work/trainers``, first on ``nnUNet_extTrainer`` (the user's own entries stay after it)."""
    trainers = os.path.join(work, "trainers")
    for d in ("raw", "preprocessed", "results", "logs", "trainers"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    env = dict(os.environ, nnUNet_raw=os.path.join(work, "raw"), nnUNet_preprocessed=os.path.join(work, "preprocessed"),
               nnUNet_results=os.path.join(work, "results"), TORCH_LOGS="recompiles")
    env["nnUNet_extTrainer"] = os.pathsep.join([trainers] + [p for p in env.get("nnUNet_extTrainer", "").split(
        os.pathsep) if p])
    with open(os.path.join(trainers, "loopcheck.py"), "w") as f:
        f.write(TRAINER_SOURCE.format(name=TRAINER, epochs=args.epochs, iterations=args.iterations,
                                      val_iterations=args.val_iterations, epochs_env=EPOCHS_ENV)
                + phase_logging_methods("LOOPCHECK", ", step mode {self.step_mode}"))
    return env


def new_report(args, work: str) -> dict:
    """The report before any command: settings, device and torch version (a failing device query is noted rather
    than stopping the run, so the report still says what ran)."""
    report = {"settings": vars(args), "workdir": work, "steps": [], "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        import torch
        report["device_name"] = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        report["torch"] = torch.__version__
    except Exception as e:
        report["device_name"] = f"unknown ({e})"
    return report


def prepare_dataset(step, args) -> None:
    """Stage 1: the synthetic 3D dataset, its 3d_fullres plan, a 2-case label budget and the unlabeled pool."""
    d = str(DATASET_ID)
    shape = [str(s) for s in args.synthetic_shape]
    step("make_synthetic", ["nnUNetv2_advmim_make_synthetic", "-d", d, "--dim", "3", "--preset", "default",
                            "--shape", *shape, "--overwrite"])
    step("plan", ["nnUNetv2_plan_and_preprocess", "-d", d, "-c", "3d_fullres", "-np", str(args.np)])
    step("label_budget", ["nnUNetv2_advmim_label_budget", "-d", d, "-n", "2"])
    step("preprocess_unlabeled", ["nnUNetv2_advmim_preprocess_unlabeled", "-d", d, "-c", "3d_fullres",
                                  "-np", str(args.np)])


def train_resume_predict(step, save, args, env: dict, work: str, report: dict):
    """Stages 2-5: the training, ``--c`` with one more epoch, ``--val`` and ``nnUNetv2_predict`` on ``imagesTs``.
    Returns the first training's phases, step mode and recompile lines."""
    train = ["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", TRAINER, "-device", args.device]
    phases, mode, recompiles = analyse_training(step("train", train))
    report["step_mode"] = mode
    report["loop"] = summarise(phases, recompiles, None)
    save()
    one_more = dict(env, **{EPOCHS_ENV: str(args.epochs + 1)})
    more, _, _ = analyse_training(step("train_continue", train + ["--c"], one_more))
    report["resume"] = {"epochs_trained": sorted(more), "train_phase_s": {str(e): t for e, (t, _) in more.items()}}
    save()
    step("validate", train + ["--val"], one_more)
    step("predict", ["nnUNetv2_predict", "-i", os.path.join(env["nnUNet_raw"], _dataset_folder(env), "imagesTs"),
                     "-o", os.path.join(work, "predictions"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0",
                     "-tr", TRAINER, "-device", args.device, "--disable_progress_bar"])
    save()
    return phases, mode, recompiles


def benchmark_step(step, args, work: str, report: dict, mode):
    """Stage 6: ``nnUNetv2_advmim_benchmark`` on the same plan, in the training's step mode when it knows it. Returns
    that mode's median step seconds outside the loop (None for a mode the benchmark does not run)."""
    bench_file = os.path.join(work, "benchmark.json")
    known = mode in ("fast", "balanced", "memory", "reference")
    step("benchmark", ["nnUNetv2_advmim_benchmark", "-d", str(DATASET_ID), "-c", "3d_fullres", "-device", args.device,
                       "-n", str(args.benchmark_rounds), "--skip-data", "--skip-mim", "-o", bench_file]
         + (["--modes", mode] if known else []))
    with open(bench_file) as f:
        bench = json.load(f)
    report["benchmark_step_s"] = {k: v.get("median_s") for k, v in bench["items"].items()}
    return bench["items"].get(f"advmim_{mode}", {}).get("median_s") if known else None


def main(argv=None):
    args = build_parser().parse_args(argv)
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="advmim_loop_"))
    logs = os.path.join(work, "logs")
    env = loop_environment(work, args)
    report = new_report(args, work)

    def save():
        write_json_atomic(args.o, report, indent=1)

    def step(name, cmd, step_env=env):
        return run_step(name, cmd, step_env, logs, args.step_timeout, report)

    try:
        prepare_dataset(step, args)
        save()
        phases, mode, recompiles = train_resume_predict(step, save, args, env, work, report)
        report["loop"] = summarise(phases, recompiles, benchmark_step(step, args, work, report, mode))
    except RuntimeError as e:
        report["error"] = str(e)
        print(f"STOPPED: {e}", flush=True)
    finally:
        save()
    loop = report.get("loop", {})
    print(json.dumps({k: v for k, v in loop.items() if k != "recompile_lines"}, indent=1))
    for line in loop.get("recompile_lines", [])[:10]:
        print("  recompile:", line)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if "error" in report else 0


def _dataset_folder(env):
    raw = env["nnUNet_raw"]
    return next(f for f in os.listdir(raw) if f.startswith(f"Dataset{DATASET_ID:03d}_"))


if __name__ == "__main__":
    sys.exit(main())
