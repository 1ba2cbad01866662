"""``nnUNetv2_advmim_export_submission``: a prediction folder as a clean challenge submission.

Challenges want exactly one segmentation per test image, named by their rule (``{case}.nii.gz``,
``Pred_{id}.mha``, ...), in a folder or zip holding nothing else. This command

1. lists the expected cases from the test images folder (nnU-Net naming ``{case}_{XXXX}{ending}``, read with
   nnU-Net's ``get_identifiers_from_splitted_dataset_folder``);
2. checks, before writing anything, that every expected case has a prediction and that each prediction
   has its image's geometry (shape, spacing, origin/direction or affine as nnU-Net's reader reports them);
3. writes ``pattern.format(case=..., id=...)`` per case into the output folder: a byte copy when the
   format is unchanged, otherwise the segmentation is read and written again with nnU-Net's
   reader/writer for the new ending, taking the geometry from the image;
4. optionally zips the files (at the zip's root).

Pattern fields: ``{case}`` (the nnU-Net case identifier) and ``{id}`` (the case's trailing digits, e.g.
``0042`` for ``FLARE_0042``). The output folder must be new or empty, or hold only files this export
writes (replaced with ``--overwrite``); predictions of cases that are not in the images folder are left
out and reported.
"""
import argparse
import os
import re
import shutil
import sys
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending
from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

from nnunetv2_advmim.evaluation.evaluate import (detect_file_ending, file_ending_of, geometry_mismatch, list_cases,
                                                 report_errors)
from nnunetv2_advmim.cli import DefaultsHelpFormatter


def expected_cases(images_folder: str, file_ending: Optional[str] = None) -> Dict[str, str]:
    """``{case: first channel image}`` of an nnU-Net images folder (``{case}_{XXXX}{ending}``)."""

    file_ending = file_ending or detect_file_ending(images_folder)
    cases = [str(c) for c in get_identifiers_from_splitted_dataset_folder(images_folder, file_ending)]
    out = {}
    for c in cases:
        channels = sorted(f for f in os.listdir(images_folder)
                          if re.fullmatch(re.escape(c) + r"_\d{4}" + re.escape(file_ending), f))
        if not channels:
            raise FileNotFoundError(f"{images_folder}: {c} has no image named {c}_XXXX{file_ending} (nnU-Net naming: "
                                    f"case identifier, '_', 4-digit channel, ending)")
        out[c] = os.path.join(images_folder, channels[0])
    if not out:
        raise FileNotFoundError(f"no images named CASE_XXXX{file_ending} in {images_folder}")
    return out


def output_name(pattern: str, case: str) -> str:
    digits = re.search(r"(\d+)$", case)
    try:
        name = pattern.format(case=case, id=digits.group(1) if digits else case)
    except (KeyError, IndexError) as e:
        raise ValueError(f"--pattern {pattern!r}: unknown field {e}; use {{case}} and/or {{id}}") from None
    if os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"--pattern {pattern!r} makes a path ({name}); give a file name pattern")
    return name


def submission_names(cases, pattern: str) -> Tuple[Dict[str, str], str]:
    """``({case: output file name}, output file ending)`` of the expected cases under ``pattern``. Refused before
    anything is read: a pattern that gives two cases one name (one file would overwrite the other) or whose names
    end in no ending nnU-Net can write."""
    names = {c: output_name(pattern, c) for c in cases}
    if len(set(names.values())) != len(names):
        raise ValueError(f"--pattern {pattern!r} gives several cases the same file name; include {{case}} or {{id}}")
    out_ending = file_ending_of(next(iter(names.values())))
    if out_ending is None:
        raise ValueError(f"--pattern {pattern!r} must end with a file ending nnU-Net can write (e.g. .nii.gz, .mha, "
                         f".nrrd, .png, .tif)")
    return names, out_ending


def predictions_left_out(expected, predicted, prediction_folder: str, images_folder: str) -> List[str]:
    """The predicted cases that are not expected (sorted; left out of the submission). Refuses a submission with
    an expected case missing: challenges score a missing case as a failure, so it must be predicted first."""
    missing = sorted(set(expected) - set(predicted))
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(expected)} expected case(s) have no prediction in "
                                f"{prediction_folder}: {', '.join(missing)}. Predict them (nnUNetv2_predict -i "
                                f"{images_folder} ...) before exporting.")
    return sorted(set(predicted) - set(expected))


def _check_targets(output_folder: str, file_names, zip_file: Optional[str], overwrite: bool) -> None:
    """Refuse to write where the submission would mix with other files (a challenge rejects extra files) or replace
    an earlier export or zip without ``overwrite``."""
    if os.path.isdir(output_folder):
        foreign = sorted(set(os.listdir(output_folder)) - set(file_names))
        if foreign:
            raise FileExistsError(f"{output_folder} holds files that are not part of this submission "
                                  f"({', '.join(foreign[:5])}); export into a new or empty folder")
        clash = [n for n in file_names if os.path.exists(os.path.join(output_folder, n))]
        if clash and not overwrite:
            raise FileExistsError(f"{output_folder} already holds {len(clash)} exported file(s); pass --overwrite "
                                  f"to replace them")
    if zip_file and os.path.exists(zip_file) and not overwrite:
        raise FileExistsError(f"{zip_file} exists; pass --overwrite to replace it or choose another --zip")


def _check_geometry(images: Dict[str, str], preds: Dict[str, str], pred_ending: str,
                    keep_arrays: bool) -> Dict[str, np.ndarray]:
    """Read every image and its prediction and refuse a prediction that is not in its image's geometry (a challenge
    scores it against the image's voxel grid). Returns the segmentations (without channel axis) when
    ``keep_arrays`` (a format change writes them again), else ``{}``."""
    first_image, first_pred = next(iter(images.values())), next(iter(preds.values()))
    image_rw = determine_reader_writer_from_file_ending(file_ending_of(first_image), first_image, verbose=False)()
    pred_rw = determine_reader_writer_from_file_ending(pred_ending, first_pred, verbose=False)()
    segs = {}
    for c, img_file in images.items():
        img, img_props = image_rw.read_images([img_file])
        seg, seg_props = pred_rw.read_seg(preds[c])
        why = geometry_mismatch(img.shape[1:], img_props, seg.shape[1:], seg_props)
        if why is not None:
            raise ValueError(f"prediction {preds[c]} does not match the geometry of its image {img_file}: {why}. "
                             f"Export predictions with nnUNetv2_predict (it writes them in the image's geometry) or "
                             f"resample them.")
        if keep_arrays:
            segs[c] = seg[0]
    return segs


def _write_converted(out_rw, seg: np.ndarray, image_file: str, target: str, out_ending: str) -> None:
    """Write ``seg`` as ``target`` in the writer's format with the geometry of ``image_file``, read by the same
    writer so that the properties are in the form it expects; the smallest integer type that holds the labels."""
    try:
        _, props = out_rw.read_images([image_file])
    except Exception as e:
        raise ValueError(f"cannot write {out_ending} files with geometry from {image_file}: the "
                         f"{type(out_rw).__name__} writer cannot read the image ({e}). Choose an ending of "
                         f"the same family as the images.") from None
    out_rw.write_seg(np.asarray(seg, dtype=np.uint8 if seg.max() < 255 else np.uint16), target, props)


def _write_submission(images: Dict[str, str], preds: Dict[str, str], names: Dict[str, str], output_folder: str,
                      out_ending: str, convert: bool, segs: Dict[str, np.ndarray]) -> List[str]:
    """Write one file per expected case (sorted by case) and return their paths: a byte copy of the prediction
    unless ``convert`` (another ending), then the segmentation of ``segs`` written by :func:`_write_converted`."""
    os.makedirs(output_folder, exist_ok=True)
    written, out_rw = [], None
    for c in sorted(images):
        target = os.path.join(output_folder, names[c])
        if not convert:
            shutil.copyfile(preds[c], target)
        else:
            if out_rw is None:
                out_rw = determine_reader_writer_from_file_ending(out_ending, None, verbose=False)()
            _write_converted(out_rw, segs[c], images[c], target, out_ending)
        written.append(target)
    return written


def _zip_files(files: List[str], zip_file: str) -> None:
    """Zip ``files`` at the archive's root; written to a ``.part`` file and renamed, so that an interrupted export
    never leaves a zip that looks complete."""
    tmp = zip_file + ".part"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(f, arcname=os.path.basename(f))
    os.replace(tmp, zip_file)


def export_submission(prediction_folder: str, output_folder: str, images_folder: str, pattern: Optional[str] = None,
                      zip_file: Optional[str] = None, overwrite: bool = False, verbose: bool = True) -> dict:
    """Check and export predictions (module docstring). Returns ``{"files": [...], "zip": path or None,
    "left_out": [cases without an image]}``. Every check runs before the first file is written."""
    images = expected_cases(images_folder)
    pred_ending = detect_file_ending(prediction_folder)
    preds = list_cases(prediction_folder, pred_ending)
    names, out_ending = submission_names(images, pattern or "{case}" + pred_ending)
    left_out = predictions_left_out(images, preds, prediction_folder, images_folder)
    _check_targets(output_folder, names.values(), zip_file, overwrite)
    convert = out_ending != pred_ending
    segs = _check_geometry(images, preds, pred_ending, keep_arrays=convert)
    written = _write_submission(images, preds, names, output_folder, out_ending, convert, segs)
    if zip_file:
        _zip_files(written, zip_file)
    if verbose:
        print(f"Exported {len(written)} case(s) to {output_folder}" + (f" and {zip_file}" if zip_file else ""))
        if left_out:
            print(f"Left out {len(left_out)} prediction(s) without an image in {images_folder}: "
                  f"{', '.join(left_out[:10])}")
    return {"files": written, "zip": zip_file, "left_out": left_out}


def main(argv=None):
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_export_submission",
        description="Copy a prediction folder into a clean challenge submission: one file per test image named by "
                    "--pattern, every case present, each with its image's geometry; optionally zipped.")
    parser.add_argument("-i", required=True, help="prediction folder (e.g. nnUNetv2_predict output)")
    parser.add_argument("-o", required=True, help="submission folder to create (new or empty)")
    parser.add_argument("--images", required=True, help="the test images folder (nnU-Net naming CASE_XXXX.ending): "
                                                        "defines the expected cases and their geometry")
    parser.add_argument("--pattern", default=None,
                        help="file name pattern with {case} and/or {id} (trailing digits of the case), ending "
                             "included, e.g. '{case}.nii.gz' or 'Pred_{id}.mha' (default: case + prediction ending)")
    parser.add_argument("--zip", nargs="?", const="", default=None, metavar="ZIP",
                        help="also write a zip of the files (default name: the output folder + .zip)")
    parser.add_argument("--overwrite", action="store_true", help="replace files a previous export wrote")
    args = parser.parse_args(argv)
    zip_file = None if args.zip is None else (args.zip or os.path.abspath(args.o).rstrip(os.sep) + ".zip")
    return report_errors(lambda: export_submission(args.i, args.o, args.images, args.pattern, zip_file,
                                                    args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
