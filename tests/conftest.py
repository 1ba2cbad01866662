"""Shared fixtures: nnU-Net folders in a temp dir, tiny planned synthetic datasets, stock-command runner.

Everything runs on the CPU. Planned datasets are session-scoped (planning costs seconds) and must be
treated as read-only by tests; a test that changes a dataset makes its own.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from nnunetv2_advmim.data.synthetic import dataset_folder_name, make_synthetic_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 2 cores: nnU-Net's final validation and export otherwise spawn a pool of 8 processes (nnUNet_def_n_proc),
# each importing torch, which costs far more than the tiny predictions themselves; one augmentation worker.
os.environ.setdefault("nnUNet_def_n_proc", "1")
os.environ.setdefault("nnUNet_n_proc_DA", "1")


def run_cmd(cmd, env=None, timeout=600, check=True, cwd=None):
    """Run a command in a subprocess; on failure raise with its combined output (pytest shows it)."""
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"`{' '.join(map(str, cmd))}` exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc


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


class Planned:
    """A planned + preprocessed synthetic dataset."""

    def __init__(self, dataset_id, name, configuration, env):
        self.id = dataset_id
        self.name = dataset_folder_name(dataset_id, name)
        self.configuration = configuration
        self.env = env
        self.raw = os.path.join(env["nnUNet_raw"], self.name)
        self.preprocessed = os.path.join(env["nnUNet_preprocessed"], self.name)
        self.results = os.path.join(env["nnUNet_results"], self.name)


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


# a short stock-trainer variant most end-to-end tests can reuse
TINY_TRAINER = '''
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_tiny(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
'''


def short_trainer(module: str, base: str, name: str, **attributes) -> str:
    """Source of a short trainer variant ``name`` of ``module.base`` setting ``attributes`` after ``__init__``.

    nnU-Net 2.8.1 needs the exact ``__init__`` signature of ``nnUNetTrainer`` (it records the init kwargs), which is
    why test variants are written out rather than parametrised."""
    sets = "".join(f"        self.{k} = {v!r}\n" for k, v in attributes.items())
    return (f"import torch\nfrom {module} import {base}\n\n\nclass {name}({base}):\n"
            f"    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,\n"
            f"                 device: torch.device = torch.device('cuda')):\n"
            f"        super().__init__(plans, configuration, fold, dataset_json, device)\n{sets}")
