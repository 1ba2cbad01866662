"""Which tensors of a checkpoint fit a network, as nnU-Net's ``load_pretrained_weights`` decides it.

nnU-Net 2.8.1 demands that every key of the target network, except those containing ``.seg_layers.``, exists in
``checkpoint['network_weights']`` with the same shape; extra checkpoint keys are ignored. :func:`compare_state_dicts`
sorts the keys the same way:

- ``matched``: target keys filled from the checkpoint (same name and shape);
- ``missing``: target keys the checkpoint lacks (stock loading aborts);
- ``shape_mismatch``: same name, other shape (stock loading aborts);
- ``skipped``: ``.seg_layers.`` keys, never transferred (the new task's output layers);
- ``unused``: checkpoint keys the target does not have (ignored, e.g. the MIM ``mask_token``).

AdvMIM trains two networks; :func:`load_pretrained_branches` applies the same rule to each network a checkpoint
holds (:func:`checkpoint_branches`), and :func:`route_pretrained_weights` lets ``nnUNetv2_train -pretrained_weights``
reach it.
"""
import os
import weakref
from typing import Callable, Dict, Iterable, List

import torch
from torch import nn

from nnunetv2_advmim.runtime.checkpointing import safe_load
from nnunetv2_advmim.wrappers import unwrap_model

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


def checkpoint_branches(ckpt: dict) -> Dict[str, Dict[str, torch.Tensor]]:
    """The AdvMIM networks a checkpoint holds by name (``hybrid`` = S, ``cnn`` = C): ``branch_weights`` of a joint
    pretraining (C's are its ``network_weights``), or ``advmim -> weights`` of an AdvMIM training; empty for a
    checkpoint of one network."""
    if not isinstance(ckpt, dict):
        return {}
    if "branch_weights" in ckpt:
        return {"cnn": ckpt["network_weights"], **ckpt["branch_weights"]}
    return dict((ckpt.get("advmim") or {}).get("weights") or {})


def _fit_report(module: nn.Module, source: Dict[str, torch.Tensor]) -> dict:
    return compare_state_dicts(module.state_dict(), source, skip=(".seg_layers.", "mask_token"))


def _load(module: nn.Module, source: Dict[str, torch.Tensor]) -> None:
    own = module.state_dict()
    own.update({k: v for k, v in source.items() if k in own and ".seg_layers." not in k})
    module.load_state_dict(own)


def _misfit(filename: str, branch: str, module: nn.Module, report: dict) -> ValueError:
    lines = [f"  missing: {k}" for k in report["missing"]] + \
            [f"  {k}: expected {exp}, checkpoint has {got}" for k, exp, got in report["shape_mismatch"]]
    return ValueError(f"{filename} does not fit the AdvMIM {branch} network ({type(module).__name__}): "
                      f"{len(report['missing'])} tensors missing, {len(report['shape_mismatch'])} of another shape:\n"
                      + "\n".join(lines[:50]) + ("\n  ..." if len(lines) > 50 else "") +
                      f"\nTrain the checkpoint with the same plans and network class; the full list: "
                      f"nnUNetv2_advmim_check_weights {filename} -d DATASET -c CONFIGURATION -tr "
                      f"{'nnUNetTrainerAdvMIM_Hybrid' if branch == 'hybrid' else 'nnUNetTrainer'}")


def _read_checkpoint(filename: str, what: str) -> dict:
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"pretrained weights for {what}: {filename} does not exist")
    ckpt = safe_load(filename, map_location="cpu")  # weights_only: a checkpoint cannot run code
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise ValueError(f"{filename} is not an nnU-Net checkpoint (no 'network_weights'); pass a checkpoint_*.pth")
    return ckpt


def load_branch_weights(module: nn.Module, filename: str, branch: str) -> None:
    """Load a checkpoint into one branch with nnU-Net's pretrained-weights rule.

    Takes the checkpoint's weights of ``branch`` where it holds both networks (:func:`checkpoint_branches`), else
    ``checkpoint['network_weights']``. Every key of the branch except ``.seg_layers.`` must exist with the same
    shape; extra keys (e.g. ``mask_token``) are ignored; loads onto the CPU first (any saving device).
    """
    ckpt = _read_checkpoint(filename, f"the AdvMIM {branch} branch")
    source = checkpoint_branches(ckpt).get(branch, ckpt["network_weights"])
    report = _fit_report(module, source)
    if not report["loadable"]:
        raise _misfit(filename, branch, module, report)
    _load(module, source)


def load_pretrained_branches(nets: Dict[str, nn.Module], filename: str, primary: str) -> List[str]:
    """``-pretrained_weights`` for AdvMIM's networks ``nets`` (``{"hybrid": S, "cnn": C}``); returns the names loaded.

    A checkpoint holding both networks (:func:`checkpoint_branches`) loads each into its own; a checkpoint of one
    network loads into ``primary`` if it fits there, else into the other network it fits (a C checkpoint into C, an
    S checkpoint into S). Nothing is loaded unless everything that is loaded fits.
    """
    ckpt = _read_checkpoint(filename, "AdvMIM")
    both = checkpoint_branches(ckpt)
    if all(b in both for b in nets):
        reports = {b: _fit_report(m, both[b]) for b, m in nets.items()}
        for b, r in reports.items():
            if not r["loadable"]:
                raise _misfit(filename, b, nets[b], r)
        for b, m in nets.items():
            _load(m, both[b])
        return list(nets)
    order = [primary] + [b for b in nets if b != primary]
    reports = {b: _fit_report(nets[b], ckpt["network_weights"]) for b in order}
    for b in order:
        if reports[b]["loadable"]:
            _load(nets[b], ckpt["network_weights"])
            return [b]
    raise _misfit(filename, primary, nets[primary], reports[primary])


_ROUTES: "weakref.WeakKeyDictionary[nn.Module, weakref.WeakMethod]" = weakref.WeakKeyDictionary()


def route_pretrained_weights(network: nn.Module, load: Callable[[str], None]) -> None:
    """Make ``nnUNetv2_train -pretrained_weights FILE`` call ``load(FILE)`` when its target is ``network``.

    nnU-Net's ``run_training`` passes only the trainer's ``network`` to its ``load_pretrained_weights``, so a trainer
    with several networks cannot see the file. The function that ``nnunetv2.run.run_training`` calls is wrapped once
    per process: for a network registered here it calls the trainer's bound method ``load`` (held weakly, so a
    finished trainer is freed), for every other network nnU-Net's own function, unchanged.
    """
    from nnunetv2.run import run_training

    if not getattr(run_training.load_pretrained_weights, "routes_advmim_networks", False):
        stock = run_training.load_pretrained_weights

        def load_pretrained_weights(net, fname, verbose=False):
            target = _ROUTES.get(unwrap_model(net))
            method = target() if target is not None else None
            return stock(net, fname, verbose) if method is None else method(fname)

        load_pretrained_weights.routes_advmim_networks = True
        run_training.load_pretrained_weights = load_pretrained_weights
    _ROUTES[unwrap_model(network)] = weakref.WeakMethod(load)


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
