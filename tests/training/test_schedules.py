"""Learning-rate schedules: Keras' own classes with the seeds' values (checked against the closed-form
formulas the hand-written schedules used), warm-up, plateau factor, config round trip."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from tfmedseg.errors import ConfigError
from tfmedseg.training.schedules import LinearWarmup, ScaledSchedule, cosine_warm_restarts, get_schedule, step_decay

S = keras.optimizers.schedules


def _values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_cosine_restarts_seed_004_is_keras_cosine_decay_restarts():
    s = get_schedule("cosine_restarts", 1e-3, steps_per_epoch=4, min_lr=1e-5, period_epochs=25)
    assert isinstance(s, S.CosineDecayRestarts) and s.first_decay_steps == 100
    steps = [0, 1, 50, 99, 100, 150, 199, 200, 437]
    # SGDR with a constant period: min + (max - min) * (1 + cos(pi * (t mod T) / T)) / 2
    ref = [1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * (t % 100) / 100)) for t in steps]
    np.testing.assert_allclose(_values(s, steps), ref, rtol=1e-5)
    np.testing.assert_allclose(_values(cosine_warm_restarts(1e-3, 1e-5, 100), steps), ref, rtol=1e-5)


def test_step_decay_seed_003_is_keras_staircase_exponential_decay():
    liver = get_schedule("step", 0.05, steps_per_epoch=3, factor=0.95, every_epochs=10)
    assert isinstance(liver, S.ExponentialDecay) and liver.staircase
    np.testing.assert_allclose(_values(liver, [0, 29, 30, 61]), [0.05, 0.05, 0.0475, 0.05 * 0.95**2], rtol=1e-6)
    lesion = step_decay(0.1, 0.5, 5)
    steps = [0, 4, 5, 9, 10, 19 * 5]
    np.testing.assert_allclose(_values(lesion, steps), [0.1 * 0.5 ** (t // 5) for t in steps], rtol=1e-5)


def test_warmup_is_keras_ramp():
    const = get_schedule("constant", 1e-3, steps_per_epoch=2, warmup_epochs=2)
    assert isinstance(const, S.CosineDecay)
    np.testing.assert_allclose(_values(const, [0, 1, 2, 3, 4, 5, 100]), [0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3], rtol=1e-6)
    assert get_schedule("constant", 1e-3, steps_per_epoch=2) == 1e-3
    # our LinearWarmup (in front of schedules Keras cannot warm up) has the same ramp
    np.testing.assert_allclose(_values(LinearWarmup(1e-3, 4), range(8)), _values(const, range(8)), rtol=1e-6)
    s = LinearWarmup(step_decay(0.1, 0.5, 10), warmup_steps=4)
    np.testing.assert_allclose(_values(s, [0, 1, 3, 4, 13, 14]), [0.0, 0.025, 0.075, 0.1, 0.1, 0.05], rtol=1e-6)


def test_cosine_decay_with_keras_warmup():
    s = get_schedule("cosine", 1e-2, steps_per_epoch=10, warmup_epochs=1, decay_epochs=4, alpha=0.1)
    assert isinstance(s, S.CosineDecay) and s.warmup_steps == 10
    steps = [0, 5, 10, 30, 50, 80]
    ref = [0.0, 5e-3] + [1e-2 * ((1 - 0.1) * 0.5 * (1 + math.cos(math.pi * min(t - 10, 40) / 40)) + 0.1) for t in steps[2:]]
    np.testing.assert_allclose(_values(s, steps), ref, rtol=1e-5, atol=1e-9)


def test_scaled_schedule_and_round_trip():
    s = get_schedule("step", 0.1, steps_per_epoch=1, warmup_epochs=2, plateau=True, factor=0.5, every_epochs=1)
    assert isinstance(s, ScaledSchedule)
    s.factor.assign(0.25)
    np.testing.assert_allclose(float(s(3)), 0.25 * 0.05, rtol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert isinstance(clone, ScaledSchedule) and isinstance(clone.base, LinearWarmup)
    np.testing.assert_allclose(_values(clone, range(6)), _values(s, range(6)), rtol=1e-6)
    for name, kw in (("cosine_restarts", {}), ("constant", {}), ("cosine", {"decay_epochs": 3})):
        s = get_schedule(name, 1e-3, steps_per_epoch=2, warmup_epochs=1, plateau=True, **kw)
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
        np.testing.assert_allclose(_values(clone, range(12)), _values(s, range(12)), rtol=1e-6)


def test_schedule_errors():
    with pytest.raises(ConfigError, match="unknown schedule 'linear'"):
        get_schedule("linear", 1e-3, 10)
    with pytest.raises(ConfigError, match="decay_epochs"):
        get_schedule("cosine", 1e-3, 10)
    with pytest.raises(ConfigError, match="unknown argument"):
        get_schedule("step", 1e-3, 10, period_epochs=3)
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        get_schedule("step", 1e-3, 0)
    with pytest.raises(ConfigError, match="min_lr"):
        cosine_warm_restarts(1e-3, 1e-2, 10)
