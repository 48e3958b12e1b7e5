"""Seed-002 efficient networks: forward at tiny size, config round trip, serialisation, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfmedseg.errors import ModelBuildError
from tfmedseg.models import registry
from tfmedseg.models.blocks.separable3d import with_depthwise3d_implementation
from tfmedseg.models.segmentation.efficient import EfficientSegmenter, stage_configs

NAMES = ("mobilenetv2_2d", "mobilenetv3_2d", "shufflenetv2_2d", "mobilenetv2_3d", "mobilenetv3_3d",
         "shufflenetv2_3d", "dsts_3d")


@pytest.fixture(scope="module")
def model_2d():
    keras.utils.set_random_seed(0)
    return registry.build("mobilenetv3_2d", variant="default", input_shape=(64, 64, 9), classes=3)


@pytest.fixture(scope="module")
def model_3d():
    keras.utils.set_random_seed(0)
    return registry.build("dsts_3d", variant="top", input_shape=(8, 128, 128, 1))


def _image(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (1, *shape)).astype("float32")


def test_registry_lists_all_networks():
    assert set(NAMES) <= set(registry.available())


def test_2d_forward_and_config_round_trip(model_2d):
    x = _image((64, 64, 9))
    y = np.asarray(model_2d(x))
    assert y.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    assert model_2d.input.name.startswith("image") and model_2d.get_layer("probabilities") is not None
    config = model_2d.get_config()
    assert config["variant"] == "default" and config["classes"] == 3 and config["input_shape"] == [64, 64, 9]
    clone = EfficientSegmenter.from_config(config)
    clone.set_weights(model_2d.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), y, atol=1e-6)
    assert clone.count_params() == model_2d.count_params()


def test_2d_keras_file_round_trip(model_2d, tmp_path):
    path = tmp_path / "m.keras"
    model_2d.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, EfficientSegmenter)
    x = _image((64, 64, 9), seed=1)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model_2d(x)), atol=1e-6)


def test_3d_forward_middle_slices_and_unrolled_depthwise(model_3d):
    x = _image((8, 128, 128, 1))
    y = np.asarray(model_3d(x))
    assert y.shape == (1, 4, 128, 128, 2)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    assert model_3d.output_slices == 4
    unrolled = with_depthwise3d_implementation(model_3d, "unrolled")
    assert unrolled.depthwise3d_implementation == "unrolled"
    np.testing.assert_allclose(np.asarray(unrolled(x)), y, atol=1e-5)


@pytest.mark.parametrize("name", ["mobilenetv2_2d", "shufflenetv2_2d", "mobilenetv2_3d", "mobilenetv3_3d",
                                  "shufflenetv2_3d"])
def test_other_networks_run_forward(name):
    shape = (64, 64, 9) if name.endswith("_2d") else (8, 128, 128, 1)
    model = registry.build(name, variant="bottom", input_shape=shape)
    y = np.asarray(model(_image(shape)))
    expected = (1, 64, 64, 2) if name.endswith("_2d") else (1, 4, 128, 128, 2)
    assert y.shape == expected
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def test_stage_tables():
    default = stage_configs("mobilenetv2", 2, "default")
    assert [s.repeats for s in default] == [1, 2, 2, 3, 3, 4, 1]
    assert [s.filters_out for s in default] == [16, 24, 40, 80, 112, 192, 320]
    assert [s.strides for s in stage_configs("mobilenetv3", 3, "bottom")][2:4] == [(2, 2, 2), (2, 2, 2)]
    assert [s.repeats for s in stage_configs("shufflenetv2", 3, "bottom")] == [1, 2, 4, 4, 4, 5, 5]
    assert [s.se_ratio for s in stage_configs("mobilenetv3", 2, "top")] == [0, 0, 0.25, 0, 0.25, 0.25, 0.25]


@pytest.mark.parametrize("kwargs,argument", [
    (dict(name="mobilenetv2_2d", variant="middle"), "variant"),
    (dict(name="mobilenetv2_2d", input_shape=(64, 64, 8)), "input_shape"),
    (dict(name="mobilenetv2_2d", input_shape=(96, 64, 9)), "input_shape"),
    (dict(name="dsts_3d", input_shape=(6, 128, 128, 1)), "input_shape"),
    (dict(name="mobilenetv2_3d", input_shape=(8, 128, 128, 2)), "input_shape"),
    (dict(name="mobilenetv2_3d", classes=0), "classes"),
    (dict(name="mobilenetv2_3d", depthwise3d_implementation="fast"), "depthwise3d_implementation"),
    (dict(name="mobilenetv2_2d", decoder_filters=(8, 8)), "decoder_filters"),
])
def test_bad_configurations_fail_at_build_time(kwargs, argument):
    name = kwargs.pop("name")
    with pytest.raises(ModelBuildError) as info:
        registry.build(name, **kwargs)
    assert info.value.path == argument


def test_unknown_model_and_family_errors():
    with pytest.raises(ModelBuildError, match="registered models"):
        registry.build("mobilenetv4_2d")
    with pytest.raises(ModelBuildError) as info:
        EfficientSegmenter(family="dsts", rank=2)
    assert info.value.path == "family"


@pytest.mark.slow
def test_3d_model_with_unrolled_depthwise_runs_in_tflite(model_3d):
    """Grouped Conv3D fails at TFLite run time; the unrolled implementation converts and runs (~40 s)."""
    import tensorflow as tf

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    blob = tf.lite.TFLiteConverter.from_keras_model(with_depthwise3d_implementation(model_3d, "unrolled")).convert()
    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    x = _image((8, 128, 128, 1), seed=3)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(y, np.asarray(model_3d(x)), atol=1e-4)
