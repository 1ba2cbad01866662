"""nnUNetv2_advmim_check_weights and the key compatibility of MIM pretraining networks with stock fine-tuning."""
import pytest
import torch

from nnunetv2_advmim.commands.check_weights import main


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


def test_cnn_pretraining_weights_load_into_stock_network(paths_901, tmp_path, capsys):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    from nnunetv2_advmim.commands.check_weights import target_network
    from nnunetv2_advmim.runtime.weights import load_network_weights
    ckpt = _pretraining_checkpoint(paths_901, tmp_path, hybrid=False)
    with pytest.raises(SystemExit) as e:
        main([ckpt, "-d", str(paths_901.id), "-c", "3d_fullres"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "unused checkpoint tensors (ignored): 1" in out and "mask_token" in out
    assert "RESULT: loads with -pretrained_weights" in out
    # the stock loader agrees and fills every non-output tensor
    net = target_network(str(paths_901.id), "3d_fullres")
    load_pretrained_weights(net, ckpt)
    src = load_network_weights(ckpt)
    for k, v in net.state_dict().items():
        if ".seg_layers." not in k:
            assert torch.equal(v, src[k]), k


def test_hybrid_pretraining_weights_need_hybrid_target(paths_901, tmp_path, capsys):
    from nnunetv2_advmim.commands.plan_hybrid import plan_hybrid
    plan_hybrid(str(paths_901.id), target_plans="nnUNetPlans_hybrid_mimcheck",
                preprocessed_root=paths_901.env["nnUNet_preprocessed"], overwrite=True)
    hyb = _pretraining_checkpoint(paths_901, tmp_path, hybrid=True)
    cnn = _pretraining_checkpoint(paths_901, tmp_path, hybrid=False)
    with pytest.raises(SystemExit) as e:
        main([hyb, "-d", str(paths_901.id), "-c", "3d_fullres", "-p", "nnUNetPlans_hybrid_mimcheck"])
    assert e.value.code == 0 and "HybridTransformerUNet" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # CNN weights into the hybrid: stock loading would fail
        main([cnn, "-d", str(paths_901.id), "-c", "3d_fullres", "-p", "nnUNetPlans_hybrid_mimcheck"])
    out = capsys.readouterr().out
    assert e.value.code == 1 and "MISSING" in out and "would FAIL" in out


def test_check_weights_clear_errors(paths_901, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(SystemExit) as e:
        main([str(bad), "-d", str(paths_901.id), "-c", "3d_fullres"])
    assert e.value.code == 2 and "no 'network_weights'" in capsys.readouterr().err
    ckpt = _pretraining_checkpoint(paths_901, tmp_path, hybrid=False)
    with pytest.raises(SystemExit) as e:
        main([ckpt, "-d", str(paths_901.id), "-c", "3d_fullres", "-p", "NoSuchPlans"])
    assert e.value.code == 2 and "NoSuchPlans.json does not exist" in capsys.readouterr().err
