"""``nnUNetv2_advmim_plan_hybrid``: write the hybrid CNN-Transformer U-Net into a new plans file.

nnU-Net looks ``-pl`` planners up only inside its own package, so instead of a planner we
derive new plans from the dataset's existing ones: every configuration that defines an architecture gets
``network_class_name: nnunetv2_advmim.architectures.HybridTransformerUNet`` with the plan's own
arguments (stages, features, kernels, strides, norm/nonlin ops) plus the transformer settings. Patch
size, batch size, spacing and ``data_identifier`` stay as they are, so the new plans reuse the already
preprocessed data and the stock trainer trains the hybrid::

    nnUNetv2_advmim_plan_hybrid -d 4
    nnUNetv2_train 4 3d_fullres 0 -p nnUNetPlans_hybrid
"""
import argparse
import copy
import json
import os
import pydoc
from typing import Iterable, Optional

from nnunetv2_advmim.architectures.from_plans import HYBRID, hybrid_arch_kwargs
from nnunetv2_advmim.architectures.hybrid_unet import HybridTransformerUNet
from nnunetv2_advmim.data.paths import find_dataset_name
from nnunetv2_advmim.cli import DefaultsHelpFormatter
from nnunetv2_advmim.runtime.atomic import write_json_atomic


def make_hybrid_plans(plans: dict, plans_name: str, configurations: Optional[Iterable[str]] = None,
                      **transformer_kwargs) -> dict:
    """Copy of ``plans`` named ``plans_name`` whose configurations (all with an architecture, or the given
    ones) use ``HybridTransformerUNet``. Each converted architecture is instantiated once to check it."""
    new = copy.deepcopy(plans)
    new["plans_name"] = plans_name
    confs = new["configurations"]
    if configurations is None:
        configurations = [c for c, v in confs.items() if "architecture" in v]
    configurations = list(configurations)
    for c in configurations:
        if c not in confs:
            raise ValueError(f"configuration {c!r} is not in plans {plans.get('plans_name')!r} "
                             f"(available: {sorted(confs)})")
        if "architecture" not in confs[c]:
            raise ValueError(f"configuration {c!r} defines no architecture of its own (it inherits from "
                             f"{confs[c].get('inherits_from')!r}); convert that configuration instead")
        arch = confs[c]["architecture"]
        arch["network_class_name"] = HYBRID
        arch["arch_kwargs"] = hybrid_arch_kwargs(arch["arch_kwargs"], **transformer_kwargs)
        arch["_kw_requires_import"] = [k for k in arch.get("_kw_requires_import", [])
                                       if k in arch["arch_kwargs"]]
        _check_buildable(arch, c)
    return new


def _check_buildable(arch: dict, configuration: str) -> None:
    kwargs = dict(arch["arch_kwargs"])
    for k in arch["_kw_requires_import"]:
        if kwargs[k] is not None:
            kwargs[k] = pydoc.locate(kwargs[k])
    try:
        HybridTransformerUNet(input_channels=1, num_classes=2, **kwargs)
    except (ValueError, TypeError) as e:
        raise ValueError(f"configuration {configuration!r}: cannot build HybridTransformerUNet from these settings: "
                         f"{e}") from e


def plan_hybrid(dataset: str, source_plans: str = "nnUNetPlans", target_plans: str = "nnUNetPlans_hybrid",
                configurations: Optional[Iterable[str]] = None, preprocessed_root: Optional[str] = None,
                overwrite: bool = False, **transformer_kwargs) -> str:
    """Write ``<preprocessed>/<dataset>/<target_plans>.json``; return its path."""
    root = preprocessed_root or os.environ.get("nnUNet_preprocessed")
    if not root:
        raise RuntimeError("nnUNet_preprocessed is not set; set it (nnU-Net's environment variables) or pass "
                           "--preprocessed FOLDER")
    name = find_dataset_name(dataset, root)
    src = os.path.join(root, name, source_plans + ".json")
    dst = os.path.join(root, name, target_plans + ".json")
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src} does not exist; plan the dataset with nnUNetv2_plan_and_preprocess first "
                                f"or name existing plans with -p")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError(f"target plans {target_plans!r} equal the source plans; choose another name with -o")
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst} already exists; pass --overwrite to replace it or choose another name with -o")
    with open(src) as f:
        plans = json.load(f)
    new = make_hybrid_plans(plans, target_plans, configurations, **transformer_kwargs)
    write_json_atomic(dst, new, indent=4)
    return dst


def _int_or_list(text: str):
    values = [int(v) for v in text.split(",")]
    return values[0] if len(values) == 1 else values


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_plan_hybrid",
        description="Derive plans that use the hybrid CNN-Transformer U-Net (HybridTransformerUNet) from a "
                    "dataset's existing nnU-Net plans. Train with: nnUNetv2_train ID CONF FOLD -p <new plans>.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset ID or name (must be planned already)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="source plans identifier (default nnUNetPlans)")
    parser.add_argument("--output-plans", default="nnUNetPlans_hybrid",
                        help="new plans identifier (default nnUNetPlans_hybrid)")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configurations to convert (default: every configuration with an architecture)")
    parser.add_argument("--transformer-stages", type=_int_or_list, default=None,
                        help="k = last k encoder stages (default 2), or comma-separated stage indices")
    parser.add_argument("--embed-dim", type=_int_or_list, default=None,
                        help="transformer width (default: the stage's features_per_stage)")
    parser.add_argument("--depth", type=_int_or_list, default=None, help="blocks per transformer stage (default 4)")
    parser.add_argument("--num-heads", type=_int_or_list, default=None, help="attention heads (default 8)")
    parser.add_argument("--mlp-ratio", type=float, default=None, help="MLP hidden ratio (default 4)")
    parser.add_argument("--drop-path-rate", type=float, default=None, help="stochastic depth rate (default 0.1)")
    parser.add_argument("--preprocessed", default=None, help="nnU-Net preprocessed root (default $nnUNet_preprocessed)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing target plans file")
    args = parser.parse_args(argv)
    try:
        dst = plan_hybrid(args.dataset, args.plans, args.output_plans, args.configurations, args.preprocessed,
                          args.overwrite, transformer_stages=args.transformer_stages, embed_dim=args.embed_dim,
                          depth=args.depth, num_heads=args.num_heads, mlp_ratio=args.mlp_ratio,
                          drop_path_rate=args.drop_path_rate)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        parser.exit(1, f"nnUNetv2_advmim_plan_hybrid: error: {e}\n")
    print(f"Wrote {dst}\nTrain with: nnUNetv2_train {args.dataset} <configuration> <fold> -p {args.output_plans}")


if __name__ == "__main__":
    main()
