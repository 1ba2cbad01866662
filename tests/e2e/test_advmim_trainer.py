"""nnUNetTrainerAdvMIM: optimizer separation, label-free unlabeled path, checkpoint round trip (in process, 2D) and
stock ``nnUNetv2_train`` / ``--c`` / ``nnUNetv2_predict`` end to end (3D and 2D, subprocesses).

Datasets 950 (3D) and 951 (2D), the session fixtures ``advmim_3d`` and ``advmim_2d`` of conftest: 6 labeled training
cases, 4 ``imagesUnlabeled``; label budget 2 labeled cases with 2 folds (fold 0: 2 labeled, 2 budget-unlabeled, 2
validation cases) and preprocessed unlabeled images.
"""
import copy
import json
import os

import numpy as np
import pytest
import torch

from helpers import run_cmd
from nnunetv2_advmim.wrappers import unwrap_model

SHORT_VARIANT = '''
import os
from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import {base}
from nnunetv2_advmim.trainers.one_choice import OneChoice


class {name}(OneChoice, {base}):
    choice = {{"num_epochs": int(os.environ.get("ADVMIM_TEST_EPOCHS", "1")), "num_iterations_per_epoch": 2,
              "num_val_iterations_per_epoch": 1}}
'''


# ----------------------------------------------------------------------------------------------- in process
def _trainer(ds, cls_name="nnUNetTrainerAdvMIM_withAdv", fold=0, **attributes):
    """An initialised trainer; by default the one with every model (S, C and both discriminators)."""
    from nnunetv2_advmim.trainers import nnUNetTrainerAdvMIM as mod
    with open(os.path.join(ds.preprocessed, "nnUNetPlans.json")) as f:
        plans = json.load(f)
    with open(os.path.join(ds.preprocessed, "dataset.json")) as f:
        dataset_json = json.load(f)
    plans["continue_training"] = False
    t = getattr(mod, cls_name)(plans, ds.configuration, fold, dataset_json, device=torch.device("cpu"))
    for k, v in attributes.items():
        setattr(t, k, v)
    t.initialize()
    t.set_deep_supervision_enabled(True)
    return t


def _batch(trainer, seed=0):
    g = torch.Generator().manual_seed(seed)
    patch = trainer.configuration_manager.patch_size
    b = trainer.batch_size
    x_l = torch.randn((b, 1, *patch), generator=g)
    x_u = torch.randn((b, 1, *patch), generator=g)
    target = []
    for scale in trainer._get_deep_supervision_scales():
        shape = [int(round(p * s)) for p, s in zip(patch, scale)]
        target.append(torch.randint(0, 4, (b, 1, *shape), generator=g).float())
    return {"data": x_l, "target": target, "data_unlabeled": x_u}


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_each_optimizer_changes_only_its_own_parameters(advmim_2d):
    torch.manual_seed(0)
    t = _trainer(advmim_2d)
    # step_mode 'auto' (the default) resolves in initialize: 'memory' on the CPU, with the reason in the log
    assert t.step_mode == "memory"
    with open(t.log_file) as f:
        assert "step_mode 'auto' -> 'memory': on cpu the passes are compute-bound" in f.read()
    modules = {"hybrid": t.branches["hybrid"], "cnn": t.branches["cnn"],
               "d_hybrid": t.discriminators["hybrid"], "d_cnn": t.discriminators["cnn"]}
    # optimizers hold exactly their own module's parameters
    owned = {"hybrid": t.branch_optimizers["hybrid"], "cnn": t.branch_optimizers["cnn"],
             "d_hybrid": t.disc_optimizers["hybrid"], "d_cnn": t.disc_optimizers["cnn"]}
    for name, opt in owned.items():
        ids = {id(p) for g in opt.param_groups for p in g["params"]}
        assert ids == {id(p) for p in modules[name].parameters()}, name
    assert t.network is t.branches["cnn"]  # the default predicts with C

    before = {k: _params(m) for k, m in modules.items()}
    seen = {}

    def spy(name, opt):
        step = opt.step

        def wrapped(*a, **kw):
            seen[name] = {k: _params(m) for k, m in modules.items()}  # state right before this optimizer's step
            grads = {k: [p.grad for p in m.parameters()] for k, m in modules.items()}
            seen[name + "_grads"] = grads
            out = step(*a, **kw)
            seen[name + "_after"] = {k: _params(m) for k, m in modules.items()}
            return out

        opt.step = wrapped

    for name, opt in owned.items():
        spy(name, opt)
    t.on_train_epoch_start()
    log = t.step_terms(t.train_step(_batch(t)))
    assert np.isfinite(log["loss"]) and log["hybrid_adversarial"] > 0 and log["cnn_disc_loss"] > 0
    # each step changed its own module and nothing else
    for name in owned:
        for other in modules:
            changed = not _same(seen[name][other], seen[name + "_after"][other])
            assert changed == (other == name), f"step of {name} {'changed' if changed else 'left'} {other}"
    # the networks' loss wrote no gradient into the discriminators (frozen during the generator term)
    for d in ("d_hybrid", "d_cnn"):
        assert all(g is None for g in seen["hybrid_grads"][d]), d
        assert _same(seen["d_hybrid"][d], before[d])  # untouched until the discriminators' own steps
    # every module moved in one iteration
    for k, m in modules.items():
        assert not _same(before[k], _params(m)), k
    t.dataloader_train = t.dataloader_val = None


def test_unlabeled_batch_reaches_the_networks_only_as_images(advmim_2d):
    """Masked and unmasked forwards see [x_l; x_u] built from the batch's images only (masked blocks zeroed), the
    partner forward for pseudo-labels sees x_u only, and no target enters a forward."""
    torch.manual_seed(1)
    t = _trainer(advmim_2d)
    calls = []
    for b, net in t.branches.items():
        orig = net.forward

        def fwd(x, mask=None, _b=b, _orig=orig):
            calls.append((_b, x.detach().clone(), None if mask is None else mask.clone()))
            return _orig(x, mask=mask)

        net.forward = fwd
    batch = _batch(t, seed=3)
    t.step_mode = "balanced"
    t.on_train_epoch_start()
    t.train_step(batch)
    x_l, x_u, n = batch["data"], batch["data_unlabeled"], batch["data"].shape[0]
    kinds = [(b, m is not None, x.shape[0]) for b, x, m in calls]
    # C's pseudo-labels on x_u, then per network one forward of [x_l; x_u] unmasked + [x_l; x_u] masked
    assert kinds == [("cnn", False, n), ("hybrid", True, 4 * n), ("cnn", True, 4 * n)]
    from nnunetv2_advmim.methods.masking import upsample_mask, num_masked_blocks
    for b, x, m in calls:
        if x.shape[0] == n:  # the partner's pseudo-label forward
            assert torch.equal(x, x_u)
            continue
        net = t.branches[b]
        grid = net.mask_grid(x.shape[2:])
        assert tuple(m.shape) == (4 * n, *grid)
        assert not m[:2 * n].any(), "the original-domain half must be unmasked"
        assert all(int(row.sum()) == num_masked_blocks(grid, 0.7) for row in m[2 * n:])
        assert torch.equal(x, torch.cat([x_l, x_u, x_l, x_u]))  # the network zeroes masked blocks itself
    # the network's masked forward zeroes exactly the masked blocks of the input
    net = t.branches["cnn"]
    x = torch.cat([x_l, x_u])
    m = calls[-1][2][2 * n:]
    masked_x, vm = net._mask_input(x, m)
    assert torch.equal(vm, upsample_mask(m, x.shape[2:], net.mask_block_size(x.shape[2:])))
    assert torch.all(masked_x[vm.expand_as(x)] == 0) and torch.equal(masked_x[~vm.expand_as(x)], x[~vm.expand_as(x)])


def test_checkpoint_round_trip_restores_every_state(advmim_2d, tmp_path):
    torch.manual_seed(2)
    t = _trainer(advmim_2d)
    t.on_train_epoch_start()
    t.train_step(_batch(t))
    ckpt = str(tmp_path / "ckpt.pth")
    t.save_checkpoint(ckpt)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    # stock layout: network_weights is C (the default's network) and loads strictly into what nnUNetv2_predict builds
    net = type(t).build_network_architecture(t.plans_manager, t.configuration_manager, 1,
                                             t.label_manager.num_segmentation_heads, False)
    net.load_state_dict(saved["network_weights"])
    assert set(saved["advmim"]) >= {"weights", "optimizers", "discriminators", "disc_optimizers"}

    torch.manual_seed(99)
    t2 = _trainer(advmim_2d)
    t2.load_checkpoint(ckpt)
    assert t2.current_epoch == 1
    for b in ("hybrid", "cnn"):
        assert _same(_params(t.branches[b]), _params(t2.branches[b]))
        assert _same(_params(t.discriminators[b]), _params(t2.discriminators[b]))
        for o1, o2 in ((t.branch_optimizers[b], t2.branch_optimizers[b]), (t.disc_optimizers[b], t2.disc_optimizers[b])):
            s1, s2 = o1.state_dict(), o2.state_dict()
            assert s1["param_groups"] == s2["param_groups"]
            for i in s1["state"]:
                for k, v in s1["state"][i].items():
                    assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][i][k])), (b, i, k)
    # the same next step from both trainers gives the same parameters (exact resume of the optimisation state)
    t.current_epoch = t2.current_epoch
    batch = _batch(t, seed=7)
    for tr in (t, t2):
        torch.manual_seed(5)
        tr.on_train_epoch_start()
        tr.train_step(copy.deepcopy(batch))
    for b in ("hybrid", "cnn"):
        assert _same(_params(t.branches[b]), _params(t2.branches[b])), b


def test_partner_checkpoint_loads_into_c_through_the_environment(advmim_2d, tmp_path, monkeypatch):
    torch.manual_seed(4)
    t = _trainer(advmim_2d)
    ckpt = str(tmp_path / "ckpt.pth")
    t.save_checkpoint(ckpt)
    monkeypatch.setenv("nnUNet_advmim_pretrained_cnn", ckpt)
    torch.manual_seed(11)
    t2 = _trainer(advmim_2d)
    no_seg = lambda d: {k: v for k, v in d.items() if ".seg_layers." not in k}  # nnU-Net's pretrained-weights rule
    assert _same(no_seg(_params(t.branches["cnn"])), no_seg(_params(t2.branches["cnn"])))
    assert not _same(_params(t.branches["hybrid"]), _params(t2.branches["hybrid"]))
    monkeypatch.setenv("nnUNet_advmim_pretrained_cnn", str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="cnn branch"):
        _trainer(advmim_2d)


@pytest.mark.parametrize("name, predicts, n_disc, masked", [
    ("nnUNetTrainerAdvMIM", "MaskablePlainConvUNet", 0, True),  # the default: no adversarial loss
    ("nnUNetTrainerCTCT", "MaskablePlainConvUNet", 0, False),
    ("nnUNetTrainerAdvMIM_Hybrid", "HybridTransformerUNet", 0, True),
    ("nnUNetTrainerAdvMIM_withAdv", "MaskablePlainConvUNet", 2, True),
])
def test_variants_train_step_and_inference_network(advmim_2d, tmp_path, name, predicts, n_disc, masked):
    torch.manual_seed(3)
    t = _trainer(advmim_2d, name)
    assert len(t.discriminators) == n_disc and t.masked_domain == masked
    t.on_train_epoch_start()
    log = t.step_terms(t.train_step(_batch(t)))
    assert (log["hybrid_masked_ce"] > 0) == masked and (log["cnn_disc_loss"] > 0) == (n_disc > 0)
    assert (log["hybrid_adversarial"] > 0) == (n_disc > 0)
    ckpt = str(tmp_path / "c.pth")
    t.save_checkpoint(ckpt)
    net = type(t).build_network_architecture(t.plans_manager, t.configuration_manager, 1,
                                             t.label_manager.num_segmentation_heads, False)
    assert type(net).__name__ == predicts
    net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["network_weights"])


def test_non_default_choices_train_a_step(advmim_2d):
    """Every switchable choice away from its default at once: the step runs, stays finite and trains all four
    models; the discriminators use SGD with poly decay."""
    torch.manual_seed(4)
    t = _trainer(advmim_2d, mask_block_size=16, disc_optimizer="sgd", disc_lr=1e-2, disc_grad_clip=1.0,
                 disc_real="unlabeled", u_rampup_fraction=0.5, adv_rampup_fraction=0.5, unlabeled_batch_dice=None)
    assert all(isinstance(o, torch.optim.SGD) for o in t.disc_optimizers.values())
    before = {b: _params(m) for b, m in list(t.branches.items()) + [("d_" + b, d) for b, d in t.discriminators.items()]}
    t.on_train_epoch_start()
    assert t.disc_optimizers["cnn"].param_groups[0]["lr"] == pytest.approx(1e-2)
    out = t.train_step(_batch(t))
    log = t.step_terms(out)
    assert out["finite"] and log["hybrid_masked_ce"] > 0 and log["cnn_disc_loss"] > 0
    after = {b: _params(m) for b, m in list(t.branches.items()) + [("d_" + b, d) for b, d in t.discriminators.items()]}
    assert all(not _same(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="disc_real"):
        _trainer(advmim_2d, disc_real="labelled")


def test_pseudo_label_locations_refresh_in_a_real_trainer(advmim_2d, monkeypatch):
    """Foreground-aware unlabeled crops on: at the scheduled epoch the trainer predicts a window of the unlabeled
    pool with the ensemble, hands the locations to the unlabeled loader and batches keep coming; the branches
    are back in train mode with deep supervision."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    t = _trainer(advmim_2d, unlabeled_oversample_foreground=0.5, pseudo_locations_every=1,
                 pseudo_locations_max_cases=2)
    t.dataloader_train, t.dataloader_val = t.get_dataloaders()
    pool = list(t.dataloader_train.unlabeled_loader.indices)
    assert len(pool) > 2
    t.current_epoch = 0
    t.on_train_epoch_start()
    assert t.dataloader_train.unlabeled_loader.pseudo_locations == {}  # not before the first refresh
    t.current_epoch = 1
    t.on_train_epoch_start()
    u = t.dataloader_train.unlabeled_loader
    assert sorted(u.pseudo_locations) == sorted(pool[:2]) and u.oversample_foreground_percent == 0.5
    for locs in u.pseudo_locations.values():
        assert set(locs) == set(t.label_manager.foreground_labels)
    t.current_epoch = 2
    t.on_train_epoch_start()
    assert sorted(u.pseudo_locations) == sorted(pool[:4])  # the window moved on; earlier cases are kept
    assert all(unwrap_model(m).training for m in t.branches.values())
    assert all(unwrap_model(m).decoder.deep_supervision for m in t.branches.values())
    batch = next(t.dataloader_train)
    assert batch["data_unlabeled"].shape[0] == t.batch_size
    t.dataloader_train.finish()
    log = open(t.log_file).read()
    assert "Pseudo-label locations of 2 unlabeled cases" in log
    # the settings in use, logged once at the start (the measurements are in the docs)
    assert "predict_with=cnn" in log and "unlabeled_oversample_foreground=0.5" in log, log[-3000:]


def test_resume_needs_the_trainer_that_started_the_run(advmim_2d, tmp_path):
    """A checkpoint written with the adversarial loss resumes with it, in the trainer that wrote it; a trainer without
    it refuses that checkpoint, and the reverse is refused too, each with the file named."""
    torch.manual_seed(6)
    t = _trainer(advmim_2d, "nnUNetTrainerAdvMIM_withAdv")
    t.on_train_epoch_start()
    t.train_step(_batch(t))
    ckpt = str(tmp_path / "with_adv.pth")
    t.save_checkpoint(ckpt)
    resumed = _trainer(advmim_2d, "nnUNetTrainerAdvMIM_withAdv")
    resumed.load_checkpoint(ckpt)
    for b in ("hybrid", "cnn"):
        assert _same(_params(t.discriminators[b]), _params(resumed.discriminators[b]))
        assert resumed.disc_optimizers[b].state_dict()["param_groups"] == t.disc_optimizers[b].state_dict()["param_groups"]
    resumed.on_train_epoch_start()
    out = resumed.train_step(_batch(resumed, seed=2))
    assert out["finite"] and resumed.step_terms(out)["cnn_disc_loss"] > 0
    with pytest.raises(RuntimeError, match="with_adv.pth.*with the adversarial loss.*nnUNetTrainerAdvMIM_withAdv"):
        _trainer(advmim_2d, "nnUNetTrainerAdvMIM").load_checkpoint(ckpt)

    plain = _trainer(advmim_2d, "nnUNetTrainerAdvMIM")
    without = str(tmp_path / "without_adv.pth")
    plain.save_checkpoint(without)
    with pytest.raises(RuntimeError, match="without_adv.pth.*without the adversarial loss"):
        _trainer(advmim_2d, "nnUNetTrainerAdvMIM_withAdv").load_checkpoint(without)


# ----------------------------------------------------------------------------------------------- end to end
def _variant(ext_trainers, base, name):
    folder, write = ext_trainers
    write(name, SHORT_VARIANT.format(base=base, name=name))
    return folder


def _e2e(ds, ext_trainers, base, name, test_case_count=1):
    folder = _variant(ext_trainers, base, name)
    env = dict(ds.env, nnUNet_extTrainer=folder, ADVMIM_TEST_EPOCHS="1")
    conf = ds.configuration
    run_cmd(["nnUNetv2_train", str(ds.id), conf, "0", "-tr", name, "-device", "cpu"], env=env)
    out = os.path.join(ds.results, f"{name}__nnUNetPlans__{conf}", "fold_0")
    for f in ("checkpoint_final.pth", "checkpoint_best.pth", "progress.png", "progress_advmim.png"):
        assert os.path.isfile(os.path.join(out, f)), f
    first = torch.load(os.path.join(out, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert first["current_epoch"] == 1
    # --c with one more epoch resumes from checkpoint_final and trains epoch 1 only
    env["ADVMIM_TEST_EPOCHS"] = "2"
    proc = run_cmd(["nnUNetv2_train", str(ds.id), conf, "0", "-tr", name, "-device", "cpu", "--c"], env=env)
    assert "Epoch 1" in proc.stdout and "Epoch 0\n" not in proc.stdout
    second = torch.load(os.path.join(out, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert second["current_epoch"] == 2
    log = second["logging"]
    assert len(log["train_losses"]) == 2 and len(log["advmim_hybrid_adversarial"]) == 2
    assert log["train_losses"][0] == first["logging"]["train_losses"][0]
    # stock prediction
    pred = os.path.join(str(ext_trainers[0]), "..", f"pred_{name}")
    images = os.path.join(ds.raw, "imagesTs")
    run_cmd(["nnUNetv2_predict", "-i", images, "-o", pred, "-d", str(ds.id), "-c", conf, "-f", "0", "-tr", name,
             "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar", "-chk", "checkpoint_final.pth"],
            env=env)
    outputs = sorted(f for f in os.listdir(pred) if f.endswith(".nii.gz"))
    assert len(outputs) == 2, outputs
    return second


def test_e2e_3d_train_resume_predict(advmim_3d, ext_trainers):
    ckpt = _e2e(advmim_3d, ext_trainers, "nnUNetTrainerAdvMIM_withAdv", "nnUNetTrainerAdvMIM_withAdv_t3d")
    assert np.isfinite(ckpt["logging"]["advmim_hybrid_disc_loss"]).all()
    assert all(v > 0 for v in ckpt["logging"]["advmim_hybrid_disc_loss"])


def test_e2e_2d_ensemble_train_resume_predict(advmim_2d, ext_trainers):
    ckpt = _e2e(advmim_2d, ext_trainers, "nnUNetTrainerAdvMIM_Ensemble", "nnUNetTrainerAdvMIM_Ensemble_t2d")
    assert all(k.startswith(("hybrid.", "cnn.")) for k in ckpt["network_weights"])
    assert ckpt["advmim"]["discriminators"] == {}  # the default's training: no adversarial loss


def test_e2e_2d_paper_train_resume_predict(advmim_2d, ext_trainers):
    """The official configuration by name trains, resumes and predicts with S through the stock commands."""
    ckpt = _e2e(advmim_2d, ext_trainers, "nnUNetTrainerAdvMIM_paper", "nnUNetTrainerAdvMIM_paper_t2d")
    assert ckpt["advmim"]["predict_with"] == "hybrid"
    assert any(".blocks." in k for k in ckpt["network_weights"])  # S is the network nnUNetv2_predict rebuilt
    assert ckpt["advmim"]["disc"] == {"optimizer": "sgd", "lr": 0.05, "grad_clip": 5.0}
    disc = ckpt["advmim"]["discriminators"]["hybrid"]
    assert disc["layers.8.weight"].shape[-2:] == (4, 4)  # the official 4x4 head
    assert all(v > 0 for v in ckpt["logging"]["advmim_cnn_disc_loss"])
    assert all(v == 0 for v in ckpt["logging"]["advmim_hybrid_masked_dice"])  # masked unlabeled term: wCE only


def test_non_finite_step_is_skipped_counted_and_stops_training(advmim_2d):
    """A NaN in the unlabeled batch makes the loss non-finite: the step leaves every network, discriminator and
    optimizer state untouched, is counted by term name and left out of the epoch means; N in a row stop training."""
    from nnunetv2_advmim.runtime.numerics import NonFiniteError, NonFiniteGuard
    torch.manual_seed(5)
    t = _trainer(advmim_2d)
    t.on_train_epoch_start()
    modules = dict(t.branches, **{f"d_{b}": d for b, d in t.discriminators.items()})
    good = t.train_step(_batch(t))
    assert good["finite"]
    before = {k: _params(m) for k, m in modules.items()}
    optimizers = dict(t.branch_optimizers, **{f"d_{b}": o for b, o in t.disc_optimizers.items()})
    opt_before = {k: copy.deepcopy(o.state_dict()["state"]) for k, o in optimizers.items()}
    bad = _batch(t, seed=1)
    bad["data_unlabeled"][0, 0, 0, 0] = float("nan")
    out = t.train_step(bad)
    assert out["finite"] is False and t.nonfinite_guard.skipped == 1
    assert any(k.startswith("hybrid_") for k, n in t.nonfinite_guard.counts.items() if n > 0)
    for k, m in modules.items():
        assert _same(before[k], _params(m)), f"{k} changed in a skipped step"
    for k, o in optimizers.items():
        state = o.state_dict()["state"]
        assert state.keys() == opt_before[k].keys() and all(
            torch.equal(torch.as_tensor(v), torch.as_tensor(opt_before[k][i][n]))
            for i in state for n, v in state[i].items()), f"optimizer {k} changed in a skipped step"
    t.on_train_epoch_end([good, out])  # the skipped step is left out of the logged means
    log = t.logger.local_logger.my_fantastic_logging
    assert np.isfinite(log["train_losses"][-1]) and log["train_losses"][-1] == pytest.approx(float(good["loss"]))
    t.nonfinite_guard = NonFiniteGuard(max_consecutive=2, log=lambda s: None)
    t.train_step(bad)
    with pytest.raises(NonFiniteError, match="hybrid_total"):
        t.train_step(bad)
    t.dataloader_train = t.dataloader_val = None


def test_checkpoint_latest_stores_the_best_ema_after_this_epoch(advmim_2d, tmp_path):
    """nnU-Net writes checkpoint_latest before updating _best_ema; ours stores the updated value, so a resumed run
    does not overwrite checkpoint_best with a worse epoch."""
    from nnunetv2_advmim.runtime.checkpointing import safe_load
    t = _trainer(advmim_2d)
    log = t.logger.local_logger.my_fantastic_logging
    t._best_ema, t.current_epoch = 0.5, 1
    log["ema_fg_dice"] = [0.5, 0.7]  # this epoch improves on the best
    t.save_checkpoint(str(tmp_path / "latest.pth"))
    assert safe_load(str(tmp_path / "latest.pth"))["_best_ema"] == 0.7
    log["ema_fg_dice"] = [0.5, 0.4]  # this epoch does not
    t.save_checkpoint(str(tmp_path / "latest.pth"))
    assert safe_load(str(tmp_path / "latest.pth"))["_best_ema"] == 0.5
    t.dataloader_train = t.dataloader_val = None


def test_seeded_runs_give_identical_losses(advmim_2d, monkeypatch):
    """nnUNet_advmim_seed: same seed -> same initial weights, masks and losses; another seed -> different losses."""
    def run(seed):
        monkeypatch.setenv("nnUNet_advmim_seed", str(seed))
        t = _trainer(advmim_2d)
        t.on_train_epoch_start()
        losses = [t.step_terms(t.train_step(_batch(t, seed=i)))["loss"] for i in range(2)]
        t.dataloader_train = t.dataloader_val = None
        return losses
    try:
        a, b, c = run(7), run(7), run(8)
    finally:
        torch.use_deterministic_algorithms(False)
    assert a == b and a != c
