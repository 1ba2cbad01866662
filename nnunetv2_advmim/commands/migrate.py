"""``nnUNetv2_advmim_migrate``: bring AdvMIM-family result folders to the network their trainer predicts with now.

Every AdvMIM-family checkpoint holds both networks (``advmim`` -> ``weights`` -> ``hybrid``, ``cnn``) and records
which one its trainer predicted with (``advmim`` -> ``predict_with``); ``network_weights`` and ``optimizer_state``
are that network's. Folders trained while the family predicted with S (the hybrid) by default no longer match
``nnUNetTrainerAdvMIM``, which predicts with C: ``nnUNetv2_predict`` fails to load their ``network_weights`` and
``--c`` refuses them. This command rewrites each checkpoint for the network the trainer class predicts with today
(or ``--predict-with``): ``network_weights`` and ``optimizer_state`` become that network's, ``predict_with`` is
updated, and nothing else changes (both networks' weights, optimizers, discriminators, logs). The original file is
kept next to it as ``<checkpoint>.bak-<old network>``; restore it to undo.
"""
import argparse
import glob
import os
import shutil
import sys
from typing import List, Optional

from nnunetv2_advmim.runtime.checkpointing import atomic_save, safe_load
from nnunetv2_advmim.runtime.weights import ADVMIM_NETWORKS, advmim_network_weights

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")


def migrate_checkpoint(checkpoint: dict, predict_with: str) -> Optional[str]:
    """Rewrite ``checkpoint`` (in place) to predict with ``predict_with``; returns the network it predicted with
    before, or None when it already matched."""
    extra = checkpoint.get("advmim")
    if not extra or "weights" not in extra:
        raise ValueError("not written by an AdvMIM-family trainer (no 'advmim' state)")
    old = extra.get("predict_with")
    if old not in ADVMIM_NETWORKS:
        raise ValueError(f"the checkpoint does not say which network it predicts with ('advmim' -> 'predict_with': "
                         f"{old!r})")
    if old == predict_with:
        return None
    checkpoint["network_weights"] = advmim_network_weights(checkpoint, predict_with)
    primary = "cnn" if predict_with == "cnn" else "hybrid"  # the trainer's self.optimizer (configure_optimizers)
    if "optimizers" in extra:
        checkpoint["optimizer_state"] = extra["optimizers"][primary]
    extra["predict_with"] = predict_with
    return old


def trainer_predict_with(trainer_name: str) -> str:
    """The network the trainer class named ``trainer_name`` predicts with (nnU-Net's trainer lookup)."""
    from nnunetv2_advmim.commands.study import find_trainer
    network = getattr(find_trainer(trainer_name), "predict_with", None)
    if network not in ADVMIM_NETWORKS:
        raise ValueError(f"{trainer_name} is not an AdvMIM-family trainer (no predict_with)")
    return network


def migrate_folder(model_folder: str, predict_with: Optional[str] = None, dry_run: bool = False,
                   log=print) -> List[tuple]:
    """Migrate every checkpoint in ``model_folder`` (``<Trainer>__<plans>__<configuration>`` or one of its
    ``fold_*`` folders). Returns ``(file, old network, new network)`` for each checkpoint that changed."""
    files = sorted(f for name in CHECKPOINTS for f in glob.glob(os.path.join(model_folder, "fold_*", name))
                   + glob.glob(os.path.join(model_folder, name)))
    if not files:
        raise FileNotFoundError(f"no {' / '.join(CHECKPOINTS)} in {model_folder} or its fold_* folders; give the "
                                f"model folder $nnUNet_results/<Dataset>/<Trainer>__<plans>__<configuration>")
    changed = []
    for f in files:
        checkpoint = safe_load(f, map_location="cpu")
        target = predict_with or trainer_predict_with(checkpoint["trainer_name"])
        try:
            old = migrate_checkpoint(checkpoint, target)
        except ValueError as e:
            raise ValueError(f"{f}: {e}; nothing to migrate") from None
        if old is None:
            log(f"{f}: predicts with {target} already")
            continue
        changed.append((f, old, target))
        if dry_run:
            log(f"{f}: would predict with {target} instead of {old}")
            continue
        backup = f"{f}.bak-{old}"
        if os.path.exists(backup):
            raise FileExistsError(f"{backup} exists; move it away before migrating {f} again")
        shutil.copy2(f, backup)
        atomic_save(checkpoint, f)
        log(f"{f}: predicts with {target} instead of {old} (the original is {os.path.basename(backup)})")
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_advmim_migrate",
        description="Rewrite the checkpoints of AdvMIM-family result folders trained while the family predicted with "
                    "S (the hybrid) so that nnUNetv2_predict and --c use the network the trainer predicts with now "
                    "(C for nnUNetTrainerAdvMIM). Both networks stay in the checkpoint; the originals are kept as "
                    "*.bak-<network>.")
    parser.add_argument("-i", nargs="+", required=True,
                        help="model folders: $nnUNet_results/<Dataset>/<Trainer>__<plans>__<configuration>")
    parser.add_argument("--predict-with", choices=ADVMIM_NETWORKS, default=None,
                        help="network to predict with (default: the one the trainer class predicts with today)")
    parser.add_argument("--dry-run", action="store_true", help="only say what would change")
    args = parser.parse_args(argv)
    try:
        for folder in args.i:
            migrate_folder(folder, args.predict_with, args.dry_run)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
