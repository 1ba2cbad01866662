"""Synthetic raw datasets: seeded cases, structures, folder layout, refusals; the demo's Dice table."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

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

