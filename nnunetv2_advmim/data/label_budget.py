"""Label budget: keep only N training cases labeled, reproducibly.

Protocol:

1. The pool is every training case of the planned dataset (the identifiers nnU-Net preprocessed).
2. N labeled cases are drawn from the pool with ``numpy.random.default_rng(seed)`` (or given explicitly).
3. The remaining cases are split into K folds with nnU-Net's own seeded K-fold (``generate_crossval_split``,
   seed 12345): fold k validates on its K-th part, and the rest of the remaining cases are fold k's
   *unlabeled* training cases. The labeled set is the same N cases in every fold, so validation cases are
   never labeled training data and never in the unlabeled pool.
4. ``splits_final.json`` gets ``train`` = the N labeled cases and ``val`` = fold k's validation cases, so the
   stock ``nnUNetTrainer`` (any fold except ``all``, which ignores the split file) is the supervised baseline
   on the same labels. ``label_budget.json`` next to it records the labeled cases and each fold's unlabeled
   and validation cases; semi-supervised trainers read their unlabeled pool from it.

A named protocol (``--protocol acdc-3``, :mod:`nnunetv2_advmim.data.acdc_split`) replaces steps 2-3 with a
published split: its labeled patients' cases, one fold whose validation and unlabeled cases are the split's.

Existing files are kept as ``<name>.bak-<timestamp>`` (hard link or copy) before new ones are written atomically
(``runtime.atomic``): a crash at any point leaves the old or the new file in place, never none. An identical
file is left untouched. A ``label_budget.json`` without its ``splits_final.json`` is an error wherever the budget is
read (training start included): stock nnU-Net would draw a fresh split over every case, labels included.
"""
import argparse
import json
import os
import sys
from typing import List, Optional, Sequence

import numpy as np
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunetv2_advmim.data.acdc_split import PROTOCOLS, protocol_budget, split_of_dataset
from nnunetv2_advmim.data.paths import identifiers_in, load_plans_and_dataset_json, preprocessed_dataset_folder
from nnunetv2_advmim.cli import DefaultsHelpFormatter
from nnunetv2_advmim.runtime.atomic import keep_backup, write_json_atomic

BUDGET_FILE = "label_budget.json"
SPLITS_FILE = "splits_final.json"
CROSSVAL_SEED = 12345  # nnU-Net's seed for its automatic 5-fold split


def training_cases(preprocessed_folder: str, plans_name: str = "nnUNetPlans") -> List[str]:
    """Training case identifiers of a planned + preprocessed dataset (all preprocessed configurations agree)."""
    plans_manager, _ = load_plans_and_dataset_json(preprocessed_folder, plans_name)
    found = {}
    for c in plans_manager.available_configurations:
        ident = plans_manager.get_configuration(c).data_identifier
        ids = identifiers_in(os.path.join(preprocessed_folder, ident))
        if ids:
            found[ident] = ids
    if not found:
        raise FileNotFoundError(f"{preprocessed_folder} holds no preprocessed training cases for any configuration of "
                                f"{plans_name}. Run `nnUNetv2_plan_and_preprocess -d "
                                f"{os.path.basename(preprocessed_folder)}` first.")
    sets = {k: tuple(v) for k, v in found.items()}
    if len(set(sets.values())) > 1:
        sizes = {k: len(v) for k, v in sets.items()}
        raise RuntimeError(f"The preprocessed configuration folders of {preprocessed_folder} hold different cases "
                           f"({sizes}); re-run nnUNetv2_preprocess so they agree.")
    return sorted(next(iter(sets.values())))


def make_budget(cases: Sequence[str], n_labeled: Optional[int] = None, seed: int = 0,
                labeled_cases: Optional[Sequence[str]] = None, n_folds: int = 5) -> dict:
    """The budget (module docstring, steps 1-3) for a pool of case identifiers; pure function, no files."""
    pool = sorted(set(cases))
    if len(pool) != len(cases):
        raise ValueError("duplicate case identifiers in the pool")
    if n_folds < 2:
        raise ValueError(f"--folds must be at least 2 (got {n_folds}): every fold needs validation cases")
    max_n = len(pool) - n_folds
    if labeled_cases is not None:
        labeled = sorted(set(labeled_cases))
        unknown = [c for c in labeled if c not in pool]
        if unknown:
            raise ValueError(f"labeled case(s) {unknown[:10]} are not training cases of this dataset "
                             f"(known: {pool[:5]}...); fix the --cases list")
        if n_labeled is not None and n_labeled != len(labeled):
            raise ValueError(f"-n {n_labeled} disagrees with the {len(labeled)} cases given with --cases")
        n_labeled = len(labeled)
    if n_labeled is None:
        raise ValueError("give the number of labeled cases (-n N) or the cases themselves (--cases)")
    if not 1 <= n_labeled <= max_n:
        raise ValueError(f"N={n_labeled} labeled cases is out of range: the dataset has {len(pool)} training cases and "
                         f"{n_folds} folds need at least {n_folds} validation cases, so N must be in 1..{max_n}. "
                         f"Choose a smaller N or fewer folds (--folds).")
    if labeled_cases is None:
        rng = np.random.default_rng(seed)
        labeled = sorted(pool[i] for i in rng.choice(len(pool), n_labeled, replace=False))
    rest = [c for c in pool if c not in set(labeled)]
    folds = [{"val": sorted(s["val"]), "unlabeled": sorted(s["train"])}
             for s in generate_crossval_split(rest, seed=CROSSVAL_SEED, n_splits=n_folds)]
    return {"n_labeled": n_labeled, "seed": None if labeled_cases is not None else seed,
            "cases_given": labeled_cases is not None, "n_folds": n_folds, "labeled": labeled, "folds": folds}


def budget_to_splits(budget: dict) -> List[dict]:
    """nnU-Net's ``splits_final.json`` content: training lists hold only the labeled cases."""
    return [{"train": list(budget["labeled"]), "val": list(f["val"])} for f in budget["folds"]]


def write_json_with_backup(path: str, content) -> Optional[str]:
    """Write ``content`` atomically; an existing different file is kept as ``<path>.bak-<timestamp>`` first (hard
    link or copy: the live file is never moved away, so a crash in between still leaves it in place).
    Returns the backup path (None if there was nothing to back up or the file was identical)."""
    backup = None
    if os.path.isfile(path):
        with open(path) as f:
            try:
                old = json.load(f)
            except json.JSONDecodeError:
                old = None
        if old == content:
            return None
        backup = keep_backup(path)
    write_json_atomic(path, content)
    return backup


def write_budget(preprocessed_folder: str, budget: dict) -> dict:
    """Write ``splits_final.json`` and ``label_budget.json``; returns the backup paths made."""
    backups = {}
    for name, content in ((SPLITS_FILE, budget_to_splits(budget)), (BUDGET_FILE, budget)):
        b = write_json_with_backup(os.path.join(preprocessed_folder, name), content)
        if b:
            backups[name] = b
    return backups


def _rerun_hint(preprocessed_folder: str) -> str:
    return (f"Re-run `nnUNetv2_advmim_label_budget -d {os.path.basename(os.path.normpath(preprocessed_folder))} ...` "
            f"with the same settings to write both files again")


def read_budget_json(path: str, preprocessed_folder: str):
    """``json.load`` of a budget or split file; a corrupt file is a ``RuntimeError`` naming it and the fix."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RuntimeError(f"{path} is corrupt ({type(e).__name__}: {e}). {_rerun_hint(preprocessed_folder)}, or "
                           f"restore it from its newest {os.path.basename(path)}.bak-* copy.") from None


def load_budget(preprocessed_folder: str) -> Optional[dict]:
    path = os.path.join(preprocessed_folder, BUDGET_FILE)
    if not os.path.isfile(path):
        return None
    budget = read_budget_json(path, preprocessed_folder)
    if not isinstance(budget, dict) or not isinstance(budget.get("labeled"), list) \
            or not isinstance(budget.get("folds"), list):
        raise RuntimeError(f"{path} is not a label budget (no 'labeled' / 'folds' lists). "
                           f"{_rerun_hint(preprocessed_folder)}.")
    return budget


def load_budget_splits(preprocessed_folder: str) -> list:
    """``splits_final.json`` of a folder that holds a budget: missing or corrupt is a ``RuntimeError`` naming the
    file and the fix (without it stock nnU-Net draws a fresh split over every case, labels included)."""
    path = os.path.join(preprocessed_folder, SPLITS_FILE)
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing, but {os.path.join(preprocessed_folder, BUDGET_FILE)} defines a "
                           f"label budget: without the split, nnU-Net would draw a new one over every training case "
                           f"and train on labels the budget hides. {_rerun_hint(preprocessed_folder)}, or restore "
                           f"{SPLITS_FILE} from its newest {SPLITS_FILE}.bak-* copy.")
    splits = read_budget_json(path, preprocessed_folder)
    if not isinstance(splits, list) or not all(isinstance(s, dict) and "train" in s and "val" in s for s in splits):
        raise RuntimeError(f"{path} is not an nnU-Net split file (a list of {{'train': [...], 'val': [...]}}). "
                           f"{_rerun_hint(preprocessed_folder)}.")
    return splits


def check_budget_splits(budget: dict, preprocessed_folder: str, fold: int) -> None:
    """Raise ``RuntimeError`` unless ``splits_final.json`` exists and holds the budget's labeled and validation cases
    for ``fold`` (an edited or replaced split file would silently turn unlabeled cases into labeled ones)."""
    splits = load_budget_splits(preprocessed_folder)
    splits_file = os.path.join(preprocessed_folder, SPLITS_FILE)
    if fold >= len(splits) or sorted(splits[fold]["train"]) != sorted(budget["labeled"]) \
            or sorted(splits[fold]["val"]) != sorted(budget["folds"][fold]["val"]):
        raise RuntimeError(f"{splits_file} no longer matches {BUDGET_FILE} for fold {fold} (was it edited or "
                           f"replaced after the label budget?). Re-run nnUNetv2_advmim_label_budget, or delete "
                           f"{BUDGET_FILE} to train without a budget.")


def budget_fold(budget: dict, preprocessed_folder: str, fold) -> int:
    """``fold`` as the index of one of the budget's folds; an error naming the file if the budget has no such fold."""
    fold = int(fold)
    if fold >= len(budget["folds"]):
        raise ValueError(f"fold {fold} does not exist in {os.path.join(preprocessed_folder, BUDGET_FILE)} "
                         f"({len(budget['folds'])} folds); use a fold in 0..{len(budget['folds']) - 1} or re-run "
                         f"nnUNetv2_advmim_label_budget with --folds.")
    return fold


def check_label_budget_at_start(preprocessed_folder: str, fold, trainer_name: str = "this trainer") -> None:
    """What a trainer of this package checks before training under a label budget: fold ``all`` is refused
    (:func:`refuse_fold_all_under_budget`) and, for a numbered fold, ``splits_final.json`` must exist and match
    the budget (:func:`check_budget_splits`). Nothing to check without ``label_budget.json``."""
    refuse_fold_all_under_budget(preprocessed_folder, fold, trainer_name)
    budget = load_budget(preprocessed_folder)
    if budget is None:
        return
    fold = budget_fold(budget, preprocessed_folder, fold)
    check_budget_splits(budget, preprocessed_folder, fold)


def refuse_fold_all_under_budget(preprocessed_folder: str, fold, trainer_name: str = "this trainer") -> None:
    """Raise ``RuntimeError`` if ``fold`` is ``all`` and ``preprocessed_folder`` holds ``label_budget.json``.

    Fold ``all`` ignores ``splits_final.json``: stock nnU-Net then trains on every training case, labels included
    for the cases the budget made unlabeled, and a semi-supervised trainer would use the budget's validation cases
    as unlabeled training data. Trainers of this package that train with labels call this before training."""
    if str(fold) != "all":
        return
    path = os.path.join(preprocessed_folder, BUDGET_FILE)
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            budget = json.load(f)
        n_labeled, n_folds = len(budget["labeled"]), len(budget["folds"])
        what = f"keeps {n_labeled} case(s) labeled in {n_folds} fold(s)"
        folds = f"0..{n_folds - 1}"
    except (OSError, ValueError, KeyError, TypeError):
        what, folds = "defines a label budget", "0, 1, ..."
    raise RuntimeError(
        f"{trainer_name} refuses fold 'all': {path} {what}, but fold 'all' ignores {SPLITS_FILE}, so training would "
        f"use the labels of every training case (and the budget's validation cases as training data). Train a fold "
        f"of the budget's split (fold {folds}), or remove {path} (and restore your own {SPLITS_FILE}) to train on "
        f"every labeled case.")


def budget_unlabeled_cases(budget: dict, preprocessed_folder: str, fold, include_validation: bool = False
                           ) -> List[str]:
    """Unlabeled training cases of ``fold`` under a budget (validation cases only if ``include_validation``).

    Checks that ``splits_final.json`` exists and still holds the budget's labeled cases for that fold
    (:func:`check_budget_splits`), so a split file lost, edited or replaced after the budget cannot silently turn
    unlabeled cases into labeled ones or the reverse.
    """
    if fold == "all":  # no validation: every non-labeled case is unlabeled training data
        return sorted({c for f in budget["folds"] for c in f["unlabeled"] + f["val"]})
    fold = budget_fold(budget, preprocessed_folder, fold)
    check_budget_splits(budget, preprocessed_folder, fold)
    cases = list(budget["folds"][fold]["unlabeled"])
    if include_validation:
        cases += budget["folds"][fold]["val"]
    return sorted(cases)


def budget_labeled_cases(preprocessed_folder: str) -> Optional[List[str]]:
    budget = load_budget(preprocessed_folder)
    return None if budget is None else list(budget["labeled"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_label_budget",
        description="Keep only N training cases labeled (seeded, explicit, or a published --protocol). Writes "
                    "splits_final.json whose training lists hold only the labeled cases (stock nnUNetTrainer = "
                    "supervised baseline on the same labels; do not use fold 'all', which ignores the split file) "
                    "and label_budget.json with "
                    "each fold's unlabeled cases. Validation cases are never labeled or unlabeled training data. "
                    "Existing files are backed up.")
    parser.add_argument("-d", required=True, help="dataset ID or DatasetXXX_Name (planned and preprocessed)")
    parser.add_argument("-n", type=int, default=None, help="number of labeled cases")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, default=None, help="seed for drawing the labeled cases (default 0)")
    g.add_argument("--cases", default=None, help="comma-separated labeled case identifiers instead of a draw")
    g.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                   help="a published protocol instead of -n: acdc-3 / acdc-7 label every frame of the papers' first "
                        "3 / 7 training patients of ACDC (converted with nnUNetv2_advmim_convert_acdc), the other "
                        "training patients are unlabeled, fold 0 validates on the split's validation patients; "
                        "acdc-all labels every training patient")
    parser.add_argument("--folds", type=int, default=None, help="cross-validation folds over the other cases "
                                                                "(default 5; a --protocol has its own single fold)")
    parser.add_argument("-p", dest="plans_name", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    args = parser.parse_args(argv)
    if args.protocol and (args.n is not None or args.folds is not None):
        parser.error("--protocol fixes the labeled cases and the fold: leave out -n and --folds")
    seed = 0 if args.seed is None else args.seed
    given = None
    try:
        folder = preprocessed_dataset_folder(args.d)
        cases = training_cases(folder, args.plans_name)
        if args.protocol:
            _, dataset_json = load_plans_and_dataset_json(folder, args.plans_name)
            budget = protocol_budget(cases, args.protocol, split_of_dataset(dataset_json))
        else:
            given = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
            budget = make_budget(cases, args.n, seed, given, 5 if args.folds is None else args.folds)
        backups = write_budget(folder, budget)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(1)
    for name, b in backups.items():
        print(f"Backed up the previous {name} to {b}")
    how = (f"protocol {args.protocol}: patients {', '.join(budget['labeled_patients'])}" if args.protocol
           else "given" if given else f"seed {seed}")
    print(f"{os.path.basename(folder)}: {budget['n_labeled']} of {len(cases)} training cases labeled "
          f"({how}): {', '.join(budget['labeled'])}")
    for k, f in enumerate(budget["folds"]):
        print(f"  fold {k}: {len(budget['labeled'])} labeled, {len(f['unlabeled'])} unlabeled, {len(f['val'])} val")
    print(f"Wrote {os.path.join(folder, SPLITS_FILE)} and {os.path.join(folder, BUDGET_FILE)}")


if __name__ == "__main__":
    main()
