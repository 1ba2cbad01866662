"""Issue 2: synthetic raw datasets, and an end-to-end run of the stock commands with a trainer of ours."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_cmd
from nnunetv2_advmim.commands.demo import dice_table, run_demo
from nnunetv2_advmim.data.synthetic import LABELS, make_case, make_synthetic_dataset


def _read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def test_make_case_is_seeded_and_has_every_structure():
    a_img, a_seg = make_case(np.random.default_rng(5), (24, 32, 32))
    b_img, b_seg = make_case(np.random.default_rng(5), (24, 32, 32))
    c_img, _ = make_case(np.random.default_rng(6), (24, 32, 32))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_seg, b_seg)
    assert not np.array_equal(a_img, c_img)
    assert a_img.dtype == np.float32 and a_seg.dtype == np.uint8
    for shape in [(24, 32, 32), (64, 48)]:
        for seed in range(5):
            _, seg = make_case(np.random.default_rng(seed), shape)
            assert set(np.unique(seg)) == {0, 1, 2, 3}, (shape, seed)


def test_structures_differ_in_intensity_and_position():
    rng = np.random.default_rng(0)
    centers = []
    for _ in range(4):
        img, seg = make_case(rng, (32, 32, 32))
        means = [img[seg == v].mean() for v in (0, 1, 2, 3)]
        # organ brighter than background and lesion, kidney brightest: learnable, not trivial (noise, bias)
        assert means[2] > means[1] > means[3] and means[1] > means[0]
        centers.append(np.argwhere(seg == 1).mean(0))
    assert np.ptp(np.array(centers), axis=0).max() > 1.0  # the organ moves between cases


def test_dataset_layout_geometry_and_refusals(tmp_path):
    raw = str(tmp_path)
    folder = make_synthetic_dataset(raw, 942, "Layout", dim=3, n_train=3, n_unlabeled=2, n_test=1,
                                    shape=(16, 24, 20), spacing=(3.0, 0.8, 0.7), seed=3)
    assert os.path.basename(folder) == "Dataset942_Layout"
    listing = {d: sorted(os.listdir(os.path.join(folder, d))) for d in
               ("imagesTr", "labelsTr", "imagesUnlabeled", "imagesTs", "labelsTs")}
    assert listing["imagesTr"] == [f"case_{i:03d}_0000.nii.gz" for i in range(3)]
    assert listing["labelsTr"] == [f"case_{i:03d}.nii.gz" for i in range(3)]
    assert listing["imagesUnlabeled"] == [f"unlabeled_{i:03d}_0000.nii.gz" for i in range(2)]
    assert listing["imagesTs"] == ["test_000_0000.nii.gz"] and listing["labelsTs"] == ["test_000.nii.gz"]
    ds = json.load(open(os.path.join(folder, "dataset.json")))
    assert ds["labels"] == LABELS and ds["numTraining"] == 3 and ds["file_ending"] == ".nii.gz"
    img = sitk.ReadImage(os.path.join(folder, "imagesTr", "case_000_0000.nii.gz"))
    assert img.GetSize() == (20, 24, 16) and np.allclose(img.GetSpacing(), (0.7, 0.8, 3.0))
    assert _read(os.path.join(folder, "labelsTr", "case_000.nii.gz")).shape == (16, 24, 20)

    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(folder, num_processes=1)  # nnU-Net's own checks pass

    with pytest.raises(FileExistsError, match="--overwrite"):
        make_synthetic_dataset(raw, 942, "Layout", n_train=1)
    with pytest.raises(FileExistsError, match="unique IDs"):
        make_synthetic_dataset(raw, 942, "Other", n_train=1)
    make_synthetic_dataset(raw, 942, "Layout", n_train=1, n_unlabeled=0, n_test=0, shape=(16, 16, 16),
                           overwrite=True)
    assert len(os.listdir(os.path.join(folder, "imagesTr"))) == 1


def test_command_writes_2d_dataset(tmp_path):
    run_cmd(["nnUNetv2_advmim_make_synthetic", "-d", "943", "--dim", "2", "--n-train", "2", "--n-unlabeled", "1",
             "--n-test", "1", "--shape", "40", "48", "-o", str(tmp_path)])
    img = sitk.ReadImage(str(tmp_path / "Dataset943_Synthetic2D" / "imagesTr" / "case_000_0000.nii.gz"))
    assert img.GetDimension() == 2 and img.GetSize() == (48, 40)


TINY_DEMO_TRAINER = '''
import torch
from nnunetv2_advmim.trainers.nnUNetTrainer_demo import nnUNetTrainer_demo


class nnUNetTrainer_demo_tiny(nnUNetTrainer_demo):
    """our demo trainer, shortened further for a test"""
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
'''


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


TINY_DEMO_STAGES = TINY_DEMO_TRAINER + '''
from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM_demo
from nnunetv2_advmim.trainers.nnUNetTrainerMIM import nnUNetTrainerAnatoMask_demo


def _shorten(trainer):
    trainer.num_epochs = 1
    trainer.num_iterations_per_epoch = 2
    trainer.num_val_iterations_per_epoch = 1


class nnUNetTrainer_demo_tiny_ft(nnUNetTrainer_demo_tiny):
    pass


class nnUNetTrainerAdvMIM_tiny(nnUNetTrainerAdvMIM_demo):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _shorten(self)


class nnUNetTrainerAnatoMask_tiny(nnUNetTrainerAnatoMask_demo):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _shorten(self)
        self.warmup_epochs = 0
'''


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


def test_dice_table_format():
    s = {"A": {"mean": {1: {"Dice": 0.5}, 2: {"Dice": 0.25}}, "foreground_mean": {"Dice": 0.375}},
         "B": {"mean": {"1": {"Dice": 1.0}, "2": {"Dice": 0.0}}, "foreground_mean": {"Dice": 0.5}}}
    lines = dice_table(s, {"background": 0, "x": 1, "y": 2}).splitlines()
    assert lines[0].split() == ["label", "A", "B"]
    assert lines[1].split() == ["x", "0.5000", "1.0000"]
    assert lines[2].split() == ["y", "0.2500", "0.0000"]
    assert lines[3].split() == ["mean", "0.3750", "0.5000"]
