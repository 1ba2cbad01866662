"""Metrics on hand-made masks whose values are known by construction, empty-mask conventions,
and agreement with MONAI's public metric functions."""
import math
import warnings

import numpy as np
import pytest

from nnunetv2_advmim.evaluation.metrics import binary_metrics, label_metrics, summarize


def cube(shape, start, side):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(s, s + side) for s in start)] = True
    return m


def shell_size(a, dim):
    return a ** dim - (a - 2) ** dim


@pytest.mark.parametrize("axis,spacing", [(0, (2.5, 0.8, 1.0)), (1, (2.5, 0.8, 1.0)), (2, (3.0, 3.0, 0.7))])
@pytest.mark.parametrize("hd95_definition", ["monai", "medpy"])
def test_shifted_cube_3d_anisotropic(axis, spacing, hd95_definition):
    """Cube of side a shifted by s voxels along one axis: Dice = (a - s) / a; the face that moved is a^2 of the
    a^3 - (a-2)^3 surface voxels (> 5 %), all exactly s * spacing[axis] from the other surface and no surface
    voxel is farther, so HD95 = s * spacing[axis] (both definitions). With a tolerance below the smallest
    spacing only coinciding surface voxels count: (a - s) layers of 4 (a - 1) voxels per direction."""
    a, s = 10, 2
    ref = cube((24, 24, 24), (5, 5, 5), a)
    start = [5, 5, 5]
    start[axis] += s
    pred = cube((24, 24, 24), start, a)
    m = binary_metrics(ref, pred, spacing, nsd_tolerance=0.5, hd95_definition=hd95_definition)
    assert m["Dice"] == pytest.approx((a - s) / a)
    assert m["HD95"] == pytest.approx(s * spacing[axis])
    assert m["NSD"] == pytest.approx((a - s) * 4 * (a - 1) / shell_size(a, 3))
    # every distance is at most s * spacing[axis] (+ float rounding of coordinate * spacing): NSD 1
    assert binary_metrics(ref, pred, spacing, nsd_tolerance=s * spacing[axis] + 1e-6)["NSD"] == pytest.approx(1.0)
    # spacing is used: unit spacing gives the distance in voxels
    assert binary_metrics(ref, pred, (1.0, 1.0, 1.0))["HD95"] == pytest.approx(s)


def test_parallel_plates_3d_asd_nsd():
    """Two one-voxel-thick plates s slices apart along the 2.5 mm axis: every voxel is surface and every
    distance is exactly s * 2.5 mm, so HD95 = ASD = 5 mm, Dice = 0, NSD = 0 below 5 mm and 1 at 5 mm."""
    ref = np.zeros((12, 16, 16), dtype=bool)
    pred = np.zeros_like(ref)
    ref[4, 3:13, 3:13] = True
    pred[6, 3:13, 3:13] = True
    spacing = (2.5, 0.8, 1.2)
    m = binary_metrics(ref, pred, spacing, nsd_tolerance=4.9)
    assert m["Dice"] == 0.0
    assert m["HD95"] == pytest.approx(5.0)
    assert m["ASD"] == pytest.approx(5.0)
    assert m["NSD"] == 0.0
    assert binary_metrics(ref, pred, spacing, nsd_tolerance=5.0)["NSD"] == pytest.approx(1.0)


def test_identical_masks_are_perfect():
    ref = cube((16, 16, 16), (3, 4, 5), 6)
    m = binary_metrics(ref, ref.copy(), (2.0, 1.0, 0.5), nsd_tolerance=0.0)
    assert m == {"Dice": 1.0, "HD95": 0.0, "ASD": 0.0, "NSD": 1.0}


def test_shifted_square_2d_and_single_slice_3d():
    """2D square of side a shifted by s pixels along the 2 mm axis: Dice (a-s)/a, HD95 = 2 s mm, NSD at a
    tolerance below the smallest spacing = 2 (a - s) / (4 (a - 1)) (coinciding edge pixels). The same masks as
    one-slice 3D arrays with nnU-Net's 2D spacing (999 on the first axis) give the same values."""
    a, s = 10, 3
    ref = cube((24, 24), (6, 4), a)
    pred = cube((24, 24), (6, 4 + s), a)
    spacing = (0.5, 2.0)
    m = binary_metrics(ref, pred, spacing, nsd_tolerance=0.4)
    assert m["Dice"] == pytest.approx((a - s) / a)
    assert m["HD95"] == pytest.approx(2.0 * s)
    assert m["NSD"] == pytest.approx(2 * (a - s) / (4 * (a - 1)))
    m3 = binary_metrics(ref[None], pred[None], (999.0, *spacing), nsd_tolerance=0.4)
    assert m3 == pytest.approx(m)
    # parallel lines 4 px apart along the 0.5 mm axis: ASD = HD95 = 2 mm exactly
    line_r, line_p = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    line_r[5, 2:18] = True
    line_p[9, 2:18] = True
    m = binary_metrics(line_r, line_p, spacing)
    assert m["ASD"] == pytest.approx(2.0) and m["HD95"] == pytest.approx(2.0)


def test_empty_conventions():
    empty = np.zeros((8, 10, 12), dtype=bool)
    full = cube((8, 10, 12), (2, 2, 2), 4)
    spacing = (3.0, 1.0, 0.5)
    diagonal = math.sqrt((8 * 3.0) ** 2 + 10 ** 2 + (12 * 0.5) ** 2)
    both = binary_metrics(empty, empty, spacing)
    assert all(math.isnan(v) for v in both.values())
    assert binary_metrics(empty, empty, spacing, both_empty="perfect") == {"Dice": 1.0, "HD95": 0.0, "ASD": 0.0,
                                                                           "NSD": 1.0}
    for ref, pred in ((empty, full), (full, empty)):  # missed structure and false positive
        m = binary_metrics(ref, pred, spacing)
        assert m["Dice"] == 0.0 and m["NSD"] == 0.0
        assert m["HD95"] == pytest.approx(diagonal) and m["ASD"] == pytest.approx(diagonal)
        m = binary_metrics(ref, pred, spacing, one_empty_distance="nan")
        assert m["Dice"] == 0.0 and m["NSD"] == 0.0 and math.isnan(m["HD95"]) and math.isnan(m["ASD"])


def test_label_metrics_multilabel_ignore_and_summary():
    ref = np.zeros((10, 20, 20), dtype=np.uint8)
    ref[2:8, 2:8, 2:8] = 1
    ref[2:8, 10:16, 10:16] = 2
    pred = ref.copy()
    pred[pred == 2] = 0  # label 2 missed
    pred[0, 0, 0] = 3  # a false positive voxel of label 3 (absent in the reference)
    values = label_metrics(ref, pred, (2.0, 1.0, 1.0), labels=[1, 2, 3, 4])
    assert values[1]["Dice"] == 1.0 and values[1]["empty"] == ""
    assert values[2]["Dice"] == 0.0 and values[2]["empty"] == "prediction"
    assert values[3]["Dice"] == 0.0 and values[3]["empty"] == "reference"
    assert values[4]["empty"] == "both" and math.isnan(values[4]["Dice"])
    assert values[2]["n_ref"] == 6 ** 3 and values[2]["n_pred"] == 0
    # the ignore label removes voxels from both maps: label 2 region marked ignore -> label 2 both empty
    ref_ign = ref.copy()
    ref_ign[ref == 2] = 9
    v = label_metrics(ref_ign, pred, (2.0, 1.0, 1.0), labels=[1, 2], ignore_label=9)
    assert v[2]["empty"] == "both"
    # per-label tolerances
    shifted = np.roll(ref, 1, axis=2)
    v = label_metrics(ref, shifted, (2.0, 1.0, 1.0), labels=[1, 2], nsd_tolerance={1: 1.0, 2: 0.0})
    assert v[1]["NSD"] == pytest.approx(1.0) and v[2]["NSD"] < 1.0
    # summary: NaN values (label 4, both empty) are left out; counts say how many values were used
    s = summarize([values, label_metrics(ref, ref, (2.0, 1.0, 1.0), labels=[1, 2, 3, 4])], [1, 2, 3, 4])
    assert s["mean"][2]["Dice"] == pytest.approx(0.5) and s["std"][2]["Dice"] == pytest.approx(0.5)
    assert s["n"][4]["Dice"] == 0 and math.isnan(s["mean"][4]["Dice"])
    assert s["n"][3]["Dice"] == 1  # second case: label 3 absent in both
    assert s["foreground_mean"]["Dice"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_bad_input_errors():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match="shapes differ"):
        binary_metrics(a, np.zeros((4, 4, 5), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(a, a, (1, 1))
    with pytest.raises(ValueError, match="nsd_tolerance"):
        binary_metrics(a, a, (1, 1, 1), nsd_tolerance=-1)
    with pytest.raises(ValueError, match="both_empty"):
        binary_metrics(a, a, (1, 1, 1), both_empty="zero")


def test_agrees_with_monai_public_functions():
    """Our single-pass computation equals MONAI's compute_hausdorff_distance / compute_average_surface_distance
    / compute_surface_dice on random blobs with anisotropic spacing; medpy-style HD95 is never larger."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    spacing = (2.5, 0.7, 1.1)

    def onehot(x):
        return torch.as_tensor(np.stack([~x, x])[None]).float()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(4):
            a = gaussian_filter(rng.random((12, 20, 20)), 2) > 0.5
            b = gaussian_filter(rng.random((12, 20, 20)), 2) > 0.5
            m = binary_metrics(a, b, spacing, nsd_tolerance=1.5)
            hd = compute_hausdorff_distance(onehot(b), onehot(a), percentile=95, spacing=spacing).item()
            asd = compute_average_surface_distance(onehot(b), onehot(a), symmetric=True, spacing=spacing).item()
            nsd = compute_surface_dice(onehot(b), onehot(a), [1.5], spacing=spacing).item()
            assert m["HD95"] == pytest.approx(hd, rel=1e-5)
            assert m["ASD"] == pytest.approx(asd, rel=1e-5)
            assert m["NSD"] == pytest.approx(nsd, rel=1e-6)
            assert binary_metrics(a, b, spacing, hd95_definition="medpy")["HD95"] <= m["HD95"] + 1e-9
