"""MatmulGradConv2D/3D: Keras' convolution with the kernel gradient as matmuls; same outputs and gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_parity import assert_close_scaled, outputs_and_gradients, with_same_weights

from tfmedseg.models.blocks import matmul_grad_conv
from tfmedseg.models.blocks.concat_conv import concat_conv
from tfmedseg.models.blocks.matmul_grad_conv import (
    MatmulGradConv2D,
    MatmulGradConv3D,
    conv,
    kernel_grad_as_matmuls,
    kernel_grad_by_planes,
    kernel_grad_form,
    matmul_overhead,
    onednn_fast_path_available,
    uses_matmul_grad,
)

needs_onednn = pytest.mark.skipif(not onednn_fast_path_available(), reason="matmul gradient only with oneDNN on a CPU")


@pytest.fixture
def record_calls(monkeypatch):
    """Thin tiny layers take the matmul path; returns the list of ``im2col_bytes`` per matmul gradient traced."""
    monkeypatch.setattr(matmul_grad_conv, "MIN_CHANNELS", {2: 1, 3: 1})
    monkeypatch.setattr(matmul_grad_conv, "MAX_OVERHEAD", {2: 1e9, 3: 1e9})
    calls = []
    real = matmul_grad_conv.kernel_grad_as_matmuls
    monkeypatch.setattr(matmul_grad_conv, "kernel_grad_as_matmuls", lambda *a: calls.append(a[-1]) or real(*a))
    return calls


def _pair(rank: int, shape, **kwargs):
    return with_same_weights((keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D)(**kwargs), conv(rank, **kwargs), shape)


@needs_onednn
@pytest.mark.parametrize(
    ("rank", "shape", "kwargs", "im2col_bytes"),
    [
        (2, (2, 9, 11, 5), {"filters": 6, "kernel_size": 3, "activation": "relu"}, 0),  # one matmul per tap
        (2, (2, 9, 11, 5), {"filters": 6, "kernel_size": 3, "use_bias": False}, 64 << 20),  # one column chunk
        (2, (2, 9, 11, 5), {"filters": 6, "kernel_size": 3}, 4096),  # several column chunks
        (2, (1, 8, 7, 4), {"filters": 3, "kernel_size": (5, 3)}, 1000),
        (3, (2, 5, 6, 7, 3), {"filters": 4, "kernel_size": 3}, 0),
        (3, (1, 6, 5, 4, 2), {"filters": 5, "kernel_size": (3, 1, 5), "use_bias": False}, 2048),
    ],
)
def test_matches_keras_with_gradients(rank, shape, kwargs, im2col_bytes, record_calls, monkeypatch):
    monkeypatch.setattr(matmul_grad_conv, "im2col_bytes", lambda rank, cin, cout: im2col_bytes)
    ref, ours = _pair(rank, shape, padding="same", **kwargs)
    assert uses_matmul_grad(ours, shape)
    x = tf.constant(np.random.default_rng(1).normal(size=shape).astype(np.float32))
    want, got = outputs_and_gradients([ref, ours], x)
    assert_close_scaled(got, want)
    assert record_calls == [im2col_bytes]


@needs_onednn
@pytest.mark.parametrize("rank", [2, 3])
def test_unknown_batch_size_uses_the_per_tap_form(rank, record_calls, monkeypatch):
    monkeypatch.setattr(matmul_grad_conv, "im2col_bytes", lambda rank, cin, cout: 4096)
    shape = (3,) + (6,) * rank + (4,)
    ref, ours = _pair(rank, shape, filters=5, kernel_size=3, padding="same")
    x = tf.constant(np.random.default_rng(2).normal(size=shape).astype(np.float32))
    want, got = outputs_and_gradients([ref, ours], x, [tf.TensorSpec((None, *shape[1:]), tf.float32)])
    assert_close_scaled(got, want)
    assert record_calls == [4096]  # asked for chunks; the batch is unknown, so it took the per-tap form


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strides": 2, "padding": "same"},
        {"padding": "valid"},
        {"padding": "same", "dilation_rate": 2},
        {"padding": "same", "kernel_size": 1},
        {"padding": "same", "kernel_size": 2},
    ],
)
def test_other_convolutions_are_keras_own(kwargs, record_calls):
    kwargs = {"filters": 4, "kernel_size": 3, **kwargs}
    shape = (2, 8, 8, 3)
    ref, ours = _pair(2, shape, **kwargs)
    assert not uses_matmul_grad(ours, shape)
    x = tf.constant(np.random.default_rng(3).normal(size=shape).astype(np.float32))
    want, got = outputs_and_gradients([ref, ours], x)
    assert_close_scaled(got, want)
    assert record_calls == []


def test_form_per_layer():
    """One matmul per tap, except 2D layers of >= IM2COL_MIN_CHANNELS channels (column chunks of a fixed size)."""
    wide = matmul_grad_conv.IM2COL_MIN_CHANNELS
    assert matmul_grad_conv.im2col_bytes(2, wide, wide) == matmul_grad_conv.IM2COL_BYTES > 0
    assert matmul_grad_conv.im2col_bytes(2, wide // 2, wide) == 0
    assert matmul_grad_conv.im2col_bytes(3, wide, wide) == 0


def test_thin_layers_and_small_maps_keep_the_kernel_gradient_op():
    thin = conv(2, matmul_grad_conv.MIN_CHANNELS[2] - 1, 3, padding="same")
    assert not uses_matmul_grad(thin, (1, 256, 256, 64))
    wide = conv(2, 64, 3, padding="same")
    assert uses_matmul_grad(wide, (1, 256, 256, 64)) == onednn_fast_path_available()
    assert not uses_matmul_grad(wide, (1, 16, 16, 64))  # (17 / 16)^2 = 1.13 x the work
    wide3d = conv(3, matmul_grad_conv.MIN_CHANNELS[3], 3, padding="same")
    assert uses_matmul_grad(wide3d, (1, 16, 16, 16, 32)) == onednn_fast_path_available()
    assert not uses_matmul_grad(wide3d, (1, 8, 8, 8, 32))


def test_matmul_overhead():
    assert matmul_overhead((64, 64), (3, 3), 64) == pytest.approx(65 * 65 / 64**2)  # one zero border per axis
    assert matmul_overhead((8, 8, 8), (3, 3, 3), 32) == pytest.approx(729 / 512)
    assert matmul_overhead((64, 32), (5, 3), 32) == pytest.approx(66 * 33 / (64 * 32))
    assert matmul_overhead((64, 64), (3, 3), 24) == pytest.approx(65 * 65 / 64**2 * 32 / 24)  # 64-byte rows


@pytest.mark.parametrize(
    ("spatial", "kernel"),
    [((5, 5), (3, 3)), ((4, 7), (5, 3)), ((2, 3), (5, 5)), ((5, 5, 5), (3, 3, 3)), ((3, 4, 6), (3, 1, 5))],
)
def test_kernel_grad_forms_equal_the_kernel_gradient_op(spatial, kernel):
    """Taps reaching past any edge (one zero border per axis, shared by neighbouring rows / images) add nothing."""
    rank = len(spatial)
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(3, *spatial, 3)).astype(np.float32))
    dy = tf.constant(rng.normal(size=(3, *spatial, 4)).astype(np.float32))
    op = tf.raw_ops.Conv2DBackpropFilter if rank == 2 else tf.raw_ops.Conv3DBackpropFilterV2
    want = op(input=x, filter_sizes=[*kernel, 3, 4], out_backprop=dy, strides=[1] * (rank + 2), padding="SAME")
    for im2col_bytes in (0, 500, 1 << 20):
        got = kernel_grad_as_matmuls(x, dy, kernel, im2col_bytes)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-4)


def test_factory_and_serialization(tmp_path):
    assert type(conv(2, 4, 3)) is MatmulGradConv2D and type(conv(3, 4, 3)) is MatmulGradConv3D
    assert type(conv(2, 4, 3, matmul_grad=False)) is keras.layers.Conv2D
    with pytest.raises(ValueError, match="rank"):
        conv(1, 4, 3)
    layer = conv(3, 4, 3, padding="same", name="c")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is MatmulGradConv3D and clone.get_config() == layer.get_config()
    assert keras.layers.serialize(layer)["registered_name"] == "tfmedseg>MatmulGradConv3D"


def test_factories_follow_the_default_switch_at_each_call(monkeypatch):
    """``matmul_grad=None``: conv and conv_transpose read ``MATMUL_GRAD_DEFAULT`` when called (what
    ``benchmarks/bench_training.py --compare matmul_grad`` switches while it builds); an explicit value wins."""
    from tfmedseg.models.blocks.matmul_grad_conv_transpose import MatmulGradConv3DTranspose, conv_transpose

    monkeypatch.setattr(matmul_grad_conv, "MATMUL_GRAD_DEFAULT", False)
    assert type(conv(2, 4, 3)) is keras.layers.Conv2D and type(conv(3, 4, 3)) is keras.layers.Conv3D
    assert type(conv_transpose(2, 4, 2, strides=2)) is keras.layers.Conv2DTranspose
    assert type(conv(3, 4, 3, matmul_grad=True)) is MatmulGradConv3D
    assert type(conv_transpose(3, 4, 2, strides=2, matmul_grad=True)) is MatmulGradConv3DTranspose
    monkeypatch.setattr(matmul_grad_conv, "MATMUL_GRAD_DEFAULT", True)
    assert type(conv(2, 4, 3)) is MatmulGradConv2D
    assert type(conv_transpose(3, 4, 2, strides=2)) is MatmulGradConv3DTranspose
    with pytest.raises(ValueError, match="rank must be 2 or 3, got 4"):
        matmul_grad_conv.layer_class(4, None, (MatmulGradConv2D, MatmulGradConv3D), (keras.layers.Conv2D, keras.layers.Conv3D))


def test_weight_files_interchange_with_keras_layers(tmp_path):
    """Weight files address layers by snake-cased class name: ours must read Keras' files and back."""

    def model(matmul_grad):
        x = keras.Input((8, 8, 2))
        y = conv(2, 4, 3, padding="same", matmul_grad=matmul_grad)(x)
        return keras.Model(x, conv(2, 3, 3, padding="same", matmul_grad=matmul_grad)(y))

    keras.utils.set_random_seed(0)
    plain, ours = model(False), model(True)
    plain.save_weights(tmp_path / "plain.weights.h5")
    ours.load_weights(tmp_path / "plain.weights.h5")
    for a, b in zip(plain.get_weights(), ours.get_weights()):
        np.testing.assert_array_equal(a, b)
    path = tmp_path / "ours.keras"
    ours.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[1]) is MatmulGradConv2D
    data = np.random.default_rng(5).normal(size=(2, 8, 8, 2)).astype(np.float32)
    np.testing.assert_allclose(loaded(data).numpy(), plain(data).numpy(), rtol=1e-5, atol=1e-5)


def test_tflite_conversion_gives_the_same_output(record_calls):
    x = keras.Input((8, 8, 3))
    model = keras.Model(x, conv(2, 4, 3, padding="same", activation="relu")(x))
    data = np.random.default_rng(6).normal(size=(1, 8, 8, 3)).astype(np.float32)
    interpreter = tf.lite.Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert())
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], data)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model(data).numpy(), rtol=1e-4, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize("rank", [2, 3])
def test_concat_conv_takes_the_matmul_gradient(rank, record_calls):
    """ConcatConv (a MatmulGradConv) splits the kernel per input; each part's gradient is a matmul one."""
    spatial = (5,) * rank
    inputs = [keras.Input(spatial + (c,)) for c in (3, 2)]
    plain = (keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D)(4, 3, padding="same")
    reference = keras.Model(inputs, plain(keras.layers.Concatenate()(inputs)))
    ours = keras.Model(inputs, concat_conv(rank, 4, 3, padding="same")(inputs))
    off = keras.Model(inputs, concat_conv(rank, 4, 3, padding="same", matmul_grad=False)(inputs))
    ours.set_weights(reference.get_weights())
    off.set_weights(reference.get_weights())
    rng = np.random.default_rng(7)
    xs = [tf.constant(rng.normal(size=(2,) + spatial + (c,)).astype(np.float32)) for c in (3, 2)]

    def grads(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(model(xs)))
        return [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]

    want = grads(reference)
    assert_close_scaled(grads(ours), want)
    assert len(record_calls) == 2
    assert_close_scaled(grads(off), want)
    assert len(record_calls) == 2
    assert off.layers[-1].get_config()["matmul_grad"] is False


@pytest.mark.parametrize(
    ("batch", "spatial", "kernel"),
    [
        (1, (5, 6, 7), (3, 3, 3)),  # batch 1: the depth-shifted planes are views, edge taps drop a plane
        (3, (5, 6, 7), (3, 3, 3)),  # several images: padded planes per image on one flat plane axis
        (1, (2, 6, 5), (5, 3, 3)),  # a depth tap reaching past every plane adds nothing
        (2, (3, 4, 5), (5, 1, 3)),
        (1, (4, 4, 4), (1, 3, 5)),
    ],
)
def test_kernel_grad_by_planes_equals_the_kernel_gradient_op(batch, spatial, kernel):
    rng = np.random.default_rng(8)
    x = tf.constant(rng.normal(size=(batch, *spatial, 3)).astype(np.float32))
    dy = tf.constant(rng.normal(size=(batch, *spatial, 4)).astype(np.float32))
    want = tf.raw_ops.Conv3DBackpropFilterV2(input=x, filter_sizes=[*kernel, 3, 4], out_backprop=dy,
                                             strides=[1] * 5, padding="SAME").numpy()
    np.testing.assert_allclose(kernel_grad_by_planes(x, dy, kernel).numpy(), want, rtol=1e-5, atol=1e-4)
    unknown_batch = tf.function(lambda x, dy: kernel_grad_by_planes(x, dy, kernel), input_signature=[
        tf.TensorSpec((None, *spatial, 3), tf.float32), tf.TensorSpec((None, *spatial, 4), tf.float32)])
    np.testing.assert_allclose(unknown_batch(x, dy).numpy(), want, rtol=1e-5, atol=1e-4)


def test_kernel_grad_form_per_layer(monkeypatch):
    """3D layers with planes of >= PLANES_MIN_PIXELS pixels: "planes"; else the matmul rule or the op; 2D never planes."""
    monkeypatch.setattr(matmul_grad_conv, "onednn_fast_path_available", lambda: True)
    big = matmul_grad_conv.PLANES_MIN_PIXELS
    thin3d = conv(3, 8, 3, padding="same")
    assert kernel_grad_form(thin3d, (1, 64, 64, 64, 8)) == "planes"  # thin: the matmuls would not take it
    assert kernel_grad_form(thin3d, (None, 4, big, 1, 1)) == "planes"  # plane pixels count, not depth or batch
    assert kernel_grad_form(thin3d, (1, 64, 8, 8, 8)) == "op"  # 8 x 8 planes, thin
    wide3d = conv(3, 64, 3, padding="same")
    assert kernel_grad_form(wide3d, (1, 8, 8, 8, 64)) == "op"  # small planes, matmul overhead too high
    assert kernel_grad_form(wide3d, (1, 8, 16, 16, 64)) == "planes"
    monkeypatch.setattr(matmul_grad_conv, "PLANES_MIN_PIXELS", 10**9)
    assert kernel_grad_form(wide3d, (1, 16, 16, 16, 64)) == "matmuls"
    monkeypatch.setattr(matmul_grad_conv, "PLANES_MIN_PIXELS", big)
    assert kernel_grad_form(conv(3, 8, 3, padding="same", strides=2), (1, 64, 64, 64, 8)) == "op"
    assert kernel_grad_form(conv(3, 8, 3, padding="valid"), (1, 64, 64, 64, 8)) == "op"
    assert kernel_grad_form(thin3d, (1, 64, None, 64, 8)) == "op"  # unknown plane size
    assert kernel_grad_form(conv(2, 64, 3, padding="same"), (1, 256, 256, 64)) == "matmuls"
    assert kernel_grad_form(conv(2, 8, 3, padding="same"), (1, 256, 256, 8)) == "op"
    monkeypatch.setattr(matmul_grad_conv, "onednn_fast_path_available", lambda: False)
    assert kernel_grad_form(thin3d, (1, 64, 64, 64, 8)) == "op"


@needs_onednn
@pytest.mark.parametrize(("shape", "kwargs"), [
    ((1, 3, 4, 5, 2), {"filters": 3, "kernel_size": 3, "use_bias": False}),
    ((2, 4, 3, 4, 3), {"filters": 2, "kernel_size": (3, 1, 3), "activation": "relu"}),
])
def test_conv3d_with_the_planes_gradient_matches_keras(shape, kwargs, monkeypatch):
    monkeypatch.setattr(matmul_grad_conv, "PLANES_MIN_PIXELS", 1)
    calls = []
    real = matmul_grad_conv.kernel_grad_by_planes
    monkeypatch.setattr(matmul_grad_conv, "kernel_grad_by_planes", lambda *a: calls.append(a[-1]) or real(*a))
    ref, ours = _pair(3, shape, padding="same", **kwargs)
    assert kernel_grad_form(ours, shape) == "planes"
    x = tf.constant(np.random.default_rng(9).normal(size=shape).astype(np.float32))
    want, got = outputs_and_gradients([ref, ours], x)
    assert_close_scaled(got, want)
    assert len(calls) == 1
