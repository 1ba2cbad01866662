"""End-to-end runs of the stock commands with trainers of ours, and the demo in 2D."""
import os

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import run_cmd, short_trainer
from nnunetv2_advmim.commands.demo import run_demo
from nnunetv2_advmim.data.synthetic import LABELS


def test_command_writes_2d_dataset(tmp_path):
    run_cmd(["nnUNetv2_advmim_make_synthetic", "-d", "943", "--dim", "2", "--n-train", "2", "--n-unlabeled", "1",
             "--n-test", "1", "--shape", "40", "48", "-o", str(tmp_path)])
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


TINY_DEMO_STAGES = "\n\n".join([
    TINY_DEMO_TRAINER,
    short_trainer("nnunetv2_advmim.trainers.nnUNetTrainer_demo", "nnUNetTrainer_demo", "nnUNetTrainer_demo_tiny_ft",
                  **TINY),
    short_trainer("nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM", "nnUNetTrainerAdvMIM_demo",
                  "nnUNetTrainerAdvMIM_tiny", **TINY),
    short_trainer("nnunetv2_advmim.trainers.nnUNetTrainerMIM", "nnUNetTrainerAnatoMask_demo",
                  "nnUNetTrainerAnatoMask_tiny", **TINY, warmup_epochs=0),
])


def test_demo_runs_end_to_end_in_2d(tmp_path, ext_trainers, monkeypatch, capsys):
    """The README's main job (every stage) in 2D with shortened trainers; a rerun refuses to overwrite."""
    folder, write = ext_trainers
    write("tiny_demo_trainers", TINY_DEMO_STAGES)
    monkeypatch.setenv("nnUNet_extTrainer", folder)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    kwargs = dict(dataset_id=944, dim=2, device="cpu", baseline="nnUNetTrainer_demo_tiny",
                  semi_supervised=("nnUNetTrainerAdvMIM_tiny",), pretrainer="nnUNetTrainerAnatoMask_tiny",
                  finetuner="nnUNetTrainer_demo_tiny_ft", n_labeled=4, num_processes=1)
    summaries, comparison = run_demo(str(tmp_path / "demo"), **kwargs)
    out = capsys.readouterr().out
    assert "nnUNet_raw was unset: using" in out
    assert "Dice per label" in out and "organ" in out and "lesion" in out
    assert list(summaries) == ["nnUNetTrainer_demo_tiny", "nnUNetTrainerAdvMIM_tiny",
                               "nnUNetTrainer_demo_tiny_ft (from nnUNetTrainerAnatoMask_tiny)"]
    assert all(len(s["metric_per_case"]) == 5 for s in summaries.values())
    assert os.path.isfile(comparison["png"])
    assert set(comparison["n_labeled"].values()) == {4}  # every run trained on the same 4 labeled cases
    log = open(tmp_path / "demo" / "demo_log.txt").read()
    assert "Loading pretrained weights from file" in log and "nnUNetTrainerAnatoMask_tiny__nnUNetPlans__2d" in log
    assert os.environ["nnUNet_results"] == str(tmp_path / "demo" / "nnUNet_results")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_demo(str(tmp_path / "demo"), **kwargs)
