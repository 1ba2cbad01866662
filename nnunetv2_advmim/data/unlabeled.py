"""Unlabeled images in nnU-Net datasets: preprocessing of ``imagesUnlabeled`` and the unlabeled pool.

Folder convention
-----------------
Raw: ``$nnUNet_raw/DatasetXXX_Name/imagesUnlabeled/{case}_{XXXX}{file_ending}``, same naming, channels and
file ending as ``imagesTr``. Stock planning ignores the folder.

Preprocessed: ``$nnUNet_preprocessed/DatasetXXX_Name/<data_identifier>_unlabeled/``, a sibling of the
configuration folder ``<data_identifier>/`` (e.g. ``nnUNetPlans_3d_fullres_unlabeled/``). Stock nnU-Net lists
every case in ``<data_identifier>/`` for its splits, so unlabeled cases must not live there. The sibling holds
exactly what the plan's own preprocessor writes for a case without segmentation (``run_case_save`` with
``seg_file=None``), so nnU-Net's dataset classes (``infer_dataset_class``, ``nnUNetDatasetBlosc2``) read it:
``{case}.b2nd`` (image), ``{case}_seg.b2nd`` (only the nonzero mask of the image: -1 outside, 0 inside; no label)
and ``{case}.pkl`` (properties, no ``class_locations``).

Unlabeled pool of a fold
------------------------
= the label budget's unlabeled training cases of that fold (``label_budget.json``, see
:mod:`nnunetv2_advmim.data.label_budget`; they live in ``<data_identifier>/`` with their labels, which are never read)
+ every preprocessed ``imagesUnlabeled`` case. Validation cases join only when asked (``include_validation``).
:class:`UnlabeledDataset` loads image data and properties only: it never opens a segmentation file and strips
``class_locations`` from the properties.
"""
import argparse
import multiprocessing
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

import blosc2
import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_json, load_pickle
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
from tqdm import tqdm

from nnunetv2_advmim.data.input_checks import (channel_of, check_cases, dataset_is_2d, format_problems,
                                               missing_channels_problem, reference_orientation)
from nnunetv2_advmim.data.label_budget import budget_unlabeled_cases, load_budget
from nnunetv2_advmim.data.paths import env_folder, identifiers_in, load_plans_and_dataset_json, preprocessed_dataset_folder
from nnunetv2_advmim.cli import DefaultsHelpFormatter

UNLABELED_SUFFIX = "_unlabeled"
RAW_UNLABELED_FOLDER = "imagesUnlabeled"
# properties written by nnU-Net's preprocessor that are derived from labels: never handed out for unlabeled cases
LABEL_DERIVED_PROPERTIES = ("class_locations",)


def unlabeled_folder(preprocessed_folder: str, data_identifier: str) -> str:
    """Where the preprocessed ``imagesUnlabeled`` cases of one configuration live (module docstring)."""
    return os.path.join(preprocessed_folder, data_identifier + UNLABELED_SUFFIX)


# ------------------------------------------------------------------------------------------- raw unlabeled files
def list_unlabeled_cases(raw_dataset_folder: str, dataset_json: dict) -> Dict[str, List[str]]:
    """``{case: [channel files in channel order]}`` of ``imagesUnlabeled``; a clear error for files that break the
    convention (wrong file ending, no ``_XXXX`` channel suffix, missing or extra channels)."""
    folder = os.path.join(raw_dataset_folder, RAW_UNLABELED_FOLDER)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} does not exist. Put the unlabeled images there, named like imagesTr "
                                f"({{case}}_0000{dataset_json['file_ending']}, one file per channel).")
    ending = dataset_json["file_ending"]
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    n_channels = len(channels)
    labels_dir = os.path.join(raw_dataset_folder, "labelsTr")
    label_names = set(os.listdir(labels_dir)) if os.path.isdir(labels_dir) else set()
    problems, cases = [], {}
    for f in sorted(os.listdir(folder)):
        if f.startswith("."):
            continue
        path = os.path.join(folder, f)
        if f in label_names:  # the reliable rule for a segmentation copied here by mistake
            problems.append(f"{path}: has the name of the label file {os.path.join(labels_dir, f)}; segmentations do "
                            f"not belong in imagesUnlabeled: move it out (unlabeled images are named "
                            f"{{case}}_0000{ending})")
            continue
        if not f.endswith(ending):
            problems.append(f"{path}: file ending differs from the dataset's '{ending}'; convert it to {ending} "
                            f"(or remove it)")
            continue
        parsed = channel_of(f, ending)
        if parsed is None:
            problems.append(f"{path}: name lacks the channel suffix; if it is an image, rename it to "
                            f"{{case}}_0000{ending}; if it is a segmentation, move it out of imagesUnlabeled")
            continue
        cases.setdefault(parsed[0], {})[parsed[1]] = path
    for case, by_channel in cases.items():
        if sorted(by_channel) != list(range(n_channels)):
            problems.append(missing_channels_problem(case, folder, list(by_channel), n_channels, ending)
                            + f" ({dict(channels)})")
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ValueError(f"imagesUnlabeled does not match the dataset's conventions:\n  {shown}")
    if not cases:
        raise FileNotFoundError(f"{folder} holds no images ending in {ending}.")
    return {c: [cases[c][i] for i in range(n_channels)] for c in sorted(cases)}


# ---------------------------------------------------------------------------------------------- preprocessing
def case_loads(out_truncated: str) -> bool:
    """Whether a preprocessed case's files open: the properties unpickle and the image array's file opens
    (``.b2nd`` through blosc2, which reads its header; ``.npy`` / ``.npz`` through numpy). nnU-Net writes neither
    atomically, so a kill while writing leaves a file that exists but does not load."""
    try:
        load_pickle(out_truncated + ".pkl")
        if os.path.isfile(out_truncated + ".b2nd"):
            blosc2.open(urlpath=out_truncated + ".b2nd", mode="r")
        elif os.path.isfile(out_truncated + ".npy"):
            np.load(out_truncated + ".npy", mmap_mode="r")
        else:
            with np.load(out_truncated + ".npz") as z:
                z["data"].shape
    except Exception:
        return False
    return True


def case_is_done(out_truncated: str, plans_file: Optional[str] = None) -> bool:
    """nnU-Net's ``save_case`` writes the properties file last, so its presence marks a finished case, provided the
    case's files load (:func:`case_loads`: a case cut off while being written is redone); a case older than the
    plans file was made with plans that were rewritten since (re-planning) and is not done."""
    pkl = out_truncated + ".pkl"
    if not os.path.isfile(pkl):
        return False
    if plans_file is not None and os.path.getmtime(pkl) < os.path.getmtime(plans_file):
        return False
    return case_loads(out_truncated)


def _remove_case_files(out_truncated: str) -> None:
    folder, case = os.path.split(out_truncated)
    if not os.path.isdir(folder):
        return
    for f in os.listdir(folder):
        if f in (f"{case}.pkl", f"{case}.npz", f"{case}.npy", f"{case}_seg.npy", f"{case}.b2nd", f"{case}_seg.b2nd"):
            os.remove(os.path.join(folder, f))


def preprocess_case(preprocessor, out_truncated: str, image_files: Sequence[str], plans_manager,
                    configuration_manager, dataset_json: dict) -> str:
    """Preprocess one unlabeled case with the plan's own preprocessor (``run_case_save``, no segmentation)."""
    _remove_case_files(out_truncated)  # leftovers of an interrupted run
    try:
        preprocessor.run_case_save(out_truncated, list(image_files), None, plans_manager, configuration_manager,
                                   dataset_json)
    except Exception as e:
        _remove_case_files(out_truncated)
        raise RuntimeError(f"Could not read or preprocess the unlabeled case {os.path.basename(out_truncated)} "
                           f"(files: {', '.join(image_files)}): {type(e).__name__}: {e}. If a file is corrupt or "
                           f"not a readable {dataset_json['file_ending']} image, replace it or remove the case from "
                           f"imagesUnlabeled, then re-run (finished cases are skipped).") from None
    return os.path.basename(out_truncated)


def _preprocess_case_star(args):
    return preprocess_case(*args)


def _check_raw_inputs(pre_folder: str, raw_folder: str, plans_manager, dataset_json: dict,
                      configurations: Sequence[str], cases: Dict[str, List[str]], plans_file: str, overwrite: bool,
                      num_processes: int) -> None:
    """Read every case that is going to be preprocessed with the plan's reader and refuse bad inputs (truncated or
    unreadable files, wrong dimensionality or channel count, NaN/inf) before any folder or file is written
    (:mod:`nnunetv2_advmim.data.input_checks`). Cases already done for every configuration are not re-read."""
    needed = {}
    for c in configurations:
        out_folder = unlabeled_folder(pre_folder, plans_manager.get_configuration(c).data_identifier)
        for case, files in cases.items():
            if overwrite or not case_is_done(os.path.join(out_folder, case), plans_file):
                needed[case] = files
    if not needed:
        return
    n_channels = len(dataset_json.get("channel_names", dataset_json.get("modality")))
    reader = plans_manager.image_reader_writer_class
    try:  # imagesTr's orientation, for a warning about unlabeled images oriented otherwise
        training = get_filenames_of_train_images_and_targets(raw_folder, dataset_json)
        reference = reference_orientation({c: v["images"] for c, v in training.items()}, reader)
    except Exception:  # imagesTr unreadable or absent: nothing to compare with
        reference = None
    problems, warnings = check_cases(needed, reader, n_channels, dataset_is_2d(pre_folder, plans_manager),
                                     dataset_json, num_processes, reference=reference)
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    if problems:
        raise ValueError(format_problems(
            f"{len(problems)} problem(s) in {os.path.join(raw_folder, RAW_UNLABELED_FOLDER)}; nothing was "
            f"preprocessed (fix or remove the files and re-run):", problems))


def _configurations_to_preprocess(pre_folder: str, plans_manager, plans_name: str,
                                  configurations: Optional[Sequence[str]]) -> List[str]:
    """The configurations to preprocess for: the requested ones, or (``None``) every configuration of the plans whose
    labeled data are preprocessed, since unlabeled data are only useful next to labeled data of the same plan.
    An error names the command to run when there is none, and the available ones when a request is unknown."""
    available = list(plans_manager.available_configurations)
    if configurations is None:
        configurations = [c for c in available if os.path.isdir(
            os.path.join(pre_folder, plans_manager.get_configuration(c).data_identifier))]
        if not configurations:
            raise FileNotFoundError(f"No configuration of {plans_name} has preprocessed labeled data in {pre_folder}. "
                                    f"Run `nnUNetv2_preprocess -d {os.path.basename(pre_folder)} -c CONFIG` first or "
                                    f"pass -c.")
    unknown = [c for c in configurations if c not in available]
    if unknown:
        raise ValueError(f"Configuration(s) {unknown} are not in {plans_name}.json; available: {available}")
    return list(configurations)


def _refuse_name_clashes(cases: Dict[str, List[str]], raw_folder: str, dataset_json: dict) -> None:
    """Refuse unlabeled case names that are also imagesTr case names: the unlabeled pool and the splits address
    cases by identifier alone, so a shared name would mix a labeled and an unlabeled image."""
    try:
        labeled = set(get_filenames_of_train_images_and_targets(raw_folder, dataset_json))
    except Exception:  # imagesTr unreadable or absent: nothing to clash with
        labeled = set()
    clashes = sorted(set(cases) & labeled)
    if clashes:
        raise ValueError(f"Unlabeled case name(s) {clashes[:10]} in {raw_folder}/{RAW_UNLABELED_FOLDER} are also "
                         f"training case names in imagesTr; rename them (e.g. with a prefix 'unl_') so every case "
                         f"identifier is unique.")


def _sort_out_done_cases(cases: Dict[str, List[str]], out_folder: str, plans_file: str, overwrite: bool):
    """``(todo, skipped, outdated)`` for one output folder: ``todo`` lists ``(output path without ending, image
    files)`` of the cases to (re)do, ``skipped`` the finished cases kept, ``outdated`` how many of ``todo`` were
    finished but with plans older than ``plans_file`` (:func:`case_is_done`). ``overwrite`` redoes every case."""
    todo, skipped, outdated = [], [], 0
    for case, files in cases.items():
        out = os.path.join(out_folder, case)
        if case_is_done(out, plans_file) and not overwrite:
            skipped.append(case)
        else:
            outdated += case_is_done(out) and not overwrite
            todo.append((out, files))
    return todo, skipped, outdated


def _announce_configuration(dataset_name: str, configuration: str, plans_name: str, out_folder: str,
                            cases: Dict[str, List[str]], n_todo: int, skipped: List[str], outdated: int) -> None:
    """Say what is about to happen for one configuration, and note preprocessed cases whose raw image is gone
    (they stay in the unlabeled pool, which a user who deleted the image may not expect)."""
    stale = sorted(set(identifiers_in(out_folder)) - set(cases))
    if stale:
        print(f"Note: {len(stale)} preprocessed case(s) in {out_folder} have no image in imagesUnlabeled any more "
              f"(e.g. {stale[:3]}); they stay in the unlabeled pool until you delete their files.")
    print(f"{dataset_name} {configuration}: {n_todo} unlabeled case(s) to preprocess into {out_folder}, "
          f"{len(skipped)} already done" + (" (use --overwrite to redo them)" if skipped else "")
          + (f"; {outdated} redone because {plans_name}.json is newer than them" if outdated else ""))


def _run_case_jobs(jobs: List[tuple], num_processes: int, description: str, verbose: bool) -> List[str]:
    """Run :func:`preprocess_case` on every argument tuple of ``jobs`` (in this process when there is one job or one
    process, else in a pool) with a progress bar; returns the names of the cases done, in completion order."""
    done = []
    with tqdm(total=len(jobs), desc=description, disable=not verbose or not jobs) as bar:
        if num_processes <= 1 or len(jobs) <= 1:
            for args in jobs:
                done.append(_preprocess_case_star(args))
                bar.update()
        else:
            # spawn, like nnU-Net's own preprocessing (forking a process that holds torch/blosc2 threads is unsafe)
            with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
                for name in pool.imap_unordered(_preprocess_case_star, jobs):
                    done.append(name)
                    bar.update()
    return done


def _preprocess_configuration(configuration: str, cases: Dict[str, List[str]], pre_folder: str, plans_manager,
                              dataset_json: dict, plans_name: str, num_processes: int, overwrite: bool,
                              verbose: bool) -> Dict[str, object]:
    """Preprocess the unlabeled cases for one configuration with its own preprocessor into its
    ``<data_identifier>_unlabeled/`` folder, skipping finished cases; returns that configuration's report entry."""
    cm = plans_manager.get_configuration(configuration)
    if cm.preprocessor_class is None:
        raise RuntimeError(f"Preprocessor class '{cm.preprocessor_name}' of configuration {configuration} was not "
                           f"found in nnunetv2.preprocessing.")
    preprocessor = cm.preprocessor_class(verbose=False)
    out_folder = unlabeled_folder(pre_folder, cm.data_identifier)
    os.makedirs(out_folder, exist_ok=True)
    plans_file = os.path.join(pre_folder, plans_name + ".json")
    todo, skipped, outdated = _sort_out_done_cases(cases, out_folder, plans_file, overwrite)
    if verbose:
        _announce_configuration(os.path.basename(pre_folder), configuration, plans_name, out_folder, cases,
                                len(todo), skipped, outdated)
    jobs = [(preprocessor, out, files, plans_manager, cm, dataset_json) for out, files in todo]
    done = _run_case_jobs(jobs, num_processes, f"Preprocessing unlabeled ({configuration})", verbose)
    return {"processed": sorted(done), "skipped": skipped, "folder": out_folder}


def preprocess_unlabeled(dataset_name_or_id, configurations: Optional[Sequence[str]] = None,
                         plans_name: str = "nnUNetPlans", num_processes: int = 4, overwrite: bool = False,
                         verbose: bool = True, check_inputs: bool = True) -> Dict[str, Dict[str, List[str]]]:
    """Preprocess ``imagesUnlabeled`` of a planned dataset for the given configurations.

    ``configurations=None`` means every configuration of the plans whose labeled data are preprocessed.
    Returns ``{configuration: {"processed": [...], "skipped": [...]}}``. Finished cases are skipped unless
    ``overwrite``; nothing else in the preprocessed folder is touched. ``check_inputs`` first reads every case
    to be done and refuses bad inputs before anything is written (:func:`_check_raw_inputs`; costs one extra read).
    """
    pre_folder = preprocessed_dataset_folder(dataset_name_or_id)
    plans_manager, dataset_json = load_plans_and_dataset_json(pre_folder, plans_name)
    raw_folder = os.path.join(env_folder("nnUNet_raw"), os.path.basename(pre_folder))
    if not os.path.isdir(raw_folder):
        raise FileNotFoundError(f"The raw dataset {raw_folder} does not exist; imagesUnlabeled is read from there.")
    cases = list_unlabeled_cases(raw_folder, dataset_json)
    configurations = _configurations_to_preprocess(pre_folder, plans_manager, plans_name, configurations)
    _refuse_name_clashes(cases, raw_folder, dataset_json)
    if check_inputs:
        _check_raw_inputs(pre_folder, raw_folder, plans_manager, dataset_json, configurations, cases,
                          os.path.join(pre_folder, plans_name + ".json"), overwrite, num_processes)
    return {c: _preprocess_configuration(c, cases, pre_folder, plans_manager, dataset_json, plans_name,
                                         num_processes, overwrite, verbose) for c in configurations}


# --------------------------------------------------------------------------------------------- unlabeled pool
class UnlabeledDataset:
    """Image-only view of preprocessed cases spread over several folders.

    ``cases`` maps identifier -> folder. Same ``load_case`` interface as nnU-Net's dataset classes, but it
    returns ``(data, None, None, properties)``: segmentation files are never opened and label-derived
    properties (``class_locations``) are removed. Plain attributes only, so it pickles for worker processes.
    """

    def __init__(self, cases: Dict[str, str]):
        self.cases = dict(cases)
        self.identifiers = sorted(self.cases)
        self._formats = {}
        for folder in sorted(set(self.cases.values())):
            self._formats[folder] = infer_dataset_class(folder).__name__

    def __len__(self):
        return len(self.identifiers)

    def __getitem__(self, identifier):
        return self.load_case(identifier)

    def load_data(self, identifier: str):
        folder = self.cases[identifier]
        if self._formats[folder] == "nnUNetDatasetBlosc2":
            blosc2.set_nthreads(1)
            kwargs = {} if os.name == "nt" else {"mmap_mode": "r"}
            return blosc2.open(urlpath=os.path.join(folder, identifier + ".b2nd"), mode="r",
                               dparams={"nthreads": 1}, **kwargs)
        npy = os.path.join(folder, identifier + ".npy")
        if os.path.isfile(npy):
            return np.load(npy, mmap_mode="r")
        with np.load(os.path.join(folder, identifier + ".npz")) as z:  # npz members load lazily: 'seg' is not read
            return z["data"]

    def load_properties(self, identifier: str) -> dict:
        props = load_pickle(os.path.join(self.cases[identifier], identifier + ".pkl"))
        for k in LABEL_DERIVED_PROPERTIES:
            props.pop(k, None)
        return props

    def load_case(self, identifier: str):
        return self.load_data(identifier), None, None, self.load_properties(identifier)


def find_unlabeled_cases(preprocessed_folder: str, data_identifier: str, fold, include_validation: bool = False,
                         check_raw: bool = True) -> Dict[str, str]:
    """The unlabeled pool of ``fold``: ``{identifier: folder}`` (module docstring).

    Budget-unlabeled training cases come from ``label_budget.json`` (if a budget was set) and are read from the
    configuration folder; preprocessed ``imagesUnlabeled`` cases from ``<data_identifier>_unlabeled/``.
    ``include_validation`` adds the fold's validation cases (transductive use; off by default).
    """
    config_folder = os.path.join(preprocessed_folder, data_identifier)
    pool = {}
    budget = load_budget(preprocessed_folder)
    if budget is not None:
        for case in budget_unlabeled_cases(budget, preprocessed_folder, fold, include_validation):
            pool[case] = config_folder
    elif include_validation and fold != "all":
        splits_file = os.path.join(preprocessed_folder, "splits_final.json")
        if os.path.isfile(splits_file):
            splits = load_json(splits_file)
            if int(fold) < len(splits):
                for case in splits[int(fold)]["val"]:
                    pool[case] = config_folder
    u_folder = unlabeled_folder(preprocessed_folder, data_identifier)
    extra = identifiers_in(u_folder)
    clashes = sorted(set(extra) & set(pool))
    if clashes:
        raise ValueError(f"Case(s) {clashes[:10]} exist both as preprocessed imagesUnlabeled cases in {u_folder} and "
                         f"as training cases; rename the files in imagesUnlabeled and re-run "
                         f"nnUNetv2_advmim_preprocess_unlabeled.")
    for case in extra:
        pool[case] = u_folder
    if check_raw:
        _warn_unpreprocessed(preprocessed_folder, u_folder, extra)
    return pool


def _warn_unpreprocessed(preprocessed_folder: str, u_folder: str, done: Sequence[str]) -> None:
    raw_root = os.environ.get("nnUNet_raw")
    if not raw_root:
        return
    raw_dir = os.path.join(raw_root, os.path.basename(preprocessed_folder), RAW_UNLABELED_FOLDER)
    if not os.path.isdir(raw_dir):
        return
    stems = {re.sub(r"_\d{4}$", "", f.split(".")[0]) for f in os.listdir(raw_dir) if not f.startswith(".")}
    missing = sorted(stems - set(done))
    if missing:
        print(f"WARNING: {len(missing)} case(s) of {raw_dir} are not preprocessed into {u_folder} (e.g. {missing[:3]}) "
              f"and are left out of the unlabeled pool. Run `nnUNetv2_advmim_preprocess_unlabeled -d "
              f"{os.path.basename(preprocessed_folder)} -c CONFIG` to add them.", file=sys.stderr)


def require_unlabeled_pool(pool: Dict[str, str], preprocessed_folder: str, data_identifier: str, fold,
                           configuration: Optional[str] = None) -> None:
    """Raise the clear error a semi-supervised trainer gives when its fold has no unlabeled case, naming the
    command to run: preprocessing if ``imagesUnlabeled`` holds images, else where to put them or a label budget."""
    if pool:
        return
    name = os.path.basename(preprocessed_folder)
    c = f" -c {configuration}" if configuration else ""
    raw_root = os.environ.get("nnUNet_raw")
    raw_dir = os.path.join(raw_root, name, RAW_UNLABELED_FOLDER) if raw_root else None
    n_raw = len([f for f in os.listdir(raw_dir) if not f.startswith(".")]) if raw_dir and os.path.isdir(raw_dir) else 0
    if n_raw:
        raise RuntimeError(
            f"The unlabeled pool of fold {fold} is empty for {name} ({data_identifier}): {raw_dir} holds {n_raw} "
            f"file(s) but {unlabeled_folder(preprocessed_folder, data_identifier)} has no preprocessed case. Run "
            f"`nnUNetv2_advmim_preprocess_unlabeled -d {name}{c}` first (or keep only N cases labeled with "
            f"`nnUNetv2_advmim_label_budget -d {name} -n N`).")
    raise RuntimeError(
        f"The unlabeled pool of fold {fold} is empty for {name} ({data_identifier}): semi-supervised training "
        f"needs unlabeled images. Either put images into $nnUNet_raw/{name}/{RAW_UNLABELED_FOLDER}/ and run "
        f"`nnUNetv2_advmim_preprocess_unlabeled -d {name}{c}`, or keep only N cases labeled with "
        f"`nnUNetv2_advmim_label_budget -d {name} -n N`.")


# ------------------------------------------------------------------------------------------------------- CLI
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_preprocess_unlabeled",
        description="Preprocess imagesUnlabeled/ of a planned raw dataset with the dataset's own plans and "
                    "preprocessor (same transpose, cropping, resampling, normalization) into "
                    "<data_identifier>_unlabeled/ next to the labeled data. Finished cases are skipped.")
    parser.add_argument("-d", required=True, help="dataset ID or DatasetXXX_Name")
    parser.add_argument("-c", nargs="+", default=None,
                        help="configurations (default: every configuration whose labeled data are preprocessed)")
    parser.add_argument("-p", dest="plans_name", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-np", type=int, default=4, help="number of worker processes (default 4)")
    parser.add_argument("--overwrite", action="store_true", help="redo cases that are already preprocessed")
    parser.add_argument("--verbose", action="store_true", help="print more")
    parser.add_argument("--skip-input-checks", action="store_true",
                        help="do not read every image once before preprocessing to refuse truncated/unreadable files, "
                             "2D/3D or channel mismatches and NaN/inf voxels (only for images you checked already)")
    args = parser.parse_args(argv)
    try:
        report = preprocess_unlabeled(args.d, args.c, args.plans_name, args.np, args.overwrite,
                                      check_inputs=not args.skip_input_checks)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(1)
    for c, r in report.items():
        print(f"{c}: {len(r['processed'])} preprocessed, {len(r['skipped'])} skipped -> {r['folder']}")


if __name__ == "__main__":
    main()
