"""``nnUNetv2_advmim_evaluate``: challenge metrics of a prediction folder against a reference folder.

Files are read with nnU-Net's reader/writer classes (``determine_reader_writer_from_file_ending``), so any
format nnU-Net reads works (NIfTI, NRRD, MHA, PNG, TIFF, ...). The spacing nnU-Net's reader reports (in
array-axis order) is the spacing of the metrics. Each prediction must have the geometry of its reference
(shape, spacing and, where the reader gives them, origin/direction or affine); otherwise the command stops
with the file names. Metrics and the empty-mask conventions are those of ``nnunetv2_advmim.evaluation.metrics``.

Outputs: a JSON file (per-case values, mean/std/count per label and metric, foreground mean, settings;
NaN is written as ``null``), a CSV next to it (one row per case and label, then ``mean`` and ``std`` rows
per label and a ``foreground_mean`` row) and a summary table on stdout.
"""
import argparse
import csv
import json
import math
import multiprocessing
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES, determine_reader_writer_from_file_ending

from nnunetv2_advmim.evaluation.metrics import (BOTH_EMPTY_CHOICES, HD95_DEFINITIONS, METRICS, ONE_EMPTY_DISTANCE_CHOICES,
                                     label_metrics, summarize)
from nnunetv2_advmim.cli import DefaultsHelpFormatter
from nnunetv2_advmim.runtime.atomic import write_json_atomic

UNITS = {"Dice": "", "HD95": "mm", "ASD": "mm", "NSD": ""}


def _supported_endings() -> List[str]:

    endings = {e.lower() for rw in LIST_OF_IO_CLASSES for e in rw.supported_file_endings}
    return sorted(endings, key=len, reverse=True)  # longest first: '.nii.gz' before '.gz'-like clashes


def file_ending_of(fname: str) -> Optional[str]:
    """The ending of ``fname`` that one of nnU-Net's readers supports (the longest match, spelled as in
    ``fname``), or None for a file no reader takes."""
    low = fname.lower()
    for e in _supported_endings():
        if low.endswith(e):
            return fname[len(fname) - len(e):]
    return None


def detect_file_ending(folder: str) -> str:
    """The file ending of the segmentation files in ``folder`` (the most common one nnU-Net can read)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder")
    counts = {}
    for f in os.listdir(folder):
        e = file_ending_of(f)
        if e is not None and os.path.isfile(os.path.join(folder, f)):
            counts[e] = counts.get(e, 0) + 1
    if not counts:
        raise FileNotFoundError(f"{folder} holds no file nnU-Net can read (endings {', '.join(_supported_endings())}); "
                                f"point the command at the folder with the segmentation files")
    return max(counts, key=counts.get)


def list_cases(folder: str, file_ending: str) -> Dict[str, str]:
    """``{case: path}`` of the files ending with ``file_ending`` in ``folder`` (case = name minus the ending)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder")
    return {f[:-len(file_ending)]: os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.endswith(file_ending) and os.path.isfile(os.path.join(folder, f))}


_READERS = {}


def reader_for(file_ending: str, example_file: str):
    """An instance of the nnU-Net reader/writer class that reads ``example_file`` (chosen once per file ending
    and process: nnU-Net's lookup opens the example file to test the reader)."""

    if file_ending not in _READERS:
        _READERS[file_ending] = determine_reader_writer_from_file_ending(file_ending, example_file, verbose=False)()
    return _READERS[file_ending]


def read_label_map(rw, path: str) -> Tuple[np.ndarray, Tuple[float, ...], dict]:
    """Read a segmentation with an nnU-Net reader: ``(array without channel axis, spacing per axis, properties)``."""
    seg, props = rw.read_seg(path)
    seg = np.asarray(seg)[0]
    spacing = tuple(float(s) for s in props["spacing"])
    if len(spacing) != seg.ndim:
        raise ValueError(f"{path}: the reader gave spacing {spacing} for an array of shape {seg.shape}")
    return seg, spacing, props


def geometry_mismatch(shape_a, props_a: dict, shape_b, props_b: dict, atol: float = 1e-3) -> Optional[str]:
    """A sentence saying how two images' geometries differ, or None when they match (shape, spacing and the
    reader's origin/direction or affine where both files carry them)."""
    if tuple(shape_a) != tuple(shape_b):
        return f"shape {tuple(shape_a)} vs {tuple(shape_b)}"
    sa, sb = np.asarray(props_a["spacing"], float), np.asarray(props_b["spacing"], float)
    if sa.shape != sb.shape or not np.allclose(sa, sb, rtol=1e-4, atol=atol):
        return f"spacing {tuple(sa)} vs {tuple(sb)}"
    if "sitk_stuff" in props_a and "sitk_stuff" in props_b:
        for key in ("origin", "direction"):
            a, b = np.asarray(props_a["sitk_stuff"][key], float), np.asarray(props_b["sitk_stuff"][key], float)
            if a.shape != b.shape or not np.allclose(a, b, atol=atol):
                return f"{key} {tuple(a)} vs {tuple(b)}"
    if "nibabel_stuff" in props_a and "nibabel_stuff" in props_b:
        a = np.asarray(props_a["nibabel_stuff"]["original_affine"], float)
        b = np.asarray(props_b["nibabel_stuff"]["original_affine"], float)
        if a.shape != b.shape or not np.allclose(a, b, atol=atol):
            return "affine differs"
    return None


def _evaluate_one(job):
    case, ref_file, pred_file, file_ending, labels, kwargs = job
    ref_rw = reader_for(file_ending, ref_file)
    pred_rw = ref_rw if file_ending_of(pred_file) == file_ending else reader_for(file_ending_of(pred_file), pred_file)
    ref, spacing, ref_props = read_label_map(ref_rw, ref_file)
    pred, _, pred_props = read_label_map(pred_rw, pred_file)
    why = geometry_mismatch(ref.shape, ref_props, pred.shape, pred_props)
    if why is not None:
        raise ValueError(f"geometry of prediction {pred_file} does not match reference {ref_file}: {why}. "
                         f"Predictions must be in the reference image's geometry (nnUNetv2_predict exports them so); "
                         f"resample or re-export the prediction.")
    values = label_metrics(ref, pred, spacing, labels, **kwargs)
    return {"case": case, "reference_file": ref_file, "prediction_file": pred_file, "spacing": list(spacing),
            "shape": list(ref.shape), "metrics": values}


def foreground_labels_in(files: Sequence[str], ignore_label: Optional[int] = None) -> List[int]:
    """The label values found in segmentation files, sorted, without background (0) and ``ignore_label``: the
    labels to evaluate when neither the caller nor a ``dataset.json`` names them. Read in this process (a
    read-only pass is not worth starting workers)."""
    found = set()
    for f in files:
        seg, _, _ = read_label_map(reader_for(file_ending_of(f), f), f)
        found.update(int(v) for v in np.unique(seg))
    return sorted(v for v in found if v != 0 and v != ignore_label)


def _map(fn, jobs, num_processes):
    if num_processes <= 1 or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
        return pool.map(fn, jobs)


def find_dataset_json(*folders) -> Optional[dict]:
    """The first ``dataset.json`` found in the given folders or their parents (nnU-Net writes one into
    prediction folders; raw dataset folders hold one above ``labelsTr``/``labelsTs``)."""
    for folder in folders:
        if folder is None:
            continue
        for candidate in (os.path.join(folder, "dataset.json"), os.path.join(os.path.dirname(os.path.abspath(folder)),
                                                                                "dataset.json")):
            if os.path.isfile(candidate):
                with open(candidate) as f:
                    return json.load(f)
    return None


def labels_from_dataset_json(dataset_json: dict) -> Tuple[List[int], Dict[int, str], Optional[int]]:
    """Foreground labels, their names and the ignore label of an nnU-Net ``dataset.json`` (integer labels only;
    region-based datasets give ``[]`` so that labels are taken from the reference files)."""
    labels, names, ignore = [], {}, None
    for name, value in dataset_json.get("labels", {}).items():
        if not isinstance(value, int):
            return [], {}, None
        if name == "ignore":
            ignore = value
        elif value != 0:
            labels.append(value)
            names[value] = name
    return sorted(labels), names, ignore


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def evaluate_pairs(pairs: Sequence[Tuple[str, str, str]], labels: Optional[Sequence[int]] = None,
                   label_names: Optional[Dict[int, str]] = None, nsd_tolerance=1.0, ignore_label: Optional[int] = None,
                   both_empty: str = "nan", one_empty_distance: str = "diagonal", hd95_definition: str = "monai",
                   num_processes: int = 1) -> dict:
    """Metrics of ``(case, reference_file, prediction_file)`` triples; returns the result dict (see module doc)."""
    if not pairs:
        raise ValueError("nothing to evaluate: no (reference, prediction) pairs")
    ref_ending = file_ending_of(pairs[0][1])
    if labels is None:
        labels = foreground_labels_in([r for _, r, _ in pairs], ignore_label)
    labels = [int(v) for v in labels]
    label_names = {int(k): v for k, v in (label_names or {}).items()}
    kwargs = dict(nsd_tolerance=nsd_tolerance, ignore_label=ignore_label, both_empty=both_empty,
                  one_empty_distance=one_empty_distance, hd95_definition=hd95_definition)
    jobs = [(case, r, p, file_ending_of(r) or ref_ending, labels, kwargs) for case, r, p in pairs]
    cases = _map(_evaluate_one, jobs, num_processes)
    summary = summarize([c["metrics"] for c in cases], labels)
    return {
        "labels": {label: label_names.get(label, str(label)) for label in labels},
        "nsd_tolerance_mm": nsd_tolerance if not isinstance(nsd_tolerance, dict) else
        {int(k): float(v) for k, v in nsd_tolerance.items()},
        "conventions": {"both_empty": both_empty, "one_empty_distance": one_empty_distance,
                        "hd95_definition": hd95_definition, "ignore_label": ignore_label},
        "num_cases": len(cases),
        "cases": cases,
        **summary,
    }


def evaluate_folders(reference_folder: str, prediction_folder: str, labels: Optional[Sequence[int]] = None,
                     nsd_tolerance=1.0, file_ending: Optional[str] = None, require_all: bool = True,
                     num_processes: int = 1, both_empty: str = "nan", one_empty_distance: str = "diagonal",
                     hd95_definition: str = "monai", ignore_label: Optional[int] = None) -> dict:
    """Evaluate every prediction in ``prediction_folder`` against the file of the same case in
    ``reference_folder``. Every prediction needs a reference, and every reference a prediction
    (``require_all``, as stock ``nnUNetv2_evaluate_folder``); ``require_all=False`` (the command's ``--chill``)
    reports the missing ones and evaluates the predicted cases. Labels, names and the ignore label default to the
    ``dataset.json`` nnU-Net writes into prediction folders (or the one above the reference folder), else
    to the labels found in the references."""
    file_ending = file_ending or detect_file_ending(reference_folder)
    refs = list_cases(reference_folder, file_ending)
    if not refs:
        raise FileNotFoundError(f"no reference files ending with {file_ending} in {reference_folder}")
    preds = list_cases(prediction_folder, file_ending)
    if not preds:
        raise FileNotFoundError(f"no prediction files ending with {file_ending} in {prediction_folder} "
                                f"(the reference folder's file ending); use --file-ending if they differ")
    no_ref = sorted(set(preds) - set(refs))
    if no_ref:
        raise FileNotFoundError(f"{len(no_ref)} prediction(s) in {prediction_folder} have no reference in "
                                f"{reference_folder}: {', '.join(no_ref[:10])}. Use the matching reference folder.")
    missing = sorted(set(refs) - set(preds))
    if missing:
        msg = (f"{len(missing)} of {len(refs)} reference case(s) have no prediction in {prediction_folder}: "
               f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        if require_all:
            raise FileNotFoundError(msg + ". Predict them, or pass --chill to evaluate the predicted cases only.")
        print("WARNING: " + msg + "; evaluating the predicted cases only.", file=sys.stderr)
    names = {}
    dj = find_dataset_json(prediction_folder, reference_folder)
    if dj is not None:
        dj_labels, names, dj_ignore = labels_from_dataset_json(dj)
        if labels is None and dj_labels:
            labels = dj_labels
        if ignore_label is None:
            ignore_label = dj_ignore
    result = evaluate_pairs([(c, refs[c], preds[c]) for c in sorted(preds)], labels, names, nsd_tolerance,
                            ignore_label, both_empty, one_empty_distance, hd95_definition, num_processes)
    result.update(reference_folder=os.path.abspath(reference_folder),
                  prediction_folder=os.path.abspath(prediction_folder), file_ending=file_ending,
                  missing_predictions=missing)
    return result


def write_outputs(result: dict, json_file: str, overwrite: bool = False) -> Tuple[str, str]:
    """Write the result as JSON and as CSV (same name, ``.csv``); refuse to replace files unless ``overwrite``."""
    csv_file = (json_file[:-5] if json_file.endswith(".json") else json_file) + ".csv"
    for f in (json_file, csv_file):
        if os.path.exists(f) and not overwrite:
            raise FileExistsError(f"{f} exists; pass --overwrite to replace it or choose another -o")
    os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
    write_json_atomic(json_file, _jsonable(result), indent=1)
    names = result["labels"]
    header = ["case", "label", "label_name", *METRICS, "ref_voxels", "pred_voxels", "empty"]
    with open(csv_file, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        fmt = lambda v: "" if isinstance(v, float) and math.isnan(v) else (f"{v:.6g}" if isinstance(v, float) else v)
        for c in result["cases"]:
            for label, vals in c["metrics"].items():
                w.writerow([c["case"], label, names[label], *(fmt(vals[m]) for m in METRICS), vals["n_ref"],
                            vals["n_pred"], vals["empty"]])
        for stat in ("mean", "std"):
            for label in names:
                w.writerow([stat, label, names[label], *(fmt(result[stat][label][m]) for m in METRICS), "", "", ""])
        w.writerow(["foreground_mean", "", "", *(fmt(result["foreground_mean"][m]) for m in METRICS), "", "", ""])
    return json_file, csv_file


def format_summary(result: dict) -> str:
    """Mean ± std per label and metric (count of non-NaN cases in brackets when it differs from the cases)."""
    n = result["num_cases"]
    cols = [f"{m} [{UNITS[m]}]" if UNITS[m] else m for m in METRICS]
    rows = []
    for label, name in result["labels"].items():
        cells = []
        for m in METRICS:
            mu, sd, k = result["mean"][label][m], result["std"][label][m], result["n"][label][m]
            cell = "n/a" if math.isnan(mu) else f"{mu:.3f} ± {sd:.3f}"
            cells.append(cell + (f" ({k})" if k != n else ""))
        rows.append([f"{label} {name}" if name != str(label) else str(label), *cells])
    rows.append(["foreground mean", *("n/a" if math.isnan(result["foreground_mean"][m]) else
                                      f"{result['foreground_mean'][m]:.3f}" for m in METRICS)])
    widths = [max(len(r[i]) for r in rows + [["label", *cols]]) for i in range(len(cols) + 1)]
    line = lambda r: "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
    return "\n".join([line(["label", *cols])] + [line(r) for r in rows])


def parse_tolerance(values: Optional[Sequence[str]], labels: Optional[Sequence[int]]):
    """``--nsd-tolerance 2`` (all labels) or ``--nsd-tolerance 1:2 2:1.5`` (label:mm)."""
    if not values:
        return 1.0
    if len(values) == 1 and ":" not in values[0]:
        return float(values[0])
    out = {}
    for v in values:
        if ":" not in v:
            raise ValueError(f"--nsd-tolerance: give one number for all labels or label:mm pairs, got {values}")
        k, mm = v.split(":", 1)
        out[int(k)] = float(mm)
    return out


def add_metric_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("-l", "--labels", type=int, nargs="+", default=None,
                        help="labels to evaluate (default: from dataset.json, else all labels found in the references)")
    parser.add_argument("--nsd-tolerance", nargs="+", default=None, metavar="MM",
                        help="NSD tolerance in mm: one number for all labels or label:mm pairs (default 1.0)")
    parser.add_argument("--both-empty", choices=BOTH_EMPTY_CHOICES, default="nan",
                        help="metrics when reference and prediction are both empty: nan (left out of means, "
                             "default) or perfect (Dice 1, NSD 1, HD95 0, ASD 0)")
    parser.add_argument("--one-empty-distance", choices=ONE_EMPTY_DISTANCE_CHOICES, default="diagonal",
                        help="HD95/ASD when only one of reference/prediction is empty: the image diagonal in mm "
                             "(default) or nan")
    parser.add_argument("--hd95", choices=HD95_DEFINITIONS, default="monai", dest="hd95_definition",
                        help="HD95 definition: monai = max of the two directed 95th percentiles (default); medpy = "
                             "95th percentile of both directions pooled (medpy.metric.binary.hd95)")
    parser.add_argument("--file-ending", default=None, help="file ending, e.g. .nii.gz (default: detected)")
    parser.add_argument("-np", "--num-processes", type=int, default=2, help="worker processes (default 2)")


def report_errors(action: Callable[[], None]) -> int:
    """Exit status of a command: 0 after ``action()``, 1 with ``ERROR: <message>`` on stderr for the errors a user
    can fix (missing or existing files, bad values)."""
    try:
        action()
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_evaluate",
        description="Dice, HD95, ASD and NSD per case and label with the images' spacing (files read with "
                    "nnU-Net's readers). Writes JSON + CSV and prints mean ± std per label.")
    parser.add_argument("-ref", required=True, help="folder with the reference segmentations (e.g. labelsTs)")
    parser.add_argument("-pred", required=True, help="folder with the predicted segmentations")
    parser.add_argument("-o", default=None, help="output JSON (default PRED/advmim_metrics.json); a CSV with the "
                                                 "same name is written next to it")
    parser.add_argument("--chill", action="store_true",
                        help="evaluate the predicted cases when some reference cases have no prediction (without it "
                             "the command stops, as stock nnUNetv2_evaluate_folder does)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_metric_arguments(parser)
    args = parser.parse_args(argv)

    def run():
        tolerance = parse_tolerance(args.nsd_tolerance, args.labels)
        out = args.o or os.path.join(args.pred, "advmim_metrics.json")
        csv_out = (out[:-5] if out.endswith(".json") else out) + ".csv"
        for f in (out, csv_out):  # check before the (possibly long) computation
            if os.path.exists(f) and not args.overwrite:
                raise FileExistsError(f"{f} exists; pass --overwrite to replace it or choose another -o")
        result = evaluate_folders(args.ref, args.pred, args.labels, tolerance, args.file_ending, not args.chill,
                                  args.num_processes, args.both_empty, args.one_empty_distance, args.hd95_definition)
        json_file, csv_file = write_outputs(result, out, args.overwrite)
        print(f"{result['num_cases']} case(s), NSD tolerance {result['nsd_tolerance_mm']} mm, HD95 definition "
              f"{result['conventions']['hd95_definition']}")
        print(format_summary(result))
        print(f"Wrote {json_file} and {csv_file}")

    return report_errors(run)


if __name__ == "__main__":
    sys.exit(main())
