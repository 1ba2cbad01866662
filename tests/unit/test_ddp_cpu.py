"""DDP on the CPU: two processes with torch.distributed's gloo backend, no GPU.

- AdvMIM: one step of S, C and both discriminators, each wrapped in DDP as the trainer wraps them, leaves identical
  weights on both ranks, equal (float tolerance) to one process stepping on the concatenated batches, in ``memory``
  and ``fast`` mode, and for CTCT (no masked domain, ``fast``). Float64 networks from the tiny 2D plan of
  ``test_advmim_step_modes``; instance norm is per sample and every loss term is a mean over samples (nnU-Net's
  batch Dice gathers over ranks with ``ddp=True``; the weighted CE normalises over ranks with ``ddp=True``), so
  the equality holds up to rounding.
- Masks: per-rank mask generators (``masking.rank_seed``) draw different masks on the two ranks, and the run state
  saved through ``checkpointing.run_state`` (a collective) restores every rank's generator and global RNGs, so a
  resume continues exactly per rank.

nnU-Net's own ``-num_gpus`` path hard-codes the NCCL backend and CUDA devices, so the tests drive the same core
functions the trainers call, in processes of their own.
"""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
# (step mode, masked domain): full AdvMIM in both modes, and CTCT (no masked domain, no discriminators)
CASES = {"memory": ("memory", True), "fast": ("fast", True), "ctct_fast": ("fast", False)}
SGD_LR = 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args):
    port = _free_port()
    mp.spawn(fn, args=(port, *args), nprocs=WORLD, join=True)


def _init(rank, port):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)  # 2 cores, 2 processes
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)


# ------------------------------------------------------------------------------------------------- AdvMIM step
def _advmim_setup():
    """Networks, discriminators and both ranks' batches and masks, identical in every process (seeded)."""
    from test_advmim_step_modes import B, K, P, PLAN

    from nnunetv2_advmim.architectures.from_plans import build_branch
    from nnunetv2_advmim.methods.adversarial import PatchDiscriminator
    from nnunetv2_advmim.methods.masking import block_mask

    torch.manual_seed(0)
    # eval(): switches off the hybrid's stochastic depth only (instance norm is per sample in both modes)
    nets = {b: build_branch(b, PLAN, 1, K, True).double().eval() for b in ("hybrid", "cnn")}
    discs = {b: PatchDiscriminator(K, torch.nn.Conv2d, features=(4, 8, 8, 8)).double() for b in nets}
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(WORLD):
        x_l = torch.randn(B, 1, P, P, dtype=torch.float64, generator=g)
        x_u = torch.randn(B, 1, P, P, dtype=torch.float64, generator=g)
        y = torch.randint(0, K, (B, 1, P, P), generator=g).double()
        masks = {b: block_mask(2 * B, nets[b].mask_grid((P, P)), 0.7, g) for b in nets}
        batches.append((x_l, x_u, y, masks))
    return nets, discs, batches


def _loss(ddp: bool):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    # nnU-Net's trainer loss (_build_loss): batch Dice, gathered over ranks under DDP
    dc_ce = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": ddp}, {}, weight_ce=1,
                           weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    return DeepSupervisionWrapper(dc_ce, [4 / 7, 2 / 7, 1 / 7])


def _targets(y):
    return [y, y[:, :, ::2, ::2], y[:, :, ::4, ::4]]


def _one_step(nets, discs, gen_discs, x_l, y, x_u, masks, mode, loss, ddp, no_sync=None):
    """One AdvMIM iteration as the trainer's train_step runs it, with plain SGD (weights = a function of the
    gradients only) and no clipping. ``masks=None``: CTCT (no masked domain, the discriminators stay out)."""
    from nnunetv2_advmim.methods.advmim import AdvMIMWeights, advmim_generator_step, discriminator_loss

    params = [p for m in list(nets.values()) + list(discs.values()) for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=SGD_LR)
    opt.zero_grad(set_to_none=True)
    out = advmim_generator_step(nets, x_l, _targets(y), x_u, loss, masks, gen_discs, mode,
                                weights=AdvMIMWeights(lambda_ct=0.1, rampup=0.5, lambda_u=1.0, lambda_adv=0.5),
                                no_sync=no_sync, ddp=ddp)
    if masks is not None:
        disc_loss = sum(discriminator_loss(d, out["real"][b], out["fake"][b])["loss"] for b, d in discs.items())
        disc_loss.backward()
    opt.step()
    return out


def _advmim_worker(rank, port, folder, wce_over_ranks=True):
    import contextlib

    from torch.nn.parallel import DistributedDataParallel as DDP

    from nnunetv2_advmim.methods.step_modes import ddp_find_unused_parameters
    from nnunetv2_advmim.wrappers import unwrap_model

    _init(rank, port)
    no_sync = lambda net: net.no_sync() if isinstance(net, DDP) else contextlib.nullcontext()  # noqa: E731
    results = {}
    for case, (mode, masked) in CASES.items():
        nets, discs, batches = _advmim_setup()
        # as nnUNetTrainerAdvMIM.initialize wraps them (SyncBatchNorm conversion is a no-op for instance norm)
        unused = ddp_find_unused_parameters(mode, masked_domain=masked)
        nets = {b: DDP(torch.nn.SyncBatchNorm.convert_sync_batchnorm(m), find_unused_parameters=unused)
                for b, m in nets.items()}
        discs = {b: DDP(d) for b, d in discs.items()}
        x_l, x_u, y, masks = batches[rank]
        _one_step(nets, discs, {b: unwrap_model(d) for b, d in discs.items()}, x_l, y, x_u,
                  masks if masked else None, mode, _loss(True), wce_over_ranks, no_sync)
        results[case] = {name: {k: v.detach().clone() for k, v in unwrap_model(m).state_dict().items()}
                         for name, m in [*(("net_" + b, n) for b, n in nets.items()),
                                         *(("disc_" + b, d) for b, d in discs.items())]}
    torch.save(results, os.path.join(folder, f"rank{rank}.pth"))
    dist.destroy_process_group()


def _single_process(mode, masked=True):
    """The reference: one process, the two ranks' batches concatenated (masks row by row alike)."""
    from test_advmim_step_modes import B

    nets, discs, batches = _advmim_setup()
    x_l = torch.cat([b[0] for b in batches])
    x_u = torch.cat([b[1] for b in batches])
    y = torch.cat([b[2] for b in batches])
    masks = {n: torch.cat([b[3][n][:B] for b in batches] + [b[3][n][B:] for b in batches]) for n in nets}
    _one_step(nets, discs, discs, x_l, y, x_u, masks if masked else None, mode, _loss(False), False)
    return {name: m.state_dict() for name, m in [*(("net_" + b, n) for b, n in nets.items()),
                                                 *(("disc_" + b, d) for b, d in discs.items())]}


def test_advmim_ddp_step_equals_one_process_on_the_concatenated_batches(tmp_path):
    _spawn(_advmim_worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pth", weights_only=True) for r in range(WORLD)]
    nets, discs, _ = _advmim_setup()
    initial = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in
               [*(("net_" + b, n) for b, n in nets.items()), *(("disc_" + b, d) for b, d in discs.items())]}
    for case, (mode, masked) in CASES.items():
        ref = _single_process(mode, masked)
        assert ranks[0][case].keys() == ref.keys() == {"net_hybrid", "net_cnn", "disc_hybrid", "disc_cnn"}
        for name in ref:
            if not masked and name.startswith("disc_"):
                continue  # CTCT has no discriminators
            moved = 0
            for k, v in ref[name].items():
                w0, w1 = ranks[0][case][name][k], ranks[1][case][name][k]
                assert torch.equal(w0, w1), f"{case}: {name}.{k} differs between the ranks"
                # the unsupervised terms compute in float32: measured differences <= 1e-8; normalising the
                # weighted CE per rank instead of over the ranks gives 6e-5
                assert torch.allclose(w0, v, rtol=1e-6, atol=1e-7), \
                    f"{case}: {name}.{k}: DDP {w0.flatten()[:3]} vs one process {v.flatten()[:3]}"
                moved += int(not torch.equal(v, initial[name][k]))
            assert moved > 0, f"{case}: {name} did not change, the comparison would be empty"


# ------------------------------------------------------------------------------------------------- masks, resume
class _RankTrainer:
    """What run_state / restore_run_state use of a trainer, on one DDP rank (the MIM trainers' mask generator)."""

    def __init__(self, rank, seed=12345):
        from nnunetv2_advmim.methods.masking import rank_seed

        self.is_ddp, self.local_rank, self.nonfinite_guard, self.log = True, rank, None, []
        self.mask_generator = torch.Generator().manual_seed(rank_seed(seed, rank))

    def per_rank_generators(self):
        return {"mask_generator": self.mask_generator}

    def print_to_log_file(self, *args):
        self.log.append(" ".join(map(str, args)))


def _masks_and_draws(t):
    from nnunetv2_advmim.methods.masking import block_mask

    return block_mask(4, (4, 4), 0.6, t.mask_generator), torch.rand(3)


def _mask_worker(rank, port, folder):
    from nnunetv2_advmim.runtime.checkpointing import atomic_save, restore_run_state, run_state, safe_load

    _init(rank, port)
    ckpt = os.path.join(folder, "checkpoint.pth")
    t = _RankTrainer(rank)
    torch.manual_seed(7)  # the same global seed on both ranks, as nnU-Net's processes start alike
    first = _masks_and_draws(t)
    state = run_state(t)  # a collective: both ranks call it, rank 0 writes
    if rank == 0:
        atomic_save(state, ckpt)
    dist.barrier()
    expected = _masks_and_draws(t)  # what the uninterrupted run draws next
    resumed = _RankTrainer(rank)
    torch.manual_seed(1234)
    restore_run_state(resumed, safe_load(ckpt), ckpt)
    after_resume = _masks_and_draws(resumed)
    torch.save({"first": first, "expected": expected, "resumed": after_resume, "n_rank_states":
                len(safe_load(ckpt)["rank_states"]), "log": resumed.log}, os.path.join(folder, f"rank{rank}.pth"))
    dist.destroy_process_group()


def test_masks_differ_between_ranks_and_resume_is_exact_per_rank(tmp_path):
    _spawn(_mask_worker, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pth", weights_only=True) for r in range(WORLD))
    assert r0["n_rank_states"] == WORLD and r0["log"] == [] and r1["log"] == []
    assert not torch.equal(r0["first"][0], r1["first"][0]), "both ranks drew the same masks"
    assert not torch.equal(r0["expected"][0], r1["expected"][0])
    for r in (r0, r1):
        assert torch.equal(r["resumed"][0], r["expected"][0]), "the resumed masks differ from the uninterrupted run"
        assert torch.equal(r["resumed"][1], r["expected"][1]), "the global torch RNG was not restored on this rank"
    # rank 0's generator is the single-process one (rank_seed keeps the seed on rank 0)
    from nnunetv2_advmim.methods.masking import block_mask

    assert torch.equal(r0["first"][0], block_mask(4, (4, 4), 0.6, torch.Generator().manual_seed(12345)))


# ------------------------------------------------------------------------------ agreement on bad steps
def _bad_step_worker(rank, port, out):
    """Rank 1 alone sees a non-finite value; every rank must skip the step (or stop) together."""
    from nnunetv2_advmim.runtime.numerics import NonFiniteError, NonFiniteGuard
    from nnunetv2_advmim.runtime.precision import guarded_step

    _init(rank, port)
    try:
        result = {}
        # 1. a non-finite loss term on rank 1 only (the gradients stay finite): both ranks skip
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        guard = NonFiniteGuard(max_consecutive=3, log=lambda s: None)
        loss = net(torch.ones(1, 3)).square().sum()
        term = torch.tensor(float("nan") if rank == 1 else 1.0)
        result["ok"] = guarded_step({"": opt}, None, losses={"": loss}, clip=1.0, guard=guard,
                                    checked={"loss": loss, "extra": term})
        result["skipped"] = guard.skipped
        # 2. a finite step afterwards is taken by both
        opt.zero_grad()
        loss = net(torch.ones(1, 3)).square().sum()
        result["ok2"] = guarded_step({"": opt}, None, losses={"": loss}, clip=1.0, guard=guard,
                                     checked={"loss": loss})
        result["weights"] = net.weight.detach().clone()
        # 3. a discriminator step (no guard): a NaN gradient on rank 1 only
        torch.manual_seed(1)
        disc = torch.nn.Linear(3, 1)
        d_opt = torch.optim.SGD(disc.parameters(), lr=0.1)
        x = torch.ones(1, 3) * (float("nan") if rank == 1 else 1.0)
        result["disc_ok"] = guarded_step({"d": d_opt}, None, losses={"d": disc(x).sum()}, clip=1.0)
        result["disc_weights"] = disc.weight.detach().clone()
        # 4. a term that stays non-finite on rank 1 only: both ranks stop at the same step, nobody hangs
        stopper = NonFiniteGuard(max_consecutive=2, log=lambda s: None)
        result["raised_at"] = None
        for step in range(4):
            try:
                stopper.step_ok({"t": torch.tensor(float("inf") if rank == 1 else 0.0)})
            except NonFiniteError:
                result["raised_at"] = step
                break
        dist.barrier()
        torch.save(result, os.path.join(out, f"rank{rank}.pth"))
    finally:
        dist.destroy_process_group()


def test_one_rank_nan_makes_every_rank_skip_and_stay_identical(tmp_path):
    _spawn(_bad_step_worker, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pth", weights_only=True) for r in range(WORLD))
    assert r0["ok"] is False and r1["ok"] is False, "a rank stepped although another rank saw a NaN"
    assert r0["skipped"] == r1["skipped"] == 1
    assert r0["ok2"] is True and r1["ok2"] is True
    assert torch.equal(r0["weights"], r1["weights"])
    assert r0["disc_ok"] is False and r1["disc_ok"] is False
    assert torch.equal(r0["disc_weights"], r1["disc_weights"]) and torch.isfinite(r1["disc_weights"]).all()
    assert r0["raised_at"] == r1["raised_at"] == 1
