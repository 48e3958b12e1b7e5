"""Every registered segmentation model exports: SavedModel exact, TFLite float32 close, int8 runs.

Models come from ``registry.available()`` (test-only names starting with ``_`` and builders outside
``tfmedseg.models.segmentation``, i.e. detection models, are left out), built once per module at
their smallest valid size: 2.5D ``(64, 64, 9)``, 3D ``(4, 128, 128, 1)``. Inputs are windowed
slices of an abdominal CT phantom (the same intensity mapping as training, [-200, 200] HU ->
[0, 1]), so the int8 calibration sees realistic value distributions.

Weights are untrained, so the int8 Dice between Keras and TFLite masks is reported (printed with
``-s``), not asserted; int8 is asserted to run, to be really integer inside and to return finite
probabilities that sum to 1 and stay close to Keras on average.

Default run (about 90 s here): TFLite float32 of every 2D model and of the cheapest 3D model, int8
of one 2D and one 3D model, SavedModel of one 3D model (exports take 10-25 s each); the rest is
``@pytest.mark.slow`` (``-m ""`` runs all 23 cases in about 5 minutes).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.datasets.phantoms import case_rng
from tfmedseg.datasets.phantoms.abdomen import make_abdomen
from tfmedseg.export.savedmodel import SIGNATURES, export_savedmodel
from tfmedseg.export.tflite import TFLiteRunner, convert_to_tflite, tflite_compatible_clone
from tfmedseg.inference.spec import ServingSpec
from tfmedseg.models import registry
from tfmedseg.models.blocks.separable3d import DepthwiseConv3D

#: Smallest valid input per network kind (2D: H, W multiples of 64, odd slices; 3D: H, W multiples
#: of 128, slices a multiple of 4).
SMALLEST_INPUT = {"2d": (64, 64, 9), "3d": (4, 128, 128, 1)}
#: Cheapest model per rank (conversion / export time); these run in the default test run.
FAST = {"shufflenetv2_2d", "mobilenetv3_3d"}


def _segmentation_models() -> list[str]:
    """The seed-002 builders (``*_2d`` / ``*_3d`` of :mod:`tfmedseg.models.segmentation.efficient`); the
    other seeds' segmentation builders are exported by their own experiments' tests."""
    return [name for name in registry.available()
            if not name.startswith("_")
            and registry.get_builder(name).__module__ == "tfmedseg.models.segmentation.efficient"]


MODELS = _segmentation_models()
MODELS_2D = [n for n in MODELS if n.endswith("_2d")]
MODELS_3D = [n for n in MODELS if n.endswith("_3d")]


def _kind(name: str) -> str:
    return name.rsplit("_", 1)[-1]


def _params(names, fast):
    return [pytest.param(n, marks=() if n in fast else pytest.mark.slow) for n in names]


@functools.lru_cache(maxsize=None)
def _model(name: str):
    import keras

    keras.utils.set_random_seed(9)
    return registry.build(name, input_shape=SMALLEST_INPUT[_kind(name)], classes=2)


@functools.lru_cache(maxsize=1)
def _phantom() -> tuple[np.ndarray, list[int]]:
    """Windowed phantom CT ``[D, 128, 128]`` in [0, 1] and the liver-bearing slice indices."""
    phantom = make_abdomen(case_rng(0, 0))
    ct = np.clip((phantom.ct.astype(np.float32) + 200.0) / 400.0, 0.0, 1.0)
    liver = np.flatnonzero((phantom.label > 0).any(axis=(1, 2)))
    liver = liver[(liver >= 4) & (liver < ct.shape[0] - 4)]
    return ct, [int(z) for z in liver[np.linspace(0, len(liver) - 1, 6).astype(int)]]


def _inputs(name: str, which: str) -> np.ndarray:
    """``"test"``: 2 phantom samples; ``"calibration"``: 4 other samples (model input shape)."""
    ct, centres = _phantom()
    centres = centres[:2] if which == "test" else centres[2:]
    if _kind(name) == "2d":
        samples = [ct[z - 4:z + 5, ::2, ::2].transpose(1, 2, 0) for z in centres]  # 9 slices, 64 x 64
    else:
        samples = [ct[z - 2:z + 2, :, :, None] for z in centres]  # 4-slice slab, 128 x 128
    return np.ascontiguousarray(np.stack(samples), dtype=np.float32)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def _keras(name: str, x: np.ndarray) -> np.ndarray:
    return _model(name)(x, training=False).numpy()


def test_registry_has_all_seed002_segmentation_models():
    assert set(MODELS) >= {"mobilenetv2_2d", "mobilenetv3_2d", "shufflenetv2_2d", "mobilenetv2_3d",
                           "mobilenetv3_3d", "shufflenetv2_3d", "dsts_3d"}
    assert sorted(MODELS_2D + MODELS_3D) == MODELS, "a segmentation model is neither *_2d nor *_3d: add its size"
    assert not [n for n in MODELS if "rcnn" in n or "ssd" in n]  # detection builders are excluded
    ct, centres = _phantom()
    assert len(centres) == 6 and 0.0 <= ct.min() and ct.max() <= 1.0


def test_clone_switches_depthwise3d_to_unrolled_and_keeps_outputs():
    model = _model("mobilenetv3_3d")
    grouped = [layer for layer in model.layers if isinstance(layer, DepthwiseConv3D)]
    assert grouped and all(layer.implementation == "grouped" for layer in grouped)
    clone = tflite_compatible_clone(model)
    switched = [layer for layer in clone.layers if isinstance(layer, DepthwiseConv3D)]
    assert len(switched) == len(grouped) and all(layer.implementation == "unrolled" for layer in switched)
    assert all(layer.implementation == "grouped" for layer in grouped)  # the original is untouched
    x = _inputs("mobilenetv3_3d", "test")
    np.testing.assert_allclose(clone(x, training=False).numpy(), _keras("mobilenetv3_3d", x), atol=1e-5)
    assert tflite_compatible_clone(_model("shufflenetv2_2d")) is _model("shufflenetv2_2d")  # nothing to rewrite


@pytest.mark.parametrize("name", _params(MODELS, {"mobilenetv3_3d"}))  # 2D: tests/export/test_savedmodel.py
def test_savedmodel_serving_default_reproduces_keras(name, tmp_path):
    model = _model(name)
    shape = SMALLEST_INPUT[_kind(name)]
    if _kind(name) == "2d":
        spec = ServingSpec(mode="2.5d", input_size=shape[:2], context_slices=shape[-1])
    else:
        spec = ServingSpec(mode="3d_slab", input_size=shape[1:3], context_slices=shape[0], output_slices=shape[0] // 2)
    path = export_savedmodel(model, tmp_path / name / "1", spec=spec, model_name=name)
    loaded = tf.saved_model.load(str(path))
    assert sorted(loaded.signatures) == sorted(SIGNATURES)
    x = _inputs(name, "test")
    out = loaded.signatures["serving_default"](image=tf.constant(x))
    probabilities = out["probabilities"].numpy()
    # Exact up to oneDNN / grappler reordering of float32 sums (graph vs eager Keras).
    assert np.abs(probabilities - _keras(name, x)).max() <= 1e-6
    np.testing.assert_array_equal(out["mask"].numpy(), np.argmax(probabilities, axis=-1))


@pytest.mark.parametrize("name", _params(MODELS, set(MODELS_2D) | FAST))
def test_tflite_float32_matches_keras(name):
    runner = TFLiteRunner(convert_to_tflite(_model(name), "float32"), num_threads=1)
    x = _inputs(name, "test")
    reference = _keras(name, x)
    predicted = runner(x)
    assert predicted.shape == reference.shape
    np.testing.assert_allclose(predicted, reference, atol=1e-4)
    np.testing.assert_array_equal(np.argmax(predicted, -1)[np.abs(reference[..., 1] - 0.5) > 1e-4],
                                  np.argmax(reference, -1)[np.abs(reference[..., 1] - 0.5) > 1e-4])


@pytest.mark.parametrize("name", _params(MODELS, FAST))
def test_tflite_int8_runs_and_reports_dice_drift(name, record_property):
    calibration = _inputs(name, "calibration")
    blob = convert_to_tflite(_model(name), "int8", lambda: (sample[None] for sample in calibration))
    runner = TFLiteRunner(blob, num_threads=1)
    assert runner.interpreter.get_input_details()[0]["dtype"] == np.float32
    assert np.int8 in {d["dtype"] for d in runner.interpreter.get_tensor_details()}  # integer inside
    x = _inputs(name, "test")
    reference = _keras(name, x)
    predicted = runner(x)
    assert predicted.shape == reference.shape and np.isfinite(predicted).all()
    assert np.abs(predicted.sum(-1) - 1.0).max() <= 0.05
    drift = np.abs(predicted - reference)
    assert drift.mean() <= 0.05, f"int8 mean |p - p_keras| = {drift.mean():.3f}"
    dice = _dice(np.argmax(predicted, -1) > 0, np.argmax(reference, -1) > 0)
    record_property("int8_dice_vs_keras", dice)
    # Untrained weights give probabilities near 0.5, where a tiny drift flips the argmax: print the margin.
    margin = np.median(np.abs(reference[..., 1] - reference[..., 0]))
    print(f"\nINT8 {name}: dice(keras, tflite) = {dice:.4f}, max |dp| = {drift.max():.4f}, "
          f"mean |dp| = {drift.mean():.5f}, median keras margin |p1 - p0| = {margin:.4f}, "
          f"foreground fraction {np.mean(np.argmax(reference, -1) > 0):.3f}, delegate {runner.delegate}, "
          f"{len(blob) / 1e6:.2f} MB")
