"""nnUNetv2_advmim_study end to end on tiny 2D data: stock nnUNetv2_train/predict in subprocesses."""
import csv
import hashlib
import json
import os
from collections import Counter

import pytest

from helpers import run_cmd
from nnunetv2_advmim.data.synthetic import make_synthetic_dataset


def _commands_in_logs(study):
    logs = os.path.join(study, "logs")
    return [line for f in sorted(os.listdir(logs)) for line in open(os.path.join(logs, f)) if line.startswith("$ ")]


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


BROKEN_TRAINER = """
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_broken(nnUNetTrainer):
    def initialize(self):
        raise RuntimeError("this trainer always fails")
"""


@pytest.mark.timeout(1500)  # 12 study calls, several with trainings
def test_study_command_end_to_end(nnunet_env, tmp_path, ext_trainers):
    """2 counts x 2 draws, stock everywhere, CTCT (predicting with S, and with C from the same training) at one
    count and a failing trainer at the other: same cases and iterations per (count, draw), outputs written, failures
    reported, the user's split file untouched, a second call trains nothing and other settings are refused."""
    env = dict(nnunet_env)
    make_synthetic_dataset(env["nnUNet_raw"], 977, "Study2D", dim=2, n_train=8, n_unlabeled=2, n_test=2,
                           shape=(32, 32), seed=3, preset="scarce")
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", "977", "-c", "2d", "-np", "1"], env=env)
    run_cmd(["nnUNetv2_advmim_small_plan", "-d", "977", "-c", "2d", "--base-features", "4", "--max-features", "16",
             "--stages", "3"], env=env)
    pre = os.path.join(env["nnUNet_preprocessed"], "Dataset977_Study2D")
    user_splits = os.path.join(pre, "splits_final.json")
    with open(user_splits, "w") as f:
        json.dump([{"train": ["case_000"], "val": ["case_001"]}], f)
    before = _digest(user_splits)
    env["nnUNet_n_proc_DA"] = "0"  # augmentation in the training process: no worker start-up (planning needs >0)
    study = str(tmp_path / "study")
    folder, write = ext_trainers
    write("broken_trainer", BROKEN_TRAINER)
    env["nnUNet_extTrainer"] = folder
    cmd = ["nnUNetv2_advmim_study", "-d", "977", "-c", "2d", "-p", "nnUNetPlans_small", "-n", "2", "3",
           "--draws", "2", "-tr", "nnUNetTrainer", "nnUNetTrainerCTCT@2", "nnUNetTrainerCTCT:cnn@2", "--epochs", "1", "--iterations", "2",
           "--val-iterations", "1", "--n-val", "2", "--threads", "1", "-device", "cpu", "-o", study]
    first = run_cmd(cmd[:cmd.index("-tr") + 3] + ["nnUNetTrainer_broken@3"] + cmd[cmd.index("-tr") + 3:], env=env,
                    timeout=900, check=False)
    out = first.stdout
    # a failed arm is reported with its log and the others go on; the command says so by its exit status
    assert first.returncode == 1 and "[10/10]" in out, out[-3000:]
    assert out.count("FAILED") == 2 and "n3_d0__nnUNetTrainer_broken.log" in out
    assert "## Failed arms" in open(os.path.join(study, "study.md")).read()
    for name in ("study.md", "study.csv", "study_runs.csv", "study.png"):
        assert os.path.getsize(os.path.join(study, name)) > 0
    assert _digest(user_splits) == before and not os.path.exists(os.path.join(pre, "label_budget.json"))

    with open(os.path.join(study, "study_runs.csv")) as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 8 and {r["iterations"] for r in runs} == {"2"}
    by_split = {}
    for r in runs:
        by_split.setdefault((r["n"], r["draw"]), set()).add(r["labeled"])
    assert all(len(v) == 1 for v in by_split.values())  # every arm of a (count, draw) saw the same cases
    two, three = (set(next(iter(by_split[(n, "0")])).split()) for n in ("2", "3"))
    assert len(two) == 2 and two < three  # nested within a draw
    assert by_split[("2", "0")] != by_split[("2", "1")]
    split = json.load(open(os.path.join(study, "preprocessed", "n2_d0", "Dataset977_Study2D", "splits_final.json")))
    assert sorted(split[0]["train"]) == sorted(two)
    md = open(os.path.join(study, "study.md")).read()
    assert "nnUNetTrainerCTCT" in md and "| 3 | nnUNetTrainer |" in md and "| 2 | nnUNetTrainerCTCT:cnn |" in md
    # CTCT:cnn predicted with C of CTCT's own training: its model holds exactly that branch's weights
    import torch
    results = os.path.join(study, "results", "n2_d0", "nnUNetTrainerCTCT", "Dataset977_Study2D")
    trained = torch.load(os.path.join(results, "nnUNetTrainerCTCT_study1x2__nnUNetPlans_small__2d", "fold_0",
                                      "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    derived = torch.load(os.path.join(results, "nnUNetTrainerCTCT_study1x2_cnn__nnUNetPlans_small__2d", "fold_0",
                                      "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    cnn = trained["advmim"]["weights"]["cnn"]
    assert derived["network_weights"].keys() == cnn.keys()
    assert all(torch.equal(derived["network_weights"][k], v) for k, v in cnn.items())

    commands_run = _commands_in_logs(study)
    # one training and one prediction per arm (CTCT:cnn: a prediction only), one failed training per broken arm
    assert len(commands_run) == 16
    again = run_cmd(cmd, env=env).stdout
    assert _commands_in_logs(study) == commands_run and "[8/8]" in again  # nothing trained or predicted again
    changed = [c for c in cmd]
    changed[changed.index("--epochs") + 1] = "2"
    refused = run_cmd(changed, env=env, check=False)
    assert refused.returncode == 1 and "other settings" in refused.stdout

    # --postprocess on the finished study: nnU-Net's postprocessing per arm and draw, chosen on the arm's predictions
    # of the validation cases and applied to its test predictions; stock commands only, nothing trained again
    pp_cmd = cmd[:cmd.index("-n")] + ["-n", "2", "--draws", "1", "-tr", "nnUNetTrainer", "nnUNetTrainerCTCT:cnn@2",
                                      "--postprocess"] + cmd[cmd.index("--epochs"):]
    out = run_cmd(pp_cmd, env=env, timeout=600).stdout
    new = list((Counter(_commands_in_logs(study)) - Counter(commands_run)).elements())
    assert sorted(c.split()[1] for c in new) == sorted(["nnUNetv2_predict", "nnUNetv2_determine_postprocessing",
                                                        "nnUNetv2_apply_postprocessing"] * 2), new
    md = open(os.path.join(study, "study.md")).read()
    assert "| 2 | nnUNetTrainer+pp |" in md and "| 2 | nnUNetTrainerCTCT:cnn+pp |" in md, md
    for arm in ("nnUNetTrainer", "nnUNetTrainerCTCT_as_cnn"):
        raw = json.load(open(os.path.join(study, "arms", f"n2_d0__{arm}.json")))
        pp = json.load(open(os.path.join(study, "arms", f"n2_d0__{arm}+pp.json")))
        val = os.listdir(os.path.join(study, "predictions", "n2_d0", arm + "_validation"))
        assert sorted(f[:-len(".nii.gz")] for f in val if f.endswith(".nii.gz")) == json.load(
            open(os.path.join(study, "study.json")))["val_cases"]  # chosen on the validation cases only
        assert pp["train_s"] == raw["train_s"] and len(os.listdir(pp["predictions"])) >= 2
        if not pp["postprocessing"]:  # nothing raised validation Dice: the test predictions are unchanged
            assert pp["foreground_mean"]["Dice"] == raw["foreground_mean"]["Dice"]
    assert "postprocessing chosen on the validation cases" in out
    run_cmd(pp_cmd, env=env)
    assert len(_commands_in_logs(study)) == len(commands_run) + len(new)  # a second call predicts nothing again

    # --runs on the finished study: a second stock run at count 2, draw 0, on the same split; the draw's row and its
    # 'vs' take the mean of both runs
    runs_cmd = cmd[:cmd.index("-n")] + ["-n", "2", "--draws", "1", "-tr", "nnUNetTrainer", "nnUNetTrainerCTCT:cnn@2",
                                        "--runs", "nnUNetTrainer=2"] + cmd[cmd.index("--epochs"):]
    before = Counter(_commands_in_logs(study))
    out = run_cmd(runs_cmd, env=env, timeout=600).stdout
    new = list((Counter(_commands_in_logs(study)) - before).elements())
    assert sorted(c.split()[1] for c in new) == ["nnUNetv2_predict", "nnUNetv2_train"], new
    assert "nnUNetTrainer run 2/2" in out
    first, second = (json.load(open(os.path.join(study, "arms", f"{key}__nnUNetTrainer.json")))
                     for key in ("n2_d0", "n2_d0_r1"))
    assert (first.get("run", 0), second["run"]) == (0, 1) and second["labeled"] == first["labeled"]
    assert second["model"] != first["model"] and os.path.isfile(os.path.join(second["model"], "checkpoint_final.pth"))
    with open(os.path.join(study, "study_runs.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["arm"] == "nnUNetTrainer"]
    assert [r["run"] for r in rows] == ["0", "1"]
    md = open(os.path.join(study, "study.md")).read()
    mean = (first["foreground_mean"]["Dice"] + second["foreground_mean"]["Dice"]) / 2
    ctct = json.load(open(os.path.join(study, "arms", "n2_d0__nnUNetTrainerCTCT_as_cnn.json")))["foreground_mean"]
    assert "| 2 | nnUNetTrainer | 1 | 2 | 2 |" in md and f"| {mean:.3f} |" in md, md
    assert f"{100 * (ctct['Dice'] - mean):+.1f}" in md  # CTCT:cnn against the mean of stock's two runs
    # the run-to-run spread of two runs: |a - b| / sqrt(2), in Dice points
    spread = 100 * abs(first["foreground_mean"]["Dice"] - second["foreground_mean"]["Dice"]) / 2 ** 0.5
    (row,) = [line for line in md.splitlines() if line.startswith("| 2 | nnUNetTrainer |")]
    assert f"| {spread:.1f} |" in row and "run-to-run sd" in md, md


@pytest.mark.timeout(900)
def test_study_pretrains_both_advmim_networks_and_predicts_with_each(nnunet_env, tmp_path):
    """--pretrainer nnUNetTrainerAnatoMask_AdvMIM --finetuner nnUNetTrainerAdvMIM --finetune-networks hybrid: one joint
    pretraining, one AdvMIM fine-tuning per draw that starts both networks from it, and two arms of that one training
    (C, and S as FINETUNER_from_P:hybrid) with their own predictions."""
    env = dict(nnunet_env)
    make_synthetic_dataset(env["nnUNet_raw"], 978, "StudyJoint2D", dim=2, n_train=6, n_unlabeled=2, n_test=2,
                           shape=(32, 32), seed=4, preset="scarce")
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", "978", "-c", "2d", "-np", "1"], env=env)
    run_cmd(["nnUNetv2_advmim_small_plan", "-d", "978", "-c", "2d", "--base-features", "4", "--max-features", "16",
             "--stages", "3"], env=env)
    study = str(tmp_path / "joint_study")
    cmd = ["nnUNetv2_advmim_study", "-d", "978", "-c", "2d", "-p", "nnUNetPlans_small", "-n", "2", "--draws", "1",
           "-tr", "--pretrainer", "nnUNetTrainerAnatoMask_AdvMIM", "--finetuner", "nnUNetTrainerAdvMIM",
           "--finetune-networks", "hybrid", "--epochs", "1", "--iterations", "2", "--val-iterations", "1",
           "--n-val", "2", "--threads", "1", "-device", "cpu", "-o", study]
    run_cmd(cmd, env=dict(env, nnUNet_n_proc_DA="0"), timeout=900)  # planning needs workers, training does not
    arm = "nnUNetTrainerAdvMIM_from_nnUNetTrainerAnatoMask_AdvMIM"
    md = open(os.path.join(study, "study.md")).read()
    assert f"| 2 | {arm} |" in md and f"| 2 | {arm}:hybrid |" in md, md
    logs = os.path.join(study, "logs")
    assert any("Loaded the hybrid network's weights" in open(os.path.join(logs, f)).read() for f in os.listdir(logs))
    import torch
    results = os.path.join(study, "results", "n2_d0", arm, "Dataset978_StudyJoint2D")
    trained = torch.load(os.path.join(results, "nnUNetTrainerAdvMIM_study1x2__nnUNetPlans_small__2d", "fold_0",
                                      "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    derived = torch.load(os.path.join(results, "nnUNetTrainerAdvMIM_study1x2_hybrid__nnUNetPlans_small__2d", "fold_0",
                                      "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    hybrid = trained["advmim"]["weights"]["hybrid"]
    assert all(torch.equal(derived["network_weights"][k], v) for k, v in hybrid.items())
    predictions = [json.load(open(os.path.join(study, "arms", f)))["predictions"] for f in os.listdir(
        os.path.join(study, "arms"))]
    assert len(set(predictions)) == 2  # C and S predicted separately
