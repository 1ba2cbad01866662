"""``nnUNetv2_advmim_study``'s command line: the options, ``--plan-se`` (plan draws and runs, train nothing) and the
run of a study (``nnunetv2_advmim.commands.study``)."""
import argparse
import os
import sys

import torch

from nnunetv2_advmim.commands.study.design import ADVMIM_COST_RATIO, cheapest_design
from nnunetv2_advmim.commands.study.report import format_plan, plan_study
from nnunetv2_advmim.commands.study.runner import Study, default_study_folder, read_json
from nnunetv2_advmim.commands.study.settings import StudySettings
from nnunetv2_advmim.data.paths import preprocessed_dataset_folder


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
        records = [read_json(os.path.join(arms, f)) for f in sorted(os.listdir(arms)) if f.endswith(".json")]
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


def _add_planning_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan-se", type=float, default=None, metavar="TARGET",
                        help="train nothing: print how many draws and runs per draw would bring the standard error "
                             "of each 'vs' down to TARGET Dice points, estimated from the runs in the study folder "
                             "(-o, or -d/-c/-p's default folder), or from --sigma and --tau (docs/study.md)")
    parser.add_argument("--sigma", type=float, default=None,
                        help="with --plan-se: run-to-run standard deviation of one training, in Dice points "
                             "(None: pooled over the study's draws with several runs)")
    parser.add_argument("--tau", type=float, default=None,
                        help="with --plan-se: standard deviation of the true difference between draws, in Dice "
                             "points (None: estimated from the study; 0 without one)")
    parser.add_argument("--cost-ratio", type=float, default=ADVMIM_COST_RATIO,
                        help="with --plan-se: one training of an arm costs this many trainings of the reference "
                             "(about AdvMIM against stock nnU-Net)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_advmim_study", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Label-efficiency study: train every trainer at every labeled count and draw of the labeled "
                    "cases on the same splits and schedule, predict imagesTs with nnUNetv2_predict, evaluate "
                    "against labelsTs, and write study.md/.csv/.png. Resumable; the dataset's own "
                    "splits_final.json is never touched.")
    parser.add_argument("-d", help="dataset ID or DatasetXXX_Name (planned and preprocessed); required")
    parser.add_argument("-c", help="configuration, e.g. 2d or 3d_fullres; required")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    parser.add_argument("-n", nargs="+",
                        help="labeled counts, e.g. 2 4 8 all; or published protocols of a dataset converted with "
                             "nnUNetv2_advmim_convert_acdc (acdc-3 acdc-7 acdc-all: the papers' labeled patients and "
                             "split, one draw each); required")
    parser.add_argument("--draws", type=int, default=3, help="draws of the labeled cases per count")
    parser.add_argument("-tr", nargs="*", default=["nnUNetTrainer"],
                        help="trainers to compare; TRAINER@4,8 runs one only at those counts; TRAINER:cnn (or "
                             ":hybrid, :ensemble) predicts with that network of an AdvMIM-family trainer's training, "
                             "shared with the arm TRAINER (trained once). The first is the reference of the 'vs' "
                             "column")
    parser.add_argument("--pretrainer", nargs="*", default=[],
                        help="pretraining trainers (e.g. nnUNetTrainerAnatoMask): pretrained once on every image, "
                             "then fine-tuned with --finetuner at every count and draw")
    parser.add_argument("--finetuner", nargs="+", default=["nnUNetTrainer"],
                        help="fine-tuning trainers, each fine-tuned from every --pretrainer at every count and draw")
    parser.add_argument("--finetune-networks", nargs="+", default=[], choices=("cnn", "hybrid", "ensemble"),
                        help="with an AdvMIM-family --finetuner: also predict every fine-tuned training with these "
                             "networks (arms FINETUNER_from_PRETRAINER:NETWORK; no extra training)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs of every arm")
    parser.add_argument("--iterations", type=int, default=50, help="iterations per epoch")
    parser.add_argument("--val-iterations", type=int, default=5, help="validation iterations per epoch")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="pretraining epochs (None: --epochs)")
    parser.add_argument("--match-time", default=None, metavar="TRAINER",
                        help="match wall time instead of iterations: the other trainers train as long as TRAINER")
    parser.add_argument("--n-val", type=int, default=None,
                        help="validation cases shared by every arm (None: 20%% of the training cases, at least 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split and the draws")
    parser.add_argument("-device", default=None, help="cpu or cuda (None: cuda when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per training (None: nnU-Net's one per core); 1 avoids stalls "
                             "when other work shares the cores")
    parser.add_argument("-npp", type=int, default=None,
                        help="nnUNetv2_predict's -npp and -nps (None: 0 = sequential on the CPU, 3 on a GPU)")
    parser.add_argument("--postprocess", action="store_true",
                        help="also report every arm after nnU-Net's postprocessing (keep the largest component where "
                             "that raises Dice), determined on the arm's predictions of the validation cases: rows "
                             "ARM+pp, no extra training; adds them to a finished study too")
    parser.add_argument("--runs", nargs="+", default=[], metavar="[ARM=]R",
                        help="training runs per arm, count and draw (none given: 1): R for every arm, ARM=R for one "
                             "(e.g. --runs nnUNetTrainer=4: a less noisy baseline); a draw's value is the mean over "
                             "its runs; adds runs to a finished study")
    parser.add_argument("-o", default=None,
                        help="study folder (None: $nnUNet_results/<Dataset>/study__<plans>__<configuration>)")
    _add_planning_options(parser)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plan_se is not None:
        return _plan_main(args, parser)
    missing = [flag for flag, value in (("-d", args.d), ("-c", args.c), ("-n", args.n)) if value is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        settings = StudySettings(
            dataset=args.d, configuration=args.c, counts=args.n, trainers=args.tr, draws=args.draws, plans=args.p,
            epochs=args.epochs, iterations=args.iterations, val_iterations=args.val_iterations, n_val=args.n_val,
            seed=args.seed, pretrainers=args.pretrainer, finetuners=args.finetuner,
            pretrain_epochs=args.pretrain_epochs, match_time=args.match_time, device=args.device,
            output_folder=args.o, threads=args.threads, npp=args.npp, postprocess=args.postprocess, runs=args.runs,
            finetune_networks=args.finetune_networks)
        study = Study(settings, log=lambda s: print(s, flush=True))
        result = study.run()
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    with open(result["outputs"]["study.md"]) as f:
        print("\n" + f.read())
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
