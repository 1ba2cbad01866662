"""MIM pretraining trainers end to end with the stock commands, on the CPU.

Own tiny datasets (ids 960-962): 960 = 3D (6 labeled 24x32x32 + 4 imagesUnlabeled), 961 = 2D (6 + 4, 64x64);
962 = a copy of 960's preprocessed data whose segmentations are corrupted (for the "reads no labels" proof).
Short trainer variants live in a test folder put first on nnUNet_extTrainer.
"""
import json
import os
import pickle
import re
import shutil
import textwrap

import numpy as np
import pytest
import torch

from nnunetv2_advmim.data.synthetic import dataset_folder_name, make_synthetic_dataset

from helpers import run_cmd, short_trainer

SHORT_TRAINERS = '''
import os
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2_advmim.trainers.nnUNetTrainerMIM import (nnUNetTrainerAnatoMask, nnUNetTrainerAnatoMask_AdvMIM,
                                                      nnUNetTrainerAnatoMask_Hybrid, nnUNetTrainerMIM,
                                                      nnUNetTrainerMPSAMS, nnUNetTrainerMPSAMS_AdvMIM)


def _short(t, epochs):
    t.num_epochs = epochs
    t.num_iterations_per_epoch = 2
    t.num_val_iterations_per_epoch = 1
    t.warmup_epochs = 1
    t.save_every = 1
    t.num_example_images = 2


def _short_variant(bases, name, epochs):
    """A subclass of ``bases`` with ``_short`` settings; nnU-Net reads the init signature, so it is spelled out."""
    bases = bases if isinstance(bases, tuple) else (bases,)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        bases[-1].__init__(self, plans, configuration, fold, dataset_json, device)
        _short(self, epochs)
    return type(name, bases, {"__init__": __init__})


class _CrashAfterEpoch:
    """MIM_TEST_STOP_AFTER_EPOCH=k simulates a crash right after epoch k was checkpointed."""

    def on_epoch_end(self):
        epoch = self.current_epoch
        super().on_epoch_end()
        if os.environ.get('MIM_TEST_STOP_AFTER_EPOCH') == str(epoch):
            raise SystemExit(3)


nnUNetTrainerMIM_t = _short_variant(nnUNetTrainerMIM, "nnUNetTrainerMIM_t", 1)
nnUNetTrainerMPSAMS_t = _short_variant(nnUNetTrainerMPSAMS, "nnUNetTrainerMPSAMS_t", 1)
nnUNetTrainerAnatoMask_Hybrid_t = _short_variant(nnUNetTrainerAnatoMask_Hybrid, "nnUNetTrainerAnatoMask_Hybrid_t", 1)
nnUNetTrainerMPSAMS_AdvMIM_t = _short_variant(nnUNetTrainerMPSAMS_AdvMIM, "nnUNetTrainerMPSAMS_AdvMIM_t", 1)
nnUNetTrainerAnatoMask_t = _short_variant((_CrashAfterEpoch, nnUNetTrainerAnatoMask), "nnUNetTrainerAnatoMask_t", 2)
nnUNetTrainerAnatoMask_AdvMIM_t = _short_variant((_CrashAfterEpoch, nnUNetTrainerAnatoMask_AdvMIM),
                                                 "nnUNetTrainerAnatoMask_AdvMIM_t", 2)
'''

ONE_STEP = dict(final_validation=False, num_epochs=1, num_iterations_per_epoch=1, num_val_iterations_per_epoch=1)
SHORT_TRAINERS += short_trainer("nnunetv2.training.nnUNetTrainer.nnUNetTrainer", "nnUNetTrainer", "nnUNetTrainer_ft",
                                **ONE_STEP)
ADVMIM_SHORT = short_trainer("nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM", "nnUNetTrainerAdvMIM",
                             "nnUNetTrainerAdvMIM_ft", **ONE_STEP)


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
def test_anatomask_3d_resume_and_stock_finetune(mim_env):
    """AnatoMask 3D: crash after epoch 0, `--c` resumes teacher + schedule, stock fine-tuning loads the weights."""
    from nnunetv2_advmim.methods.mim import masking_dynamics_ratio
    fold = _fold_dir(mim_env, 960, "MIM3D", "nnUNetTrainerAnatoMask_t", "3d_fullres")
    env = dict(mim_env, MIM_TEST_STOP_AFTER_EPOCH="0")
    proc = _train(env, 960, "3d_fullres", "nnUNetTrainerAnatoMask_t", check=False)
    assert proc.returncode != 0 and os.path.isfile(os.path.join(fold, "checkpoint_latest.pth")), proc.stdout[-3000:]
    splits = json.load(open(os.path.join(mim_env["nnUNet_preprocessed"], dataset_folder_name(960, "MIM3D"),
                                         "splits_final.json")))
    n_train = len(splits[0]["train"]) + 4  # every fold-0 training image + the 4 imagesUnlabeled
    assert f"MIM pretraining data: {n_train} training images (labels never read), {len(splits[0]['val'])} " \
           f"validation images" in proc.stdout
    latest = _load(os.path.join(fold, "checkpoint_latest.pth"))
    st = latest["mim_state"]
    assert latest["current_epoch"] == 1 and st["teacher"]["step"] == 2  # one EMA update per iteration
    teacher_after_epoch0 = {k: v.clone() for k, v in st["teacher"]["teacher"].items()}

    proc = _train(mim_env, 960, "3d_fullres", "nnUNetTrainerAnatoMask_t", "--c")
    assert "Epoch 0\n" not in proc.stdout and "Epoch 1" in proc.stdout  # resumed, not restarted
    final = _load(os.path.join(fold, "checkpoint_final.pth"))
    st = final["mim_state"]
    assert final["current_epoch"] == 2 and st["teacher"]["step"] == 4
    log = final["logging"]
    assert len(log["train_losses"]) == len(log["val_losses"]) == 2 and all(np.isfinite(log["val_losses"]))
    assert log["mim_hard_ratio"] == [masking_dynamics_ratio(e, 2, 0.5) for e in (0, 1)]
    # the resumed teacher continued from the saved one (EMA with decay >= 0.999 moves it only slightly)
    diffs = [(st["teacher"]["teacher"][k].float() - v.float()).abs().max().item() for k, v in teacher_after_epoch0.items()
             if v.is_floating_point()]
    assert 0 < max(diffs) < 1e-2
    assert "mask_token" in final["network_weights"]
    for f in ("progress.png", "mim_examples.png", "checkpoint_best.pth"):
        assert os.path.isfile(os.path.join(fold, f)), f
    # the visual check of any checkpoint, through its console command
    proc = run_cmd(["nnUNetv2_advmim_mim_visualize", "-d", "960", "-c", "3d_fullres", "-f", "0", "-tr",
                    "nnUNetTrainerAnatoMask_t", "-chk", "checkpoint_best.pth", "-n", "2"],
                   env={k: v for k, v in mim_env.items() if k != "ext"})
    png = os.path.join(fold, "mim_examples_checkpoint_best.png")
    assert f"Wrote {png}" in proc.stdout and os.path.getsize(png) > 10000

    ckpt = os.path.join(fold, "checkpoint_final.pth")
    proc = _train(mim_env, 960, "3d_fullres", "nnUNetTrainer_ft", "-pretrained_weights", ckpt)
    assert "Loading pretrained weights from file" in proc.stdout
    ft = _load(os.path.join(_fold_dir(mim_env, 960, "MIM3D", "nnUNetTrainer_ft", "3d_fullres"),
                            "checkpoint_final.pth"))
    assert "mask_token" not in ft["network_weights"]


# ------------------------------------------------------------------------------------- other trainers, 2D and 3D
@pytest.mark.parametrize("dataset_id,name,configuration,trainer", [
    (961, "MIM2D", "2d", "nnUNetTrainerMIM_t"),
    (961, "MIM2D", "2d", "nnUNetTrainerMPSAMS_t"),
    (961, "MIM2D", "2d", "nnUNetTrainerAnatoMask_t"),
    (960, "MIM3D", "3d_fullres", "nnUNetTrainerMPSAMS_t"),  # 3D AnatoMask: the resume test
    (960, "MIM3D", "3d_fullres", "nnUNetTrainerMIM_t"),
])
def test_pretraining_stock_command(mim_env, dataset_id, name, configuration, trainer):
    _train(mim_env, dataset_id, configuration, trainer)
    fold = _fold_dir(mim_env, dataset_id, name, trainer, configuration)
    ckpt = _load(os.path.join(fold, "checkpoint_final.pth"))
    assert ckpt["trainer_name"] == trainer and "mim_state" in ckpt
    assert all(np.isfinite(ckpt["logging"]["train_losses"])) and all(np.isfinite(ckpt["logging"]["val_losses"]))
    w = ckpt["network_weights"]
    out_w = [v for k, v in w.items() if k.startswith("decoder.seg_layers.")]
    assert out_w[-1].shape[0] == 1  # one output channel = the image's channel
    for f in ("progress.png", "mim_examples.png"):
        assert os.path.isfile(os.path.join(fold, f)), f


def test_hybrid_pretraining_finetunes_advmim(mim_env):
    """AnatoMask_Hybrid's checkpoint loads into AdvMIM's S through $nnUNet_advmim_pretrained_hybrid (stock
    -pretrained_weights goes to the network the trainer predicts with, C by default)."""
    _train(mim_env, 960, "3d_fullres", "nnUNetTrainerAnatoMask_Hybrid_t")
    ckpt = os.path.join(_fold_dir(mim_env, 960, "MIM3D", "nnUNetTrainerAnatoMask_Hybrid_t", "3d_fullres"),
                        "checkpoint_final.pth")
    assert any(".blocks." in k for k in _load(ckpt)["network_weights"])  # transformer blocks were pretrained
    with open(os.path.join(mim_env["ext"], "advmim_short.py"), "w") as f:
        f.write(textwrap.dedent(ADVMIM_SHORT))
    _train(dict(mim_env, nnUNet_advmim_pretrained_hybrid=ckpt), 960, "3d_fullres", "nnUNetTrainerAdvMIM_ft")
    fold = _fold_dir(mim_env, 960, "MIM3D", "nnUNetTrainerAdvMIM_ft", "3d_fullres")
    logs = [f for f in os.listdir(fold) if f.startswith("training_log_")]
    assert any(f"Loaded hybrid branch weights from {ckpt}" in open(os.path.join(fold, f)).read() for f in logs)


def _branch_equal(net, source):
    """Every weight of ``net`` but the output layers equals the checkpoint's (nnU-Net's pretrained-weights rule)."""
    return all(torch.equal(v.cpu(), source[k].cpu()) for k, v in net.state_dict().items() if ".seg_layers." not in k)


def test_joint_pretraining_loads_both_advmim_networks(mim_env):
    """One AnatoMask run pretrains C and S (resumed once with --c); -pretrained_weights of its checkpoint loads both
    into AdvMIM through nnU-Net's own loading path, every weight equal; the stock commands fine-tune AdvMIM and the
    plain nnUNetTrainer (C's weights) from the same file."""
    from nnunetv2.run.run_training import maybe_load_checkpoint
    from nnunetv2_advmim.wrappers import unwrap_model
    from nnunetv2_advmim.trainers import nnUNetTrainerAdvMIM as advmim

    trainer = "nnUNetTrainerAnatoMask_AdvMIM_t"
    env = dict(mim_env, MIM_TEST_STOP_AFTER_EPOCH="0")
    assert _train(env, 961, "2d", trainer, check=False).returncode != 0  # "crash" after epoch 0
    proc = _train(mim_env, 961, "2d", trainer, "--c")
    assert "Epoch 1" in proc.stdout and "Epoch 0\n" not in proc.stdout
    fold = _fold_dir(mim_env, 961, "MIM2D", trainer, "2d")
    path = os.path.join(fold, "checkpoint_final.pth")
    ckpt = _load(path)
    hybrid = ckpt["branch_weights"]["hybrid"]
    assert any(".blocks." in k for k in hybrid) and not any(".blocks." in k for k in ckpt["network_weights"])
    assert ckpt["mim_state"]["hybrid"]["mim_state"]["teacher"]["step"] == 4  # S's own EMA teacher, 2 x 2 updates
    for f in ("mim_examples.png", "mim_examples_hybrid.png", "progress.png"):
        assert os.path.isfile(os.path.join(fold, f)), f
    log = "".join(open(os.path.join(fold, f)).read() for f in os.listdir(fold) if f.startswith("training_log_"))
    assert "reconstruction loss per network: C" in log

    # in process: nnU-Net's own maybe_load_checkpoint, as nnUNetv2_train -pretrained_weights calls it
    pre = os.path.join(mim_env["nnUNet_preprocessed"], dataset_folder_name(961, "MIM2D"))
    plans, dataset_json = (json.load(open(os.path.join(pre, f))) for f in ("nnUNetPlans.json", "dataset.json"))
    plans["continue_training"] = False  # what nnUNetv2_train passes on (each trainer pops it)
    t = advmim.nnUNetTrainerAdvMIM(dict(plans), "2d", 0, dataset_json, device=torch.device("cpu"))
    maybe_load_checkpoint(t, False, False, path)
    assert _branch_equal(unwrap_model(t.branches["cnn"]), ckpt["network_weights"])
    assert _branch_equal(unwrap_model(t.branches["hybrid"]), hybrid)
    paper = advmim.nnUNetTrainerAdvMIM_paper(dict(plans), "2d", 0, dataset_json, device=torch.device("cpu"))
    maybe_load_checkpoint(paper, False, False, path)  # predicts with S: S from the checkpoint too
    assert _branch_equal(unwrap_model(paper.network), hybrid)

    # stock commands: AdvMIM and plain nnU-Net fine-tuned from the joint checkpoint
    with open(os.path.join(mim_env["ext"], "advmim_short.py"), "w") as f:
        f.write(textwrap.dedent(ADVMIM_SHORT))
    _train(mim_env, 961, "2d", "nnUNetTrainerAdvMIM_ft", "-pretrained_weights", path)
    ft = _fold_dir(mim_env, 961, "MIM2D", "nnUNetTrainerAdvMIM_ft", "2d")
    log = "".join(open(os.path.join(ft, f)).read() for f in os.listdir(ft) if f.startswith("training_log_"))
    assert f"Loaded the hybrid network's weights from {path}" in log
    assert f"Loaded the cnn network's weights from {path}" in log
    _train(mim_env, 961, "2d", "nnUNetTrainer_ft", "-pretrained_weights", path)


def test_joint_mpsams_pretraining_stock_command(mim_env):
    _train(mim_env, 960, "3d_fullres", "nnUNetTrainerMPSAMS_AdvMIM_t")
    ckpt = _load(os.path.join(_fold_dir(mim_env, 960, "MIM3D", "nnUNetTrainerMPSAMS_AdvMIM_t", "3d_fullres"),
                              "checkpoint_final.pth"))
    assert all(np.isfinite(ckpt["logging"]["train_losses"])) and "hybrid" in ckpt["branch_weights"]


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


def test_pretraining_reads_no_segmentation(mim_env, monkeypatch):
    """Same seed, corrupted labels: bit-identical pretraining batches and masks (loader + MPS-AMS masking).

    The trainers are seeded the user's way (``nnUNet_advmim_seed``), which also keeps nnU-Net's blur from choosing
    its implementation by timing (that choice made this comparison fail on a loaded machine)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from nnunetv2_advmim.methods.masking import block_size
    from nnunetv2_advmim.data.pretraining_loader import get_pretraining_dataloaders
    from nnunetv2_advmim.runtime.numerics import seed_everything
    from nnunetv2_advmim.trainers.nnUNetTrainerMIM import nnUNetTrainerMPSAMS

    pre = mim_env["nnUNet_preprocessed"]
    src = os.path.join(pre, dataset_folder_name(960, "MIM3D"))
    name_b = dataset_folder_name(962, "MIM3DNoLabels")
    if not os.path.isdir(os.path.join(pre, name_b)):
        _corrupt_copy(src, os.path.join(pre, name_b), name_b)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("nnUNet_advmim_seed", "0")
    was_deterministic = torch.are_deterministic_algorithms_enabled()

    def batches(folder):
        plans = load_json(os.path.join(folder, "nnUNetPlans.json"))
        plans["continue_training"] = False  # nnU-Net 2.8.1 pops this key in __init__
        trainer = nnUNetTrainerMPSAMS(plans, "3d_fullres", 0, load_json(os.path.join(folder, "dataset.json")),
                                      torch.device("cpu"))
        seed_everything(0)
        tr, val = get_pretraining_dataloaders(trainer)
        gen = torch.Generator().manual_seed(0)
        out = []
        for _ in range(3):
            data = next(tr)["data"]
            block = block_size(trainer.configuration_manager.network_arch_init_kwargs["strides"], data.shape[2:])
            out.append((data, trainer.select_mask(data, block, gen)[0]))
        out.append((next(val)["data"], None))
        return out

    try:
        a, b = batches(src), batches(os.path.join(pre, name_b))
    finally:
        torch.use_deterministic_algorithms(was_deterministic)  # the seeded trainers switched it on for the process
    for (da, ma), (db, mb) in zip(a, b):
        assert torch.equal(da, db)
        assert ma is None or torch.equal(ma, mb)
    assert not torch.equal(a[0][0], a[1][0])  # the batches are random crops, not a constant


