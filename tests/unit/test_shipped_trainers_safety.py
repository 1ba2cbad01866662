"""Every trainer we ship loads checkpoints with ``weights_only=True`` and refuses to train over a finished run.

The trainers are not built (no plans needed): the methods are called on bare instances holding only the attributes
they read before refusing, which is the point: the refusal comes before anything is built, loaded or written.
"""
import importlib
import inspect
import os
import pkgutil

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

import nnunetv2_advmim.trainers as shipped
from nnunetv2_advmim.runtime.checkpointing import UnsafeCheckpointError, safe_load
from nnunetv2_advmim.runtime.safety import FinishedRunError


def shipped_trainers():
    found = {}
    for m in pkgutil.iter_modules(shipped.__path__):
        module = importlib.import_module(f"nnunetv2_advmim.trainers.{m.name}")
        for name, cls in vars(module).items():
            if inspect.isclass(cls) and issubclass(cls, nnUNetTrainer) and cls.__module__ == module.__name__:
                found[name] = cls
    return found


TRAINERS = shipped_trainers()


def test_the_trainers_named_in_the_docs_are_found():
    assert {"nnUNetTrainer_FinetuneWarmup", "nnUNetTrainer_demo", "nnUNetTrainer_demo_finetune",
            "nnUNetTrainerAdvMIM", "nnUNetTrainerAnatoMask"} <= set(TRAINERS)


class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _bare(cls, folder):
    t = object.__new__(cls)
    t.output_folder = str(folder)
    t.preprocessed_dataset_folder_base = str(folder)
    t.fold, t.current_epoch, t.local_rank, t.is_ddp = 0, 0, 0, False
    t.was_initialized = True  # stock load_checkpoint would otherwise try to build the network first
    t.device = torch.device("cpu")
    t.print_to_log_file = lambda *a, **k: None
    return t


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_load_checkpoint_refuses_pickled_objects(name, tmp_path):
    marker = tmp_path / "pwned"
    bad = str(tmp_path / "checkpoint_latest.pth")
    torch.save({"network_weights": {}, "logging": {"x": _SystemCall(marker)}}, bad)
    with pytest.raises(UnsafeCheckpointError):
        TRAINERS[name].load_checkpoint(_bare(TRAINERS[name], tmp_path), bad)
    assert not marker.exists()


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_on_train_start_refuses_to_overwrite_a_finished_run(name, tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_advmim_overwrite", raising=False)
    (tmp_path / "checkpoint_final.pth").write_bytes(b"done")
    with pytest.raises(FinishedRunError, match="--c"):
        TRAINERS[name].on_train_start(_bare(TRAINERS[name], tmp_path))


def test_stock_family_checkpoints_are_written_atomically_and_load_safely(tmp_path):
    """The checkpoint of a stock-family trainer: stock content, written through atomic_save, read by safe_load."""
    from nnunetv2_advmim.runtime.safe_training import load_stock_checkpoint, save_stock_checkpoint

    class Logger:
        def __init__(self):
            self.state = {"train_losses": [0.5, 0.25]}

        def get_checkpoint(self):
            return self.state

        def load_checkpoint(self, d):
            self.state = d

    t = _bare(TRAINERS["nnUNetTrainer_FinetuneWarmup"], tmp_path)
    torch.manual_seed(0)
    t.network = torch.nn.Linear(2, 2)
    t.optimizer = torch.optim.SGD(t.network.parameters(), lr=0.1, momentum=0.9)
    t.network(torch.ones(1, 2)).sum().backward()
    t.optimizer.step()
    t.grad_scaler, t.logger, t._best_ema, t.current_epoch = None, Logger(), 0.7, 4
    t.my_init_kwargs, t.inference_allowed_mirroring_axes, t.disable_checkpointing = {"fold": 0}, (0, 1), False
    target = tmp_path / "checkpoint_latest.pth"
    save_stock_checkpoint(t, str(target))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_latest.pth"]  # no temporary left
    ckpt = safe_load(str(target))
    assert ckpt["current_epoch"] == 5 and ckpt["trainer_name"] == "nnUNetTrainer_FinetuneWarmup"
    assert torch.equal(ckpt["network_weights"]["weight"], t.network.weight)

    u = _bare(TRAINERS["nnUNetTrainer_FinetuneWarmup"], tmp_path)
    u.network = torch.nn.Linear(2, 2)
    u.optimizer = torch.optim.SGD(u.network.parameters(), lr=0.1, momentum=0.9)
    u.grad_scaler, u.logger, u._best_ema, u.inference_allowed_mirroring_axes = None, Logger(), None, None
    load_stock_checkpoint(u, str(target))
    assert u.current_epoch == 5 and u._best_ema == 0.7 and u.logger.state == {"train_losses": [0.5, 0.25]}
    assert torch.equal(u.network.weight, t.network.weight)
    assert torch.equal(u.optimizer.state_dict()["state"][0]["momentum_buffer"],
                       t.optimizer.state_dict()["state"][0]["momentum_buffer"])
