"""Where a dataset lives: nnU-Net's folders, plans and case identifiers.

Generic helpers the data modules share (unlabeled images, label budgets, input checks); they know nothing
about unlabeled data or budgets themselves.
"""
import os
import shutil
from typing import List

from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager


def env_folder(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise RuntimeError(f"The environment variable {var} is not set. Set it as for nnU-Net "
                           f"(https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/set_environment_variables.md).")
    return value


def find_dataset_name(dataset_name_or_id, root: str) -> str:
    """``DatasetXXX_Name`` for an ID (``4``, ``"004"``) or a full name, looked up in ``root``."""
    s = str(dataset_name_or_id)
    if s.startswith("Dataset"):
        return s
    try:
        dataset_id = int(s)
    except ValueError:
        raise ValueError(f"{dataset_name_or_id!r} is neither a dataset ID nor a DatasetXXX_Name") from None
    prefix = f"Dataset{dataset_id:03d}_"
    matches = sorted(f for f in os.listdir(root) if f.startswith(prefix)) if os.path.isdir(root) else []
    if not matches:
        raise FileNotFoundError(f"No dataset with ID {dataset_id} in {root}. If the dataset has not been planned yet, "
                                f"run `nnUNetv2_plan_and_preprocess -d {dataset_id}` first.")
    if len(matches) > 1:
        raise RuntimeError(f"More than one dataset with ID {dataset_id} in {root}: {matches}. Remove or rename one.")
    return matches[0]


def preprocessed_dataset_folder(dataset_name_or_id) -> str:
    root = env_folder("nnUNet_preprocessed")
    return os.path.join(root, find_dataset_name(dataset_name_or_id, root))


def load_plans_and_dataset_json(preprocessed_folder: str, plans_name: str = "nnUNetPlans"):
    """Plans manager and dataset.json of a planned dataset; a clear error if it was not planned."""
    plans_file = os.path.join(preprocessed_folder, plans_name + ".json")
    dataset_json_file = os.path.join(preprocessed_folder, "dataset.json")
    if not os.path.isfile(plans_file) or not os.path.isfile(dataset_json_file):
        missing = plans_file if not os.path.isfile(plans_file) else dataset_json_file
        name = os.path.basename(preprocessed_folder)
        raise FileNotFoundError(f"{missing} does not exist: the dataset {name} has not been planned (with plans "
                                f"'{plans_name}'). Run `nnUNetv2_plan_and_preprocess -d {name}` first (or pass the "
                                f"right -p PLANS).")
    return PlansManager(load_json(plans_file)), load_json(dataset_json_file)


def identifiers_in(folder: str) -> List[str]:
    """Case identifiers in a preprocessed folder, read with nnU-Net's own dataset class for that folder."""
    if not os.path.isdir(folder) or not any(f.endswith(".pkl") for f in os.listdir(folder)):
        return []
    return sorted(infer_dataset_class(folder).get_identifiers(folder))


def claim_raw_folder(raw_root: str, dataset_id: int, folder_name: str, overwrite: bool, id_flag: str = "-d") -> str:
    """``raw_root/folder_name`` made ready for a new raw dataset: refused when another folder already uses the ID
    (nnU-Net needs unique IDs) or when it exists without ``overwrite``; an existing one is removed with it."""
    out = os.path.join(raw_root, folder_name)
    os.makedirs(raw_root, exist_ok=True)
    clashes = [f for f in os.listdir(raw_root) if f.startswith(f"Dataset{int(dataset_id):03d}_") and f != folder_name]
    if clashes:
        raise FileExistsError(f"{raw_root} already holds {clashes[0]} with dataset ID {dataset_id}; nnU-Net needs "
                              f"unique IDs. Choose another ID ({id_flag}) or remove that folder.")
    if os.path.exists(out):
        if not overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
        shutil.rmtree(out)
    return out
