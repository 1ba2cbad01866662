"""nnUNetv2_advmim_migrate on hand-made checkpoints: which weights end up where, backups, refusals."""
import os

import pytest
import torch

from nnunetv2_advmim.commands.migrate import main, migrate_checkpoint, migrate_folder


def _old_checkpoint(trainer="nnUNetTrainerAdvMIM", predict_with="hybrid"):
    """A checkpoint as an AdvMIM trainer predicting with S wrote it: network_weights and optimizer_state are S's."""
    weights = {"hybrid": {"w": torch.full((2,), 1.0)}, "cnn": {"w": torch.full((2,), 2.0), "b": torch.zeros(1)}}
    optimizers = {"hybrid": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                  "cnn": {"state": {}, "param_groups": [{"lr": 1e-2}]}}
    return {"trainer_name": trainer, "network_weights": dict(weights[predict_with]),
            "optimizer_state": optimizers[predict_with], "current_epoch": 7,
            "advmim": {"predict_with": predict_with, "weights": weights, "optimizers": optimizers,
                       "discriminators": {"hybrid": {"d": torch.ones(1)}, "cnn": {"d": torch.ones(1)}}}}


def test_checkpoint_takes_the_weights_and_optimizer_of_the_new_network():
    ckpt = _old_checkpoint()
    assert migrate_checkpoint(ckpt, "cnn") == "hybrid"
    assert ckpt["network_weights"].keys() == {"w", "b"} and torch.equal(ckpt["network_weights"]["w"],
                                                                         torch.full((2,), 2.0))
    assert ckpt["optimizer_state"]["param_groups"][0]["lr"] == 1e-2 and ckpt["advmim"]["predict_with"] == "cnn"
    assert torch.equal(ckpt["advmim"]["weights"]["hybrid"]["w"], torch.ones(2)) and ckpt["current_epoch"] == 7
    assert migrate_checkpoint(ckpt, "cnn") is None  # already there
    ens = _old_checkpoint()
    migrate_checkpoint(ens, "ensemble")
    assert sorted(ens["network_weights"]) == ["cnn.b", "cnn.w", "hybrid.w"]
    assert ens["optimizer_state"]["param_groups"][0]["lr"] == 1e-4  # the ensemble trainer's optimizer is S's
    with pytest.raises(ValueError, match="not written by an AdvMIM"):
        migrate_checkpoint({"network_weights": {}}, "cnn")


def test_folder_is_migrated_for_the_trainer_class_with_backups(tmp_path):
    fold = tmp_path / "nnUNetTrainerAdvMIM__nnUNetPlans__2d" / "fold_0"
    fold.mkdir(parents=True)
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth"):
        torch.save(_old_checkpoint(), fold / name)
    original = (fold / "checkpoint_final.pth").read_bytes()
    model = str(fold.parent)

    assert [c[1:] for c in migrate_folder(model, dry_run=True, log=lambda s: None)] == [("hybrid", "cnn")] * 2
    assert (fold / "checkpoint_final.pth").read_bytes() == original and not list(fold.glob("*.bak-*"))

    assert main(["-i", model]) == 0  # nnUNetTrainerAdvMIM predicts with C
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth"):
        new = torch.load(fold / name, weights_only=False)
        assert new["advmim"]["predict_with"] == "cnn" and torch.equal(new["network_weights"]["w"], torch.full((2,), 2.0))
    assert (fold / "checkpoint_final.pth.bak-hybrid").read_bytes() == original
    assert migrate_folder(model, log=lambda s: None) == []  # a second run changes nothing

    torch.save(_old_checkpoint(), fold / "checkpoint_best.pth")
    torch.save(_old_checkpoint(), fold / "checkpoint_best.pth.bak-hybrid")
    with pytest.raises(FileExistsError, match="checkpoint_best.pth.bak-hybrid exists"):
        migrate_folder(model, log=lambda s: None)  # never overwrites a backup
    assert migrate_folder(model, predict_with="hybrid", log=lambda s: None)[0][1:] == ("cnn", "hybrid")


def test_refusals_name_the_file(tmp_path):
    assert main(["-i", str(tmp_path)]) == 1  # no checkpoint
    (tmp_path / "fold_0").mkdir()
    torch.save({"trainer_name": "nnUNetTrainer", "network_weights": {}}, tmp_path / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(ValueError, match="not an AdvMIM-family trainer"):
        migrate_folder(str(tmp_path), log=lambda s: None)
    with pytest.raises(ValueError, match=r"fold_0.checkpoint_final.pth: not written by an AdvMIM"):
        migrate_folder(str(tmp_path), predict_with="cnn", log=lambda s: None)
    assert not os.path.exists(tmp_path / "fold_0" / "checkpoint_final.pth.bak-cnn")
