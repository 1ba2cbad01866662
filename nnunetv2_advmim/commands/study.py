"""``nnUNetv2_advmim_study``: does semi-supervised training help on my data, and how many labels do I need?

A study trains every *arm* (a trainer, or a pretraining + fine-tuning pair) at every labeled count ``n`` and
every *draw* of the labeled cases, predicts ``imagesTs`` with the stock ``nnUNetv2_predict`` and evaluates it
against ``labelsTs``. The protocol:

- **Validation cases** are drawn once per study (``--n-val``, seeded) and are the same for every arm, count and
  draw. They are never labeled or unlabeled training data.
- **Labeled cases** come from the remaining *pool*. Draw ``k`` is one seeded permutation of the pool; count ``n``
  takes its first ``n`` cases, so within a draw the labeled sets are nested (the 2 cases are among the 4, the 4
  among the 8). ``all`` labels the whole pool (the fully supervised ceiling). Cases of the pool that are not
  labeled are the unlabeled pool, together with the dataset's preprocessed ``imagesUnlabeled``.
- **Splits**: each (count, draw) gets a study-owned preprocessed dataset folder,
  ``<study>/preprocessed/n<n>_d<k>/<Dataset>/``, whose entries are symbolic links to the planned dataset (plans,
  preprocessed data) plus its own ``splits_final.json`` (fold 0) and ``label_budget.json``. Training runs with
  ``nnUNet_preprocessed`` pointing there, so the user's ``splits_final.json`` is never read or written.
- **Schedule**: every arm runs ``--epochs`` x ``--iterations`` training iterations (study-written trainer variants
  ``<Trainer>_study<E>x<I>``). With ``--match-time REF`` every other trainer instead gets as many epochs as fit
  into REF's training time, measured by a short calibration run of each trainer; the output says so.
- **Results** land in ``<study>/results/n<n>_d<k>/<arm>/`` (an nnU-Net results root per arm), predictions in
  ``<study>/predictions``, command output in ``<study>/logs``. A finished arm is recorded in
  ``<study>/arms/<id>.json`` and never trained again: killing the study and starting it again continues (an
  unfinished training resumes with ``--c``). A failed arm is reported with its log and the others go on.
- **Runs** (``--runs``): training is not deterministic, and on small data two trainings of the same arm on the same
  labeled cases can differ by several Dice points (a small label found or missed). ``--runs ARM=R`` trains ARM R
  times per (count, draw) (``--runs R``: every arm); its value for a draw is the mean over its runs, and spreads and
  paired differences are taken over draws of those means. A cheap baseline with several runs makes every "vs" less
  noisy. Run ``r > 0`` is kept under ``<key>_r<r>`` (results, predictions, records, logs).
- **Postprocessing** (``--postprocess``): nnU-Net's own postprocessing (keep the largest foreground component,
  overall and per label, only where it raises Dice) is determined per arm and draw with
  ``nnUNetv2_determine_postprocessing`` on that arm's predictions of the validation cases and applied to its test
  predictions with ``nnUNetv2_apply_postprocessing``; the result is the arm ``<arm>+pp`` (no extra training).
- **One study process per folder**: the study holds an exclusive lock on ``<study>/study.lock`` for its whole
  life (the file names its host and process id); a second study on the same folder is refused while it is held
  (it would rewrite the study's trainer variants). SIGTERM/SIGINT stop the running ``nnUNetv2_train`` child with
  the study; an arm is done only when its ``checkpoint_final.pth`` loads (a file that does not is moved aside and
  the arm trained again).
- **Outputs**: ``study.md`` and ``study.csv`` (per arm and count: Dice/HD95/NSD per label, mean and spread over
  draws, iterations, training time, run-to-run spread with ``--runs``, the paired difference to the first arm with
  its standard error), ``study_runs.csv`` (one row per run) and ``study.png`` (mean foreground Dice versus labeled
  cases, one line per arm with the spread over draws, ``all`` as reference lines).
- **Planning** (``--plan-se TARGET``): no training; from the runs of a study folder (or a run-to-run and a
  between-draw spread given on the command line), the cheapest number of draws and runs per draw whose paired
  standard error reaches TARGET (:mod:`nnunetv2_advmim.commands.study_design`).
"""
import argparse
import contextlib
import copy
import csv
import importlib.util
import inspect
import io
import json
import math
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import matplotlib
import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

matplotlib.use("agg")  # figures go to files; no display is needed
import matplotlib.pyplot as plt  # noqa: E402

from nnunetv2_advmim.data.label_budget import (BUDGET_FILE, SPLITS_FILE, training_cases, write_budget,
                                                write_json_atomic)
from nnunetv2_advmim.commands.study_design import ADVMIM_COST_RATIO, between_draw_sd, cheapest_design
from nnunetv2_advmim.data.paths import load_plans_and_dataset_json, preprocessed_dataset_folder
from nnunetv2_advmim.evaluation.evaluate import evaluate_folders
from nnunetv2_advmim.runtime.checkpoint_files import usable_checkpoint
from nnunetv2_advmim.runtime.checkpointing import atomic_save, safe_load
from nnunetv2_advmim.runtime.child_process import run_child
from nnunetv2_advmim.runtime.locking import hold_lock
from nnunetv2_advmim.runtime.weights import ADVMIM_NETWORKS, advmim_network_weights

STUDY_FILE = "study.json"
LOCK_FILE = "study.lock"
PP_SUFFIX = "+pp"  # the arm of an arm's test predictions after nnU-Net's postprocessing
VARIANTS_MODULE = "study_trainers"
OUTPUTS = ("study.md", "study.csv", "study_runs.csv", "study.png")
METRIC_NAMES = ("Dice", "HD95", "NSD")
# settings that fix what an arm's result means; a study folder refuses to continue with other values
FIXED_SETTINGS = ("dataset", "configuration", "plans", "epochs", "iterations", "val_iterations", "seed", "n_val",
                  "match_time", "finetuners", "pretrain_epochs")


# ------------------------------------------------------------------------------------------- protocol (pure)
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
    if str(text) == "all":
        return "all"
    n = int(text)
    if n < 1:
        raise ValueError(f"labeled counts must be at least 1 or 'all', got {text}")
    return n


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


def variant_name(trainer: str, epochs: int, iterations: int) -> str:
    return f"{trainer}_study{epochs}x{iterations}"


def arm_parts(arm: str) -> tuple:
    """``"Trainer:cnn"`` -> ("Trainer", "cnn"); ``"Trainer"`` -> ("Trainer", None)."""
    base, _, network = arm.partition(":")
    return base, network or None


def arm_file_id(arm: str) -> str:
    """The arm's name in file and folder names (no ':', which some file systems refuse)."""
    base, network = arm_parts(arm)
    return base if network is None else f"{base}_as_{network}"


# ----------------------------------------------------------------------------------------- trainer variants
def _import_lines(cls, alias: str) -> str:
    """Source that binds ``alias`` to ``cls`` in a fresh process (package import where possible, else by file)."""
    module = cls.__module__
    path = os.path.abspath(_source_file(cls))
    if module.split(".")[0] in ("nnunetv2", "nnunetv2_advmim") and importlib.util.find_spec(module) is not None:
        return f"from {module} import {cls.__name__} as {alias}\n"
    ours = importlib.util.find_spec("nnunetv2_advmim.trainers").submodule_search_locations
    if os.path.dirname(path) in [os.path.abspath(p) for p in ours]:
        stem = os.path.splitext(os.path.basename(path))[0]
        return f"from nnunetv2_advmim.trainers.{stem} import {cls.__name__} as {alias}\n"
    # a user's trainer from an nnUNet_extTrainer folder: load its file under a private module name
    mod = f"_study_base_{alias}"
    return (f"_spec = importlib.util.spec_from_file_location({mod!r}, {path!r})\n"
            f"_mod = importlib.util.module_from_spec(_spec)\nsys.modules[{mod!r}] = _mod\n"
            f"_spec.loader.exec_module(_mod)\n{alias} = _mod.{cls.__name__}\n")


def _source_file(cls) -> str:
    """The file that defines ``cls``; nnU-Net's lookup drops external trainer modules from ``sys.modules``, so
    ``inspect.getfile`` cannot be used for them: the file is read off the code of a method the class defines, or,
    for a class without methods of its own (an ablation arm that only sets attributes), found the way nnU-Net's
    lookup named its module: relative to an ``nnUNet_extTrainer`` folder."""
    for value in vars(cls).values():
        func = getattr(value, "__func__", value)
        code = getattr(func, "__code__", None)
        if code is not None:
            return code.co_filename
    parts = cls.__module__.split(".")
    for root in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep):
        if root.strip():
            for candidate in (os.path.join(root, *parts) + ".py", os.path.join(root, *parts, "__init__.py")):
                if os.path.isfile(candidate):
                    return candidate
    return inspect.getfile(cls)


def variants_source(variants: Sequence[tuple], threads: Optional[int] = None,
                    predicting: Sequence[tuple] = ()) -> str:
    """Source of a module with one schedule variant per ``(name, base class, epochs, iterations,
    val_iterations)``. A base with ``warmup_epochs`` keeps its warm-up fraction of the schedule (``None``, a share
    of ``num_epochs`` resolved later, is left alone). ``threads`` sets
    torch's CPU threads (``nnUNetv2_train -device cpu`` uses one per core). ``predicting``: ``(name, parent variant
    name, network)``: a subclass of a variant above that predicts with another AdvMIM network."""
    out = ['"""Trainer variants written by nnUNetv2_advmim_study: the study\'s schedule on each trainer."""\n',
           "import importlib.util\nimport sys\n\nimport torch\n\n"
           "from nnunetv2_advmim.runtime.safe_training import SafeCheckpoints\n"]
    for i, (name, cls, epochs, iterations, val_iterations) in enumerate(variants):
        alias = f"_Base{i}"
        out.append("\n" + _import_lines(cls, alias))
        # stock save_checkpoint is a plain torch.save: a kill while saving leaves a truncated checkpoint
        stock_save = getattr(cls, "save_checkpoint", None) is nnUNetTrainer.save_checkpoint
        bases = f"SafeCheckpoints, {alias}" if stock_save else alias
        out.append(
            f"\n\nclass {name}({bases}):\n"
            f"    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,\n"
            f"                 device: torch.device = torch.device('cuda')):\n"
            f"        super().__init__(plans, configuration, fold, dataset_json, device)\n"
            f"        if getattr(self, 'warmup_epochs', None) is not None:  # None: a share of num_epochs\n"
            f"            self.warmup_epochs = max(1, round(self.warmup_epochs * {epochs} / self.num_epochs))\n"
            f"        self.num_epochs = {epochs}\n"
            f"        self.num_iterations_per_epoch = {iterations}\n"
            f"        self.num_val_iterations_per_epoch = {val_iterations}\n"
            + (f"        torch.set_num_threads({int(threads)})\n" if threads else "") +
            "\n"
            "    def perform_actual_validation(self, save_probabilities: bool = False):\n"
            "        # the study evaluates on imagesTs; predicting the validation cases again would only cost time\n"
            "        self.print_to_log_file('Final validation skipped (study variant: the test set is evaluated)')\n")
    for name, parent, network in predicting:
        out.append(f"\n\nclass {name}({parent}):\n    predict_with = {network!r}\n")
    return "".join(out)


def find_trainer(name: str):
    """The trainer class nnUNetv2_train would use for ``name`` (nnU-Net's own lookup), quietly."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return recursive_find_trainer_class_by_name(name)
        except RuntimeError:
            raise ValueError(f"trainer {name!r} was not found by nnU-Net's lookup (nnunetv2 and the folders in "
                             f"nnUNet_extTrainer); check the name") from None


# ---------------------------------------------------------------------------------------------- the study
class Study:
    """One study folder (module docstring). ``run()`` trains what is missing and writes the outputs."""

    def __init__(self, dataset, configuration: str, counts: Sequence, trainers: Sequence[str], draws: int = 3,
                 plans: str = "nnUNetPlans", epochs: int = 50, iterations: int = 50, val_iterations: int = 5,
                 n_val: Optional[int] = None, seed: int = 0, pretrainers: Sequence[str] = (),
                 finetuners: Sequence[str] = ("nnUNetTrainer",), pretrain_epochs: Optional[int] = None,
                 match_time: Optional[str] = None, device: str = "cpu", output_folder: Optional[str] = None,
                 threads: Optional[int] = None, npp: Optional[int] = None, postprocess: bool = False,
                 runs: Sequence[str] = (), finetune_networks: Sequence[str] = (), log=print):
        self.counts = [parse_count(c) for c in counts]
        if not self.counts:
            raise ValueError("give at least one labeled count (-n)")
        if draws < 1:
            raise ValueError(f"--draws must be at least 1, got {draws}")
        if epochs < 1 or iterations < 1 or val_iterations < 1:
            raise ValueError("--epochs, --iterations and --val-iterations must be at least 1")
        self.arms = [parse_arm(t, self.counts) for t in trainers]
        self.pretrainers = list(pretrainers)
        self.finetuners = list(dict.fromkeys(finetuners))
        if self.pretrainers and not self.finetuners:
            raise ValueError("--pretrainer needs at least one --finetuner")
        self.finetune_networks = list(finetune_networks)
        if self.finetune_networks and not self.pretrainers:
            raise ValueError("--finetune-networks names networks of fine-tuned trainings: give --pretrainer too")
        if not self.arms and not self.pretrainers:
            raise ValueError("give at least one trainer (-tr) or pretrainer (--pretrainer)")
        self.preprocessed = preprocessed_dataset_folder(dataset)
        self.dataset_name = os.path.basename(self.preprocessed)
        self.configuration, self.plans = configuration, plans
        plans_manager, self.dataset_json = load_plans_and_dataset_json(self.preprocessed, plans)
        if configuration not in plans_manager.available_configurations:
            raise ValueError(f"configuration {configuration!r} is not in {plans}.json of {self.dataset_name} "
                             f"(available: {plans_manager.available_configurations})")
        raw_root = os.environ.get("nnUNet_raw")
        self.raw = os.path.join(raw_root, self.dataset_name) if raw_root else None
        for sub in ("imagesTs", "labelsTs"):
            if not self.raw or not os.path.isdir(os.path.join(self.raw, sub)):
                raise FileNotFoundError(f"{self.raw and os.path.join(self.raw, sub)} does not exist: a study "
                                        f"evaluates on the dataset's imagesTs/labelsTs (set nnUNet_raw and put the "
                                        f"test images and their labels there)")
        cases = training_cases(self.preprocessed, plans)
        n_val = max(2, round(0.2 * len(cases))) if n_val is None else n_val
        self.val, self.pool = split_validation(cases, n_val, seed)
        for n in self.counts:
            if n != "all":
                labeled_cases(self.pool, n, 0, seed)  # range check before any training
        self.draws, self.seed, self.device, self.log, self.threads = draws, seed, device, log, threads
        self.postprocess = postprocess
        # 0 = nnU-Net's sequential prediction: no worker start-up, the faster choice for small test sets on a CPU
        self.npp = (0 if device == "cpu" else 3) if npp is None else npp
        self.epochs, self.iterations, self.val_iterations = epochs, iterations, val_iterations
        self.pretrain_epochs = pretrain_epochs or epochs
        self.match_time = match_time
        if match_time and match_time not in [t for t, _ in self.arms]:
            raise ValueError(f"--match-time {match_time} must be one of the trainers (-tr)")
        results_root = os.environ.get("nnUNet_results")
        if output_folder is None:
            if not results_root:
                raise RuntimeError("nnUNet_results is not set; set it or pass -o STUDY_FOLDER")
            output_folder = default_study_folder(self.dataset_name, plans, configuration)
        self.folder = os.path.abspath(output_folder)
        self.settings = {"dataset": self.dataset_name, "configuration": configuration, "plans": plans,
                         "epochs": epochs, "iterations": iterations, "val_iterations": val_iterations, "seed": seed,
                         "n_val": n_val, "match_time": match_time, "finetuners": self.finetuners,
                         "pretrain_epochs": self.pretrain_epochs, "val_cases": self.val, "pool": self.pool}
        self._check_settings()
        self.classes = {}
        bases = list(dict.fromkeys(arm_parts(t)[0] for t, _ in self.arms))
        for trainer in bases + self.pretrainers + (self.finetuners if self.pretrainers else []):
            self.classes[trainer] = find_trainer(trainer)
        for arm, _ in self.arms:
            base, network = arm_parts(arm)
            if network and not hasattr(self.classes[base], "predict_with"):
                raise ValueError(f"-tr {arm}: {base} is not an AdvMIM-family trainer (no predict_with); "
                                 f"':{network}' needs a training that holds both networks")
        if self.finetune_networks and not any(self._holds_both(f) for f in self.finetuners):
            raise ValueError(f"--finetune-networks: no fine-tuner ({', '.join(self.finetuners)}) is an AdvMIM-family "
                             f"trainer (predict_with); only a training that holds both networks can be predicted with "
                             f"another network")
        self.runs = parse_runs(runs, [t for t, _ in self.arms] + [a for p in self.pretrainers
                                                                  for a in self._finetune_arms(p)])
        if match_time and arm_parts(match_time)[1]:
            raise ValueError(f"--match-time {match_time}: name the trainer without ':network'")
        self.epochs_of = {t: epochs for t in self.classes}  # replaced by calibration with --match-time
        self.epochs_of.update({p: self.pretrain_epochs for p in self.pretrainers})

    # ---------------------------------------------------------------- folders and settings
    def _check_settings(self):
        path = os.path.join(self.folder, STUDY_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                old = json.load(f)
            diff = [k for k in FIXED_SETTINGS + ("val_cases", "pool") if old.get(k) != self.settings.get(k)]
            if diff:
                raise ValueError(f"{self.folder} holds a study with other settings ({', '.join(diff)}: "
                                 f"{[old.get(k) for k in diff]} there); continue it with the same settings or "
                                 f"choose another study folder (-o)")
        os.makedirs(self.folder, exist_ok=True)
        write_json_atomic(path, self.settings)

    def _arm_names(self, n) -> List[str]:
        names = [t for t, at in self.arms if n in at]
        return names + [a for p in self.pretrainers for a in self._finetune_arms(p)]

    def _holds_both(self, trainer: str) -> bool:
        return hasattr(self.classes.get(trainer), "predict_with")

    def _finetune_arms(self, pretrainer: str) -> List[str]:
        """Per fine-tuner the arm ``FINETUNER_from_PRETRAINER`` and, for AdvMIM-family fine-tuners, its predictions
        with the ``--finetune-networks`` (the same training)."""
        arms = []
        for finetuner in self.finetuners:
            arm = f"{finetuner}_from_{pretrainer}"
            arms += [arm] + [f"{arm}:{network}" for network in self.finetune_networks
                             if self._holds_both(finetuner)]
        return arms

    def _variant(self, trainer: str) -> str:
        return variant_name(trainer, self.epochs_of[trainer], self.iterations)

    def _write_variants(self) -> str:
        folder = os.path.join(self.folder, "trainers")
        os.makedirs(folder, exist_ok=True)
        variants = [(self._variant(t), cls, self.epochs_of[t], self.iterations, self.val_iterations)
                    for t, cls in self.classes.items()]
        calib = [(variant_name(t, 2, self.iterations), cls, 2, self.iterations, 1)
                 for t, cls in self.classes.items() if self.match_time and t not in self.pretrainers]
        unique = {v[0]: v for v in variants + calib}
        networked = [arm for arm, _ in self.arms if arm_parts(arm)[1]] + \
            [a for p in self.pretrainers for a in self._finetune_arms(p)[1:]]
        predicting = list({self._predicting_variant(arm): (self._predicting_variant(arm),
                                                           self._variant(self._trainer_of(arm)[0]), arm_parts(arm)[1])
                           for arm in networked}.values())
        with open(os.path.join(folder, VARIANTS_MODULE + ".py"), "w") as f:
            f.write(variants_source(list(unique.values()), self.threads, predicting))
        return folder

    def _predicting_variant(self, arm: str) -> str:
        return f"{self._variant(self._trainer_of(arm)[0])}_{arm_parts(arm)[1]}"

    def _derive_model(self, results_root: str, arm: str) -> str:
        """A model folder for arm ``Trainer:network`` next to the training of ``Trainer``: its plans and dataset.json
        and a ``checkpoint_final.pth`` whose ``network_weights`` are that network's (taken from the AdvMIM
        checkpoint). Returns the variant name ``nnUNetv2_predict -tr`` needs."""
        network = arm_parts(arm)[1]
        name = self._predicting_variant(arm)
        source = self._model_folder(results_root, self._trainer_of(arm)[0])
        target = os.path.join(results_root, self.dataset_name, f"{name}__{self.plans}__{self.configuration}", "fold_0")
        os.makedirs(target, exist_ok=True)
        for f in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
            if os.path.isfile(os.path.join(source, "..", f)):
                shutil.copyfile(os.path.join(source, "..", f), os.path.join(target, "..", f))
        ckpt = safe_load(os.path.join(source, "checkpoint_final.pth"), map_location="cpu")
        derived = {k: ckpt[k] for k in ("init_args", "inference_allowed_mirroring_axes", "current_epoch") if k in ckpt}
        derived.update({"network_weights": advmim_network_weights(ckpt, network), "trainer_name": name})
        atomic_save(derived, os.path.join(target, "checkpoint_final.pth"))
        return name

    def _split_folder(self, key: str, labeled: Optional[Sequence[str]]) -> str:
        """The study-owned preprocessed root of one split (module docstring); ``labeled=None`` = pretraining."""
        root = os.path.join(self.folder, "preprocessed", key)
        target = os.path.join(root, self.dataset_name)
        os.makedirs(target, exist_ok=True)
        for entry in os.listdir(self.preprocessed):
            if entry in (SPLITS_FILE, BUDGET_FILE) or ".bak-" in entry:
                continue
            link = os.path.join(target, entry)
            if not os.path.lexists(link):
                os.symlink(os.path.join(self.preprocessed, entry), link)
        if labeled is None:  # pretraining: every pool image, no budget (labels are never read)
            write_json_atomic(os.path.join(target, SPLITS_FILE), [{"train": self.pool, "val": self.val}])
        else:
            write_budget(target, study_budget(labeled, self.pool, self.val))
        return root

    def _env(self, preprocessed_root: str, results_root: str) -> dict:
        env = dict(os.environ)
        env["nnUNet_preprocessed"] = preprocessed_root
        env["nnUNet_results"] = results_root
        ext = [os.path.join(self.folder, "trainers")] + [p for p in env.get("nnUNet_extTrainer", "").split(
            os.pathsep) if p]
        env["nnUNet_extTrainer"] = os.pathsep.join(ext)
        return env

    def _model_folder(self, results_root: str, trainer: str) -> str:
        return os.path.join(results_root, self.dataset_name,
                            f"{self._variant(trainer)}__{self.plans}__{self.configuration}", "fold_0")

    # ---------------------------------------------------------------- running
    def _train(self, trainer: str, env: dict, log_file: str, extra=()) -> float:
        """Train (or resume) one model with the stock command; returns the wall time of this call."""
        model = self._model_folder(env["nnUNet_results"], trainer)
        if usable_checkpoint(os.path.join(model, "checkpoint_final.pth"), self.log):  # done only if it loads
            return 0.0
        cmd = ["nnUNetv2_train", self.dataset_name, self.configuration, "0", "-tr", self._variant(trainer),
               "-p", self.plans, "-device", self.device]
        if usable_checkpoint(os.path.join(model, "checkpoint_latest.pth"), self.log):
            cmd.append("--c")  # an interrupted run continues where it stopped
        else:
            cmd += list(extra)
        return _run(cmd, env, log_file)

    def _pretrain(self, pretrainer: str) -> str:
        key = "pretrain"
        results = os.path.join(self.folder, "results", key, pretrainer)
        env = self._env(self._split_folder(key, None), results)
        log_file = os.path.join(self.folder, "logs", f"{key}__{pretrainer}.log")
        self.log(f"  pretraining {pretrainer} on every pool and imagesUnlabeled image (log: {log_file})")
        self._train(pretrainer, env, log_file)
        return os.path.join(self._model_folder(results, pretrainer), "checkpoint_final.pth")

    def _calibrate(self):
        """--match-time: seconds per epoch of every trainer from 2-epoch runs; epochs that fit REF's time."""
        path = os.path.join(self.folder, "calibration.json")
        calib = _read_json(path) or {}
        key = split_key(self.counts[0], 0)
        root = self._split_folder(key, labeled_cases(self.pool, self.counts[0], 0, self.seed))
        for trainer in [t for t, _ in self.arms]:
            if trainer in calib:
                continue
            results = os.path.join(self.folder, "calibration", trainer)
            env = self._env(root, results)
            log_file = os.path.join(self.folder, "logs", f"calibration__{trainer}.log")
            self.log(f"  calibrating {trainer} (2 epochs of {self.iterations} iterations; log: {log_file})")
            saved = self.epochs_of[trainer]
            self.epochs_of[trainer] = 2
            try:
                self._train(trainer, env, log_file)
                calib[trainer] = _epoch_seconds(self._model_folder(results, trainer))[-1]
            finally:
                self.epochs_of[trainer] = saved
            write_json_atomic(path, calib)
        ref = calib[self.match_time] * self.epochs
        for trainer, _ in self.arms:
            self.epochs_of[trainer] = max(1, int(round(ref / calib[trainer])))
        self.calibration = calib

    def _record_file(self, key: str, arm: str) -> str:
        return os.path.join(self.folder, "arms", f"{key}__{arm_file_id(arm)}.json")

    def _arm_setup(self, arm: str, n, draw: int, run: int = 0) -> tuple:
        """(labeled cases, results root, environment, log file) of one arm run; every run of a (count, draw) trains on
        the same split."""
        key = run_key(n, draw, run)
        labeled = labeled_cases(self.pool, n, draw, self.seed)
        results = os.path.join(self.folder, "results", key, arm_parts(arm)[0])  # Trainer:network shares Trainer's
        env = self._env(self._split_folder(split_key(n, draw), labeled), results)
        return labeled, results, env, self._log_file(key, arm)

    def _log_file(self, key: str, arm: str) -> str:
        return os.path.join(self.folder, "logs", f"{key}__{arm_file_id(arm)}.log")

    def _trainer_of(self, arm: str) -> tuple:
        """(trainer that trains the arm, its pretrainer or None)."""
        return next(((f, p) for p in self.pretrainers for f in self.finetuners
                     if arm_parts(arm)[0] == f"{f}_from_{p}"), (arm_parts(arm)[0], None))

    def _predictor(self, arm: str, results: str) -> str:
        """The ``-tr`` name ``nnUNetv2_predict`` uses for the arm (a derived model for ``Trainer:network``)."""
        return self._derive_model(results, arm) if arm_parts(arm)[1] else self._variant(self._trainer_of(arm)[0])

    def _predict(self, predictor: str, images: str, output: str, env: dict, log_file: str):
        if os.path.isdir(output):
            shutil.rmtree(output)  # derived from the checkpoint; predicted again
        _run(["nnUNetv2_predict", "-i", images, "-o", output, "-d", self.dataset_name, "-c", self.configuration,
              "-f", "0", "-tr", predictor, "-p", self.plans, "-device", self.device, "-npp", str(self.npp),
              "-nps", str(self.npp), "--disable_progress_bar"], env, log_file)

    def _arm(self, arm: str, n, draw: int, pretrained: Dict[str, str], run: int = 0) -> Optional[dict]:
        key = run_key(n, draw, run)
        record_file = self._record_file(key, arm)
        record = _read_json(record_file)
        if record is not None:
            return record
        labeled, results, env, log_file = self._arm_setup(arm, n, draw, run)
        trainer, pretrainer = self._trainer_of(arm)
        extra = ["-pretrained_weights", pretrained[pretrainer]] if pretrainer else []
        wall = self._train(trainer, env, log_file, extra)
        model = self._model_folder(results, trainer)
        pred = os.path.join(self.folder, "predictions", key, arm_file_id(arm))
        self._predict(self._predictor(arm, results), os.path.join(self.raw, "imagesTs"), pred, env, log_file)
        result = evaluate_folders(os.path.join(self.raw, "labelsTs"), pred, require_all=True)
        seconds = _epoch_seconds(model)
        record = {"arm": arm, "trainer": trainer, "predicts_with": arm_parts(arm)[1], "pretrainer": pretrainer,
                  "n": n, "draw": draw, "run": run, "n_labeled": len(labeled), "labeled": labeled,
                  "epochs": len(seconds), "iterations": len(seconds) * self.iterations, "train_s": float(sum(seconds)),
                  "wall_s": wall, "labels": {str(k): v for k, v in result["labels"].items()},
                  "mean": {str(k): v for k, v in result["mean"].items()},
                  "foreground_mean": result["foreground_mean"], "model": model, "predictions": pred}
        write_json_atomic(record_file, record)
        return record

    def _validation_folders(self) -> tuple:
        """(images, labels): links to the raw files of the study's validation cases, made once per study."""
        root = os.path.join(self.folder, "validation")
        images, labels = os.path.join(root, "imagesTr"), os.path.join(root, "labelsTr")
        ending = self.dataset_json["file_ending"]
        files = get_filenames_of_train_images_and_targets(self.raw, copy.deepcopy(self.dataset_json))
        for folder in (images, labels):
            os.makedirs(folder, exist_ok=True)
        for case in self.val:
            if case not in files:
                raise FileNotFoundError(f"validation case {case} has no image in {os.path.join(self.raw, 'imagesTr')}"
                                        f" (the raw dataset no longer matches its preprocessed data); restore it")
            links = [(os.path.join(images, f"{case}_{c:04d}{ending}"), f) for c, f in enumerate(files[case]["images"])]
            links.append((os.path.join(labels, case + ending), files[case]["label"]))
            for link, target in links:
                if not os.path.lexists(link):
                    os.symlink(os.path.abspath(target), link)
        return images, labels

    def _postprocessed(self, record: dict) -> dict:
        """The arm ``<arm>+pp``: nnU-Net's postprocessing, determined on the arm's predictions of the validation
        cases, applied to its test predictions (module docstring). Recorded like an arm; no training."""
        arm, n, draw, run = record["arm"], record["n"], record["draw"], record.get("run", 0)
        key = run_key(n, draw, run)
        record_file = self._record_file(key, arm + PP_SUFFIX)
        done = _read_json(record_file)
        if done is not None:
            return done
        _, results, env, log_file = self._arm_setup(arm, n, draw, run)
        images, labels = self._validation_folders()
        val_pred = os.path.join(self.folder, "predictions", key, arm_file_id(arm) + "_validation")
        self._predict(self._predictor(arm, results), images, val_pred, env, log_file)
        _run(["nnUNetv2_determine_postprocessing", "-i", val_pred, "-ref", labels, "-np", "1",
              "--remove_postprocessed"], env, log_file)
        pred = os.path.join(self.folder, "predictions", key, arm_file_id(arm) + PP_SUFFIX)
        if os.path.isdir(pred):
            shutil.rmtree(pred)
        _run(["nnUNetv2_apply_postprocessing", "-i", record["predictions"], "-o", pred, "-pp_pkl_file",
              os.path.join(val_pred, "postprocessing.pkl"), "-np", "1"], env, log_file)
        for f in ("dataset.json", "plans.json"):  # what nnUNetv2_predict leaves next to its predictions
            if os.path.isfile(os.path.join(record["predictions"], f)):
                shutil.copyfile(os.path.join(record["predictions"], f), os.path.join(pred, f))
        result = evaluate_folders(os.path.join(self.raw, "labelsTs"), pred, require_all=True)
        chosen = _read_json(os.path.join(val_pred, "postprocessing.json"))
        steps = [{"function": fn, **kw} for fn, kw in zip(chosen["postprocessing_fns"], chosen["postprocessing_kwargs"])]
        record = dict(record, arm=arm + PP_SUFFIX, postprocessing=steps, predictions=pred,
                      labels={str(k): v for k, v in result["labels"].items()},
                      mean={str(k): v for k, v in result["mean"].items()},
                      foreground_mean=result["foreground_mean"])
        write_json_atomic(record_file, record)
        return record

    def _reported(self, arm: str) -> List[str]:
        """The arm and, with postprocessing, its ``+pp`` twin."""
        return [arm, arm + PP_SUFFIX] if self.postprocess else [arm]

    def jobs(self) -> List[tuple]:
        return [(arm, n, d, r) for n in self.counts for d in range(1 if n == "all" else self.draws)
                for arm in self._arm_names(n) for r in range(self.runs[arm])]

    def run(self) -> dict:
        """Train, predict and evaluate every missing arm, then write the outputs; returns them."""
        with study_lock(self.folder):
            return self._run_locked()

    def _run_locked(self) -> dict:
        os.makedirs(os.path.join(self.folder, "logs"), exist_ok=True)
        self._write_variants()
        jobs = self.jobs()
        self.log(f"Study {self.folder}: {len(jobs)} arm run(s); {len(self.val)} validation cases, pool of "
                 f"{len(self.pool)}, {self.epochs} x {self.iterations} iterations"
                 + (f", wall time matched to {self.match_time}" if self.match_time else ""))
        if self.match_time:
            self._calibrate()
            self._write_variants()
            self.log("  epochs per trainer (matched wall time): "
                     + ", ".join(f"{t} {self.epochs_of[t]}" for t, _ in self.arms))
        pretrained = {p: self._pretrain(p) for p in self.pretrainers}
        failures, t_start, done_times = [], time.perf_counter(), []
        for i, (arm, n, draw, run) in enumerate(jobs, 1):
            t0 = time.perf_counter()
            eta = ""
            if done_times:
                eta = f", about {np.mean(done_times) * (len(jobs) - i + 1) / 60:.0f} min left"
            of_runs = f" run {run + 1}/{self.runs[arm]}" if self.runs[arm] > 1 else ""
            self.log(f"[{i}/{len(jobs)}] n={n} draw {draw} {arm}{of_runs} ({(t0 - t_start) / 60:.1f} min in{eta})")
            log_file = self._log_file(run_key(n, draw, run), arm)
            try:
                record = self._arm(arm, n, draw, pretrained, run)
            except (subprocess.CalledProcessError, FileNotFoundError, ValueError, RuntimeError) as e:
                failures.append({"arm": arm, "n": n, "draw": draw, "run": run, "log": log_file, "error": str(e)})
                self.log(f"  FAILED ({e}); log: {log_file}; the other arms go on")
                continue
            if time.perf_counter() - t0 > 1:
                done_times.append(time.perf_counter() - t0)
            self.log(f"  mean foreground Dice {record['foreground_mean']['Dice']:.3f} "
                     f"({record['iterations']} iterations, {record['train_s']:.0f} s training)")
            if not self.postprocess:
                continue
            try:
                pp = self._postprocessed(record)
            except (subprocess.CalledProcessError, FileNotFoundError, ValueError, RuntimeError) as e:
                failures.append({"arm": arm + PP_SUFFIX, "n": n, "draw": draw, "run": run, "log": log_file,
                                 "error": str(e)})
                self.log(f"  postprocessing FAILED ({e}); log: {log_file}")
                continue
            steps = ", ".join(f"{s['function']} {s['labels_or_regions']}" for s in pp["postprocessing"]) or "none"
            self.log(f"  {arm + PP_SUFFIX}: mean foreground Dice {pp['foreground_mean']['Dice']:.3f} "
                     f"(postprocessing chosen on the validation cases: {steps})")
        records = [r for r in (_read_json(self._record_file(run_key(n, d, run), name)) for a, n, d, run in jobs
                               for name in self._reported(a)) if r is not None]
        outputs = write_outputs(self, records, failures)
        self.log(f"Wrote {', '.join(outputs.values())}")
        return {"records": records, "failures": failures, "outputs": outputs}


def study_lock(folder: str):
    """Hold ``<folder>/study.lock`` (``runtime.locking``: a kernel lock, released however the study ends) while a
    study runs in ``folder``; refuse at once while another study holds it."""
    return hold_lock(os.path.join(folder, LOCK_FILE), "another nnUNetv2_advmim_study",
                     "Let it finish, or give this study another folder (-o).")


def _epoch_seconds(model_folder: str) -> List[float]:
    """Training seconds of each finished epoch, from nnU-Net's logger in the latest checkpoint."""
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth"):
        path = os.path.join(model_folder, name)
        if os.path.isfile(path):
            ckpt = safe_load(path)
            logging = ckpt["logging"]
            return [e - s for s, e in zip(logging["epoch_start_timestamps"], logging["epoch_end_timestamps"])]
    raise FileNotFoundError(f"no checkpoint in {model_folder}")


def _run(cmd: List[str], env: dict, log_file: str) -> float:
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    t0 = time.perf_counter()
    with open(log_file, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        returncode = run_child(cmd, env, log)  # stopped with the study (SIGTERM/SIGINT, or the study killed)
    if returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[:2])} ...` exited {returncode}")
    return time.perf_counter() - t0


def _read_json(path: str):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------------ outputs
def per_draw(records: Sequence[dict]) -> List[dict]:
    """Records of one arm at one count -> one record per draw, its metrics the mean over the draw's runs (``runs``:
    how many; metrics that are NaN in a run are left out of that mean)."""
    by_draw: Dict[int, List[dict]] = {}
    for r in records:
        by_draw.setdefault(r["draw"], []).append(r)
    merged = []
    for draw, rs in sorted(by_draw.items()):
        if len(rs) == 1:
            merged.append(dict(rs[0], runs=1))
            continue
        mean = {label: {m: _mean_std([r["mean"][label][m] for r in rs])[0] for m in rs[0]["mean"][label]}
                for label in rs[0].get("mean", {})}
        foreground = {m: _mean_std([r["foreground_mean"][m] for r in rs])[0] for m in rs[0]["foreground_mean"]}
        merged.append(dict(rs[0], mean=mean, foreground_mean=foreground, runs=len(rs),
                           **{k: float(np.mean([r[k] for r in rs])) for k in ("iterations", "train_s") if k in rs[0]}))
    return merged


def run_to_run_sd(records: Sequence[dict]) -> float:
    """Pooled standard deviation of the mean foreground Dice between runs of one arm on the same draw (records of one
    arm at one count): ``sqrt(sum_d sum_r (x_dr - mean_d)^2 / sum_d (runs_d - 1))`` over the draws with at least two
    runs; NaN when none has two. How far one training can land from the next on the same labeled cases."""
    by_draw: Dict[int, List[float]] = {}
    for r in records:
        x = r["foreground_mean"]["Dice"]
        if x is not None and not math.isnan(x):
            by_draw.setdefault(r["draw"], []).append(x)
    groups = [np.array(v) for v in by_draw.values() if len(v) > 1]
    dof = sum(len(v) - 1 for v in groups)
    if not dof:
        return float("nan")
    return float(math.sqrt(sum(((v - v.mean()) ** 2).sum() for v in groups) / dof))


def aggregate(records: Sequence[dict]) -> List[dict]:
    """One row per (arm, count): mean and sample std over draws of every label's mean metric (a draw with several
    runs enters with the mean over its runs; ``run_sd``: :func:`run_to_run_sd`)."""
    groups: Dict[tuple, List[dict]] = {}
    for r in records:
        groups.setdefault((r["arm"], str(r["n"])), []).append(r)
    rows = []
    for (arm, n), runs in groups.items():
        rs = per_draw(runs)
        labels = rs[0]["labels"]
        row = {"arm": arm, "n": n, "n_labeled": rs[0]["n_labeled"], "draws": len(rs), "runs": len(runs),
               "iterations": int(np.mean([r["iterations"] for r in rs])),
               "train_s": float(np.mean([r["train_s"] for r in rs])), "run_sd": run_to_run_sd(runs)}
        for m in METRIC_NAMES:
            for label, name in labels.items():
                row[f"{m}_{name}"] = _mean_std([r["mean"][label][m] for r in rs])
            row[f"{m}_mean"] = _mean_std([r["foreground_mean"][m] for r in rs])
        rows.append(row)
    return rows


def paired_difference(records: Sequence[dict], arm: str, n, baseline: str) -> Optional[tuple]:
    """Mean foreground Dice of ``arm`` minus ``baseline``'s on the same draws (paired): ``(mean, std, draws)`` over
    the draws both have at count ``n``, None when they share none. A draw with several runs of an arm enters with
    the mean over its runs."""
    dice = {}
    for name in (arm, baseline):
        for r in per_draw([r for r in records if str(r["n"]) == str(n) and r["arm"] == name]):
            dice[(name, r["draw"])] = r["foreground_mean"]["Dice"]
    diffs = [dice[(arm, d)] - dice[(baseline, d)] for (a, d) in list(dice) if a == arm and (baseline, d) in dice]
    if not diffs:
        return None
    mean, std = _mean_std(diffs)
    return mean, std, len(diffs)


def paired_standard_error(delta: tuple) -> float:
    """Standard error of the mean of a :func:`paired_difference` ``(mean, std, draws)``: ``std / sqrt(draws)``;
    NaN with one draw."""
    _, std, draws = delta
    return std / math.sqrt(draws) if draws > 1 else float("nan")


def plan_study(records: Sequence[dict], reference: str, target_se: float, cost_ratio: float = ADVMIM_COST_RATIO,
               sigma: Optional[float] = None, tau: Optional[float] = None) -> List[dict]:
    """``--plan-se``: for every arm and count that shares draws with ``reference``, the cheapest design
    (:func:`~nnunetv2_advmim.commands.study_design.cheapest_design`) whose paired SE reaches ``target_se``, all in
    Dice points. ``sigma``: the run-to-run sd of the arm and the reference pooled together (their draws with several
    runs; the two are assumed equally noisy), unless given. ``tau``: from the per-draw differences, their variance
    minus the noise of each draw's run counts (``between_draw_sd``), unless given; 0 (``tau_assumed``) when it cannot
    be estimated (one draw). ``design`` is None when sigma is unknown (no draw with several runs)."""
    plans = []
    counts = sorted({str(r["n"]) for r in records}, key=lambda n: math.inf if n == "all" else int(n))
    for n in counts:
        at_n = [r for r in records if str(r["n"]) == n]
        for arm in dict.fromkeys(r["arm"] for r in at_n):
            delta = paired_difference(records, arm, n, reference) if arm != reference else None
            if delta is None:
                continue
            pair = [dict(r, draw=(r["arm"], r["draw"])) for r in at_n if r["arm"] in (arm, reference)]
            s = 100 * run_to_run_sd(pair) if sigma is None else sigma
            runs = {name: {r["draw"]: r["runs"] for r in per_draw([r for r in at_n if r["arm"] == name])}
                    for name in (arm, reference)}
            noise = [s ** 2 * (1 / runs[arm][d] + 1 / runs[reference][d]) for d in runs[arm] if d in runs[reference]]
            t = between_draw_sd(100 * delta[1], noise) if tau is None else tau
            assumed = math.isnan(t) and not math.isnan(s)
            t = 0.0 if assumed else t
            plans.append({"arm": arm, "n": n, "delta": delta, "sigma": s, "tau": t, "tau_assumed": assumed,
                          "design": None if math.isnan(s) else cheapest_design(target_se, s, t, cost_ratio)})
    return plans


def format_plan(plan: dict, reference: str, target_se: float) -> str:
    """One line of ``--plan-se`` output."""
    head = f"n={plan['n']} {plan['arm']}: vs {_fmt_delta(plan['delta'])}; " if "delta" in plan else ""
    if plan["design"] is None:
        return head + "no draw has several runs, so the run-to-run sd is unknown: give --sigma"
    d = plan["design"]
    tau = f"{plan['tau']:.1f}" + (" (assumed: one draw)" if plan.get("tau_assumed") else "")
    return (head + f"run-to-run sd {plan['sigma']:.1f}, between-draw sd {tau} -> SE {target_se:g} needs {d['draws']} "
            f"draws, each with {d['r_arm']} run(s) of the arm and {d['r_ref']} of {reference} (expected SE "
            f"{d['se']:.2f}, cost {d['cost']:g} trainings of {reference})")


def _mean_std(values) -> tuple:
    v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _fmt(ms: tuple, digits: int = 3) -> str:
    mu, sd = ms
    if math.isnan(mu):
        return "-"
    return f"{mu:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def _fmt_delta(delta: tuple) -> str:
    """``+M ± S (SE E, D draws)`` in Dice points (mean and sd of the per-draw differences, standard error);
    ``+M (1 draw)`` for a single draw."""
    mean, std, count = delta
    if count == 1:
        return f"{100 * mean:+.1f} (1 draw)"
    return f"{100 * mean:+.1f} ± {100 * std:.1f} (SE {100 * paired_standard_error(delta):.1f}, {count} draws)"


def _fmt_points(sd: float) -> str:
    return "" if math.isnan(sd) else f"{100 * sd:.1f}"


def _sort_key(row, arm_order):
    return (math.inf if row["n"] == "all" else int(row["n"]), arm_order.index(row["arm"]))


def write_outputs(study: Study, records: Sequence[dict], failures: Sequence[dict]) -> Dict[str, str]:
    arm_order = [name for arm in [t for t, _ in study.arms] + [a for p in study.pretrainers
                                                              for a in study._finetune_arms(p)]
                 for name in study._reported(arm)]
    rows = sorted(aggregate(records), key=lambda r: _sort_key(r, arm_order))
    out = {k: os.path.join(study.folder, k) for k in OUTPUTS}
    used_labels = list(records[0]["labels"].values()) if records else []
    baseline = arm_order[0] if arm_order else None

    several_runs = any(r["runs"] != r["draws"] for r in rows)
    header = (["labeled", "arm", "draws"] + (["runs"] if several_runs else []) + ["iterations", "train s"]
              + [f"Dice {n}" for n in used_labels]
              + ["mean Dice", f"vs {baseline}"] + (["run-to-run sd"] if several_runs else [])
              + ["mean HD95", "mean NSD"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    deltas = {(r["arm"], r["n"]): paired_difference(records, r["arm"], r["n"], baseline) if r["arm"] != baseline
              else None for r in rows}
    for r in rows:
        delta = deltas[(r["arm"], r["n"])]
        lines.append("| " + " | ".join(
            [str(r["n"]) if r["n"] != "all" else f"all ({r['n_labeled']})", r["arm"], str(r["draws"])]
            + ([str(r["runs"])] if several_runs else []) + [str(r["iterations"]), f"{r['train_s']:.0f}"]
            + [_fmt(r[f"Dice_{n}"]) for n in used_labels]
            + [_fmt(r["Dice_mean"]), "" if delta is None else _fmt_delta(delta)]
            + ([_fmt_points(r["run_sd"])] if several_runs else []) + [_fmt(r["HD95_mean"], 2), _fmt(r["NSD_mean"])])
            + " |")
    schedule = (f"{study.epochs} epochs x {study.iterations} iterations for every arm" if not study.match_time else
                f"wall time matched to {study.match_time} ({study.epochs} x {study.iterations} iterations); the "
                f"other trainers ran as many epochs of {study.iterations} iterations as fit into that time "
                f"(iterations column)")
    md = [f"# Label-efficiency study: {study.dataset_name}, {study.configuration}, plans {study.plans}", "",
          f"- Schedule: {schedule}.",
          f"- Labeled cases drawn from a pool of {len(study.pool)}; {len(study.val)} validation cases shared by "
          f"every arm; {study.draws} draw(s) per count (seed {study.seed}), nested across counts.",
          f"- Test set: `{os.path.join(study.raw, 'imagesTs')}` against `labelsTs`; values are mean ± standard "
          f"deviation over draws of the per-label mean over test cases; 'vs' is the difference of mean Dice to "
          f"{baseline} on the same draws, in Dice points: mean ± standard deviation of the per-draw differences "
          f"(paired), SE = that standard deviation / sqrt(draws), the standard error of the mean difference.",
          *([f"- `ARM{PP_SUFFIX}`: ARM's test predictions after nnU-Net's postprocessing (keep the largest foreground "
             f"component, overall or per label, where that raised Dice), chosen per draw on ARM's predictions of the "
             f"validation cases (`nnUNetv2_determine_postprocessing`); the same training."] if study.postprocess
            else []),
          *([f"- `runs`: trainings per arm over all draws (`--runs`); a draw with several runs of an arm enters the "
             f"means, spreads and 'vs' with the mean over its runs. `run-to-run sd`: the pooled standard "
             f"deviation of mean Dice between runs of the arm on the same draw, in Dice points (empty with one run "
             f"per draw): one training of the arm can land about this far from the next on the same labeled cases, "
             f"so a 'vs' of that size from one run per draw is noise."] if several_runs else []),
          "", *lines, ""]
    if failures:
        md += ["## Failed arms", ""] + [f"- n={f['n']} draw {f['draw']} {f['arm']}: {f['error']} (log: {f['log']})"
                                        for f in failures] + [""]
    md += ["![Dice versus labeled cases](study.png)", ""]
    with open(out["study.md"], "w") as f:
        f.write("\n".join(md))

    keys = [k for k in (rows[0] if rows else {}) if k not in ("arm", "n")]
    with open(out["study.csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "n"] + [c for k in keys for c in ((f"{k}_mean", f"{k}_std") if isinstance(
            rows[0][k], tuple) else (k,))] + ["vs_reference", "vs_mean", "vs_std", "vs_se", "vs_draws"])
        for r in rows:
            delta = deltas[(r["arm"], r["n"])]
            vs = ["", "", "", "", ""] if delta is None else [baseline, *delta[:2], paired_standard_error(delta),
                                                            delta[2]]
            w.writerow([r["arm"], r["n"]] + [c for k in keys for c in (r[k] if isinstance(r[k], tuple) else (r[k],))]
                       + vs)
    with open(out["study_runs.csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "n", "draw", "run", "n_labeled", "iterations", "train_s"]
                   + [f"{m}_{n}" for m in METRIC_NAMES for n in used_labels] + [f"{m}_mean" for m in METRIC_NAMES]
                   + ["labeled"])
        for r in sorted(records, key=lambda r: (_sort_key(r, arm_order), r["draw"], r.get("run", 0))):
            by_name = {v: k for k, v in r["labels"].items()}
            w.writerow([r["arm"], r["n"], r["draw"], r.get("run", 0), r["n_labeled"], r["iterations"],
                        round(r["train_s"], 1)]
                       + [r["mean"][by_name[n]][m] for m in METRIC_NAMES for n in used_labels]
                       + [r["foreground_mean"][m] for m in METRIC_NAMES] + [" ".join(r["labeled"])])
    plot_study(rows, arm_order, out["study.png"], f"{study.dataset_name} ({study.configuration}): {schedule}")
    return out


def plot_study(rows: Sequence[dict], arm_order: Sequence[str], png_file: str, title: str) -> str:
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, arm in enumerate(arm_order):
        c = colours[i % len(colours)]
        pts = sorted((int(r["n"]), *r["Dice_mean"]) for r in rows if r["arm"] == arm and r["n"] != "all")
        if pts:
            x, mu, sd = map(np.array, zip(*pts))
            dodge = 2.0 ** (0.04 * (i - (len(arm_order) - 1) / 2))  # arms side by side at each count, not on top
            ax.errorbar(x * dodge, mu, yerr=np.nan_to_num(sd), marker="o", capsize=3, color=c, label=arm)
        for r in rows:
            if r["arm"] == arm and r["n"] == "all":
                ax.axhline(r["Dice_mean"][0], color=c, linestyle="--", linewidth=1,
                           label=f"{arm}, all {r['n_labeled']} labeled")
    counts = sorted({int(r["n"]) for r in rows if r["n"] != "all"})
    if counts:
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts)
        ax.set_xticklabels([str(c) for c in counts])
    ax.set_xlabel("labeled training cases")
    ax.set_ylabel("mean foreground Dice (test set)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: points stay visible
    fig.tight_layout()
    fig.savefig(png_file, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return png_file


# ----------------------------------------------------------------------------------------------------- CLI
def default_study_folder(dataset_name: str, plans: str, configuration: str) -> str:
    return os.path.join(os.environ["nnUNet_results"], dataset_name, f"study__{plans}__{configuration}")


def _plan_main(args, parser) -> int:
    """``--plan-se``: from the study folder's records, or from ``--sigma``/``--tau`` without one."""
    folder = args.o
    if folder is None and args.d is not None and args.c is not None:
        if not os.environ.get("nnUNet_results"):
            parser.error("nnUNet_results is not set; set it or pass -o STUDY_FOLDER")
        folder = default_study_folder(os.path.basename(preprocessed_dataset_folder(args.d)), args.p, args.c)
    records = []
    if folder is not None:
        arms = os.path.join(folder, "arms")
        if not os.path.isdir(arms):
            parser.error(f"{arms} does not exist: no study has run in {folder}")
        records = [_read_json(os.path.join(arms, f)) for f in sorted(os.listdir(arms)) if f.endswith(".json")]
    if not records:
        if args.sigma is None:
            parser.error("--plan-se needs a study folder with finished runs (-o) or --sigma (and --tau)")
        design = cheapest_design(args.plan_se, args.sigma, args.tau or 0.0, args.cost_ratio)
        print(format_plan({"sigma": args.sigma, "tau": args.tau or 0.0, "design": design}, "the reference",
                          args.plan_se) + f"; one arm training = {args.cost_ratio:g} reference trainings")
        return 0
    reference = args.tr[0] if args.tr else "nnUNetTrainer"
    plans = plan_study(records, reference, args.plan_se, args.cost_ratio, args.sigma, args.tau)
    if not plans:
        print(f"no arm shares a draw with the reference {reference} (the first -tr) in {folder}")
        return 1
    print(f"Study {folder}: reference {reference}; one arm training = {args.cost_ratio:g} reference trainings")
    for plan in plans:
        print(format_plan(plan, reference, args.plan_se))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_advmim_study",
        description="Label-efficiency study: train every trainer at every labeled count and draw of the labeled "
                    "cases on the same splits and schedule, predict imagesTs with nnUNetv2_predict, evaluate "
                    "against labelsTs, and write study.md/.csv/.png. Resumable; the dataset's own "
                    "splits_final.json is never touched.")
    parser.add_argument("-d", help="dataset ID or DatasetXXX_Name (planned and preprocessed); required")
    parser.add_argument("-c", help="configuration, e.g. 2d or 3d_fullres; required")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-n", nargs="+", help="labeled counts, e.g. 2 4 8 all; required")
    parser.add_argument("--draws", type=int, default=3, help="draws of the labeled cases per count (default 3)")
    parser.add_argument("-tr", nargs="*", default=["nnUNetTrainer"],
                        help="trainers to compare; TRAINER@4,8 runs one only at those counts; TRAINER:cnn (or "
                             ":hybrid, :ensemble) predicts with that network of an AdvMIM-family trainer's training, "
                             "shared with the arm TRAINER (trained once). The first is the reference of the 'vs' "
                             "column (default nnUNetTrainer)")
    parser.add_argument("--pretrainer", nargs="*", default=[],
                        help="pretraining trainers (e.g. nnUNetTrainerAnatoMask): pretrained once on every image, "
                             "then fine-tuned with --finetuner at every count and draw")
    parser.add_argument("--finetuner", nargs="+", default=["nnUNetTrainer"],
                        help="fine-tuning trainers, each fine-tuned from every --pretrainer at every count and draw "
                             "(default nnUNetTrainer)")
    parser.add_argument("--finetune-networks", nargs="+", default=[], choices=("cnn", "hybrid", "ensemble"),
                        help="with an AdvMIM-family --finetuner: also predict every fine-tuned training with these "
                             "networks (arms FINETUNER_from_PRETRAINER:NETWORK; no extra training)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs of every arm (default 50)")
    parser.add_argument("--iterations", type=int, default=50, help="iterations per epoch (default 50)")
    parser.add_argument("--val-iterations", type=int, default=5, help="validation iterations per epoch (default 5)")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="pretraining epochs (default --epochs)")
    parser.add_argument("--match-time", default=None, metavar="TRAINER",
                        help="match wall time instead of iterations: the other trainers train as long as TRAINER")
    parser.add_argument("--n-val", type=int, default=None,
                        help="validation cases shared by every arm (default 20%% of the training cases, at least 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split and the draws")
    parser.add_argument("-device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per training (default: nnU-Net's one per core); 1 avoids stalls "
                             "when other work shares the cores")
    parser.add_argument("-npp", type=int, default=None,
                        help="nnUNetv2_predict's -npp and -nps (default 0 = sequential on the CPU, 3 on a GPU)")
    parser.add_argument("--postprocess", action="store_true",
                        help="also report every arm after nnU-Net's postprocessing (keep the largest component where "
                             "that raises Dice), determined on the arm's predictions of the validation cases: rows "
                             "ARM+pp, no extra training; adds them to a finished study too")
    parser.add_argument("--runs", nargs="+", default=[], metavar="[ARM=]R",
                        help="training runs per arm, count and draw (default 1): R for every arm, ARM=R for one "
                             "(e.g. --runs nnUNetTrainer=4: a less noisy baseline); a draw's value is the mean over "
                             "its runs; adds runs to a finished study")
    parser.add_argument("-o", default=None,
                        help="study folder (default $nnUNet_results/<Dataset>/study__<plans>__<configuration>)")
    parser.add_argument("--plan-se", type=float, default=None, metavar="TARGET",
                        help="train nothing: print how many draws and runs per draw would bring the standard error "
                             "of each 'vs' down to TARGET Dice points, estimated from the runs in the study folder "
                             "(-o, or -d/-c/-p's default folder), or from --sigma and --tau (docs/study.md)")
    parser.add_argument("--sigma", type=float, default=None,
                        help="with --plan-se: run-to-run standard deviation of one training, in Dice points "
                             "(default: pooled over the study's draws with several runs)")
    parser.add_argument("--tau", type=float, default=None,
                        help="with --plan-se: standard deviation of the true difference between draws, in Dice "
                             "points (default: estimated from the study; 0 without one)")
    parser.add_argument("--cost-ratio", type=float, default=ADVMIM_COST_RATIO,
                        help=f"with --plan-se: one training of an arm costs this many trainings of the reference "
                             f"(default {ADVMIM_COST_RATIO:g}, about AdvMIM against stock nnU-Net)")
    args = parser.parse_args(argv)
    if args.plan_se is not None:
        return _plan_main(args, parser)
    missing = [flag for flag, value in (("-d", args.d), ("-c", args.c), ("-n", args.n)) if value is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        study = Study(args.d, args.c, args.n, args.tr, args.draws, args.p, args.epochs, args.iterations,
                      args.val_iterations, args.n_val, args.seed, args.pretrainer, args.finetuner,
                      args.pretrain_epochs, args.match_time, args.device, args.o, args.threads,
                      args.npp, args.postprocess, runs=args.runs, finetune_networks=args.finetune_networks,
                      log=lambda s: print(s, flush=True))
        result = study.run()
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    with open(result["outputs"]["study.md"]) as f:
        print("\n" + f.read())
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
