"""Challenge metrics per label with physical spacing: Dice, HD95, ASD, NSD.

Everything here works on plain integer label maps (numpy arrays) plus a spacing in mm per array axis; no
file I/O, no nnU-Net objects. ``evaluate.py`` adds the reading through nnU-Net's reader/writer classes.

Definitions (``A`` = reference mask, ``B`` = predicted mask of one label, ``dA``/``dB`` their surfaces):

- **Surface**: the voxels of a mask that have a 6-neighbour (3D; 4-neighbour in 2D) outside the mask,
  i.e. ``mask XOR binary_erosion(mask)`` with the image border counting as outside. Distances are
  Euclidean between surface voxel centres, scaled by the spacing, in mm. The surfaces and the
  nearest-neighbour distances come from MONAI (``monai.metrics.utils.get_edge_surface_distance``), the
  code MONAI's own ``compute_hausdorff_distance``/``compute_average_surface_distance``/
  ``compute_surface_dice`` use, computed once per label and shared by the three surface metrics
  (the test suite checks the values equal those three MONAI functions).
- **Dice** = ``2 |A ∩ B| / (|A| + |B|)``.
- **HD95** (default ``hd95_definition="monai"``) = ``max(P95(d(dB -> dA)), P95(d(dA -> dB)))``: the 95th
  percentile of each directed set of surface distances, then the larger of the two; this is MONAI's
  ``compute_hausdorff_distance(percentile=95)``. medpy's ``binary.hd95``, which the semi-supervised
  papers (e.g. SSL4MIS, AdvMIM's evaluation code) used, takes **one** 95th percentile of the union of
  both directed sets: ``P95(d(dB -> dA) ∪ d(dA -> dB))``. Surfaces and distances are the same in both
  (medpy also uses a connectivity-1 erosion and the Euclidean distance with voxel spacing), so only the
  pooling differs; medpy's value is at most MONAI's (each directed set has at least 95 % of its values
  at or below MONAI's value, so the union does too) and equals it for symmetric situations such as a
  shifted cube. ``hd95_definition="medpy"`` gives the medpy value. Both use linear interpolation between order statistics (numpy/torch default).
- **ASD** = the symmetric average surface distance: the mean of all distances of both directed sets
  pooled (MONAI ``compute_average_surface_distance(symmetric=True)``). medpy's ``asd`` is the directed
  mean ``mean(d(dB -> dA))`` and medpy's ``assd`` the mean of the two directed means; they differ from
  this when the two surfaces have different numbers of voxels.
- **NSD** (normalised surface Dice, Nikolov et al. 2021) at tolerance ``tau`` mm =
  ``(#{d in d(dB->dA) <= tau} + #{d in d(dA->dB) <= tau}) / (|dB| + |dA|)`` with surfaces counted in
  voxels (MONAI ``compute_surface_dice(use_subvoxels=False)``).

Empty masks (documented conventions, tested in ``tests/test_metrics.py``):

- reference **and** prediction empty for a label: all four metrics are NaN (``both_empty="nan"``, the
  default; nnU-Net's own evaluation does the same for Dice, and NaN values are left out of means), or
  with ``both_empty="perfect"``: Dice 1, NSD 1, HD95 0, ASD 0 (BraTS-style).
- exactly one of them empty: Dice 0 and NSD 0; HD95 and ASD are the image diagonal in mm, the largest
  distance possible in the image (``one_empty_distance="diagonal"``, default, BraTS-style penalty that
  keeps means finite), or NaN (``one_empty_distance="nan"``, left out of means).

2D data stored as 3D with one slice (nnU-Net's SimpleITK reader gives 2D images the shape ``(1, y, x)``
and spacing ``999`` on the first axis) is evaluated in 2D: axes of size 1 are dropped before the surface
computation (a one-voxel-thick slab would otherwise be all surface).
"""
import math
import warnings
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance

METRICS = ("Dice", "HD95", "ASD", "NSD")
BOTH_EMPTY_CHOICES = ("nan", "perfect")
ONE_EMPTY_DISTANCE_CHOICES = ("diagonal", "nan")
HD95_DEFINITIONS = ("monai", "medpy")


def _drop_singleton_axes(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float]):
    if ref.shape != pred.shape:
        raise ValueError(f"reference and prediction shapes differ: {ref.shape} vs {pred.shape}")
    if len(spacing) != ref.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} entries but the arrays have {ref.ndim} axes")
    keep = [i for i, s in enumerate(ref.shape) if s > 1]
    if len(keep) == ref.ndim:
        return ref, pred, tuple(float(s) for s in spacing)
    if not keep:  # a single voxel: keep one axis so that the surface code has something to work on
        keep = [ref.ndim - 1]
    new_shape = tuple(ref.shape[i] for i in keep)
    return ref.reshape(new_shape), pred.reshape(new_shape), tuple(float(spacing[i]) for i in keep)


def surface_distances(ref_mask: np.ndarray, pred_mask: np.ndarray, spacing: Sequence[float]):
    """Directed surface distances in mm ``(pred -> ref, ref -> pred)`` of two non-empty boolean masks (MONAI)."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about empty masks; callers handle those before
        _, (d_pred_ref, d_ref_pred), _ = get_edge_surface_distance(
            torch.as_tensor(np.ascontiguousarray(pred_mask, dtype=bool)),
            torch.as_tensor(np.ascontiguousarray(ref_mask, dtype=bool)),
            distance_metric="euclidean", spacing=list(spacing), symmetric=True)
    return (np.asarray(d_pred_ref, dtype=np.float64).ravel(), np.asarray(d_ref_pred, dtype=np.float64).ravel())


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))  # linear interpolation, same as torch.quantile and medpy


def binary_metrics(ref_mask: np.ndarray, pred_mask: np.ndarray, spacing: Sequence[float], nsd_tolerance: float = 1.0,
                   both_empty: str = "nan", one_empty_distance: str = "diagonal",
                   hd95_definition: str = "monai") -> Dict[str, float]:
    """Dice, HD95 (mm), ASD (mm) and NSD at ``nsd_tolerance`` mm of one binary mask pair (module docstring)."""
    if both_empty not in BOTH_EMPTY_CHOICES:
        raise ValueError(f"both_empty must be one of {BOTH_EMPTY_CHOICES}, got {both_empty!r}")
    if one_empty_distance not in ONE_EMPTY_DISTANCE_CHOICES:
        raise ValueError(f"one_empty_distance must be one of {ONE_EMPTY_DISTANCE_CHOICES}, got {one_empty_distance!r}")
    if hd95_definition not in HD95_DEFINITIONS:
        raise ValueError(f"hd95_definition must be one of {HD95_DEFINITIONS}, got {hd95_definition!r}")
    if not (nsd_tolerance >= 0 and math.isfinite(nsd_tolerance)):
        raise ValueError(f"nsd_tolerance must be a finite number >= 0 (mm), got {nsd_tolerance}")
    ref_mask = np.asarray(ref_mask, dtype=bool)
    pred_mask = np.asarray(pred_mask, dtype=bool)
    ref_mask, pred_mask, spacing = _drop_singleton_axes(ref_mask, pred_mask, spacing)
    n_ref, n_pred = int(ref_mask.sum()), int(pred_mask.sum())
    if n_ref == 0 and n_pred == 0:
        if both_empty == "perfect":
            return {"Dice": 1.0, "HD95": 0.0, "ASD": 0.0, "NSD": 1.0}
        return {m: float("nan") for m in METRICS}
    if n_ref == 0 or n_pred == 0:
        if one_empty_distance == "diagonal":
            dist = float(np.sqrt(np.sum((np.asarray(ref_mask.shape) * np.asarray(spacing)) ** 2)))
        else:
            dist = float("nan")
        return {"Dice": 0.0, "HD95": dist, "ASD": dist, "NSD": 0.0}
    intersection = int(np.logical_and(ref_mask, pred_mask).sum())
    d_pred_ref, d_ref_pred = surface_distances(ref_mask, pred_mask, spacing)
    pooled = np.concatenate([d_pred_ref, d_ref_pred])
    if hd95_definition == "monai":
        hd95 = max(_percentile(d_pred_ref, 95), _percentile(d_ref_pred, 95))
    else:
        hd95 = _percentile(pooled, 95)
    nsd = float(np.sum(pooled <= nsd_tolerance) / pooled.size)
    return {"Dice": 2.0 * intersection / (n_ref + n_pred), "HD95": hd95, "ASD": float(pooled.mean()), "NSD": nsd}


def label_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], labels: Iterable[int],
                  nsd_tolerance: Union[float, Dict[int, float]] = 1.0, ignore_label: Optional[int] = None,
                  both_empty: str = "nan", one_empty_distance: str = "diagonal",
                  hd95_definition: str = "monai") -> Dict[int, Dict[str, float]]:
    """Per-label metrics of two integer label maps with the same shape; ``spacing`` in mm per array axis.

    Returns ``{label: {"Dice", "HD95", "ASD", "NSD", "n_ref", "n_pred", "empty"}}`` where ``n_ref``/``n_pred``
    count voxels and ``empty`` is ``"both"``, ``"reference"``, ``"prediction"`` or ``""``. ``nsd_tolerance``
    is one number in mm or a dict label -> mm. Voxels where the reference holds ``ignore_label``
    (nnU-Net's ignore label) are set to background in both maps before anything is computed.
    """
    reference = np.asarray(reference)
    prediction = np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference and prediction shapes differ: {reference.shape} vs {prediction.shape}")
    if ignore_label is not None:
        ignore = reference == ignore_label
        reference = np.where(ignore, 0, reference)
        prediction = np.where(ignore, 0, prediction)
    out = {}
    for label in labels:
        label = int(label)
        tol = nsd_tolerance.get(label, nsd_tolerance.get(str(label))) if isinstance(nsd_tolerance, dict) \
            else nsd_tolerance
        if tol is None:
            raise ValueError(f"no NSD tolerance given for label {label} (tolerances: {nsd_tolerance})")
        r, p = reference == label, prediction == label
        values = binary_metrics(r, p, spacing, float(tol), both_empty, one_empty_distance, hd95_definition)
        n_ref, n_pred = int(r.sum()), int(p.sum())
        values.update(n_ref=n_ref, n_pred=n_pred,
                      empty="both" if n_ref == n_pred == 0 else "reference" if n_ref == 0 else
                      "prediction" if n_pred == 0 else "")
        out[label] = values
    return out


def summarize(per_case: Sequence[Dict[int, Dict[str, float]]], labels: Iterable[int]):
    """Mean, std (population, ``ddof=0``) and number of non-NaN values per label and metric, plus the
    foreground mean (the mean over labels of the per-label means, as nnU-Net's ``foreground_mean``)."""
    labels = [int(label) for label in labels]
    mean, std, count = {}, {}, {}
    for label in labels:
        mean[label], std[label], count[label] = {}, {}, {}
        for m in METRICS:
            vals = np.array([c[label][m] for c in per_case if label in c], dtype=np.float64)
            vals = vals[~np.isnan(vals)]
            count[label][m] = int(vals.size)
            mean[label][m] = float(vals.mean()) if vals.size else float("nan")
            std[label][m] = float(vals.std()) if vals.size else float("nan")
    fg = {}
    for m in METRICS:
        vals = np.array([mean[label][m] for label in labels], dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        fg[m] = float(vals.mean()) if vals.size else float("nan")
    return {"mean": mean, "std": std, "n": count, "foreground_mean": fg}
