"""``nnUNetv2_advmim_benchmark``: the command line of :mod:`nnunetv2_advmim.benchmark.measure` and the table it
prints (what it measures and how to read the figures: ``docs/benchmark.md``)."""
import argparse
import atexit
import datetime
import os
import shutil
import sys
import tempfile
import time

import subprocess
from typing import Optional, Sequence

import torch

from nnunetv2_advmim.data.synthetic import dataset_folder_name, make_synthetic_dataset
from nnunetv2_advmim.cli import RawDescriptionDefaultsHelpFormatter
from nnunetv2_advmim.runtime.atomic import write_json_atomic

SYNTHETIC_ID = 951


def prepare_synthetic(workdir: str, configuration: str, shape: Optional[Sequence[int]] = None,
                      n_train: int = 6, n_unlabeled: int = 4, num_processes: int = 2) -> str:
    """Write, plan and preprocess the built-in synthetic dataset (+ its ``imagesUnlabeled``) under ``workdir``
    and point this process's ``nnUNet_raw/_preprocessed/_results`` there. Returns the dataset name."""

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[var] = os.path.join(workdir, var)
        os.makedirs(os.environ[var], exist_ok=True)
    if "nnunetv2.paths" in sys.modules:
        raise RuntimeError("prepare_synthetic must run before nnunetv2 is imported (nnunetv2.paths reads the "
                           "nnUNet_* folders once, at import)")
    dim = 2 if configuration == "2d" else 3
    name = dataset_folder_name(SYNTHETIC_ID, f"Synthetic{dim}D")
    if os.path.isfile(os.path.join(os.environ["nnUNet_preprocessed"], name, "nnUNetPlans.json")):
        return name  # --workdir reused: planned before
    make_synthetic_dataset(os.environ["nnUNet_raw"], SYNTHETIC_ID, dim=dim, n_train=n_train, n_unlabeled=n_unlabeled,
                           n_test=0, shape=shape)
    for cmd in (["nnUNetv2_plan_and_preprocess", "-d", str(SYNTHETIC_ID), "-c", configuration,
                 "-np", str(num_processes)],
                ["nnUNetv2_advmim_preprocess_unlabeled", "-d", str(SYNTHETIC_ID), "-c", configuration,
                 "-np", str(num_processes)]):
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    return name


def build_parser() -> argparse.ArgumentParser:
    """The command's options; kept apart from :func:`main` so that the option list reads as one block."""
    parser = argparse.ArgumentParser(prog="nnUNetv2_advmim_benchmark",
                                     description="Speed and memory of the AdvMIM step next to its floor and to "
                                                 "stock nnU-Net",
                                     formatter_class=RawDescriptionDefaultsHelpFormatter,
                                     epilog="See docs/benchmark.md for how to read the figures.")
    parser.add_argument("-d", default=None, help="dataset ID or name (planned; its unlabeled pool for the data "
                        "pipeline). Default: the built-in synthetic dataset in a temporary folder")
    parser.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-f", default="0", help="fold whose split the data pipeline uses (default 0)")
    parser.add_argument("-device", default=None, choices=("cpu", "cuda"), help="default: cuda if available")
    parser.add_argument("-n", type=int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3; more with "
                        "torch.compile)")
    parser.add_argument("--patch", type=int, nargs="+", default=None, help="patch size instead of the plan's "
                        "(network topology re-derived the planner's way)")
    parser.add_argument("--batch", type=int, default=None, help="batch size instead of the plan's")
    parser.add_argument("--modes", nargs="+", default=None, help="AdvMIM step modes (default: all of STEP_MODES)")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"), help="AdvMIM AMP setting")
    parser.add_argument("--compile", default=None, choices=("on", "off"), help="set nnUNet_compile for this run "
                        "(default: as set in the environment; nnU-Net compiles on CUDA unless it is false)")
    parser.add_argument("--skip-data", action="store_true", help="do not measure the data pipeline")
    parser.add_argument("--skip-mim", action="store_true", help="do not measure the MIM pretraining steps")
    parser.add_argument("--data-batches", type=int, default=20, help="batches timed for the data pipeline")
    parser.add_argument("--synthetic-shape", type=int, nargs="+", default=None,
                        help="image shape of the default synthetic dataset (default: the synthetic module's)")
    parser.add_argument("--workdir", default=None, help="folder for the default synthetic dataset (default: temp)")
    parser.add_argument("-np", type=int, default=2, help="processes for planning the synthetic dataset")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's). On a "
                        "machine shared with other jobs, 1 avoids stalls of multi-threaded kernels waiting for a "
                        "descheduled thread")
    parser.add_argument("-o", default=None, help="write the result as JSON to this file")
    return parser


def dataset_to_measure(args: argparse.Namespace, parser: argparse.ArgumentParser, t_start: float) -> str:
    """The dataset name to benchmark: ``-d`` as given, or the synthetic dataset written and planned now. Either way
    the trainers' log files go to a folder removed at exit, never into the user's own results."""
    if args.d is not None:
        if not os.environ.get("nnUNet_preprocessed"):
            parser.error("nnUNet_preprocessed is not set: point it at your nnU-Net preprocessed folder, or leave "
                         "out -d to benchmark the built-in synthetic dataset")
        # trainers write their log files into nnUNet_results/<dataset>/...: keep those out of the user's results
        tmp_results = tempfile.mkdtemp(prefix="advmim_benchmark_results_")
        os.environ["nnUNet_results"] = tmp_results
        atexit.register(shutil.rmtree, tmp_results, True)
        return args.d
    workdir = args.workdir
    if workdir is None:  # a temporary dataset is removed at exit; --workdir keeps it for the next run
        workdir = tempfile.mkdtemp(prefix="advmim_benchmark_")
        atexit.register(shutil.rmtree, workdir, True)
    print(f"No -d: writing and planning the synthetic dataset in {workdir}", flush=True)
    dataset = prepare_synthetic(workdir, args.c, args.synthetic_shape, num_processes=args.np)
    print(f"Synthetic dataset ready in {time.perf_counter() - t_start:.0f} s", flush=True)
    return dataset


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.o and os.path.exists(args.o):
        parser.error(f"{args.o} exists; choose another -o (results are never overwritten)")
    if args.n < 1 or args.warmup < 0:
        parser.error("-n must be >= 1 and --warmup >= 0")
    if args.compile:
        os.environ["nnUNet_compile"] = "1" if args.compile == "on" else "0"
    t_start = time.perf_counter()
    dataset = dataset_to_measure(args, parser, t_start)
    if args.threads:
        torch.set_num_threads(args.threads)
    # nnU-Net's modules are imported only now, after the nnUNet_* folders and nnUNet_compile are set
    from nnunetv2_advmim.benchmark.measure import run_benchmark
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        result = run_benchmark(dataset, args.c, args.p, device, args.n, args.warmup, args.patch, args.batch,
                               args.modes, args.amp, args.skip_data, args.skip_mim, args.data_batches, args.f)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    result["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    result["command"] = " ".join(["nnUNetv2_advmim_benchmark"] + list(sys.argv[1:] if argv is None else argv))
    result["wall_s"] = time.perf_counter() - t_start
    if args.o:
        os.makedirs(os.path.dirname(os.path.abspath(args.o)), exist_ok=True)
        write_json_atomic(args.o, result, indent=1)
    print(format_report(result))
    if args.o:
        print(f"Wrote {args.o}")


def format_report(r: dict) -> str:
    """The table the command prints: every item's time and peak memory against stock, then the targets."""
    s, mach = r["settings"], r["machine"]
    lines = [f"{s['dataset']} {s['configuration']} ({s['plans']}), patch {s['patch_size']}, batch {s['batch_size']} "
             f"labeled + {s['unlabeled_batch_size']} unlabeled, device {mach['device']} "
             f"({mach.get('gpu') or mach.get('cpu')}), AMP {s['amp_dtype']}, compiled: stock {s['stock_compiled']}, AdvMIM "
             f"{s['advmim_compiled']}",
             f"median of {s['n']} steps after {s['warmup']} warm-up rounds, round-robin; peak memory: {s['memory']}",
             "", f"{'item':<20}{'median s':>10}{'x stock':>9}{'E':>7}{'peak MiB':>10}{'x stock':>9}"]
    stock_peak = r["items"]["stock"]["peak_mib"]
    for k, v in r["items"].items():
        mode = k[len("advmim_"):] if k.startswith("advmim_") else None
        e = f"{r['modes'][mode]['E']:.2f}" if mode else ""
        mem = f"{v['peak_mib']:.0f}" if v["peak_mib"] is not None else "-"
        mem_ratio = f"{v['peak_mib'] / stock_peak:.2f}" if v["peak_mib"] and stock_peak else "-"
        lines.append(f"{k:<20}{v['median_s']:>10.4f}{v['median_s'] / r['items']['stock']['median_s']:>9.2f}{e:>7}"
                     f"{mem:>10}{mem_ratio:>9}")
    lines.append(f"floor 4 (t_S + t_C) = {r['floor_s']:.4f} s")
    if "mim" in r:
        lines.append("MIM steps: " + ", ".join(f"{k} {v['median_s']:.4f} s (x{v['ratio_to_random']:.2f})"
                                               for k, v in r["mim"].items() if isinstance(v, dict)))
    if "data" in r:
        d = r["data"]
        lines.append(f"data pipeline: skipped ({d['skipped']})" if "skipped" in d else
                     f"data pipeline: {d['batches_per_s']:.2f} labeled+unlabeled batches/s with {d['workers']} "
                     f"workers = {d['ratio_to_fastest_step']:.2f}x the fastest AdvMIM step's rate")
    lines += ["", "targets:"]
    for t in r["targets"]:
        verdict = "not measured" if t["passed"] is None else ("PASS" if t["passed"] else "FAIL")
        if t["passed"] is not None and not t["applies"]:
            verdict += " (target is for another device; reported only)"
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"  {t['target']:<56}{value:>8}  {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
