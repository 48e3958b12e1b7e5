"""GroupedConv2D (per-group convolutions on CPU) equals keras' grouped Conv2D: outputs, gradients, weight files."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.models.blocks.grouped_conv import GroupedConv2D, split_groups_here


@pytest.mark.parametrize("kwargs", [{"groups": 4, "strides": 2}, {"groups": 2, "dilation_rate": 2, "use_bias": True}])
def test_grouped_conv_equals_keras(kwargs, tmp_path):
    assert split_groups_here()  # the CPU path is the one under test
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 9, 9, 8)).astype("float32"))
    ref = keras.layers.Conv2D(12, 3, padding="same", **kwargs)
    ours = GroupedConv2D(12, 3, padding="same", **kwargs)
    ref.build(x.shape)
    ours.build(x.shape)
    ours.set_weights(ref.get_weights())
    assert [w.shape for w in ours.weights] == [w.shape for w in ref.weights]
    grads = []
    for layer in (ref, ours):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        grads.append((y.numpy(), *[g.numpy() for g in tape.gradient(loss, [x, layer.kernel])]))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # weight files of a keras.layers.Conv2D model load into the same model built with GroupedConv2D
    def model(conv):
        inp = keras.Input((9, 9, 8))
        return keras.Model(inp, conv(12, 3, padding="same", name="g", **kwargs)(inp))
    a, b = model(keras.layers.Conv2D), model(GroupedConv2D)
    a.save_weights(tmp_path / "a.weights.h5")
    b.load_weights(tmp_path / "a.weights.h5")
    np.testing.assert_array_equal(a.get_layer("g").kernel.numpy(), b.get_layer("g").kernel.numpy())
    clone = keras.layers.deserialize(keras.layers.serialize(ours))
    assert type(clone) is GroupedConv2D and clone.groups == kwargs["groups"]
