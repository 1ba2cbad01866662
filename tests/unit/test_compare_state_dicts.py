"""How checkpoint keys are sorted for a target network, as nnU-Net's load_pretrained_weights treats them."""
import torch

from nnunetv2_advmim.runtime.weights import compare_state_dicts


def test_compare_state_dicts_by_hand():
    target = {"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(4), "c": torch.zeros(1),
              "decoder.seg_layers.0.weight": torch.zeros(3, 8)}
    source = {"a.weight": torch.ones(2, 3), "b.weight": torch.ones(5), "decoder.seg_layers.0.weight": torch.ones(1, 8),
              "mask_token": torch.ones(1, 8)}
    r = compare_state_dicts(target, source)
    assert r["matched"] == ["a.weight"]
    assert r["shape_mismatch"] == [("b.weight", (4,), (5,))]
    assert r["missing"] == ["c"]
    assert r["skipped"] == ["decoder.seg_layers.0.weight"]
    assert r["unused"] == ["mask_token"]
    assert r["loadable"] is False
    del target["c"], target["b.weight"]
    assert compare_state_dicts(target, source)["loadable"] is True
