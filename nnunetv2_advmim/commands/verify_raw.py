"""``nnUNetv2_advmim_verify_raw -d D``: check every image (and label) file of a raw dataset before planning.

Stock planning reads ``imagesTr`` with SimpleITK, which pads a truncated NIfTI file with zeros and reads NaN/inf
voxels as 0, so such files are preprocessed without an error (``nnUNetv2_plan_and_preprocess
--verify_dataset_integrity`` does not see them either). This command runs the checks that guard
``imagesUnlabeled`` (:func:`nnunetv2_advmim.data.input_checks.check_case`: truncated or unreadable files, NaN/inf
counted with nibabel, channel count, 2D/3D) over ``imagesTr``, ``imagesTs`` and ``imagesUnlabeled``, and checks
each label file of ``labelsTr`` / ``labelsTs`` against its image: readable, same shape and spacing, label values
that ``dataset.json`` declares, integer label values (origin/direction differences are warnings, as in nnU-Net's own
check). It also refuses a ``dataset.json`` without ``file_ending`` or ``channel_names``, case names that
``imagesUnlabeled`` shares with ``imagesTr``, and (where the dataset is already preprocessed) a corrupt
``label_budget.json`` / ``splits_final.json`` or a budget without its split; it warns about an ``imagesUnlabeled``
image oriented differently from ``imagesTr``. ``--max-voxels N`` refuses larger images from their header instead
of reading them.

Every problem names the file and the fix; exit status 1 if there is any, else 0 and a one-line summary::

    nnUNetv2_advmim_verify_raw -d 990 [-np 4] [--max-voxels 200000000]
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

from nnunetv2_advmim.data.input_checks import (channel_of, check_cases, check_nifti_file, dataset_label_values,
                                               missing_channels_problem, reference_orientation,
                                               require_dataset_json_keys, spacing_is_2d)
from nnunetv2_advmim.data.label_budget import load_budget, load_budget_splits
from nnunetv2_advmim.data.paths import env_folder, find_dataset_name
from nnunetv2_advmim.data.unlabeled import RAW_UNLABELED_FOLDER, list_unlabeled_cases
from nnunetv2_advmim.cli import DefaultsHelpFormatter

LABELED_FOLDERS = (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs"))


def channel_files(folder: str, ending: str, n_channels: int) -> Tuple[Dict[str, List[str]], List[str], List[str]]:
    """``({case: [channel files in order]}, problems, warnings)`` of an ``images*`` folder named
    ``{case}_{XXXX}{ending}`` (nnU-Net's convention). Files with another ending are warnings (nnU-Net skips them)."""
    cases, problems, warnings = {}, [], []
    for f in sorted(os.listdir(folder)):
        if f.startswith("."):
            continue
        path = os.path.join(folder, f)
        if not f.endswith(ending):
            warnings.append(f"{path}: file ending differs from the dataset's '{ending}', so nnU-Net ignores it; "
                            f"convert it to {ending} or remove it")
            continue
        parsed = channel_of(f, ending)
        if parsed is None:
            problems.append(f"{path}: name lacks the channel suffix; rename it to {{case}}_0000{ending} (one file "
                            f"per channel)")
            continue
        cases.setdefault(parsed[0], {})[parsed[1]] = path
    out = {}
    for case, by_channel in sorted(cases.items()):
        if sorted(by_channel) != list(range(n_channels)):
            problems.append(missing_channels_problem(case, folder, list(by_channel), n_channels, ending))
        else:
            out[case] = [by_channel[c] for c in range(n_channels)]
    return out, problems, warnings


def dataset_looks_2d(cases: Dict[str, List[str]], reader_class, n_sample: int = 5) -> Optional[bool]:
    """Whether most of up to ``n_sample`` readable cases are 2D images (nnU-Net's fake first spacing); None if none
    could be read. A minority of the other kind is then reported case by case by ``check_case``."""
    votes = []
    for case in sorted(cases)[:n_sample]:
        try:
            _, props = reader_class().read_images(cases[case])
        except Exception:
            continue
        votes.append(spacing_is_2d(props["spacing"]))
    return None if not votes else sum(votes) * 2 > len(votes)


def check_label(case: str, image_files: Sequence[str], label_file: str, reader_class,
                expected_labels: Sequence[int]) -> Tuple[List[str], List[str]]:
    """(problems, warnings) of one label file against its case's images: readable, not truncated, finite, same shape
    and spacing, only label values of ``dataset.json``; origin/direction (or affine) differences are warnings."""
    if label_file.endswith((".nii", ".nii.gz")):
        p, n_nan, n_inf = check_nifti_file(label_file)
        if p:
            return [f"{label_file}: {p}. Copy or export the label file again, or remove case '{case}'."], []
        if n_nan or n_inf:
            return [f"{label_file}: {n_nan} NaN and {n_inf} inf voxel(s) in a label file. Save the segmentation "
                    f"with integer label values."], []
    reader = reader_class()
    try:
        seg, seg_props = reader.read_seg(label_file)
        img, img_props = reader.read_images(list(image_files))
        img_shape = img.shape[1:]
    except Exception as e:
        return [f"{label_file}: cannot be read by {reader_class.__name__} ({type(e).__name__}: "
                f"{str(e).splitlines()[-1][:300] if str(e) else ''}). Replace it with a readable label file or "
                f"remove case '{case}'."], []
    problems, warnings = [], []
    if tuple(seg.shape[1:]) != tuple(img_shape):
        problems.append(f"{label_file}: shape {tuple(seg.shape[1:])} differs from its image's {tuple(img_shape)} "
                        f"({image_files[0]}). The label must be on the image's voxel grid: export it again from the "
                        f"image, or resample it onto the image.")
    elif not np.allclose(seg_props["spacing"], img_props["spacing"]):
        problems.append(f"{label_file}: spacing {tuple(float(s) for s in seg_props['spacing'])} differs from its "
                        f"image's {tuple(float(s) for s in img_props['spacing'])} ({image_files[0]}). Copy the "
                        f"image's spacing into the label file (or export both again).")
    for key, fields in (("sitk_stuff", ("origin", "direction")), ("nibabel_stuff", ("original_affine",))):
        if key in img_props and key in seg_props:
            for field in fields:
                if not np.allclose(img_props[key][field], seg_props[key][field], atol=1e-4):
                    warnings.append(f"{label_file}: {field} differs from its image's ({image_files[0]}); check "
                                    f"that the label is aligned with the image (nnUNetv2_plot_overlay_pngs).")
    values = np.unique(seg)
    fractional = [float(v) for v in values if not float(v).is_integer()]
    if fractional:
        problems.append(f"{label_file}: non-integer label value(s) {fractional[:5]}"
                        f"{' ...' if len(fractional) > 5 else ''}; label maps hold integer values only (nnU-Net would "
                        f"truncate them). Save the segmentation with integer labels (no interpolation when "
                        f"resampling it: nearest neighbour).")
        return problems, warnings
    found = [int(v) for v in values]
    unexpected = sorted(set(found) - set(int(v) for v in expected_labels))
    if unexpected:
        problems.append(f"{label_file}: label value(s) {unexpected} are not in dataset.json's labels "
                        f"{sorted(set(int(v) for v in expected_labels))}. Fix the label file or add the labels to "
                        f"dataset.json.")
    return problems, warnings


def budget_file_problems(preprocessed_folder: Optional[str]) -> List[str]:
    """Problems of a preprocessed folder's ``label_budget.json`` / ``splits_final.json``: corrupt, or a budget
    without its split (each names the file and the fix); none if the folder or the files do not exist."""
    if not preprocessed_folder or not os.path.isdir(preprocessed_folder):
        return []
    problems = []
    budget = None
    try:
        budget = load_budget(preprocessed_folder)
    except RuntimeError as e:
        problems.append(str(e))
    splits_file = os.path.join(preprocessed_folder, "splits_final.json")
    if budget is not None or os.path.isfile(splits_file):
        try:
            load_budget_splits(preprocessed_folder)
        except RuntimeError as e:
            problems.append(str(e))
    return problems


def load_raw_dataset_json(dataset_json_file: str) -> dict:
    """The ``dataset.json`` of a raw dataset folder, refused with the fix when it is missing, not JSON, or lacks a
    key every later check needs (``file_ending``, ``channel_names``)."""
    if not os.path.isfile(dataset_json_file):
        raise FileNotFoundError(f"{dataset_json_file} does not exist: not an nnU-Net raw dataset folder. Write the "
                                f"dataset.json (channel_names, labels, numTraining, file_ending).")
    try:
        dataset_json = load_json(dataset_json_file)
    except ValueError as e:
        raise ValueError(f"{dataset_json_file} is not valid JSON ({e}); fix the file.") from None
    require_dataset_json_keys(dataset_json, dataset_json_file)
    return dataset_json


def image_pools(raw_folder: str, dataset_json: dict) -> Tuple[Dict[str, Dict[str, List[str]]], List[str], List[str]]:
    """``({images folder: {case: [channel files]}}, problems, warnings)`` of ``imagesTr``, ``imagesTs`` and
    ``imagesUnlabeled`` (the folders that exist), with the naming problems found while listing them, a missing
    ``imagesTr`` and case names ``imagesUnlabeled`` shares with ``imagesTr``."""
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json.get("channel_names", dataset_json.get("modality")))
    problems, warnings, pools = [], [], {}
    for images, _ in LABELED_FOLDERS:
        folder = os.path.join(raw_folder, images)
        if os.path.isdir(folder):
            pools[images], p, w = channel_files(folder, ending, n_channels)
            problems += p
            warnings += w
    if os.path.isdir(os.path.join(raw_folder, RAW_UNLABELED_FOLDER)):
        try:
            pools[RAW_UNLABELED_FOLDER] = list_unlabeled_cases(raw_folder, dataset_json)
        except FileNotFoundError as e:  # the folder holds no images: nothing to check
            warnings.append(str(e))
        except ValueError as e:  # naming problems, one per line after the title
            problems += [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
    if "imagesTr" not in pools:
        problems.append(f"{os.path.join(raw_folder, 'imagesTr')} does not exist: nnU-Net trains on imagesTr/labelsTr.")
    shared = sorted(set(pools.get(RAW_UNLABELED_FOLDER, {})) & set(pools.get("imagesTr", {})))
    if shared:
        problems.append(f"{os.path.join(raw_folder, RAW_UNLABELED_FOLDER)}: case name(s) {shared[:10]} are also "
                        f"training cases in imagesTr (every case identifier must be unique, or an unlabeled image "
                        f"would stand in for a labeled case); rename them, e.g. with a prefix 'unl_'.")
    return pools, problems, warnings


def expected_dimensionality(pools: Dict[str, Dict[str, List[str]]], reader_class) -> bool:
    """Whether the dataset is 2D, judged on the first pool with cases in the order ``imagesTr``, ``imagesTs``,
    ``imagesUnlabeled`` (:func:`dataset_looks_2d`); a pool none of whose sampled cases can be read gives no verdict,
    and the next one is asked. 3D when no pool gives one (the unreadable files are reported case by case)."""
    for k in ("imagesTr", "imagesTs", RAW_UNLABELED_FOLDER):
        if pools.get(k):
            looks_2d = dataset_looks_2d(pools[k], reader_class)
            if looks_2d is not None:
                return looks_2d
    return False


def label_files_problems(raw_folder: str, kind: str, cases: Dict[str, List[str]], ending: str, reader_class,
                         labels: Sequence[int], reported: str) -> Tuple[List[str], List[str]]:
    """(problems, warnings) of the label files of one images pool (``labelsTr`` for ``imagesTr``, ``labelsTs`` for
    ``imagesTs``; ``imagesUnlabeled`` has none) checked against their images (:func:`check_label`). Every imagesTr
    case needs a label; test labels may be missing or partial. A case whose image files are named in ``reported``
    (its image problems) is skipped: its label cannot be compared with an unreadable image."""
    label_folder = dict(LABELED_FOLDERS).get(kind)
    if label_folder is None or not os.path.isdir(os.path.join(raw_folder, label_folder)):
        if kind == "imagesTr":
            return [f"{os.path.join(raw_folder, 'labelsTr')} does not exist: every imagesTr case needs its label "
                    f"file {{case}}{ending} there."], []
        return [], []
    problems, warnings = [], []
    for case, files in cases.items():
        label_file = os.path.join(raw_folder, label_folder, case + ending)
        if not os.path.isfile(label_file):
            if kind == "imagesTr":
                problems.append(f"{label_file} does not exist: imagesTr case '{case}' has no label. Add it, or "
                                f"move the case's images to imagesUnlabeled.")
            continue
        if any(f in reported for f in files):
            continue  # its images are already reported
        p, w = check_label(case, files, label_file, reader_class, labels)
        problems += p
        warnings += w
    return problems, warnings


def num_training_warning(dataset_json_file: str, num_training, counts: Dict[str, int]) -> Optional[str]:
    """A warning when ``dataset.json``'s ``numTraining`` differs from the number of imagesTr cases found (nnU-Net's
    planning refuses the mismatch); None when they agree or either is unknown."""
    if num_training is None or "imagesTr" not in counts or int(num_training) == counts["imagesTr"]:
        return None
    return (f"{dataset_json_file}: numTraining is {num_training} but imagesTr holds {counts['imagesTr']} "
            f"case(s); nnU-Net's planning refuses the mismatch: correct numTraining.")


def verify_raw_dataset(raw_folder: str, num_processes: int = 1, max_voxels: Optional[int] = None,
                       preprocessed_folder: Optional[str] = None) -> Tuple[List[str], List[str], Dict[str, int]]:
    """``(problems, warnings, {folder: number of cases checked})`` of a raw dataset folder (module docstring);
    ``preprocessed_folder``: its nnU-Net preprocessed folder, whose budget and split files are checked too."""
    dataset_json_file = os.path.join(raw_folder, "dataset.json")
    dataset_json = load_raw_dataset_json(dataset_json_file)
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json.get("channel_names", dataset_json.get("modality")))
    labels = dataset_label_values(dataset_json)
    pools, problems, warnings = image_pools(raw_folder, dataset_json)
    problems += budget_file_problems(preprocessed_folder)
    counts = {}
    all_files = [files for cases in pools.values() for files in cases.values()]
    if not all_files:
        return problems, warnings, counts
    reader_class = determine_reader_writer_from_dataset_json(dataset_json, all_files[0][0], verbose=False)
    expect_2d = expected_dimensionality(pools, reader_class)
    reference = reference_orientation(pools["imagesTr"], reader_class) if pools.get("imagesTr") else None
    for kind, cases in pools.items():
        # the label-map and orientation warnings concern imagesUnlabeled (nnU-Net checks the labeled cases)
        unlabeled = kind == RAW_UNLABELED_FOLDER
        p, w = check_cases(cases, reader_class, n_channels, expect_2d, dataset_json if unlabeled else None,
                           num_processes, max_voxels, reference if unlabeled else None)
        counts[kind] = len(cases)
        lp, lw = label_files_problems(raw_folder, kind, cases, ending, reader_class, labels, reported=" ".join(p))
        problems += p + lp
        warnings += w + lw
    n_tr_warning = num_training_warning(dataset_json_file, dataset_json.get("numTraining"), counts)
    if n_tr_warning is not None:
        warnings.append(n_tr_warning)
    return problems, warnings, counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_verify_raw",
        description="Check imagesTr, imagesTs and imagesUnlabeled of a raw dataset (truncated or unreadable files, "
                    "NaN/inf voxels, channel count, 2D/3D) and labelsTr/labelsTs against their images (shape, "
                    "spacing, label values). Lists every bad file with the fix; exit status 1 if there is any.")
    parser.add_argument("-d", required=True, help="dataset ID or DatasetXXX_Name in $nnUNet_raw")
    parser.add_argument("-np", type=int, default=1, help="worker processes for reading images (default 1)")
    parser.add_argument("--max-voxels", type=int, default=None,
                        help="refuse images with more voxels than this, read from the file header (each image is "
                             "otherwise read twice, once as float64); default: no limit")
    args = parser.parse_args(argv)
    try:
        root = env_folder("nnUNet_raw")
        folder = os.path.join(root, find_dataset_name(args.d, root))
        pre_root = os.environ.get("nnUNet_preprocessed")
        pre = os.path.join(pre_root, os.path.basename(folder)) if pre_root else None
        problems, warnings, counts = verify_raw_dataset(folder, args.np, args.max_voxels, pre)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(1)
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    for p in problems:
        print(f"ERROR: {p}", file=sys.stderr)
    checked = ", ".join(f"{k} {n} case(s)" for k, n in counts.items()) or "no cases"
    if problems:
        print(f"{os.path.basename(folder)}: {len(problems)} problem(s) in {checked}; fix or remove the files named "
              f"above and run nnUNetv2_advmim_verify_raw again.", file=sys.stderr)
        sys.exit(1)
    print(f"{os.path.basename(folder)}: {checked} checked, no problems"
          + (f" ({len(warnings)} warning(s) above)" if warnings else ""))


if __name__ == "__main__":
    main()
