"""MatmulGradConv2DTranspose/3DTranspose: Keras' transposed convolution with matmul gradients; same results."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_parity import assert_close_scaled, outputs_and_gradients, with_same_weights

from tfmedseg.models.blocks import matmul_grad_conv_transpose as mct
from tfmedseg.models.blocks.matmul_grad_conv import onednn_fast_path_available
from tfmedseg.models.blocks.matmul_grad_conv_transpose import (
    MatmulGradConv2DTranspose,
    MatmulGradConv3DTranspose,
    conv_transpose,
    uses_matmul_grad,
)

needs_onednn = pytest.mark.skipif(not onednn_fast_path_available(), reason="matmul gradients only with oneDNN on a CPU")


@pytest.fixture
def record_calls(monkeypatch):
    """3D too (off by default: RANKS); returns the list of (input, kernel shape) per matmul-gradient layer traced."""
    monkeypatch.setattr(mct, "RANKS", (2, 3))
    calls = []
    real = mct._conv_transpose_matmul_grads
    monkeypatch.setattr(mct, "_conv_transpose_matmul_grads",
                        lambda x, k, p: calls.append((tuple(x.shape), tuple(k.shape))) or real(x, k, p))
    return calls


def _pair(rank: int, shape, **kwargs):
    return with_same_weights((keras.layers.Conv2DTranspose if rank == 2 else keras.layers.Conv3DTranspose)(**kwargs), conv_transpose(rank, **kwargs), shape)


@needs_onednn
@pytest.mark.parametrize(
    ("rank", "shape", "kwargs"),
    [
        (2, (2, 5, 7, 6), {"filters": 4, "kernel_size": 2, "strides": 2}),
        (2, (1, 4, 3, 3), {"filters": 5, "kernel_size": (2, 3), "strides": (2, 3), "padding": "same",
                           "activation": "relu"}),
        (2, (2, 3, 3, 4), {"filters": 3, "kernel_size": 3, "strides": 3, "use_bias": False}),
        (3, (2, 3, 4, 5, 3), {"filters": 4, "kernel_size": 2, "strides": 2}),
        (3, (1, 2, 3, 2, 2), {"filters": 3, "kernel_size": (1, 2, 3), "strides": (1, 2, 3), "padding": "same"}),
    ],
)
def test_matches_keras_with_gradients(rank, shape, kwargs, record_calls):
    ref, ours = _pair(rank, shape, **kwargs)
    x = tf.constant(np.random.default_rng(1).normal(size=shape).astype(np.float32))
    want, got = outputs_and_gradients([ref, ours], x)
    assert_close_scaled(got, want)
    np.testing.assert_array_equal(got[0], want[0])  # the forward is TensorFlow's own op
    assert len(record_calls) == 1


@needs_onednn
@pytest.mark.parametrize("rank", [2, 3])
def test_unknown_batch_and_spatial_sizes(rank, record_calls):
    shape = (2,) + (3,) * rank + (3,)
    ref, ours = _pair(rank, shape, filters=2, kernel_size=2, strides=2)
    x = tf.constant(np.random.default_rng(2).normal(size=shape).astype(np.float32))
    signature = [tf.TensorSpec((None,) * (rank + 1) + (3,), tf.float32)]
    want, got = outputs_and_gradients([ref, ours], x, signature)
    assert_close_scaled(got, want)
    assert len(record_calls) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 3, "strides": 2, "padding": "same"},  # overlapping cells (seed-004 upconvs)
        {"kernel_size": 2, "strides": 1},
        {"kernel_size": 2, "strides": 2, "output_padding": 1},
        {"kernel_size": 2, "strides": 2, "data_format": "channels_first"},
    ],
)
def test_other_transposed_convolutions_are_keras_own(kwargs, record_calls):
    layer = conv_transpose(2, 3, **kwargs)
    shape = (1, 2, 4, 4) if kwargs.get("data_format") == "channels_first" else (1, 4, 4, 2)
    layer.build(shape)
    assert not uses_matmul_grad(layer)
    if kwargs.get("data_format") != "channels_first":  # the CPU has no channels-first transposed conv
        layer(tf.zeros(shape))
    assert record_calls == []


def test_three_dimensional_layers_keep_keras_gradients_by_default():
    layer = conv_transpose(3, 4, 2, strides=2)
    layer.build((1, 2, 2, 2, 3))
    assert not uses_matmul_grad(layer)
    assert uses_matmul_grad(conv_transpose(2, 4, 2, strides=2)) == onednn_fast_path_available()


def test_factory_and_serialization():
    assert type(conv_transpose(2, 4, 2, strides=2)) is MatmulGradConv2DTranspose
    assert type(conv_transpose(3, 4, 2, strides=2)) is MatmulGradConv3DTranspose
    assert type(conv_transpose(2, 4, 2, strides=2, matmul_grad=False)) is keras.layers.Conv2DTranspose
    with pytest.raises(ValueError, match="rank"):
        conv_transpose(1, 4, 2)
    layer = conv_transpose(3, 4, 2, strides=2, name="up")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is MatmulGradConv3DTranspose and clone.get_config() == layer.get_config()
    assert keras.layers.serialize(layer)["registered_name"] == "tfmedseg>MatmulGradConv3DTranspose"


def test_weight_files_interchange_with_keras_layers(tmp_path):
    """Weight files address layers by snake-cased class name: ours must read Keras' files and back."""

    def model(matmul_grad):
        x = keras.Input((4, 4, 2))
        return keras.Model(x, conv_transpose(2, 3, 2, strides=2, matmul_grad=matmul_grad)(x))

    keras.utils.set_random_seed(0)
    plain, ours = model(False), model(True)
    plain.save_weights(tmp_path / "plain.weights.h5")
    ours.load_weights(tmp_path / "plain.weights.h5")
    for a, b in zip(plain.get_weights(), ours.get_weights()):
        np.testing.assert_array_equal(a, b)
    path = tmp_path / "ours.keras"
    ours.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[1]) is MatmulGradConv2DTranspose
    data = np.random.default_rng(5).normal(size=(2, 4, 4, 2)).astype(np.float32)
    np.testing.assert_allclose(loaded(data).numpy(), plain(data).numpy(), rtol=1e-6, atol=1e-6)


def test_tflite_conversion_gives_the_same_output():
    x = keras.Input((4, 4, 3))
    model = keras.Model(x, conv_transpose(2, 4, 2, strides=2, activation="relu")(x))
    data = np.random.default_rng(6).normal(size=(1, 4, 4, 3)).astype(np.float32)
    interpreter = tf.lite.Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert())
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], data)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model(data).numpy(), rtol=1e-4, atol=1e-4)
