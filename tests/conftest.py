"""Shared test set-up: oneDNN on, TF quiet, two logical CPU devices for tf.distribute tests.

The logical devices must be configured before TensorFlow initialises its devices, so this
happens at collection time, before any test module runs an op.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # devices already initialised (e.g. a plugin ran an op first)
    pass


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator, fresh per test."""
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def two_cpu_strategy() -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over the two logical CPU devices."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    if len(devices) < 2:
        pytest.fail("two logical CPU devices were not configured before TensorFlow initialised")
    return tf.distribute.MirroredStrategy(devices)


@pytest.fixture(autouse=True)
def _reset_command_line_logging():
    """A test that runs a command line's ``main`` configures logging (console handler, levels);
    undo it so that later tests see the library's default (unconfigured) logging."""
    yield
    from tfmedseg.logs import reset_logging

    reset_logging()
