"""Throughput of unlabeled preprocessing next to nnU-Net's own preprocessing of the same images.

For each image size, a synthetic 3D dataset is written whose ``imagesUnlabeled`` holds copies of the
``imagesTr`` images, planned with nnU-Net's fingerprint extractor and planner (``3d_fullres``), then in the same
run and on the same images:

- ``nnunet pool``: nnU-Net's ``DefaultPreprocessor.run`` (what ``nnUNetv2_preprocess`` runs: spawn pool of
  ``-np`` workers, labels read, foreground locations sampled);
- ``ours pool``: ``preprocess_unlabeled(..., num_processes=-np, overwrite=True)`` (what
  ``nnUNetv2_advmim_preprocess_unlabeled`` runs);
- ``nnunet seq`` / ``ours seq``: the per-case work alone, one case after the other in this process
  (``run_case_save`` with the label vs :func:`nnunetv2_advmim.data.unlabeled.preprocess_case` without).

Usage: ``python -m nnunetv2_advmim.benchmark.preprocess_unlabeled [--sizes 48 96] [--cases 16 8] [-np 2]
[--repeats 1]``.
Everything is written into a temporary folder that is removed at the end.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time


def planned_bench_dataset(dataset_id: int, size: int, n: int, num_processes: int, seed: int):
    """A synthetic 3D dataset of ``n`` cubic cases, fingerprinted and planned, whose training images are copied into
    ``imagesUnlabeled`` too, so that nnU-Net's and our preprocessing work on the same images. Returns the raw folder
    and the image file names."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    from nnunetv2_advmim.data.synthetic import make_synthetic_dataset
    raw = make_synthetic_dataset(os.environ["nnUNet_raw"], dataset_id, f"Bench{size}", dim=3, n_train=n,
                                 n_unlabeled=0, n_test=0, shape=(size,) * 3, seed=seed)
    images = sorted(os.listdir(os.path.join(raw, "imagesTr")))
    for f in images:
        shutil.copy(os.path.join(raw, "imagesTr", f), os.path.join(raw, "imagesUnlabeled", "unl_" + f))
    extract_fingerprints([dataset_id], num_processes=num_processes, verbose=False, show_progress_bar=False)
    plan_experiments([dataset_id])
    return raw, images


def preprocessing_runs(dataset_id: int, raw: str, images: list, num_processes: int) -> dict:
    """The four runs compared (module docstring), by name: nnU-Net's and our preprocessing, each pooled as the
    commands run it and per case in this process."""
    from nnunetv2_advmim.data.paths import load_plans_and_dataset_json
    from nnunetv2_advmim.data.unlabeled import preprocess_case, preprocess_unlabeled, unlabeled_folder
    pre = os.path.join(os.environ["nnUNet_preprocessed"], os.path.basename(raw))
    pm, dj = load_plans_and_dataset_json(pre)
    cm = pm.get_configuration("3d_fullres")
    pp = cm.preprocessor_class(verbose=False)
    pp.show_progress_bar = False
    lab_out = os.path.join(pre, cm.data_identifier)
    unl_out = unlabeled_folder(pre, cm.data_identifier)
    cases = [f[:-len("_0000.nii.gz")] for f in images]

    def nnunet_pool():
        pp.run(dataset_id, "3d_fullres", "nnUNetPlans", num_processes)

    def ours_pool():
        preprocess_unlabeled(dataset_id, ["3d_fullres"], num_processes=num_processes, overwrite=True, verbose=False)

    def nnunet_seq():
        shutil.rmtree(lab_out, ignore_errors=True)  # blosc2 refuses to overwrite; nnU-Net's run() does this too
        os.makedirs(lab_out)
        for c in cases:
            pp.run_case_save(os.path.join(lab_out, c), [os.path.join(raw, "imagesTr", c + "_0000.nii.gz")],
                             os.path.join(raw, "labelsTr", c + ".nii.gz"), pm, cm, dj)

    def ours_seq():
        os.makedirs(unl_out, exist_ok=True)
        for c in cases:
            preprocess_case(pp, os.path.join(unl_out, "unl_" + c),
                            [os.path.join(raw, "imagesUnlabeled", "unl_" + c + "_0000.nii.gz")], pm, cm, dj)

    return {"nnunet pool": nnunet_pool, "ours pool": ours_pool, "nnunet seq": nnunet_seq, "ours seq": ours_seq}


def best_seconds(fn, repeats: int) -> float:
    """Fewest seconds of ``repeats`` calls: the run least disturbed by other load on the machine."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 96], help="cubic image edge lengths")
    parser.add_argument("--cases", type=int, nargs="+", default=[16, 8], help="cases per size")
    parser.add_argument("-np", type=int, default=2, help="worker processes for the pooled runs")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    if len(args.cases) != len(args.sizes):
        parser.error("--cases needs one number per --sizes entry")

    tmp = tempfile.mkdtemp(prefix="bench_unlabeled_")
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # before nnunetv2.paths is imported
        os.environ[k] = os.path.join(tmp, k)
        os.makedirs(os.environ[k])
    rows = []
    try:
        for i, (size, n) in enumerate(zip(args.sizes, args.cases)):
            dataset_id = 980 + i
            raw, images = planned_bench_dataset(dataset_id, size, n, args.np, seed=i)
            for name, fn in preprocessing_runs(dataset_id, raw, images, args.np).items():
                best = best_seconds(fn, args.repeats)
                rows.append((size, n, name, best, n / best))
                print(f"{size}^3  {n:3d} cases  {name:12s} {best:7.2f} s  {n / best:6.2f} cases/s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| image | cases | run | seconds | cases/s |\n| --- | --- | --- | --- | --- |")
    for size, n, name, t, r in rows:
        print(f"| {size}^3 | {n} | {name} (-np {args.np}) | {t:.2f} | {r:.2f} |" if "pool" in name else
              f"| {size}^3 | {n} | {name} | {t:.2f} | {r:.2f} |")
    print(f"\nCPU cores: {os.cpu_count()}, load average at the end: {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
