"""Shared fixtures: nnU-Net folders in a temp dir and tiny planned synthetic datasets; the ``e2e`` marker.

Tests under ``tests/e2e/`` run nnU-Net's commands or trainers on planned data (minutes); they get the ``e2e`` marker,
so ``pytest -m "not e2e"`` is the fast loop over ``tests/unit/``. Everything runs on the CPU. Planned datasets are
session-scoped (planning costs seconds) and must be treated as read-only by tests; a test that changes a dataset
makes its own (``helpers.copy_planned``).
"""
import json
import os
import pickle
import textwrap

import pytest
from helpers import Planned, run_cmd

from nnunetv2_advmim.data.synthetic import make_synthetic_dataset

E2E = os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e")

# 2 cores: nnU-Net's final validation and export otherwise spawn a pool of 8 processes (nnUNet_def_n_proc),
# each importing torch, which costs far more than the tiny predictions themselves; one augmentation worker.
os.environ.setdefault("nnUNet_def_n_proc", "1")
os.environ.setdefault("nnUNet_n_proc_DA", "1")


@pytest.fixture(scope="session")
def nnunet_env(tmp_path_factory):
    """Set nnUNet_raw/_preprocessed/_results to fresh temp folders for the whole session; return the env dict."""
    base = tmp_path_factory.mktemp("nnunet")
    old = {k: os.environ.get(k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",
                                          "nnUNet_n_proc_DA", "OMP_NUM_THREADS")}
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[k] = str(base / k)
        os.makedirs(os.environ[k], exist_ok=True)
    os.environ["nnUNet_n_proc_DA"] = "1"  # 2 cores: one augmentation worker + the main process
    yield dict(os.environ)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _plan(dataset_id, configuration, env):
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", configuration, "-np", "2"], env=env)


@pytest.fixture(scope="session")
def planned_3d(nnunet_env):
    """3D: 6 labeled (24x32x32, anisotropic spacing 2x1x1 mm), 4 unlabeled, 2 test cases, ``3d_fullres`` planned."""
    make_synthetic_dataset(nnunet_env["nnUNet_raw"], 901, "Tiny3D", dim=3, n_train=6, n_unlabeled=4, n_test=2,
                           shape=(24, 32, 32), spacing=(2.0, 1.0, 1.0), seed=1)
    _plan(901, "3d_fullres", nnunet_env)
    return Planned(901, "Tiny3D", "3d_fullres", nnunet_env)


@pytest.fixture(scope="session")
def planned_2d(nnunet_env):
    """2D: 6 labeled (64x64), 4 unlabeled, 2 test cases, ``2d`` planned."""
    make_synthetic_dataset(nnunet_env["nnUNet_raw"], 902, "Tiny2D", dim=2, n_train=6, n_unlabeled=4, n_test=2,
                           shape=(64, 64), seed=2)
    _plan(902, "2d", nnunet_env)
    return Planned(902, "Tiny2D", "2d", nnunet_env)


class AdvDataset(Planned):
    """A planned dataset (conftest.Planned) with its label budget."""

    def __init__(self, dataset_id, name, configuration, env):
        super().__init__(dataset_id, name, configuration, env)
        with open(os.path.join(self.preprocessed, "label_budget.json")) as f:
            self.budget = json.load(f)


def _make_advmim_dataset(env, dataset_id, name, configuration, **kw):
    make_synthetic_dataset(env["nnUNet_raw"], dataset_id, name, n_train=6, n_unlabeled=4, n_test=2, **kw)
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", configuration, "-np", "2"], env=env)
    run_cmd(["nnUNetv2_advmim_label_budget", "-d", str(dataset_id), "-n", "2", "--folds", "2"], env=env)
    run_cmd(["nnUNetv2_advmim_preprocess_unlabeled", "-d", str(dataset_id), "-c", configuration, "-np", "2"], env=env)
    ds = AdvDataset(dataset_id, name, configuration, env)
    _remove_labels_of_unlabeled_cases(ds)
    return ds


def _remove_labels_of_unlabeled_cases(ds):
    """Delete every label-derived file of the budget-unlabeled cases of fold 0 (segmentation and the
    class_locations in the properties): any read of their labels by training would now fail."""
    folder = os.path.join(ds.preprocessed, f"nnUNetPlans_{ds.configuration}")
    for case in ds.budget["folds"][0]["unlabeled"]:
        os.remove(os.path.join(folder, f"{case}_seg.b2nd"))
        with open(os.path.join(folder, f"{case}.pkl"), "rb") as f:
            props = pickle.load(f)
        props.pop("class_locations", None)
        with open(os.path.join(folder, f"{case}.pkl"), "wb") as f:
            pickle.dump(props, f)


@pytest.fixture(scope="session")
def advmim_3d(nnunet_env):
    """Dataset 950 (3D) of the AdvMIM tests: 6 labeled, 4 unlabeled, label budget of 2 cases in 2 folds."""
    return _make_advmim_dataset(nnunet_env, 950, "AdvMIM3D", "3d_fullres", dim=3, shape=(24, 32, 32), spacing=(2.0, 1.0, 1.0),
                 seed=5)


@pytest.fixture(scope="session")
def advmim_2d(nnunet_env):
    """Dataset 951 (2D) of the AdvMIM tests, made as ``advmim_3d``; shared read-only by the AdvMIM test modules."""
    return _make_advmim_dataset(nnunet_env, 951, "AdvMIM2D", "2d", dim=2, shape=(64, 64), seed=6)


@pytest.fixture
def ext_trainers(tmp_path):
    """A folder for short trainer variants written by a test; returns (folder, write(module_name, source)).

    Put the folder on ``nnUNet_extTrainer`` in the env of the subprocess; our installed trainers are
    appended by ``nnunetv2_advmim.pth`` in every Python process.
    """
    folder = tmp_path / "ext_trainers"
    folder.mkdir()

    def write(module_name, source):
        (folder / f"{module_name}.py").write_text(textwrap.dedent(source))

    return str(folder), write


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.path).startswith(E2E + os.sep):
            item.add_marker(pytest.mark.e2e)
