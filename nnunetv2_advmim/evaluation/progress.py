"""The second progress plot of AdvMIM training, next to nnU-Net's ``progress.png``."""
from typing import Dict, Sequence

import matplotlib
import numpy as np

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
