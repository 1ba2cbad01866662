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
from typing import Dict, Optional

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


def export_submission(prediction_folder: str, output_folder: str, images_folder: str, pattern: Optional[str] = None,
                      zip_file: Optional[str] = None, overwrite: bool = False, verbose: bool = True) -> dict:
    """Check and export predictions (module docstring). Returns ``{"files": [...], "zip": path or None,
    "left_out": [cases without an image]}``."""

    images = expected_cases(images_folder)
    pred_ending = detect_file_ending(prediction_folder)
    preds = list_cases(prediction_folder, pred_ending)
    pattern = pattern or "{case}" + pred_ending
    names = {c: output_name(pattern, c) for c in images}
    if len(set(names.values())) != len(names):
        raise ValueError(f"--pattern {pattern!r} gives several cases the same file name; include {{case}} or {{id}}")
    out_ending = file_ending_of(next(iter(names.values())))
    if out_ending is None:
        raise ValueError(f"--pattern {pattern!r} must end with a file ending nnU-Net can write (e.g. .nii.gz, .mha, "
                         f".nrrd, .png, .tif)")
    missing = sorted(set(images) - set(preds))
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(images)} expected case(s) have no prediction in "
                                f"{prediction_folder}: {', '.join(missing)}. Predict them (nnUNetv2_predict -i "
                                f"{images_folder} ...) before exporting.")
    left_out = sorted(set(preds) - set(images))

    # all checks before anything is written
    if os.path.isdir(output_folder):
        foreign = sorted(set(os.listdir(output_folder)) - set(names.values()))
        if foreign:
            raise FileExistsError(f"{output_folder} holds files that are not part of this submission "
                                  f"({', '.join(foreign[:5])}); export into a new or empty folder")
        clash = [n for n in names.values() if os.path.exists(os.path.join(output_folder, n))]
        if clash and not overwrite:
            raise FileExistsError(f"{output_folder} already holds {len(clash)} exported file(s); pass --overwrite "
                                  f"to replace them")
    if zip_file and os.path.exists(zip_file) and not overwrite:
        raise FileExistsError(f"{zip_file} exists; pass --overwrite to replace it or choose another --zip")
    image_ending = file_ending_of(next(iter(images.values())))
    image_rw = determine_reader_writer_from_file_ending(image_ending, next(iter(images.values())), verbose=False)()
    pred_rw = determine_reader_writer_from_file_ending(pred_ending, next(iter(preds.values())), verbose=False)()
    segs = {}
    for c, img_file in images.items():
        img, img_props = image_rw.read_images([img_file])
        seg, seg_props = pred_rw.read_seg(preds[c])
        why = geometry_mismatch(img.shape[1:], img_props, seg.shape[1:], seg_props)
        if why is not None:
            raise ValueError(f"prediction {preds[c]} does not match the geometry of its image {img_file}: {why}. "
                             f"Export predictions with nnUNetv2_predict (it writes them in the image's geometry) or "
                             f"resample them.")
        if out_ending != pred_ending:
            segs[c] = seg[0]

    os.makedirs(output_folder, exist_ok=True)
    written = []
    out_rw = None
    for c in sorted(images):
        target = os.path.join(output_folder, names[c])
        if out_ending == pred_ending:
            shutil.copyfile(preds[c], target)
        else:
            if out_rw is None:
                out_rw = determine_reader_writer_from_file_ending(out_ending, None, verbose=False)()
            try:
                _, props = out_rw.read_images([images[c]])  # geometry in the writer's own property format
            except Exception as e:
                raise ValueError(f"cannot write {out_ending} files with geometry from {images[c]}: the "
                                 f"{type(out_rw).__name__} writer cannot read the image ({e}). Choose an ending of "
                                 f"the same family as the images.") from None
            seg = segs[c]
            out_rw.write_seg(np.asarray(seg, dtype=np.uint8 if seg.max() < 255 else np.uint16), target, props)
        written.append(target)
    if zip_file:
        tmp = zip_file + ".part"
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for f in written:
                z.write(f, arcname=os.path.basename(f))
        os.replace(tmp, zip_file)
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
