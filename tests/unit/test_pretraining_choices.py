"""Switchable choices of MIM pretraining and fine-tuning, on tensors: AnatoMask's block ranking, MPS-AMS's lesion
candidates, pretraining without intensity augmentation, and fine-tuning with a learning-rate warm-up.
Every default is the earlier behaviour; the trainers' defaults are pinned at the end."""
import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.random import OneOfTransform, RandomTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_advmim.env import find_trainer
from nnunetv2_advmim.data.pretraining_loader import (INTENSITY_TRANSFORMS, is_intensity_transform,
                                                     pretraining_transforms, without_intensity_transforms)
from nnunetv2_advmim.methods.mim import (anatomask_select, block_ranking_errors, kmeans, lesion_candidate_blocks,
                                         lesion_like_blocks, mpsams_mask, normalised_targets,
                                         per_block_reconstruction_error)
from nnunetv2_advmim.methods.schedules import warmup_epochs_for, warmup_poly_lr


# ------------------------------------------------------------------------------------ AnatoMask ranking
def _two_block_image():
    # block (2, 2) on a 2x4 image: left block [[1, 3], [1, 3]] (mean 2, var 1), right [[0, 0], [0, 4]] (mean 1, var 3)
    return torch.tensor([[[[1.0, 3.0, 0.0, 0.0], [1.0, 3.0, 0.0, 4.0]]]])


def test_block_ranking_errors_hand_values():
    x = _two_block_image()
    pred = torch.ones_like(x)
    # normalised targets have mean 0 and mean square 1 per block, so mean((1 - t)^2) = 1 + 1 = 2 in both blocks
    assert block_ranking_errors(pred, x, (2, 2), "normalised", eps=0.0).flatten().tolist() == pytest.approx([2.0, 2.0])
    # times the blocks' raw variances 1 and 3
    assert block_ranking_errors(pred, x, (2, 2), "variance_weighted", eps=0.0).flatten().tolist() == \
        pytest.approx([2.0, 6.0])
    # raw: left (0 + 4 + 0 + 4) / 4 = 2, right (1 + 1 + 1 + 9) / 4 = 3
    assert block_ranking_errors(pred, x, (2, 2), "raw", eps=0.0).flatten().tolist() == pytest.approx([2.0, 3.0])
    # two channels are averaged; channel 2 = 2 x + 1 has variances 4 and 12, values [3, 7, 3, 7] and [1, 1, 1, 9]
    x2 = torch.cat([x, 2 * x + 1], 1)
    pred2 = torch.ones_like(x2)
    assert block_ranking_errors(pred2, x2, (2, 2), "variance_weighted", eps=0.0).flatten().tolist() == \
        pytest.approx([(2 + 8) / 2, (6 + 24) / 2])
    assert block_ranking_errors(pred2, x2, (2, 2), "raw", eps=0.0).flatten().tolist() == \
        pytest.approx([(2 + 20) / 2, (3 + 16) / 2])
    with pytest.raises(ValueError, match="ranking"):
        block_ranking_errors(pred, x, (2, 2), "entropy")


def test_normalised_ranking_is_the_loss_error_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    x, pred = torch.randn(2, 2, 10, 12, generator=g), torch.randn(2, 2, 10, 12, generator=g)
    assert torch.equal(block_ranking_errors(pred, x, (4, 4)), per_block_reconstruction_error(pred, x, (4, 4)))


def _flat_and_structured_image():
    # 8x8, blocks 4x4: (0, 0) and (1, 1) flat (0 + noise of std 0.01), (0, 1) and (1, 0) ramps 0..15
    g = torch.Generator().manual_seed(0)
    x = 0.01 * torch.randn(1, 1, 8, 8, generator=g)
    ramp = torch.arange(16.0).reshape(4, 4)
    x[0, 0, :4, 4:] = ramp
    x[0, 0, 4:, :4] = ramp
    return x


def _teacher(inp, mask=None):
    # reconstructs the ramps up to 30 % of the target, predicts nothing (0) in the flat blocks: noise cannot be
    # predicted, so after normalisation the flat blocks have error ~1 and the ramps 0.09
    t = normalised_targets(inp, (4, 4))
    keep = torch.zeros_like(t)
    keep[..., :4, 4:] = 0.7
    keep[..., 4:, :4] = 0.7
    return t * keep


@pytest.mark.parametrize("ranking, hard_blocks", [("normalised", [[True, False], [False, True]]),
                                                  ("variance_weighted", [[False, True], [True, False]]),
                                                  ("raw", [[False, True], [True, False]])])
def test_anatomask_ranking_choice_decides_whether_flat_blocks_are_hardest(ranking, hard_blocks):
    x = _flat_and_structured_image()
    m1 = torch.ones(1, 2, 2, dtype=torch.bool)  # every block in M1; epoch 0 of 2 -> r = 0.5, n_hard = 2 of 4
    mask, hard = anatomask_select(_teacher, x, m1, (4, 4), 0, 2, generator=torch.Generator().manual_seed(0),
                                  ranking=ranking)
    assert hard[0].tolist() == hard_blocks
    errors = block_ranking_errors(_teacher(x), x, (4, 4), ranking)
    if ranking == "normalised":
        assert errors[0, 0, 0].item() == pytest.approx(1.0, abs=0.02) and errors[0, 0, 1].item() == pytest.approx(0.09)
    if ranking == "variance_weighted":  # 0.09 x var(0..15) = 0.09 x 21.25
        assert errors[0, 0, 1].item() == pytest.approx(0.09 * 21.25, rel=1e-4) and errors[0, 0, 0].item() < 1e-3


def test_anatomask_trainer_passes_its_ranking():
    cls = find_trainer("nnUNetTrainerAnatoMask")
    t = cls.__new__(cls)
    t.teacher, t.device, t.mask_ratio = _teacher, torch.device("cpu"), 1.0
    t.current_epoch, t.num_epochs, t.r_max, t.hard_schedule = 0, 2, 0.5, "easy_to_hard"
    x = _flat_and_structured_image()
    t.anatomask_ranking = "normalised"
    assert t.select_mask(x, (4, 4), torch.Generator().manual_seed(0))[1][0].tolist() == [[True, False], [False, True]]
    t.anatomask_ranking = "variance_weighted"
    assert t.select_mask(x, (4, 4), torch.Generator().manual_seed(0))[1][0].tolist() == [[False, True], [True, False]]


# ------------------------------------------------------------------------------------- MPS-AMS candidates
def test_lesion_candidate_blocks_hand_values():
    # 2x10 image, blocks 2x2, row-major voxels of each block:
    # A zeros (padding) | B constant 3 | C [0, 1; 0, 5] | D [0, 0; 0, 5] | E [1, 1.01; 1, 1.01]
    x = torch.tensor([[[[0, 0, 3, 3, 0, 1, 0, 0, 1, 1.01],
                        [0, 0, 3, 3, 0, 5, 0, 5, 1, 1.01]]]])
    # image: mean 27.02 / 20 = 1.351, mean square 91.0402 / 20, std sqrt(4.55201 - 1.351^2) = 1.65130
    # block std: A 0, B 0, C sqrt(6.5 - 1.5^2) = 2.0616, D sqrt(6.25 - 1.25^2) = 2.1651, E 0.005
    # nonzero share: A 0, B 1, C 0.5, D 0.25, E 1
    assert lesion_candidate_blocks(x, (2, 2)).tolist() == [[[False, False, True, False, False]]]
    assert lesion_candidate_blocks(x, (2, 2), min_nonzero_fraction=0.25).tolist() == \
        [[[False, False, True, True, False]]]
    # flat threshold relative to the image std: 1.2 x 1.6513 = 1.98 < 2.06 (C kept), 1.3 x 1.6513 = 2.147 >= 2.06
    assert lesion_candidate_blocks(x, (2, 2), flat_std_fraction=1.2)[0, 0, 2]
    assert not lesion_candidate_blocks(x, (2, 2), flat_std_fraction=1.3)[0, 0, 2]
    # threshold 0: only exactly constant blocks are flat (E, std 0.005, is kept)
    assert lesion_candidate_blocks(x, (2, 2), flat_std_fraction=0.0).tolist() == [[[False, False, True, False, True]]]
    # a voxel is zero only when every channel is 0: a second channel of ones fills A and D, but A stays constant
    x2 = torch.cat([x, torch.ones_like(x)], 1)
    assert lesion_candidate_blocks(x2, (2, 2), min_nonzero_fraction=1.0).tolist() == \
        [[[False, False, True, True, False]]]
    with pytest.raises(ValueError, match="min_nonzero_fraction"):
        lesion_candidate_blocks(x, (2, 2), min_nonzero_fraction=1.5)


def test_lesion_candidates_ignore_the_padding_of_partial_blocks():
    # 2x3 image, block (2, 2): [1, 2; 3, 4] and the partial block [5; 6] (+ padding that must not count as zeros)
    x = torch.tensor([[[[1.0, 2.0, 5.0], [3.0, 4.0, 6.0]]]])
    assert lesion_candidate_blocks(x, (2, 2), min_nonzero_fraction=0.75).tolist() == [[[True, True]]]


def test_kmeans_valid_points():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 20, 2, generator=g)
    a = kmeans(feats, 4, generator=torch.Generator().manual_seed(1))
    b = kmeans(feats, 4, generator=torch.Generator().manual_seed(1), valid=torch.ones(3, 20, dtype=torch.bool))
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # all valid = the default, bit for bit
    # two groups and one far outlier that is left out: it neither seeds, moves nor counts in a cluster
    pts = torch.tensor([[[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.1, 10.0], [100.0, 100.0]]])
    valid = torch.tensor([[True, True, True, True, False]])
    for seed in range(5):
        _, centers, counts = kmeans(pts, 2, generator=torch.Generator().manual_seed(seed), valid=valid)
        assert sorted(counts[0].tolist()) == [2.0, 2.0]
        assert sorted(centers[0, :, 0].tolist()) == pytest.approx([0.05, 10.05])


def _padded_scan(seed=1):
    # tissues 1 (left) and 2 (right) with noise, a two-block lesion (blocks 10, 11), a padding block (0, exactly 0)
    # and a constant block (12): the padding block forms the rarest cluster
    x = torch.ones(1, 1, 32, 32)
    x[..., :, 16:] = 2.0
    x[..., 16:24, 16:32] = 5.0
    x = x + 0.2 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
    x[..., :8, :8] = 0.0
    x[..., 24:, :8] = 3.0
    return x


def test_mpsams_exclude_flat_keeps_padding_and_constant_blocks_out_of_the_lesion_like_ones():
    x = _padded_scan()
    candidates = lesion_candidate_blocks(x, (8, 8))
    assert (~candidates).flatten().nonzero().flatten().tolist() == [0, 12]
    for seed in range(1, 5):
        plain = lesion_like_blocks(x, (8, 8), generator=torch.Generator().manual_seed(seed))
        assert plain.flatten().nonzero().flatten().tolist() == [0]  # the default picks the padding block
        mask, lesion = mpsams_mask(x, (8, 8), 0.25, torch.Generator().manual_seed(seed), exclude_flat=True)
        assert lesion.flatten().nonzero().flatten().tolist() == [10, 11]
        assert mask[0, 2, 2] and mask[0, 2, 3] and mask.sum().item() == 4
    for seed in range(6):  # never an excluded block, whatever the clustering
        _, lesion = mpsams_mask(x, (8, 8), 0.25, torch.Generator().manual_seed(seed), exclude_flat=True)
        assert lesion.any() and not (lesion & ~candidates).any()
    # excluded blocks can still be masked by the random fill
    hits = sum(bool(mpsams_mask(x, (8, 8), 0.5, torch.Generator().manual_seed(s), exclude_flat=True)[0][0, 0, 0])
               for s in range(20))
    assert 0 < hits < 20
    # default: off, the same masks as before
    a = mpsams_mask(x, (8, 8), 0.5, torch.Generator().manual_seed(3))
    b = mpsams_mask(x, (8, 8), 0.5, torch.Generator().manual_seed(3), exclude_flat=False, flat_std_fraction=0.9)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_mpsams_trainer_passes_its_candidate_filter():
    cls = find_trainer("nnUNetTrainerMPSAMS")
    t = cls.__new__(cls)
    t.current_epoch, t.num_epochs, t.ratio_start, t.ratio_end = 0, 1, 0.25, 0.25
    t.n_clusters, t.n_lesion_clusters, t.kmeans_iters, t.lesion_fraction = 4, 1, 10, 1.0
    t.mpsams_exclude_flat, t.mpsams_flat_std_fraction, t.mpsams_min_nonzero_fraction = False, 0.05, 0.5
    x = _padded_scan()
    assert t.select_mask(x, (8, 8), torch.Generator().manual_seed(1))[1].flatten().nonzero().flatten().tolist() == [0]
    t.mpsams_exclude_flat = True
    assert t.select_mask(x, (8, 8), torch.Generator().manual_seed(1))[1].flatten().nonzero().flatten().tolist() == \
        [10, 11]


# ----------------------------------------------------------------------------- intensity augmentation
NNUNET_INTENSITY = {"GaussianNoiseTransform", "GaussianBlurTransform", "MultiplicativeBrightnessTransform",
                    "ContrastTransform", "SimulateLowResolutionTransform", "GammaTransform"}


def _names(compose):
    return [type(t.transform if isinstance(t, RandomTransform) else t).__name__ for t in compose.transforms]


@pytest.mark.parametrize("dummy_2d", [False, True])
def test_without_intensity_transforms_keeps_spatial_mirroring_and_masking(dummy_2d):
    full = nnUNetTrainer.get_training_transforms(
        np.array([16, 32, 32]), (-0.5, 0.5), None, (0, 1, 2), dummy_2d, use_mask_for_norm=[True], is_cascaded=False,
        foreground_labels=[1], regions=None, ignore_label=None)
    assert NNUNET_INTENSITY <= set(_names(full))  # the stock pipeline has all six
    before = _names(full)
    kept = without_intensity_transforms(full)
    assert _names(full) == before  # the original pipeline is not changed
    expected = [n for n in before if n not in NNUNET_INTENSITY]
    assert _names(kept) == expected
    assert not NNUNET_INTENSITY & set(_names(kept))
    types = [type(t) for t in kept.transforms]
    assert SpatialTransform in types and MirrorTransform in types and MaskImageTransform in types
    assert (Convert3DTo2DTransform in types and Convert2DTo3DTransform in types) == dummy_2d
    assert all(t in full.transforms for t in kept.transforms)  # the same objects, in their order
    assert all(not is_intensity_transform(t) for t in kept.transforms)


def test_without_intensity_transforms_nested():
    noise, gamma = (cls.__new__(cls) for cls in INTENSITY_TRANSFORMS[:1] + INTENSITY_TRANSFORMS[5:6])
    mirror = MirrorTransform(allowed_axes=(0,))
    pipeline = ComposeTransforms([RandomTransform(RandomTransform(noise, 0.5), 0.5), OneOfTransform([gamma, mirror]),
                                  OneOfTransform([gamma]), ComposeTransforms([noise, mirror])])
    out = without_intensity_transforms(pipeline)
    assert len(out.transforms) == 2
    assert isinstance(out.transforms[0], OneOfTransform) and out.transforms[0].list_of_transforms == [mirror]
    assert isinstance(out.transforms[1], ComposeTransforms) and out.transforms[1].transforms == [mirror]


def test_pretraining_transforms_follow_the_trainer_switch():
    cm = SimpleNamespace(use_mask_for_norm=[False])
    lm = SimpleNamespace(foreground_labels=[1], has_regions=False, foreground_regions=None, ignore_label=None)
    fake = SimpleNamespace(configuration_manager=cm, label_manager=lm,
                           get_training_transforms=nnUNetTrainer.get_training_transforms)
    args = (np.array([32, 32]), (-0.5, 0.5), (0, 1), False)
    assert NNUNET_INTENSITY <= set(_names(pretraining_transforms(fake, *args)))  # no attribute: with (as before)
    fake.pretrain_intensity_augmentation = True
    assert NNUNET_INTENSITY <= set(_names(pretraining_transforms(fake, *args)))
    fake.pretrain_intensity_augmentation = False
    assert _names(pretraining_transforms(fake, *args)) == ["SpatialTransform", "MirrorTransform",
                                                           "RemoveLabelTransform"]


# ----------------------------------------------------------------------------------- fine-tuning warm-up
def test_warmup_epochs_for():
    assert warmup_epochs_for(1000) == 100 and warmup_epochs_for(20) == 2 and warmup_epochs_for(15) == 1
    assert warmup_epochs_for(5) == 1 and warmup_epochs_for(1) == 1  # at least 1
    assert warmup_epochs_for(1000, 30) == 30 and warmup_epochs_for(10, 50) == 10  # given; at most num_epochs
    assert warmup_epochs_for(1000, fraction=0.05) == 50


def _lrs(num_epochs, initial_lr, warmup_epochs=None):
    cls = find_trainer("nnUNetTrainer_FinetuneWarmup")
    t = cls.__new__(cls)
    t.network, t.initial_lr, t.weight_decay, t.num_epochs = torch.nn.Linear(2, 2), initial_lr, 3e-5, num_epochs
    t.warmup_epochs, t.warmup_fraction = warmup_epochs, 0.1
    t.print_to_log_file = lambda *a, **k: None
    optimizer, scheduler = t.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.99
    assert optimizer.param_groups[0]["nesterov"] and optimizer.param_groups[0]["weight_decay"] == 3e-5
    out = [optimizer.param_groups[0]["lr"]]  # after construction = epoch 0
    for e in range(num_epochs):
        scheduler.step(e)  # nnU-Net calls step(current_epoch) at every epoch start
        out.append(optimizer.param_groups[0]["lr"])
    assert out[0] == out[1]
    return out[1:]


def test_finetune_warmup_learning_rate_per_epoch():
    lr = _lrs(20, 0.01)  # warm-up 2 epochs, then poly over the remaining 18
    assert lr[0] == pytest.approx(0.005) and lr[1] == pytest.approx(0.01) and lr[2] == pytest.approx(0.01)
    assert lr[11] == pytest.approx(0.01 * 0.5 ** 0.9) and lr[11] == pytest.approx(0.0053589, rel=1e-4)
    assert lr[19] == pytest.approx(0.01 * (1 / 18) ** 0.9)
    assert lr == [pytest.approx(warmup_poly_lr(e, 20, 0.01, 2)) for e in range(20)]
    lr = _lrs(1000, 0.01)  # 100 warm-up epochs: 1e-4, 2e-4, ..., 1e-2
    assert lr[0] == pytest.approx(1e-4) and lr[49] == pytest.approx(0.005) and lr[99] == pytest.approx(0.01)
    assert all(b > a for a, b in zip(lr[:99], lr[1:100]))  # linear rise
    assert lr[550] == pytest.approx(0.01 * 0.5 ** 0.9)  # (1 - 450 / 900) ** 0.9
    assert all(b < a for a, b in zip(lr[100:-1], lr[101:]))  # poly decay
    lr = _lrs(10, 0.02, warmup_epochs=4)
    assert lr[:5] == pytest.approx([0.005, 0.01, 0.015, 0.02, 0.02])


# ------------------------------------------------------------------------------------ trainer defaults
def _plans():
    return {"dataset_name": "Dataset999_Choices", "plans_name": "nnUNetPlans", "continue_training": False,
            "original_median_spacing_after_transp": [1, 1], "original_median_shape_after_transp": [32, 32],
            "image_reader_writer": "NaturalImage2DIO", "transpose_forward": [0, 1], "transpose_backward": [0, 1],
            "experiment_planner_used": "x", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {},
            "configurations": {"2d": {
                "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                "patch_size": [32, 32], "median_image_size_in_voxels": [32, 32], "spacing": [1, 1],
                "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False], "batch_dice": True,
                "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {},
                "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_seg_kwargs": {},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {},
                "architecture": {"network_class_name": "unused", "arch_kwargs": {}, "_kw_requires_import": []}}}}


def test_trainer_defaults_are_the_earlier_behaviour_and_are_logged(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    dataset_json = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}, "numTraining": 1,
                    "file_ending": ".png"}

    def make(name):
        return find_trainer(name)(copy.deepcopy(_plans()), "2d", 0, dataset_json, torch.device("cpu"))

    anatomask, mpsams, warm = make("nnUNetTrainerAnatoMask"), make("nnUNetTrainerMPSAMS"), \
        make("nnUNetTrainer_FinetuneWarmup")
    assert anatomask.anatomask_ranking == "variance_weighted" and anatomask.pretrain_intensity_augmentation is True
    assert mpsams.mpsams_exclude_flat is False and mpsams.pretrain_intensity_augmentation is True
    assert mpsams.mpsams_flat_std_fraction == 0.05 and mpsams.mpsams_min_nonzero_fraction == 0.5
    assert warm.warmup_epochs is None and warm.warmup_fraction == 0.1 and isinstance(warm, nnUNetTrainer)
    assert set(anatomask.mim_settings()) >= {"anatomask_ranking", "pretrain_intensity_augmentation"}
    assert set(mpsams.mim_settings()) >= {"mpsams_exclude_flat", "mpsams_flat_std_fraction",
                                          "mpsams_min_nonzero_fraction", "pretrain_intensity_augmentation"}
    lines = []
    anatomask.print_to_log_file = lambda *a, **k: lines.append(" ".join(str(v) for v in a))
    monkeypatch.setattr(nnUNetTrainer, "on_train_start", lambda self: None)
    anatomask.on_train_start()
    assert any("anatomask_ranking=variance_weighted" in ln and "pretrain_intensity_augmentation=True" in ln for ln in lines)
    anatomask.anatomask_ranking = "entropy"
    with pytest.raises(ValueError, match="anatomask_ranking"):
        anatomask.initialize()  # checked before anything is built
    assert math.isclose(warmup_poly_lr(0, 1000, 1e-2, warmup_epochs_for(1000)), 1e-4)


# ----------------------------------------------------------------------------- seeded runs: no timing-dependent blur
def _blurs(transform):
    if isinstance(transform, RandomTransform):
        return _blurs(transform.transform)
    if isinstance(transform, ComposeTransforms):
        return [b for t in transform.transforms for b in _blurs(t)]
    if isinstance(transform, OneOfTransform):
        return [b for t in transform.list_of_transforms for b in _blurs(t)]
    return [transform] if type(transform).__name__ == "GaussianBlurTransform" else []


def test_timing_free_transforms_turns_off_the_blur_benchmark():
    """nnU-Net's blur picks FFT or convolution by timing them; a seeded run must not depend on machine load."""
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform

    from nnunetv2_advmim.data.semisup_loader import timing_free_transforms
    from nnunetv2_advmim.runtime.numerics import seed_everything

    full = nnUNetTrainer.get_training_transforms(
        np.array([32, 32]), (-0.5, 0.5), None, (0, 1), False, use_mask_for_norm=[False], is_cascaded=False,
        foreground_labels=[1], regions=None, ignore_label=None)
    assert [b.benchmark for b in _blurs(full)] == [True]  # stock 2.8.1 benchmarks its one blur
    assert timing_free_transforms(full) is full
    assert [b.benchmark for b in _blurs(full)] == [False]
    nested = ComposeTransforms([OneOfTransform([RandomTransform(GaussianBlurTransform((0.5, 1.0), benchmark=True), 0.5),
                                                MirrorTransform(allowed_axes=(0,))]),
                                GaussianBlurTransform((0.5, 1.0), benchmark=True)])
    assert [b.benchmark for b in _blurs(timing_free_transforms(nested))] == [False, False]
    x = torch.randn(1, 40, 40)
    outputs = []
    for _ in range(2):
        seed_everything(0)
        outputs.append(full(image=x.clone(), segmentation=torch.zeros(1, 40, 40))["image"])
    assert torch.equal(*outputs)
