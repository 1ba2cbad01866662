"""Bad inputs get clear errors naming the file and the fix, before any work is done.

Own dataset ids 940-944: 940 = copy of planned_3d (imagesUnlabeled cases), 941 = copy of planned_2d (3D image in a
2D dataset), 942 = never planned, 943 = copy of planned_2d for a finished MIM run, 944 = copy of planned_3d with a
second, incompatible plan (check_weights).
"""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from helpers import run_cmd, short_trainer
from helpers import copy_planned
from nnunetv2_advmim.data.input_checks import dataset_is_2d, require_planned
from nnunetv2_advmim.runtime.safety import OVERWRITE_ENV
from nnunetv2_advmim.data.paths import load_plans_and_dataset_json
from nnunetv2_advmim.data.unlabeled import preprocess_unlabeled, require_unlabeled_pool, unlabeled_folder
from helpers import random_image, truncate_file, write_image


# ------------------------------------------------------------------ the command refuses before writing anything
@pytest.fixture(scope="module")
def bad_3d(planned_3d):
    name, raw, pre = copy_planned(planned_3d, 940, "Bad3D")
    return name, raw, pre


def _reset_unlabeled(raw, pre):
    folder = os.path.join(raw, "imagesUnlabeled")
    shutil.rmtree(folder)
    os.makedirs(folder)
    for f in os.listdir(pre):
        if f.endswith("_unlabeled"):
            shutil.rmtree(os.path.join(pre, f))
    return folder


@pytest.mark.parametrize("case", ["2d_in_3d", "nan", "truncated", "text"])
def test_preprocess_unlabeled_refuses_before_writing(bad_3d, case):
    name, raw, pre = bad_3d
    folder = _reset_unlabeled(raw, pre)
    good = write_image(random_image((24, 32, 32)), (2, 1, 1), os.path.join(folder, "good_0000.nii.gz"))
    bad = os.path.join(folder, "bad_0000.nii.gz")
    if case == "2d_in_3d":
        write_image(random_image((32, 32)), (1, 1), bad)
    elif case == "nan":
        img = random_image((24, 32, 32))
        img[3, 4, 5:9] = np.nan
        write_image(img, (2, 1, 1), bad)
    elif case == "truncated":
        truncate_file(write_image(random_image((24, 32, 32)), (2, 1, 1), bad))
    else:
        open(bad, "w").write("hello")
    expected = {"2d_in_3d": "a 2D image", "nan": "4 NaN and 0 inf", "truncated": "truncated",
                "text": "not a readable NIfTI file"}[case]
    with pytest.raises(ValueError) as e:
        preprocess_unlabeled(940, ["3d_fullres"], num_processes=1, verbose=False)
    msg = str(e.value)
    assert msg.startswith("1 problem(s) in") and "nothing was preprocessed" in msg and bad in msg and expected in msg
    assert good not in msg
    assert not os.path.exists(unlabeled_folder(pre, "nnUNetPlans_3d_fullres"))  # nothing written, not even the folder
    os.remove(bad)
    assert preprocess_unlabeled(940, ["3d_fullres"], num_processes=1, verbose=False)["3d_fullres"]["processed"] == ["good"]


def test_3d_image_in_2d_dataset_via_command(planned_2d):
    name, raw, pre = copy_planned(planned_2d, 941, "Bad2D")
    pm, _ = load_plans_and_dataset_json(pre)
    assert dataset_is_2d(pre, pm)
    os.remove(os.path.join(pre, "dataset_fingerprint.json"))  # the fallback (plans' median spacing) agrees
    assert dataset_is_2d(pre, pm)
    bad = write_image(random_image((4, 64, 64)), (2, 1, 1), os.path.join(raw, "imagesUnlabeled", "vol_0000.nii.gz"))
    proc = run_cmd(["nnUNetv2_advmim_preprocess_unlabeled", "-d", "941", "-np", "1"], env=planned_2d.env, check=False)
    assert proc.returncode == 1 and bad in proc.stdout and "a 3D image (shape (4, 64, 64)" in proc.stdout
    assert "in a 2D dataset" in proc.stdout and not os.path.exists(unlabeled_folder(pre, "nnUNetPlans_2d"))


# --------------------------------------------------------------------------------------------- unplanned data
def test_unplanned_dataset_names_the_command(nnunet_env, planned_3d, tmp_path, capsys):
    from nnunetv2_advmim.benchmark import mim_steps as mim_benchmark
    from nnunetv2_advmim.commands import check_weights, plan_hybrid
    from nnunetv2_advmim.data import label_budget, unlabeled
    from nnunetv2_advmim.data.synthetic import make_synthetic_dataset
    make_synthetic_dataset(nnunet_env["nnUNet_raw"], 942, "Unplanned", dim=2, n_train=2, n_unlabeled=1, n_test=0,
                           shape=(16, 16), overwrite=True)
    for main, argv, code in ((unlabeled.main, ["-d", "942"], 1), (label_budget.main, ["-d", "942", "-n", "1"], 1),
                             (mim_benchmark.main, ["steps", "-d", "942", "-c", "2d"], 2)):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == code and "run `nnUNetv2_plan_and_preprocess -d 942` first" in err, err
    ckpt = tmp_path / "w.pth"
    torch.save({"network_weights": {}}, ckpt)
    for main, argv, code in ((check_weights.main, [str(ckpt), "-d", "942", "-c", "2d"], 2),
                             (plan_hybrid.main, ["-d", "942"], 1)):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == code and "nnUNetv2_plan_and_preprocess" in err and "first" in err, err
    # planned but the configuration not preprocessed: names nnUNetv2_preprocess
    with pytest.raises(FileNotFoundError, match=r"configuration 2d of Dataset901_Tiny3D is planned but not "
                                                r"preprocessed. Run `nnUNetv2_preprocess -d Dataset901_Tiny3D -c 2d"):
        require_planned(901, "2d")
    assert require_planned(901, "3d_fullres")[0] == planned_3d.preprocessed
    # a semi-supervised trainer whose imagesUnlabeled was never preprocessed: names the command and configuration
    with pytest.raises(RuntimeError, match=r"imagesUnlabeled holds 4 file\(s\) but .* has no preprocessed case\. Run "
                                           r"`nnUNetv2_advmim_preprocess_unlabeled -d Dataset901_Tiny3D -c 3d_fullres`"):
        require_unlabeled_pool({}, planned_3d.preprocessed, "nnUNetPlans_3d_fullres", 0, "3d_fullres")


# ------------------------------------------------------------------------------- incompatible pretrained weights
def test_check_weights_lists_every_mismatching_tensor(planned_3d, tmp_path, capsys):
    from nnunetv2_advmim.commands.check_weights import main, target_network
    from nnunetv2_advmim.runtime.weights import compare_state_dicts
    name, raw, pre = copy_planned(planned_3d, 944, "Weights3D")
    with open(os.path.join(pre, "nnUNetPlans.json")) as f:
        plans = json.load(f)
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [f * 2 for f in arch["features_per_stage"]]  # another plan: wider network
    plans["plans_name"] = "nnUNetPlans_wide"
    with open(os.path.join(pre, "nnUNetPlans_wide.json"), "w") as f:
        json.dump(plans, f)
    wide = target_network("944", "3d_fullres", "nnUNetPlans_wide").state_dict()
    wide.pop(next(k for k in wide if ".seg_layers." not in k))  # and one tensor missing altogether
    ckpt = str(tmp_path / "wide.pth")
    torch.save({"network_weights": wide}, ckpt)
    report = compare_state_dicts(target_network("944", "3d_fullres").state_dict(), wide)
    n_bad = len(report["shape_mismatch"])
    assert n_bad > 20 and len(report["missing"]) == 1
    with pytest.raises(SystemExit) as e:
        main([ckpt, "-d", "944", "-c", "3d_fullres"])
    out = capsys.readouterr().out
    assert e.value.code == 1 and f"shape mismatch: {n_bad}" in out and "would FAIL" in out
    for key, target, found in report["shape_mismatch"]:
        assert f"SHAPE     {key}: target {target}, checkpoint {found}" in out
    assert f"MISSING   {report['missing'][0]}" in out


# -------------------------------------------------------------------------- finished runs: the real command
TINY_MIM = short_trainer("nnunetv2_advmim.trainers.nnUNetTrainerMIM", "nnUNetTrainerMIM", "nnUNetTrainerMIM_badinputs",
                         num_epochs=1, num_iterations_per_epoch=1, num_val_iterations_per_epoch=1, warmup_epochs=1,
                         num_example_images=1)


def test_mim_trainer_refuses_to_train_over_a_finished_run(planned_2d, ext_trainers):
    name, raw, pre = copy_planned(planned_2d, 943, "Finished2D")
    folder, write = ext_trainers
    write("badinputs_trainers", TINY_MIM)
    env = {k: v for k, v in planned_2d.env.items() if k != OVERWRITE_ENV}
    env.update(nnUNet_extTrainer=folder, nnUNet_n_proc_DA="0")
    cmd = ["nnUNetv2_train", "943", "2d", "all", "-tr", "nnUNetTrainerMIM_badinputs", "-device", "cpu"]
    run_cmd(cmd, env=env)
    out_dir = os.path.join(env["nnUNet_results"], name, "nnUNetTrainerMIM_badinputs__nnUNetPlans__2d")
    final = os.path.join(out_dir, "fold_all", "checkpoint_final.pth")
    watched = [final, os.path.join(out_dir, "plans.json"), os.path.join(out_dir, "fold_all", "debug.json")]
    before = {f: (os.path.getmtime(f), open(f, "rb").read()) for f in watched}

    proc = run_cmd(cmd, env=env, check=False)  # again, without --c: refused before any file is written
    assert proc.returncode != 0 and "FinishedRunError" in proc.stdout
    assert f"{os.path.join(out_dir, 'fold_all')} already holds a finished run" in proc.stdout
    assert "add --c" in proc.stdout and f"{OVERWRITE_ENV}=1" in proc.stdout
    assert {f: (os.path.getmtime(f), open(f, "rb").read()) for f in watched} == before

    # continuing a finished run (it only re-runs the final validation) is not refused; --val never calls
    # on_train_start (nnU-Net's run_training), so it needs no subprocess here (budget: each start costs ~10 s)
    run_cmd(cmd + ["--c"], env=env)
    assert torch.load(final, map_location="cpu", weights_only=False)["current_epoch"] == 1
