"""The study's protocol as pure functions (``nnunetv2_advmim.commands.study``): arms and labeled counts, the
validation split, the nested draws of labeled cases, the keys of splits and runs, and file names of arms.

A count is a number of labeled cases drawn from the pool, ``all``, or a published protocol (``acdc-3``, ``acdc-7``,
``acdc-all``: :mod:`nnunetv2_advmim.data.acdc_split`), which fixes the labeled cases, the validation cases and the
pool, so a study of protocols has one draw per count and the protocol's split instead of a drawn one."""
import math
from typing import Dict, List, Sequence

import numpy as np

from nnunetv2_advmim.data.acdc_split import PROTOCOLS, protocol_budget, split_of_dataset
from nnunetv2_advmim.runtime.weights import ADVMIM_NETWORKS

PP_SUFFIX = "+pp"  # the arm of an arm's test predictions after nnU-Net's postprocessing


def parse_arm(spec: str, counts: Sequence) -> tuple:
    """``"Trainer"`` or ``"Trainer@4,8"`` -> (arm, counts it runs at). The arm ``Trainer:network`` (``hybrid``,
    ``cnn`` or ``ensemble``) predicts with that network of an AdvMIM-family trainer's training, which it shares with
    the arm ``Trainer`` (one training, several predictions)."""
    trainer, _, at = spec.partition("@")
    if not trainer or trainer.startswith(":"):
        raise ValueError(f"empty trainer name in {spec!r}")
    base, _, network = trainer.partition(":")
    if network and network not in ADVMIM_NETWORKS:
        raise ValueError(f"{spec!r}: the network after ':' must be one of {ADVMIM_NETWORKS}")
    if not at:
        return trainer, list(counts)
    wanted = [parse_count(c) for c in at.split(",") if c]
    unknown = [c for c in wanted if c not in counts]
    if unknown:
        raise ValueError(f"{spec!r} asks for count(s) {unknown} that are not among -n {list(counts)}")
    return trainer, wanted


def parse_count(text) -> object:
    if str(text) == "all" or str(text) in PROTOCOLS:
        return str(text)
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"labeled count {text!r}: give a number, 'all' or a published protocol "
                         f"({', '.join(sorted(PROTOCOLS))})") from None
    if n < 1:
        raise ValueError(f"labeled counts must be at least 1 or 'all', got {text}")
    return n


def is_protocol(n) -> bool:
    return isinstance(n, str) and n in PROTOCOLS


def is_every_case(n) -> bool:
    """``all``, or a protocol that labels every training case (``acdc-all``): the reference, not a point of a curve."""
    return n == "all" or (is_protocol(n) and PROTOCOLS[n] is None)


def single_draw(n) -> bool:
    """Counts whose labeled cases are fixed (``all``, a protocol): one draw, however many ``--draws``."""
    return n == "all" or is_protocol(n)


def count_sort_key(n) -> float:
    """Order of counts in reports: numbers, protocols by their labeled patients, every case last."""
    n = str(n)
    if is_every_case(n):
        return math.inf
    return float(PROTOCOLS[n]) if n in PROTOCOLS else float(int(n))


def protocol_split(cases: Sequence[str], protocols: Sequence[str], dataset_json: dict) -> tuple:
    """(validation cases, pool, {protocol: labeled cases}) of a study of published protocols: every protocol's label
    budget (``acdc_split.protocol_budget``, which refuses a dataset that is not a converted ACDC) over the split the
    converter recorded in ``dataset.json``. The pool is the split's training cases, labeled and unlabeled alike."""
    split = split_of_dataset(dataset_json)
    val, pool, labeled = [], [], {}
    for protocol in protocols:
        budget = protocol_budget(cases, protocol, split)
        fold = budget["folds"][0]
        labeled[protocol] = list(budget["labeled"])
        val, pool = list(fold["val"]), sorted(set(budget["labeled"]) | set(fold["unlabeled"]))
    return val, pool, labeled


def split_validation(cases: Sequence[str], n_val: int, seed: int) -> tuple:
    """(validation cases, pool): ``n_val`` cases drawn once with ``seed``; the rest is the labeled pool."""
    cases = sorted(cases)
    if not 1 <= n_val <= len(cases) - 1:
        raise ValueError(f"--n-val {n_val} is out of range for {len(cases)} training cases (1..{len(cases) - 1})")
    order = np.random.default_rng([seed, 1]).permutation(len(cases))
    val = sorted(cases[i] for i in order[:n_val])
    return val, sorted(set(cases) - set(val))


def draw_order(pool: Sequence[str], draw: int, seed: int) -> List[str]:
    """Draw ``draw``'s permutation of the pool; count n labels its first n cases (nested across counts)."""
    pool = sorted(pool)
    return [pool[i] for i in np.random.default_rng([seed, 2, draw]).permutation(len(pool))]


def labeled_cases(pool: Sequence[str], n, draw: int, seed: int) -> List[str]:
    if n == "all":
        return sorted(pool)
    if n > len(pool):
        raise ValueError(f"{n} labeled cases asked for, but the pool holds only {len(pool)} (the training cases "
                         f"minus the validation cases); lower -n or --n-val")
    return sorted(draw_order(pool, draw, seed)[:n])


def study_budget(labeled: Sequence[str], pool: Sequence[str], val: Sequence[str]) -> dict:
    """A one-fold label budget in the format of ``nnUNetv2_advmim_label_budget``."""
    return {"n_labeled": len(labeled), "seed": None, "cases_given": True, "n_folds": 1, "labeled": sorted(labeled),
            "folds": [{"val": sorted(val), "unlabeled": sorted(set(pool) - set(labeled))}]}


def split_key(n, draw: int) -> str:
    return f"n{n}_d{draw}"


def run_key(n, draw: int, run: int = 0) -> str:
    """The key of one training run of a (count, draw): the split's key, with ``_r<run>`` for every run but the first."""
    return split_key(n, draw) + (f"_r{run}" if run else "")


def parse_runs(specs: Sequence[str], arms: Sequence[str]) -> Dict[str, int]:
    """``--runs``: ``["3"]`` -> every arm 3 runs; ``["nnUNetTrainer=4"]`` -> that arm 4, the others 1 (later entries
    win)."""
    runs = {arm: 1 for arm in arms}
    for spec in specs:
        name, sep, value = str(spec).rpartition("=")
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"--runs {spec!r}: the number of runs must be an integer of at least 1 (e.g. --runs 2 or "
                             f"--runs nnUNetTrainer=4)")
        if not sep:
            runs = {arm: count for arm in arms}
        elif name in runs:
            runs[name] = count
        else:
            raise ValueError(f"--runs {spec!r}: {name!r} is not an arm of this study ({', '.join(arms)})")
    return runs


def arm_parts(arm: str) -> tuple:
    """``"Trainer:cnn"`` -> ("Trainer", "cnn"); ``"Trainer"`` -> ("Trainer", None)."""
    base, _, network = arm.partition(":")
    return base, network or None


def arm_file_id(arm: str) -> str:
    """The arm's name in file and folder names (no ':', which some file systems refuse)."""
    base, network = arm_parts(arm)
    return base if network is None else f"{base}_as_{network}"
