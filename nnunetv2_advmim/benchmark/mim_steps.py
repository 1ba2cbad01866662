"""Measurements for the MIM pretraining trainers: step time per strategy and reconstruction loss curves.

``steps``: one process builds the random-MIM, AnatoMask and MPS-AMS trainers on the same plans (same initial
weights), draws batches once from the pretraining loader and times ``train_step`` of the strategies
*interleaved* on the same batches (so load changes on the machine hit all of them alike); reports the median
step time of each and the ratio to random MIM (AnatoMask's extra cost = the EMA teacher's forward + update),
each strategy's training loss along the way (all start from the same weights and see the same batches) and
the validation reconstruction loss after the run (same fixed-seed random masks for all)::

    python -m nnunetv2_advmim.benchmark.mim_steps steps -d 961 -c 2d -n 20 [--stock]

``curves``: train / validation reconstruction loss per epoch from finished runs' checkpoints, as a table and a PNG::

    python -m nnunetv2_advmim.benchmark.mim_steps curves RUN_FOLDER [RUN_FOLDER ...] -o mim_loss_curves.png
"""
import argparse
import os
import time
from typing import Dict, Sequence

import matplotlib
import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnunetv2_advmim.data.input_checks import require_planned
from nnunetv2_advmim.data.pretraining_loader import get_pretraining_dataloaders
from nnunetv2_advmim.runtime.numerics import seed_everything
from nnunetv2_advmim.trainers import nnUNetTrainerMIM as module

matplotlib.use("agg")  # figures go to files; no display is needed
import matplotlib.pyplot as plt  # noqa: E402

from nnunetv2_advmim.runtime.checkpointing import safe_load
from nnunetv2_advmim.cli import DefaultsHelpFormatter

STRATEGIES = ("nnUNetTrainerMIM", "nnUNetTrainerAnatoMask", "nnUNetTrainerMPSAMS")


def strategy_trainers(plans_dict: dict, dataset_json: dict, configuration: str, fold, device: str, n_steps: int,
                      warmup: int, lr: float) -> dict:
    """One initialized trainer per strategy in :data:`STRATEGIES`, all starting from the same network weights so that
    their step times and losses differ by the strategy alone."""
    trainers = {}
    for s in STRATEGIES:
        plans_s = dict(plans_dict, continue_training=False)  # nnU-Net 2.8.1 pops this key in __init__
        t = getattr(module, s)(plans_s, configuration, fold, dataset_json, torch.device(device))
        # the run is treated as num_epochs "epochs" so the masking schedules traverse their range; short-run
        # settings of the _demo variants (lr 1e-3, EMA decay 0.9 -> 0.99)
        t.num_epochs, t.num_iterations_per_epoch = 10, int(np.ceil((n_steps + warmup) / 10))
        t.initial_lr = lr
        if hasattr(t, "ema_decay_start"):
            t.ema_decay_start, t.ema_decay_end = 0.9, 0.99
        t.initialize()
        trainers[s] = t
    ref = trainers[STRATEGIES[0]].network.state_dict()
    for t in trainers.values():
        t.network.load_state_dict(ref)
        t.network.train()
    return trainers


def interleaved_steps(trainers: dict, batches: list, stock_batches, warmup: int, device: str):
    """(seconds per step after ``warmup``, loss of every step) per trainer. Each batch goes through every trainer
    before the next one, so a change of load on the machine hits all of them alike; the stock trainer gets the
    labeled batch of the same index."""
    times = {s: [] for s in trainers}
    losses = {s: [] for s in trainers}
    for i, b in enumerate(batches):
        for s, t in trainers.items():
            t.current_epoch = i * 10 // len(batches)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = t.train_step(stock_batches[i] if s == "nnUNetTrainer" else b)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                times[s].append(time.perf_counter() - t0)
            losses[s].append(float(out["loss"]))
    return times, losses


def step_times(dataset: str, configuration: str, fold="0", n_steps: int = 20, plans: str = "nnUNetPlans",
               device: str = "cpu", warmup: int = 2, seed: int = 0, stock: bool = False, n_val: int = 4,
               lr: float = 1e-3) -> dict:
    """Seconds per ``train_step`` of each strategy in :data:`STRATEGIES`, interleaved on the same batches.

    ``stock=True`` also times the stock ``nnUNetTrainer`` (segmentation step with deep supervision) on labeled
    batches of the same patch size from its own loader, as the reference for fine-tuning / supervised cost."""
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    name = maybe_convert_to_dataset_name(dataset)
    plans_dict = load_json(join(nnUNet_preprocessed, name, plans + ".json"))
    dataset_json = load_json(join(nnUNet_preprocessed, name, "dataset.json"))
    fold = fold if fold == "all" else int(fold)
    seed_everything(seed)
    trainers = strategy_trainers(plans_dict, dataset_json, configuration, fold, device, n_steps, warmup, lr)
    loader, val_loader = get_pretraining_dataloaders(trainers[STRATEGIES[0]])
    batches = [next(loader) for _ in range(n_steps + warmup)]
    val_batches = [next(val_loader) for _ in range(n_val)]
    stock_batches = None
    if stock:
        t = nnUNetTrainer(dict(plans_dict, continue_training=False), configuration, fold, dataset_json,
                          torch.device(device))
        t.initialize()
        t.network.train()
        stock_loader, _ = t.get_dataloaders()
        stock_batches = [next(stock_loader) for _ in range(n_steps + warmup)]
        trainers["nnUNetTrainer"] = t
    times, losses = interleaved_steps(trainers, batches, stock_batches, warmup, device)
    val = {}
    with torch.no_grad():
        for s in STRATEGIES:
            trainers[s].on_validation_epoch_start()  # same fixed-seed random masks for every strategy
            val[s] = float(np.mean([trainers[s].validation_step(b)["loss"] for b in val_batches]))
    return {"times": times, "losses": losses, "val": val}


def format_step_times(result: dict, chunk: int = 5) -> str:
    """Table of median step times (ratio to random MIM) and the training losses (mean per ``chunk`` steps)."""
    times, losses = result["times"], result["losses"]
    base = float(np.median(times[STRATEGIES[0]]))
    lines = [f"{'trainer':<26}{'median s/step':>14}{'ratio to random':>17}{'val loss':>10}  train loss per {chunk} steps"]
    for s, v in times.items():
        m = float(np.median(v))
        curve = " ".join(f"{np.mean(losses[s][i:i + chunk]):.3f}" for i in range(0, len(losses[s]), chunk))
        val = f"{result['val'][s]:.3f}" if s in result["val"] else "-"
        lines.append(f"{s:<26}{m:>14.4f}{m / base:>17.3f}{val:>10}  {curve}")
    return "\n".join(lines)


def loss_curves(run_folders: Sequence[str], checkpoint: str = "checkpoint_final.pth") -> Dict[str, dict]:
    """``{trainer: {'train': [...], 'val': [...]}}`` from the checkpoints' nnU-Net logging."""
    out = {}
    for folder in run_folders:
        path = os.path.join(folder, checkpoint)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist: pass finished pretraining fold folders")
        ckpt = safe_load(path, map_location="cpu")  # weights_only=True: a checkpoint cannot run code
        log = ckpt["logging"]
        out[ckpt["trainer_name"]] = {"train": [float(v) for v in log["train_losses"]],
                                     "val": [float(v) for v in log["val_losses"]]}
    return out


def plot_loss_curves(curves: Dict[str, dict], filename: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in curves.items():
        axes[0].plot(range(len(c["train"])), c["train"], label=name)
        axes[1].plot(range(len(c["val"])), c["val"], label=name)
    axes[0].set_title("train: masked reconstruction loss (own masks)")
    axes[1].set_title("validation: reconstruction loss (random masks 0.6)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(filename, dpi=90)
    plt.close(fig)
    return filename


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter, prog="python -m nnunetv2_advmim.benchmark.mim_steps", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("steps", help="median train_step time per strategy, interleaved on the same batches")
    p.add_argument("-d", required=True)
    p.add_argument("-c", required=True)
    p.add_argument("-f", default="0")
    p.add_argument("-p", default="nnUNetPlans")
    p.add_argument("-n", type=int, default=20, help="timed steps per strategy (default 20)")
    p.add_argument("-device", default="cpu")
    p.add_argument("--stock", action="store_true", help="also time the stock nnUNetTrainer step")
    q = sub.add_parser("curves", help="loss curves of finished runs (table + PNG)")
    q.add_argument("folders", nargs="+")
    q.add_argument("-o", default="mim_loss_curves.png")
    args = parser.parse_args(argv)
    if args.cmd == "steps":
        try:  # a clear error naming the command to run first, not a traceback
            require_planned(args.d, args.c, args.p, command="the benchmark")
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            parser.exit(2, f"{parser.prog}: error: {e}\n")
        print(format_step_times(step_times(args.d, args.c, args.f, args.n, args.p, args.device, stock=args.stock)))
    else:
        curves = loss_curves(args.folders)
        for name, c in curves.items():
            print(f"{name}\n  train: {' '.join(f'{v:.3f}' for v in c['train'])}\n  val:   "
                  f"{' '.join(f'{v:.3f}' for v in c['val'])}")
        print(f"Wrote {plot_loss_curves(curves, args.o)}")


if __name__ == "__main__":
    main()
