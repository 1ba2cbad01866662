"""Running a study (``nnunetv2_advmim.commands.study``): the study folder, the splits it owns, training, prediction
and evaluation of every arm with the stock commands, records that make it resumable, and the lock that allows one
study process per folder."""
import copy
import dataclasses
import json
import os
import shutil
import subprocess
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunetv2_advmim.commands.study.protocol import (PP_SUFFIX, arm_file_id, arm_parts, is_protocol, labeled_cases,
                                                     parse_runs, protocol_split, run_key, single_draw, split_key,
                                                     split_validation, study_budget)
from nnunetv2_advmim.commands.study.lock import study_lock
from nnunetv2_advmim.runtime.checkpoint_files import usable_checkpoint
from nnunetv2_advmim.runtime.child_process import run_child
from nnunetv2_advmim.commands.study.report import write_outputs
from nnunetv2_advmim.commands.study.settings import StudySettings
from nnunetv2_advmim.commands.study.variants import VARIANTS_MODULE, variant_name, variants_source
from nnunetv2_advmim.data.label_budget import BUDGET_FILE, SPLITS_FILE, training_cases, write_budget, write_json_atomic
from nnunetv2_advmim.data.paths import load_plans_and_dataset_json, preprocessed_dataset_folder
from nnunetv2_advmim.env import find_trainer
from nnunetv2_advmim.evaluation.evaluate import evaluate_folders
from nnunetv2_advmim.runtime.checkpointing import atomic_save, safe_load
from nnunetv2_advmim.runtime.weights import advmim_network_weights

STUDY_FILE = "study.json"
# settings that fix what an arm's result means; a study folder refuses to continue with other values
FIXED_SETTINGS = ("dataset", "configuration", "plans", "epochs", "iterations", "val_iterations", "seed", "n_val",
                  "match_time", "finetuners", "pretrain_epochs")


def default_study_folder(dataset_name: str, plans: str, configuration: str) -> str:
    return os.path.join(os.environ["nnUNet_results"], dataset_name, f"study__{plans}__{configuration}")


def _metrics(result: dict) -> dict:
    """An evaluation's per-label and foreground means as a record stores them (label keys as strings)."""
    return {"labels": {str(k): v for k, v in result["labels"].items()},
            "mean": {str(k): v for k, v in result["mean"].items()}, "foreground_mean": result["foreground_mean"]}


class Study:
    """One study folder (module docstring). ``run()`` trains what is missing and writes the outputs."""

    def __init__(self, *settings, log=print, **fields):
        """``Study(StudySettings(...))``, or ``Study(...)`` with the fields of :class:`StudySettings`."""
        if len(settings) == 1 and not fields and isinstance(settings[0], StudySettings):
            settings = settings[0]
        else:
            settings = StudySettings(*settings, **fields)
        for f in dataclasses.fields(StudySettings):
            setattr(self, f.name, getattr(settings, f.name))
        self.log = log
        self.preprocessed = preprocessed_dataset_folder(self.dataset)
        self.dataset_name = os.path.basename(self.preprocessed)
        self._check_dataset()
        cases = training_cases(self.preprocessed, self.plans)
        if any(is_protocol(n) for n in self.counts):  # the protocol's split (settings allow protocols only then)
            self.val, self.pool, self.protocol_labeled = protocol_split(cases, self.counts, self.dataset_json)
            self.n_val = len(self.val)
        else:
            self.n_val = max(2, round(0.2 * len(cases))) if self.n_val is None else self.n_val
            self.val, self.pool = split_validation(cases, self.n_val, self.seed)
            self.protocol_labeled = {}
        for n in self.counts:
            self.labeled(n, 0)  # range check before any training
        if self.output_folder is None:
            if not os.environ.get("nnUNet_results"):
                raise RuntimeError("nnUNet_results is not set; set it or pass -o STUDY_FOLDER")
            self.output_folder = default_study_folder(self.dataset_name, self.plans, self.configuration)
        self.folder = os.path.abspath(self.output_folder)
        self.recorded = {"dataset": self.dataset_name, "configuration": self.configuration, "plans": self.plans,
                         "epochs": self.epochs, "iterations": self.iterations, "val_iterations": self.val_iterations,
                         "seed": self.seed, "n_val": self.n_val, "match_time": self.match_time,
                         "finetuners": self.finetuners, "pretrain_epochs": self.pretrain_epochs, "val_cases": self.val,
                         "pool": self.pool}
        self._check_settings()
        self._find_trainers()
        self.runs = parse_runs(self.runs, self.trained_arms())
        self.epochs_of = {t: self.epochs for t in self.classes}  # replaced by calibration with --match-time
        self.epochs_of.update({p: self.pretrain_epochs for p in self.pretrainers})

    def _check_dataset(self):
        plans_manager, self.dataset_json = load_plans_and_dataset_json(self.preprocessed, self.plans)
        if self.configuration not in plans_manager.available_configurations:
            raise ValueError(f"configuration {self.configuration!r} is not in {self.plans}.json of {self.dataset_name} "
                             f"(available: {plans_manager.available_configurations})")
        raw_root = os.environ.get("nnUNet_raw")
        self.raw = os.path.join(raw_root, self.dataset_name) if raw_root else None
        for sub in ("imagesTs", "labelsTs"):
            if not self.raw or not os.path.isdir(os.path.join(self.raw, sub)):
                raise FileNotFoundError(f"{self.raw and os.path.join(self.raw, sub)} does not exist: a study "
                                        f"evaluates on the dataset's imagesTs/labelsTs (set nnUNet_raw and put the "
                                        f"test images and their labels there)")

    def _find_trainers(self):
        """Every trainer class the study trains (nnU-Net's lookup), and the checks that need them."""
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

    def labeled(self, n, draw: int) -> List[str]:
        """The labeled cases of count ``n`` in draw ``draw``: a protocol's own, else drawn from the pool."""
        if n in self.protocol_labeled:
            return self.protocol_labeled[n]
        return labeled_cases(self.pool, n, draw, self.seed)

    def trained_arms(self) -> List[str]:
        """Every arm in the order of the report: the trainers (-tr), then the fine-tuning arms of each pretrainer."""
        return [t for t, _ in self.arms] + [a for p in self.pretrainers for a in self.finetune_arms(p)]

    # ---------------------------------------------------------------- folders and settings
    def _check_settings(self):
        path = os.path.join(self.folder, STUDY_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                old = json.load(f)
            diff = [k for k in FIXED_SETTINGS + ("val_cases", "pool") if old.get(k) != self.recorded.get(k)]
            if diff:
                raise ValueError(f"{self.folder} holds a study with other settings ({', '.join(diff)}: "
                                 f"{[old.get(k) for k in diff]} there); continue it with the same settings or "
                                 f"choose another study folder (-o)")
        os.makedirs(self.folder, exist_ok=True)
        write_json_atomic(path, self.recorded)

    def _arm_names(self, n) -> List[str]:
        """The arms that run at count ``n`` (fine-tuning arms run at every count)."""
        skipped = {t for t, at in self.arms if n not in at}
        return [a for a in self.trained_arms() if a not in skipped]

    def _holds_both(self, trainer: str) -> bool:
        return hasattr(self.classes.get(trainer), "predict_with")

    def finetune_arms(self, pretrainer: str) -> List[str]:
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
            [a for p in self.pretrainers for a in self.finetune_arms(p)[1:]]
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
        calib = read_json(path) or {}
        key = split_key(self.counts[0], 0)
        root = self._split_folder(key, self.labeled(self.counts[0], 0))
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

    def _record_file(self, key: str, arm: str) -> str:
        return os.path.join(self.folder, "arms", f"{key}__{arm_file_id(arm)}.json")

    def _arm_setup(self, arm: str, n, draw: int, run: int = 0) -> tuple:
        """(labeled cases, results root, environment, log file) of one arm run; every run of a (count, draw) trains on
        the same split."""
        key = run_key(n, draw, run)
        labeled = self.labeled(n, draw)
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
        record = read_json(record_file)
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
                  "wall_s": wall, **_metrics(result), "model": model, "predictions": pred}
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
        done = read_json(record_file)
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
        chosen = read_json(os.path.join(val_pred, "postprocessing.json"))
        steps = [{"function": fn, **kw} for fn, kw in zip(chosen["postprocessing_fns"], chosen["postprocessing_kwargs"])]
        record = dict(record, arm=arm + PP_SUFFIX, postprocessing=steps, predictions=pred, **_metrics(result))
        write_json_atomic(record_file, record)
        return record

    def reported(self, arm: str) -> List[str]:
        """The arm and, with postprocessing, its ``+pp`` twin."""
        return [arm, arm + PP_SUFFIX] if self.postprocess else [arm]

    def jobs(self) -> List[tuple]:
        return [(arm, n, d, r) for n in self.counts for d in range(1 if single_draw(n) else self.draws)
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
        records = [r for r in (read_json(self._record_file(run_key(n, d, run), name)) for a, n, d, run in jobs
                               for name in self.reported(a)) if r is not None]
        outputs = write_outputs(self, records, failures)
        self.log(f"Wrote {', '.join(outputs.values())}")
        return {"records": records, "failures": failures, "outputs": outputs}


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


def read_json(path: str):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
