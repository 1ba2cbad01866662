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
- **Published protocols** (``-n acdc-3 acdc-7 acdc-all`` on a dataset converted with
  ``nnUNetv2_advmim_convert_acdc``): the papers' labeled patients, validation patients and training pool replace
  the drawn ones; each protocol is one draw (``--runs`` still repeats its trainings).
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
  standard error reaches TARGET (:mod:`nnunetv2_advmim.commands.study.design`).

The package by concern: ``protocol`` (pure functions: arms, counts, splits, draws, keys), ``settings``
(:class:`StudySettings`), ``variants`` (the trainer variants the study writes), ``runner`` (:class:`Study`: folders,
training, prediction, evaluation, records), ``lock`` (one study process per folder), ``report`` (aggregates, paired differences, output files),
``design`` (draws and runs for a target standard error) and ``cli`` (the command line).
"""
from nnunetv2_advmim.commands.study.cli import main
from nnunetv2_advmim.commands.study.protocol import (PP_SUFFIX, arm_file_id, arm_parts, draw_order, labeled_cases,
                                                     parse_arm, parse_count, parse_runs, run_key, split_key,
                                                     split_validation, study_budget)
from nnunetv2_advmim.commands.study.report import (aggregate, format_plan, paired_difference, paired_standard_error,
                                                   per_draw, plan_study, plot_study, reported_arms, run_to_run_sd,
                                                   write_outputs)
from nnunetv2_advmim.commands.study.lock import study_lock
from nnunetv2_advmim.commands.study.runner import Study, default_study_folder
from nnunetv2_advmim.commands.study.settings import StudySettings
from nnunetv2_advmim.commands.study.variants import variant_name, variants_source

__all__ = ["PP_SUFFIX", "Study", "StudySettings", "aggregate", "arm_file_id", "arm_parts", "default_study_folder",
           "draw_order", "format_plan", "labeled_cases", "main", "paired_difference", "paired_standard_error",
           "parse_arm", "parse_count", "parse_runs", "per_draw", "plan_study", "plot_study", "reported_arms",
           "run_key", "run_to_run_sd", "split_key", "split_validation", "study_budget", "study_lock",
           "variant_name", "variants_source", "write_outputs"]
