"""The shortest informative ACDC comparison for one lent GPU session: seconds per iteration of every arm on the
dataset's own plan, then validation Dice of a few arms trained for the same number of iterations, all inside a
wall-clock budget (default 480 s, so a 10-minute device call keeps room for start-up and copying).

Input: an ACDC dataset converted with ``nnUNetv2_advmim_convert_acdc`` and planned for the configuration
(``nnUNetv2_plan_and_preprocess -d ID -c 2d``). The dataset's own ``splits_final.json`` and ``label_budget.json``
are never touched: the runs read a private preprocessed folder (links to the planned data) holding the protocol's
budget (``--protocol``, default acdc-3: 3 labeled patients, fold 0 validates on the split's validation patients),
and write their models under ``--workdir``.

1. **Timing**: every ``--arms`` trainer and the ``--pretrainer`` train ``--timing-epochs`` x
   ``--timing-iterations`` through ``nnUNetv2_train`` (variants written into the work folder; no final
   validation). Each epoch's training phase (its iterations only, after a device synchronisation) is logged;
   seconds per iteration = the median over the epochs after the first (which holds cuDNN's autotuning and the
   workers' start). ``x_stock`` relates every arm to ``nnUNetTrainer``; ``hours_30k`` / ``hours_250k`` scale it to
   30k iterations (the papers' schedule) and to nnU-Net's default 1000 x 250.
2. **Dice**: the ``--dice-arms`` train the same number of iterations, as many as the rest of the budget allows
   (from phase 1's seconds per iteration and start-up seconds), at most ``--max-dice-iterations``, with nnU-Net's
   final validation on the validation patients' frames; Dice per label from ``validation/summary.json``.

Each run has a time limit (what is left of the budget, shared among the runs still to come), and the JSON is
rewritten after every run, so a session cut short still reports what it measured. ``nnUNet_compile`` is off
unless ``--compile``: compiling costs minutes per process, which the budget cannot pay (the step benchmark,
docs/benchmark.md, gives the compiled ratios).

    bash nnunetv2_advmim/benchmark/acdc_gpu.sh -d 27 -o acdc_gpu.json      # GPU
    bash nnunetv2_advmim/benchmark/acdc_gpu.sh -d 27 -o smoke.json --cpu-smoke  # CPU: the commands work, no figures
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from nnunetv2_advmim.benchmark.phase_timing import phase_logging_methods
from nnunetv2_advmim.runtime.atomic import write_json_atomic

STOCK = "nnUNetTrainer"
DEFAULT_ARMS = ("nnUNetTrainer", "nnUNetTrainerCTCT", "nnUNetTrainerAdvMIM", "nnUNetTrainerAdvMIM_paper")
DEFAULT_PRETRAINER = "nnUNetTrainerAnatoMask_AdvMIM"
DEFAULT_DICE_ARMS = ("nnUNetTrainer", "nnUNetTrainerAdvMIM")
SUFFIX = "_acdcgpu"
VARIANTS_MODULE = "acdc_gpu_trainers"
# the schedule of one run reaches the variants through the environment: one module serves both phases
ENV_EPOCHS, ENV_ITERATIONS, ENV_VALIDATE, ENV_THREADS = ("ACDC_GPU_EPOCHS", "ACDC_GPU_ITERATIONS",
                                                         "ACDC_GPU_FINAL_VALIDATION", "ACDC_GPU_THREADS")
PHASE_LINE = re.compile(r"ACDCGPU epoch (\d+) train phase ([0-9.]+) s, (\d+) iterations")
SCHEDULES = {"hours_30k": 30000, "hours_250k": 250000}

VARIANT_SOURCE = '''

class {name}({base}):
    """{base} on the schedule of the environment; logs the seconds of each epoch's training phase."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        epochs = int(os.environ["{epochs_env}"])
        if getattr(self, "warmup_epochs", None) is not None:  # MIM warm-up: the same share of a shorter schedule
            self.warmup_epochs = max(1, round(self.warmup_epochs * epochs / self.num_epochs))
        self.num_epochs = epochs
        self.num_iterations_per_epoch = int(os.environ["{iterations_env}"])
        self.num_val_iterations_per_epoch = 1
        if os.environ.get("{threads_env}"):
            torch.set_num_threads(int(os.environ["{threads_env}"]))

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("{validate_env}") == "1":
            super().perform_actual_validation(save_probabilities)
        else:
            self.print_to_log_file("Final validation skipped (timing run)")
'''


def trainer_module(name: str) -> str:
    """The importable module that defines trainer ``name``: this package's trainers, else nnU-Net's own."""
    import contextlib
    import importlib
    import io
    import pkgutil

    import nnunetv2_advmim.trainers as ours
    for info in pkgutil.iter_modules(ours.__path__):
        module = importlib.import_module(f"{ours.__name__}.{info.name}")
        cls = getattr(module, name, None)
        if isinstance(cls, type) and cls.__module__ == module.__name__:  # defined there, not imported
            return module.__name__
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's lookup narrates its search
            cls = recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        cls = None
    if cls is None or not cls.__module__.startswith("nnunetv2."):
        raise ValueError(f"trainer {name!r} is neither one of nnunetv2_advmim's nor one of nnU-Net's; check the name")
    return cls.__module__


def variants_source(trainers) -> str:
    """A module with one ``<trainer>_acdcgpu`` variant per trainer name."""
    out = ['"""Trainer variants written by nnunetv2_advmim.benchmark.acdc_gpu (schedule from the environment)."""\n',
           "import os\nimport time\n\nimport torch\n"]
    for t in trainers:
        out.append(f"from {trainer_module(t)} import {t}\n")
    for t in trainers:
        out.append(VARIANT_SOURCE.format(name=t + SUFFIX, base=t, epochs_env=ENV_EPOCHS, iterations_env=ENV_ITERATIONS,
                                         validate_env=ENV_VALIDATE, threads_env=ENV_THREADS))
        out.append(phase_logging_methods("ACDCGPU"))
    return "".join(out)


def train_phases(lines):
    """{epoch: (seconds of its training phase, iterations)} from a training log's lines."""
    out = {}
    for line in lines:
        m = PHASE_LINE.search(line)
        if m:
            out[int(m.group(1))] = (float(m.group(2)), int(m.group(3)))
    return out


def seconds_per_iteration(phases) -> float:
    """Median seconds per iteration of the epochs after the first (all of them if there is only one)."""
    later = [s / n for e, (s, n) in sorted(phases.items()) if e > 0 and n] or \
            [s / n for s, n in phases.values() if n]
    return statistics.median(later) if later else float("nan")


def plan_dice_iterations(seconds_left: float, per_iteration, overhead_s: float, validation_s: float,
                         epoch_iterations: int, cap: int) -> int:
    """Iterations every Dice arm can train (a multiple of ``epoch_iterations``, at most ``cap``) so that all of them,
    each with its start-up (``overhead_s``) and final validation (``validation_s``), fit into ``seconds_left``."""
    per_iteration = [s for s in per_iteration if s == s]  # NaN: an arm that was not timed
    if not per_iteration:
        return 0
    training_s = seconds_left - len(per_iteration) * (overhead_s + validation_s)
    n = int(training_s / sum(per_iteration)) if training_s > 0 else 0
    return max(0, min(cap, n) // epoch_iterations * epoch_iterations)


def dice_from_summary(summary: dict, labels: dict) -> dict:
    """Mean Dice per label name and over the foreground from nnU-Net's ``summary.json``."""
    names = {str(v): k for k, v in labels.items() if k != "background"}
    per_label = {names.get(k, k): v["Dice"] for k, v in summary["mean"].items()}
    return {"per_label": per_label, "mean": summary["foreground_mean"]["Dice"]}


def hours(per_iteration: float) -> dict:
    return {k: per_iteration * n / 3600 for k, n in SCHEDULES.items()}


# ------------------------------------------------------------------------------------------------- running
def private_preprocessed(source: str, target_root: str, protocol: str, plans: str) -> str:
    """``target_root/<Dataset>``: links to every entry of the planned dataset ``source`` but its split and budget
    files, plus the protocol's ``splits_final.json`` and ``label_budget.json``."""
    from nnunetv2_advmim.data.acdc_split import protocol_budget, split_of_dataset
    from nnunetv2_advmim.data.label_budget import training_cases, write_budget
    from nnunetv2_advmim.data.paths import load_plans_and_dataset_json

    target = os.path.join(target_root, os.path.basename(source))
    os.makedirs(target, exist_ok=True)
    for entry in os.listdir(source):
        if entry.startswith(("splits_final.json", "label_budget.json")):
            continue
        link = os.path.join(target, entry)
        if not os.path.lexists(link):
            os.symlink(os.path.join(source, entry), link)
    _, dataset_json = load_plans_and_dataset_json(source, plans)
    budget = protocol_budget(training_cases(source, plans), protocol, split_of_dataset(dataset_json))
    write_budget(target, budget)
    return target


def planned(folder: str, plans: str, configuration: str):
    """None if ``configuration`` of ``plans`` is preprocessed in ``folder``, else why not."""
    plans_file = os.path.join(folder, plans + ".json")
    if not os.path.isfile(plans_file):
        return f"{plans_file} does not exist"
    with open(plans_file) as f:
        configurations = json.load(f)["configurations"]
    if configuration not in configurations:
        return f"{plans_file} has no configuration {configuration}"
    data = os.path.join(folder, configurations[configuration].get("data_identifier", f"{plans}_{configuration}"))
    if not os.path.isdir(data) or not any(f.endswith(".pkl") for f in os.listdir(data)):
        return f"{data} holds no preprocessed case"
    return None


def run(cmd, env, log_file, timeout):
    """Run ``cmd`` with a time limit; (status, wall seconds). The output goes to ``log_file``."""
    t0 = time.perf_counter()
    with open(log_file, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        try:
            rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
            status = "ok" if rc == 0 else f"failed (exit {rc}), see {log_file}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    return status, time.perf_counter() - t0


def training_log_lines(model_folder: str):
    if not os.path.isdir(model_folder):
        return []
    lines = []
    for f in sorted(os.listdir(model_folder)):
        if f.startswith("training_log") and f.endswith(".txt"):
            with open(os.path.join(model_folder, f)) as fh:
                lines += fh.read().splitlines()
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The script's options; :func:`parse_args` applies the budget's default and ``--cpu-smoke``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", required=True, help="the converted and planned ACDC dataset (ID or DatasetXXX_Name)")
    parser.add_argument("-c", default="2d", help="configuration (default 2d, the papers' setting)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    parser.add_argument("--protocol", default="acdc-3", help="labeled patients (label_budget --protocol; acdc-3)")
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), help="trainers to time")
    parser.add_argument("--pretrainer", default=DEFAULT_PRETRAINER,
                        help=f"pretraining trainer to time too ('none' to skip; default {DEFAULT_PRETRAINER})")
    parser.add_argument("--dice-arms", nargs="*", default=list(DEFAULT_DICE_ARMS),
                        help="trainers trained for Dice after the timing (equal iterations)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="wall-clock budget of the whole script (default 480; 3600 with --cpu-smoke)")
    parser.add_argument("--timing-share", type=float, default=0.45, help="share of the budget for the timing runs")
    parser.add_argument("--timing-epochs", type=int, default=3)
    parser.add_argument("--timing-iterations", type=int, default=25)
    parser.add_argument("--dice-epoch-iterations", type=int, default=50, help="iterations per epoch of a Dice run")
    parser.add_argument("--dice-iterations", type=int, default=None,
                        help="iterations of every Dice run (default: as many as the budget allows)")
    parser.add_argument("--max-dice-iterations", type=int, default=5000)
    parser.add_argument("--min-dice-iterations", type=int, default=100,
                        help="skip the Dice runs when the budget allows fewer iterations")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile", action="store_true", help="keep nnU-Net's torch.compile (minutes per process)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per training")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny CPU run (device cpu, 2 x 2 timing iterations, 2 Dice iterations, one thread): "
                             "checks that every command works; its figures mean nothing")
    parser.add_argument("--workdir", default=None, help="work folder (default: a new temporary folder, kept)")
    parser.add_argument("-o", default="acdc_gpu.json", help="output JSON (an existing file is not overwritten)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """Options with the budget's default and ``--cpu-smoke``'s tiny schedule applied; an existing ``-o`` is refused
    before anything runs."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 3600.0 if args.cpu_smoke else 480.0
    if args.cpu_smoke:
        args.device, args.timing_epochs, args.timing_iterations = "cpu", 2, 2
        args.dice_epoch_iterations = 2
        args.dice_iterations = 2 if args.dice_iterations is None else args.dice_iterations
        args.threads = args.threads or 1
    if os.path.exists(args.o):
        parser.error(f"{args.o} exists; choose another -o")
    return args


def plan_if_needed(args, dataset: str, source: str, logs: str, deadline: float):
    """(status, seconds of planning): a converted raw dataset travels to a lent machine while its preprocessed data
    need not, so ``-c`` is planned here when ``source`` lacks it; ("ok", None) when it is planned already."""
    plan_status = planned(source, args.p, args.c)
    if not plan_status:
        return "ok", None
    print(f"{plan_status}: planning {dataset} ({args.c}) first")
    np_ = str(max(1, min(8, (os.cpu_count() or 2) - 1)))
    return run(["nnUNetv2_plan_and_preprocess", "-d", str(int(dataset[7:10])), "-c", args.c, "-np", np_],
               dict(os.environ), os.path.join(logs, "plan.log"), max(deadline - time.perf_counter(), 1.0))


def new_report(args, argv, dataset: str, conf, plan_s, work: str) -> dict:
    """The report before any training: the machine, the versions and the settings the figures depend on."""
    import importlib.metadata

    import torch
    return {"script": "nnunetv2_advmim.benchmark.acdc_gpu",
            "command": sys.argv if argv is None else ["acdc_gpu.py"] + argv,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "mode": "cpu-smoke" if args.cpu_smoke else args.device,
            "machine": {"device": args.device, "gpu": torch.cuda.get_device_name(0) if args.device == "cuda"
                        and torch.cuda.is_available() else None, "torch": torch.__version__,
                        "nnunetv2": importlib.metadata.version("nnunetv2"), "cpu_count": os.cpu_count()},
            "settings": {"dataset": dataset, "configuration": args.c, "plans": args.p, "protocol": args.protocol,
                         "budget_s": args.budget_s, "compile": args.compile, "timing_epochs": args.timing_epochs,
                         "timing_iterations": args.timing_iterations, "threads": args.threads,
                         "patch_size": list(conf.patch_size), "batch_size": conf.batch_size,
                         "planned_here_s": plan_s},
            "workdir": work, "timing": {}, "dice": {"arms": {}}, "status": "running"}


class Session:
    """One run: its work folder (logs, the private preprocessed data, the trainer variants, the models) and its
    report, rewritten after every training so that a run stopped by the hard limit still says what it measured."""

    def __init__(self, args, dataset: str, work: str, report: dict, t_start: float):
        self.args, self.dataset, self.work, self.report, self.t_start = args, dataset, work, report, t_start
        self.deadline = t_start + args.budget_s
        self.logs = os.path.join(work, "logs")
        self.pre_root = os.path.join(work, "preprocessed")
        self.ext = os.path.join(work, "trainers")

    def save(self) -> None:
        self.report["elapsed_s"] = time.perf_counter() - self.t_start
        write_json_atomic(self.args.o, self.report)

    def write_variants(self) -> list:
        """Write the ``_acdcgpu`` variant of every trainer to time and return those trainers: the arms, the Dice
        arms (their seconds per iteration plan the Dice runs) and the pretrainer."""
        args = self.args
        pretrainer = None if args.pretrainer.lower() == "none" else args.pretrainer
        timed = list(dict.fromkeys(args.arms + list(args.dice_arms) + ([pretrainer] if pretrainer else [])))
        os.makedirs(self.ext, exist_ok=True)
        with open(os.path.join(self.ext, VARIANTS_MODULE + ".py"), "w") as f:
            f.write(variants_source(timed))
        return timed

    def env_for(self, phase, epochs, iterations, validate) -> dict:
        """nnU-Net's environment for one training: the private preprocessed data, a results folder per phase, the
        variants on ``nnUNet_extTrainer`` and the schedule the variants read."""
        args = self.args
        env = dict(os.environ, nnUNet_preprocessed=self.pre_root,
                   nnUNet_results=os.path.join(self.work, "results", phase),
                   nnUNet_extTrainer=self.ext + (os.pathsep + os.environ["nnUNet_extTrainer"]
                                                 if os.environ.get("nnUNet_extTrainer") else ""))
        env.update({ENV_EPOCHS: str(epochs), ENV_ITERATIONS: str(iterations), ENV_VALIDATE: "1" if validate else "0"})
        if not args.compile:
            env["nnUNet_compile"] = "false"
        if args.threads:
            env[ENV_THREADS] = str(args.threads)
        return env

    def model_folder(self, phase, trainer) -> str:
        return os.path.join(self.work, "results", phase, self.dataset,
                            f"{trainer}{SUFFIX}__{self.args.p}__{self.args.c}", "fold_0")

    def train(self, phase, trainer, epochs, iterations, validate, timeout) -> dict:
        """Train ``trainer``'s variant through ``nnUNetv2_train`` within ``timeout`` seconds; its status, wall time
        and the training phase seconds its log holds."""
        args = self.args
        cmd = ["nnUNetv2_train", self.dataset, args.c, "0", "-tr", trainer + SUFFIX, "-p", args.p,
               "-device", args.device]
        log = os.path.join(self.logs, f"{phase}_{trainer}.log")
        status, wall = run(cmd, self.env_for(phase, epochs, iterations, validate), log, timeout)
        phases = train_phases(training_log_lines(self.model_folder(phase, trainer)))
        per_it = seconds_per_iteration(phases)
        return {"status": status, "wall_s": wall, "log": log, "train_phase_s": [phases[e][0] for e in sorted(phases)],
                "iterations_per_epoch": iterations, "s_per_iteration": None if per_it != per_it else per_it}


def time_arms(session: Session, timed: list) -> None:
    """Phase 1: each trainer trains the timing schedule within an equal share of what is left of the timing part of
    the budget; then hours and ``x_stock`` from the seconds per iteration."""
    args, report = session.args, session.report
    timing_deadline = session.t_start + args.timing_share * args.budget_s
    for i, trainer in enumerate(timed):
        left = timing_deadline - time.perf_counter()
        share = left / (len(timed) - i)
        if share < 5:
            report["timing"][trainer] = {"status": "skipped: the timing share of the budget is spent"}
            continue
        report["timing"][trainer] = session.train("timing", trainer, args.timing_epochs, args.timing_iterations,
                                                  False, share)
        session.save()
    stock = report["timing"].get(STOCK, {}).get("s_per_iteration")
    for trainer, r in report["timing"].items():
        if r.get("s_per_iteration") is not None:
            r["hours"] = hours(r["s_per_iteration"])
            if stock:
                r["x_stock"] = r["s_per_iteration"] / stock
    session.save()


def train_dice(session: Session, labels: dict) -> None:
    """Phase 2: the Dice arms train the same number of iterations, as many as the rest of the budget allows at their
    timed seconds per iteration (or ``--dice-iterations``), each validated by nnU-Net's final validation."""
    args, report = session.args, session.report
    done = [r for r in report["timing"].values() if r.get("status") == "ok"]
    overhead = statistics.median([r["wall_s"] - sum(r["train_phase_s"]) for r in done]) if done else 60.0
    per_it = [report["timing"].get(t, {}).get("s_per_iteration") for t in args.dice_arms]
    per_it = [float("nan") if s is None else s for s in per_it]
    if args.dice_iterations is not None:
        n_dice = args.dice_iterations
    else:
        n_dice = plan_dice_iterations(session.deadline - time.perf_counter() - 10, per_it, overhead, overhead,
                                      args.dice_epoch_iterations, args.max_dice_iterations)
    report["dice"].update({"iterations": n_dice, "startup_s_estimate": overhead,
                           "validation": "nnU-Net's final validation: the protocol's validation patients' frames"})
    minimum = 1 if args.dice_iterations is not None else args.min_dice_iterations
    if not args.dice_arms:
        report["dice"]["status"] = "no --dice-arms"
    elif n_dice < minimum:
        report["dice"]["status"] = f"skipped: the budget left allows {n_dice} iterations per arm"
    else:
        epochs = max(1, n_dice // args.dice_epoch_iterations)
        for i, trainer in enumerate(args.dice_arms):
            left = session.deadline - time.perf_counter()
            share = max(left / (len(args.dice_arms) - i), 1.0)
            r = session.train("dice", trainer, epochs, args.dice_epoch_iterations, True, share)
            summary = os.path.join(session.model_folder("dice", trainer), "validation", "summary.json")
            if os.path.isfile(summary):
                with open(summary) as f:
                    r["val_dice"] = dice_from_summary(json.load(f), labels)
            report["dice"]["arms"][trainer] = r
            session.save()
        report["dice"]["status"] = "ran"


def finish(session: Session) -> int:
    """The final status (complete, or which arms did not finish), the last save and a summary; exit code 1 when an
    arm did not finish."""
    args, report = session.args, session.report
    failed = [t for t, r in list(report["timing"].items()) + list(report["dice"]["arms"].items())
              if r.get("status") != "ok"]
    report["status"] = "complete" if not failed else f"partial: {', '.join(sorted(set(failed)))} did not finish"
    session.save()
    print(json.dumps({t: {k: r.get(k) for k in ("status", "s_per_iteration", "x_stock")}
                      for t, r in report["timing"].items()}, indent=1))
    print(json.dumps({t: r.get("val_dice") for t, r in report["dice"]["arms"].items()}, indent=1))
    print(f"Wrote {args.o} ({report['status']}); logs and models in {session.work}")
    return 0 if not failed else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    from nnunetv2_advmim.data.paths import env_folder, find_dataset_name, load_plans_and_dataset_json

    work = args.workdir or tempfile.mkdtemp(prefix="acdc_gpu_")
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    dataset = find_dataset_name(args.d, env_folder("nnUNet_raw"))
    source = os.path.join(env_folder("nnUNet_preprocessed"), dataset)
    status, plan_s = plan_if_needed(args, dataset, source, os.path.join(work, "logs"), t_start + args.budget_s)
    if status != "ok":
        print(f"ERROR: planning {status}", file=sys.stderr)
        return 1
    plans_manager, dataset_json = load_plans_and_dataset_json(source, args.p)
    conf = plans_manager.get_configuration(args.c)
    session = Session(args, dataset, work, new_report(args, argv, dataset, conf, plan_s, work), t_start)
    private_preprocessed(source, session.pre_root, args.protocol, args.p)
    timed = session.write_variants()
    time_arms(session, timed)
    train_dice(session, dataset_json["labels"])
    return finish(session)


if __name__ == "__main__":
    sys.exit(main())
