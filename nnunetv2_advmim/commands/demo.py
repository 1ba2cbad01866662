"""The main job: does semi-supervised training beat stock nnU-Net with few labels? Measured end to end on
built-in synthetic data where labels are scarce.

Stages, each a stock nnU-Net command or one of ours, exactly what a user types:

1. make the synthetic dataset of the ``scarce`` preset (``nnunetv2_advmim.data.synthetic``: imagesTr/labelsTr,
   imagesUnlabeled, imagesTs/labelsTs; per-case shape, pose, contrast polarity, thin and small structures),
2. ``nnUNetv2_advmim_verify_raw`` (every image and label file checked) and ``nnUNetv2_plan_and_preprocess``,
3. ``nnUNetv2_advmim_small_plan`` (the CPU study plan: fewer features, four stages) and
   ``nnUNetv2_advmim_preprocess_unlabeled`` for ``imagesUnlabeled``,
4. ``nnUNetv2_advmim_study`` at ``--labeled`` labeled cases and ``--draws`` draws of them, every arm on the same
   labeled cases, the same unlabeled pool and the same number of iterations: stock ``nnUNetTrainer``,
   ``nnUNetTrainerAdvMIM`` (predicting with C, its default, and with S from the same training), and, after one
   ``nnUNetTrainerAnatoMask_AdvMIM`` pretraining of both AdvMIM networks on every image (labels never read), stock
   fine-tuning of its CNN and AdvMIM with both networks started from it (predicting with C and with S). Each arm
   trains
   with ``nnUNetv2_train``, predicts ``imagesTs`` with ``nnUNetv2_predict`` and is evaluated on ``labelsTs``;
5. ``nnunetv2_advmim.evaluation.compare.compare_runs`` on the first draw: Dice, HD95, ASD and NSD per label, and
   box plots.

The printed table is the study's (mean ± std over draws, paired differences to stock). Everything is written under
``--workdir``: ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` point at sub-folders of it for the
demo's commands, whatever they are set to in the shell, so a user's own nnU-Net folders are never read or written;
``--use-nnunet-folders`` uses the folders the three variables name instead (the synthetic dataset and its results
then sit among the user's datasets). The study is resumable: running the demo again trains nothing that is finished and prints the same table;
``--overwrite`` starts from scratch.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager

import torch

from nnunetv2_advmim.commands.study import Study, split_key
from nnunetv2_advmim.data.synthetic import dataset_folder_name, make_synthetic_dataset
from nnunetv2_advmim.evaluation.compare import compare_runs
from nnunetv2_advmim.cli import DefaultsHelpFormatter

PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
ARMS = ("nnUNetTrainer", "nnUNetTrainerAdvMIM", "nnUNetTrainerAdvMIM:hybrid")
PRETRAINER = "nnUNetTrainerAnatoMask_AdvMIM"  # pretrains C and S: stock fine-tuning takes C, AdvMIM both
FINETUNERS = ("nnUNetTrainer", "nnUNetTrainerAdvMIM")
FINETUNE_NETWORKS = ("hybrid",)
SMALL_PLANS = "nnUNetPlans_small"
# the CPU study plan of docs/study.md; the 3D preset keeps its planned stages
SMALL_PLAN_ARGS = {2: ["--base-features", "16", "--max-features", "128", "--stages", "4", "--batch-size", "4"],
                   3: ["--base-features", "16", "--max-features", "128", "--batch-size", "2"]}
EPOCHS, ITERATIONS, VAL_ITERATIONS, DRAWS = 10, 20, 2, 2  # every arm: 200 iterations (times: docs/demo.md)


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


def demo_paths(workdir, use_nnunet_folders=False):
    """The three nnU-Net folders of the demo: sub-folders of ``workdir``, or with ``use_nnunet_folders`` the ones the
    environment names (an error if one is unset)."""
    if not use_nnunet_folders:
        return {var: os.path.join(workdir, var) for var in PATH_VARS}
    unset = [var for var in PATH_VARS if not os.environ.get(var)]
    if unset:
        raise ValueError(f"--use-nnunet-folders: {', '.join(unset)} not set; set them or drop --use-nnunet-folders "
                         f"to work in --workdir")
    return {var: os.path.abspath(os.environ[var]) for var in PATH_VARS}


@contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_demo(workdir, dataset_id=990, dim=2, device=None, arms=ARMS, pretrainer=PRETRAINER, n_labeled=4,
             draws=DRAWS, epochs=EPOCHS, iterations=ITERATIONS, val_iterations=VAL_ITERATIONS, num_processes=2,
             overwrite=False, seed=0, case_counts=None, use_nnunet_folders=False):
    """Run the demo (module docstring); returns ``{"study": Study.run() result, "comparison": compare_runs()
    result, "table": the study table (markdown), "paths": the three nnU-Net folders it used}``.

    ``pretrainer=None`` skips pretraining + fine-tuning. ``case_counts``: (labeled, unlabeled, test) images of the
    synthetic dataset (default: the preset's 40, 40, 20). The three nnU-Net variables are set for the demo's
    commands only (:func:`demo_paths`) and restored afterwards.
    """
    workdir = os.path.abspath(workdir)
    paths = demo_paths(workdir, use_nnunet_folders)
    os.makedirs(workdir, exist_ok=True)
    for var, folder in paths.items():
        os.makedirs(folder, exist_ok=True)
        print(f"{var}={folder}" + ("" if use_nnunet_folders else " (the demo's own; --use-nnunet-folders uses yours)"))
    # nnU-Net's final validation exports through a pool of nnUNet_def_n_proc (default 8) spawned processes;
    # on a small machine that start-up costs more than the demo's predictions
    with _env(nnUNet_def_n_proc=os.environ.get("nnUNet_def_n_proc", str(num_processes)), **paths):
        result = _run_demo(workdir, dataset_id, dim, device, arms, pretrainer, n_labeled, draws, epochs, iterations,
                           val_iterations, num_processes, overwrite, seed, case_counts)
    print(f"\nThe demo wrote everything under {workdir}" if not use_nnunet_folders else
          f"\nThe demo wrote its dataset and results into {', '.join(paths.values())} and its study under {workdir}")
    return dict(result, paths=paths)


def _clear_or_continue_study(study_folder, compare_folder, overwrite):
    """With ``overwrite`` delete the study and comparison of an earlier run (start from scratch); otherwise say that
    an existing study is continued, since its finished arms are reused rather than trained again."""
    if overwrite:
        for folder in (study_folder, compare_folder):
            if os.path.isdir(folder):
                shutil.rmtree(folder)
    elif os.path.isdir(study_folder):
        print(f"Continuing the study in {study_folder}: finished arms are not trained again (--overwrite starts "
              f"from scratch)")


def _make_or_reuse_dataset(raw_folder, dataset_id, dim, case_counts, seed, overwrite):
    """Make the synthetic dataset of the ``scarce`` preset in ``$nnUNet_raw``, or reuse the one a previous run made
    (the study's resumption relies on the same images); ``overwrite`` makes it again."""
    if os.path.isdir(raw_folder) and not overwrite:
        print(f"Reusing the synthetic dataset in {raw_folder}")
        return
    n_train, n_unlabeled, n_test = case_counts or (None, None, None)
    make_synthetic_dataset(os.environ["nnUNet_raw"], dataset_id, dim=dim, n_train=n_train, n_unlabeled=n_unlabeled,
                           n_test=n_test, seed=seed, overwrite=overwrite, preset="scarce")
    print(f"Made the synthetic dataset (preset scarce) in {raw_folder}")


def _verify_plan_and_preprocess(dataset_id, configuration, dim, num_processes, overwrite, log_file):
    """Stages 2 and 3 as a user types them: verify the raw files, plan and preprocess, derive the small CPU plan and
    preprocess ``imagesUnlabeled``; returns the seconds each command took, by stage name."""
    d, np_ = str(dataset_id), str(num_processes)
    return {
        "verify raw files": _run(["nnUNetv2_advmim_verify_raw", "-d", d, "-np", np_], log_file),
        "plan and preprocess": _run(["nnUNetv2_plan_and_preprocess", "-d", d, "-c", configuration, "-np", np_],
                                    log_file),
        "small plan": _run(["nnUNetv2_advmim_small_plan", "-d", d, "-c", configuration, "--output-plans",
                            SMALL_PLANS, "--overwrite"] + SMALL_PLAN_ARGS[dim], log_file),
        "preprocess imagesUnlabeled": _run(["nnUNetv2_advmim_preprocess_unlabeled", "-d", d, "-c", configuration,
                                            "-np", np_] + (["--overwrite"] if overwrite else []), log_file),
    }


def _run_study(dataset_id, configuration, device, arms, pretrainer, n_labeled, draws, epochs, iterations,
               val_iterations, seed, study_folder):
    """Stage 4: print the equivalent ``nnUNetv2_advmim_study`` command line (so a user can rerun it by hand), run
    the study in-process and raise naming each failed arm's log; returns ``Study.run()``'s result."""
    print(f"$ nnUNetv2_advmim_study -d {dataset_id} -c {configuration} -p {SMALL_PLANS} -n {n_labeled} "
          f"--draws {draws} --epochs {epochs} --iterations {iterations} --val-iterations {val_iterations} "
          f"-tr {' '.join(arms)}" + (f" --pretrainer {pretrainer} --finetuner {' '.join(FINETUNERS)} "
                                     f"--finetune-networks {' '.join(FINETUNE_NETWORKS)}" if pretrainer else "")
          + f" -device {device} -o {study_folder}", flush=True)
    study = Study(dataset_id, configuration, [n_labeled], list(arms), draws=draws, plans=SMALL_PLANS, epochs=epochs,
                  iterations=iterations, val_iterations=val_iterations, seed=seed,
                  pretrainers=[pretrainer] if pretrainer else [], finetuners=FINETUNERS,
                  finetune_networks=FINETUNE_NETWORKS if pretrainer else (), device=device,
                  output_folder=study_folder)
    result = study.run()
    if result["failures"]:
        raise RuntimeError("study arm(s) failed: " + "; ".join(f"{f['arm']} draw {f['draw']}: see {f['log']}"
                                                               for f in result["failures"]))
    return result


def _compare_first_draw(result, n_labeled, study_folder, compare_folder, raw_folder, dataset_name):
    """Stage 5: per-case comparison of every arm's ``imagesTs`` predictions of draw 0 against ``labelsTs``, made
    afresh in ``compare_folder`` (it is derived from the study's predictions); returns ``compare_runs()``'s
    result."""
    first = {r["arm"]: r for r in result["records"] if r["draw"] == 0}
    runs = {arm: {"pred": first[arm]["predictions"], "model": first[arm]["model"]} for arm in first}
    if os.path.isdir(compare_folder):
        shutil.rmtree(compare_folder)
    # the labeled-case count of each model comes from its split, in the study's own preprocessed folder
    with _env(nnUNet_preprocessed=os.path.join(study_folder, "preprocessed", split_key(n_labeled, 0))):
        return compare_runs(runs, compare_folder, reference=os.path.join(raw_folder, "labelsTs"), num_processes=1,
                            verbose=False,
                            title=f"{dataset_name}/imagesTs, draw 0 of {n_labeled} labeled training cases")


def _print_results(timings, total, result, comparison, compare_folder):
    """Print the time of each stage, the study table (without its figure links) and the comparison of draw 0;
    returns the study table as printed."""
    print("\nTimings:")
    for k, v in timings.items():
        print(f"  {k:<45s} {v:7.1f} s")
    print(f"  {'total':<45s} {total:7.1f} s")
    with open(result["outputs"]["study.md"]) as f:
        table = "".join(line for line in f if not line.startswith("!["))
    print("\n" + table)
    print(f"Study figure: {result['outputs']['study.png']}")
    print(f"\nComparison of draw 0 (mean ± std over test cases; {compare_folder}):")
    print(comparison["table"])
    print(f"\nFigure: {comparison['png']}")
    return table


def _run_demo(workdir, dataset_id, dim, device, arms, pretrainer, n_labeled, draws, epochs, iterations,
              val_iterations, num_processes, overwrite, seed, case_counts):
    """The five stages of the module docstring, timed, with the nnU-Net variables already set by :func:`run_demo`;
    returns ``{"study", "comparison", "table"}``."""
    t_start = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    configuration = "3d_fullres" if dim == 3 else "2d"
    dataset_name = dataset_folder_name(dataset_id, f"SyntheticScarce{dim}D")
    log_file = os.path.join(workdir, "demo_log.txt")
    study_folder = os.path.join(workdir, "study")
    compare_folder = os.path.join(workdir, "comparison")
    raw_folder = os.path.join(os.environ["nnUNet_raw"], dataset_name)
    print(f"Working folder: {workdir} (command output goes to {log_file}); device: {device}")
    _clear_or_continue_study(study_folder, compare_folder, overwrite)

    t0 = time.perf_counter()
    _make_or_reuse_dataset(raw_folder, dataset_id, dim, case_counts, seed, overwrite)
    timings = {"synthetic data": time.perf_counter() - t0}
    timings.update(_verify_plan_and_preprocess(dataset_id, configuration, dim, num_processes, overwrite, log_file))

    t0 = time.perf_counter()
    result = _run_study(dataset_id, configuration, device, arms, pretrainer, n_labeled, draws, epochs, iterations,
                        val_iterations, seed, study_folder)
    timings["study (train, predict, evaluate)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    comparison = _compare_first_draw(result, n_labeled, study_folder, compare_folder, raw_folder, dataset_name)
    timings["compare (draw 0)"] = time.perf_counter() - t0
    table = _print_results(timings, time.perf_counter() - t_start, result, comparison, compare_folder)
    return {"study": result, "comparison": comparison, "table": table}


def main(argv=None):
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_demo",
        description="End-to-end label-efficiency demo on built-in synthetic data where labels are scarce, with the "
                    "stock nnU-Net commands: make data, verify, plan and preprocess (small CPU plan), preprocess "
                    "unlabeled images, then a study of stock nnU-Net, AdvMIM and AnatoMask pretraining + "
                    "fine-tuning on the same labeled cases and the same number of iterations, over several draws of "
                    "the labeled cases (table with spreads + PNG), and a per-case comparison of the first draw.")
    parser.add_argument("--workdir", default="nnunetv2_advmim_demo",
                        help="folder for every file the demo writes: data, nnU-Net folders, results, study, logs "
                             "(default ./nnunetv2_advmim_demo, under the current folder)")
    parser.add_argument("--use-nnunet-folders", action="store_true",
                        help="write the synthetic dataset, its preprocessed data and its models into the folders "
                             "nnUNet_raw, nnUNet_preprocessed and nnUNet_results name (default: sub-folders of "
                             "--workdir, so your own nnU-Net folders are left alone)")
    parser.add_argument("-d", "--dataset-id", type=int, default=990,
                        help="ID of the synthetic dataset (default 990, as nnUNetv2_advmim_make_synthetic)")
    parser.add_argument("--dim", type=int, choices=(2, 3), default=2)
    parser.add_argument("-n", "--labeled", type=int, default=4, help="labeled training cases (default 4)")
    parser.add_argument("--draws", type=int, default=DRAWS, help=f"draws of the labeled cases (default {DRAWS})")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs of every arm (default {EPOCHS})")
    parser.add_argument("--iterations", type=int, default=ITERATIONS,
                        help=f"iterations per epoch of every arm (default {ITERATIONS})")
    parser.add_argument("-device", "--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("-tr", "--trainers", nargs="+", default=list(ARMS),
                        help=f"arms of the study (default {' '.join(ARMS)}; the first is the baseline)")
    parser.add_argument("--pretrainer", default=PRETRAINER, help=f"pretraining trainer (default {PRETRAINER}); "
                                                                 f"'none' skips pretraining and fine-tuning")
    parser.add_argument("-np", "--num-processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="start from scratch: new data, every arm retrained")
    args = parser.parse_args(argv)
    try:
        run_demo(args.workdir, args.dataset_id, args.dim, args.device, tuple(args.trainers),
                 None if args.pretrainer.lower() == "none" else args.pretrainer, args.labeled, args.draws,
                 args.epochs, args.iterations, VAL_ITERATIONS, args.num_processes, args.overwrite, args.seed,
                 use_nnunet_folders=args.use_nnunet_folders)
    except (RuntimeError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"\nERROR: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
