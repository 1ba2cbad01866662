"""MIM pretraining trainers end to end with the stock commands (DESIGN.md section 7), on the CPU.

Own tiny datasets (ids 960-962): 960 = 3D (6 labeled 24x32x32 + 4 imagesUnlabeled), 961 = 2D (6 + 4, 64x64);
962 = a copy of 960's preprocessed data whose segmentations are corrupted (for the "reads no labels" proof).
Short trainer variants live in a test folder put first on nnUNet_extTrainer.
"""
import os
import pickle
import re
import shutil
import textwrap

import numpy as np
import pytest
import torch

from nnunetv2_advmim.data.synthetic import dataset_folder_name, make_synthetic_dataset

from helpers import run_cmd

SHORT_TRAINERS = '''
import os
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2_advmim.trainers.nnUNetTrainerMIM import (nnUNetTrainerAnatoMask, nnUNetTrainerAnatoMask_Hybrid,
                                                      nnUNetTrainerMIM, nnUNetTrainerMPSAMS)


def _short(t, epochs):
    t.num_epochs = epochs
    t.num_iterations_per_epoch = 2
    t.num_val_iterations_per_epoch = 1
    t.warmup_epochs = 1
    t.save_every = 1
    t.num_example_images = 2


def _short_variant(base, name, epochs):
    """A subclass of ``base`` with ``_short`` settings; nnU-Net reads the init signature, so it is spelled out."""
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        _short(self, epochs)
    return type(name, (base,), {"__init__": __init__})


nnUNetTrainerMIM_t = _short_variant(nnUNetTrainerMIM, "nnUNetTrainerMIM_t", 1)
nnUNetTrainerMPSAMS_t = _short_variant(nnUNetTrainerMPSAMS, "nnUNetTrainerMPSAMS_t", 1)
nnUNetTrainerAnatoMask_Hybrid_t = _short_variant(nnUNetTrainerAnatoMask_Hybrid, "nnUNetTrainerAnatoMask_Hybrid_t", 1)


class nnUNetTrainerAnatoMask_t(nnUNetTrainerAnatoMask):
    """Two epochs; MIM_TEST_STOP_AFTER_EPOCH=k simulates a crash right after epoch k was checkpointed."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _short(self, 2)

    def on_epoch_end(self):
        epoch = self.current_epoch
        super().on_epoch_end()
        if os.environ.get('MIM_TEST_STOP_AFTER_EPOCH') == str(epoch):
            raise SystemExit(3)


class nnUNetTrainer_ft(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 1
        self.num_val_iterations_per_epoch = 1

    def perform_actual_validation(self, save_probabilities: bool = False):
        pass  # what is tested is stock -pretrained_weights loading; sliding-window validation costs minutes on 2 cores
'''

ADVMIM_SHORT = '''
import torch
from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM


class nnUNetTrainerAdvMIM_ft(nnUNetTrainerAdvMIM):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 1
        self.num_val_iterations_per_epoch = 1

    def perform_actual_validation(self, save_probabilities: bool = False):
        pass  # what is tested is stock -pretrained_weights loading; sliding-window validation costs minutes on 2 cores
'''


@pytest.fixture(scope="module")
def mim_env(nnunet_env, tmp_path_factory):
    """Plan + preprocess datasets 960 (3D) and 961 (2D) incl. imagesUnlabeled; env for stock commands."""
    from nnunetv2_advmim.data.unlabeled import preprocess_unlabeled
    raw = nnunet_env["nnUNet_raw"]
    make_synthetic_dataset(raw, 960, "MIM3D", dim=3, n_train=6, n_unlabeled=4, n_test=0, shape=(24, 32, 32),
                           spacing=(2.0, 1.0, 1.0), seed=3, overwrite=True)
    make_synthetic_dataset(raw, 961, "MIM2D", dim=2, n_train=6, n_unlabeled=4, n_test=0, shape=(64, 64), seed=4,
                           overwrite=True)
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", "960", "-c", "3d_fullres", "-np", "2"], env=nnunet_env)
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", "961", "-c", "2d", "-np", "2"], env=nnunet_env)
    for d in (960, 961):
        preprocess_unlabeled(d, num_processes=1, verbose=False)
    ext = tmp_path_factory.mktemp("mim_ext")
    (ext / "mim_short_trainers.py").write_text(textwrap.dedent(SHORT_TRAINERS))
    env = dict(nnunet_env)
    env["nnUNet_extTrainer"] = str(ext)
    env["nnUNet_n_proc_DA"] = "0"  # in-process augmentation: no worker start-up on 2 cores
    env.pop("MIM_TEST_STOP_AFTER_EPOCH", None)
    env["ext"] = str(ext)
    return env


def _fold_dir(env, dataset_id, name, trainer, configuration, plans="nnUNetPlans", fold="0"):
    return os.path.join(env["nnUNet_results"], dataset_folder_name(dataset_id, name),
                        f"{trainer}__{plans}__{configuration}", f"fold_{fold}")


def _train(env, dataset_id, configuration, trainer, *extra, check=True):
    cmd = ["nnUNetv2_train", str(dataset_id), configuration, "0", "-tr", trainer, "-device", "cpu", *extra]
    return run_cmd(cmd, env={k: v for k, v in env.items() if k != "ext"}, check=check)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


# ------------------------------------------------------------------------------------- 3D AnatoMask: full story


# ------------------------------------------------------------------------------------- other trainers, 2D and 3D


# ------------------------------------------------------------------------------------- no labels read
def _corrupt_copy(src: str, dst: str, new_name: str) -> None:
    """Copy a preprocessed dataset and destroy every label: segmentation files become garbage, label-derived
    properties nonsense, gt_segmentations removed."""
    shutil.copytree(src, dst)
    shutil.rmtree(os.path.join(dst, "gt_segmentations"), ignore_errors=True)
    for plans in [f for f in os.listdir(dst) if f.startswith("nnUNetPlans") and f.endswith(".json")]:
        p = os.path.join(dst, plans)
        s = open(p).read()
        open(p, "w").write(re.sub(r'"dataset_name": "[^"]+"', f'"dataset_name": "{new_name}"', s))
    n = 0
    for root, _, files in os.walk(dst):
        for f in files:
            path = os.path.join(root, f)
            if f.endswith("_seg.b2nd") or f.endswith("_seg.npy"):
                with open(path, "wb") as fh:
                    fh.write(os.urandom(64))
                n += 1
            elif f.endswith(".pkl"):
                with open(path, "rb") as fh:
                    props = pickle.load(fh)
                props["class_locations"] = {1: np.zeros((3, 4), dtype=np.int64), 2: "corrupted"}
                with open(path, "wb") as fh:
                    pickle.dump(props, fh)
    assert n >= 10


# ------------------------------------------------------------------------------------- core helpers (tensors only)
SMALL_ARCH = {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv2d",
              "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]], "n_conv_per_stage": [1, 1, 1],
              "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
              "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
              "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
              "nonlin_kwargs": {"inplace": True}}
REQ = ["conv_op", "norm_op", "dropout_op", "nonlin"]
STOCK_CNN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def test_pretraining_network_keys_fit_stock_network():
    """Pretraining network = stock network + mask_token; only seg_layers differ in shape (DESIGN.md section 3)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunetv2_advmim.runtime.weights import compare_state_dicts
    from nnunetv2_advmim.architectures.from_plans import pretraining_arch
    name, kw, req = pretraining_arch(STOCK_CNN, SMALL_ARCH, REQ)
    assert name.endswith("MaskablePlainConvUNet")
    pre = get_network_from_plans(name, kw, req, 2, 2, deep_supervision=False)
    stock = get_network_from_plans(STOCK_CNN, SMALL_ARCH, REQ, 2, 5, deep_supervision=True)
    r = compare_state_dicts(stock.state_dict(), pre.state_dict())
    assert r["loadable"] and r["unused"] == ["mask_token"] and r["skipped"]
    x = torch.randn(2, 2, 32, 32)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)  # block 4x4 = total stride
    mask[:, :2] = True
    assert pre(x, mask=mask).shape == x.shape  # a reconstruction of every input channel
    hname, hkw, _ = pretraining_arch(STOCK_CNN, SMALL_ARCH, REQ, hybrid=True, num_heads=4, depth=1)
    assert hname.endswith("HybridTransformerUNet") and hkw["depth"] == 1
    with pytest.raises(ValueError, match="no maskable version"):
        pretraining_arch("my.own.Net", SMALL_ARCH, REQ)


def test_warmup_cosine_schedule_endpoints():
    from nnunetv2_advmim.methods.schedules import WarmupCosineLRScheduler, warmup_cosine_lr
    lrs = [warmup_cosine_lr(e, 1e-4, 100, 20) for e in range(100)]
    assert lrs[0] == pytest.approx(1e-4 / 20) and lrs[19] == pytest.approx(1e-4)
    assert lrs[20] == pytest.approx(1e-4) and lrs[60] == pytest.approx(0.5e-4) and lrs[99] < 1e-6
    assert all(a <= b for a, b in zip(lrs[:20], lrs[1:21])) and all(a >= b for a, b in zip(lrs[20:], lrs[21:]))
    assert warmup_cosine_lr(0, 1e-4, 2, 20) == pytest.approx(1e-4)  # warm-up capped to the run length
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = WarmupCosineLRScheduler(opt, 1e-4, 100, 20)
    sched.step(60)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-4)
