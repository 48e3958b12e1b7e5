"""Validation metrics computed by a function at the end of an epoch, logged like Keras' own.

Some validation numbers are not Keras metrics: a detector's F1 or Jaccard needs decoding, NMS and
matching over whole images. :class:`EpochMetrics` calls ``fn(model) -> {name: value}`` every
``every`` epochs and adds the values to the epoch's ``logs`` as ``val_<name>``, so
``keras.callbacks.TensorBoard`` writes them to ``logs/validation`` as ``epoch_<name>`` (next to
``epoch_loss``), and the CSV logger, the epoch log line, early stopping and checkpoints see them.
Put it before those callbacks (the trainer does).
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Mapping

import keras

__all__ = ["EpochMetrics"]

_log = logging.getLogger(__name__)


class EpochMetrics(keras.callbacks.Callback):
    """Add ``val_<name>`` values from ``fn(model)`` to the epoch logs.

    Args:
        fn: ``model -> {name: float}``, e.g. ``{"chest_jaccard": 0.91}`` or ``{"lesion_f1": 0.4}``.
        every: Period in epochs (the last epoch of ``fit`` is always evaluated).
        prefix: Put before each name (default ``"val_"``).
    """

    def __init__(self, fn: Callable[[keras.Model], Mapping[str, float]], every: int = 1, prefix: str = "val_") -> None:
        super().__init__()
        self.fn = fn
        self.every = max(1, int(every))
        self.prefix = prefix

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every and (last is None or epoch + 1 != last):
            return
        values = self.fn(self.model)
        if logs is None:
            return
        for name, value in values.items():
            value = float(value)
            if math.isnan(value):
                _log.debug("epoch %d: %s%s is NaN (nothing to measure)", epoch + 1, self.prefix, name)
            logs[f"{self.prefix}{name}"] = value
