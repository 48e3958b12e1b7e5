"""TFLite conversion (float32, float16, full-integer int8) and a LiteRT runner.

Two things the TFLite runtime cannot run are rewritten at export time into exact equivalents:

* grouped ``Conv3D`` (our 3D depthwise convolutions): it converts but fails at run time
  ("input->dims->data[4] != filter->dims->data[3]"), so each is replaced by a plain ``Conv3D`` whose
  kernel is the block-diagonal expansion of the grouped kernel (zeros between groups);
* ``MaxPooling3D`` is not a TFLite builtin (and pip runtimes lack the Flex delegate): builders avoid it
  and :func:`tflite_compatible_clone` raises a clear :class:`~tfmedseg.errors.ExportError` if it is met.

Dynamic-range int8 is deliberately not offered: it was measured 4x slower than float32 on our CPU
(``../shared/specs/perf-baselines.md`` section 6); full-integer int8 runs at float32 speed, 4x smaller.
Inputs and outputs stay float32 in every variant.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import numpy as np

from tfmedseg.errors import ExportError

__all__ = ["QUANTIZATIONS", "tflite_compatible_clone", "convert_to_tflite", "TFLiteRunner"]

QUANTIZATIONS = ("float32", "float16", "int8")


def _block_diagonal_kernel(kernel: np.ndarray, groups: int) -> np.ndarray:
    """``[k, k, k, Cin/groups, Cout]`` grouped kernel -> ``[k, k, k, Cin, Cout]`` plain kernel."""
    *spatial, cin_g, cout = kernel.shape
    cout_g = cout // groups
    full = np.zeros((*spatial, cin_g * groups, cout), kernel.dtype)
    for g in range(groups):
        full[..., g * cin_g:(g + 1) * cin_g, g * cout_g:(g + 1) * cout_g] = kernel[..., g * cout_g:(g + 1) * cout_g]
    return full


def tflite_compatible_clone(model: Any) -> Any:
    """A functional clone of ``model`` with TFLite-incompatible layers replaced by exact equivalents.

    Raises:
        ExportError: A layer with no TFLite equivalent (``MaxPooling3D``), named in the message.
    """
    import keras

    grouped: dict[str, int] = {}

    def clone(layer):
        if isinstance(layer, keras.layers.MaxPooling3D):
            raise ExportError("MaxPooling3D has no TFLite builtin; build the model with strided convolutions", path=layer.name)
        if isinstance(layer, keras.layers.Conv3D) and not isinstance(layer, keras.layers.Conv3DTranspose) and layer.groups > 1:
            config = layer.get_config()
            grouped[layer.name] = config["groups"]
            config["groups"] = 1
            return keras.layers.Conv3D.from_config(config)
        return layer.__class__.from_config(layer.get_config())

    if not any(_needs_rewrite(layer) for layer in model.layers):
        return model
    try:
        cloned = keras.models.clone_model(model, clone_function=clone)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"cannot clone the model for TFLite: {type(exc).__name__}: {exc}", path=model.name) from exc
    for old, new in zip(model.layers, cloned.layers):
        weights = old.get_weights()
        if old.name in grouped and weights:
            weights[0] = _block_diagonal_kernel(weights[0], grouped[old.name])
        new.set_weights(weights)
    return cloned


def _needs_rewrite(layer: Any) -> bool:
    import keras

    if isinstance(layer, keras.layers.MaxPooling3D):
        return True
    return isinstance(layer, keras.layers.Conv3D) and not isinstance(layer, keras.layers.Conv3DTranspose) and layer.groups > 1


def convert_to_tflite(
    model: Any,
    quantization: str = "float32",
    representative_data: Callable[[], Iterable[np.ndarray]] | None = None,
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer.

    Args:
        model: Keras model (one input); it is first passed through :func:`tflite_compatible_clone`.
        quantization: One of :data:`QUANTIZATIONS`.
        representative_data: For ``"int8"``: a callable returning an iterable of input batches
            (float32, the model's input shape, batch 1) drawn from the training pipeline.

    Returns:
        The ``.tflite`` model bytes (float32 input and output in every variant).

    Raises:
        ExportError: Unknown quantization, int8 without representative data, or a conversion failure.
    """
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quantization!r}; allowed: {QUANTIZATIONS}", path="quantization")
    if quantization == "int8" and representative_data is None:
        raise ExportError("full-integer int8 needs representative_data (a few input batches)", path="representative_data")
    model = tflite_compatible_clone(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
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
    try:
        return converter.convert()
    except Exception as exc:
        raise ExportError(f"TFLite {quantization} conversion failed: {type(exc).__name__}: {str(exc)[:500]}", path=model.name) from exc


class TFLiteRunner:
    """Run a ``.tflite`` model with LiteRT (``ai-edge-litert``), falling back to ``tf.lite``.

    Args:
        model: Flatbuffer bytes or a ``.tflite`` path.
        num_threads: CPU threads for the interpreter.
    """

    def __init__(self, model: bytes | str | os.PathLike, num_threads: int = 1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - the export extra installs it
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        kwargs = {"model_content": model} if isinstance(model, (bytes, bytearray)) else {"model_path": os.fspath(model)}
        self.interpreter = Interpreter(num_threads=num_threads, **kwargs)
        self.interpreter.allocate_tensors()
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
