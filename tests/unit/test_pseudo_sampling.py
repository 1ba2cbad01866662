"""Foreground-aware unlabeled crops: pseudo-label locations, the refresh schedule and the loader's crop choice."""
import numpy as np
import torch
from types import SimpleNamespace

from nnunetv2_advmim.env import find_trainer
from nnunetv2_advmim.data.pseudo_sampling import next_cases, predict_locations, pseudo_label_locations, refresh_due
from nnunetv2_advmim.data.semisup_loader import SemiSupervisedLoader, nnUNetUnlabeledDataLoader


def _logits(shape, regions):
    """(3, *shape) logits whose argmax is 0 except label l inside regions[l] (a tuple of slices)."""
    logits = torch.zeros((3, *shape))
    logits[0] = 1.0
    for label, region in regions.items():
        logits[(label,) + region] = 5.0
    return logits


def test_locations_are_the_argmax_foreground_in_nnunet_format():
    locs = pseudo_label_locations(_logits((1, 8, 8), {1: (slice(None), slice(2, 4), slice(5, 7))}), [1, 2])
    assert set(locs) == {1, 2}
    assert list(locs[2]) == []  # label 2 is nowhere in the argmax
    pts = np.asarray(locs[1])
    assert pts.shape == (4, 4)  # all 2 x 2 voxels (fewer than nnU-Net's sample cap), as (channel, z, y, x)
    assert {tuple(p) for p in pts} == {(0, 0, y, x) for y in (2, 3) for x in (5, 6)}


def test_refresh_schedule():
    assert [e for e in range(16) if refresh_due(e, 5, True)] == [5, 10, 15]
    assert not refresh_due(3, 5, False)  # not before the first refresh, even without locations
    assert refresh_due(7, 5, False)  # a resumed run recomputes what it lost at once
    assert not any(refresh_due(e, 0, False) for e in range(10))


def test_next_cases_cycles_through_the_pool():
    keys = ["a", "b", "c", "d", "e"]
    assert next_cases(keys, 0, None) == (keys, 0)
    assert next_cases(keys, 3, 10) == (keys, 0)
    assert next_cases(keys, 0, 2) == (["a", "b"], 2)
    assert next_cases(keys, 4, 2) == (["e", "a"], 1)
    assert next_cases([], 3, 2) == ([], 0)


def _loader(data, batch_size=4, patch=(4, 4)):
    dataset = SimpleNamespace(identifiers=sorted(data), load_data=lambda k: data[k])
    lm = SimpleNamespace(all_labels=[0, 1, 2], has_ignore_label=False)
    return nnUNetUnlabeledDataLoader(dataset, batch_size, patch, patch, lm)


def test_loader_centres_the_last_share_of_the_batch_on_pseudo_foreground():
    image = np.zeros((1, 1, 32, 32), dtype=np.float32)
    image[0, 0, 20:24, 26:30] = 1.0  # the only bright patch, where the pseudo-labels say label 1 is
    dl = _loader({"case": image})
    dl.pseudo_locations = {"case": pseudo_label_locations(
        _logits((1, 32, 32), {1: (slice(None), slice(21, 23), slice(27, 29))}), [1, 2])}
    dl.oversample_foreground_percent = 0.5
    np.random.seed(0)
    hits = np.zeros(4)
    for _ in range(25):
        batch = dl.generate_train_batch()
        assert batch["data"].shape == (4, 1, 4, 4)
        hits += batch["data"].reshape(4, -1).amax(1).numpy() > 0
    assert hits[2] == hits[3] == 25  # samples 2, 3 (the last 50 %) always hold the pseudo-foreground
    assert hits[:2].max() < 25  # random crops of a 32 x 32 image mostly miss a 4 x 4 patch
    dl.oversample_foreground_percent = 0.0  # off: every crop random again
    np.random.seed(0)
    assert sum(int(dl.generate_train_batch()["data"].amax() > 0) for _ in range(10)) < 10


def test_cases_without_pseudo_labels_keep_random_crops():
    dl = _loader({"a": np.zeros((1, 1, 8, 8), np.float32)})
    dl.oversample_foreground_percent = 1.0
    assert not dl._force_fg("a", 3)  # no locations yet for "a"
    dl.pseudo_locations = {"a": {1: [], 2: []}}
    assert dl._force_fg("a", 3)  # get_bbox falls back to a random crop when no label is present
    np.random.seed(0)
    assert dl.generate_train_batch()["data"].shape == (4, 1, 4, 4)


def test_update_unlabeled_restarts_only_the_unlabeled_stream():
    labeled = _loader({"l": np.ones((1, 1, 8, 8), np.float32)})
    unlabeled = _loader({"u": np.ones((1, 1, 8, 8), np.float32)})
    loader = SemiSupervisedLoader(labeled, unlabeled, 0, 0)
    loader.labeled_loader.generate_train_batch = lambda: {"data": 1, "target": 2, "keys": ["l"]}
    next(loader)
    first = loader._augmenters
    loader.update_unlabeled(pseudo_locations={"u": {1: []}}, oversample_foreground_percent=0.33)
    assert unlabeled.pseudo_locations == {"u": {1: []}} and unlabeled.oversample_foreground_percent == 0.33
    assert loader._augmenters[0] is first[0] and loader._augmenters[1] is not first[1]
    assert list(next(loader)["keys_unlabeled"]) == ["u"] * 4


def test_predict_locations_reads_images_only():
    seen = []
    dataset = SimpleNamespace(load_data=lambda k: seen.append(k) or np.ones((1, 1, 4, 4), np.float32))
    predictor = SimpleNamespace(predict_sliding_window_return_logits=lambda x: _logits(
        tuple(x.shape[1:]), {2: (slice(None), slice(0, 1), slice(0, 1))}))
    out = predict_locations(predictor, dataset, ["x", "y"], [1, 2])
    assert seen == ["x", "y"]
    assert list(out["x"][1]) == [] and [tuple(p) for p in out["y"][2]] == [(0, 0, 0, 0)]


def test_trainer_refreshes_on_schedule():
    every, epochs = 2, 5
    trainer_cls = find_trainer("nnUNetTrainerAdvMIM")
    calls = []
    fake = SimpleNamespace(unlabeled_oversample_foreground=0.33, pseudo_locations_every=every,
                           dataloader_train=SimpleNamespace(unlabeled_loader=SimpleNamespace(pseudo_locations={})))
    fake._refresh_pseudo_locations = lambda: calls.append(fake.current_epoch) or \
        fake.dataloader_train.unlabeled_loader.pseudo_locations.update({"x": {}})
    for fake.current_epoch in range(epochs):
        trainer_cls._maybe_refresh_pseudo_locations(fake)
    assert calls == [2, 4]
    fake.unlabeled_oversample_foreground = 0.0
    calls.clear()
    for fake.current_epoch in range(epochs):
        trainer_cls._maybe_refresh_pseudo_locations(fake)
    assert calls == []


def test_locations_round_trip_through_a_weights_only_checkpoint(tmp_path):
    from nnunetv2_advmim.data.pseudo_sampling import locations_from_state, locations_state
    from nnunetv2_advmim.runtime.checkpointing import atomic_save, safe_load

    locations = {"case_1": {1: np.array([[0, 3, 4], [0, 5, 6]]), 2: []}, "case_2": {1: [], 2: []}}
    atomic_save({"pseudo": locations_state(locations)}, str(tmp_path / "c.pth"))
    back = locations_from_state(safe_load(str(tmp_path / "c.pth"))["pseudo"])
    assert set(back) == {"case_1", "case_2"} and back["case_1"][2] == [] and back["case_2"] == {1: [], 2: []}
    np.testing.assert_array_equal(back["case_1"][1], [[0, 3, 4], [0, 5, 6]])


def test_refresh_predicts_this_ranks_share_of_the_window_and_hands_every_result_to_the_loader():
    from nnunetv2_advmim.data.pseudo_sampling import refresh_locations

    class Loader:
        unlabeled_keys = ["a", "b", "c", "d", "e"]
        unlabeled_dataset = "pool"
        added = None

        def add_pseudo_locations(self, locations, percent):
            self.added = (locations, percent)

    predicted = []
    predictor = SimpleNamespace(predict_sliding_window_return_logits=lambda x: predicted.append(1) or _logits(
        tuple(x.shape[1:]), {}))
    dataset = SimpleNamespace(load_data=lambda k: np.ones((1, 1, 4, 4), np.float32))
    loader = Loader()
    loader.unlabeled_dataset = dataset
    other_rank = {"z": {1: []}}
    found, cursor = refresh_locations(loader, predictor, cursor=1, max_cases=4, foreground_labels=[1],
                                      oversample_foreground_percent=0.5, rank=1, world=2,
                                      gather=lambda f: [other_rank, f])
    assert cursor == 0 and len(predicted) == 2  # window b, c, d, e; rank 1 predicts c and e
    assert sorted(found) == ["c", "e", "z"] and loader.added == (found, 0.5)
