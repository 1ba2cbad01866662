"""``nnUNetv2_advmim_check_weights``: which tensors of a checkpoint would fill a target network, before training.

The keys are sorted as nnU-Net's ``load_pretrained_weights`` treats them
(:func:`nnunetv2_advmim.runtime.weights.compare_state_dicts`: matched, missing, shape mismatch, skipped
``.seg_layers.``, unused).

The target network is built exactly as training would build it: the trainer class's
``build_network_architecture`` with the plans, configuration and dataset's channels and segmentation heads::

    nnUNetv2_advmim_check_weights CKPT -d D -c C [-p nnUNetPlans] [-tr nnUNetTrainer]

Fine-tuning routes: the plan's CNN with ``-tr nnUNetTrainer`` (or ``-tr nnUNetTrainerAdvMIM``, whose inference
network is the CNN); the hybrid (AdvMIM's S) with ``-p nnUNetPlans_hybrid`` (from ``nnUNetv2_advmim_plan_hybrid``)
or ``-tr nnUNetTrainerAdvMIM_Hybrid``.
"""
import argparse
import os
import sys

from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_advmim.runtime.weights import compare_state_dicts, load_network_weights
from nnunetv2_advmim.cli import DefaultsHelpFormatter


def target_network(dataset: str, configuration: str, plans: str = "nnUNetPlans", trainer: str = "nnUNetTrainer"):
    """The network ``nnUNetv2_train dataset configuration F -tr trainer -p plans`` would build (on the CPU)."""
    name = maybe_convert_to_dataset_name(dataset)
    plans_file = join(nnUNet_preprocessed, name, plans + ".json")
    if not os.path.isfile(plans_file):
        raise FileNotFoundError(f"{plans_file} does not exist; plan the dataset first (nnUNetv2_plan_and_preprocess, "
                                f"or nnUNetv2_advmim_plan_hybrid for hybrid plans) or name existing plans with -p")
    dataset_json = load_json(join(nnUNet_preprocessed, name, "dataset.json"))
    pm = PlansManager(plans_file)
    if configuration not in pm.available_configurations:
        raise ValueError(f"configuration {configuration!r} is not in {plans_file}; available: "
                         f"{list(pm.available_configurations)}")
    cm = pm.get_configuration(configuration)
    try:
        cls = recursive_find_trainer_class_by_name(trainer)
    except RuntimeError as e:
        raise ValueError(f"trainer {trainer!r} was not found in nnunetv2.training.nnUNetTrainer nor in the "
                         f"nnUNet_extTrainer folders") from e
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    return cls.build_network_architecture(pm, cm, n_in, n_out, enable_deep_supervision=True)


def format_report(report: dict, verbose: bool = False) -> str:
    lines = [f"matched: {len(report['matched'])}", f"missing in checkpoint: {len(report['missing'])}",
             f"shape mismatch: {len(report['shape_mismatch'])}",
             f"skipped (.seg_layers., never transferred): {len(report['skipped'])}",
             f"unused checkpoint tensors (ignored): {len(report['unused'])}"]
    for k in report["missing"]:
        lines.append(f"  MISSING   {k}")
    for k, t, s in report["shape_mismatch"]:
        lines.append(f"  SHAPE     {k}: target {t}, checkpoint {s}")
    if verbose:
        lines += [f"  matched   {k}" for k in report["matched"]]
        lines += [f"  skipped   {k}" for k in report["skipped"]]
    lines += [f"  unused    {k}" for k in report["unused"][: (None if verbose else 10)]]
    if not verbose and len(report["unused"]) > 10:
        lines.append(f"  ... {len(report['unused']) - 10} more unused (use -v)")
    lines.append("RESULT: loads with -pretrained_weights" if report["loadable"] else
                 "RESULT: stock -pretrained_weights would FAIL (missing or shape-mismatched tensors)")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_check_weights",
        description="List which tensors of a checkpoint fill the network nnUNetv2_train would build (matched, "
                    "missing, shape-mismatched, skipped seg layers, unused), as stock -pretrained_weights loads "
                    "them. Exit code 0 if the checkpoint loads, 1 if stock loading would fail.")
    parser.add_argument("checkpoint", help="checkpoint file (e.g. .../fold_0/checkpoint_final.pth)")
    parser.add_argument("-d", required=True, help="target dataset ID or name")
    parser.add_argument("-c", required=True, help="target configuration")
    parser.add_argument("-p", default="nnUNetPlans", help="target plans identifier (default nnUNetPlans)")
    parser.add_argument("-tr", default="nnUNetTrainer", help="target trainer (default nnUNetTrainer)")
    parser.add_argument("-v", action="store_true", help="list every key")
    args = parser.parse_args(argv)
    try:
        source = load_network_weights(args.checkpoint)
        net = target_network(args.d, args.c, args.p, args.tr)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        parser.exit(2, f"nnUNetv2_advmim_check_weights: error: {e}\n")
    report = compare_state_dicts(net.state_dict(), source)
    print(f"target: {args.tr} / {args.p} / {args.c} ({net.__class__.__name__}); checkpoint: {args.checkpoint}")
    print(format_report(report, args.v))
    sys.exit(0 if report["loadable"] else 1)


if __name__ == "__main__":
    main()
