"""Which tensors of a checkpoint fit a network, as nnU-Net's ``load_pretrained_weights`` decides it.

nnU-Net 2.8.1 demands that every key of the target network, except those containing ``.seg_layers.``, exists in
``checkpoint['network_weights']`` with the same shape; extra checkpoint keys are ignored. :func:`compare_state_dicts`
sorts the keys the same way:

- ``matched``: target keys filled from the checkpoint (same name and shape);
- ``missing``: target keys the checkpoint lacks (stock loading aborts);
- ``shape_mismatch``: same name, other shape (stock loading aborts);
- ``skipped``: ``.seg_layers.`` keys, never transferred (the new task's output layers);
- ``unused``: checkpoint keys the target does not have (ignored, e.g. the MIM ``mask_token``).
"""
import os
from typing import Dict, Iterable

import torch
from torch import nn

from nnunetv2_advmim.runtime.checkpointing import safe_load

SKIP = (".seg_layers.",)


def compare_state_dicts(target: Dict[str, torch.Tensor], source: Dict[str, torch.Tensor],
                        skip: Iterable[str] = SKIP) -> dict:
    """Sort keys as ``load_pretrained_weights`` treats them (module docstring); shapes as tuples."""
    skip = tuple(skip)
    out = {"matched": [], "missing": [], "shape_mismatch": [], "skipped": [], "unused": []}
    for k, v in target.items():
        if any(s in k for s in skip):
            out["skipped"].append(k)
        elif k not in source:
            out["missing"].append(k)
        elif tuple(source[k].shape) != tuple(v.shape):
            out["shape_mismatch"].append((k, tuple(v.shape), tuple(source[k].shape)))
        else:
            out["matched"].append(k)
    out["unused"] = [k for k in source if k not in target]
    out["loadable"] = not out["missing"] and not out["shape_mismatch"]
    return out


def load_network_weights(checkpoint_file: str) -> Dict[str, torch.Tensor]:
    """``network_weights`` of an nnU-Net checkpoint, mapped to the CPU, loaded with ``weights_only=True``
    (:func:`safe_load`: a file with foreign pickled objects is refused)."""
    ckpt = safe_load(checkpoint_file, map_location="cpu")
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise ValueError(f"{checkpoint_file} is not an nnU-Net checkpoint (no 'network_weights' entry); pass a "
                         f"checkpoint_final.pth / checkpoint_best.pth written by nnUNetv2_train")
    return ckpt["network_weights"]


def load_branch_weights(module: nn.Module, filename: str, branch: str) -> None:
    """Load a checkpoint into one branch with nnU-Net's pretrained-weights rule.

    Takes ``checkpoint['network_weights']``, or, for an AdvMIM checkpoint, its stored weights of ``branch``
    (``checkpoint['advmim']['weights'][branch]``). Every key of the branch except ``.seg_layers.`` must exist with
    the same shape; extra keys (e.g. ``mask_token``) are ignored; loads onto the CPU first (any saving device).
    """
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"pretrained weights for the AdvMIM {branch} branch: {filename} does not exist")
    ckpt = safe_load(filename, map_location="cpu")  # weights_only: a checkpoint cannot run code
    if isinstance(ckpt, dict) and "advmim" in ckpt and branch in ckpt["advmim"].get("weights", {}):
        source = ckpt["advmim"]["weights"][branch]
    elif isinstance(ckpt, dict) and "network_weights" in ckpt:
        source = ckpt["network_weights"]
    else:
        raise ValueError(f"{filename} is not an nnU-Net checkpoint (no 'network_weights'); pass a checkpoint_*.pth")
    own = module.state_dict()
    report = compare_state_dicts(own, source, skip=(".seg_layers.", "mask_token"))
    if not report["loadable"]:
        lines = [f"  missing: {k}" for k in report["missing"]] + \
                [f"  {k}: expected {exp}, checkpoint has {got}" for k, exp, got in report["shape_mismatch"]]
        raise ValueError(f"{filename} does not fit the AdvMIM {branch} branch ({type(module).__name__}): "
                         f"{len(report['missing'])} tensors missing, {len(report['shape_mismatch'])} of another shape:\n"
                         + "\n".join(lines[:50]) + ("\n  ..." if len(lines) > 50 else "") +
                         f"\nTrain the checkpoint with the same plans and network class; the full list: "
                         f"nnUNetv2_advmim_check_weights {filename} -d DATASET -c CONFIGURATION -tr "
                         f"{'nnUNetTrainerAdvMIM_Hybrid' if branch == 'hybrid' else 'nnUNetTrainer'}")
    own.update({k: v for k, v in source.items() if k in own and ".seg_layers." not in k})
    module.load_state_dict(own)


ADVMIM_NETWORKS = ("hybrid", "cnn", "ensemble")


def advmim_network_weights(checkpoint: dict, network: str) -> Dict[str, torch.Tensor]:
    """``network_weights`` for predicting with ``network`` (``hybrid``, ``cnn`` or ``ensemble``) from an AdvMIM
    checkpoint, which stores both branches whichever network its trainer predicts with. ``ensemble``: the keys of
    ``AdvMIMEnsemble`` (``hybrid.*`` and ``cnn.*``)."""
    if network not in ADVMIM_NETWORKS:
        raise ValueError(f"unknown AdvMIM network {network!r}; expected one of {ADVMIM_NETWORKS}")
    branches = (checkpoint.get("advmim") or {}).get("weights")
    if not branches or any(b not in branches for b in ("hybrid", "cnn")):
        raise ValueError("the checkpoint holds no AdvMIM branch weights ('advmim' -> 'weights' -> hybrid, cnn); "
                         "it was not written by an AdvMIM-family trainer")
    if network == "ensemble":
        return {f"{b}.{k}": v for b in ("hybrid", "cnn") for k, v in branches[b].items()}
    return dict(branches[network])
