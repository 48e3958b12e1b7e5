"""Learning-rate schedules: seed values, warm-up, plateau factor, config round trip."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from tfmedseg.errors import ConfigError
from tfmedseg.training.schedules import CosineWarmRestarts, LinearWarmup, ScaledSchedule, StepDecay, get_schedule


def _values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_cosine_restarts_seed_004():
    s = get_schedule("cosine_restarts", 1e-3, steps_per_epoch=4, min_lr=1e-5, period_epochs=25)
    assert isinstance(s, CosineWarmRestarts) and s.period_steps == 100
    got = _values(s, [0, 50, 99, 100, 150])
    ref = [1e-3, (1e-3 + 1e-5) / 2, 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.99)), 1e-3, (1e-3 + 1e-5) / 2]
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_step_decay_seed_003():
    liver = get_schedule("step", 0.05, steps_per_epoch=3, factor=0.95, every_epochs=10)
    np.testing.assert_allclose(_values(liver, [0, 29, 30, 61]), [0.05, 0.05, 0.0475, 0.05 * 0.95**2], rtol=1e-6)
    lesion = StepDecay.from_epochs(0.1, 0.5, 1, steps_per_epoch=5)
    np.testing.assert_allclose(_values(lesion, [4, 5, 19 * 5]), [0.1, 0.05, 0.1 / 2**19], rtol=1e-5)


def test_linear_warmup_then_schedule():
    s = LinearWarmup(StepDecay(0.1, 0.5, 10), warmup_steps=4)
    np.testing.assert_allclose(_values(s, [0, 1, 3, 4, 13, 14]), [0.025, 0.05, 0.1, 0.1, 0.1, 0.05], rtol=1e-6)
    const = get_schedule("constant", 1e-3, steps_per_epoch=2, warmup_epochs=1)
    np.testing.assert_allclose(_values(const, [0, 1, 5]), [5e-4, 1e-3, 1e-3], rtol=1e-6)
    assert get_schedule("constant", 1e-3, steps_per_epoch=2) == 1e-3


def test_scaled_schedule_and_round_trip():
    s = get_schedule("step", 0.1, steps_per_epoch=1, warmup_epochs=2, plateau=True, factor=0.5, every_epochs=1)
    assert isinstance(s, ScaledSchedule)
    s.factor.assign(0.25)
    np.testing.assert_allclose(float(s(3)), 0.25 * 0.05, rtol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert isinstance(clone, ScaledSchedule) and isinstance(clone.base, LinearWarmup)
    np.testing.assert_allclose(_values(clone, range(6)), _values(s, range(6)), rtol=1e-6)


def test_schedule_errors():
    with pytest.raises(ConfigError, match="unknown schedule 'cosine'"):
        get_schedule("cosine", 1e-3, 10)
    with pytest.raises(ConfigError, match="unknown argument"):
        get_schedule("step", 1e-3, 10, period_epochs=3)
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        get_schedule("step", 1e-3, 0)
