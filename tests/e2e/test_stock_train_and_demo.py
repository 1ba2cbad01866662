"""End-to-end runs of the stock commands with trainers of ours, and the demo in 2D."""
import os

import numpy as np
import SimpleITK as sitk

from helpers import run_cmd, short_trainer
from nnunetv2_advmim.commands.demo import run_demo
from nnunetv2_advmim.data.synthetic import LABELS


def test_command_writes_2d_dataset(tmp_path):
    """2D is the command's default dimension, as for the demo."""
    run_cmd(["nnUNetv2_advmim_make_synthetic", "-d", "943", "--preset", "default", "--n-train", "2",
             "--n-unlabeled", "1", "--n-test", "1", "--shape", "40", "48", "-o", str(tmp_path)])
    img = sitk.ReadImage(str(tmp_path / "Dataset943_Synthetic2D" / "imagesTr" / "case_000_0000.nii.gz"))
    assert img.GetDimension() == 2 and img.GetSize() == (48, 40)


TINY = dict(num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
TINY_DEMO_TRAINER = short_trainer("nnunetv2_advmim.trainers.nnUNetTrainer_demo", "nnUNetTrainer_demo",
                                  "nnUNetTrainer_demo_tiny", **TINY)


def test_stock_train_and_predict_3d(planned_3d, ext_trainers, tmp_path):
    folder, write = ext_trainers
    write("tiny_demo_trainer", TINY_DEMO_TRAINER)
    env = dict(planned_3d.env, nnUNet_extTrainer=folder)
    run_cmd(["nnUNetv2_train", str(planned_3d.id), "3d_fullres", "0", "-tr", "nnUNetTrainer_demo_tiny",
             "-device", "cpu"], env=env)
    run_dir = os.path.join(planned_3d.results, "nnUNetTrainer_demo_tiny__nnUNetPlans__3d_fullres", "fold_0")
    assert os.path.isfile(os.path.join(run_dir, "checkpoint_final.pth"))
    assert os.path.isfile(os.path.join(run_dir, "progress.png"))
    out = tmp_path / "pred"
    images = os.path.join(planned_3d.raw, "imagesTs")
    run_cmd(["nnUNetv2_predict", "-i", images, "-o", str(out), "-d", str(planned_3d.id), "-c", "3d_fullres",
             "-f", "0", "-tr", "nnUNetTrainer_demo_tiny", "-device", "cpu", "-npp", "1", "-nps", "1",
             "--disable_progress_bar"], env=env)
    for case in ("test_000", "test_001"):
        ref = sitk.ReadImage(os.path.join(images, f"{case}_0000.nii.gz"))
        pred = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert pred.GetSize() == ref.GetSize()
        assert np.allclose(pred.GetSpacing(), ref.GetSpacing())
        assert np.allclose(pred.GetOrigin(), ref.GetOrigin())
        assert np.allclose(pred.GetDirection(), ref.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(pred))) <= set(LABELS.values())


def test_demo_runs_end_to_end_in_2d(tmp_path, monkeypatch, capsys):
    """The README's main job (every stage) in 2D on a small scarce-preset dataset with a 2-iteration schedule
    for every arm; a second run trains nothing and prints the same table."""
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    kwargs = dict(dataset_id=944, dim=2, device="cpu", n_labeled=2, draws=2, epochs=1, iterations=2,
                  val_iterations=1, num_processes=1, case_counts=(8, 3, 3))
    result = run_demo(str(tmp_path / "demo"), **kwargs)
    out = capsys.readouterr().out
    assert f"nnUNet_raw={tmp_path / 'demo' / 'nnUNet_raw'}" in out
    for stage in ("nnUNetv2_advmim_verify_raw", "nnUNetv2_plan_and_preprocess", "nnUNetv2_advmim_small_plan",
                  "nnUNetv2_advmim_preprocess_unlabeled", "nnUNetv2_advmim_study"):
        assert "$ " + stage in out, stage
    records = result["study"]["records"]
    arms = ["nnUNetTrainer", "nnUNetTrainerAdvMIM", "nnUNetTrainerAdvMIM:hybrid",
            "nnUNetTrainer_from_nnUNetTrainerAnatoMask_AdvMIM", "nnUNetTrainerAdvMIM_from_nnUNetTrainerAnatoMask_AdvMIM",
            "nnUNetTrainerAdvMIM_from_nnUNetTrainerAnatoMask_AdvMIM:hybrid"]
    assert sorted((r["arm"], r["draw"]) for r in records) == sorted((a, d) for a in arms for d in (0, 1))
    for d in (0, 1):  # every arm of a draw: the same labeled cases, the same iterations
        same_draw = [r for r in records if r["draw"] == d]
        assert len({tuple(r["labeled"]) for r in same_draw}) == 1 and {r["iterations"] for r in same_draw} == {2}
    table = result["table"]
    assert "| 2 | nnUNetTrainerAdvMIM:hybrid | 2 | 2 |" in table and "organ" in table and "vs nnUNetTrainer" in table
    assert table in out
    comparison = result["comparison"]
    assert os.path.isfile(comparison["png"]) and set(comparison["n_labeled"].values()) == {2}
    logs_of = lambda arm: open(tmp_path / "demo" / "study" / "logs" / f"n2_d0__{arm}.log").read()
    assert "Loading pretrained weights from file" in logs_of("nnUNetTrainer_from_nnUNetTrainerAnatoMask_AdvMIM")
    advmim_log = logs_of("nnUNetTrainerAdvMIM_from_nnUNetTrainerAnatoMask_AdvMIM")
    assert "Loaded the hybrid network's weights" in advmim_log and "Loaded the cnn network's weights" in advmim_log
    assert result["paths"]["nnUNet_results"] == str(tmp_path / "demo" / "nnUNet_results")
    assert "nnUNet_results" not in os.environ  # set for the demo's commands only
    logs = tmp_path / "demo" / "study" / "logs"
    sizes = {f: os.path.getsize(logs / f) for f in os.listdir(logs)}
    again = run_demo(str(tmp_path / "demo"), **kwargs)
    assert "Continuing the study" in capsys.readouterr().out
    assert {f: os.path.getsize(logs / f) for f in os.listdir(logs)} == sizes  # nothing trained or predicted again
    assert again["table"] == table
