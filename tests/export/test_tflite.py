"""TFLite conversion: float32 exact, float16/int8 close, grouped Conv3D rewritten, clear failures."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfmedseg.errors import ExportError
from tfmedseg.export.tflite import (
    TFLiteRunner,
    _block_diagonal_kernel,
    _clone_walk,
    convert_to_tflite,
    tflite_compatible_clone,
)


@pytest.fixture(scope="module")
def model_2d():
    keras.utils.set_random_seed(2)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    out = keras.layers.Conv2D(2, 1, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def model_3d():
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 8, 1), name="image")
    x = keras.layers.Conv3D(6, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv3D(6, 3, padding="same", groups=6, name="depthwise3d")(x)  # depthwise
    x = keras.layers.Conv3D(6, 3, strides=2, padding="same", groups=2, name="grouped3d")(x)
    x = keras.layers.Conv3DTranspose(4, 2, strides=2, padding="same")(x)
    out = keras.layers.Conv3D(2, 1, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out)


def test_block_diagonal_kernel_equals_grouped_convolution(rng):
    grouped = keras.layers.Conv3D(4, 3, padding="same", groups=2, use_bias=False)
    plain = keras.layers.Conv3D(4, 3, padding="same", use_bias=False)
    x = rng.random((1, 5, 5, 5, 6)).astype(np.float32)
    grouped.build(x.shape)
    plain.build(x.shape)
    plain.set_weights([_block_diagonal_kernel(grouped.get_weights()[0], 2)])
    np.testing.assert_allclose(plain(x).numpy(), grouped(x).numpy(), atol=1e-5)


def test_float32_2d_matches_keras(model_2d, rng):
    runner = TFLiteRunner(convert_to_tflite(model_2d, "float32"), num_threads=1)
    x = rng.random((2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(runner(x), model_2d.predict(x, verbose=0), atol=1e-4)


def test_3d_with_grouped_conv_converts_and_runs(model_3d, rng):
    clone = tflite_compatible_clone(model_3d)
    assert all(getattr(layer, "groups", 1) == 1 for layer in clone.layers)
    x = rng.random((1, 8, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(clone.predict(x, verbose=0), model_3d.predict(x, verbose=0), atol=1e-5)
    runner = TFLiteRunner(convert_to_tflite(model_3d, "float32"))
    np.testing.assert_allclose(runner(x), model_3d.predict(x, verbose=0), atol=1e-4)


def test_float16_and_int8_stay_close(model_2d, rng):
    x = rng.random((1, 16, 16, 3)).astype(np.float32)
    ref = model_2d.predict(x, verbose=0)
    f16 = TFLiteRunner(convert_to_tflite(model_2d, "float16"))(x)
    np.testing.assert_allclose(f16, ref, atol=5e-3)
    data = lambda: (rng.random((1, 16, 16, 3)).astype(np.float32) for _ in range(8))  # noqa: E731
    i8_bytes = convert_to_tflite(model_2d, "int8", data)
    runner = TFLiteRunner(i8_bytes)
    i8 = runner(x)
    assert np.abs(i8 - ref).max() < 0.1
    dtypes = {d["dtype"] for d in runner.interpreter.get_tensor_details()}
    assert np.int8 in dtypes  # really full-integer inside, float32 at the boundary
    assert runner.interpreter.get_input_details()[0]["dtype"] == np.float32


def test_bad_conversions_are_clear(model_2d):
    with pytest.raises(ExportError, match="quantization"):
        convert_to_tflite(model_2d, "int4")
    with pytest.raises(ExportError, match="representative_data"):
        convert_to_tflite(model_2d, "int8")
    inp = keras.Input((4, 4, 4, 1))
    pooled = keras.Model(inp, keras.layers.MaxPooling3D(2, strides=1, name="pool3d")(inp))  # overlapping: no rewrite
    with pytest.raises(ExportError, match="pool3d"):
        convert_to_tflite(pooled)
    runner = TFLiteRunner(convert_to_tflite(model_2d))
    with pytest.raises(ExportError, match="does not fit"):
        runner(np.zeros((1, 8, 8, 3), np.float32))


def _dead_unit_se_block_model():
    """Conv -> squeeze-excitation block whose squeeze unit never fires (bias -100), as some of a
    trained network's ReLU units do: int8 calibration sees that output constant at 0."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    squeeze = keras.layers.Dense(4, activation="relu", name="squeeze")
    excite = keras.layers.Dense(8, activation="sigmoid", name="excite")
    gate = excite(squeeze(keras.layers.GlobalAveragePooling2D()(x)))
    x = keras.layers.Multiply()([x, keras.layers.Reshape((1, 1, 8))(gate)])
    model = keras.Model(inp, keras.layers.Conv2D(2, 1, activation="softmax", name="probabilities")(x))
    kernel, bias = squeeze.get_weights()
    squeeze.set_weights([np.random.default_rng(1).normal(size=kernel.shape).astype(np.float32), np.full_like(bias, -100.0)])
    kernel, bias = excite.get_weights()
    excite.set_weights([np.full_like(kernel, 0.01), np.linspace(-0.1, 0.1, bias.size, dtype=np.float32)])
    return model


def test_int8_with_a_dead_relu_unit_runs_under_xnnpack(caplog):
    """Converted the plain way, the dead unit gets an int8 scale of ~1e-8 and XNNPACK refuses the
    graph ("failed to create XNNPACK runtime"; in the trained seed-004 SE U-Net it aborted the
    process, SIGABRT). With the constant range widened it runs with XNNPACK, close to Keras."""
    import logging

    model = _dead_unit_se_block_model()
    data = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="tfmedseg.export.tflite"):
        blob = convert_to_tflite(model, "int8", lambda: (d[None] for d in data))
    assert "squeeze" in caplog.text and "constant at 0" in caplog.text
    runner = TFLiteRunner(blob)
    assert runner.delegate == "xnnpack"
    diff = np.abs(runner(data) - model.predict(data, verbose=0))
    assert np.isfinite(diff).all() and diff.mean() < 0.02


def test_int8_keeps_run_time_normalisation_in_float32():
    """SE / instance normalisation statistics stay float32 in the int8 model (int8 variances lose
    the epsilon and small values); the convolution's activations around them are still int8."""
    from ai_edge_litert import interpreter as litert

    from tfmedseg.models.blocks.se_norm import SENormalization

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 8, 2), name="image")
    x = SENormalization(name="sen")(keras.layers.Conv3D(4, 3, padding="same", activation="relu")(inp))
    x = keras.layers.Conv3D(4, 3, padding="same", activation="relu")(x)
    model = keras.Model(inp, keras.layers.Conv3D(2, 1, activation="softmax", name="probabilities")(x))
    data = np.random.default_rng(0).normal(size=(4, 8, 8, 8, 2)).astype(np.float32)
    blob = convert_to_tflite(model, "int8", lambda: (d[None] for d in data))
    interpreter = litert.Interpreter(model_content=blob)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    rsqrt = [op for op in ops if op["op_name"] == "RSQRT"]
    assert rsqrt and all(tensors[i]["dtype"] == np.float32 for op in rsqrt for i in op["outputs"])
    assert any(tensors[i]["dtype"] == np.int8 for op in ops for i in op["outputs"])  # still partly integer
    diff = np.abs(TFLiteRunner(blob)(data) - model.predict(data, verbose=0))
    assert diff.mean() < 0.02


@pytest.mark.filterwarnings("error::UserWarning")  # the default run's warnings summary stays clean
def test_widen_constant_ranges_leaves_normal_ranges_alone(model_2d, rng):
    import tensorflow as tf

    from tfmedseg.export.tflite import _frozen_converter, tflite_output, widen_constant_ranges

    data = rng.random((4, 16, 16, 3)).astype(np.float32)
    converter = _frozen_converter(model_2d)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([d[None]] for d in data)
    converter._experimental_calibrate_only = True
    with tflite_output():  # as the exports convert: the converter's quantised-input-statistics warning filtered
        calibrated = converter.convert()
    assert widen_constant_ranges(calibrated) == (calibrated, [])


def test_a_runtime_that_aborts_natively_becomes_an_export_error(monkeypatch):
    import tfmedseg.export.tflite as tflite_module

    monkeypatch.setattr(tflite_module, "_PREPARE_CHECK", "import os; os.abort()")
    with pytest.raises(ExportError, match="SIGABRT"):
        tflite_module._check_prepares_in_child(b"not a model", "TFLite int8 model of m")


def _builtin_ops(flatbuffer: bytes) -> set[str]:
    """Names of the builtin operators of a TFLite flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    return {names[max(op.builtinCode, op.deprecatedBuiltinCode)] for op in model.operatorCodes}


@pytest.fixture(scope="module")
def onednn_models():
    """A tiny model with OneDNNConv2D layers at the top level and inside a nested functional model
    (SSD's VGG-16 is one), and its plain-Keras twin (same weights)."""
    from tfmedseg.models.blocks.onednn_conv import OneDNNConv2D

    keras.utils.set_random_seed(5)
    inner_in = keras.Input((16, 16, 4))
    inner = keras.Model(inner_in, OneDNNConv2D(4, 3, padding="same", activation="relu", name="inner_conv")(inner_in),
                        name="backbone")
    inp = keras.Input((16, 16, 3), name="image")
    x = OneDNNConv2D(4, 3, padding="same", activation="relu", name="top_conv")(inp)
    out = keras.layers.Conv2D(2, 1, activation="softmax", name="probabilities")(inner(x))
    return keras.Model(inp, out)


def test_onednn_conv2d_becomes_a_plain_conv2d_for_tflite(onednn_models, rng):
    """OneDNNConv2D's oneDNN forward is Conv2DBackpropInput (TFLite: TRANSPOSE_CONV with a run-time
    output shape); the TFLite clone has plain Conv2D layers with the same weights, and the
    flatbuffer CONV_2D only."""
    from tfmedseg.models.blocks.onednn_conv import OneDNNConv2D, onednn_fast_path_available

    model = onednn_models
    clone = tflite_compatible_clone(model)
    layers = _clone_walk(clone)
    assert not any(isinstance(layer, OneDNNConv2D) for layer in layers)
    assert sum(type(layer) is keras.layers.Conv2D for layer in layers) == 3
    x = rng.random((2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(clone.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert any(isinstance(layer, OneDNNConv2D) for layer in _clone_walk(model))  # the model itself is untouched

    flatbuffer = convert_to_tflite(model)
    ops = _builtin_ops(flatbuffer)
    assert "CONV_2D" in ops and "TRANSPOSE_CONV" not in ops, ops
    np.testing.assert_allclose(TFLiteRunner(flatbuffer)(x), model.predict(x, verbose=0), atol=1e-5)
    if onednn_fast_path_available():  # what the rewrite avoids: the fast path's graph in TFLite
        import tensorflow as tf

        forward = tf.function(lambda image: model(image, training=False)).get_concrete_function(
            tf.TensorSpec((None, 16, 16, 3), tf.float32))
        assert "Conv2DBackpropInput" in {op.type for op in forward.graph.get_operations()}


def test_tflite_routine_output_goes_to_debug_not_the_console(model_2d, rng, capfd, caplog, recwarn):
    """A full-integer conversion and a runner print nothing of TFLite's own (the C++ ``fully_quantize``
    line, the XNNPACK INFO line, the quantised-input-statistics UserWarning); the C++ lines are logged
    at DEBUG."""
    import logging

    caplog.set_level(logging.DEBUG, logger="tfmedseg.export.tflite")
    capfd.readouterr()
    data = lambda: (rng.random((1, 16, 16, 3)).astype(np.float32) for _ in range(4))  # noqa: E731
    runner = TFLiteRunner(convert_to_tflite(model_2d, "int8", data))
    runner(rng.random((1, 16, 16, 3)).astype(np.float32))
    err = capfd.readouterr().err
    assert "fully_quantize" not in err and "XNNPACK delegate" not in err and "Statistics for quantized" not in err, err
    assert not [w for w in recwarn if "Statistics for quantized" in str(w.message)]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(m.startswith("TensorFlow Lite: fully_quantize: ") for m in debug), debug


class _NativeConverter:
    """Stands in for TFLite's converter: writes ``lines`` to file descriptor 2 as C++ code does, then
    returns ``result`` or raises it."""

    def __init__(self, lines, result):
        self.lines, self.result = lines, result

    def convert(self):
        import os

        os.write(2, "".join(f"{line}\n" for line in self.lines).encode())
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_a_failed_conversion_says_what_tflite_wrote_in_one_line(model_2d, monkeypatch, capfd):
    """The converter's stderr during a failure is not printed: the one-line ExportError carries the
    exception's error line and the native error line; a successful conversion's unknown stderr lines
    are written back (only the routine ones are hidden)."""
    import tfmedseg.export.tflite as tflite_module

    failure = RuntimeError("Conversion failed.\n<unknown>:0: error: 'tf.Foo' op is neither a custom op nor a flex op\n"
                           "<unknown>:0: note: see current operation")
    monkeypatch.setattr(tflite_module, "_frozen_converter", lambda model: _NativeConverter(
        ["fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32",
         "loc(fused[\"Foo:\"]): error: failed to legalize operation 'tf.Foo'", "F0000 check failed: shape"], failure))
    capfd.readouterr()
    with pytest.raises(ExportError) as info:
        convert_to_tflite(model_2d)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{model_2d.name}: TFLite float32 conversion failed: RuntimeError: ")
    assert "'tf.Foo' op is neither a custom op nor a flex op" in message
    assert "(TFLite stderr: loc(fused[\"Foo:\"]): error: failed to legalize operation 'tf.Foo')" in message
    assert capfd.readouterr().err == ""

    monkeypatch.setattr(tflite_module, "_frozen_converter", lambda model: _NativeConverter(
        ["fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32",
         "W0000 something TFLite warns about"], b"flatbuffer"))
    assert convert_to_tflite(model_2d) == b"flatbuffer"
    assert capfd.readouterr().err == "W0000 something TFLite warns about\n"


def test_a_real_conversion_failure_is_one_line_naming_the_op(capfd):
    """An op TFLite has no kernel for (``tf.math.special.bessel_i0e``): one line naming the op and
    what the converter wrote about it; nothing of the converter's stderr on the console."""
    import tensorflow as tf

    class BesselI0e(keras.layers.Layer):
        def call(self, x):
            return tf.math.special.bessel_i0e(x)

    inp = keras.Input((4, 4, 1), name="image")
    model = keras.Model(inp, BesselI0e()(inp), name="bessel")
    capfd.readouterr()
    with pytest.raises(ExportError) as info:
        convert_to_tflite(model)
    message = str(info.value)
    assert "\n" not in message and message.startswith("bessel: TFLite float32 conversion failed: ConverterError: ")
    assert "'tf.BesselI0e' op is neither a custom op nor a flex op" in message
    assert message.endswith("(TFLite stderr: Custom ops: BesselI0e)"), message
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("split_per_group", [True, False], ids=["cpu_per_group", "gpu_grouped_kernel"])
def test_grouped_conv2d_converts_to_builtins_and_matches_keras(split_per_group, rng, monkeypatch):
    """GroupedConv2D (seed-003 ResNeXt): traced per group (CPU: SPLIT, CONV_2D, CONCATENATION) or as
    TensorFlow's grouped Conv2D (a GPU host), strided and dilated, the float32 flatbuffer has builtin
    ops only and gives Keras' outputs within 1e-5."""
    import tfmedseg.models.blocks.grouped_conv as grouped_conv

    monkeypatch.setattr(grouped_conv, "split_groups_here", lambda: split_per_group)
    keras.utils.set_random_seed(6)
    inp = keras.Input((16, 16, 8), name="image")
    x = grouped_conv.GroupedConv2D(8, 3, groups=4, padding="same", activation="relu")(inp)
    x = grouped_conv.GroupedConv2D(16, 3, strides=2, groups=2, padding="same")(x)
    x = grouped_conv.GroupedConv2D(16, 3, dilation_rate=2, groups=8, padding="same")(x)
    model = keras.Model(inp, keras.layers.Conv2D(2, 1, activation="softmax", name="probabilities")(x))
    flatbuffer = convert_to_tflite(model, "float32")
    ops = _builtin_ops(flatbuffer)
    assert "CONV_2D" in ops and not ops & {"CUSTOM", "DELEGATE"}, ops
    assert ("SPLIT" in ops) == split_per_group, ops
    xs = rng.random((2, 16, 16, 8)).astype(np.float32)
    np.testing.assert_allclose(TFLiteRunner(flatbuffer)(xs), model.predict(xs, verbose=0), atol=1e-5)


def test_subclassed_ssd_is_rebuilt_with_plain_conv2d_for_tflite(rng, caplog):
    """``clone_model`` cannot clone a subclassed model, so the ``SSD`` class itself (not ``ssd.network``) used to
    keep its OneDNNConv2D layers (a warning, then TRANSPOSE_CONV in TFLite): it is rebuilt from its config with
    plain Conv2D layers and the same weights; the model itself is untouched and nothing is warned."""
    import logging

    import tensorflow as tf

    from tfmedseg.models.blocks.onednn_conv import OneDNNConv2D
    from tfmedseg.models.detection.ssd import SSD, SSDConfig, build_ssd

    keras.utils.set_random_seed(3)
    ssd = build_ssd(SSDConfig.tiny())
    caplog.set_level(logging.WARNING, logger="tfmedseg.export.tflite")
    clone = tflite_compatible_clone(ssd)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert isinstance(clone, SSD) and clone is not ssd
    conv2d = [layer for layer in _clone_walk(clone.network) if isinstance(layer, keras.layers.Conv2D)]
    assert conv2d and not any(isinstance(layer, OneDNNConv2D) for layer in conv2d)
    assert sum(isinstance(layer, OneDNNConv2D) for layer in _clone_walk(ssd.network)) == 13  # VGG-16's, untouched
    x = rng.random((1, 64, 64, 1)).astype(np.float32)
    raw, raw_clone = ssd.network(x), clone.network(x)
    for key in ("class_logits", "box_deltas"):
        np.testing.assert_allclose(np.asarray(raw_clone[key]), np.asarray(raw[key]), atol=1e-4, rtol=1e-5)
    detections, detections_clone = ssd(x), clone(x)
    np.testing.assert_array_equal(np.asarray(detections_clone["num_detections"]), np.asarray(detections["num_detections"]))
    np.testing.assert_allclose(np.asarray(detections_clone["scores"]), np.asarray(detections["scores"]), atol=1e-5)
    forward = tf.function(lambda image: clone.network(image, training=False)).get_concrete_function(
        tf.TensorSpec((1, 64, 64, 1), tf.float32))
    assert "Conv2DBackpropInput" not in {op.type for op in forward.graph.get_operations()}
    with pytest.raises(ExportError, match=r"without a functional input: convert its functional part \(e\.g\. ssd\.network"):
        convert_to_tflite(ssd)  # not an AttributeError traceback
