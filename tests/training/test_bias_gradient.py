"""Bias and kernel gradients under bfloat16 are summed in float32 (TensorFlow's CPU BiasAddGrad and kernel-gradient
ops sum bfloat16 in bfloat16)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.training import bias_gradient


@pytest.fixture
def installed():
    was = bias_gradient.float32_bias_gradients_installed()
    assert bias_gradient.install_float32_gradient_sums()
    yield
    if not was:
        bias_gradient._uninstall()


def _layer_gradients(make_layer, shape, policy, variable, x):
    """d mean(layer(x)) / d ``variable(layer)``, eager and in a tf.function, under ``policy``."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = make_layer()
        layer.build(shape)

        def grad(x):
            with tf.GradientTape() as tape:
                y = tf.reduce_mean(tf.cast(layer(x), tf.float32))
            return tape.gradient(y, variable(layer))

        return grad(x).numpy(), tf.function(grad)(x).numpy()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _bias_gradients(make_layer, shape, policy):
    """d mean(layer(x)) / d bias for a normal ``x``, eager and in a tf.function, under ``policy``."""
    return _layer_gradients(make_layer, shape, policy, lambda layer: layer.bias,
                            tf.random.stateless_normal(shape, seed=[1, 2]))


LAYERS = [
    ("conv2d 2 x 32^2", lambda: keras.layers.Conv2D(4, 1), (2, 32, 32, 3)),
    ("conv3d 16^3", lambda: keras.layers.Conv3D(4, 3, padding="same"), (1, 16, 16, 16, 2)),
    ("dense 2 x 64^2", lambda: keras.layers.Dense(4), (2, 64, 64, 3)),
]


@pytest.mark.parametrize("name, make_layer, shape", LAYERS, ids=[n for n, _, _ in LAYERS])
def test_bfloat16_bias_gradient_is_the_float32_sum(installed, name, make_layer, shape):
    # d mean / d bias_c = (elements per channel) / (all elements) = 1 / channels, exactly; TensorFlow's
    # bfloat16 running sum stops at 256 times the addend: 256 / 2048 of it here for the 2D conv
    for grad in _bias_gradients(make_layer, shape, "mixed_bfloat16"):
        np.testing.assert_allclose(grad, np.full(4, 0.25), rtol=2**-8)


def test_float32_bias_gradient_is_tensorflows(installed):
    make_layer, shape = LAYERS[0][1:]
    ours = _bias_gradients(make_layer, shape, "float32")
    bias_gradient._uninstall()
    try:
        theirs = _bias_gradients(make_layer, shape, "float32")
    finally:
        bias_gradient.install_float32_bias_gradients()
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_install_is_idempotent_and_reversible():
    was = bias_gradient.float32_bias_gradients_installed()
    try:
        bias_gradient._uninstall()
        assert not bias_gradient.float32_bias_gradients_installed()
        assert bias_gradient.install_float32_bias_gradients()
        assert bias_gradient.install_float32_bias_gradients()  # twice: still ours, TensorFlow's kept once
        assert bias_gradient.float32_bias_gradients_installed()
        bias_gradient._uninstall()
        assert not bias_gradient.float32_bias_gradients_installed()
    finally:
        if was:
            bias_gradient.install_float32_bias_gradients()


def _kernel_gradients(make_layer, shape, policy):
    """d mean(layer(ones)) / d kernel, eager and in a tf.function, under ``policy`` (no bias)."""
    return _layer_gradients(make_layer, shape, policy, lambda layer: layer.weights[0], tf.ones(shape))


#: Keras' layers on each forward op whose kernel gradient is replaced; 1x1 / stride = kernel, so that with an
#: all-ones input every kernel entry's gradient is (output elements per channel) / (all output elements), exactly.
KERNEL_LAYERS = [
    ("Conv2D 1x1, 2 x 64^2", lambda: keras.layers.Conv2D(2, 1, use_bias=False), (2, 64, 64, 2), 0.5),
    ("Conv3D 1x1x1, 32^3", lambda: keras.layers.Conv3D(2, 1, use_bias=False), (1, 32, 32, 32, 2), 0.5),
    ("DepthwiseConv2D 1x1, 2 x 64^2", lambda: keras.layers.DepthwiseConv2D(1, use_bias=False), (2, 64, 64, 4), 0.25),
    ("Conv2DTranspose 2x2 / 2, 2 x 64^2", lambda: keras.layers.Conv2DTranspose(2, 2, strides=2, use_bias=False),
     (2, 64, 64, 2), 0.5 / 4),
    ("Conv3DTranspose 2x2x2 / 2, 32^3", lambda: keras.layers.Conv3DTranspose(2, 2, strides=2, use_bias=False),
     (1, 32, 32, 32, 2), 0.5 / 8),
]


@pytest.mark.parametrize("name, make_layer, shape, exact", KERNEL_LAYERS, ids=[n for n, *_ in KERNEL_LAYERS])
def test_bfloat16_kernel_gradient_is_the_float32_sum(installed, name, make_layer, shape, exact):
    # TensorFlow's bfloat16 kernel-gradient ops stop adding at 256x the addend: e.g. 0.0625 of 0.25 for the depthwise
    for grad in _kernel_gradients(make_layer, shape, "mixed_bfloat16"):
        np.testing.assert_allclose(grad, np.full_like(grad, exact), rtol=2**-7)


def test_float32_kernel_gradient_is_tensorflows(installed):
    make_layer, shape = KERNEL_LAYERS[2][1:3]
    ours = _kernel_gradients(make_layer, shape, "float32")
    bias_gradient._uninstall()
    try:
        theirs = _kernel_gradients(make_layer, shape, "float32")
    finally:
        bias_gradient.install_float32_gradient_sums()
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
