"""Parity checks of a tfmedseg layer against the Keras layer it stands in for (same weights, outputs, gradients)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def with_same_weights(ref, ours, shape, seed: int = 0):
    """Build ``ref`` and ``ours`` for input ``shape`` and give both the same random weights (normal x 0.3)."""
    ref.build(shape)
    ours.build(shape)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=w.shape).astype(np.float32) * 0.3 for w in ref.get_weights()]
    ref.set_weights(weights)
    ours.set_weights(weights)
    return ref, ours


def outputs_and_gradients(layers, x, signature=None):
    """Per layer, ``[y, dL/dx, dL/dw...]`` of ``L = sum(sin(layer(x)))`` in one ``tf.function`` (numpy arrays)."""
    @tf.function(input_signature=signature)
    def run(x):
        out = []
        for layer in layers:
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(tf.sin(y))
            out.append([y, *tape.gradient(loss, [x, *layer.trainable_weights])])
        return out

    return [[t.numpy() for t in group] for group in run(x)]


def assert_close_scaled(got, want, atol: float = 2e-6):
    """Same count and shapes, and every array within ``atol`` of ``want`` relative to ``want``'s largest value."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        scale = max(float(np.abs(w).max()), 1e-6)
        np.testing.assert_allclose(g / scale, w / scale, rtol=0, atol=atol)
