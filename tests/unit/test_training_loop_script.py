"""nnunetv2_advmim.benchmark.training_loop: how it reads a training's output (pure functions, no training)."""
import pytest

from nnunetv2_advmim.benchmark import training_loop


@pytest.fixture(scope="module")
def loop():
    return training_loop


def test_phases_recompiles_and_ratios_from_a_training_log(loop):
    lines = [
        "2026-12-01 08:00:00: Epoch 0",
        "V1201 [0/0] torch/_dynamo: Recompiling function forward: tensor 'x' size mismatch",  # epoch 0: expected
        "2026-12-01 08:01:00: LOOPCHECK epoch 0 train phase 90.0000 s, 50 iterations, step mode memory",
        "2026-12-01 08:01:05: Epoch 1",
        "2026-12-01 08:01:30: LOOPCHECK epoch 1 train phase 10.0000 s, 50 iterations, step mode memory",
        "V1201 [0/1] torch/_dynamo: Recompiling function forward: deep supervision changed",  # after epoch 0
        "2026-12-01 08:01:40: Epoch 10",
        "2026-12-01 08:02:00: LOOPCHECK epoch 2 train phase 12.0000 s, 50 iterations, step mode memory",
    ]
    phases, mode, recompiles = loop.analyse_training(lines)
    assert phases == {0: (90.0, 50), 1: (10.0, 50), 2: (12.0, 50)} and mode == "memory"
    assert recompiles == [lines[5]]
    out = loop.summarise(phases, recompiles, 0.2)
    assert out["compile_overhead_s"] == pytest.approx(90.0 - 11.0)
    assert out["loop_step_s"] == pytest.approx(0.22)  # median of 10/50 and 12/50
    assert out["loop_vs_benchmark"] == pytest.approx(1.1)
    assert out["recompiles_after_epoch_0"] == 1


def test_trainer_source_is_valid_python(loop):
    source = loop.TRAINER_SOURCE.format(name=loop.TRAINER, epochs=3, iterations=5, val_iterations=1,
                                        epochs_env=loop.EPOCHS_ENV)
    compile(source, "loopcheck.py", "exec")
    assert "self.num_iterations_per_epoch = 5" in source
