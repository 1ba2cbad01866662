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
- **unreadable files** (not an image, corrupt): the reader's error, with the file named;
- **a ``dataset.json`` without ``file_ending`` or ``channel_names``** (:func:`require_dataset_json_keys`);
- **images above a size limit**, if one is given (``max_voxels``): refused from the file header, before the
  image is read (twice: nibabel for the stored values, then the plan's reader).

An image of ``imagesUnlabeled`` whose orientation (direction cosines) differs from that of ``imagesTr`` is a
*warning* (:func:`orientation_of`): nnU-Net itself only compares image and label of one case, and resamples in
voxel space, so such an image is trained on as if it were oriented like the training images.

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


def require_dataset_json_keys(dataset_json: dict, path: str) -> None:
    """``ValueError`` naming ``path`` and the fix unless ``dataset.json`` has what every reader of it needs:
    ``file_ending`` (a string such as ``.nii.gz``) and ``channel_names`` (or the older ``modality``) as a non-empty
    mapping ``{"0": "CT", ...}``."""
    problems = []
    ending = dataset_json.get("file_ending") if isinstance(dataset_json, dict) else None
    if not isinstance(ending, str) or not ending:
        problems.append('"file_ending" is missing (the ending every image and label file shares, e.g. '
                        '"file_ending": ".nii.gz")')
    channels = dataset_json.get("channel_names", dataset_json.get("modality")) if isinstance(dataset_json, dict) \
        else None
    if not isinstance(channels, dict) or not channels:
        problems.append('"channel_names" is missing or empty (one entry per input channel, e.g. '
                        '"channel_names": {"0": "CT"})')
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems) + ". Add it to dataset.json as nnU-Net's dataset format "
                         "describes, then re-run.")


def voxel_count(path: str) -> Optional[int]:
    """Voxels of one image file read from its header only (nibabel for NIfTI, else SimpleITK's image
    information); None where the header cannot be read (the full read then reports the problem)."""
    try:
        if path.endswith((".nii", ".nii.gz")):
            return int(np.prod(nib.load(path).shape))
        import SimpleITK as sitk
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        return int(np.prod(reader.GetSize())) * int(reader.GetNumberOfComponents())
    except Exception:
        return None


def orientation_of(props: dict) -> Optional[Tuple[float, ...]]:
    """Direction cosines of an image as nnU-Net's reader reports them (SimpleITK ``direction``, or the rotation of
    nibabel's affine with unit columns), rounded; None for readers that report neither."""
    if "sitk_stuff" in props:
        return tuple(round(float(x), 3) for x in props["sitk_stuff"]["direction"])
    if "nibabel_stuff" in props:
        rotation = np.asarray(props["nibabel_stuff"]["original_affine"], dtype=float)[:3, :3]
        rotation = rotation / np.maximum(np.linalg.norm(rotation, axis=0, keepdims=True), 1e-12)
        return tuple(round(float(x), 3) for x in rotation.ravel())
    return None


def reference_orientation(cases: Dict[str, List[str]], reader_class) -> Optional[Tuple[tuple, str]]:
    """``(orientation, file)`` of the first readable case of ``cases`` (e.g. ``imagesTr``), or None."""
    for case in sorted(cases):
        try:
            _, props = reader_class().read_images(cases[case])
        except Exception:
            continue
        o = orientation_of(props)
        return (o, cases[case][0]) if o is not None else None
    return None


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


def _oversized_files_problems(files: Sequence[str], max_voxels: int) -> List[str]:
    """One problem per file whose header says it holds more than ``max_voxels`` voxels. Checked from the header
    so that an image too large for the machine's memory is refused before it is read."""
    problems = []
    for f in files:
        n = voxel_count(f)
        if n is not None and n > max_voxels:
            problems.append(f"{f}: {n} voxels, more than --max-voxels {max_voxels}; not read. Raise --max-voxels "
                            f"if the machine has the memory (the check reads each image twice, once as float64), "
                            f"or crop / downsample the image.")
    return problems


def _nifti_files_problems(case: str, files: Sequence[str]) -> Tuple[List[str], Dict[str, Tuple[int, int]]]:
    """``(problems, {file: (NaN count, inf count)})`` of the NIfTI files among ``files``, read with nibabel
    (:func:`check_nifti_file`): the truncated files and the non-finite voxels SimpleITK would hide."""
    problems, non_finite = [], {}
    for f in files:
        if f.endswith((".nii", ".nii.gz")):
            p, n_nan, n_inf = check_nifti_file(f)
            if p:
                problems.append(f"{f}: {p}. Copy or export the file again, or remove case '{case}'.")
            non_finite[f] = (n_nan, n_inf)
    return problems, non_finite


def _unreadable_case_problem(case: str, files: Sequence[str], reader_class, error: Exception) -> str:
    """The problem text for a case the reader refused. For several channel files it first reads them one by one:
    channels on different voxel grids are the usual cause, and saying so names the fix."""
    if len(files) > 1:  # failure path only, so the extra reads cost nothing on good data
        geometry = _geometry_per_file(files, reader_class)
        if geometry is not None and len(set(geometry.values())) > 1:
            shown = "; ".join(f"{os.path.basename(f)}: shape {g[0]}, spacing {g[1]}" for f, g in geometry.items())
            return (f"{', '.join(files)}: the channel files of case '{case}' differ in shape or spacing "
                    f"({shown}). Every channel must be on the same voxel grid: resample them to one grid or "
                    f"remove case '{case}'.")
    detail = f"{type(error).__name__}: {error}" if str(error) else \
        f"{type(error).__name__} (see the reader's output above)"
    return (f"{', '.join(files)}: cannot be read by {reader_class.__name__} ({detail.splitlines()[-1][:300]}). "
            f"Replace the file(s) with readable images or remove case '{case}'.")


def orientation_differs(orientation: Optional[Sequence[float]], reference: Optional[Sequence[float]]) -> bool:
    """True when two direction-cosine tuples (:func:`orientation_of`) are both known, of one dimensionality, and
    differ by more than rounding (1e-3); unknown or incomparable orientations never warn."""
    return orientation is not None and reference is not None and len(orientation) == len(reference) \
        and not np.allclose(orientation, reference, atol=1e-3)


def dimensionality_problem(case: str, files: Sequence[str], shape: Sequence[int], spacing: Sequence[float],
                           expect_2d: bool) -> Optional[str]:
    """The problem text for a 2D image in a 3D dataset or the reverse (judged from the reader's spacing, see
    :func:`spacing_is_2d`), None when the image has the dataset's dimensionality."""
    is_2d = spacing_is_2d(spacing)
    if is_2d == expect_2d:
        return None
    got, want = ("2D", "3D") if is_2d else ("3D", "2D")
    return (f"{', '.join(files)}: a {got} image (shape {tuple(shape)}, spacing "
            f"{tuple(round(float(s), 4) for s in spacing)}) in a {want} dataset. Export it as a "
            f"{want} image like those in imagesTr, or remove case '{case}'.")


def non_finite_counts(channel: np.ndarray, stored: Tuple[int, int] = (0, 0)) -> Tuple[int, int]:
    """``(NaN, inf)`` voxel counts of one channel: the larger of what the reader returned and what the file stores
    (``stored``, counted with nibabel), since SimpleITK reads NaN/inf in NIfTI files as 0."""
    return (max(stored[0], int(np.count_nonzero(np.isnan(channel)))),
            max(stored[1], int(np.count_nonzero(np.isinf(channel)))))


def channel_content_checks(files: Sequence[str], data: np.ndarray, non_finite: Dict[str, Tuple[int, int]],
                           label_values: Sequence[int]) -> Tuple[List[str], List[str]]:
    """(problems, warnings) of the voxel values of each channel file: NaN/inf voxels are a problem, a channel that
    looks like a label map (:func:`looks_like_label_map`) a warning. Skipped when the channel count is wrong (the
    files cannot be matched to the channels then)."""
    problems, warnings = [], []
    for c, f in enumerate(files if len(files) == data.shape[0] else []):
        channel = data[c]
        n_nan, n_inf = non_finite_counts(channel, non_finite.get(f, (0, 0)))
        if n_nan or n_inf:
            problems.append(f"{f}: {n_nan} NaN and {n_inf} inf voxel(s) of {channel.size}. Replace them in the file "
                            f"with a value that makes sense for the image (e.g. its minimum, or the background "
                            f"value) and re-run; they are not replaced silently.")
        elif looks_like_label_map(channel, label_values):
            warnings.append(f"{f}: every voxel is one of the label values {np.unique(channel).astype(int).tolist()}"
                            f" of dataset.json: is this a segmentation rather than an image? Label files do not "
                            f"belong in imagesUnlabeled (preprocessed anyway).")
    return problems, warnings


def check_case(case: str, files: Sequence[str], reader_class, n_channels: int, expect_2d: bool,
               label_values: Sequence[int] = (), max_voxels: Optional[int] = None,
               reference: Optional[Tuple[tuple, str]] = None) -> Tuple[List[str], List[str]]:
    """(problems, warnings) of one case's channel files, read with nnU-Net's reader ``reader_class`` exactly as
    the preprocessor reads them (module docstring). ``max_voxels``: refuse larger files from their header, without
    reading them. ``reference``: ``(orientation, file)`` the case's orientation is compared with (a warning if it
    differs). Every text names the file(s) and the fix.

    The checks run from cheap to expensive and stop at the first stage that finds a problem: size from the
    header, the NIfTI files with nibabel, then one read with the plan's reader."""
    if max_voxels is not None:
        problems = _oversized_files_problems(files, max_voxels)
        if problems:
            return problems, []
    problems, non_finite = _nifti_files_problems(case, files)
    if problems:
        return problems, []
    try:
        data, props = reader_class().read_images(list(files))
    except Exception as e:
        return [_unreadable_case_problem(case, files, reader_class, e)], []
    warnings = []
    if data.shape[0] != n_channels:
        problems.append(f"{', '.join(files)}: {data.shape[0]} channel(s) in the file(s), but dataset.json's "
                        f"channel_names has {n_channels}. Store one channel per file ({case}_0000, {case}_0001, ...) "
                        f"matching channel_names.")
    orientation = orientation_of(props)
    if reference is not None and orientation_differs(orientation, reference[0]):
        warnings.append(f"{files[0]}: direction {orientation} differs from that of imagesTr "
                        f"({reference[1]}: {reference[0]}). nnU-Net works in voxel space, so this image is trained on "
                        f"as if it were oriented like the training images: reorient it (e.g. to the orientation of "
                        f"imagesTr) if that is not intended.")
    wrong_dim = dimensionality_problem(case, files, data.shape[1:], props["spacing"], expect_2d)
    if wrong_dim is not None:
        problems.append(wrong_dim)
    p, w = channel_content_checks(files, data, non_finite, label_values)
    return problems + p, warnings + w


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
                dataset_json: Optional[dict] = None, num_processes: int = 1, max_voxels: Optional[int] = None,
                reference: Optional[Tuple[tuple, str]] = None) -> Tuple[List[str], List[str]]:
    """(problems, warnings) over every case of ``{case: [channel files]}`` (:func:`check_case`); worker processes
    (spawn) if asked."""
    labels = dataset_label_values(dataset_json or {})
    todo = [(c, files, reader_class, n_channels, expect_2d, labels, max_voxels, reference)
            for c, files in sorted(cases.items())]
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
