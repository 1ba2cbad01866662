"""nnUNetv2_advmim_check_weights and the key compatibility of MIM pretraining networks with stock fine-tuning."""
import pytest
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


@pytest.fixture
def paths_901(planned_3d):
    return planned_3d  # nnU-Net 2.8 reads its path variables lazily from os.environ (set by nnunet_env)


def _pretraining_checkpoint(planned, tmp_path, hybrid: bool) -> str:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_advmim.architectures.from_plans import build_pretraining_network
    pm = PlansManager(f"{planned.preprocessed}/nnUNetPlans.json")
    net = build_pretraining_network(pm.get_configuration("3d_fullres"), 1, hybrid=hybrid)
    path = str(tmp_path / f"pre_{hybrid}.pth")
    torch.save({"network_weights": net.state_dict()}, path)
    return path
