"""The matmul-gradient convolution and transposed convolution under the ``mixed_bfloat16`` policy (what
``Trainer(mixed_precision="mixed_bfloat16")`` sets): bfloat16 outputs, float32 variables and gradients, and
outputs / gradients within bfloat16 round-off of Keras' own layers under the same policy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_parity import assert_close_scaled, outputs_and_gradients, with_same_weights

from tfmedseg.models.blocks import matmul_grad_conv
from tfmedseg.models.blocks import matmul_grad_conv_transpose as mct
from tfmedseg.models.blocks.matmul_grad_conv import onednn_fast_path_available

pytestmark = pytest.mark.skipif(not onednn_fast_path_available(), reason="matmul gradients only with oneDNN on a CPU")

#: bfloat16 keeps 8 significant bits (eps 2^-8 = 0.0039): the two sides sum their bfloat16 products in different
#: orders (a kernel gradient is a sum over every output pixel), measured up to 0.015 of the largest value on these
#: shapes (~4 units in the last place): allow 8. Float32 parity of the same layers is 2e-6
#: (tests/models/test_matmul_grad_conv.py).
BF16_ATOL = 8 * 2.0 ** -8
#: Against the float32 computation (outputs, input and kernel gradients; measured up to 0.031): 16 units. The bias
#: gradient is left out there: a bfloat16 sum of many terms of both signs, off by up to 70 % on Keras' own layer too.
FLOAT32_ATOL = 16 * 2.0 ** -8


@pytest.fixture
def traced(monkeypatch):
    """Tiny layers take the matmul gradients (3D transposed too); returns the dtypes the matmul forms were traced with."""
    monkeypatch.setattr(matmul_grad_conv, "MIN_CHANNELS", {2: 1, 3: 1})
    monkeypatch.setattr(matmul_grad_conv, "MAX_OVERHEAD", {2: 1e9, 3: 1e9})
    monkeypatch.setattr(mct, "RANKS", (2, 3))
    dtypes = []
    conv_real, transpose_real = matmul_grad_conv.kernel_grad_as_matmuls, mct._conv_transpose_matmul_grads
    monkeypatch.setattr(matmul_grad_conv, "kernel_grad_as_matmuls",
                        lambda x, dy, *a: dtypes.append(x.dtype.name) or conv_real(x, dy, *a))
    monkeypatch.setattr(mct, "_conv_transpose_matmul_grads", lambda x, k, p: dtypes.append(x.dtype.name) or transpose_real(x, k, p))
    return dtypes


def _check(ref, ours, shape, traced):
    ref, ours = with_same_weights(ref, ours, shape)
    assert ours.compute_dtype == "bfloat16" and all(w.dtype == "float32" for w in ours.weights)
    x = tf.constant(np.random.default_rng(3).normal(size=shape).astype(np.float32))
    want, got = outputs_and_gradients([ref, ours], x)
    assert got[0].dtype == want[0].dtype == tf.bfloat16.as_numpy_dtype  # outputs in bfloat16
    assert all(g.dtype == np.float32 for g in got[1:])  # input and variable gradients in float32
    assert traced == ["bfloat16"]  # the matmul gradient ran, in bfloat16
    np.testing.assert_array_equal(got[0].astype(np.float32), want[0].astype(np.float32))  # forward: Keras' own op
    assert_close_scaled([g.astype(np.float32) for g in got], [w.astype(np.float32) for w in want], atol=BF16_ATOL)
    # and near the float32 computation of the same weights (bfloat16 inputs and products; not the bias gradient)
    ref32 = type(ref).from_config({**ref.get_config(), "dtype": "float32"})
    ref32.build(shape)
    ref32.set_weights(ref.get_weights())
    exact = outputs_and_gradients([ref32], x)[0][:3]
    assert_close_scaled([g.astype(np.float32) for g in got[:3]], exact, atol=FLOAT32_ATOL)


@pytest.mark.parametrize(("rank", "shape"), [(2, (2, 9, 11, 5)), (3, (1, 5, 6, 7, 3))])
def test_matmul_grad_conv_in_bfloat16(rank, shape, mixed_bfloat16, traced):
    keras_cls = keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D
    kwargs = {"filters": 6, "kernel_size": 3, "padding": "same"}
    _check(keras_cls(**kwargs), matmul_grad_conv.conv(rank, **kwargs), shape, traced)


@pytest.mark.parametrize(("rank", "shape"), [(2, (2, 5, 7, 6)), (3, (2, 3, 4, 5, 3))])
def test_matmul_grad_conv_transpose_in_bfloat16(rank, shape, mixed_bfloat16, traced):
    keras_cls = keras.layers.Conv2DTranspose if rank == 2 else keras.layers.Conv3DTranspose
    kwargs = {"filters": 4, "kernel_size": 2, "strides": 2}
    _check(keras_cls(**kwargs), mct.conv_transpose(rank, **kwargs), shape, traced)


def _ones_and_mean_gradient(shape, cout):
    """An all-ones bfloat16 input and the bfloat16 output gradient of a mean (every element 1 / N)."""
    n = int(np.prod(shape[:-1])) * cout
    return tf.ones(shape, tf.bfloat16), tf.fill([*shape[:-1], cout], tf.constant(1.0 / n, tf.bfloat16))


def test_planes_kernel_gradient_sums_bfloat16_in_float32():
    """TensorFlow's CPU Conv2DBackpropFilter sums bfloat16 in bfloat16 (0.32 of the exact sum at 32^3): the planes'
    2D kernel gradients run on float32 casts (kernel_grad_op)."""
    x, dy = _ones_and_mean_gradient((1, 8, 32, 32, 1), 1)
    got = matmul_grad_conv.kernel_grad_by_planes(x, dy, (3, 3, 3))
    want = tf.raw_ops.Conv3DBackpropFilterV2(input=tf.cast(x, tf.float32), filter_sizes=[3, 3, 3, 1, 1],
                                             out_backprop=tf.cast(dy, tf.float32), strides=[1] * 5, padding="SAME")
    assert got.dtype == tf.bfloat16
    np.testing.assert_allclose(got.numpy().astype(np.float32), want.numpy(), rtol=2.0 ** -7)


def test_onednn_conv2d_thin_kernel_gradient_sums_bfloat16_in_float32(mixed_bfloat16):
    """OneDNNConv2D's thin layers (below MIN_CHANNELS: TensorFlow's Conv2DBackpropFilter) under mixed_bfloat16."""
    from tfmedseg.models.blocks.onednn_conv import OneDNNConv2D

    layer = OneDNNConv2D(2, 3, padding="same", use_bias=False)
    layer.build((2, 64, 64, 2))
    x = tf.ones((2, 64, 64, 2))
    with tf.GradientTape() as tape:
        y = tf.reduce_mean(tf.cast(layer(x), tf.float32))
    grad = tape.gradient(y, layer.kernel).numpy()
    # centre tap: every output pixel pairs with an input pixel, d mean / d k = (pixels) / (pixels x 2 channels) = 0.5
    np.testing.assert_allclose(grad[1, 1], np.full((2, 2), 0.5), rtol=2.0 ** -7)
