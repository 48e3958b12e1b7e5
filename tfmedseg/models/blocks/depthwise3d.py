"""3D depthwise convolution (:class:`DepthwiseConv3D`): Keras 3.15 has no ``DepthwiseConv3D``.

The layer keeps one kernel ``[kd, kh, kw, 1, C]`` and two interchangeable implementations with
identical weights and outputs:

- ``"grouped"``: one grouped 3D convolution (``groups = C``). Fast in TensorFlow and exact in
  SavedModel / TF Serving, but TFLite rejects it at run time
  (``conv3d.cc: input->dims->data[4] != filter->dims->data[3]``).
- ``"unrolled"``: ``kd`` depthwise 2D convolutions over depth-shifted slices, summed. Only
  TFLite builtins (``PAD``, ``STRIDED_SLICE``, ``RESHAPE``, ``DEPTHWISE_CONV_2D``, ``ADD``),
  so 3D models convert and run in TFLite. Needs a static depth.

:func:`with_depthwise3d_implementation` rebuilds a model with the other implementation and the same
weights (use it before TFLite conversion).

Example:
    >>> import keras
    >>> from tfmedseg.models.blocks.depthwise3d import DepthwiseConv3D
    >>> x = keras.Input((8, 16, 16, 4))
    >>> tuple(DepthwiseConv3D(3, strides=(1, 2, 2))(x).shape)
    (None, 8, 8, 8, 4)
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import ops

from tfmedseg.models.blocks.shapes import as_tuple
from tfmedseg.config import attribute_config

__all__ = ["DEPTHWISE3D_IMPLEMENTATIONS", "DepthwiseConv3D", "with_depthwise3d_implementation"]

DEPTHWISE3D_IMPLEMENTATIONS = ("grouped", "unrolled")


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow ``"same"`` padding: (output size, pad before, pad after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


@keras.saving.register_keras_serializable(package="tfmedseg")
class DepthwiseConv3D(keras.layers.Layer):
    """Depthwise 3D convolution: each channel convolved with its own ``kd x kh x kw`` filter.

    Args:
        kernel_size: Int or ``(kd, kh, kw)``.
        strides: Int or ``(sd, sh, sw)``; default 1.
        use_bias: Add a per-channel bias; default False (a normalisation follows in our blocks).
        implementation: ``"grouped"`` (default) or ``"unrolled"`` (TFLite-friendly, static depth).
        depthwise_initializer: Kernel initialiser; default ``"he_normal"``.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input: ``[B, D, H, W, C]`` float32. Output: ``[B, ceil(D/sd), ceil(H/sh), ceil(W/sw), C]``
    ("same" padding, TensorFlow convention: the extra pad goes after).

    Raises:
        ValueError: Unknown ``implementation``, or ``"unrolled"`` with an unknown depth.
    """

    def __init__(self, kernel_size: int | Sequence[int], strides: int | Sequence[int] = 1,
                 use_bias: bool = False, implementation: str = "grouped",
                 depthwise_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        if implementation not in DEPTHWISE3D_IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {DEPTHWISE3D_IMPLEMENTATIONS}, got {implementation!r}")
        self.kernel_size = as_tuple(kernel_size, 3, "kernel_size")
        self.strides = as_tuple(strides, 3, "strides")
        self.use_bias = bool(use_bias)
        self.implementation = implementation
        self.depthwise_initializer = keras.initializers.get(depthwise_initializer)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        # he_normal on a [k, k, k, 1, C] kernel uses fan_in = k^3, as for DepthwiseConv2D.
        self.kernel = self.add_weight(
            name="depthwise_kernel", shape=(*self.kernel_size, 1, channels),
            initializer=self.depthwise_initializer)
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros") if self.use_bias else None

    def call(self, inputs):
        if self.implementation == "grouped":
            y = ops.conv(inputs, self.kernel, strides=self.strides, padding="same")
        else:
            y = self._unrolled(inputs)
        if self.bias is not None:
            y = y + self.bias
        return y

    def _unrolled(self, x):
        depth = x.shape[1]
        if depth is None:
            raise ValueError(f"{self.name}: implementation='unrolled' needs a static depth, got shape {x.shape}")
        kd, kh, kw = self.kernel_size
        sd, sh, sw = self.strides
        out_depth, before, after = _same_padding(int(depth), kd, sd)
        if before or after:
            x = ops.pad(x, [[0, 0], [before, after], [0, 0], [0, 0], [0, 0]])
        shape = ops.shape(x)
        channels = x.shape[-1]
        total = None
        for i in range(kd):
            xi = x[:, i: i + (out_depth - 1) * sd + 1: sd]
            xi = ops.reshape(xi, (-1, shape[2], shape[3], channels))
            kernel = ops.reshape(self.kernel[i], (kh, kw, channels, 1))
            yi = ops.depthwise_conv(xi, kernel, strides=(sh, sw), padding="same")
            total = yi if total is None else total + yi
        out_shape = ops.shape(total)
        return ops.reshape(total, (-1, out_depth, out_shape[1], out_shape[2], channels))

    def compute_output_shape(self, input_shape):
        spatial = [None if s is None else math.ceil(s / st) for s, st in zip(input_shape[1:4], self.strides)]
        return (input_shape[0], *spatial, input_shape[-1])

    def get_config(self):
        return attribute_config(super().get_config(), self, "kernel_size", "strides", "use_bias", "implementation",
                                depthwise_initializer=keras.initializers.serialize(self.depthwise_initializer))


def with_depthwise3d_implementation(model: keras.Model, implementation: str) -> keras.Model:
    """A copy of ``model`` whose :class:`DepthwiseConv3D` layers use ``implementation``.

    The copy is rebuilt from ``model.get_config()`` (so it works for functional models and for
    ``keras.Model`` subclasses whose config names ``depthwise3d_implementation``) and receives
    ``model``'s weights; outputs agree to float32 round-off.

    Args:
        model: A built Keras model.
        implementation: One of :data:`DEPTHWISE3D_IMPLEMENTATIONS`.

    Returns:
        A new ``keras.Model``.

    Raises:
        ValueError: Unknown ``implementation``.
    """
    if implementation not in DEPTHWISE3D_IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {DEPTHWISE3D_IMPLEMENTATIONS}, got {implementation!r}")
    config = model.get_config()
    if "depthwise3d_implementation" in config:
        clone = model.__class__.from_config({**config, "depthwise3d_implementation": implementation})
    else:
        def clone_layer(layer):
            layer_config = layer.get_config()
            if isinstance(layer, DepthwiseConv3D):
                layer_config["implementation"] = implementation
            return layer.__class__.from_config(layer_config)

        clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone
