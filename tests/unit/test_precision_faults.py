"""The optimizer step under fp16 faults, with torch's CPU GradScaler (same logic as the CUDA one).

- a step the guard rejects (non-finite loss term) without gradient clipping must not trip the scaler's
  "No inf checks were recorded prior to update" assertion, and leaves weights and optimizer untouched;
- a step the scaler skips itself (inf gradients after scaling, finite loss) is reported as not applied, so the
  callers' after-step work (the MIM trainers' EMA teacher update, the AdvMIM discriminator step) does not run.
"""
import torch

from nnunetv2_advmim.runtime.numerics import NonFiniteGuard
from nnunetv2_advmim.runtime.precision import guarded_step


def _setup():
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    return net, opt, torch.amp.GradScaler("cpu", init_scale=2.0 ** 16), NonFiniteGuard(5, log=lambda s: None)


def test_rejected_unclipped_step_under_a_scaler_does_not_assert():
    net, opt, scaler, guard = _setup()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss = net(torch.ones(1, 2)).sum()
    ok = guarded_step({"": opt}, scaler, losses={"": loss}, clip=None, guard=guard,
                      checked={"loss": torch.tensor(float("nan"))})
    assert ok is False and guard.skipped == 1
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert opt.state_dict()["state"] == {}  # no momentum buffer: the optimizer never stepped
    # the scaler is usable for the next step (its per-step state was reset by update())
    opt.zero_grad()
    ok = guarded_step({"": opt}, scaler, losses={"": net(torch.ones(1, 2)).sum()}, clip=None, guard=guard,
                      checked={"loss": torch.tensor(1.0)})
    assert ok is True and not torch.equal(net.weight, before["weight"])


def test_rejected_clipped_step_under_a_scaler_still_works():
    net, opt, scaler, guard = _setup()
    loss = net(torch.ones(1, 2)).sum()
    assert guarded_step({"": opt}, scaler, losses={"": loss}, clip=1.0, guard=guard,
                        checked={"loss": torch.tensor(float("inf"))}) is False


def test_scaler_skipped_step_is_reported_not_applied():
    """The MIM trainers update the EMA teacher only when guarded_step returns True."""
    net, opt, scaler, guard = _setup()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.full((1, 2), 1e36)  # loss finite in float32, times the scale 2**16 it overflows: inf gradients
    loss = net(x).sum()
    assert torch.isfinite(loss)
    ok = guarded_step({"": opt}, scaler, losses={"": loss}, clip=None, guard=guard, checked={"loss": loss})
    assert ok is False  # the scaler skipped the optimizer step and lowered its scale
    assert scaler.get_scale() == 2.0 ** 15 and guard.skipped == 0 and guard.scaler_skipped == 1
    for k, v in net.state_dict().items():
        assert torch.equal(v, weights[k])
    assert guard.state_dict()["scaler_skipped"] == 1


def test_applied_step_under_a_scaler_is_reported_applied():
    net, opt, scaler, guard = _setup()
    loss = net(torch.ones(1, 2)).sum()
    assert guarded_step({"": opt}, scaler, losses={"": loss}, clip=None, guard=guard, checked={"loss": loss}) is True
    assert scaler.get_scale() == 2.0 ** 16
