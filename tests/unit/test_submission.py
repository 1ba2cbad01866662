"""nnUNetv2_advmim_export_submission: naming pattern, completeness and geometry checks, format change, zip."""
import os
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_advmim.evaluation.submission import export_submission, main, predictions_left_out, submission_names

SPACING_XYZ = (0.8, 0.8, 2.5)
ORIGIN = (-10.0, 5.0, 30.0)


def write(arr, path, spacing=SPACING_XYZ, origin=ORIGIN):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    images, preds = tmp_path / "imagesTs", tmp_path / "pred"
    images.mkdir()
    preds.mkdir()
    segs = {}
    for case in ("FLARE_0003", "FLARE_0011"):
        write(rng.random((6, 10, 12)).astype(np.float32), images / f"{case}_0000.nii.gz")
        write(rng.random((6, 10, 12)).astype(np.float32), images / f"{case}_0001.nii.gz")  # second channel
        seg = rng.integers(0, 3, (6, 10, 12)).astype(np.uint8)
        write(seg, preds / f"{case}.nii.gz")
        segs[case] = seg
    return images, preds, segs, tmp_path


def test_export_copy_pattern_and_zip(folders):
    images, preds, segs, tmp = folders
    write(segs["FLARE_0003"], preds / "extra_case.nii.gz")  # not a test image: left out of the submission
    out = tmp / "submission"
    assert main(["-i", str(preds), "-o", str(out), "--images", str(images), "--pattern", "{case}_seg.nii.gz",
                 "--zip"]) == 0
    assert sorted(os.listdir(out)) == ["FLARE_0003_seg.nii.gz", "FLARE_0011_seg.nii.gz"]
    assert (out / "FLARE_0011_seg.nii.gz").read_bytes() == (preds / "FLARE_0011.nii.gz").read_bytes()
    with zipfile.ZipFile(str(out) + ".zip") as z:
        assert sorted(z.namelist()) == ["FLARE_0003_seg.nii.gz", "FLARE_0011_seg.nii.gz"]
    # an existing submission is not replaced silently; --overwrite replaces it
    assert main(["-i", str(preds), "-o", str(out), "--images", str(images), "--pattern", "{case}_seg.nii.gz"]) == 1
    assert main(["-i", str(preds), "-o", str(out), "--images", str(images), "--pattern", "{case}_seg.nii.gz",
                 "--overwrite"]) == 0


def test_export_changes_format_keeping_geometry(folders):
    images, preds, segs, tmp = folders
    res = export_submission(str(preds), str(tmp / "mha"), str(images), pattern="Pred_{id}.mha", verbose=False)
    assert sorted(os.path.basename(f) for f in res["files"]) == ["Pred_0003.mha", "Pred_0011.mha"]
    img = sitk.ReadImage(str(tmp / "mha" / "Pred_0011.mha"))
    assert np.array_equal(sitk.GetArrayFromImage(img), segs["FLARE_0011"])
    assert img.GetSpacing() == pytest.approx(SPACING_XYZ) and img.GetOrigin() == pytest.approx(ORIGIN)


def test_export_refuses_incomplete_or_mismatched(folders):
    images, preds, segs, tmp = folders
    os.remove(preds / "FLARE_0011.nii.gz")
    with pytest.raises(FileNotFoundError, match="FLARE_0011"):
        export_submission(str(preds), str(tmp / "a"), str(images), verbose=False)
    assert not (tmp / "a").exists()  # nothing written
    write(segs["FLARE_0011"], preds / "FLARE_0011.nii.gz", spacing=(0.8, 0.8, 3.0))  # wrong slice spacing
    with pytest.raises(ValueError, match=r"FLARE_0011\.nii\.gz.*spacing"):
        export_submission(str(preds), str(tmp / "a"), str(images), verbose=False)
    write(segs["FLARE_0011"][:, :, :-1], preds / "FLARE_0011.nii.gz")  # wrong shape
    with pytest.raises(ValueError, match="shape"):
        export_submission(str(preds), str(tmp / "a"), str(images), verbose=False)
    write(segs["FLARE_0011"], preds / "FLARE_0011.nii.gz")
    (tmp / "dirty").mkdir()
    (tmp / "dirty" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="notes.txt"):
        export_submission(str(preds), str(tmp / "dirty"), str(images), verbose=False)
    with pytest.raises(ValueError, match="same file name"):
        export_submission(str(preds), str(tmp / "b"), str(images), pattern="seg.nii.gz", verbose=False)
    with pytest.raises(ValueError, match="unknown field"):
        export_submission(str(preds), str(tmp / "b"), str(images), pattern="{name}.nii.gz", verbose=False)


def test_submission_names_from_the_pattern():
    names, ending = submission_names(["FLARE_0003", "FLARE_0011"], "Pred_{id}.mha")
    assert names == {"FLARE_0003": "Pred_0003.mha", "FLARE_0011": "Pred_0011.mha"} and ending == ".mha"
    names, ending = submission_names(["liver_7"], "{case}.NII.GZ")
    assert names == {"liver_7": "liver_7.NII.GZ"} and ending == ".NII.GZ"  # the ending as the pattern spells it
    with pytest.raises(ValueError, match="same file name"):
        submission_names(["a_1", "b_1"], "Pred_{id}.nii.gz")  # both ids are 1
    with pytest.raises(ValueError, match="must end with a file ending nnU-Net can write"):
        submission_names(["a_1"], "{case}.txt")


def test_predictions_left_out_and_missing_cases():
    assert predictions_left_out(["a", "b"], ["z", "b", "a", "c"], "/pred", "/img") == ["c", "z"]
    assert predictions_left_out(["a"], ["a"], "/pred", "/img") == []
    with pytest.raises(FileNotFoundError) as e:
        predictions_left_out(["a", "b", "c"], ["b", "x"], "/pred", "/img")
    assert str(e.value).startswith("2 of 3 expected case(s) have no prediction in /pred: a, c. Predict them "
                                   "(nnUNetv2_predict -i /img ...)")
