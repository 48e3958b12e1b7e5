"""The hand-set seed-002 cascade networks the viewer tests export (shared by conftest.py and browser_check.py)."""

from __future__ import annotations

import numpy as np


def threshold_network(threshold: float, sharpness: float = 40.0):
    """3-slice 2.5D 'network': foreground where the middle slice's unit intensity exceeds ``threshold``."""
    import keras

    inp = keras.Input((None, None, 3), name="image")
    conv = keras.layers.Conv2D(2, 1, activation="softmax", name="probabilities")
    out = conv(inp)
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[0, 0, 1] = [-sharpness, sharpness]
    conv.set_weights([kernel, np.array([sharpness * threshold, -sharpness * threshold], np.float32)])
    return keras.Model(inp, out)
