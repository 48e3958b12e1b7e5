"""Detection losses on padded targets: smooth-L1, softmax CE, BCE and SSD's hard-negative mining.

Each loss takes per-element weights (1 for entries that count, 0 for ignored / padding entries)
and returns the weighted mean over the entries that count, ``sum(w * l) / max(sum(w), 1)``, a
scalar ``float32`` per replica. An image batch without positives gives 0 for the positive-only
terms rather than NaN.

Example:
    >>> import numpy as np
    >>> float(smooth_l1(np.array([[0.5, 2.0]]), np.zeros((1, 2)), weights=np.ones(1)))
    1.625
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

__all__ = ["scale_for_replicas", "apply_loss_gradients", "update_loss_trackers", "smooth_l1", "softmax_cross_entropy", "binary_cross_entropy", "weighted_mean", "ssd_hard_negative_loss"]


def weighted_mean(values, weights) -> tf.Tensor:
    """``sum(w * v) / max(sum(w), 1)`` over all entries (``w`` broadcast to ``v``)."""
    values = tf.convert_to_tensor(values, tf.float32)
    weights = tf.broadcast_to(tf.cast(weights, tf.float32), tf.shape(values))
    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def smooth_l1(y_true, y_pred, weights, delta: float = 1.0) -> tf.Tensor:
    """Huber / smooth-L1 summed over the last (coordinate) axis, weighted mean over the rest.

    Args:
        y_true: ``[..., 4]`` encoded target deltas.
        y_pred: ``[..., 4]`` predicted deltas.
        weights: ``[...]`` 1 for positives, 0 otherwise.
        delta: Transition point (Mask R-CNN: 1). ``0.5 x^2 / delta`` below, ``|x| - delta / 2`` above.

    Returns:
        Scalar loss.
    """
    diff = tf.abs(tf.cast(y_true, tf.float32) - tf.cast(y_pred, tf.float32))
    loss = tf.where(diff < delta, 0.5 * diff * diff / delta, diff - 0.5 * delta)
    return weighted_mean(tf.reduce_sum(loss, axis=-1), weights)


def softmax_cross_entropy(labels, logits, weights) -> tf.Tensor:
    """Softmax CE of integer ``labels [...]`` (``0`` = background) against ``logits [..., K]``.

    Labels of ignored entries (``-1``) are clamped to 0 and must carry weight 0.
    """
    labels = tf.maximum(tf.cast(labels, tf.int32), 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))
    return weighted_mean(ce, weights)


def binary_cross_entropy(y_true, y_prob, weights, epsilon: float = 1e-7) -> tf.Tensor:
    """Per-pixel BCE of probabilities ``y_prob`` against targets in ``[0, 1]``.

    Args:
        y_true: ``[B, R, S, S]`` target masks.
        y_prob: ``[B, R, S, S]`` predicted probabilities (after sigmoid).
        weights: ``[B, R]`` 1 for ROIs that count (positives); averaged over their pixels.
    """
    y_true = tf.cast(y_true, tf.float32)
    p = tf.clip_by_value(tf.cast(y_prob, tf.float32), epsilon, 1.0 - epsilon)
    bce = -(y_true * tf.math.log(p) + (1.0 - y_true) * tf.math.log(1.0 - p))
    w = tf.cast(weights, tf.float32)
    w = tf.reshape(w, tf.concat([tf.shape(w), tf.ones([tf.rank(bce) - tf.rank(w)], tf.int32)], 0))
    return weighted_mean(bce, w)


def ssd_hard_negative_loss(labels, logits, neg_pos_ratio: float = 3.0, min_negatives: int = 0) -> tf.Tensor:
    """SSD confidence loss: CE over positives plus the hardest ``neg_pos_ratio x`` negatives.

    Normalised by the number of positives in the batch (SSD, Liu et al. 2016, eq. 1, as in
    ``ssd_keras``).

    Args:
        labels: ``int32 [B, A]`` anchor classes: ``>= 1`` positive class, ``0`` background, ``-1`` ignored.
        logits: ``[B, A, C + 1]``.
        neg_pos_ratio: Negatives kept per positive, per image. Default 3.
        min_negatives: Negatives kept per image even without positives. Default 0.

    Returns:
        Scalar loss.
    """
    labels = tf.cast(labels, tf.int32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0), logits=tf.cast(logits, tf.float32))
    pos = labels > 0
    neg = labels == 0
    n_pos = tf.reduce_sum(tf.cast(pos, tf.int32), axis=-1, keepdims=True)
    n_neg = tf.maximum(tf.cast(tf.cast(n_pos, tf.float32) * neg_pos_ratio, tf.int32), min_negatives)
    neg_ce = tf.where(neg, ce, -1.0)
    order = tf.argsort(neg_ce, axis=-1, direction="DESCENDING")
    rank = tf.argsort(order, axis=-1)
    keep_neg = neg & (rank < n_neg)
    total = tf.reduce_sum(tf.where(pos | keep_neg, ce, 0.0))
    return total / tf.maximum(tf.reduce_sum(tf.cast(n_pos, tf.float32)), 1.0)


def scale_for_replicas(loss) -> tf.Tensor:
    """Divide a per-replica mean loss by the replica count before taking gradients.

    ``MirroredStrategy`` sums the replicas' gradients, so this makes the update the gradient of the
    global-batch mean (what Keras' own ``train_step`` does).
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / float(replicas) if replicas > 1 else loss


def apply_loss_gradients(model, compute_losses: Callable[[], dict]) -> dict:
    """One optimizer step of a detector's ``train_step``: ``compute_losses()`` (a dict with the scalar
    ``"total"``) under a gradient tape, the gradients of the replica-scaled total
    (:func:`scale_for_replicas`) applied to ``model.trainable_variables``. Returns the losses."""
    with tf.GradientTape() as tape:
        losses = compute_losses()
        scaled = scale_for_replicas(losses["total"])
    grads = tape.gradient(scaled, model.trainable_variables)
    model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return losses


def update_loss_trackers(trackers: dict, losses: dict) -> dict:
    """Feed each tracker its loss (the ``"loss"`` tracker gets ``losses["total"]``); returns the
    trackers' results, the logs of a detector's ``train_step`` / ``test_step``."""
    for name, tracker in trackers.items():
        tracker.update_state(losses["total" if name == "loss" else name])
    return {name: tracker.result() for name, tracker in trackers.items()}
