"""``nnUNetv2_advmim_convert_acdc -i ACDC_FOLDER -d ID``: ACDC as an nnU-Net raw dataset with the papers' split.

Input: the ACDC challenge folder as distributed, ``training/patientXXX/patientXXX_frameYY.nii.gz`` and
``patientXXX_frameYY_gt.nii.gz`` (``Info.cfg`` and ``patientXXX_4d.nii.gz`` are not needed; ``testing/`` is not
part of the papers' protocol and is not converted). The 2023 re-release's ``database/`` level is accepted too.

Output, ``$nnUNet_raw/DatasetXXX_ACDC``:

- ``imagesTr``/``labelsTr``: every annotated frame of the split's 70 training and 10 validation patients, one case
  per frame (``patient001_frame01``), the 3D volume at its own spacing, so nnU-Net plans ``2d`` and ``3d_fullres``;
- ``imagesTs``/``labelsTs``: the frames of the 20 test patients (with labels: the study and
  ``nnUNetv2_advmim_evaluate`` score them);
- ``dataset.json`` (labels 0 background, 1 RV, 2 MYO, 3 LV: ACDC's ground-truth values, which nnU-Net's own
  converter names RV, MLV and LVC) with the split under ``acdc_patient_split``;
- ``$nnUNet_preprocessed/DatasetXXX_ACDC/splits_final.json``: one fold, training = the training patients' frames,
  validation = the validation patients' frames (an existing different file is backed up first).

The files are copied by nnU-Net's own converter (``Dataset027_ACDC.copy_files``, run once for the training and
validation patients and once for the test patients through folders of links to the patient folders), which also
names them; ``generate_dataset_json`` writes ``dataset.json``. Its random 5-fold split is replaced by the papers'.
Missing patients stop the conversion with their names, unless ``--allow-missing-patients`` restricts the split to
the patients present (for tests; results are then not comparable with the papers').
"""
import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

from nnunetv2.dataset_conversion.Dataset027_ACDC import copy_files
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunetv2_advmim.data.acdc_split import SOURCE, SPLIT_KEY, full_split, patient_of, restrict_split
from nnunetv2_advmim.data.label_budget import SPLITS_FILE, write_json_with_backup
from nnunetv2_advmim.data.paths import claim_raw_folder, env_folder
from nnunetv2_advmim.data.synthetic import dataset_folder_name
from nnunetv2_advmim.cli import DefaultsHelpFormatter

LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
FILE_ENDING = ".nii.gz"
PATIENT_DIR = re.compile(r"^patient\d{3}$")


def training_folder(acdc_folder: str) -> str:
    """ACDC's ``training/`` folder inside ``acdc_folder`` (directly or under ``database/``)."""
    for candidate in (os.path.join(acdc_folder, "training"), os.path.join(acdc_folder, "database", "training")):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f"{acdc_folder} has no training/ folder (nor database/training/). Pass the folder of the "
                            f"ACDC download that holds training/patient001/patient001_frame01.nii.gz ...")


def patient_problems(patient_dir: str) -> List[str]:
    """What keeps one patient folder from converting: no frame, a frame without its ``_gt`` file, a label without
    its frame, or another ``.nii.gz`` file, which nnU-Net's copy would take for an image."""
    name = os.path.basename(patient_dir)
    files = set(os.listdir(patient_dir))
    frame = re.compile(rf"^{name}_frame\d{{2}}{re.escape(FILE_ENDING)}$")
    frames = sorted(f for f in files if frame.match(f))
    problems = []
    if not frames:
        problems.append(f"{patient_dir}: no {name}_frameYY{FILE_ENDING} file; restore the patient folder from the "
                        f"ACDC download")
    for f in frames:
        gt = f[:-len(FILE_ENDING)] + "_gt" + FILE_ENDING
        if gt not in files:
            problems.append(f"{os.path.join(patient_dir, f)}: its label {gt} is missing; restore it from the ACDC "
                            f"download")
    expected = set(frames) | {f[:-len(FILE_ENDING)] + "_gt" + FILE_ENDING for f in frames} | {
        f"{name}_4d{FILE_ENDING}"}
    for f in sorted(files - expected):
        if f.endswith(".gz"):
            problems.append(f"{os.path.join(patient_dir, f)}: not an ACDC frame, label or 4D file; nnU-Net's copy "
                            f"would take it for an image. Move it out of the patient folder")
    return problems


def _copy_patients(training_dir: str, patients: Sequence[str], images: str, labels: str) -> int:
    """Copy the frames and labels of ``patients`` with nnU-Net's ``copy_files``, which converts a whole
    ``training/`` (+ ``testing/``) folder: it gets a folder whose ``training/`` links to exactly these patients."""
    with tempfile.TemporaryDirectory(prefix="acdc_convert_") as stage:
        os.makedirs(os.path.join(stage, "training"))
        os.makedirs(os.path.join(stage, "testing"))
        for p in patients:
            os.symlink(os.path.abspath(os.path.join(training_dir, p)), os.path.join(stage, "training", p))
        return copy_files(Path(stage), Path(images), Path(labels), Path(images))


def _frames(folder: str) -> List[str]:
    return sorted(f[:-len(FILE_ENDING)] for f in os.listdir(folder) if f.endswith(FILE_ENDING))


def convert_acdc(acdc_folder: str, dataset_id: int, name: str = "ACDC", allow_missing: bool = False,
                 overwrite: bool = False) -> dict:
    """Convert (module docstring); returns the dataset folder, the split written and the case counts."""
    raw_root, pre_root = env_folder("nnUNet_raw"), env_folder("nnUNet_preprocessed")
    train_dir = training_folder(acdc_folder)
    present = sorted(d for d in os.listdir(train_dir)
                     if PATIENT_DIR.match(d) and os.path.isdir(os.path.join(train_dir, d)))
    split = full_split()
    wanted = [p for part in ("train", "val", "test") for p in split[part]]
    missing = [p for p in wanted if p not in set(present)]
    if missing and not allow_missing:
        raise FileNotFoundError(f"{train_dir} lacks {len(missing)} of the {len(wanted)} patients of the papers' split "
                                f"({SOURCE}): {', '.join(sorted(missing))}. Use the complete ACDC training folder "
                                f"(patient001 to patient100), or pass --allow-missing-patients to convert only the "
                                f"patients present (results are then not comparable with the papers').")
    if missing:
        split = restrict_split(split, present)
        if not split["train"] or not split["val"]:
            raise FileNotFoundError(f"{train_dir} holds no patient of the split's "
                                    f"{'training' if not split['train'] else 'validation'} part; even with "
                                    f"--allow-missing-patients the dataset needs one of each")
    problems = [q for part in ("train", "val", "test") for p in split[part]
                for q in patient_problems(os.path.join(train_dir, p))]
    if problems:
        raise ValueError("the ACDC folder has problems:\n  " + "\n  ".join(problems))

    folder_name = dataset_folder_name(dataset_id, name)
    out = claim_raw_folder(raw_root, dataset_id, folder_name, overwrite)
    folders = {k: os.path.join(out, k) for k in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    for f in folders.values():
        os.makedirs(f)
    n_train = _copy_patients(train_dir, split["train"] + split["val"], folders["imagesTr"], folders["labelsTr"])
    n_test = _copy_patients(train_dir, split["test"], folders["imagesTs"], folders["labelsTs"])

    generate_dataset_json(out, channel_names={0: "cineMRI"}, labels=dict(LABELS), num_training_cases=n_train,
                          file_ending=FILE_ENDING, dataset_name=folder_name,
                          reference="https://www.creatis.insa-lyon.fr/Challenge/acdc/",
                          description=f"ACDC cine MRI, one case per annotated frame; imagesTr holds the training "
                                      f"and validation patients, imagesTs the test patients of {SOURCE}",
                          license="see the ACDC challenge's terms of use",
                          converted_by="nnUNetv2_advmim_convert_acdc",
                          **{SPLIT_KEY: dict(split, source=SOURCE, complete=not missing)})
    cases = cases_of_patients(_frames(folders["labelsTr"]), split)
    splits = [{"train": cases["train"], "val": cases["val"]}]
    pre = os.path.join(pre_root, folder_name)
    backup = write_json_with_backup(os.path.join(pre, SPLITS_FILE), splits)
    return {"folder": out, "split": split, "missing": missing, "n_train_cases": len(cases["train"]),
            "n_val_cases": len(cases["val"]), "n_test_cases": n_test, "splits_file": os.path.join(pre, SPLITS_FILE),
            "backup": backup}


def cases_of_patients(cases: Sequence[str], split: Dict[str, List[str]]) -> Dict[str, List[str]]:
    """The cases (frames) of each part of ``split``: a case belongs to its patient's part."""
    part_of = {p: part for part, patients in split.items() for p in patients}
    out = {part: [] for part in split}
    for c in sorted(cases):
        out[part_of[patient_of(c)]].append(c)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_convert_acdc",
        description="Convert the ACDC challenge folder into an nnU-Net raw dataset with the semi-supervised papers' "
                    "patient split (SSL4MIS lists: 70 training, 10 validation, 20 test patients): imagesTr/labelsTr "
                    "= training + validation patients (one case per annotated frame), imagesTs/labelsTs = test "
                    "patients, and splits_final.json (one fold) in $nnUNet_preprocessed. Then plan, and choose the "
                    "labeled patients with nnUNetv2_advmim_label_budget --protocol acdc-3 / acdc-7.")
    parser.add_argument("-i", required=True, help="ACDC folder holding training/patientXXX/ (or database/training/)")
    parser.add_argument("-d", type=int, required=True, help="nnU-Net dataset ID, e.g. 27")
    parser.add_argument("--name", default="ACDC", help="dataset name (default ACDC: DatasetXXX_ACDC)")
    parser.add_argument("--allow-missing-patients", action="store_true",
                        help="convert only the patients of the split that the folder holds instead of stopping "
                             "(for tests and partial downloads; not the papers' protocol)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing raw dataset folder of this name")
    args = parser.parse_args(argv)
    try:
        result = convert_acdc(args.i, args.d, args.name, args.allow_missing_patients, args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    split = result["split"]
    if result["missing"]:
        print(f"WARNING: {len(result['missing'])} patients of the papers' split are missing and were left out: "
              f"{', '.join(sorted(result['missing']))}")
    print(f"Wrote {result['folder']}: {result['n_train_cases']} training frames ({len(split['train'])} patient(s)) "
          f"+ {result['n_val_cases']} validation frames ({len(split['val'])} patient(s)) in imagesTr, "
          f"{result['n_test_cases']} test frames ({len(split['test'])} patient(s)) in imagesTs/labelsTs")
    if result["backup"]:
        print(f"Backed up the previous {SPLITS_FILE} to {result['backup']}")
    print(f"Wrote {result['splits_file']} (fold 0 = the papers' training / validation patients). Next: "
          f"nnUNetv2_plan_and_preprocess -d {args.d} -c 2d 3d_fullres, then nnUNetv2_advmim_label_budget -d {args.d} "
          f"--protocol acdc-3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
