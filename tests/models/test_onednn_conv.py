"""OneDNNConv2D: same outputs and gradients as keras.layers.Conv2D, in and out of its fast path."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_parity import with_same_weights

from tfmedseg.models.blocks.onednn_conv import OneDNNConv2D, onednn_fast_path_available


def _pair(kw, shape):
    return with_same_weights(keras.layers.Conv2D(**kw), OneDNNConv2D(**kw), shape)


@pytest.mark.parametrize(
    "kw",
    [
        {"filters": 6, "kernel_size": 3, "padding": "same", "activation": "relu"},
        {"filters": 5, "kernel_size": (5, 3), "padding": "same"},
        {"filters": 4, "kernel_size": 3, "padding": "same", "strides": 2},  # falls back to Conv2D
        {"filters": 4, "kernel_size": 3, "padding": "valid"},  # falls back to Conv2D
    ],
)
@pytest.mark.parametrize("batch", [1, 2])
def test_matches_conv2d_in_graph(kw, batch):
    shape = (batch, 9, 11, 3)
    x = tf.constant(np.random.default_rng(1).normal(size=shape).astype(np.float32))
    ref, ours = _pair(kw, shape)

    @tf.function
    def run(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y_ref, y_ours = ref(x), ours(x)
            l_ref, l_ours = tf.reduce_sum(tf.sin(y_ref)), tf.reduce_sum(tf.sin(y_ours))
        return y_ref, y_ours, tape.gradient(l_ref, [x, *ref.trainable_weights]), tape.gradient(
            l_ours, [x, *ours.trainable_weights]
        )

    y_ref, y_ours, g_ref, g_ours = run(x)
    assert y_ours.shape == y_ref.shape
    np.testing.assert_allclose(y_ours.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(g_ref, g_ours):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-4)


def test_fast_path_taken_on_onednn_cpu():
    layer = OneDNNConv2D(4, 3, padding="same")
    layer.build((1, 8, 8, 2))
    assert layer._fast_path() == onednn_fast_path_available()
    assert not OneDNNConv2D(4, 1, padding="same")._fast_path()  # 1x1: plain Conv2D


def test_serializes():
    layer = OneDNNConv2D(4, 3, padding="same", name="c")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is OneDNNConv2D and clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    ("cin", "filters", "im2col_bytes"),
    [
        (64, 64, 64 << 20),  # matmul kernel gradient, one column chunk
        (64, 64, 200_000),  # several column chunks (each <= 200 kB)
        (64, 64, 0),  # one matmul per tap
        (3, 64, 64 << 20),  # thin input: Conv2DBackpropFilter
    ],
)
def test_kernel_gradient_matches_conv2d(cin, filters, im2col_bytes, monkeypatch):
    """The matmul kernel gradient (min(Cin, Cout) >= MIN_CHANNELS[2]) and the Conv2DBackpropFilter one equal Conv2D's."""
    from tfmedseg.models.blocks import matmul_grad_conv

    monkeypatch.setattr(matmul_grad_conv, "im2col_bytes", lambda rank, cin, cout: im2col_bytes)
    calls = []
    real = matmul_grad_conv.kernel_grad_as_matmuls
    monkeypatch.setattr(matmul_grad_conv, "kernel_grad_as_matmuls", lambda *a: calls.append(a[-1]) or real(*a))
    shape = (2, 12, 12, cin)
    x = tf.constant(np.random.default_rng(2).normal(size=shape).astype(np.float32))
    ref, ours = _pair({"filters": filters, "kernel_size": 3, "padding": "same"}, shape)

    @tf.function
    def grads(x):
        out = []
        for layer in (ref, ours):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.sin(layer(x)))
            out.append(tape.gradient(loss, layer.kernel))
        return out

    g_ref, g_ours = (g.numpy() for g in grads(x))
    scale = np.abs(g_ref).max()
    np.testing.assert_allclose(g_ours / scale, g_ref / scale, rtol=0, atol=1e-5)
    taken = onednn_fast_path_available() and min(cin, filters) >= matmul_grad_conv.MIN_CHANNELS[2]
    assert calls == ([im2col_bytes] if taken else [])
