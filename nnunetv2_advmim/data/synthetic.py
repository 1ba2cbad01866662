"""Synthetic nnU-Net raw datasets for tests and the demo (no download, seeded, seconds to make).

Each image shows a "body" with three labelled structures of varying shape, size and position:

- label 1 ``organ``: a large deformed ellipsoid (bright),
- label 2 ``kidney``: a smaller deformed ellipsoid beside it (brighter),
- label 3 ``lesion``: a small deformed blob inside the organ (dark).

and the nuisances of real scans: a smooth multiplicative intensity inhomogeneity (bias field), tissue
texture, partial-volume blur and Gaussian noise. 3D images are NIfTI volumes; 2D images are 2D NIfTI
files, which nnU-Net reads as single-slice volumes and plans as ``2d``.

The folder follows nnU-Net's raw layout plus unlabeled images in ``imagesUnlabeled``::

    DatasetXXX_Name/imagesTr, labelsTr, imagesUnlabeled, imagesTs, labelsTs, dataset.json
"""
import argparse
import json
import os
import re
import shutil
import time
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

LABELS = {"background": 0, "organ": 1, "kidney": 2, "lesion": 3}
FILE_ENDING = ".nii.gz"
DEFAULT_SHAPE = {2: (96, 96), 3: (48, 48, 48)}


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], coarse: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1]-ish: cubic upsampling of a coarse Gaussian grid."""
    low = rng.standard_normal([coarse] * len(shape))
    field = ndimage.zoom(low, [s / coarse for s in shape], order=3, mode="nearest")
    return field[tuple(slice(0, s) for s in shape)]


def _random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    """A random rotation matrix (QR of a Gaussian matrix, determinant +1)."""
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _blob(coords: np.ndarray, center, radii, rotation, warp: np.ndarray) -> np.ndarray:
    """Deformed ellipsoid: ``|R^T (x - c) / r|^2 <= 1 + warp``. coords: (ndim, *shape) in [-1, 1]."""
    d = coords - np.asarray(center, dtype=np.float32).reshape((-1,) + (1,) * (coords.ndim - 1))
    d = np.tensordot(rotation.T.astype(np.float32), d, axes=1)
    r = np.asarray(radii, dtype=np.float32).reshape((-1,) + (1,) * (coords.ndim - 1))
    return ((d / r) ** 2).sum(0) <= 1.0 + warp


def make_case(rng: np.random.Generator, shape: Sequence[int]):
    """One synthetic image (float32) and its segmentation (uint8, labels of ``LABELS``), numpy axis order."""
    ndim = len(shape)
    shape = tuple(int(s) for s in shape)
    axes = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    warp = 0.35 * _smooth_field(rng, shape).astype(np.float32)

    seg = np.zeros(shape, dtype=np.uint8)
    body = _blob(coords, rng.uniform(-0.05, 0.05, ndim), rng.uniform(0.85, 0.95, ndim), _random_rotation(rng, ndim),
                 0.1 * warp)
    organ_c = rng.uniform(-0.3, -0.05, ndim)
    organ_r = rng.uniform(0.42, 0.58, ndim)
    organ_rot = _random_rotation(rng, ndim)
    organ = _blob(coords, organ_c, organ_r, organ_rot, warp) & body
    kidney_c = rng.uniform(0.3, 0.5, ndim)  # beside the organ; overlap goes to the organ
    kidney = _blob(coords, kidney_c, rng.uniform(0.2, 0.3, ndim), _random_rotation(rng, ndim), 0.5 * warp) & body
    kidney &= ~organ
    lesion_c = organ_c + organ_rot @ (rng.uniform(-0.35, 0.35, ndim) * organ_r)
    lesion = _blob(coords, lesion_c, rng.uniform(0.12, 0.18, ndim), _random_rotation(rng, ndim), 0.3 * warp) & organ
    seg[organ] = LABELS["organ"]
    seg[kidney] = LABELS["kidney"]
    seg[lesion] = LABELS["lesion"]

    # tissue intensities with per-case contrast variation
    img = np.zeros(shape, dtype=np.float32)
    img[body] = rng.uniform(0.25, 0.35)
    img[organ] = rng.uniform(0.9, 1.1)
    img[kidney] = rng.uniform(1.4, 1.7)
    img[lesion] = rng.uniform(0.45, 0.6)
    img += 0.06 * _smooth_field(rng, shape, coarse=max(2, min(shape) // 4)) * body  # texture
    img = ndimage.gaussian_filter(img, 0.7)  # partial-volume blur
    img *= np.exp(0.25 * _smooth_field(rng, shape, coarse=3))  # bias field
    img += rng.normal(0, rng.uniform(0.03, 0.08), shape).astype(np.float32)  # acquisition noise
    return (img * 500).astype(np.float32), seg


def _write(array: np.ndarray, spacing: Sequence[float], path: str) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in spacing[::-1]])  # SimpleITK wants x, y(, z)
    sitk.WriteImage(image, path, useCompression=True)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    return f"Dataset{int(dataset_id):03d}_{name}"


def make_synthetic_dataset(raw_root: str, dataset_id: int = 990, name: Optional[str] = None, dim: int = 3,
                           n_train: int = 20, n_unlabeled: int = 10, n_test: int = 5,
                           shape: Optional[Sequence[int]] = None, spacing: Optional[Sequence[float]] = None,
                           seed: int = 0, overwrite: bool = False) -> str:
    """Write ``DatasetXXX_<name>`` under ``raw_root`` and return its path.

    Refuses to touch an existing dataset folder (or another folder with the same dataset ID) unless
    ``overwrite`` is set, in which case only the folder of this exact name is replaced.
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    shape = tuple(DEFAULT_SHAPE[dim] if shape is None else shape)
    spacing = tuple([1.0] * dim if spacing is None else spacing)
    if len(shape) != dim or len(spacing) != dim:
        raise ValueError(f"shape {shape} and spacing {spacing} must both have {dim} entries for dim={dim}")
    if min(shape) < 8:
        raise ValueError(f"shape {shape} is too small: every axis needs at least 8 voxels")
    if n_train < 1:
        raise ValueError("n_train must be at least 1")
    name = name or f"Synthetic{dim}D"
    folder = os.path.join(raw_root, dataset_folder_name(dataset_id, name))
    os.makedirs(raw_root, exist_ok=True)
    clashes = [f for f in os.listdir(raw_root) if re.match(rf"Dataset{int(dataset_id):03d}_", f)
               and f != os.path.basename(folder)]
    if clashes:
        raise FileExistsError(f"{raw_root} already holds {clashes[0]} with dataset ID {dataset_id}; nnU-Net needs "
                              f"unique IDs. Choose another ID (--id) or remove that folder.")
    if os.path.exists(folder):
        if not overwrite:
            raise FileExistsError(f"{folder} already exists; pass overwrite=True (--overwrite) to replace it.")
        shutil.rmtree(folder)

    rng = np.random.default_rng(seed)
    groups = [("imagesTr", "labelsTr", "case", n_train), ("imagesUnlabeled", None, "unlabeled", n_unlabeled),
              ("imagesTs", "labelsTs", "test", n_test)]
    for img_dir, lab_dir, prefix, n in groups:
        os.makedirs(os.path.join(folder, img_dir))
        if lab_dir:
            os.makedirs(os.path.join(folder, lab_dir))
        for i in range(n):
            case = f"{prefix}_{i:03d}"
            img, seg = make_case(rng, shape)
            _write(img, spacing, os.path.join(folder, img_dir, f"{case}_0000{FILE_ENDING}"))
            if lab_dir:
                _write(seg, spacing, os.path.join(folder, lab_dir, f"{case}{FILE_ENDING}"))

    dataset_json = {
        "channel_names": {"0": "T1"},
        "labels": dict(LABELS),
        "numTraining": n_train,
        "file_ending": FILE_ENDING,
        "name": name,
        "description": f"nnunetv2-advmim synthetic {dim}D dataset, seed {seed}, shape {list(shape)}, "
                       f"spacing {list(spacing)}; imagesUnlabeled holds {n_unlabeled} unlabeled images.",
    }
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_advmim_make_synthetic",
        description="Write a synthetic nnU-Net raw dataset (imagesTr/labelsTr, imagesUnlabeled, imagesTs/labelsTs) "
                    "into $nnUNet_raw (or -o).")
    parser.add_argument("-d", "--id", type=int, default=990, help="dataset ID (default 990)")
    parser.add_argument("--name", default=None, help="dataset name (default Synthetic2D/Synthetic3D)")
    parser.add_argument("--dim", type=int, choices=(2, 3), default=3)
    parser.add_argument("--n-train", type=int, default=20)
    parser.add_argument("--n-unlabeled", type=int, default=10)
    parser.add_argument("--n-test", type=int, default=5)
    parser.add_argument("--shape", type=int, nargs="+", default=None, help="image shape, numpy order (z y x)")
    parser.add_argument("--spacing", type=float, nargs="+", default=None, help="spacing in mm, numpy order (z y x)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default=None, help="raw root folder (default: $nnUNet_raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder of the same name")
    args = parser.parse_args(argv)
    raw_root = args.output or os.environ.get("nnUNet_raw")
    if not raw_root:
        parser.error("nnUNet_raw is not set; set it or pass -o FOLDER")
    t0 = time.perf_counter()
    folder = make_synthetic_dataset(raw_root, args.id, args.name, args.dim, args.n_train, args.n_unlabeled,
                                    args.n_test, args.shape, args.spacing, args.seed, args.overwrite)
    print(f"Wrote {folder} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
