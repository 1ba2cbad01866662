"""``nnUNetv2_advmim_compare``: one table and one figure comparing trainers on the same reference.

A *run* is one of

- an nnU-Net trainer output folder ``<nnUNet_results>/DatasetX/<trainer>__<plans>__<config>``: the
  validation predictions of all its ``fold_K/validation`` folders are pooled (cross-validation), the
  default reference is nnU-Net's copy of the training labels ``<nnUNet_preprocessed>/DatasetX/gt_segmentations``;
- one fold folder ``.../fold_K`` (its ``validation`` folder), same default reference;
- a plain prediction folder (e.g. ``nnUNetv2_predict`` output on ``imagesTs``); it needs ``reference``
  (e.g. ``labelsTs``) and, for the labeled-case count, the model folder it was predicted with.

Number of labeled cases a run was trained with (the label budget of a semi-supervised comparison): a
``num_labeled_cases`` entry in the fold's ``debug.json`` when the trainer records one (nnU-Net dumps
every trainer attribute there), else the length of the fold's ``train`` list in
``<nnUNet_preprocessed>/DatasetX/splits_final.json`` (what the label-budget command writes), for fold
``all`` the number of training cases in ``gt_segmentations``; ``n/a`` when none of these exists.

All runs are evaluated with ``nnunetv2_advmim.evaluation.evaluate`` (same metrics, conventions, tolerances). The
outputs in ``output_folder``: ``comparison.md`` (the table, Markdown), ``comparison.csv`` (long format),
``comparison.png`` (box plots per label and metric, one box per run, cases as dots) and
``<run>_metrics.json``/``.csv`` per run.

Python entry point for scripts and the demo: :func:`compare_runs`.
"""
import argparse
import csv
import json
import math
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Union

import matplotlib
import numpy as np

matplotlib.use("agg")  # figures go to files; no display is needed
import matplotlib.pyplot as plt  # noqa: E402

from nnunetv2_advmim.evaluation.evaluate import (UNITS, add_metric_arguments, detect_file_ending, evaluate_pairs,
                                                 file_ending_of, find_dataset_json, foreground_labels_in,
                                                 labels_from_dataset_json, list_cases, parse_tolerance, report_errors,
                                                 write_outputs)
from nnunetv2_advmim.evaluation.metrics import METRICS
from nnunetv2_advmim.cli import DefaultsHelpFormatter

FOLD_RE = re.compile(r"^fold_(\d+|all)$")
OUTPUT_FILES = ("comparison.md", "comparison.csv", "comparison.png")
CSV_HEADER = ("run", "label", "label_name", "metric", "mean", "std", "n_values", "n_cases", "n_labeled")


def _fold_folders(trainer_folder: str) -> List[str]:
    return [os.path.join(trainer_folder, d) for d in sorted(os.listdir(trainer_folder))
            if FOLD_RE.match(d) and os.path.isdir(os.path.join(trainer_folder, d))]


def _dataset_of_fold(fold_folder: str) -> str:
    return os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(fold_folder))))


def labeled_cases(model_folder: str) -> Optional[int]:
    """Number of labeled training cases of a fold folder (or of the folds of a trainer folder when they all
    agree; see the module docstring for the sources). None when it cannot be determined."""
    model_folder = os.path.abspath(model_folder)
    if not FOLD_RE.match(os.path.basename(model_folder)):
        counts = {labeled_cases(f) for f in _fold_folders(model_folder)} if os.path.isdir(model_folder) else set()
        return counts.pop() if len(counts) == 1 else None
    debug = os.path.join(model_folder, "debug.json")
    if os.path.isfile(debug):
        with open(debug) as f:
            value = json.load(f).get("num_labeled_cases")
        if value is not None and str(value).isdigit():
            return int(value)
    prep = os.environ.get("nnUNet_preprocessed")
    if not prep:
        return None
    dataset_folder = os.path.join(prep, _dataset_of_fold(model_folder))
    fold = FOLD_RE.match(os.path.basename(model_folder)).group(1)
    if fold == "all":
        gt = os.path.join(dataset_folder, "gt_segmentations")
        return len([f for f in os.listdir(gt) if file_ending_of(f)]) if os.path.isdir(gt) else None
    splits_file = os.path.join(dataset_folder, "splits_final.json")
    if not os.path.isfile(splits_file):
        return None
    with open(splits_file) as f:
        splits = json.load(f)
    return len(splits[int(fold)]["train"]) if int(fold) < len(splits) else None


def resolve_run(path: str, reference: Optional[str] = None, model: Optional[str] = None) -> dict:
    """Prediction folders, reference folder and labeled-case count of one run (module docstring)."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} is not a folder (expected a trainer output folder, a fold_K folder or a "
                                f"folder of predictions)")
    if FOLD_RE.match(os.path.basename(path)):
        folds = [path]
    else:
        folds = [f for f in _fold_folders(path) if os.path.isdir(os.path.join(f, "validation"))]
    if folds:  # nnU-Net result folder: validation predictions against nnU-Net's copy of the training labels
        pred_folders = [os.path.join(f, "validation") for f in folds]
        for p in pred_folders:
            if not os.path.isdir(p):
                raise FileNotFoundError(f"{p} does not exist: the fold has no validation predictions yet (finish "
                                        f"training or run nnUNetv2_train ... --val)")
        if reference is None:
            prep = os.environ.get("nnUNet_preprocessed")
            reference = os.path.join(prep, _dataset_of_fold(folds[0]), "gt_segmentations") if prep else None
            if reference is None or not os.path.isdir(reference):
                raise FileNotFoundError(f"no reference for {path}: set nnUNet_preprocessed (its gt_segmentations "
                                        f"folder is the default) or pass the reference folder")
        n_labeled = labeled_cases(model or path)
    else:
        pred_folders = [path]
        if reference is None:
            raise ValueError(f"{path} is a prediction folder: pass the reference folder (e.g. labelsTs)")
        n_labeled = labeled_cases(model) if model else None
    return {"pred_folders": pred_folders, "reference": os.path.abspath(reference), "n_labeled": n_labeled,
            "result_folder": bool(folds)}


def default_run_name(path: str) -> str:
    path = os.path.abspath(path)
    base = os.path.basename(path)
    if FOLD_RE.match(base):
        return f"{os.path.basename(os.path.dirname(path)).split('__')[0]} {base}"
    return base.split("__")[0]


def _pairs(spec: dict, file_ending: str):
    refs = list_cases(spec["reference"], file_ending)
    pairs = []
    for folder in spec["pred_folders"]:
        preds = list_cases(folder, file_ending)
        if not preds:
            raise FileNotFoundError(f"no files ending with {file_ending} in {folder}")
        no_ref = sorted(set(preds) - set(refs))
        if no_ref:
            raise FileNotFoundError(f"predictions in {folder} without a reference in {spec['reference']}: "
                                    f"{', '.join(no_ref[:10])}; pass the matching reference folder")
        pairs += [(c, refs[c], p) for c, p in preds.items()]
    cases = [c for c, _, _ in pairs]
    if len(set(cases)) != len(cases):
        raise ValueError(f"a case is predicted twice in {spec['pred_folders']}")
    return sorted(pairs)


def _fmt(mu, sd):
    return "n/a" if mu is None or math.isnan(mu) else f"{mu:.3f} ± {sd:.3f}"


def comparison_rows(results: Dict[str, dict], n_labeled: Dict[str, Optional[int]]):
    """Table rows ``[row name, cell per run]``: mean ± std per label and metric, then case counts."""
    names = list(results)
    first = results[names[0]]
    rows = []
    for label, label_name in first["labels"].items():
        for m in METRICS:
            unit = f" [{UNITS[m]}]" if UNITS[m] else ""
            rows.append([f"{label_name} {m}{unit}", *(_fmt(results[r]["mean"][label][m], results[r]["std"][label][m])
                                                     for r in names)])
    for m in METRICS:
        rows.append([f"mean over labels {m}", *(_fmt(results[r]["foreground_mean"][m], 0.0).split(" ±")[0]
                                               for r in names)])
    rows.append(["cases evaluated", *(str(results[r]["num_cases"]) for r in names)])
    rows.append(["labeled training cases", *("n/a" if n_labeled[r] is None else str(n_labeled[r]) for r in names)])
    return ["metric", *names], rows


def text_table(header, rows) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def plot_comparison(results: Dict[str, dict], png_file: str, title: Optional[str] = None) -> str:
    """Box plots: one panel per metric (rows) and label (columns), one box per run with the cases as dots."""
    names = list(results)
    labels = list(results[names[0]]["labels"].items())
    ncols = len(labels)
    fig, axes = plt.subplots(len(METRICS), ncols, figsize=(max(3.0, 1.0 + 0.9 * len(names)) * ncols, 2.4 * len(METRICS)),
                             squeeze=False)
    rng = np.random.default_rng(0)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, m in enumerate(METRICS):
        for col, (label, label_name) in enumerate(labels):
            ax = axes[row, col]
            data = []
            for r in names:
                vals = np.array([c["metrics"][label][m] for c in results[r]["cases"]], dtype=float)
                data.append(vals[~np.isnan(vals)])
            positions = [i + 1 for i, d in enumerate(data) if d.size]
            if positions:
                bp = ax.boxplot([d for d in data if d.size], positions=positions, widths=0.6, showfliers=False,
                                patch_artist=True)
                for patch, pos in zip(bp["boxes"], positions):
                    patch.set_facecolor(colors[(pos - 1) % len(colors)])
                    patch.set_alpha(0.35)
                for median in bp["medians"]:
                    median.set_color("black")
            for i, d in enumerate(data):
                ax.scatter(i + 1 + rng.uniform(-0.12, 0.12, d.size), d, s=9, color=colors[i % len(colors)],
                           zorder=3, edgecolors="none")
            ax.set_xticks(range(1, len(names) + 1))
            ax.set_xticklabels(names if row == len(METRICS) - 1 else [""] * len(names), rotation=20, ha="right",
                               fontsize=8)
            ax.set_xlim(0.4, len(names) + 0.6)
            ax.grid(axis="y", alpha=0.3)
            if row == 0:
                ax.set_title(f"{label_name}", fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{m} [{UNITS[m]}]" if UNITS[m] else m)
            if m in ("Dice", "NSD"):
                ax.set_ylim(-0.03, 1.03)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png_file, dpi=110)
    plt.close(fig)
    return png_file


def _named_runs(runs: Union[Dict[str, Union[str, dict]], Sequence[str]]) -> Dict[str, Union[str, dict]]:
    """The ``runs`` argument as ``{name: run}``; a list of paths is named by :func:`default_run_name`."""
    if not isinstance(runs, dict):
        runs = {default_run_name(p): p for p in runs}
    if not runs:
        raise ValueError("no runs to compare")
    return runs


def _prepare_output_folder(output_folder: str, overwrite: bool) -> None:
    """Create the output folder and refuse to replace an earlier comparison there unless ``overwrite``; checked
    before any evaluation, so that a long comparison does not end in this error."""
    os.makedirs(output_folder, exist_ok=True)
    existing = [f for f in OUTPUT_FILES if os.path.exists(os.path.join(output_folder, f))]
    if existing and not overwrite:
        raise FileExistsError(f"{output_folder} already holds {', '.join(existing)}; pass overwrite=True "
                              f"(--overwrite) or choose another output folder")


def resolve_runs(runs: Dict[str, Union[str, dict]], reference: Optional[str]) -> Tuple[Dict[str, dict], str]:
    """``({name: run spec}, reference folder)``: every run resolved (:func:`resolve_run`) and the one reference
    folder they share. Runs scored against different references cannot share a table."""
    specs = {}
    for name, run in runs.items():
        path, model = (run.get("pred"), run.get("model")) if isinstance(run, dict) else (run, None)
        specs[name] = resolve_run(path, reference, model)
    refs = {s["reference"] for s in specs.values()}
    if len(refs) > 1:
        raise ValueError(f"the runs use different references ({', '.join(sorted(refs))}); pass one reference folder")
    return specs, refs.pop()


def comparison_labels(specs: Dict[str, dict], ref_folder: str, file_ending: str,
                      labels: Optional[Sequence[int]]) -> Tuple[List[int], Dict[int, str], Optional[int]]:
    """``(labels, label names, ignore label)`` shared by all runs. The names and ignore label come from a
    ``dataset.json`` (nnUNetv2_predict writes one into prediction folders, training into the trainer folder, a raw
    dataset holds one above the reference); the labels are ``labels`` if given, else that file's, else those found in
    the reference files, so that every run is scored on the same list."""
    names, ignore_label = {}, None
    dj = find_dataset_json(*(s["pred_folders"][0] for s in specs.values()),
                           *(os.path.dirname(os.path.dirname(s["pred_folders"][0])) for s in specs.values()
                             if s["result_folder"]), ref_folder)
    if dj is not None:
        dj_labels, names, ignore_label = labels_from_dataset_json(dj)
        if labels is None and dj_labels:
            labels = dj_labels
    if labels is None:
        labels = foreground_labels_in(list(list_cases(ref_folder, file_ending).values()), ignore_label)
    return labels, names, ignore_label


def metrics_file_name(run_name: str) -> str:
    """File name of a run's metrics JSON: the run name with every run of characters other than letters, digits,
    ``_``, ``.`` and ``-`` replaced by ``_`` (a run name may hold spaces or slashes)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_name) + "_metrics.json"


def _evaluate_runs(specs: Dict[str, dict], file_ending: str, ref_folder: str, output_folder: str, verbose: bool,
                   **evaluate_kwargs) -> Dict[str, dict]:
    """``{name: evaluate result}`` of every run (:func:`evaluate_pairs` with ``evaluate_kwargs``), each also written
    as ``<run>_metrics.json``/``.csv`` into ``output_folder``."""
    results = {}
    for name, spec in specs.items():
        pairs = _pairs(spec, file_ending)
        if verbose:
            print(f"evaluating {name}: {len(pairs)} case(s) from {', '.join(spec['pred_folders'])}", flush=True)
        res = evaluate_pairs(pairs, **evaluate_kwargs)
        res.update(reference_folder=ref_folder, prediction_folders=spec["pred_folders"], n_labeled=spec["n_labeled"])
        results[name] = res
        write_outputs(res, os.path.join(output_folder, metrics_file_name(name)), overwrite=True)
    return results


def same_cases(results: Dict[str, dict]) -> bool:
    """Whether every run was evaluated on the same cases in the same order (else its means are not comparable)."""
    return len({tuple(c["case"] for c in r["cases"]) for r in results.values()}) <= 1


def tolerance_text(nsd_tolerance) -> str:
    """The NSD tolerance as shown in the note and title: the number, or ``label: mm`` pairs for a per-label dict."""
    if isinstance(nsd_tolerance, dict):
        return ", ".join(f"{k}: {v}" for k, v in nsd_tolerance.items())
    return f"{nsd_tolerance}"


def comparison_note(ref_folder: str, tolerance: str, hd95_definition: str, both_empty: str,
                    one_empty_distance: str) -> str:
    """The sentence under the table that says what the numbers are: reference, statistics and conventions."""
    return (f"Reference: {ref_folder}. Mean ± std over cases (NaN cases left out: both masks empty); NSD "
            f"tolerance {tolerance} mm; HD95 definition {hd95_definition}; empty-mask conventions both_empty="
            f"{both_empty}, one_empty_distance={one_empty_distance}.")


def comparison_csv_rows(results: Dict[str, dict], n_labeled: Dict[str, Optional[int]]) -> List[list]:
    """Rows of ``comparison.csv`` in long format (columns :data:`CSV_HEADER`): one per run, label and metric; an
    unknown labeled-case count is an empty cell."""
    rows = []
    for name, r in results.items():
        for label, label_name in r["labels"].items():
            for m in METRICS:
                rows.append([name, label, label_name, m, r["mean"][label][m], r["std"][label][m], r["n"][label][m],
                             r["num_cases"], "" if n_labeled[name] is None else n_labeled[name]])
    return rows


def _write_table_files(output_folder: str, markdown: str, note: str, csv_rows: List[list]) -> Tuple[str, str]:
    """Write ``comparison.md`` (table and note) and ``comparison.csv``; returns their paths."""
    md_file = os.path.join(output_folder, "comparison.md")
    with open(md_file, "w") as f:
        f.write(markdown + "\n\n" + note + "\n")
    csv_file = os.path.join(output_folder, "comparison.csv")
    with open(csv_file, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        w.writerows(csv_rows)
    return md_file, csv_file


def compare_runs(runs: Union[Dict[str, Union[str, dict]], Sequence[str]], output_folder: str,
                 reference: Optional[str] = None, labels: Optional[Sequence[int]] = None, nsd_tolerance=1.0,
                 num_processes: int = 1, overwrite: bool = False, both_empty: str = "nan",
                 one_empty_distance: str = "diagonal", hd95_definition: str = "monai",
                 title: Optional[str] = None, verbose: bool = True) -> dict:
    """Evaluate several runs on the same reference and write the comparison table and figure.

    ``runs``: ``{name: path}`` or ``{name: {"pred": path, "model": trainer or fold folder}}`` (the model folder
    gives the labeled-case count of a prediction folder), or a list of paths (names from the folder names).
    ``reference``: the reference folder for every run (required for prediction folders; result folders
    default to ``gt_segmentations``). Returns ``{"table": text, "markdown": ..., "png": path, "csv": path,
    "results": {name: evaluate result}, "n_labeled": {name: int | None}}``.
    """
    runs = _named_runs(runs)
    _prepare_output_folder(output_folder, overwrite)
    specs, ref_folder = resolve_runs(runs, reference)
    file_ending = detect_file_ending(ref_folder)
    labels, names, ignore_label = comparison_labels(specs, ref_folder, file_ending, labels)
    results = _evaluate_runs(specs, file_ending, ref_folder, output_folder, verbose, labels=labels, label_names=names,
                             nsd_tolerance=nsd_tolerance, ignore_label=ignore_label, both_empty=both_empty,
                             one_empty_distance=one_empty_distance, hd95_definition=hd95_definition,
                             num_processes=num_processes)
    n_labeled = {name: spec["n_labeled"] for name, spec in specs.items()}
    if verbose and not same_cases(results):
        print("WARNING: the runs were evaluated on different cases (see 'cases evaluated'); compare with care",
              file=sys.stderr)
    header, rows = comparison_rows(results, n_labeled)
    table, md = text_table(header, rows), markdown_table(header, rows)
    tol = tolerance_text(nsd_tolerance)
    note = comparison_note(ref_folder, tol, hd95_definition, both_empty, one_empty_distance)
    md_file, csv_file = _write_table_files(output_folder, md, note, comparison_csv_rows(results, n_labeled))
    png = plot_comparison(results, os.path.join(output_folder, "comparison.png"),
                          title or f"{len(results)} runs on {os.path.basename(os.path.dirname(ref_folder))}/"
                                   f"{os.path.basename(ref_folder)}, NSD tolerance {tol} mm")
    if verbose:
        print(table)
        print(note)
        print(f"Wrote {md_file}, {csv_file} and {png}")
    return {"table": table, "markdown": md, "png": png, "csv": csv_file, "results": results, "n_labeled": n_labeled}


def _parse_pairs(values, what):
    out = {}
    for v in values or []:
        if "=" in v and not os.path.exists(v):
            k, p = v.split("=", 1)
            out[k] = p
        else:
            if what == "--model":
                raise ValueError(f"--model expects NAME=FOLDER, got {v}")
            out[default_run_name(v)] = v
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_compare",
        description="Compare trainers on the same reference: one table (mean ± std per label and metric, cases "
                    "evaluated, labeled training cases) and one PNG of box plots per label and metric.")
    parser.add_argument("-i", nargs="+", required=True, metavar="[NAME=]FOLDER",
                        help="runs: nnU-Net trainer output folders (<trainer>__<plans>__<config>), fold_K folders or "
                             "prediction folders; NAME= sets the name shown (default: the trainer/folder name)")
    parser.add_argument("-ref", default=None, help="reference folder (required for prediction folders, e.g. "
                                                   "labelsTs; default for result folders: nnU-Net's gt_segmentations)")
    parser.add_argument("--model", nargs="+", default=None, metavar="NAME=FOLDER",
                        help="trainer/fold folder a prediction folder was predicted with (for the labeled-case count)")
    parser.add_argument("-o", required=True, help="output folder for comparison.md/.csv/.png and per-run metrics")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing comparison in -o")
    add_metric_arguments(parser)
    args = parser.parse_args(argv)

    def run():
        runs = _parse_pairs(args.i, "-i")
        models = _parse_pairs(args.model, "--model")
        unknown = set(models) - set(runs)
        if unknown:
            raise ValueError(f"--model names {', '.join(sorted(unknown))} match no run name ({', '.join(runs)})")
        compare_runs({k: {"pred": v, "model": models.get(k)} for k, v in runs.items()}, args.o, args.ref, args.labels,
                     parse_tolerance(args.nsd_tolerance, args.labels), args.num_processes, args.overwrite,
                     args.both_empty, args.one_empty_distance, args.hd95_definition, args.title)

    return report_errors(run)


if __name__ == "__main__":
    sys.exit(main())
