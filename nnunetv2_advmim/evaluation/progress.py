"""What AdvMIM training logs per epoch and plots next to nnU-Net's ``progress.png`` (``progress_advmim.png``): the
log keys, the plot's panels, and the per-network pseudo Dice of the validation batches."""
from typing import Dict, List, Sequence

import matplotlib
import numpy as np
import torch
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn

from nnunetv2_advmim.methods.advmim import BRANCHES

matplotlib.use("agg")  # figures go to files; no display is needed
import matplotlib.pyplot as plt  # noqa: E402


def plot_advmim_progress(logging: Dict[str, list], keys: Dict[str, Sequence[str]], filename: str) -> None:
    """Second progress plot next to nnU-Net's ``progress.png``: one panel per group of logged per-epoch values."""
    n_epochs = min(len(logging[k]) for group in keys.values() for k in group if k in logging)
    if n_epochs == 0:
        return
    fig, axes = plt.subplots(len(keys), 1, figsize=(12, 4 * len(keys)))
    for ax, (title, group) in zip(np.atleast_1d(axes), keys.items()):
        for k in group:
            if k in logging:
                ax.plot(range(n_epochs), logging[k][:n_epochs], label=k, linewidth=2, marker="o", markersize=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(filename)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- AdvMIM log keys
# the per-network terms a training step returns (``methods.advmim.advmim_step``), logged as advmim_<network>_<term>
STEP_KEYS = ("sup", "cross_teaching", "masked_sup", "masked_ce", "masked_dice", "adversarial", "total", "certainty",
             "disc_loss", "disc_real", "disc_fake")


def step_keys() -> List[str]:
    """``<network>_<term>`` for every network and :data:`STEP_KEYS` term, in the order of :func:`pack_terms`."""
    return [f"{b}_{k}" for b in BRANCHES for k in STEP_KEYS]


def pack_terms(terms: Dict[str, Dict[str, torch.Tensor]], zero: torch.Tensor) -> torch.Tensor:
    """One step's per-network terms as one vector on their device (``zero`` where a term is absent), so an epoch's
    values leave the GPU in one transfer."""
    return torch.stack([terms[b].get(k, zero).float() for b in BRANCHES for k in STEP_KEYS])


def advmim_log_keys() -> List[str]:
    """Every per-epoch value the AdvMIM trainers log next to nnU-Net's own."""
    return [f"advmim_{k}" for k in step_keys()] + ["advmim_lambda_ct"] + \
        [f"advmim_{b}_pseudo_dice" for b in BRANCHES]


def advmim_plot_groups() -> Dict[str, List[str]]:
    """The panels of ``progress_advmim.png``: title -> logged keys."""
    groups = {f"{b} losses": [f"advmim_{b}_{k}" for k in ("sup", "masked_sup", "masked_ce", "masked_dice",
                                                          "cross_teaching", "total")] for b in BRANCHES}
    groups["adversarial (generator) and discriminator"] = [
        f"advmim_{b}_{k}" for b in BRANCHES for k in ("adversarial", "disc_loss", "disc_real", "disc_fake")]
    groups["mean pseudo-label certainty, lambda_ct(t)"] = [f"advmim_{b}_certainty" for b in BRANCHES] + \
        ["advmim_lambda_ct"]
    groups["pseudo Dice per branch"] = [f"advmim_{b}_pseudo_dice" for b in BRANCHES] + ["mean_fg_dice"]
    return groups


# ----------------------------------------------------------------------------------------------- pseudo Dice
def hard_tp_fp_fn(output: torch.Tensor, target: torch.Tensor, label_manager) -> tuple:
    """Foreground tp/fp/fn of the argmax segmentation, as nnU-Net's ``validation_step`` counts them (ignore label
    masked), as numpy arrays."""
    seg = output.argmax(1)[:, None]
    onehot = torch.zeros(output.shape, device=output.device, dtype=torch.float16).scatter_(1, seg, 1)
    mask = None
    if label_manager.has_ignore_label:
        mask = (target != label_manager.ignore_label).float()
        target = torch.where(target == label_manager.ignore_label, torch.zeros_like(target), target)
    tp, fp, fn, _ = get_tp_fp_fn_tn(onehot, target, axes=[0] + list(range(2, output.ndim)), mask=mask)
    return tuple(v.detach().cpu().numpy()[1:] for v in (tp, fp, fn))


def pseudo_dice(tp, fp, fn) -> float:
    """Mean foreground Dice over classes from summed counts (nnU-Net's pseudo Dice); NaN where no class has any."""
    dice = [2 * i / (2 * i + j + k) if (2 * i + j + k) > 0 else np.nan for i, j, k in zip(tp, fp, fn)]
    return float(np.nanmean(dice)) if not np.all(np.isnan(dice)) else float("nan")
