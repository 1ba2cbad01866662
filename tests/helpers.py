"""Helpers the tests share: run a command, copy a planned dataset, write short trainer variants."""
import json
import os
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk

from nnunetv2_advmim.data.synthetic import dataset_folder_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cmd(cmd, env=None, timeout=600, check=True, cwd=None):
    """Run a command in a subprocess; on failure raise with its combined output (pytest shows it)."""
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"`{' '.join(map(str, cmd))}` exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc


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


def copy_planned(planned, new_id, new_name):
    """Copy a planned fixture dataset (raw + plans + preprocessed folders) to a new ID so a test may change it."""
    env = planned.env
    name = dataset_folder_name(new_id, new_name)
    raw, pre = os.path.join(env["nnUNet_raw"], name), os.path.join(env["nnUNet_preprocessed"], name)
    for d in (raw, pre, os.path.join(env["nnUNet_results"], name)):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(planned.raw, raw)
    shutil.copytree(planned.preprocessed, pre, ignore=shutil.ignore_patterns("splits_final.json*", "label_budget*",
                                                                             "*_unlabeled"))
    plans_file = os.path.join(pre, "nnUNetPlans.json")
    with open(plans_file) as f:
        plans = json.load(f)
    plans["dataset_name"] = name
    with open(plans_file, "w") as f:
        json.dump(plans, f, indent=2)
    return name, raw, pre


def short_trainer(module: str, base: str, name: str, final_validation: bool = True, **attributes) -> str:
    """Source of a short trainer variant ``name`` of ``module.base`` that sets ``attributes`` (``OneChoice``, the
    package's one way to declare a variant); ``final_validation=False`` skips nnU-Net's final validation
    (sliding-window prediction of every validation case, minutes on 2 cores) where a test checks something else."""
    skip = ("\n    def perform_actual_validation(self, save_probabilities: bool = False):\n        pass\n"
            if not final_validation else "")
    return (f"from nnunetv2_advmim.trainers.one_choice import OneChoice\nfrom {module} import {base}\n\n\n"
            f"class {name}(OneChoice, {base}):\n    choice = {attributes!r}\n{skip}")


# a short stock-trainer variant most end-to-end tests can reuse
TINY_TRAINER = short_trainer("nnunetv2.training.nnUNetTrainer.nnUNetTrainer", "nnUNetTrainer", "nnUNetTrainer_tiny",
                             num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)


# a tiny 2D PlainConvUNet plans entry (3 stages, 8-32 features) for building AdvMIM's networks on tensors
TINY_2D_ARCH = dict(n_stages=3, features_per_stage=[8, 16, 32], conv_op="torch.nn.modules.conv.Conv2d",
                    kernel_sizes=[[3, 3]] * 3, strides=[[1, 1], [2, 2], [2, 2]], n_conv_per_stage=[2, 2, 2],
                    n_conv_per_stage_decoder=[2, 2], conv_bias=True,
                    norm_op="torch.nn.modules.instancenorm.InstanceNorm2d", norm_op_kwargs={"eps": 1e-5, "affine": True},
                    dropout_op=None, dropout_op_kwargs=None, nonlin="torch.nn.LeakyReLU",
                    nonlin_kwargs={"inplace": True})
TINY_2D_PLAN = SimpleNamespace(network_arch_class_name="dynamic_network_architectures.architectures.unet.PlainConvUNet",
                               network_arch_init_kwargs=TINY_2D_ARCH,
                               network_arch_init_kwargs_req_import=["conv_op", "norm_op", "dropout_op", "nonlin"])


# ------------------------------------------------------------------------------------- image files
def write_label_map(arr, path, spacing, origin=None):
    """Write an array in (z, y, x) / (y, x) order with spacing in the same order (SimpleITK wants x first)."""
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    if origin is not None:
        img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def evaluation_cases_3d(rng, n=3, shape=(12, 24, 20)):
    cases = {}
    for i in range(n):
        ref = np.zeros(shape, np.uint8)
        ref[3:9, 4:14, 5:13] = 1
        ref[4:8, 15:21, 6:12] = 2
        pred = np.roll(ref, i, axis=1)
        pred[rng.random(shape) < 0.01] = 1
        if i == 2:
            pred[pred == 2] = 0  # label 2 missed in one case
        cases[f"case_{i:03d}"] = (ref, pred)
    return cases


def write_image(array, spacing, path):
    img = sitk.GetImageFromArray(np.asarray(array))
    img.SetSpacing([float(s) for s in spacing[::-1]])
    sitk.WriteImage(img, str(path))
    return str(path)


def random_image(shape, seed=0):
    return np.random.default_rng(seed).normal(100, 20, size=shape).astype(np.float32)


def truncate_file(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    return path


def write_evaluation_folders(folder, seed: int, n: int = 2, spacing=(2.5, 0.8, 1.0)):
    """``folder/ref`` and ``folder/pred`` with :func:`evaluation_cases_3d` written as NIfTI; returns both paths."""
    cases = evaluation_cases_3d(np.random.default_rng(seed), n=n)
    for d in ("ref", "pred"):
        (folder / d).mkdir()
    for c, (r, p) in cases.items():
        write_label_map(r, folder / "ref" / f"{c}.nii.gz", spacing)
        write_label_map(p, folder / "pred" / f"{c}.nii.gz", spacing)
    return folder / "ref", folder / "pred"


# ------------------------------------------------------------------------------------------------ fake ACDC
def _heart(shape, rng):
    """Label map in ACDC's values (1 RV, 2 myocardium, 3 LV cavity) and an image with those tissues, (z, y, x)."""
    z, y, x = np.indices(shape)
    cy, cx = shape[1] / 2 + rng.uniform(-1, 1), shape[2] / 2 + rng.uniform(-1, 1)
    r = np.hypot(y - cy, x - cx)
    r_lv = rng.uniform(0.12, 0.18) * shape[1]
    seg = np.zeros(shape, np.uint8)
    seg[r < r_lv * 1.6] = 2
    seg[r < r_lv] = 3
    seg[(np.hypot(y - cy, x - (cx - 2.2 * r_lv)) < r_lv) & (seg == 0)] = 1
    seg[0] = 0  # the apex slice without heart, as in many ACDC volumes
    image = np.choose(seg, [40.0, 220.0, 90.0, 230.0]) + rng.normal(0, 15, shape)
    return image.astype(np.int16), seg


def write_fake_acdc(folder, patients, testing=("patient101",), shape=(4, 24, 24), spacing=(10.0, 1.5, 1.5), seed=0):
    """An ACDC download in miniature: ``training/patientXXX/`` with two frames (ED ``frame01`` and an ES frame),
    their ``_gt`` labels, ``Info.cfg`` and a ``_4d`` file; ``testing/`` patients without labels. Returns the
    folder and ``{patient: [frame case names]}``."""
    rng = np.random.default_rng(seed)
    frames = {}
    for part, names in (("training", patients), ("testing", testing)):
        for p in names:
            d = os.path.join(str(folder), part, p)
            os.makedirs(d)
            es = int(rng.integers(8, 15))
            frames[p] = [f"{p}_frame01", f"{p}_frame{es:02d}"]
            for case in frames[p]:
                image, seg = _heart(shape, rng)
                write_image(image, spacing, os.path.join(d, f"{case}.nii.gz"))
                if part == "training":
                    write_label_map(seg, os.path.join(d, f"{case}_gt.nii.gz"), spacing)
            write_image(image, spacing, os.path.join(d, f"{p}_4d.nii.gz"))
            with open(os.path.join(d, "Info.cfg"), "w") as f:
                f.write(f"ED: 1\nES: {es}\nGroup: NOR\nHeight: 170.0\nNbFrame: 20\nWeight: 70.0\n")
    return str(folder), frames


def train_cmd(ds, trainer, *extra):
    """``nnUNetv2_train`` of fold 0 of a planned dataset on the CPU."""
    return ["nnUNetv2_train", str(ds.id), ds.configuration, "0", "-tr", trainer, "-device", "cpu", *extra]


def model_fold(ds, trainer):
    return os.path.join(ds.results, f"{trainer}__nnUNetPlans__{ds.configuration}", "fold_0")


def assert_same_tree(a, b, path="") -> None:
    """Exact equality of nested dicts/lists of tensors and plain values (NaN equals NaN)."""
    import torch
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu()), path
    elif isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            assert_same_tree(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), (path, a, b)


def pause_methods(env_var: str, epoch: int) -> str:
    """Source of two trainer methods (class-body indentation) for a generated test trainer: when ``$env_var`` names
    a file, the run writes it after the first step of ``epoch`` and sleeps there, for :func:`sigkill_when_paused`.
    The generated module must import ``os`` and ``time``."""
    return f"""
    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._steps_this_epoch = 0

    def train_step(self, batch):
        out = super().train_step(batch)
        self._steps_this_epoch += 1
        pause = os.environ.get('{env_var}')
        if pause and self.current_epoch == {epoch} and self._steps_this_epoch == 1:
            open(pause, 'w').close()
            time.sleep(300)
        return out
"""


def sigkill_when_paused(cmd, env, pause_file, log_file, timeout, what):
    """Start ``cmd`` in its own process group, wait until the training writes ``pause_file`` (it then sleeps), and
    SIGKILL the group there; returns the exit status. ``what``: the point it should reach, for the error."""
    import signal
    import time
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + timeout
            while not os.path.exists(pause_file):
                assert proc.poll() is None, open(log_file).read()[-4000:]
                assert time.time() < deadline, f"training never reached {what}"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
    return proc.returncode
