"""FusedBatchNormalization equals keras.layers.BatchNormalization, serialises and converts to TFLite."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmedseg  # noqa: F401
from tfmedseg.models.blocks import normalization
from tfmedseg.models.blocks.normalization import FusedBatchNormalization, batch_norm


def _pair(shape, **kwargs):
    """A Keras BN with random affine/moving weights and a fused BN with the same weights."""
    ref = keras.layers.BatchNormalization(**kwargs)
    ref.build(shape)
    rng = np.random.default_rng(7)
    ref.set_weights([rng.normal(1.0, 0.3, w.shape).astype("float32") if i == 0 else
                     np.abs(rng.normal(0.5, 0.2, w.shape)).astype("float32") + 0.1 * (i == 3)
                     for i, w in enumerate(ref.get_weights())])
    fused = FusedBatchNormalization(**kwargs)
    fused.build(shape)
    fused.set_weights(ref.get_weights())
    return ref, fused


def _run(layer, x, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * tf.sin(x))  # a non-trivial upstream gradient
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return y.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("shape", [(4, 6, 5, 3), (2, 3, 4, 5, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize("kwargs", [{"momentum": 0.9, "epsilon": 1e-3}, {"center": False, "scale": False}],
                         ids=["affine", "plain"])
def test_training_mode_matches_keras(shape, kwargs, rng):
    ref, fused = _pair(shape, **kwargs)
    x = tf.constant(rng.normal(2.0, 3.0, size=shape).astype("float32"))
    y_ref, g_ref = _run(ref, x, training=True)
    y_fused, g_fused = _run(fused, x, training=True)
    np.testing.assert_allclose(y_fused, y_ref, atol=1e-5)
    assert len(g_fused) == len(g_ref)
    for a, b in zip(g_fused, g_ref):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(fused.get_weights(), ref.get_weights()):  # moving statistics updated the same way
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)
    assert not np.allclose(ref.get_weights()[-1], _pair(shape, **kwargs)[0].get_weights()[-1])  # they did move


@pytest.mark.parametrize("shape", [(4, 6, 5, 3), (2, 3, 4, 5, 3)], ids=["2d", "3d"])
def test_inference_mode_matches_keras(shape, rng):
    ref, fused = _pair(shape, epsilon=1e-5)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    y_ref, g_ref = _run(ref, x, training=False)
    y_fused, g_fused = _run(fused, x, training=False)
    np.testing.assert_allclose(y_fused, y_ref, atol=1e-5)
    for a, b in zip(g_fused, g_ref):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_frozen_layer_uses_moving_statistics_in_training(rng):
    ref, fused = _pair((4, 6, 5, 3))
    ref.trainable = fused.trainable = False
    x = tf.constant(rng.normal(size=(4, 6, 5, 3)).astype("float32"))
    np.testing.assert_allclose(fused(x, training=True), ref(x, training=True), atol=1e-5)
    np.testing.assert_allclose(fused.get_weights()[3], ref.get_weights()[3])


def test_unfusable_configuration_falls_back_to_keras(rng):
    """axis=1 (channels first) is not what the kernel does: the layer gives Keras' result."""
    ref, fused = _pair((4, 3, 6, 5), axis=1)
    x = tf.constant(rng.normal(size=(4, 3, 6, 5)).astype("float32"))
    np.testing.assert_allclose(fused(x, training=True), ref(x, training=True), atol=1e-5)


def test_mixed_bfloat16_output_dtype_and_values(rng):
    ref, fused = _pair((4, 6, 5, 3), dtype="mixed_bfloat16")
    x = tf.constant(rng.normal(size=(4, 6, 5, 3)).astype("float32"))
    y_ref, y_fused = ref(x, training=True), fused(x, training=True)
    assert y_fused.dtype == y_ref.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y_fused, "float32"), tf.cast(y_ref, "float32"), atol=3e-2)


def test_factory_and_config_round_trip(tmp_path, rng):
    layer = batch_norm(momentum=0.8, epsilon=1e-4, name="bn", center=False)
    assert isinstance(layer, FusedBatchNormalization) and isinstance(layer, keras.layers.BatchNormalization)
    assert type(batch_norm(fused=False)) is keras.layers.BatchNormalization
    clone = FusedBatchNormalization.from_config(layer.get_config())
    assert (clone.momentum, clone.epsilon, clone.center, clone.name) == (0.8, 1e-4, False, "bn")

    inputs = keras.Input((6, 5, 3))
    model = keras.Model(inputs, batch_norm(name="bn")(keras.layers.Conv2D(3, 3, padding="same")(inputs)))
    model.compile(optimizer="sgd", loss="mse")
    model.fit(rng.normal(size=(8, 6, 5, 3)), rng.normal(size=(8, 6, 5, 3)), epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization
    x = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_loads_weights_saved_from_keras_batch_norm(tmp_path, rng):
    def net(fused):
        inputs = keras.Input((6, 5, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
        return keras.Model(inputs, batch_norm(name="bn", fused=fused)(x))

    keras_model = net(False)
    keras_model.compile(optimizer="sgd", loss="mse")
    keras_model.fit(rng.normal(size=(8, 6, 5, 3)), rng.normal(size=(8, 6, 5, 4)), epochs=1, verbose=0)
    keras_model.save_weights(tmp_path / "w.weights.h5")
    fused_model = net(True)
    fused_model.load_weights(tmp_path / "w.weights.h5")
    x = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    np.testing.assert_allclose(fused_model.predict(x, verbose=0), keras_model.predict(x, verbose=0), atol=1e-5)


def test_converts_to_tflite_like_keras_batch_norm(rng):
    """Both convert; the interpreter gives the Keras inference output; BN folds away in both."""

    def net(fused):
        keras.utils.set_random_seed(3)
        inputs = keras.Input((8, 8, 2))
        x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
        x = batch_norm(name="bn", fused=fused, beta_initializer="random_normal", moving_variance_initializer="uniform")(x)
        return keras.Model(inputs, keras.layers.ReLU()(x))

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    x = rng.normal(size=(1, 8, 8, 2)).astype("float32")
    ops = {}
    for fused in (False, True):
        model = net(fused)
        blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        interpreter = Interpreter(model_content=blob)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(y, model.predict(x, verbose=0), atol=1e-5)
        ops[fused] = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    assert ops[True] == ops[False]


def test_fused_default_switch(monkeypatch):
    monkeypatch.setattr(normalization, "FUSED_DEFAULT", False)
    assert type(batch_norm()) is keras.layers.BatchNormalization
