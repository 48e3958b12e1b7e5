"""Seed-004 blocks: SE normalisation vs numpy, identity initialisation, RRCNN weight sharing, resampling."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfmedseg.models.blocks.resampling import LinearUpsampling, ReshapeMaxPooling
from tfmedseg.models.blocks.rrcnn import RecurrentConv, apply_rrcnn
from tfmedseg.models.blocks.se_norm import (
    InstanceNormalization,
    SENormalization,
    apply_residual_se_unit,
    make_normalization,
)


def _randomise(layer, rng):
    layer.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])


def _se_norm_numpy(x, weights, axes, eps=1e-5, stats=None):
    g1, gb1, g2, gb2, b1, bb1, b2, bb2 = weights[:8]
    pooled = x.mean(axis=axes)
    gamma = 1 / (1 + np.exp(-(np.maximum(pooled @ g1 + gb1, 0) @ g2 + gb2)))
    beta = np.tanh(np.maximum(pooled @ b1 + bb1, 0) @ b2 + bb2)
    if stats is None:
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    else:
        mean, var = stats
    shape = (x.shape[0],) + (1,) * len(axes) + (x.shape[-1],)
    return gamma.reshape(shape) * (x - mean) / np.sqrt(var + eps) + beta.reshape(shape)


@pytest.mark.parametrize("spatial", [(5, 6, 7), (6, 5)])
def test_se_norm_matches_numpy_reference(spatial):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (2, *spatial, 6)).astype(np.float32)
    layer = SENormalization(reduction=2)
    layer.build(x.shape)
    _randomise(layer, rng)
    assert [w.shape for w in layer.get_weights()][:4] == [(6, 3), (3,), (3, 6), (6,)]
    axes = tuple(range(1, len(spatial) + 1))
    np.testing.assert_allclose(layer(x).numpy(), _se_norm_numpy(x, layer.get_weights(), axes), rtol=1e-4, atol=1e-4)
    # gamma/beta depend on the input: a per-sample shift changes the output (plain IN would not)
    shifted = x + np.array([0.0, 5.0], np.float32).reshape(2, *([1] * (len(spatial) + 1)))
    assert not np.allclose(layer(shifted).numpy()[1], layer(x).numpy()[1], atol=1e-3)


def test_se_norm_batch_base_uses_batch_statistics():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 2.0, (3, 4, 4, 4, 4)).astype(np.float32)
    layer = SENormalization(reduction=2, base="batch")
    layer.build(x.shape)
    weights = layer.get_weights()
    for i in range(8):
        weights[i] = rng.normal(0, 0.5, weights[i].shape).astype(np.float32)
    layer.set_weights(weights)
    axes = (0, 1, 2, 3)
    stats = (x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True))
    expected = _se_norm_numpy(x, layer.get_weights(), (1, 2, 3), stats=stats)
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_se_norm_serialises():
    layer = SENormalization(reduction=4, base="batch", name="sen")
    clone = SENormalization.from_config(layer.get_config())
    assert (clone.reduction, clone.base, clone.name) == (4, "batch", "sen")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(RecurrentConv(3, steps=2, norm="se_instance")))
    assert (restored.filters, restored.steps, restored.norm) == (3, 2, "se_instance")


def test_residual_unit_identity_initialisable():
    rng = np.random.default_rng(2)
    inp = keras.Input((6, 6, 6, 4))
    model = keras.Model(inp, apply_residual_se_unit(inp, 4, norm="instance", convs=2, zero_init=True, name="u"))
    x = rng.normal(size=(2, 6, 6, 6, 4)).astype(np.float32)
    np.testing.assert_array_equal(model(x).numpy(), x)
    model_bn = keras.Model(inp, apply_residual_se_unit(inp, 4, norm="batch", zero_init=True, name="b"))
    np.testing.assert_array_equal(model_bn(x, training=False).numpy(), x)
    with pytest.raises(ValueError, match="affine"):
        make_normalization("se_instance", "n", zero_init=True)


def test_residual_unit_projection_and_kinds():
    inp = keras.Input((4, 4, 4, 2))
    out = apply_residual_se_unit(inp, 6, kernel_size=7, name="p")
    model = keras.Model(inp, out)
    names = {layer.name for layer in model.layers}
    assert {"p_proj_conv", "p_proj_norm", "p_conv1_conv", "p_add"} <= names
    assert model.get_layer("p_conv1_conv").kernel.shape == (7, 7, 7, 2, 6)
    with pytest.raises(ValueError, match="norm must be one of"):
        make_normalization("layer", "n")


def test_instance_normalization_statistics():
    x = np.random.default_rng(3).normal(3.0, 2.0, (2, 5, 5, 5, 3)).astype(np.float32)
    y = InstanceNormalization(affine=False)(x).numpy()
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(1, 2, 3)), 1.0, atol=1e-3)


@pytest.mark.parametrize("steps", [0, 2, 3])
def test_recurrent_conv_applies_the_shared_conv_steps_plus_one_times(steps):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 5, 5, 5, 3)).astype(np.float32)
    layer = RecurrentConv(3, kernel_size=3, steps=steps, norm="instance")
    layer.build(x.shape)
    _randomise(layer, rng)
    calls = []
    original = layer.conv.call

    def counting(inputs, *args, **kwargs):
        calls.append(1)
        return original(inputs, *args, **kwargs)

    layer.conv.call = counting
    y = layer(x).numpy()
    assert len(calls) == steps + 1
    assert len(layer.trainable_weights) == 3  # one kernel (no bias: affine norm) + gamma + beta, shared
    layer.conv.call = original
    f = lambda t: layer.unit(t).numpy()
    expected = f(x)
    for _ in range(steps):
        expected = f(x + expected)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_rrcnn_block_structure_and_identity_init():
    rng = np.random.default_rng(5)
    inp = keras.Input((4, 4, 4, 2))
    model = keras.Model(inp, apply_rrcnn(inp, 5, name="rr"))
    assert sum(isinstance(layer, RecurrentConv) for layer in model.layers) == 2
    k = 27 * 5 * 5
    assert model.count_params() == (2 * 5 + 5) + 2 * (k + 2 * 5)
    zero = keras.Model(inp, apply_rrcnn(inp, 5, zero_init=True, name="rz"))
    x = rng.normal(size=(2, 4, 4, 4, 2)).astype(np.float32)
    proj = zero.get_layer("rz_proj")
    np.testing.assert_allclose(zero(x).numpy(), proj(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 8, 6, 10, 3), (1, 9, 7, 5, 2), (2, 6, 8, 3)])
def test_reshape_max_pooling_equals_keras(shape):
    x = np.random.default_rng(6).normal(size=shape).astype(np.float32)
    keras_pool = keras.layers.MaxPooling3D(2) if len(shape) == 5 else keras.layers.MaxPooling2D(2)
    np.testing.assert_array_equal(ReshapeMaxPooling(2)(x).numpy(), keras_pool(x).numpy())


def test_linear_upsampling_matches_half_pixel_interpolation():
    x = np.random.default_rng(7).normal(size=(2, 3, 4, 5, 2)).astype(np.float32)
    y = LinearUpsampling((2, 4, 8))(x).numpy()
    assert y.shape == (2, 6, 16, 40, 2)
    expected = x
    for axis, factor in zip((1, 2, 3), (2, 4, 8)):
        n = expected.shape[axis]
        src = (np.arange(n * factor) + 0.5) / factor - 0.5  # np.interp clamps at both ends
        expected = np.apply_along_axis(lambda v, s=src, m=n: np.interp(s, np.arange(m), v), axis, expected)
    np.testing.assert_allclose(y, expected, atol=1e-5)
    one = LinearUpsampling(2)(np.array([[[0.0], [4.0]]], np.float32)).numpy()[0, :, 0]
    np.testing.assert_allclose(one, [0.0, 1.0, 3.0, 4.0])
