"""Keras metric wrappers for training: pooled (global) Dice over all batches of an epoch.

The host metrics in :mod:`tfmedseg.metrics.overlap` are the evaluation reference; this wrapper gives
the same number during ``fit`` (it accumulates the counts of :func:`compute_overlap_counts` and
returns 2·Σ|P∩Y| / Σ(|P|+|Y|), i.e. :func:`compute_global_dice` over the batches; 1.0 if all empty).
"""

from __future__ import annotations

import keras
from keras import ops

from tfmedseg.errors import ConfigError

__all__ = ["DiceMetric"]


@keras.saving.register_keras_serializable(package="tfmedseg")
class DiceMetric(keras.metrics.Metric):
    """Pooled Dice of one class, accumulated over batches.

    Args:
        class_id: Foreground class. With a multi-channel ``y_pred`` ``[B, ..., C]`` the prediction is
            ``argmax == class_id`` and ``y_true`` is either sparse labels ``[B, ..., 1]`` / ``[B, ...]`` or
            one-hot ``[B, ..., C]``. With a single-channel ``y_pred`` the prediction is
            ``y_pred >= threshold`` and ``y_true`` is binary. Default 1.
        threshold: Probability threshold for single-channel predictions (default 0.5).
        from_logits: Single-channel predictions are logits (threshold applied to the sigmoid).
        name: Metric name (default ``"dice"``).

    Example:
        >>> m = DiceMetric()
        >>> m.update_state(np.array([[[1.0], [0.0]]]), np.array([[[0.9], [0.8]]]))
        >>> float(m.result())  # 2*1 / (1 + 2)
        0.6666...
    """

    def __init__(self, class_id: int = 1, threshold: float = 0.5, from_logits: bool = False,
                 name: str = "dice", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if int(class_id) < 0:
            raise ConfigError(f"must be >= 0, got {class_id}", path="class_id")
        self.class_id = int(class_id)
        self.threshold = float(threshold)
        self.from_logits = bool(from_logits)
        self.intersection = self.add_variable(shape=(), initializer="zeros", name="intersection")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        if y_pred.shape[-1] == 1:
            prob = ops.sigmoid(y_pred) if self.from_logits else y_pred
            pred = ops.cast(prob >= self.threshold, "float32")
            true = ops.cast(ops.reshape(y_true, ops.shape(pred)) > 0.5, "float32")
        else:
            n_classes = y_pred.shape[-1]
            pred = ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), self.class_id), "float32")
            if y_true.shape.rank == y_pred.shape.rank and y_true.shape[-1] == n_classes and n_classes > 1:
                true_lab = ops.argmax(y_true, axis=-1)
            else:
                true_lab = ops.reshape(ops.cast(y_true, "int32"), ops.shape(pred))
            true = ops.cast(ops.equal(ops.cast(true_lab, "int32"), self.class_id), "float32")
        if sample_weight is not None:
            sw = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
            sw = ops.reshape(sw, [-1] + [1] * (len(pred.shape) - 1))
            pred, true = pred * sw, true * sw
        self.intersection.assign_add(ops.sum(pred * true))
        self.total.assign_add(ops.sum(pred) + ops.sum(true))

    def result(self):
        return ops.where(self.total > 0, 2.0 * self.intersection / ops.maximum(self.total, 1e-12), 1.0)

    def reset_state(self):
        self.intersection.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(class_id=self.class_id, threshold=self.threshold, from_logits=self.from_logits)
        return cfg
