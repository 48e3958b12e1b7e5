"""Seconds per training iteration and per prediction batch, measured on the iterations only.

Seed 002 (Tables 4.4/4.5, L1087) reports time per output slice as ``t / b`` (2D) and ``t / (b z)``
(3D, ``z`` output slices per sample) where ``t`` is the time of one training iteration or one
prediction batch of ``b`` samples. ``fit`` wall time would add validation, callbacks, checkpoints
and the first step's tracing; these helpers time the steps alone:

* :class:`IterationTimer`, a Keras callback, times each ``train_step`` batch (``on_train_batch_begin``
  -> ``on_train_batch_end``, the batch's loss fetched so the step has finished) and skips the first
  step of every ``fit`` call (tracing and compilation). Statistics of all runs of a stage (a resumed
  run adds to them) are kept in ``iteration_seconds.json``.
* :func:`time_batches` times a predictor on batches the same way (first call skipped).

Both give :class:`TimeStats` (count, mean, standard deviation in seconds).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import keras

__all__ = ["TimeStats", "IterationTimer", "read_iteration_stats", "time_batches", "ITERATION_FILE"]

_log = logging.getLogger(__name__)

#: Per-stage file of the accumulated training-iteration statistics.
ITERATION_FILE = "iteration_seconds.json"


@dataclasses.dataclass
class TimeStats:
    """Running count, mean and sum of squared deviations (Welford) of durations in seconds."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        delta = seconds - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (seconds - self.mean)

    def merge(self, other: "TimeStats") -> "TimeStats":
        """The statistics of both samples together (Chan et al.)."""
        n = self.count + other.count
        if not n:
            return TimeStats()
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        return TimeStats(n, mean, self.m2 + other.m2 + delta * delta * self.count * other.count / n)

    @property
    def std(self) -> float:
        """Sample standard deviation (0 for fewer than 2 values)."""
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0

    def per_unit(self, units: float) -> dict[str, float]:
        """``{"mean", "std", "count"}`` of the duration divided by ``units`` (seconds per unit)."""
        return {"mean": self.mean / units if self.count else math.nan,
                "std": self.std / units if self.count else math.nan, "count": float(self.count)}

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TimeStats":
        return cls(int(data["count"]), float(data["mean"]), float(data["m2"]))


def _wait(logs) -> None:
    """Block until the step's outputs exist (asynchronous devices return before they finish)."""
    for value in (logs or {}).values():
        if hasattr(value, "numpy"):
            value.numpy()
            return


class IterationTimer(keras.callbacks.Callback):
    """Times each training step (batch), excluding the first step of each ``fit`` call.

    Args:
        path: Optional JSON file (``iteration_seconds.json``) the statistics are added to at the end
            of training, so a resumed stage reports all its runs' steps.
        skip_first: Steps of each ``fit`` call not timed (tracing / compilation).

    Attributes:
        stats: This ``fit`` call's :class:`TimeStats`.
    """

    def __init__(self, path=None, skip_first: int = 1):
        super().__init__()
        self.path = Path(path) if path is not None else None
        self.skip_first = int(skip_first)
        self.stats = TimeStats()
        self._earlier = TimeStats()
        self._seen = 0
        self._start = None

    def on_train_begin(self, logs=None):
        self.stats, self._seen = TimeStats(), 0
        self._earlier = read_iteration_stats(self.path) if self.path is not None else TimeStats()

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._start is None:
            return
        _wait(logs)
        seconds = time.perf_counter() - self._start
        self._start = None
        self._seen += 1
        if self._seen > self.skip_first:
            self.stats.add(seconds)

    def on_train_end(self, logs=None):
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.total().to_json()))

    def total(self) -> TimeStats:
        """This call's statistics merged with those of the earlier runs saved at ``path``."""
        return self._earlier.merge(self.stats)


def read_iteration_stats(path) -> TimeStats:
    """The :class:`TimeStats` saved by :class:`IterationTimer` at ``path`` (empty when absent or damaged)."""
    path = Path(path)
    if not path.is_file():
        return TimeStats()
    try:
        return TimeStats.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        _log.warning("%s is damaged: iteration times restart", path)
        return TimeStats()


def time_batches(predict: Callable[[Any], Any], batches: Iterable, *, skip_first: int = 1) -> TimeStats:
    """Seconds of ``predict(x)`` per batch (the output converted to numpy, so the call has finished).

    Args:
        predict: Batch predictor (a model or ``tf.function``).
        batches: ``x`` or ``(x, y)`` batches; the first ``skip_first`` calls are not timed.
    """
    stats = TimeStats()
    for i, batch in enumerate(batches):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        start = time.perf_counter()
        out = predict(x)
        _ = out.numpy() if hasattr(out, "numpy") else keras.ops.convert_to_numpy(out)
        if i >= skip_first:
            stats.add(time.perf_counter() - start)
    return stats
