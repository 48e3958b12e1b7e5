"""Fixtures shared by the model tests."""

from __future__ import annotations

import keras
import pytest


@pytest.fixture
def mixed_bfloat16():
    """Keras' global dtype policy ``mixed_bfloat16`` (what ``Trainer(mixed_precision="mixed_bfloat16")`` sets while it
    builds) for one test; the previous policy afterwards."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy(before)
