"""TFLite conversion (float32, float16, full-integer int8) and a LiteRT runner.

Things the TFLite runtime cannot run (or runs badly) are rewritten at export time into exact equivalents:

* :class:`~tfmedseg.models.blocks.separable3d.DepthwiseConv3D` (the 3D depthwise convolution of every
  3D registry model) is switched to its ``"unrolled"`` implementation (depth-shifted
  ``DEPTHWISE_CONV_2D`` calls summed, TFLite builtins only) with the same weights;
* a grouped ``Conv3D`` converts but fails at run time
  ("input->dims->data[4] != filter->dims->data[3]"), so each is replaced by a plain ``Conv3D`` whose
  kernel is the block-diagonal expansion of the grouped kernel (zeros between groups);
* ``MaxPooling3D`` is not a TFLite builtin (and pip runtimes lack the Flex delegate): a
  non-overlapping one (``strides == pool_size``, ``"valid"``, e.g. the seed-004 U-Nets' 2x2x2 pooling)
  becomes the exact :class:`~tfmedseg.models.blocks.resampling.ReshapeMaxPooling` (reshape +
  reduce_max per axis); any other raises a clear :class:`~tfmedseg.errors.ExportError`;
* :class:`~tfmedseg.models.blocks.onednn_conv.OneDNNConv2D` (SSD's VGG-16), whose oneDNN forward is a
  ``Conv2DBackpropInput`` (``TRANSPOSE_CONV`` in TFLite), becomes a plain ``Conv2D`` (``CONV_2D``).

Dynamic-range int8 is deliberately not offered: it was measured 4x slower than float32 on our CPU
(``../shared/specs/perf-baselines.md`` section 6); full-integer int8 runs at float32 speed, 4x smaller.
Inputs and outputs stay float32 in every variant.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from tfmedseg.errors import ExportError
from tfmedseg.logs import native_stderr_captured

__all__ = ["QUANTIZATIONS", "TFLITE_NOISE", "TFLiteRunner", "convert_to_tflite", "tflite_compatible_clone", "tflite_output",
           "widen_constant_ranges"]

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("float32", "float16", "int8")

#: Lines TensorFlow Lite writes to stderr (file descriptor 2, from C++) on every successful conversion
#: or interpreter start (regular expressions): logged at DEBUG (``-v``) instead of printed.
TFLITE_NOISE = (
    r"^INFO: (Created|Initialized) TensorFlow Lite",
    r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+$",
    r"^I\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] ",
)
_TFLITE_NOISE = tuple(re.compile(p) for p in TFLITE_NOISE)
#: The Python warning of every full-integer conversion with float32 inputs and outputs (the statistics
#: are those of quantised inputs, which our models never have): not shown.
QUANTIZED_INPUT_STATS_WARNING = "Statistics for quantized inputs were expected, but not specified"


def _is_noise(line: str) -> bool:
    return any(p.search(line) for p in _TFLITE_NOISE)


@contextlib.contextmanager
def tflite_output(captured: list[str] | None = None) -> Iterator[None]:
    """Around a TFLite conversion or interpreter start: keep TFLite's routine output off the console.

    The C++ lines it writes to file descriptor 2 are captured
    (:func:`~tfmedseg.logs.native_stderr_captured`): when the block succeeds, the routine ones
    (:data:`TFLITE_NOISE`) are logged at DEBUG and any other line is written back to stderr as it
    was; when it raises, every line is logged at DEBUG and left in ``captured`` for the error
    message (:func:`_failure_detail`). The converter's :data:`QUANTIZED_INPUT_STATS_WARNING` is
    filtered; other Python warnings pass.
    """
    lines: list[str] = []
    succeeded = False
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=QUANTIZED_INPUT_STATS_WARNING, category=UserWarning)
            with native_stderr_captured() as lines:
                yield
        succeeded = True
    finally:
        if captured is not None:
            captured.extend(lines)
        shown = [line for line in lines if succeeded and not _is_noise(line)]
        for line in lines:
            if line not in shown:
                logger.debug("TensorFlow Lite: %s", line)
        if shown:
            sys.stderr.write("\n".join(shown) + "\n")
            sys.stderr.flush()


def _failure_detail(exc: BaseException, captured: Iterable[str] = ()) -> str:
    """One line for a failed conversion or interpreter start: the exception's informative line (the
    first naming an error, from its ``error:``, else its first) and, when TFLite wrote it to stderr,
    what the exception lacks: the ops it cannot run (``Custom ops: ...`` / ``TF Select ops: ...``),
    else its last line naming an error (else its last line that is not routine)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
    if "error: " in first:  # "<file>:<line>:<col>: error: 'tf.Igamma' op is neither a custom op nor a flex op"
        first = first[first.index("error: ") + len("error: "):]
    detail = f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__
    other = [line.strip() for line in captured if line.strip() and not _is_noise(line)]
    native = "; ".join(line for line in other if re.match(r"(Custom|TF Select) ops: ", line)) or next(
        (line for line in reversed(other) if "error" in line.lower()), other[-1] if other else "")
    if native and native not in first:
        detail += f" (TFLite stderr: {native[:300]})"
    return detail


def _block_diagonal_kernel(kernel: np.ndarray, groups: int) -> np.ndarray:
    """``[k, k, k, Cin/groups, Cout]`` grouped kernel -> ``[k, k, k, Cin, Cout]`` plain kernel."""
    *spatial, cin_g, cout = kernel.shape
    cout_g = cout // groups
    full = np.zeros((*spatial, cin_g * groups, cout), kernel.dtype)
    for g in range(groups):
        full[..., g * cin_g:(g + 1) * cin_g, g * cout_g:(g + 1) * cout_g] = kernel[..., g * cout_g:(g + 1) * cout_g]
    return full


def tflite_compatible_clone(model: Any) -> Any:
    """A clone of ``model`` with TFLite-incompatible layers replaced by exact equivalents.

    Four rewrites (``model`` itself is returned when none applies):

    1. every :class:`~tfmedseg.models.blocks.separable3d.DepthwiseConv3D` not yet ``"unrolled"`` is
       switched to ``"unrolled"`` with :func:`~tfmedseg.models.blocks.separable3d.with_depthwise3d_implementation`
       (a ``keras.Model`` subclass whose config names ``depthwise3d_implementation``, such as
       :class:`~tfmedseg.models.segmentation.efficient.EfficientSegmenter`, is rebuilt from its config);
    2. every grouped ``Conv3D`` becomes a plain ``Conv3D`` with a block-diagonal kernel;
    3. every non-overlapping ``MaxPooling3D`` becomes a
       :class:`~tfmedseg.models.blocks.resampling.ReshapeMaxPooling` (identical values);
    4. every :class:`~tfmedseg.models.blocks.onednn_conv.OneDNNConv2D` (SSD's VGG-16) becomes a plain
       ``keras.layers.Conv2D`` with the same config and weights: its oneDNN forward is a
       ``Conv2DBackpropInput``, which TFLite would run as ``TRANSPOSE_CONV`` with a run-time output
       shape (``SHAPE``/``STRIDED_SLICE``/``CONCATENATION``) instead of one ``CONV_2D``.

    Layers of nested functional (or sequential) models are rewritten too. A subclassed model that
    ``clone_model`` cannot clone (e.g. :class:`~tfmedseg.models.detection.ssd.SSD` around its VGG-16) and whose
    only rewrites are ``OneDNNConv2D`` layers is rebuilt from its config with ``Conv2D`` in their place
    (:func:`_rebuilt_with_plain_conv2d`); if that fails too, it is returned as it is with a warning. Outputs
    agree with ``model`` to float32 round-off (different summation order).

    Args:
        model: A built Keras model.

    Returns:
        A Keras model that converts to TFLite builtins only.

    Raises:
        ExportError: A layer with no TFLite equivalent (an overlapping or padded ``MaxPooling3D``),
            named in the message, or a
            model that cannot be cloned.
    """
    import keras

    from tfmedseg.models.blocks.resampling import ReshapeMaxPooling
    from tfmedseg.models.blocks.separable3d import with_depthwise3d_implementation

    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.MaxPooling3D) and not _is_reshape_poolable(layer):
            raise ExportError("MaxPooling3D has no TFLite builtin and only non-overlapping 'valid' pooling "
                              f"(strides == pool_size) is rewritten; got pool_size={layer.pool_size}, "
                              f"strides={layer.strides}, padding={layer.padding!r}", path=layer.name)
    if any(_is_grouped_depthwise3d(layer) for layer in model.layers):
        try:
            model = with_depthwise3d_implementation(model, "unrolled")
        except Exception as exc:
            raise ExportError(f"cannot switch DepthwiseConv3D to 'unrolled' for TFLite: {type(exc).__name__}: {exc}",
                              path=model.name) from exc
    rewritten = [layer for layer in _clone_walk(model) if _is_grouped_conv3d(layer) or _is_onednn_conv2d(layer)
                 or isinstance(layer, keras.layers.MaxPooling3D)]
    if not rewritten:
        return model

    grouped: dict[int, int] = {}
    leaves: set[int] = set()

    def clone(layer):
        leaves.add(id(layer))
        if _is_grouped_conv3d(layer):
            config = layer.get_config()
            grouped[id(layer)] = config["groups"]
            config["groups"] = 1
            return keras.layers.Conv3D.from_config(config)
        if isinstance(layer, keras.layers.MaxPooling3D):
            return ReshapeMaxPooling(tuple(layer.pool_size), name=layer.name)
        if _is_onednn_conv2d(layer):
            return keras.layers.Conv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    try:
        cloned = keras.models.clone_model(model, clone_function=clone, recursive=True)
    except Exception as exc:
        if all(_is_onednn_conv2d(layer) for layer in rewritten):  # a subclassed model such as SSD: rebuild it
            try:
                return _rebuilt_with_plain_conv2d(model)
            except Exception as rebuild_exc:  # converts as it is, with TRANSPOSE_CONV
                logger.warning("%s cannot be cloned (%s: %s) nor rebuilt from its config (%s: %s); its OneDNNConv2D "
                               "layers stay TRANSPOSE_CONV in TFLite", model.name, type(exc).__name__, str(exc)[:200],
                               type(rebuild_exc).__name__, str(rebuild_exc)[:200])
                return model
        raise ExportError(f"cannot clone the model for TFLite: {type(exc).__name__}: {exc}", path=model.name) from exc
    _copy_weights(model, cloned, leaves, grouped)
    return cloned


def _rebuilt_with_plain_conv2d(model: Any) -> Any:
    """``model`` rebuilt from its serialized config with every ``OneDNNConv2D`` in it (at any depth, e.g. the
    VGG-16 backbone inside a subclassed :class:`~tfmedseg.models.detection.ssd.SSD`, which ``clone_model``
    cannot clone) deserialized as a plain ``keras.layers.Conv2D`` (same config), and ``model``'s weights set
    in their order (same variables, same shapes).

    Raises:
        Exception: Whatever the round trip raises (an incomplete ``get_config``, other weights): the caller
            keeps ``model``.
    """
    import keras

    plain = keras.saving.serialize_keras_object(keras.layers.Conv2D(1, 1))

    def swap(node: Any) -> Any:
        if isinstance(node, list):
            return [swap(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: swap(value) for key, value in node.items()}
        if node.get("registered_name") == _ONEDNN_CONV2D_NAME:
            node.update(module=plain["module"], class_name=plain["class_name"], registered_name=plain["registered_name"])
        return node

    rebuilt = keras.saving.deserialize_keras_object(swap(keras.saving.serialize_keras_object(model)))
    if any(_is_onednn_conv2d(layer) for layer in _all_layers(rebuilt)):
        raise ValueError("OneDNNConv2D layers left after the rebuild")
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _copy_weights(old: Any, new: Any, leaves: set[int], grouped: dict[int, int]) -> None:
    """Copy the weights of ``old`` into its clone ``new`` layer by layer, descending into the nested
    models ``clone_model`` cloned recursively (those not in ``leaves``); a grouped ``Conv3D`` kernel
    (``grouped``: its groups) becomes its block-diagonal expansion."""
    import keras

    for old_layer, new_layer in zip(old.layers, new.layers):
        if id(old_layer) not in leaves and isinstance(old_layer, keras.Model):
            _copy_weights(old_layer, new_layer, leaves, grouped)
            continue
        weights = old_layer.get_weights()
        if id(old_layer) in grouped and weights:
            weights[0] = _block_diagonal_kernel(weights[0], grouped[id(old_layer)])
        new_layer.set_weights(weights)


def _clone_walk(model: Any) -> list[Any]:
    """``model``'s layers as ``keras.models.clone_model(..., recursive=True)`` visits them: descending
    into nested functional and sequential models (not into subclassed ones, which it rebuilds from
    their config)."""
    from keras.src.models.functional import Functional
    from keras.src.models.sequential import Sequential

    layers = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, (Functional, Sequential)):
            layers.extend(_clone_walk(layer))
    return layers


#: ``registered_name`` of :class:`~tfmedseg.models.blocks.onednn_conv.OneDNNConv2D` in a serialized config.
_ONEDNN_CONV2D_NAME = "tfmedseg>OneDNNConv2D"


def _is_onednn_conv2d(layer: Any) -> bool:
    from tfmedseg.models.blocks.onednn_conv import OneDNNConv2D

    return isinstance(layer, OneDNNConv2D)


def _all_layers(model: Any) -> list[Any]:
    """``model``'s layers, descending into nested models."""
    import keras

    layers = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(_all_layers(layer))
    return layers


def _is_grouped_depthwise3d(layer: Any) -> bool:
    from tfmedseg.models.blocks.separable3d import DepthwiseConv3D

    return isinstance(layer, DepthwiseConv3D) and layer.implementation != "unrolled"


def _is_grouped_conv3d(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.layers.Conv3D) and not isinstance(layer, keras.layers.Conv3DTranspose) and layer.groups > 1


def _is_reshape_poolable(layer: Any) -> bool:
    return tuple(layer.pool_size) == tuple(layer.strides) and layer.padding == "valid"


def _frozen_converter(model: Any) -> Any:
    """A converter over ``model``'s forward pass with its variables folded into constants.

    ``TFLiteConverter.from_keras_model`` first writes a temporary SavedModel and reloads it, which
    took 9 s for a 2D and 38 s for a 3D seed-002 network here; freezing a concrete function gives
    the same flatbuffer ops in 2-4 s. (An unfrozen ``from_concrete_functions`` keeps
    ``READ_VARIABLE`` ops that fail at run time, ``../shared/specs/perf-baselines.md`` section 6.)
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="image")
    forward = tf.function(lambda image: model(image, training=False), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen])


def convert_to_tflite(
    model: Any,
    quantization: str = "float32",
    representative_data: Callable[[], Iterable[np.ndarray]] | None = None,
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer.

    The model is passed through :func:`tflite_compatible_clone`, its forward pass (``training=False``)
    is frozen into constants and converted with TFLite builtins only.

    * ``"float32"``: outputs match Keras to float32 round-off (< 1e-6 measured).
    * ``"float16"``: float16 weights, dequantised at load; float32 arithmetic.
    * ``"int8"``: full-integer weights and activations calibrated on ``representative_data``;
      float32 at the boundary. Operators without an int8 kernel (``CONV_3D``) stay float32 between
      ``QUANTIZE``/``DEQUANTIZE`` pairs, so 3D models are only partly integer.

    Args:
        model: Keras model with one input ``[B, ...]`` (static non-batch dimensions).
        quantization: One of :data:`QUANTIZATIONS`.
        representative_data: For ``"int8"``: a callable returning an iterable of input batches
            (float32, the model's input shape, batch 1) drawn from the training pipeline.

    Returns:
        The ``.tflite`` model bytes (float32 input ``image`` and float32 output in every variant).

    Raises:
        ExportError: Unknown quantization, int8 without representative data, a subclassed model with no
            functional input (:class:`~tfmedseg.models.detection.ssd.SSD`: convert ``ssd.network``), or a
            conversion failure.
    """
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quantization!r}; allowed: {QUANTIZATIONS}", path="quantization")
    if quantization == "int8" and representative_data is None:
        raise ExportError("full-integer int8 needs representative_data (a few input batches)", path="representative_data")
    model = tflite_compatible_clone(model)
    if not hasattr(model, "inputs"):  # a subclassed model never called on a Keras input, e.g. SSD around its network
        raise ExportError("a subclassed model without a functional input: convert its functional part (e.g. "
                          "ssd.network: SSD's CombinedNonMaxSuppression has no TFLite builtin)", path=model.name)
    if len(model.inputs) != 1:
        raise ExportError(f"TFLite export expects a model with one input, got {len(model.inputs)}", path=model.name)
    try:
        converter = _frozen_converter(model)
    except Exception as exc:
        raise ExportError(f"cannot trace the model for TFLite: {type(exc).__name__}: {str(exc)[:500]}", path=model.name) from exc
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def gen():
            for batch in representative_data():
                yield [np.asarray(batch, np.float32)]

        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    captured: list[str] = []
    try:
        with tflite_output(captured):
            if quantization != "int8":
                return converter.convert()
            flatbuffer = _calibrate_and_quantize(converter, _float_layer_names(model))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"TFLite {quantization} conversion failed: {_failure_detail(exc, captured)}", path=model.name) from exc
    _check_prepares_in_child(flatbuffer, f"TFLite {quantization} model of {model.name}")
    return flatbuffer


#: A calibrated activation range narrower than this is treated as constant (see
#: :func:`widen_constant_ranges`).
CONSTANT_RANGE = 1e-6


def _float_layer_names(model: Any) -> list[str]:
    """Names of the layers that stay float32 in an int8 model: those computing statistics of their
    input at run time (:class:`~tfmedseg.models.blocks.se_norm.SENormalization`,
    :class:`~tfmedseg.models.blocks.se_norm.InstanceNormalization`, Keras' layer and group norm).

    Quantised, their variance takes the int8 scale of the activations: small variances round to 0,
    the epsilon (1e-5) vanishes, and ``rsqrt`` blows up. Measured on the trained seed-004 quick SE U-Net
    (2 validation cubes): fully quantised, Dice against the labels 0.18 (Keras 0.86); with these
    layers in float32, 0.86 (docs/export.md). Batch norm is folded into the convolutions and unaffected.
    """
    import keras

    from tfmedseg.models.blocks.se_norm import InstanceNormalization, SENormalization

    kinds = (SENormalization, InstanceNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization)
    return [layer.name for layer in _all_layers(model) if isinstance(layer, kinds)]


def _nodes_of_layers(calibrated_model: Any, layer_names: Iterable[str]) -> list[str]:
    """The tensor (node) names of a calibrated TFLite model that belong to the given Keras layers.

    Node names are TF name scopes, ``<model>_1/<layer>_1/moments/mean``: a path component equal
    to a layer name, or to it plus Keras' ``_<n>`` uniquifying suffix, marks the layer's nodes.
    Fused names (``a;b``) are returned whole and per part, so either way the quantiser matches them.
    """
    import re

    wanted = set(layer_names)
    if not wanted:
        return []
    nodes: set[str] = set()
    for subgraph in calibrated_model.subgraphs:
        for tensor in subgraph.tensors:
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            parts = [part for part in name.split(";") if any(re.sub(r"_\d+$", "", c) in wanted or c in wanted
                                                           for c in part.split("/")[:-1])]
            if parts:
                nodes.add(name)
                nodes.update(parts)
    return sorted(nodes)


def _calibrate_and_quantize(converter: Any, float_layers: list[str]) -> bytes:
    """Full-integer quantisation in two steps, calibration then quantisation, with the calibrated
    ranges repaired in between (:func:`widen_constant_ranges`) and the nodes of ``float_layers``
    kept in float32 (:func:`_float_layer_names`).

    The steps are the converter's own, as TF's ``QuantizationDebugger`` runs them for selective
    quantisation: ``_experimental_calibrate_only``, then ``mlir_quantize`` with float32 input and
    output and the denylisted nodes.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert
    from tensorflow.lite.tools import flatbuffer_utils

    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    calibrated, widened = widen_constant_ranges(calibrated)
    if widened:
        logger.info("int8 calibration saw %d activation(s) constant at 0 (e.g. ReLU units that never fired on the "
                    "representative data); their range was set to [0, 1]: %s", len(widened), ", ".join(widened[:5]))
    nodes = _nodes_of_layers(flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated)), float_layers)
    if nodes:
        logger.info("int8: %d normalisation layer(s) kept in float32 (%d nodes): %s", len(float_layers), len(nodes),
                    ", ".join(float_layers[:5]))
    return tflite_convert.mlir_quantize(calibrated, disable_per_channel=converter._experimental_disable_per_channel,
                                        input_data_type=tf.float32, output_data_type=tf.float32,
                                        denylisted_nodes=nodes or None)


def widen_constant_ranges(calibrated: bytes) -> tuple[bytes, list[str]]:
    """Give every activation that calibration saw constant a usable int8 range.

    A ReLU unit that never fires on the representative data (a "dead" unit; a trained seed-004 SE
    U-Net has some in its squeeze-excitation branches) is calibrated to the range
    ``[0, 1.2e-38]``. The quantiser turns that into an int8 scale of ~1e-8 and the next
    ``FULLY_CONNECTED`` gets a bias scale of ~1e-11; LiteRT's XNNPACK delegate (the default) then
    aborts the whole process while preparing the model ("free(): double free detected in tcache
    2", SIGABRT) instead of reporting an error. Widening such a range (width below
    :data:`CONSTANT_RANGE`) to ``[min(lo, 0), min(lo, 0) + 1]`` keeps 0 exactly representable (the
    value those units output) and gives a normal scale of 1/255. Ranges are judged after including
    0, as the quantiser does, so only activations that stayed within :data:`CONSTANT_RANGE` of 0
    are touched.

    Args:
        calibrated: A calibrated (not yet quantised) TFLite model, ``_experimental_calibrate_only``.

    Returns:
        ``(model bytes, names of the widened tensors)``; the input bytes when none was widened.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    widened = []
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            q = tensor.quantization
            if q is None or q.min is None or q.max is None or len(q.min) != 1 or len(q.max) != 1:
                continue
            if model.buffers[tensor.buffer].data is not None and len(model.buffers[tensor.buffer].data):
                continue  # a constant: quantised from its values, not from calibration
            low, high = min(float(q.min[0]), 0.0), max(float(q.max[0]), 0.0)  # the quantiser includes 0
            if high - low < CONSTANT_RANGE:
                q.min[0], q.max[0] = low, low + 1.0
                name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
                widened.append(name.split(";")[-1])
    if not widened:
        return calibrated, []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), widened


_PREPARE_CHECK = """
import sys
try:
    from ai_edge_litert import interpreter
except ImportError:
    sys.exit(0)
interpreter.Interpreter(model_path=sys.argv[1], num_threads=1).allocate_tensors()
"""


def _check_prepares_in_child(flatbuffer: bytes, what: str) -> None:
    """Prepare ``flatbuffer`` with LiteRT's default delegates in a child process.

    A delegate that cannot handle a graph may abort the process natively (seen with XNNPACK on
    int8 models, see :func:`widen_constant_ranges`) rather than raise; checking in a child turns
    that into an :class:`~tfmedseg.errors.ExportError` instead of killing the export command. A
    Python-level failure (``RuntimeError``) is only logged: :class:`TFLiteRunner` then uses the
    builtin kernels.
    Skipped when ``ai-edge-litert`` is not installed (the ``tf.lite`` fallback loads all of
    TensorFlow, too slow for a check).
    """
    import signal
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tfmedseg_tflite_check_") as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as f:
            f.write(flatbuffer)
        proc = subprocess.run([sys.executable, "-c", _PREPARE_CHECK, path], capture_output=True, text=True)
    detail = " ".join(proc.stderr.strip().splitlines()[-2:])[-300:]
    if proc.returncode > 0:  # a Python error, e.g. "failed to create XNNPACK runtime": TFLiteRunner falls back
        logger.warning("LiteRT's default delegate cannot prepare the %s; runners fall back to the builtin kernels (%s)",
                       what, detail)
    if proc.returncode >= 0:
        return
    raise ExportError(f"LiteRT aborts preparing the converted {what} with its default (XNNPACK) delegate: the check "
                      f"process was killed by {signal.Signals(-proc.returncode).name} ({detail or 'no message'})",
                      path=what.split(" of ")[-1])


class TFLiteRunner:
    """Run a ``.tflite`` model with LiteRT (``ai-edge-litert``), falling back to ``tf.lite``.

    The interpreter uses LiteRT's default XNNPACK delegate. When XNNPACK fails to prepare a
    graph (seen with the partly-integer int8 3D networks: "failed to create XNNPACK runtime"),
    the runner retries with the builtin kernels only; :attr:`delegate` says which is in use.

    Args:
        model: Flatbuffer bytes or a ``.tflite`` path.
        num_threads: CPU threads for the interpreter.

    Attributes:
        delegate: ``"xnnpack"`` (default delegates applied) or ``"builtin"`` (reference kernels).

    Raises:
        ExportError: The model cannot be loaded or prepared by either interpreter set-up.
    """

    def __init__(self, model: bytes | str | os.PathLike, num_threads: int = 1):
        try:
            from ai_edge_litert import interpreter as litert
        except ImportError:  # pragma: no cover - the export extra installs it
            import tensorflow as tf

            litert = tf.lite
            resolver = tf.lite.experimental.OpResolverType
        else:
            resolver = litert.OpResolverType
        kwargs = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": os.fspath(model)}
        source = "model bytes" if "model_content" in kwargs else kwargs["model_path"]
        captured: list[str] = []
        try:
            with tflite_output(captured):  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." -> DEBUG
                self.interpreter = litert.Interpreter(num_threads=num_threads, **kwargs)
                self.interpreter.allocate_tensors()
            self.delegate = "xnnpack"
        except (RuntimeError, ValueError) as exc:
            if "XNNPACK" not in str(exc):
                raise ExportError(f"LiteRT cannot load the model: {_failure_detail(exc, captured)}", path=source) from exc
            captured.clear()
            try:
                with tflite_output(captured):
                    self.interpreter = litert.Interpreter(
                        num_threads=num_threads, experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                        **kwargs)
                    self.interpreter.allocate_tensors()
            except (RuntimeError, ValueError) as exc2:
                raise ExportError(f"LiteRT cannot prepare the model: {_failure_detail(exc2, captured)}", path=source) from exc2
            self.delegate = "builtin"
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The interpreter's input shape (batch 1 as converted)."""
        return tuple(int(v) for v in self._input["shape"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run one batch; the batch is fed sample by sample when the model was converted at batch 1."""
        x = np.asarray(x, np.float32)
        if x.shape[1:] != self.input_shape[1:]:
            raise ExportError(f"input shape {x.shape} does not fit the TFLite model input {self.input_shape}", path="input")
        outputs = []
        for sample in x:
            self.interpreter.set_tensor(self._input["index"], sample[None])
            self.interpreter.invoke()
            outputs.append(self.interpreter.get_tensor(self._output["index"])[0].copy())
        return np.stack(outputs)
