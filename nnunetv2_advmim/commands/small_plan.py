"""``nnUNetv2_advmim_small_plan``: a cheaper copy of a configuration's plans for CPU studies.

A label-efficiency study trains every arm on the same plans; on a CPU the plans nnU-Net makes are too big to
train many arms. This command writes ``<target>.json`` next to the source plans with the chosen configuration's
network made smaller: fewer features per stage (``--base-features``, ``--max-features``), optionally fewer
resolution stages (``--stages``) and another batch size. Spacing, normalisation and the data identifier stay
those of the source plans, so the preprocessed data is reused as it is (no second preprocessing), and the patch
size stays valid because dropping stages only removes downsampling.
"""
import argparse
import copy
import json
import os
import sys
from typing import Optional

from nnunetv2_advmim.data.paths import preprocessed_dataset_folder
from nnunetv2_advmim.cli import DefaultsHelpFormatter
from nnunetv2_advmim.runtime.atomic import write_json_atomic

# architecture kwargs that hold one entry per resolution stage (decoder lists hold one fewer)
PER_STAGE = ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage", "n_blocks_per_stage")
PER_DECODER_STAGE = ("n_conv_per_stage_decoder",)


def make_small_plans(plans: dict, configuration: str, target_plans: str, base_features: int = 16,
                     max_features: int = 128, stages: Optional[int] = None,
                     batch_size: Optional[int] = None) -> dict:
    """Copy of ``plans`` named ``target_plans`` whose ``configuration`` has features
    ``min(base_features * 2**i, max_features)`` per stage, its first ``stages`` stages and ``batch_size``."""
    new = copy.deepcopy(plans)
    new["plans_name"] = target_plans
    confs = new["configurations"]
    if configuration not in confs or "architecture" not in confs[configuration]:
        raise ValueError(f"configuration {configuration!r} is not in plans {plans.get('plans_name')!r} with an "
                         f"architecture of its own (available: {sorted(confs)})")
    conf = confs[configuration]
    kw = conf["architecture"]["arch_kwargs"]
    n = int(kw["n_stages"])
    stages = n if stages is None else int(stages)
    if not 2 <= stages <= n:
        raise ValueError(f"--stages must be in 2..{n} (the source plans have {n} stages), got {stages}")
    if base_features < 1 or max_features < base_features:
        raise ValueError(f"need 1 <= base_features <= max_features, got {base_features} and {max_features}")
    kw["n_stages"] = stages
    for key in PER_STAGE:
        if key in kw:
            kw[key] = list(kw[key])[:stages]
    for key in PER_DECODER_STAGE:
        if key in kw:
            kw[key] = list(kw[key])[:stages - 1]
    kw["features_per_stage"] = [min(base_features * 2 ** i, max_features) for i in range(stages)]
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        conf["batch_size"] = int(batch_size)
    return new


def small_plan(dataset, configuration: str, source_plans: str = "nnUNetPlans",
               target_plans: str = "nnUNetPlans_small", overwrite: bool = False, **kwargs) -> str:
    """Write ``$nnUNet_preprocessed/<dataset>/<target_plans>.json``; return its path."""
    folder = preprocessed_dataset_folder(dataset)
    src = os.path.join(folder, source_plans + ".json")
    dst = os.path.join(folder, target_plans + ".json")
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src} does not exist; run nnUNetv2_plan_and_preprocess -d {dataset} first, or "
                                f"name existing plans with -p")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError(f"target plans {target_plans!r} equal the source plans; choose another name with -o")
    with open(src) as f:
        new = make_small_plans(json.load(f), configuration, target_plans, **kwargs)
    if os.path.exists(dst):
        with open(dst) as f:
            if json.load(f) == new:
                return dst
        if not overwrite:
            raise FileExistsError(f"{dst} already exists with other settings; pass --overwrite to replace it or "
                                  f"choose another name with -o")
    write_json_atomic(dst, new, indent=4)
    return dst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_small_plan",
        description="Write a smaller copy of a planned configuration (fewer features, optionally fewer stages "
                    "and another batch size) that reuses the preprocessed data; for studies on a CPU.")
    parser.add_argument("-d", required=True, help="dataset ID or DatasetXXX_Name (planned and preprocessed)")
    parser.add_argument("-c", required=True, help="configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("-p", default="nnUNetPlans", help="source plans (default nnUNetPlans)")
    parser.add_argument("--output-plans", default="nnUNetPlans_small", help="name of the plans to write")
    parser.add_argument("--base-features", type=int, default=16, help="features of the first stage (default 16)")
    parser.add_argument("--max-features", type=int, default=128, help="cap on features per stage (default 128)")
    parser.add_argument("--stages", type=int, default=None, help="keep only the first N resolution stages")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: the source plans')")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing target plans file")
    args = parser.parse_args(argv)
    try:
        path = small_plan(args.d, args.c, args.p, args.output_plans, args.overwrite, base_features=args.base_features,
                          max_features=args.max_features, stages=args.stages, batch_size=args.batch_size)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {path}; train with -p {args.output_plans}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
