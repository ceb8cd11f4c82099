"""Schedules at hand-computed steps (Goyal et al. 2017 §2; Codreanu et al. 2017)."""

import math

import keras
import numpy as np
import pytest

from tf_largebatch import schedules

pytestmark = pytest.mark.unit


def lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_linear_and_sqrt_scaling_rules():
    # kn = 8192: 0.1 * 8192 / 256 = 3.2 (the paper's 8k run); sqrt rule: 0.1 * sqrt(32).
    assert schedules.scaled_learning_rate(8192) == pytest.approx(3.2)
    assert schedules.scaled_learning_rate(8192, rule="sqrt") == pytest.approx(0.1 * math.sqrt(32))
    assert schedules.scaled_learning_rate(1024, base_lr=0.2, base_batch=512) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="scaling rule"):
        schedules.scaled_learning_rate(256, rule="cubic")


# k = 256 workers of n = 32, 100 steps per epoch: η̂ = 3.2, η̂/k = 0.0125, warmup = 500 steps.
GOYAL = dict(per_worker_batch=32, workers=256, steps_per_epoch=100)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0125),
        (250, 0.0125 + (3.2 - 0.0125) * 0.5),  # middle of the warmup: 1.60625
        (499, 0.0125 + (3.2 - 0.0125) * 499 / 500),
        (500, 3.2),  # end of warmup, epoch 5
        (2999, 3.2),
        (3000, 0.32),  # epoch 30
        (5999, 0.32),
        (6000, 0.032),  # epoch 60
        (8000, 0.0032),  # epoch 80
        (8999, 0.0032),
    ],
)
def test_gradual_warmup_then_step_decay(step, expected):
    schedule = schedules.goyal_schedule(**GOYAL)
    assert lr(schedule, step) == pytest.approx(expected, rel=1e-5)


def test_constant_warmup_and_no_warmup():
    constant = schedules.goyal_schedule(**GOYAL, warmup="constant")
    assert [lr(constant, t) for t in (0, 250, 499, 500)] == pytest.approx([0.0125] * 3 + [3.2])
    none = schedules.goyal_schedule(**GOYAL, warmup="none")
    assert [lr(none, t) for t in (0, 1, 2999, 3000)] == pytest.approx([3.2, 3.2, 3.2, 0.32])


def test_warmup_start_is_single_worker_rate_under_sqrt_rule():
    s = schedules.goyal_schedule(32, 16, 10, rule="sqrt")
    assert lr(s, 0) == pytest.approx(0.1 * math.sqrt(32 / 256))
    assert lr(s, 50) == pytest.approx(0.1 * math.sqrt(512 / 256))


def test_polynomial_decay():
    s = schedules.WarmupDecay(1.0, 10, total_epochs=10, warmup="none", decay="poly", power=2)
    assert [lr(s, t) for t in (0, 50, 100, 120)] == pytest.approx([1.0, 0.25, 0.0, 0.0])
    # After a 2-epoch warmup the progress runs over the remaining 8 epochs.
    s = schedules.WarmupDecay(
        1.0, 10, total_epochs=10, warmup="gradual", warmup_epochs=2, warmup_start_lr=0.5,
        decay="poly", power=1, end_lr=0.1,
    )
    assert lr(s, 10) == pytest.approx(0.75)
    assert lr(s, 60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr(s, 100) == pytest.approx(0.1)


def test_constant_then_linear_and_cosine():
    s = schedules.WarmupDecay(2.0, 10, 10, warmup="none", decay="linear", decay_start_epoch=6)
    assert [lr(s, t) for t in (0, 60, 80, 100)] == pytest.approx([2.0, 2.0, 1.0, 0.0])
    c = schedules.WarmupDecay(1.0, 10, 4, warmup="none", decay="cosine")
    assert [lr(c, t) for t in (0, 20, 40)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)


def test_schedule_is_a_pure_function_of_the_step_across_serialisation():
    s = schedules.goyal_schedule(**GOYAL, decay="poly", power=2)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    steps = np.arange(0, 9000, 37)
    assert [lr(restored, t) for t in steps] == [lr(s, t) for t in steps]


def test_weight_decay_doubles_for_the_last_fraction():
    s = schedules.WeightDecaySchedule(5e-5, steps_per_epoch=10, total_epochs=100,
                                      final_fraction=0.05)
    assert [lr(s, t) for t in (0, 949, 950, 999)] == pytest.approx([5e-5, 5e-5, 1e-4, 1e-4])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(warmup="linear"), "warmup must be one of"),
        (dict(decay="exp"), "decay must be one of"),
        (dict(warmup_epochs=90), "warmup_epochs"),
        (dict(warmup_start_lr=None, warmup="gradual"), "warmup_start_lr is required"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, message):
    args = dict(peak_lr=1.0, steps_per_epoch=10, warmup_start_lr=0.1) | kwargs
    with pytest.raises(ValueError, match=message):
        schedules.WarmupDecay(**args)
