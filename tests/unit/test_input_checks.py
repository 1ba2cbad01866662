"""Bad input files get clear errors naming the file and the fix; a finished run is never trained over.
"""

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from nnunetv2_advmim.data.input_checks import (channel_content_checks, check_case, check_nifti_file,
                                               dimensionality_problem, looks_like_label_map, non_finite_counts,
                                               orientation_differs, spacing_is_2d)
from nnunetv2_advmim.runtime.safety import OVERWRITE_ENV, FinishedRunError, refuse_finished_run
from nnunetv2_advmim.data.unlabeled import list_unlabeled_cases
from helpers import random_image, truncate_file, write_image


def _check(files, expect_2d=False, n_channels=1):
    return check_case("a", [str(f) for f in files], SimpleITKIO, n_channels, expect_2d, [0, 1, 2, 3])


# ------------------------------------------------------------------------------------------ file-level checks
def test_truncated_and_unreadable_files(tmp_path):
    for ending in (".nii.gz", ".nii"):
        f = truncate_file(write_image(random_image((8, 10, 10)), (2, 1, 1), tmp_path / f"t_0000{ending}"))
        # what stock nnU-Net's reader does with it: zero-padded silently, no error
        data, _ = SimpleITKIO().read_images([f])
        assert data.shape == (1, 8, 10, 10)
        problems, _ = _check([f])
        assert len(problems) == 1 and f in problems[0] and "truncated" in problems[0]
        assert "export the file again, or remove case 'a'" in problems[0]
    text = tmp_path / "x_0000.nii.gz"
    text.write_text("not an image")
    problems, _ = _check([text])
    assert len(problems) == 1 and str(text) in problems[0] and "not a readable NIfTI file" in problems[0]
    nrrd = truncate_file(write_image(random_image((8, 10, 10)), (2, 1, 1), tmp_path / "n_0000.nrrd"))
    problems, _ = _check([nrrd])
    assert len(problems) == 1 and "cannot be read by SimpleITKIO" in problems[0] and nrrd in problems[0]
    assert check_nifti_file(write_image(random_image((4, 5, 6)), (1, 1, 1), tmp_path / "ok.nii.gz")) == (None, 0, 0)


def test_nan_and_inf_are_counted_and_refused(tmp_path):
    img = random_image((8, 10, 10))
    img[0, 0, :3] = np.nan
    img[1, 1, :5] = np.inf
    img[2, 2, :1] = -np.inf
    f = write_image(img, (2, 1, 1), tmp_path / "nan_0000.nii.gz")
    data, _ = SimpleITKIO().read_images([f])
    assert np.isfinite(data).all()  # SimpleITK reads NaN/inf from NIfTI as 0: only nibabel sees them
    problems, _ = _check([f])
    assert len(problems) == 1 and f in problems[0] and "3 NaN and 6 inf voxel(s) of 800" in problems[0]
    mha = write_image(img, (2, 1, 1), tmp_path / "nan_0000.mha")  # another format: counted on what the reader returns
    problems, _ = _check([mha])
    assert len(problems) == 1 and "3 NaN and 6 inf" in problems[0]


def test_dimensionality_and_channels_in_one_file(tmp_path):
    f2 = write_image(random_image((10, 12)), (0.5, 0.5), tmp_path / "two_0000.nii.gz")
    f3 = write_image(random_image((4, 10, 12)), (2, 1, 1), tmp_path / "three_0000.nii.gz")
    assert _check([f3], expect_2d=False) == ([], [])
    assert _check([f2], expect_2d=True) == ([], [])
    problems, _ = _check([f2], expect_2d=False)
    assert len(problems) == 1 and f2 in problems[0] and "a 2D image" in problems[0] and "in a 3D dataset" in problems[0]
    problems, _ = _check([f3], expect_2d=True)
    assert len(problems) == 1 and "a 3D image" in problems[0] and "in a 2D dataset" in problems[0]
    # a 4D file with 2 channels in a 1-channel dataset
    img4 = sitk.JoinSeries([sitk.GetImageFromArray(random_image((4, 10, 12), s)) for s in range(2)])
    f4 = str(tmp_path / "four_0000.nii.gz")
    sitk.WriteImage(img4, f4)
    problems, _ = _check([f4])
    assert any("2 channel(s) in the file(s), but dataset.json's channel_names has 1" in p for p in problems)
    # two channel files of different shapes: nnU-Net's reader refuses, we name both files
    g = write_image(random_image((4, 10, 13)), (2, 1, 1), tmp_path / "three_0001.nii.gz")
    problems, _ = _check([f3, g], n_channels=2)
    assert len(problems) == 1 and f3 in problems[0] and g in problems[0] and "differ in shape or spacing" in problems[0]
    assert "three_0000.nii.gz: shape (4, 10, 12)" in problems[0] and "three_0001.nii.gz: shape (4, 10, 13)" in problems[0]
    assert spacing_is_2d([999.0, 1.0, 1.0]) and spacing_is_2d([499.5, 0.5, 0.3]) and not spacing_is_2d([5, 1, 1])


def test_label_map_content_warns_but_real_images_pass(tmp_path):
    seg = np.zeros((8, 10, 10), np.uint8)
    seg[2:5, 2:5, 2:5] = 1
    seg[5:7, 5:7, 5:7] = 3
    f = write_image(seg, (2, 1, 1), tmp_path / "seg_0000.nii.gz")
    problems, warnings = _check([f])
    assert problems == [] and len(warnings) == 1 and f in warnings[0] and "segmentation rather than an image" in warnings[0]
    ct = np.random.default_rng(0).integers(-1024, 2000, size=(8, 10, 10)).astype(np.int16)  # integer CT in HU
    binary_like = (np.random.default_rng(1).random((8, 10, 10)) > 0.5).astype(np.float32) * 7  # values {0, 7}
    for arr, name in ((ct, "ct"), (binary_like, "b")):
        assert _check([write_image(arr, (2, 1, 1), tmp_path / f"{name}_0000.nii.gz")]) == ([], [])
    assert not looks_like_label_map(np.full((3, 3), 2.0), [0, 1, 2])  # constant image: no claim


# -------------------------------------------------------------- the steps of check_case on plain values
def test_orientation_differs_only_for_comparable_known_directions():
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    flipped_x = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert orientation_differs(flipped_x, identity)
    assert not orientation_differs(identity, identity)
    assert not orientation_differs((1.0005, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), identity)  # rounding: 5e-4 < 1e-3
    assert orientation_differs((1.002, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), identity)  # 2e-3 > 1e-3
    assert not orientation_differs((1.0, 0.0, 0.0, 1.0), identity)  # a 2D direction is not comparable with 3D
    assert not orientation_differs(None, identity) and not orientation_differs(identity, None)


def test_dimensionality_problem_names_what_was_found_and_wanted():
    files = ["/x/a_0000.nii.gz"]
    assert dimensionality_problem("a", files, (1, 10, 12), (999.0, 0.5, 0.5), expect_2d=True) is None
    assert dimensionality_problem("a", files, (4, 10, 12), (2.0, 1.0, 1.0), expect_2d=False) is None
    msg = dimensionality_problem("a", files, (1, 10, 12), (999.0, 0.5, 0.5), expect_2d=False)
    assert msg == ("/x/a_0000.nii.gz: a 2D image (shape (1, 10, 12), spacing (999.0, 0.5, 0.5)) in a 3D dataset. "
                   "Export it as a 3D image like those in imagesTr, or remove case 'a'.")
    msg = dimensionality_problem("a", files, (4, 10, 12), (2.0, 0.12345, 1.0), expect_2d=True)
    assert "a 3D image (shape (4, 10, 12), spacing (2.0, 0.1235, 1.0)) in a 2D dataset" in msg


def test_non_finite_counts_take_the_larger_of_file_and_reader():
    channel = np.array([[np.nan, 1.0, np.inf], [-np.inf, 0.0, np.nan]])
    assert non_finite_counts(channel) == (2, 2)
    assert non_finite_counts(channel, (5, 0)) == (5, 2)  # the file stores more NaN than the reader returned
    assert non_finite_counts(np.zeros((2, 2)), (3, 4)) == (3, 4)  # SimpleITK read them all as 0


def test_channel_content_checks_per_channel_file():
    image = np.linspace(-3.5, 7.25, 24).reshape(2, 3, 4)
    seg = np.zeros((2, 3, 4))
    seg[0, :2, :2] = 1
    data = np.stack([image, seg])
    problems, warnings = channel_content_checks(["img_0000.nii.gz", "img_0001.nii.gz"], data,
                                                {"img_0000.nii.gz": (2, 1)}, [0, 1])
    assert problems == ["img_0000.nii.gz: 2 NaN and 1 inf voxel(s) of 24. Replace them in the file with a value that "
                        "makes sense for the image (e.g. its minimum, or the background value) and re-run; they are "
                        "not replaced silently."]
    assert len(warnings) == 1 and warnings[0].startswith("img_0001.nii.gz: every voxel is one of the label values "
                                                         "[0, 1] of dataset.json")
    # one file holding both channels: files and channels cannot be matched, nothing is claimed
    assert channel_content_checks(["both_0000.nii.gz"], data, {"both_0000.nii.gz": (2, 1)}, [0, 1]) == ([], [])


# ------------------------------------------------------------------------ names, channel files, file endings
def _raw(tmp_path, files, channels=1, labels=()):
    raw = tmp_path / "Dataset999_X"
    (raw / "imagesUnlabeled").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for f in files:
        (raw / "imagesUnlabeled" / f).write_bytes(b"")
    for f in labels:
        (raw / "labelsTr" / f).write_bytes(b"")
    return str(raw), {"channel_names": {str(i): f"c{i}" for i in range(channels)}, "file_ending": ".nii.gz"}


def test_names_channels_endings_and_label_files(tmp_path):
    raw, dj = _raw(tmp_path / "1", ["a_0000.nii.gz", "b_0000.nii.gz"], channels=2)  # _0001 files missing
    with pytest.raises(ValueError, match=r"case 'a' .* channel files \[0\] but dataset.json has 2 .*a_0001\.nii\.gz"):
        list_unlabeled_cases(raw, dj)
    raw, dj = _raw(tmp_path / "2", ["a_0000.nii.gz", "a_0001.nii.gz"], channels=1)  # an extra channel
    with pytest.raises(ValueError, match=r"case 'a' .* channel files \[0, 1\] but dataset.json has 1"):
        list_unlabeled_cases(raw, dj)
    raw, dj = _raw(tmp_path / "3", ["a_0000.nii.gz", "b_0000.nrrd", "c_0000.mha"])
    with pytest.raises(ValueError) as e:
        list_unlabeled_cases(raw, dj)
    assert "b_0000.nrrd: file ending differs from the dataset's '.nii.gz'" in str(e.value) and "c_0000.mha" in str(e.value)
    # label files: the name rule (a labelsTr name, or no channel suffix) is the reliable one
    raw, dj = _raw(tmp_path / "4", ["a_0000.nii.gz", "case_001.nii.gz", "img_0012.nii.gz"],
                   labels=["case_001.nii.gz", "img_0012.nii.gz"])
    with pytest.raises(ValueError) as e:
        list_unlabeled_cases(raw, dj)
    msg = str(e.value)
    for f in ("case_001.nii.gz", "img_0012.nii.gz"):  # also a 4-digit case name that parses as a channel suffix
        assert f"{f}: has the name of the label file" in msg
    assert "segmentations do not belong in imagesUnlabeled: move it out" in msg
    raw, dj = _raw(tmp_path / "5", ["a_0000.nii.gz", "mask.nii.gz"])
    with pytest.raises(ValueError, match=r"mask\.nii\.gz: name lacks the channel suffix.*if it is a segmentation"):
        list_unlabeled_cases(raw, dj)


# --------------------------------------------------------------------------------- finished runs: unit level
class _FakeTrainer:
    def __init__(self, folder, epoch=0):
        self.output_folder, self.current_epoch, self.local_rank, self.logged = str(folder), epoch, 0, []

    def print_to_log_file(self, *args):
        self.logged.append(" ".join(map(str, args)))


def test_refuse_finished_run_unit(tmp_path, monkeypatch):
    monkeypatch.delenv(OVERWRITE_ENV, raising=False)
    refuse_finished_run(_FakeTrainer(tmp_path / "nothing_here"))  # new folder: fine
    (tmp_path / "checkpoint_latest.pth").write_bytes(b"")
    refuse_finished_run(_FakeTrainer(tmp_path))  # an unfinished run is nnU-Net's business (--c or restart)
    (tmp_path / "checkpoint_final.pth").write_bytes(b"")
    with pytest.raises(FinishedRunError) as e:
        refuse_finished_run(_FakeTrainer(tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg and "--c" in msg and f"{OVERWRITE_ENV}=1" in msg and "move the folder" in msg
    refuse_finished_run(_FakeTrainer(tmp_path, epoch=5))  # --c loaded the checkpoint first
    monkeypatch.setenv(OVERWRITE_ENV, "1")
    t = _FakeTrainer(tmp_path)
    refuse_finished_run(t)
    assert "will be overwritten" in t.logged[0]


