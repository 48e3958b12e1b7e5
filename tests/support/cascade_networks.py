"""Hand-set seed-002 cascade networks with known outputs, shared by the export and viewer tests.

``tests/support`` is on ``sys.path`` (``[tool.pytest.ini_options] pythonpath``); scripts under ``tests/`` that
also run standalone add it themselves.
"""

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
