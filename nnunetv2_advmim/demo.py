"""The main job: an end-to-end nnU-Net run on built-in synthetic data with the stock commands.

Stages (each a stock command in a subprocess, exactly what a user types):

1. make the synthetic dataset (``nnunetv2_advmim.synthetic``),
2. ``nnUNetv2_plan_and_preprocess``,
3. ``nnUNetv2_train`` for every demo trainer (found through ``nnUNet_extTrainer``),
4. ``nnUNetv2_predict`` on ``imagesTs``,
5. Dice per label against ``labelsTs`` with nnU-Net's own evaluation, printed as a table.

``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` are set to sub-folders of ``--workdir`` when
they are unset. A finished run is never overwritten unless ``--overwrite`` is given.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

from nnunetv2_advmim.synthetic import LABELS, dataset_folder_name, make_synthetic_dataset

PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
DEFAULT_TRAINERS = ("nnUNetTrainer_demo",)
DEMO_SHAPE = {2: (96, 96), 3: (32, 32, 32)}  # small enough for a CPU demo of a few minutes


def _run(cmd, log_file):
    """Run a stock command, stream its output into ``log_file``; raise with the log's tail on failure."""
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
    for var, sub in zip(PATH_VARS, ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")):
        if not os.environ.get(var):
            os.environ[var] = os.path.join(workdir, sub)
            print(f"{var} was unset: using {os.environ[var]}")
        else:
            print(f"{var}={os.environ[var]}")
        os.makedirs(os.environ[var], exist_ok=True)


def dice_table(summaries: dict, label_names: dict) -> str:
    """Format ``{trainer: nnU-Net summary dict}`` as a table of mean Dice per label (rows) and trainer (columns)."""
    trainers = list(summaries)
    width = max(12, *(len(t) + 2 for t in trainers))
    lines = ["label".ljust(12) + "".join(t.rjust(width) for t in trainers)]
    for name, value in label_names.items():
        if value == 0:
            continue
        row = name.ljust(12)
        for t in trainers:
            means = summaries[t]["mean"]
            row += f"{means.get(value, means.get(str(value)))['Dice']:.4f}".rjust(width)
        lines.append(row)
    row = "mean".ljust(12)
    for t in trainers:
        row += f"{summaries[t]['foreground_mean']['Dice']:.4f}".rjust(width)
    lines.append(row)
    return "\n".join(lines)


def run_demo(workdir, dataset_id=990, dim=3, device=None, trainers=DEFAULT_TRAINERS, fold="0",
             num_processes=2, overwrite=False, seed=0):
    import torch
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    t_start = time.perf_counter()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    _setup_paths(workdir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    configuration = "3d_fullres" if dim == 3 else "2d"
    name = f"Synthetic{dim}D"
    dataset_name = dataset_folder_name(dataset_id, name)
    log_file = os.path.join(workdir, "demo_log.txt")
    print(f"Working folder: {workdir} (command output goes to {log_file}); device: {device}")

    # refuse to overwrite finished results silently
    finished = [t for t in trainers if os.path.isfile(os.path.join(
        os.environ["nnUNet_results"], dataset_name, f"{t}__nnUNetPlans__{configuration}", f"fold_{fold}",
        "checkpoint_final.pth"))]
    if finished and not overwrite:
        raise FileExistsError(
            f"{os.environ['nnUNet_results']}/{dataset_name} already holds finished demo runs of {', '.join(finished)}. "
            f"Pass --overwrite to train them again, or choose another --workdir.")

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

    timings["plan and preprocess"] = _run(
        ["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", configuration, "-np", str(num_processes),
         ], log_file)

    summaries = {}
    for trainer in trainers:
        timings[f"train {trainer}"] = _run(
            ["nnUNetv2_train", str(dataset_id), configuration, fold, "-tr", trainer, "-device", device], log_file)
        pred_folder = os.path.join(workdir, "predictions", trainer)
        if os.path.isdir(pred_folder):
            shutil.rmtree(pred_folder)  # predictions are derived from the (just retrained) checkpoint
        timings[f"predict {trainer}"] = _run(
            ["nnUNetv2_predict", "-i", os.path.join(raw_folder, "imagesTs"), "-o", pred_folder,
             "-d", str(dataset_id), "-c", configuration, "-f", fold, "-tr", trainer, "-device", device,
             "-npp", str(num_processes), "-nps", str(num_processes), "--disable_progress_bar"], log_file)
        summaries[trainer] = compute_metrics_on_folder(
            os.path.join(raw_folder, "labelsTs"), pred_folder, os.path.join(pred_folder, "summary.json"),
            SimpleITKIO(), ".nii.gz", [v for v in LABELS.values() if v > 0], num_processes=num_processes,
            chill=False)

    print("\nTimings:")
    for k, v in timings.items():
        print(f"  {k:<40s} {v:7.1f} s")
    print(f"  {'total':<40s} {time.perf_counter() - t_start:7.1f} s")
    print(f"\nDice per label on {dataset_name}/imagesTs ({configuration}, fold {fold}):")
    print(dice_table(summaries, LABELS))
    return summaries


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_advmim_demo",
        description="End-to-end demo on built-in synthetic data with the stock nnU-Net commands: make data, "
                    "plan and preprocess, train, predict, print Dice per label.")
    parser.add_argument("--workdir", default="nnunetv2_advmim_demo",
                        help="folder for data, results and logs (default ./nnunetv2_advmim_demo); used for "
                             "nnUNet_raw/_preprocessed/_results when those are unset")
    parser.add_argument("-d", "--dataset-id", type=int, default=990)
    parser.add_argument("--dim", type=int, choices=(2, 3), default=3)
    parser.add_argument("-device", "--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("-tr", "--trainers", nargs="+", default=list(DEFAULT_TRAINERS))
    parser.add_argument("-np", "--num-processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="retrain even if finished results exist")
    args = parser.parse_args(argv)
    try:
        run_demo(args.workdir, args.dataset_id, args.dim, args.device, tuple(args.trainers), "0",
                 args.num_processes, args.overwrite, args.seed)
    except (RuntimeError, FileExistsError) as e:
        print(f"\nERROR: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
