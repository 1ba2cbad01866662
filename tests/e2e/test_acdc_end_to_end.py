"""ACDC end to end on a miniature ACDC folder (11 patients, 2 frames each, 4 slices of 24x24 at 1.5x1.5x10 mm):
``nnUNetv2_advmim_convert_acdc``, ``nnUNetv2_advmim_verify_raw``, stock planning of 2d and 3d_fullres, both
protocols of ``nnUNetv2_advmim_label_budget``, short stock and AdvMIM trainings through ``nnUNetv2_train``, a
short ``nnUNetv2_advmim_study`` on both protocols, and the CPU smoke mode of
``nnunetv2_advmim/benchmark/acdc_gpu.sh``.

The folder holds the papers' 7 labeled patients, 2 more training patients, 1 validation and 1 test patient; the
other 89 patients of the split are missing, so it is converted with ``--allow-missing-patients`` (tests/unit/
test_acdc.py checks the error without it). Datasets 927 and 928.
"""
import json
import os

import pytest

from helpers import REPO, run_cmd, short_trainer, write_fake_acdc

PAPERS_7 = ["patient099", "patient038", "patient050", "patient100", "patient058", "patient021", "patient049"]
FAKE = PAPERS_7 + ["patient020", "patient072", "patient028", "patient011"]


def _frames(frames, patients):
    return sorted(c for p in patients for c in frames[p])


@pytest.fixture(scope="module")
def fake_acdc(tmp_path_factory):
    return write_fake_acdc(tmp_path_factory.mktemp("acdc") / "ACDC", FAKE)


def _convert(env, folder, dataset_id):
    proc = run_cmd(["nnUNetv2_advmim_convert_acdc", "-i", folder, "-d", str(dataset_id), "--allow-missing-patients"],
                   env=env)
    assert "89 patients of the papers' split are missing" in proc.stdout
    return os.path.join(env["nnUNet_raw"], f"Dataset{dataset_id:03d}_ACDC")


def test_converted_acdc_verifies_plans_budgets_and_trains(nnunet_env, fake_acdc, ext_trainers):
    folder, frames = fake_acdc
    env = dict(nnunet_env)
    raw = _convert(env, folder, 927)
    proc = run_cmd(["nnUNetv2_advmim_verify_raw", "-d", "927"], env=env)
    assert "imagesTr 20 case(s), imagesTs 2 case(s) checked, no problems" in proc.stdout
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", "927", "-c", "2d", "3d_fullres", "-np", "2"], env=env)
    pre = os.path.join(env["nnUNet_preprocessed"], "Dataset927_ACDC")
    with open(os.path.join(pre, "nnUNetPlans.json")) as f:
        confs = json.load(f)["configurations"]
    assert confs["3d_fullres"]["spacing"] == [10.0, 1.5, 1.5] and confs["2d"]["spacing"] == [1.5, 1.5]
    with open(os.path.join(pre, "splits_final.json")) as f:  # planning kept the converter's split
        assert json.load(f) == [{"train": _frames(frames, FAKE[:-2]), "val": _frames(frames, ["patient028"])}]

    budgets = {}
    for protocol in ("acdc-7", "acdc-3"):
        proc = run_cmd(["nnUNetv2_advmim_label_budget", "-d", "927", "--protocol", protocol], env=env)
        assert f"protocol {protocol}: patients patient099, patient038, patient050" in proc.stdout
        with open(os.path.join(pre, "label_budget.json")) as f:
            budgets[protocol] = json.load(f)
    for protocol, labeled in (("acdc-7", PAPERS_7), ("acdc-3", PAPERS_7[:3])):
        b = budgets[protocol]
        assert b["labeled"] == _frames(frames, labeled) and b["labeled_patients"] == labeled
        assert b["folds"] == [{"val": _frames(frames, ["patient028"]),
                               "unlabeled": _frames(frames, [p for p in FAKE[:-2] if p not in labeled])}]
    with open(os.path.join(pre, "splits_final.json")) as f:
        assert json.load(f) == [{"train": _frames(frames, PAPERS_7[:3]), "val": _frames(frames, ["patient028"])}]
    assert any(f.startswith("splits_final.json.bak-") for f in os.listdir(pre))  # the converter's split is kept

    # short stock (3d_fullres) and AdvMIM (2d) trainings on the acdc-3 budget through nnUNetv2_train
    ext, write = ext_trainers
    short = dict(final_validation=False, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    write("acdc_short_stock", short_trainer("nnunetv2.training.nnUNetTrainer.nnUNetTrainer", "nnUNetTrainer",
                                            "nnUNetTrainer_acdcshort", **short))
    write("acdc_short_advmim", short_trainer("nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM", "nnUNetTrainerAdvMIM",
                                             "nnUNetTrainerAdvMIM_acdcshort", **short))
    env["nnUNet_extTrainer"] = ext
    for trainer, conf in (("nnUNetTrainer_acdcshort", "3d_fullres"), ("nnUNetTrainerAdvMIM_acdcshort", "2d")):
        run_cmd(["nnUNetv2_train", "927", conf, "0", "-tr", trainer, "-device", "cpu"], env=env)
        fold = os.path.join(env["nnUNet_results"], "Dataset927_ACDC", f"{trainer}__nnUNetPlans__{conf}", "fold_0")
        assert os.path.isfile(os.path.join(fold, "checkpoint_final.pth"))
        log = "".join(open(os.path.join(fold, f)).read() for f in os.listdir(fold) if f.startswith("training_log"))
        assert "This split has 6 training and 2 validation cases" in log  # the 3 labeled patients' frames
    assert os.path.isdir(raw)

    # the study on the papers' protocols: their labeled patients, validation patients and pool, one draw each
    study = os.path.join(env["nnUNet_results"], "acdc_study")
    run_cmd(["nnUNetv2_advmim_study", "-d", "927", "-c", "2d", "-n", "acdc-3", "acdc-7", "-tr", "nnUNetTrainer",
             "--epochs", "1", "--iterations", "2", "--val-iterations", "1", "-device", "cpu", "--threads", "1",
             "-o", study], env=env, timeout=1200)
    for protocol, labeled in (("acdc-3", PAPERS_7[:3]), ("acdc-7", PAPERS_7)):
        with open(os.path.join(study, "arms", f"n{protocol}_d0__nnUNetTrainer.json")) as f:
            record = json.load(f)
        assert record["labeled"] == _frames(frames, labeled) and record["n_labeled"] == 2 * len(labeled)
        with open(os.path.join(study, "preprocessed", f"n{protocol}_d0", "Dataset927_ACDC", "label_budget.json")) as f:
            assert json.load(f)["folds"] == [{"val": _frames(frames, ["patient028"]),
                                              "unlabeled": _frames(frames, [p for p in FAKE[:-2] if p not in labeled])}]
    assert not os.path.exists(os.path.join(study, "arms", "nacdc-3_d1__nnUNetTrainer.json"))  # one draw
    md = open(os.path.join(study, "study.md")).read()
    assert "published protocols acdc-3, acdc-7" in md and "| acdc-3 (6) | nnUNetTrainer |" in md


@pytest.mark.timeout(1800)
def test_gpu_script_cpu_smoke(nnunet_env, fake_acdc, tmp_path):
    """The script plans the converted dataset itself, times three arms, trains AdvMIM for Dice with nnU-Net's final
    validation, and leaves the dataset's own split files alone."""
    folder, frames = fake_acdc
    env = dict(nnunet_env)
    _convert(env, folder, 928)
    pre = os.path.join(env["nnUNet_preprocessed"], "Dataset928_ACDC")
    with open(os.path.join(pre, "splits_final.json")) as f:
        split_before = json.load(f)
    out = tmp_path / "smoke.json"
    script = os.path.join(REPO, "nnunetv2_advmim", "benchmark", "acdc_gpu.sh")
    proc = run_cmd(["bash", script, "-d", "928", "-o", str(out),
                    "--cpu-smoke", "--workdir", str(tmp_path / "work"), "--arms", "nnUNetTrainer",
                    "nnUNetTrainerAdvMIM", "--dice-arms", "nnUNetTrainerAdvMIM"], env=env, timeout=1700)
    report = json.loads(out.read_text())
    assert report["status"] == "complete", proc.stdout[-3000:]
    assert report["settings"]["planned_here_s"] > 0 and report["settings"]["patch_size"] == [24, 24]
    timing = report["timing"]
    assert sorted(timing) == ["nnUNetTrainer", "nnUNetTrainerAdvMIM", "nnUNetTrainerAnatoMask_AdvMIM"]
    for r in timing.values():
        assert r["status"] == "ok" and len(r["train_phase_s"]) == 2 and r["s_per_iteration"] > 0
        assert r["hours"]["hours_30k"] == pytest.approx(r["s_per_iteration"] * 30000 / 3600)
    assert timing["nnUNetTrainer"]["x_stock"] == 1.0
    dice = report["dice"]
    assert dice["iterations"] == 2 and dice["status"] == "ran"
    val = dice["arms"]["nnUNetTrainerAdvMIM"]["val_dice"]
    assert sorted(val["per_label"]) == ["LV", "MYO", "RV"] and 0 <= val["mean"] <= 1
    with open(os.path.join(pre, "splits_final.json")) as f:
        assert json.load(f) == split_before
    assert not os.path.exists(os.path.join(pre, "label_budget.json"))
