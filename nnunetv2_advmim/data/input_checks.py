"""Checks of raw input images before any preprocessing work is done.

nnU-Net's own readers (the plan's ``image_reader_writer``) read every image exactly as the preprocessor will, and
:func:`check_case` looks at what they return, the way nnU-Net's ``verify_dataset_integrity`` does for ``imagesTr``
(which stock planning only runs when asked). What stock nnU-Net lets through silently, and we refuse:

- **truncated NIfTI files**: SimpleITK pads a short ``.nii``/``.nii.gz`` with zeros without an error, so NIfTI
  files are also read with nibabel, which raises on a short file (:func:`check_nifti_file`);
- **wrong dimensionality**: a 2D image in a 3D dataset is resampled along a fake 999-mm axis into hundreds of
  slices, a 3D image in a 2D dataset is preprocessed as a 3D volume. nnU-Net's readers mark 2D images by a
  first spacing of at least 999 times the in-plane spacing (:func:`spacing_is_2d`);
- **NaN/inf voxels**: SimpleITK reads them from NIfTI as 0 (counted with nibabel), other readers pass them to
  normalization, which turns them into finite garbage. Refused with the count per file; the fix is
  in the file (``verify_dataset_integrity`` refuses NaN in ``imagesTr`` as well, so both pools follow one rule);
- **channel count** inside one file (a 4D file with several channels) that differs from ``channel_names``;
- **unreadable files** (not an image, corrupt): the reader's error, with the file named.

A label map saved into ``imagesUnlabeled`` by mistake is caught by its name (see
:func:`nnunetv2_advmim.data.unlabeled.list_unlabeled_cases`, the reliable rule); :func:`check_case` only *warns* about
an image whose voxels are a few integers that are all label values of ``dataset.json``, since a real image can be
integer-valued (CT in HU, 8-bit MRI) and is never refused for its content.
"""
import multiprocessing
import os
import re
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import nibabel as nib
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunetv2_advmim.data.paths import load_plans_and_dataset_json, preprocessed_dataset_folder

# nnU-Net's readers give a 2D image the spacing (999 * max in-plane spacing, sy, sx), or (999, 1, 1)
_FAKE_AXIS_FACTOR = 998.0


def spacing_is_2d(spacing: Sequence[float]) -> bool:
    """True for the spacing nnU-Net's readers give a 2D image (first axis >= ~999 x the in-plane spacing)."""
    spacing = [float(s) for s in spacing]
    return len(spacing) == 3 and spacing[0] >= _FAKE_AXIS_FACTOR * max(spacing[1:])


def dataset_is_2d(preprocessed_folder: str, plans_manager) -> bool:
    """Whether the planned dataset holds 2D images: from ``dataset_fingerprint.json`` (spacing of every training
    case), else from the plans' median spacing (mapped back through ``transpose_backward``)."""
    fp_file = os.path.join(preprocessed_folder, "dataset_fingerprint.json")
    if os.path.isfile(fp_file):
        spacings = load_json(fp_file).get("spacings") or []
        if spacings:
            return all(spacing_is_2d(s) for s in spacings)
    median = plans_manager.plans["original_median_spacing_after_transp"]
    return spacing_is_2d([median[i] for i in plans_manager.transpose_backward])


def channel_of(filename: str, ending: str) -> Optional[Tuple[str, int]]:
    """``(case, channel)`` of an image file named by nnU-Net's convention ``{case}_{XXXX}{ending}``, else None."""
    if not filename.endswith(ending):
        return None
    m = re.fullmatch(r"(.+)_(\d{4})", filename[:-len(ending)])
    return (m.group(1), int(m.group(2))) if m else None


def missing_channels_problem(case: str, folder: str, found: Sequence[int], n_channels: int, ending: str) -> str:
    """The message for a case whose channel files are not exactly ``0 .. n_channels - 1``."""
    return (f"case '{case}' in {folder} has channel files {sorted(found)} but dataset.json has {n_channels} "
            f"channel(s): provide exactly {', '.join(f'{case}_{c:04d}{ending}' for c in range(n_channels))}")


def check_nifti_file(path: str) -> Tuple[Optional[str], int, int]:
    """(problem text or None, NaN count, inf count) of a ``.nii``/``.nii.gz`` file, read with nibabel.

    Two things SimpleITK (nnU-Net's default reader) hides: a truncated file is padded with zeros, and NaN/inf
    voxels are read as 0. nibabel reads the stored values (``scl_slope``/``scl_inter`` applied) and raises on a
    short file or a cut-off gzip stream."""
    try:
        img = nib.load(path)
    except Exception as e:  # not a NIfTI file at all
        return f"not a readable NIfTI file ({type(e).__name__}: {e})", 0, 0
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error) as e:
        return f"truncated or corrupt ({type(e).__name__}: {' '.join(str(e).split())})", 0, 0
    if not np.issubdtype(data.dtype, np.floating):
        return None, 0, 0
    return None, int(np.count_nonzero(np.isnan(data))), int(np.count_nonzero(np.isinf(data)))


def dataset_label_values(dataset_json: dict) -> List[int]:
    """Every label value of ``dataset.json``'s ``labels`` (region labels flattened), sorted."""
    values = set()
    for v in dataset_json.get("labels", {}).values():
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            values.add(int(x))
    return sorted(values)


def looks_like_label_map(data: np.ndarray, label_values: Sequence[int]) -> bool:
    """True if every voxel is an integer label value of ``dataset.json`` and there are at most that many distinct
    values (a label map saved as an image). Cheap tests first: real images fail the range test at once."""
    if not len(label_values) or data.size == 0:
        return False
    lo, hi = float(np.min(data)), float(np.max(data))
    if lo < min(label_values) or hi > max(label_values) or lo == hi:
        return False
    if not np.array_equal(data, np.round(data)):
        return False
    return set(np.unique(data).astype(int).tolist()) <= set(label_values)


def check_case(case: str, files: Sequence[str], reader_class, n_channels: int, expect_2d: bool,
               label_values: Sequence[int] = ()) -> Tuple[List[str], List[str]]:
    """(problems, warnings) of one case's channel files, read with nnU-Net's reader ``reader_class`` exactly as
    the preprocessor reads them (module docstring). Every text names the file(s) and the fix."""
    problems, warnings = [], []
    non_finite = {}  # file -> (NaN, inf) counts as stored in the file (SimpleITK reads them as 0)
    for f in files:
        if f.endswith((".nii", ".nii.gz")):
            p, n_nan, n_inf = check_nifti_file(f)
            if p:
                problems.append(f"{f}: {p}. Copy or export the file again, or remove case '{case}'.")
            non_finite[f] = (n_nan, n_inf)
    if problems:
        return problems, warnings
    try:
        data, props = reader_class().read_images(list(files))
    except Exception as e:
        if len(files) > 1:  # failure path only: read the channel files one by one to say how they differ
            geometry = _geometry_per_file(files, reader_class)
            if geometry is not None and len(set(geometry.values())) > 1:
                shown = "; ".join(f"{os.path.basename(f)}: shape {g[0]}, spacing {g[1]}" for f, g in geometry.items())
                return [f"{', '.join(files)}: the channel files of case '{case}' differ in shape or spacing "
                        f"({shown}). Every channel must be on the same voxel grid: resample them to one grid or "
                        f"remove case '{case}'."], warnings
        detail = f"{type(e).__name__}: {e}" if str(e) else f"{type(e).__name__} (see the reader's output above)"
        return [f"{', '.join(files)}: cannot be read by {reader_class.__name__} ({detail.splitlines()[-1][:300]}). "
                f"Replace the file(s) with readable images or remove case '{case}'."], warnings
    if data.shape[0] != n_channels:
        problems.append(f"{', '.join(files)}: {data.shape[0]} channel(s) in the file(s), but dataset.json's "
                        f"channel_names has {n_channels}. Store one channel per file ({case}_0000, {case}_0001, ...) "
                        f"matching channel_names.")
    is_2d = spacing_is_2d(props["spacing"])
    if is_2d != expect_2d:
        got, want = ("2D", "3D") if is_2d else ("3D", "2D")
        problems.append(f"{', '.join(files)}: a {got} image (shape {tuple(data.shape[1:])}, spacing "
                        f"{tuple(round(float(s), 4) for s in props['spacing'])}) in a {want} dataset. Export it as a "
                        f"{want} image like those in imagesTr, or remove case '{case}'.")
    for c, f in enumerate(files if len(files) == data.shape[0] else []):
        channel = data[c]
        n_nan, n_inf = non_finite.get(f, (0, 0))
        n_nan = max(n_nan, int(np.count_nonzero(np.isnan(channel))))
        n_inf = max(n_inf, int(np.count_nonzero(np.isinf(channel))))
        if n_nan or n_inf:
            problems.append(f"{f}: {n_nan} NaN and {n_inf} inf voxel(s) of {channel.size}. Replace them in the file "
                            f"with a value that makes sense for the image (e.g. its minimum, or the background "
                            f"value) and re-run; they are not replaced silently.")
        elif looks_like_label_map(channel, label_values):
            warnings.append(f"{f}: every voxel is one of the label values {np.unique(channel).astype(int).tolist()}"
                            f" of dataset.json: is this a segmentation rather than an image? Label files do not "
                            f"belong in imagesUnlabeled (preprocessed anyway).")
    return problems, warnings


def _geometry_per_file(files: Sequence[str], reader_class) -> Optional[Dict[str, tuple]]:
    """``{file: (shape, spacing)}`` read one file at a time; None if a single file cannot be read either."""
    out = {}
    for f in files:
        try:
            data, props = reader_class().read_images([f])
        except Exception:
            return None
        out[f] = (tuple(data.shape[1:]), tuple(round(float(x), 4) for x in props["spacing"]))
    return out


def _check_case_star(args):
    return check_case(*args)


def check_cases(cases: Dict[str, List[str]], reader_class, n_channels: int, expect_2d: bool,
                dataset_json: Optional[dict] = None, num_processes: int = 1) -> Tuple[List[str], List[str]]:
    """(problems, warnings) over every case of ``{case: [channel files]}``; worker processes (spawn) if asked."""
    labels = dataset_label_values(dataset_json or {})
    todo = [(c, files, reader_class, n_channels, expect_2d, labels) for c, files in sorted(cases.items())]
    problems, warnings = [], []
    if num_processes <= 1 or len(todo) <= 1:
        results = [_check_case_star(a) for a in todo]
    else:
        with multiprocessing.get_context("spawn").Pool(min(num_processes, len(todo))) as pool:
            results = pool.map(_check_case_star, todo)
    for p, w in results:
        problems += p
        warnings += w
    return problems, warnings


def format_problems(title: str, problems: Sequence[str], limit: int = 20) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{title}\n  {shown}{more}"


def require_planned(dataset_name_or_id, configuration: Optional[str] = None, plans_name: str = "nnUNetPlans",
                    command: str = "this command") -> Tuple[str, object]:
    """(preprocessed dataset folder, PlansManager) of a planned dataset, or a clear error naming the command to run
    first: ``nnUNetv2_plan_and_preprocess`` if the plans are missing, ``nnUNetv2_preprocess`` if the configuration's
    data folder is missing."""
    folder = preprocessed_dataset_folder(dataset_name_or_id)
    pm, _ = load_plans_and_dataset_json(folder, plans_name)
    if configuration is not None:
        if configuration not in pm.available_configurations:
            raise ValueError(f"Configuration {configuration!r} is not in {os.path.join(folder, plans_name + '.json')}"
                             f"; available: {list(pm.available_configurations)}")
        data = os.path.join(folder, pm.get_configuration(configuration).data_identifier)
        if not os.path.isdir(data) or not os.listdir(data):
            name = os.path.basename(folder)
            raise FileNotFoundError(f"{data} does not exist or is empty: configuration {configuration} of {name} is "
                                    f"planned but not preprocessed. Run `nnUNetv2_preprocess -d {name} -c "
                                    f"{configuration} -plans_name {plans_name}` before {command}.")
    return folder, pm
