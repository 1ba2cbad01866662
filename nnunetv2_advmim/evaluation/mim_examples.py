"""Visual check of masked image modeling: what the network sees, what it must reconstruct, what it returns.

``save_mim_figure`` draws one row per image (channel 0; 3D: the middle slice along the first axis) with the
columns: input | mask (masked blocks blue, AnatoMask's hard / MPS-AMS's lesion-like blocks red) | masked input
(what the network gets) | target (block-normalised image) | reconstruction (the
prediction in masked blocks, the target elsewhere) | prediction (everywhere).

The MIM trainers write ``mim_examples.png`` at the end of training; ``nnUNetv2_advmim_mim_visualize``
(:mod:`nnunetv2_advmim.commands.mim_visualize`) writes it for any checkpoint of a trained run.
"""
import os
from typing import Optional, Sequence

import matplotlib

matplotlib.use("agg")  # figures go to files; no display is needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import torch

from nnunetv2_advmim.data.pretraining_loader import pretraining_cases
from nnunetv2_advmim.data.semisup_loader import nnUNetUnlabeledDataLoader
from nnunetv2_advmim.data.unlabeled import UnlabeledDataset
from nnunetv2_advmim.methods.masking import upsample_mask
from nnunetv2_advmim.methods.mim import normalised_targets


def _slice(t: torch.Tensor) -> np.ndarray:
    """(C or 1, *spatial) -> 2D array of channel 0 (3D: middle slice along the first spatial axis)."""
    a = t[0].detach().float().cpu().numpy()
    return a[a.shape[0] // 2] if a.ndim == 3 else a


def _gray(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, 1), np.percentile(a, 99)
    return np.clip((a - lo) / max(hi - lo, 1e-8), 0, 1)


def save_mim_figure(filename: str, images: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor,
                    block: Sequence[int], highlight: Optional[torch.Tensor] = None, max_images: int = 4,
                    title: str = "") -> str:
    """Write the figure (module docstring) for ``images`` (B, C, *spatial), block ``mask`` (B, *grid), ``pred``
    (B, C, *spatial) and optional highlighted blocks (B, *grid); returns ``filename``."""

    if isinstance(pred, (list, tuple)):
        pred = pred[0]
    spatial = tuple(images.shape[2:])
    target = normalised_targets(images, block)
    vm = upsample_mask(mask, spatial, block)
    vh = upsample_mask(highlight, spatial, block) if highlight is not None else torch.zeros_like(vm)
    recon = torch.where(vm, pred.float(), target)
    masked_in = images.masked_fill(vm, 0)
    n = min(int(max_images), images.shape[0])
    cols = ["input", "masked: blue, hard/lesion-like: red", "masked input", "target (block-normalised)", "reconstruction",
            "prediction"]
    fig, axes = plt.subplots(n, len(cols), figsize=(3 * len(cols), 3 * n), squeeze=False)
    for i in range(n):
        img = _gray(_slice(images[i]))
        m, h = _slice(vm[i]) > 0.5, _slice(vh[i]) > 0.5
        overlay = np.stack([img] * 3, -1)
        overlay[m & ~h] = 0.5 * overlay[m & ~h] + 0.5 * np.array([0.2, 0.4, 1.0])
        overlay[h] = 0.4 * overlay[h] + 0.6 * np.array([1.0, 0.1, 0.1])
        t = _slice(target[i])
        lo, hi = np.percentile(t, 1), np.percentile(t, 99)
        panels = [(img, "gray", 0, 1), (overlay, None, None, None), (_gray(_slice(masked_in[i])), "gray", 0, 1),
                  (t, "gray", lo, hi), (_slice(recon[i]), "gray", lo, hi), (_slice(pred[i]), "gray", lo, hi)]
        for j, (a, cmap, vmin, vmax) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=10)
        n_sel = int(highlight[i].sum()) if highlight is not None else 0
        axes[i][0].set_ylabel(f"{int(mask[i].sum())}/{mask[i].numel()} masked, {n_sel} red", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
    fig.savefig(filename, dpi=80)
    plt.close(fig)
    return filename


def example_batch(trainer, num_images: int, seed: int = 0) -> torch.Tensor:
    """``num_images`` random patch-size crops of the trainer's validation images (no augmentation, no labels,
    seeded, in this process)."""
    _, val = pretraining_cases(trainer)
    cm = trainer.configuration_manager
    dl = nnUNetUnlabeledDataLoader(UnlabeledDataset(val), int(num_images), cm.patch_size, cm.patch_size,
                                   trainer.label_manager, transforms=None)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        batch = dl.generate_train_batch()
    finally:
        np.random.set_state(state)
    return batch["data"]
