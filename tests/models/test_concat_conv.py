"""ConcatConv2D/3D: the convolution of a channel concatenation, computed without it."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.models.blocks.concat_conv import ConcatConv2D, ConcatConv3D, concat_conv
from tfmedseg.models.flops import model_complexity


def _pair(rank: int, channels=(3, 5), filters: int = 4, **kwargs):
    """Two models with the same kernel: Concatenate + Conv (Keras) and ConcatConv."""
    spatial = (6,) * rank
    inputs = [keras.Input(spatial + (c,)) for c in channels]
    conv = (keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D)(filters, 3, padding="same", **kwargs)
    reference = keras.Model(inputs, conv(keras.layers.Concatenate()(inputs)))
    ours = keras.Model(inputs, concat_conv(rank, filters, 3, padding="same", **kwargs)(inputs))
    ours.set_weights(reference.get_weights())
    rng = np.random.default_rng(rank)
    data = [rng.normal(size=(2,) + spatial + (c,)).astype("float32") for c in channels]
    return reference, ours, data


def _outputs_and_gradients(model, data):
    xs = [tf.constant(d) for d in data]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = model(xs)
        loss = tf.reduce_sum(y * tf.cos(y))
    grads = tape.gradient(loss, xs + model.trainable_weights)
    return [y.numpy()] + [g.numpy() for g in grads]


@pytest.mark.parametrize("rank, kwargs", [(2, {"use_bias": False}), (2, {"activation": "relu"}), (3, {})])
def test_equals_concatenate_then_conv_with_gradients(rank, kwargs):
    reference, ours, data = _pair(rank, **kwargs)
    assert ours.count_params() == reference.count_params()
    for got, want in zip(_outputs_and_gradients(ours, data), _outputs_and_gradients(reference, data)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())  # float32 sums reordered


def test_three_inputs_and_complexity_equal_to_the_concatenation():
    reference, ours, data = _pair(2, channels=(2, 3, 4))
    np.testing.assert_allclose(ours(data).numpy(), reference(data).numpy(), rtol=1e-5, atol=1e-5)
    assert model_complexity(ours).macs == model_complexity(reference).macs
    assert model_complexity(ours).params == model_complexity(reference).params


def test_config_and_keras_file_round_trip(tmp_path):
    _, ours, data = _pair(3)
    layer = ours.layers[-1]
    assert isinstance(layer, ConcatConv3D) and isinstance(layer, keras.layers.Conv3D)
    clone = ConcatConv3D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    path = tmp_path / "m.keras"
    ours.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[-1], ConcatConv3D)
    np.testing.assert_allclose(loaded(data).numpy(), ours(data).numpy(), rtol=1e-6, atol=1e-6)


def test_tflite_conversion_gives_the_same_output():
    _, ours, data = _pair(2)
    converter = tf.lite.TFLiteConverter.from_keras_model(ours)
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    for detail in interpreter.get_input_details():
        interpreter.resize_tensor_input(detail["index"], [2, *detail["shape"][1:]])
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        match = next(d for d in data if tuple(detail["shape"][1:]) == d.shape[1:])
        interpreter.set_tensor(detail["index"], match)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, ours(data).numpy(), rtol=1e-4, atol=1e-4)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="list of >= 2"):
        ConcatConv2D(4, 3)(keras.Input((6, 6, 3)))
    with pytest.raises(ValueError, match="channels_last"):
        ConcatConv2D(4, 3, data_format="channels_first")([keras.Input((3, 6, 6)), keras.Input((3, 6, 6))])
    with pytest.raises(ValueError, match="rank"):
        concat_conv(1, 4, 3)
