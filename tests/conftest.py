"""Shared test set-up: oneDNN on, TF quiet, two logical CPU devices for tf.distribute tests.

The logical devices must be configured before TensorFlow initialises its devices, so this
happens at collection time, before any test module runs an op.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable

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


def _stop_when_ready(argv: list[str], ready: Callable[[], bool], stop: str, *, env: dict[str, str],
                     cwd=None, timeout: float = 60, sigint_ignored: bool = False) -> tuple[int, str]:
    """Start ``python -m <argv>`` (Ctrl-C given back: a test run started in the background inherits
    SIGINT ignored; ``sigint_ignored=True`` starts it as a shell's background job, SIGINT ignored), wait
    until ``ready()`` (at most ``timeout`` s, failing if the process ends first), send it the signal
    named ``stop`` and return its exit code and stderr."""
    sigint = signal.SIG_IGN if sigint_ignored else signal.SIG_DFL
    proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"ended (exit {proc.returncode}) before it was ready: {proc.communicate()[1][-2000:]}")
            if time.monotonic() >= deadline:
                pytest.fail(f"not ready within {timeout} s")
            time.sleep(0.02)
        proc.send_signal(getattr(signal, stop))
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.fixture
def stop_when_ready() -> Callable[..., tuple[int, str]]:
    """:func:`_stop_when_ready`: run a command line and stop it with a real signal once it is ready."""
    return _stop_when_ready
