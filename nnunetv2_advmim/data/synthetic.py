"""Synthetic nnU-Net raw datasets for tests and the demo (no download, seeded, seconds to make).

Each image shows a "body" with three labelled structures of varying shape, size and position:

- label 1 ``organ``: a large deformed ellipsoid (bright),
- label 2 ``kidney``: a smaller deformed ellipsoid beside it (brighter),
- label 3 ``lesion``: a small deformed blob inside the organ (dark).

and the nuisances of real scans: a smooth multiplicative intensity inhomogeneity (bias field), tissue
texture, partial-volume blur and Gaussian noise. 3D images are NIfTI volumes; 2D images are 2D NIfTI
files, which nnU-Net reads as single-slice volumes and plans as ``2d``.

The ``scarce`` preset is built so that a few labeled cases cannot cover what the test cases show: the organ's
pose, size and elongation vary widely; a thin tortuous ``vessel`` (1-2 voxels radius) crosses the body; one to
three ``nodule`` blobs sit in the organ. Each structure is brighter than its surroundings in some cases and darker
in others (drawn per case and per structure), and zero to two nodule look-alikes with the nodules' contrast sit
in the tissue outside the organ, unlabelled, so that only the context tells a nodule from a look-alike. Tissue
contrast, texture, blur, bias field and noise level are drawn per case too. Stock nnU-Net trained on four such
cases stays far below the same training on all of them (measured in docs/study.md), the regime semi-supervised
methods are for.

The folder follows nnU-Net's raw layout plus ``imagesUnlabeled`` for unlabeled images::

    DatasetXXX_Name/imagesTr, labelsTr, imagesUnlabeled, imagesTs, labelsTs, dataset.json
"""
import argparse
import os
import time
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunetv2_advmim.data.paths import claim_raw_folder
from nnunetv2_advmim.cli import DefaultsHelpFormatter
from nnunetv2_advmim.runtime.atomic import write_json_atomic

LABELS = {"background": 0, "organ": 1, "kidney": 2, "lesion": 3}
FILE_ENDING = ".nii.gz"
DEFAULT_SHAPE = {2: (96, 96), 3: (48, 48, 48)}
SCARCE_LABELS = {"background": 0, "organ": 1, "vessel": 2, "nodule": 3}
SCARCE_SHAPE = {2: (64, 64), 3: (40, 40, 40)}


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


def _tube(shape: Sequence[int], rng: np.random.Generator, radius: float) -> np.ndarray:
    """A thin tortuous tube: a sine-perturbed chord between two random points, dilated to ``radius`` voxels."""
    ndim = len(shape)
    size = np.asarray(shape, dtype=np.float64)
    start, end = rng.uniform(0.1, 0.9, (2, ndim)) * size
    while np.linalg.norm(end - start) < 0.5 * size.min():
        start, end = rng.uniform(0.1, 0.9, (2, ndim)) * size
    t = np.linspace(0, 1, 8 * int(size.max()))[:, None]
    wiggle = rng.standard_normal(ndim) * rng.uniform(0.04, 0.12) * size.min()
    points = start + t * (end - start) + np.sin(np.pi * rng.uniform(1, 3) * t + rng.uniform(0, np.pi)) * wiggle
    idx = np.clip(np.round(points).astype(int), 0, size.astype(int) - 1)
    centre_line = np.zeros(shape, dtype=bool)
    centre_line[tuple(idx.T)] = True
    return ndimage.distance_transform_edt(~centre_line) <= radius


def _polarity(rng: np.random.Generator, p_bright: float = 0.5) -> float:
    return 1.0 if rng.random() < p_bright else -1.0


def scarce_structures(rng: np.random.Generator, shape: Sequence[int]) -> dict:
    """The masks of one ``scarce`` case: ``body``, ``organ``, ``vessel``, ``nodule`` (labelled) and ``mimic``
    (nodule look-alikes in the tissue outside the organ, unlabelled)."""
    ndim = len(shape)
    shape = tuple(int(s) for s in shape)
    axes = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    warp = rng.uniform(0.3, 0.7) * _smooth_field(rng, shape).astype(np.float32)

    body = _blob(coords, rng.uniform(-0.1, 0.1, ndim), rng.uniform(0.75, 0.95, ndim), _random_rotation(rng, ndim),
                 0.1 * warp)
    organ_r = rng.uniform(0.2, 0.5, ndim)  # elongated or round, small or large
    organ_rot = _random_rotation(rng, ndim)
    organ_c = rng.uniform(-0.35, 0.35, ndim)
    organ = _blob(coords, organ_c, organ_r, organ_rot, warp) & body
    while ndimage.binary_erosion(organ, iterations=2).sum() < 4:  # pose left too little inside the body
        organ_c = organ_c * 0.5
        organ_r = organ_r * 1.1
        organ = _blob(coords, organ_c, organ_r, organ_rot, warp) & body
    vessel = _tube(shape, rng, rng.uniform(1.0, 2.0)) & body

    def blobs(region: np.ndarray, count: int) -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        inside = np.argwhere(ndimage.binary_erosion(region, iterations=2))
        for _ in range(count if len(inside) else 0):
            centre = inside[rng.integers(len(inside))] / (np.asarray(shape) - 1) * 2 - 1
            out |= _blob(coords, centre, rng.uniform(0.06, 0.13, ndim), _random_rotation(rng, ndim), 0.3 * warp)
        return out

    nodule = blobs(organ, int(rng.integers(1, 4))) & organ & ~vessel
    if not nodule.any():  # the vessel covered every nodule: keep the organ's most interior voxel as one
        depth = ndimage.distance_transform_edt(organ & ~vessel)
        nodule[np.unravel_index(np.argmax(depth), shape)] = True
    mimic = blobs(body & ~organ, int(rng.integers(0, 3))) & body & ~organ & ~vessel
    return {"body": body, "organ": organ, "vessel": vessel, "nodule": nodule, "mimic": mimic}


def make_scarce_case(rng: np.random.Generator, shape: Sequence[int]):
    """One case of the ``scarce`` preset (module docstring): image (float32), segmentation (uint8, labels of
    ``SCARCE_LABELS``), numpy axis order. Every case holds every structure."""
    shape = tuple(int(s) for s in shape)
    m = scarce_structures(rng, shape)
    body, organ, vessel, nodule, mimic = (m[k] for k in ("body", "organ", "vessel", "nodule", "mimic"))
    seg = np.zeros(shape, dtype=np.uint8)
    seg[organ] = SCARCE_LABELS["organ"]
    seg[vessel] = SCARCE_LABELS["vessel"]
    seg[nodule] = SCARCE_LABELS["nodule"]

    # per-case contrast with per-case polarity: the organ is brighter than the surrounding tissue in some cases
    # and darker in others, and so are the vessel and the nodules; nodule look-alikes outside the organ carry the
    # nodules' contrast against their own surroundings, so only the context (inside the organ) tells them apart
    img = np.zeros(shape, dtype=np.float32)
    tissue = rng.uniform(0.5, 0.8)
    organ_level = tissue + _polarity(rng) * rng.uniform(0.2, 0.45)
    nodule_step = _polarity(rng) * rng.uniform(0.2, 0.4)
    img[body] = tissue
    img[organ] = organ_level
    img[mimic] = tissue + nodule_step
    img[nodule] = organ_level + nodule_step
    lo, hi = min(tissue, organ_level), max(tissue, organ_level)
    img[vessel] = hi + rng.uniform(0.25, 0.6) if rng.random() < 0.5 else max(0.05, lo - rng.uniform(0.2, 0.35))
    img += rng.uniform(0.03, 0.12) * _smooth_field(rng, shape, coarse=max(2, min(shape) // 4)) * body  # texture
    img = ndimage.gaussian_filter(img, rng.uniform(0.5, 1.0))  # partial volume
    img *= np.exp(rng.uniform(0.1, 0.4) * _smooth_field(rng, shape, coarse=3))  # bias field
    img += rng.normal(0, rng.uniform(0.03, 0.1), shape).astype(np.float32)  # acquisition noise
    return (img * 500).astype(np.float32), seg


PRESETS = {
    "default": dict(make_case=make_case, labels=LABELS, shape=DEFAULT_SHAPE, counts=(20, 10, 5)),
    "scarce": dict(make_case=make_scarce_case, labels=SCARCE_LABELS, shape=SCARCE_SHAPE, counts=(40, 40, 20)),
}


def _write(array: np.ndarray, spacing: Sequence[float], path: str) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in spacing[::-1]])  # SimpleITK wants x, y(, z)
    sitk.WriteImage(image, path, useCompression=True)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    return f"Dataset{int(dataset_id):03d}_{name}"


def make_synthetic_dataset(raw_root: str, dataset_id: int = 990, name: Optional[str] = None, dim: int = 3,
                           n_train: Optional[int] = None, n_unlabeled: Optional[int] = None,
                           n_test: Optional[int] = None, shape: Optional[Sequence[int]] = None,
                           spacing: Optional[Sequence[float]] = None, seed: int = 0, overwrite: bool = False,
                           preset: str = "default") -> str:
    """Write ``DatasetXXX_<name>`` under ``raw_root`` and return its path.

    ``preset`` picks the generator (``default`` or ``scarce``, module docstring); case counts and shape default
    to the preset's (20/10/5 and 96^2 or 48^3 for ``default``, 40/40/20 and 64^2 or 40^3 for ``scarce``).
    Refuses to touch an existing dataset folder (or another folder with the same dataset ID) unless
    ``overwrite`` is set, in which case only the folder of this exact name is replaced.
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; choose one of {sorted(PRESETS)}")
    spec = PRESETS[preset]
    default_counts = spec["counts"]
    n_train = default_counts[0] if n_train is None else n_train
    n_unlabeled = default_counts[1] if n_unlabeled is None else n_unlabeled
    n_test = default_counts[2] if n_test is None else n_test
    shape = tuple(spec["shape"][dim] if shape is None else shape)
    spacing = tuple([1.0] * dim if spacing is None else spacing)
    if len(shape) != dim or len(spacing) != dim:
        raise ValueError(f"shape {shape} and spacing {spacing} must both have {dim} entries for dim={dim}")
    if min(shape) < 8:
        raise ValueError(f"shape {shape} is too small: every axis needs at least 8 voxels")
    if n_train < 1:
        raise ValueError("n_train must be at least 1")
    name = name or (f"Synthetic{dim}D" if preset == "default" else f"Synthetic{preset.capitalize()}{dim}D")
    folder = claim_raw_folder(raw_root, dataset_id, dataset_folder_name(dataset_id, name), overwrite, "--id")

    rng = np.random.default_rng(seed)
    groups = [("imagesTr", "labelsTr", "case", n_train), ("imagesUnlabeled", None, "unlabeled", n_unlabeled),
              ("imagesTs", "labelsTs", "test", n_test)]
    for img_dir, lab_dir, prefix, n in groups:
        os.makedirs(os.path.join(folder, img_dir))
        if lab_dir:
            os.makedirs(os.path.join(folder, lab_dir))
        for i in range(n):
            case = f"{prefix}_{i:03d}"
            img, seg = spec["make_case"](rng, shape)
            _write(img, spacing, os.path.join(folder, img_dir, f"{case}_0000{FILE_ENDING}"))
            if lab_dir:
                _write(seg, spacing, os.path.join(folder, lab_dir, f"{case}{FILE_ENDING}"))

    dataset_json = {
        "channel_names": {"0": "T1"},
        "labels": dict(spec["labels"]),
        "numTraining": n_train,
        "file_ending": FILE_ENDING,
        "name": name,
        "description": f"nnunetv2-advmim synthetic {dim}D dataset, preset {preset}, seed {seed}, shape {list(shape)}, "
                       f"spacing {list(spacing)}; imagesUnlabeled holds {n_unlabeled} unlabeled images.",
    }
    write_json_atomic(os.path.join(folder, "dataset.json"), dataset_json, indent=2)
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_make_synthetic",
        description="Write a synthetic nnU-Net raw dataset (imagesTr/labelsTr, imagesUnlabeled, imagesTs/labelsTs) "
                    "into $nnUNet_raw (or -o).")
    parser.add_argument("-d", "--id", type=int, default=990,
                        help="dataset ID (default 990; with the other defaults the dataset nnUNetv2_advmim_demo makes)")
    parser.add_argument("--name", default=None, help="dataset name (default Synthetic2D/3D, SyntheticScarce2D/3D)")
    parser.add_argument("--dim", type=int, choices=(2, 3), default=2)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="scarce",
                        help="'default': easy structures (demo, tests); 'scarce': variability that a few labeled "
                             "cases cannot cover, for label-efficiency studies")
    parser.add_argument("--n-train", type=int, default=None, help="labeled training cases (preset default)")
    parser.add_argument("--n-unlabeled", type=int, default=None, help="imagesUnlabeled cases (preset default)")
    parser.add_argument("--n-test", type=int, default=None, help="imagesTs/labelsTs cases (preset default)")
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
                                    args.n_test, args.shape, args.spacing, args.seed, args.overwrite, args.preset)
    print(f"Wrote {folder} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
