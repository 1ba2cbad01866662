"""ACDC's patient split of the semi-supervised papers, and their labeled-patient protocols as label budgets.

The split is SSL4MIS's (public repository HiLab-git/SSL4MIS, ``data/ACDC/train.list``, ``val.list``,
``test.list``), which Cross Teaching between CNN and Transformer (Luo et al., MIDL 2022), AdvMIM (MICCAI 2025)
and most ACDC semi-supervised papers train and test on: the 100 patients of ACDC's ``training/`` folder as 70
training, 10 validation and 20 test patients. The lists name each patient's two annotated frames ``frame01`` and
``frame02`` (SSL4MIS renumbers ACDC's frames), so the split is one of patients; after conversion a case is one
frame under ACDC's own file name (``patient001_frame12``), and everything here selects cases by patient.

Protocols: "3 (7) labeled patients" label every frame of the first 3 (7) patients of ``train.list``; the other
training patients are unlabeled, the validation patients validate. SSL4MIS's 2D scripts label the first 68 (136)
slices of ``train_slices.list``, which are exactly the slices of those patients (docs/reproduce_acdc.md has the
count). ``acdc-all`` labels every training patient: the fully supervised reference of the same split.
"""
import re
from typing import Dict, List, Optional, Sequence

SOURCE = "SSL4MIS (github.com/HiLab-git/SSL4MIS) data/ACDC/train.list, val.list, test.list"
# dataset.json key under which the converter records the split it wrote (patients per part)
SPLIT_KEY = "acdc_patient_split"


def _patients(numbers: Sequence[int]) -> tuple:
    return tuple(f"patient{n:03d}" for n in numbers)


# patients in the order of SSL4MIS's lists (train.list's order defines the labeled protocols)
TRAIN_PATIENTS = _patients((99, 38, 50, 100, 58, 21, 49, 20, 72, 40, 60, 89, 4, 56, 98, 96, 31, 18, 94, 47, 48, 55,
                            97, 74, 43, 41, 63, 37, 95, 54, 26, 88, 32, 69, 6, 71, 12, 73, 61, 17, 25, 10, 57, 29,
                            51, 5, 36, 46, 62, 34, 76, 92, 70, 77, 67, 3, 91, 16, 14, 44, 42, 90, 53, 27, 35, 86,
                            23, 9, 79, 15))
VAL_PATIENTS = _patients((28, 85, 82, 87, 19, 30, 78, 45, 2, 39))
TEST_PATIENTS = _patients((11, 13, 84, 33, 93, 22, 68, 24, 83, 81, 80, 1, 7, 66, 8, 65, 75, 64, 59, 52))

# protocol name -> number of labeled patients taken from the start of TRAIN_PATIENTS (None: every training patient)
PROTOCOLS = {"acdc-3": 3, "acdc-7": 7, "acdc-all": None}

CASE_PATTERN = re.compile(r"^(patient\d{3})_frame\d{2}$")


def full_split() -> Dict[str, List[str]]:
    """The papers' split, patients per part (``train`` in ``train.list`` order)."""
    return {"train": list(TRAIN_PATIENTS), "val": list(VAL_PATIENTS), "test": list(TEST_PATIENTS)}


def restrict_split(split: Dict[str, List[str]], present: Sequence[str]) -> Dict[str, List[str]]:
    """The split with only the ``present`` patients kept, order kept."""
    keep = set(present)
    return {part: [p for p in patients if p in keep] for part, patients in split.items()}


def labeled_patients(protocol: str) -> List[str]:
    """The papers' labeled patients of a protocol (``acdc-all``: every training patient of the full split)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    n = PROTOCOLS[protocol]
    return list(TRAIN_PATIENTS if n is None else TRAIN_PATIENTS[:n])


def patient_of(case: str) -> str:
    """``patient001_frame12`` -> ``patient001``."""
    m = CASE_PATTERN.match(case)
    if m is None:
        raise ValueError(f"case {case!r} is not named patientXXX_frameYY, as nnUNetv2_advmim_convert_acdc names ACDC's "
                         f"frames; the ACDC protocols only apply to a dataset converted with it")
    return m.group(1)


def cases_by_patient(cases: Sequence[str]) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for c in sorted(cases):
        out.setdefault(patient_of(c), []).append(c)
    return out


def split_of_dataset(dataset_json: dict) -> Dict[str, List[str]]:
    """The split the converter recorded in ``dataset.json`` (a subset of the papers' when it converted a folder
    missing patients), else the papers' full split."""
    recorded = dataset_json.get(SPLIT_KEY)
    if recorded is None:
        return full_split()
    return {part: list(recorded[part]) for part in ("train", "val", "test")}


def _names(patients: Sequence[str]) -> str:
    return ", ".join(sorted(patients))


def protocol_budget(cases: Sequence[str], protocol: str, split: Optional[Dict[str, List[str]]] = None) -> dict:
    """A one-fold label budget (the format of ``nnUNetv2_advmim_label_budget``) for a named protocol.

    ``cases`` are the dataset's training cases (frames); they must be exactly the frames of the split's training and
    validation patients, so that no test patient is training data and the split's patients are all there. Fold 0:
    labeled = every frame of the protocol's patients, unlabeled = every frame of the other training patients,
    validation = every frame of the validation patients.
    """
    split = full_split() if split is None else split
    labeled_patients(protocol)  # an unknown name stops here
    wanted = list(split["train"]) if PROTOCOLS[protocol] is None else labeled_patients(protocol)
    by_patient = cases_by_patient(cases)
    present = set(by_patient)
    leaked = sorted(present & set(split["test"]))
    if leaked:
        raise ValueError(f"the training cases include frames of the test patients {_names(leaked)}: test patients "
                         f"must not be training data. Convert ACDC with nnUNetv2_advmim_convert_acdc, which writes "
                         f"them to imagesTs/labelsTs, and plan again.")
    known = set(split["train"]) | set(split["val"])
    extra = sorted(present - known)
    if extra:
        raise ValueError(f"the training cases include patients that are in no part of the split: {_names(extra)}. "
                         f"Convert ACDC with nnUNetv2_advmim_convert_acdc and plan again.")
    absent_labeled = [p for p in wanted if p not in present]
    if absent_labeled:
        raise ValueError(f"protocol {protocol} labels patients {_names(absent_labeled)}, which this dataset lacks "
                         f"(was it converted from an incomplete ACDC folder with --allow-missing-patients?). "
                         f"Convert the full ACDC training folder with nnUNetv2_advmim_convert_acdc.")
    absent = sorted(known - present)
    if absent:
        raise ValueError(f"patients {_names(absent)} of the split have no preprocessed training case; run "
                         f"nnUNetv2_plan_and_preprocess again on the converted dataset.")
    if not split["val"]:
        raise ValueError("the split has no validation patient; convert a folder that holds at least one")
    labeled = sorted(c for p in wanted for c in by_patient[p])
    unlabeled = sorted(c for p in split["train"] if p not in set(wanted) for c in by_patient[p])
    val = sorted(c for p in split["val"] for c in by_patient[p])
    return {"protocol": protocol, "source": SOURCE, "labeled_patients": list(wanted), "n_labeled": len(labeled),
            "seed": None, "cases_given": True, "n_folds": 1, "labeled": labeled,
            "folds": [{"val": val, "unlabeled": unlabeled}]}
