"""NonFiniteGuard and discriminator_collapsed on hand-made tensors."""
import pytest
import torch

from nnunetv2_advmim.runtime.numerics import NonFiniteError, NonFiniteGuard, discriminator_collapsed


def _guard(n=3):
    lines = []
    return NonFiniteGuard(max_consecutive=n, log=lines.append), lines


def test_finite_terms_pass_and_log_nothing():
    g, lines = _guard()
    assert g.step_ok({"loss": torch.tensor(1.5), "grad_norm": torch.tensor(0.0), "x": 2.0})
    assert g.skipped == 0 and g.counts == {} and lines == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_term_is_skipped_counted_and_named(bad):
    g, lines = _guard()
    assert not g.step_ok({"loss": torch.tensor(1.0), "loss_adv": torch.tensor(bad), "grad_norm": torch.tensor(3.0)})
    assert g.skipped == 1 and g.consecutive == 1
    assert g.counts == {"loss_adv": 1}
    assert len(lines) == 1 and "loss_adv" in lines[0] and "step 0" in lines[0]
    assert "grad_norm" not in lines[0] and "loss," not in lines[0]


def test_counter_resets_on_finite_step_and_raise_after_n_in_a_row():
    g, lines = _guard(3)
    nan, ok = torch.tensor(float("nan")), torch.tensor(1.0)
    assert not g.step_ok({"loss": nan, "grad_norm": ok})
    assert not g.step_ok({"loss": nan, "grad_norm": nan})
    assert g.step_ok({"loss": ok, "grad_norm": ok})       # resets the run of bad steps
    assert g.consecutive == 0 and g.skipped == 2
    assert g.counts == {"loss": 2, "grad_norm": 1}
    assert not g.step_ok({"loss": ok, "grad_norm": torch.tensor(float("inf"))})
    assert not g.step_ok({"loss": ok, "grad_norm": nan})
    with pytest.raises(NonFiniteError) as e:
        g.step_ok({"loss": ok, "grad_norm": nan})
    msg = str(e.value)
    assert "grad_norm" in msg and "3 consecutive" in msg
    assert "learning rate" in msg and "NaN" in msg and "AMP" in msg
    assert "loss (" not in msg                             # loss was finite in this run of bad steps
    assert g.skipped == 5 and g.counts == {"loss": 2, "grad_norm": 4}


def test_one_host_sync_on_a_stacked_tensor(monkeypatch):
    """All terms go through one isfinite call (one stacked tensor, one transfer)."""
    calls = []
    real = torch.isfinite

    def spy(t):
        calls.append(tuple(t.shape))
        return real(t)

    monkeypatch.setattr(torch, "isfinite", spy)
    g, _ = _guard()
    g.step_ok({"a": torch.tensor(1.0), "b": torch.tensor([2.0]), "c": torch.tensor(float("nan"))})
    assert calls == [(3,)]


def test_non_scalar_term_is_a_clear_error():
    g, _ = _guard()
    with pytest.raises(ValueError, match="'loss'.*scalar"):
        g.step_ok({"loss": torch.ones(2)})


def test_state_dict_round_trip_is_plain_and_restores_counts():
    g, _ = _guard(5)
    g.step_ok({"loss": torch.tensor(float("nan"))})
    g.step_ok({"loss": torch.tensor(float("nan"))})
    d = g.state_dict()
    h, _ = _guard(5)
    h.load_state_dict(d)
    assert (h.skipped, h.consecutive, h.counts, h.steps) == (2, 2, {"loss": 2}, 2)
    # continues the run of bad steps across a resume
    h.step_ok({"loss": torch.tensor(float("nan"))})
    h.step_ok({"loss": torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteError):
        h.step_ok({"loss": torch.tensor(float("nan"))})


def test_max_consecutive_must_be_positive():
    with pytest.raises(ValueError, match="max_consecutive"):
        NonFiniteGuard(max_consecutive=0)


def test_discriminator_collapsed():
    assert not discriminator_collapsed([1e-4] * 9, epochs=10)           # too few epochs
    assert discriminator_collapsed([0.05] * 3 + [1e-4] * 10, epochs=10)
    assert not discriminator_collapsed([1e-4] * 9 + [0.02], epochs=10)  # last epoch recovered
    assert not discriminator_collapsed([1e-4] * 5 + [float("nan")] + [1e-4] * 4, epochs=10)
    assert discriminator_collapsed([0.01, 0.009], threshold=0.02, epochs=2)
    assert not discriminator_collapsed([], epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        discriminator_collapsed([0.0], epochs=0)
