"""EMA teacher with AnatoMask's decay schedule (nnunetv2_advmim.methods.ema)."""
import pytest
import torch
from torch import nn

from nnunetv2_advmim.methods.ema import EMATeacher, ema_decay
from nnunetv2_advmim.wrappers import unwrap_model


def test_decay_schedule_endpoints_and_linear_ramp():
    total = 100  # ramp over the first quarter = 25 updates
    assert ema_decay(0, total) == pytest.approx(0.999)
    assert ema_decay(25, total) == pytest.approx(0.9999)
    assert ema_decay(12.5, total) == pytest.approx(0.99945)
    assert ema_decay(10, total) == pytest.approx(0.999 + 0.0009 * 10 / 25)
    assert ema_decay(99, total) == pytest.approx(0.9999)
    assert ema_decay(10_000, total) == pytest.approx(0.9999)
    values = [ema_decay(s, total) for s in range(40)]
    assert values == sorted(values)


def _linear(w):
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(w)
    return m


def test_update_hand_values_and_step_counter():
    student = _linear(0.0)
    ema = EMATeacher(student, total_steps=100)
    with torch.no_grad():
        student.weight.fill_(1.0)
    d0 = ema.update(student)
    assert d0 == pytest.approx(0.999)
    assert ema.teacher.weight.item() == pytest.approx(0.001)
    d1 = ema.update(student)
    assert d1 == pytest.approx(0.999 + 0.0009 / 25)
    assert ema.teacher.weight.item() == pytest.approx(d1 * 0.001 + (1 - d1) * 1.0)
    assert ema.step == 2
    # the student is untouched, the teacher is a separate frozen copy in eval mode
    assert student.weight.item() == 1.0
    assert not any(p.requires_grad for p in ema.teacher.parameters())
    assert not ema.teacher.training
    assert ema(torch.ones(1, 1)).item() == pytest.approx(ema.teacher.weight.item())


def test_buffers_are_copied_from_the_student():
    student = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMATeacher(student, total_steps=10)
    student.train()
    student(torch.randn(8, 2) * 3 + 5)  # changes BN running stats
    ema.update(student)
    assert torch.equal(ema.teacher[1].running_mean, student[1].running_mean)


def test_state_dict_round_trip_resumes_the_schedule():
    torch.manual_seed(0)
    student = nn.Linear(3, 2)
    ema = EMATeacher(student, total_steps=40)
    for _ in range(7):
        with torch.no_grad():
            student.weight.add_(0.1)
        ema.update(student)
    state = ema.state_dict()
    other = EMATeacher(nn.Linear(3, 2), total_steps=40)
    other.load_state_dict(state)
    assert other.step == 7 and other.decay == pytest.approx(ema.decay)
    for a, b in zip(other.teacher.parameters(), ema.teacher.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(KeyError, match="EMATeacher.state_dict"):
        other.load_state_dict({"weights": {}})


def test_wrapped_students_are_unwrapped():
    inner = _linear(2.0)
    wrapped = nn.DataParallel(inner)
    assert unwrap_model(wrapped) is inner
    ema = EMATeacher(wrapped, total_steps=4)
    assert isinstance(ema.teacher, nn.Linear)
    ema.update(wrapped)
    assert ema.teacher.weight.item() == pytest.approx(2.0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="total_steps"):
        EMATeacher(_linear(0.0), total_steps=0)
    with pytest.raises(ValueError, match="decays"):
        EMATeacher(_linear(0.0), total_steps=5, decay_end=1.5)
