"""Foreground-aware crops of unlabeled images, located by the networks' own pseudo-labels.

nnU-Net centres a third of its labeled crops on foreground (``oversample_foreground_percent``), using the
``class_locations`` its preprocessing stores with every labeled case. Unlabeled cases have no labels, so their
crops are random, and the two streams then differ in how much foreground a crop holds: a discriminator can tell
them apart by that alone. This module gives the unlabeled stream the same kind of locations, computed from
pseudo-labels instead of labels:

- :func:`pseudo_label_locations`: the argmax of a prediction, sampled by nnU-Net's own
  ``DefaultPreprocessor._sample_foreground_locations`` (the format ``nnUNetDataLoader.get_bbox`` reads);
- :func:`predict_locations`: those locations for whole preprocessed cases, predicted by sliding window with
  nnU-Net's ``nnUNetPredictor`` (no mirroring);
- :func:`refresh_due` and :func:`next_cases`: when to recompute them and for which cases (a window that cycles
  through the pool, so a large pool costs a bounded prediction time per refresh); :func:`refresh_locations` does
  one refresh and hands the result to the loader.

Labels of unlabeled cases are never read: ``UnlabeledDataset`` removes ``class_locations`` from their properties.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor


def pseudo_label_locations(logits: torch.Tensor, foreground_labels: Sequence[int], seed: int = 1234) -> Dict[int, list]:
    """Foreground locations of the argmax of ``logits`` (K, *spatial), per label, as nnU-Net stores them for
    labeled cases: ``{label: array of (0, *voxel)}`` (an empty list where the label is absent)."""
    seg = logits.argmax(0)[None].cpu().numpy().astype(np.int16)
    return DefaultPreprocessor._sample_foreground_locations(seg, [int(c) for c in foreground_labels], seed)


def refresh_due(epoch: int, every: int, have_locations: bool) -> bool:
    """Whether pseudo-label locations are recomputed at the start of ``epoch``: every ``every`` epochs from epoch
    ``every`` on (the networks first learn something), and at once after a resume that lost them."""
    if every <= 0 or epoch < every:
        return False
    return epoch % every == 0 or not have_locations


def next_cases(keys: Sequence[str], cursor: int, max_cases: int) -> (List[str], int):
    """Up to ``max_cases`` of ``keys`` from position ``cursor`` on (wrapping around), and the next cursor."""
    keys = list(keys)
    if not keys:
        return [], 0
    if max_cases is None or max_cases >= len(keys):
        return keys, 0
    cursor %= len(keys)
    chosen = [keys[(cursor + i) % len(keys)] for i in range(max_cases)]
    return chosen, (cursor + max_cases) % len(keys)


def predict_locations(predictor, dataset, keys: Sequence[str], foreground_labels: Sequence[int],
                      seed: int = 1234) -> Dict[str, dict]:
    """``{case: pseudo-label locations}`` for preprocessed ``dataset`` cases (``load_data``), predicted with an
    initialised ``nnUNetPredictor`` (``predict_sliding_window_return_logits``, the network as it is now)."""
    out = {}
    for k in keys:
        data = torch.from_numpy(np.asarray(dataset.load_data(k))).float()
        logits = predictor.predict_sliding_window_return_logits(data)
        out[k] = pseudo_label_locations(logits, foreground_labels, seed)
    return out


def locations_state(locations: Dict[str, dict]) -> Dict[str, Dict[int, torch.Tensor]]:
    """``{case: {label: locations}}`` as int64 tensors, so a checkpoint holding them loads with
    ``torch.load(weights_only=True)`` (numpy arrays would be refused)."""
    return {str(case): {int(label): torch.as_tensor(np.asarray(v, dtype=np.int64)) for label, v in locs.items()}
            for case, locs in locations.items()}


def locations_from_state(state: Dict[str, Dict[int, torch.Tensor]]) -> Dict[str, dict]:
    """Inverse of :func:`locations_state`: numpy arrays, an absent label as an empty list (nnU-Net's format)."""
    return {case: {int(label): (t.cpu().numpy() if t.numel() else []) for label, t in locs.items()}
            for case, locs in state.items()}


def refresh_locations(loader, predictor, cursor: int, max_cases: int, foreground_labels: Sequence[int],
                      oversample_foreground_percent: float, seed: int = 1234, rank: int = 0, world: int = 1,
                      gather=lambda found: [found]) -> Tuple[Dict[str, dict], int]:
    """Predict the next window of ``loader``'s unlabeled pool (:func:`next_cases` from ``cursor``; this rank's
    share of it under DDP, ``gather`` brings every rank's results together) and hand the locations to the
    ``SemiSupervisedLoader`` (``add_pseudo_locations``). Returns (the window's locations, the next cursor)."""
    keys, cursor = next_cases(loader.unlabeled_keys, cursor, max_cases)
    found = predict_locations(predictor, loader.unlabeled_dataset, keys[rank::world], foreground_labels, seed)
    found = {k: v for part in gather(found) for k, v in part.items()}
    loader.add_pseudo_locations(found, oversample_foreground_percent)
    return found, cursor
