"""The main job: an end-to-end semi-supervised nnU-Net comparison on built-in synthetic data.

Stages, each a stock nnU-Net command or one of ours in a subprocess, exactly what a user types:

1. make the synthetic dataset (``nnunetv2_advmim.data.synthetic``: imagesTr/labelsTr, imagesUnlabeled, imagesTs/labelsTs),
2. ``nnUNetv2_advmim_verify_raw`` (every image and label file checked) and ``nnUNetv2_plan_and_preprocess``,
3. ``nnUNetv2_advmim_label_budget``: keep only ``--labeled`` training cases labeled (the rest become unlabeled),
   and ``nnUNetv2_advmim_preprocess_unlabeled`` for ``imagesUnlabeled``,
4. ``nnUNetv2_train`` for each trainer, all on the same labeled cases (fold 0 of the budget split):
   the supervised baseline ``nnUNetTrainer_demo`` (stock nnU-Net, short schedule), AdvMIM
   (``nnUNetTrainerAdvMIM_demo``), and AnatoMask pretraining (``nnUNetTrainerAnatoMask_demo`` on every image,
   labels never read) followed by stock fine-tuning with ``-pretrained_weights`` (``nnUNetTrainer_demo_finetune``),
5. ``nnUNetv2_predict`` on ``imagesTs``,
6. ``nnunetv2_advmim.evaluation.compare.compare_runs``: the comparison table (Dice, HD95, ASD, NSD per label) and PNG.

``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` are set to sub-folders of ``--workdir`` when
they are unset. A finished run is never overwritten unless ``--overwrite`` is given.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

import torch
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from nnunetv2_advmim.data.synthetic import LABELS, dataset_folder_name, make_synthetic_dataset
from nnunetv2_advmim.evaluation.compare import compare_runs

PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
BASELINE = "nnUNetTrainer_demo"
SEMI_SUPERVISED = ("nnUNetTrainerAdvMIM_demo",)
PRETRAINER = "nnUNetTrainerAnatoMask_demo"
FINETUNER = "nnUNetTrainer_demo_finetune"
DEMO_SHAPE = {2: (96, 96), 3: (32, 32, 32)}  # small enough for a CPU demo of minutes


def _run(cmd, log_file):
    """Run a command, append its output to ``log_file``; raise with the log's tail on failure."""
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log_file, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        ret = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if ret.returncode != 0:
        with open(log_file) as log:
            tail = "".join(log.readlines()[-40:])
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {ret.returncode}; full log: {log_file}\n{tail}")
    dt = time.perf_counter() - t0
    print(f"  done in {dt:.0f} s", flush=True)
    return dt


def _setup_paths(workdir):
    for var in PATH_VARS:
        if not os.environ.get(var):
            os.environ[var] = os.path.join(workdir, var)
            print(f"{var} was unset: using {os.environ[var]}")
        else:
            print(f"{var}={os.environ[var]}")
        os.makedirs(os.environ[var], exist_ok=True)


def dice_table(summaries: dict, label_names: dict) -> str:
    """Format ``{run: nnU-Net summary dict}`` as a table of mean Dice per label (rows) and run (columns)."""
    runs = list(summaries)
    width = max(12, *(len(t) + 2 for t in runs))
    lines = ["label".ljust(12) + "".join(t.rjust(width) for t in runs)]
    for name, value in label_names.items():
        if value == 0:
            continue
        row = name.ljust(12)
        for t in runs:
            means = summaries[t]["mean"]
            row += f"{means.get(value, means.get(str(value)))['Dice']:.4f}".rjust(width)
        lines.append(row)
    row = "mean".ljust(12)
    for t in runs:
        row += f"{summaries[t]['foreground_mean']['Dice']:.4f}".rjust(width)
    lines.append(row)
    return "\n".join(lines)


def run_demo(workdir, dataset_id=990, dim=3, device=None, baseline=BASELINE, semi_supervised=SEMI_SUPERVISED,
             pretrainer=PRETRAINER, finetuner=FINETUNER, n_labeled=4, fold="0", num_processes=2,
             overwrite=False, seed=0):
    """Run the demo (module docstring) and return ``{run name: nnU-Net Dice summary}`` plus the comparison.

    ``pretrainer=None`` skips pretraining + fine-tuning; ``semi_supervised=()`` skips AdvMIM.
    """

    t_start = time.perf_counter()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    _setup_paths(workdir)
    # nnU-Net's final validation exports through a pool of nnUNet_def_n_proc (default 8) spawned processes;
    # on a small machine that start-up costs more than the demo's predictions
    os.environ.setdefault("nnUNet_def_n_proc", str(num_processes))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    configuration = "3d_fullres" if dim == 3 else "2d"
    name = f"Synthetic{dim}D"
    dataset_name = dataset_folder_name(dataset_id, name)
    results = os.path.join(os.environ["nnUNet_results"], dataset_name)
    log_file = os.path.join(workdir, "demo_log.txt")
    print(f"Working folder: {workdir} (command output goes to {log_file}); device: {device}")

    # (run name, trainer, extra train args); the pretraining run itself is not a segmentation model
    trained = [(baseline, baseline, [])] + [(t, t, []) for t in semi_supervised]
    if pretrainer:
        ckpt = os.path.join(results, f"{pretrainer}__nnUNetPlans__{configuration}", f"fold_{fold}",
                            "checkpoint_final.pth")
        trained.append((f"{finetuner} (from {pretrainer})", finetuner, ["-pretrained_weights", ckpt]))
    all_trainers = [t for _, t, _ in trained] + ([pretrainer] if pretrainer else [])
    finished = [t for t in all_trainers if os.path.isfile(os.path.join(
        results, f"{t}__nnUNetPlans__{configuration}", f"fold_{fold}", "checkpoint_final.pth"))]
    if finished and not overwrite:
        raise FileExistsError(
            f"{results} already holds finished demo runs of {', '.join(finished)}. "
            f"Pass --overwrite to train them again, or choose another --workdir.")
    compare_folder = os.path.join(workdir, "comparison")
    if os.path.isdir(compare_folder) and not overwrite:
        raise FileExistsError(f"{compare_folder} already exists. Pass --overwrite, or choose another --workdir.")

    timings = {}
    raw_folder = os.path.join(os.environ["nnUNet_raw"], dataset_name)
    t0 = time.perf_counter()
    if os.path.isdir(raw_folder) and not overwrite:
        print(f"Reusing the synthetic dataset in {raw_folder}")
    else:
        make_synthetic_dataset(os.environ["nnUNet_raw"], dataset_id, name, dim=dim, shape=DEMO_SHAPE[dim], seed=seed,
                               overwrite=overwrite)
        print(f"Made the synthetic dataset in {raw_folder}")
    timings["synthetic data"] = time.perf_counter() - t0

    timings["verify raw files"] = _run(["nnUNetv2_advmim_verify_raw", "-d", str(dataset_id),
                                        "-np", str(num_processes)], log_file)
    timings["plan and preprocess"] = _run(
        ["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", configuration, "-np", str(num_processes)],
        log_file)
    timings["label budget"] = _run(
        ["nnUNetv2_advmim_label_budget", "-d", str(dataset_id), "-n", str(n_labeled), "--seed", str(seed)], log_file)
    timings["preprocess imagesUnlabeled"] = _run(
        ["nnUNetv2_advmim_preprocess_unlabeled", "-d", str(dataset_id), "-c", configuration,
         "-np", str(num_processes)] + (["--overwrite"] if overwrite else []), log_file)

    if pretrainer:
        timings[f"pretrain {pretrainer}"] = _run(
            ["nnUNetv2_train", str(dataset_id), configuration, fold, "-tr", pretrainer, "-device", device], log_file)

    summaries, runs = {}, {}
    for run_name, trainer, extra in trained:
        timings[f"train {trainer}"] = _run(
            ["nnUNetv2_train", str(dataset_id), configuration, fold, "-tr", trainer, "-device", device] + extra,
            log_file)
        pred_folder = os.path.join(workdir, "predictions", trainer)
        if os.path.isdir(pred_folder):
            shutil.rmtree(pred_folder)  # derived from the checkpoint that was just (re)trained
        timings[f"predict {trainer}"] = _run(
            ["nnUNetv2_predict", "-i", os.path.join(raw_folder, "imagesTs"), "-o", pred_folder,
             "-d", str(dataset_id), "-c", configuration, "-f", fold, "-tr", trainer, "-device", device,
             "-npp", str(num_processes), "-nps", str(num_processes), "--disable_progress_bar"], log_file)
        summaries[run_name] = compute_metrics_on_folder(
            os.path.join(raw_folder, "labelsTs"), pred_folder, os.path.join(pred_folder, "summary.json"),
            SimpleITKIO(), ".nii.gz", [v for v in LABELS.values() if v > 0], num_processes=num_processes,
            chill=False)
        runs[run_name] = {"pred": pred_folder,
                          "model": os.path.join(results, f"{trainer}__nnUNetPlans__{configuration}", f"fold_{fold}")}

    t0 = time.perf_counter()
    if os.path.isdir(compare_folder):
        shutil.rmtree(compare_folder)  # only reached with --overwrite
    comparison = compare_runs(runs, compare_folder, reference=os.path.join(raw_folder, "labelsTs"),
                              num_processes=1, verbose=False,
                              title=f"{dataset_name}/imagesTs, {n_labeled} labeled training cases")
    timings["compare"] = time.perf_counter() - t0

    print("\nTimings:")
    for k, v in timings.items():
        print(f"  {k:<45s} {v:7.1f} s")
    print(f"  {'total':<45s} {time.perf_counter() - t_start:7.1f} s")
    print(f"\nDice per label on {dataset_name}/imagesTs ({configuration}, fold {fold}, {n_labeled} labeled cases):")
    print(dice_table(summaries, LABELS))
    print(f"\nComparison (mean ± std over test cases; {compare_folder}):")
    print(comparison["table"])
    print(f"\nFigure: {comparison['png']}")
    return summaries, comparison


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_advmim_demo",
        description="End-to-end semi-supervised demo on built-in synthetic data with the stock nnU-Net commands: "
                    "make data, plan and preprocess, label budget, preprocess unlabeled images, train the "
                    "supervised baseline, AdvMIM and AnatoMask pretraining + fine-tuning on the same labeled cases, "
                    "predict, compare (table + PNG).")
    parser.add_argument("--workdir", default="nnunetv2_advmim_demo",
                        help="folder for data, results and logs (default ./nnunetv2_advmim_demo); used for "
                             "nnUNet_raw/_preprocessed/_results when those are unset")
    parser.add_argument("-d", "--dataset-id", type=int, default=990)
    parser.add_argument("--dim", type=int, choices=(2, 3), default=3)
    parser.add_argument("-n", "--labeled", type=int, default=4, help="labeled training cases (default 4 of 20)")
    parser.add_argument("-device", "--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--baseline", default=BASELINE, help=f"supervised trainer (default {BASELINE})")
    parser.add_argument("--semi-supervised", nargs="*", default=list(SEMI_SUPERVISED),
                        help=f"semi-supervised trainers (default {' '.join(SEMI_SUPERVISED)}; none to skip)")
    parser.add_argument("--pretrainer", default=PRETRAINER, help=f"pretraining trainer (default {PRETRAINER}); "
                                                                 f"'none' skips pretraining and fine-tuning")
    parser.add_argument("-np", "--num-processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="retrain even if finished results exist")
    args = parser.parse_args(argv)
    try:
        run_demo(args.workdir, args.dataset_id, args.dim, args.device, args.baseline, tuple(args.semi_supervised),
                 None if args.pretrainer.lower() == "none" else args.pretrainer, FINETUNER, args.labeled, "0",
                 args.num_processes, args.overwrite, args.seed)
    except (RuntimeError, FileExistsError) as e:
        print(f"\nERROR: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
