"""Parameters and multiply-accumulates of a Keras model, counted the way ptflops counts.

The thesis behind seed 002 reports "FLOPs" measured with sovrasov's ``flops-counter.pytorch``
(ptflops, 2020). ptflops sums per-module forward hooks, and what it calls FLOPs are
multiply-accumulates (MACs). :func:`model_complexity` applies the same per-layer rules to a
Keras functional model, from each layer's static input and output shapes, for one sample:

=============================================  ================================================
Keras layer                                     MACs per sample (ptflops hook)
=============================================  ================================================
``Conv1D/2D/3D`` (incl. ``groups``),            ``prod(out_spatial) * prod(kernel) * C_in *
``DepthwiseConv1D/2D``, ``DepthwiseConv3D``,    C_out / groups`` ``+ C_out * prod(out_spatial)``
``Conv*Transpose``                              with a bias (transposed convs use the output
                                                size, as ptflops does)
``SeparableConv1D/2D``                          depthwise + pointwise as above
``Dense``                                       ``numel(in) * units (+ units with a bias)``
``BatchNormalization``,                         ``numel(in) * 2`` when affine (scale or center),
``GroupNormalization``, ``LayerNormalization``   else ``numel(in)``
``ReLU`` (incl. ReLU6), ``LeakyReLU``, ``ELU``,  ``numel(out)``; the same for these activations
``PReLU``, ``Activation(relu/relu6/elu/...)``   fused into a convolution or dense layer
``MaxPooling*``, ``AveragePooling*``,           ``numel(in)``
``GlobalAveragePooling*``, ``GlobalMaxPooling*``
``UpSampling*``, ``Resizing``                   ``numel(out)``
everything else (sigmoid, swish, h-swish,       0 (ptflops has no module hook for them, and it
softmax, add, multiply, concatenate, crop,      does not see functional ops)
reshape, custom layers)
=============================================  ================================================

Parameters are the trainable weights (ptflops counts ``requires_grad`` parameters: batch-norm
moving statistics are excluded).

Example:
    >>> import keras
    >>> from tfmedseg.models.flops import model_complexity
    >>> x = keras.Input((8, 8, 3))
    >>> m = keras.Model(x, keras.layers.Conv2D(4, 3, padding="same")(x))
    >>> r = model_complexity(m)
    >>> (r.macs, r.params)  # 64 * 27 * 4 + 64 * 4 bias
    (7168, 112)
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import keras
import numpy as np

__all__ = ["LayerComplexity", "ComplexityReport", "model_complexity", "layer_macs"]

_RELU_LIKE = ("relu", "relu6", "leaky_relu", "elu", "gelu")


@dataclasses.dataclass(frozen=True)
class LayerComplexity:
    """MACs and trainable parameters of one layer (per sample)."""

    name: str
    class_name: str
    macs: int
    params: int


@dataclasses.dataclass(frozen=True)
class ComplexityReport:
    """Totals and the per-layer breakdown of :func:`model_complexity`.

    Attributes:
        macs: Multiply-accumulates for one sample (ptflops "FLOPs").
        params: Trainable parameters.
        layers: One :class:`LayerComplexity` per layer, in model order (nested models expanded).
    """

    macs: int
    params: int
    layers: tuple[LayerComplexity, ...]

    def by_prefix(self, prefix: str) -> tuple[int, int]:
        """(MACs, params) summed over the layers whose name starts with ``prefix``."""
        chosen = [lc for lc in self.layers if lc.name.startswith(prefix)]
        return sum(lc.macs for lc in chosen), sum(lc.params for lc in chosen)


def _numel(shape) -> int:
    dims = tuple(shape)[1:]
    if any(d is None for d in dims):
        raise ValueError(f"MAC counting needs static shapes, got {tuple(shape)}; build the model with a "
                         "fixed input shape")
    return int(np.prod(dims, dtype=np.int64))


def _shapes(tensors) -> list[tuple]:
    if isinstance(tensors, (list, tuple)):
        return [tuple(t.shape) for t in tensors]
    return [tuple(tensors.shape)]


def _activation_name(activation) -> str:
    return getattr(activation, "__name__", str(activation))


def _relu_like(activation) -> bool:
    return _activation_name(activation) in _RELU_LIKE


def _conv_macs(kernel_size, c_in, c_out, groups, out_shape, use_bias) -> int:
    positions = _numel(tuple(out_shape)[:-1])
    macs = positions * int(np.prod(kernel_size)) * c_in * (c_out // groups)
    if use_bias:
        macs += c_out * positions
    return macs


def layer_macs(layer: keras.layers.Layer, input_shapes: list[tuple], output_shapes: list[tuple]) -> int:
    """MACs of one call of ``layer`` for one sample, by the rules in the module docstring.

    Args:
        layer: A Keras layer.
        input_shapes: Static shapes (with the batch axis first) of the call's inputs.
        output_shapes: Static shapes of the call's outputs.

    Returns:
        Multiply-accumulates as an int (0 for layers ptflops does not count).
    """
    from tfmedseg.models.blocks.separable3d import DepthwiseConv3D

    L = keras.layers
    in_shape, out_shape = input_shapes[0], output_shapes[0]
    macs = 0
    fused = getattr(layer, "activation", None)
    if isinstance(layer, DepthwiseConv3D):
        c = in_shape[-1]
        macs = _conv_macs(layer.kernel_size, c, c, c, out_shape, layer.use_bias)
    elif isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        c = in_shape[-1]
        mult = layer.depth_multiplier
        macs = _conv_macs(layer.kernel_size, c, c * mult, c, out_shape, False)
        macs += _conv_macs((1,), c * mult, layer.filters, 1, out_shape, layer.use_bias)
    elif isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        c = in_shape[-1]
        mult = layer.depth_multiplier
        macs = _conv_macs(layer.kernel_size, c, c * mult, c, out_shape, layer.use_bias)
    elif isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D, L.Conv1DTranspose, L.Conv2DTranspose,
                            L.Conv3DTranspose)):
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(f"{layer.name}: only channels_last convolutions are supported")
        groups = getattr(layer, "groups", 1)
        c_in = sum(s[-1] for s in input_shapes) if getattr(layer, "_split_channels", None) else in_shape[-1]  # ConcatConv
        macs = _conv_macs(layer.kernel_size, c_in, layer.filters, groups, out_shape, layer.use_bias)
    elif isinstance(layer, L.Dense):
        macs = _numel(in_shape) * layer.units + (layer.units if layer.use_bias else 0)
    elif isinstance(layer, (L.BatchNormalization, L.GroupNormalization, L.LayerNormalization)):
        affine = getattr(layer, "scale", False) or getattr(layer, "center", False)
        macs = _numel(in_shape) * (2 if affine else 1)
    elif isinstance(layer, (L.ReLU, L.LeakyReLU, L.ELU, L.PReLU)):
        macs = _numel(out_shape)
    elif isinstance(layer, L.Activation):
        macs = _numel(out_shape) if _relu_like(layer.activation) else 0
        fused = None
    elif isinstance(layer, (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
                            L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
                            L.GlobalAveragePooling2D, L.GlobalAveragePooling3D, L.GlobalMaxPooling1D,
                            L.GlobalMaxPooling2D, L.GlobalMaxPooling3D)):
        macs = _numel(in_shape)
    elif isinstance(layer, (L.UpSampling1D, L.UpSampling2D, L.UpSampling3D, L.Resizing)):
        macs = _numel(out_shape)
    if fused is not None and _relu_like(fused):
        macs += _numel(out_shape)
    return int(macs)


def _walk(model: keras.Model) -> Iterable[LayerComplexity]:
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            yield from _walk(layer)
            continue
        params = int(sum(int(np.prod(w.shape)) for w in layer.trainable_weights))
        macs = 0
        nodes = [n for n in getattr(layer, "_inbound_nodes", [])]
        if not nodes:
            raise ValueError(f"{layer.name}: layer was never called; MACs need a built functional model")
        for node in nodes:
            macs += layer_macs(layer, _shapes(node.input_tensors), _shapes(node.output_tensors))
        yield LayerComplexity(layer.name, layer.__class__.__name__, macs, params)


def model_complexity(model: keras.Model) -> ComplexityReport:
    """Count trainable parameters and MACs (one sample) of a functional Keras model.

    Args:
        model: A functional ``keras.Model`` (or a subclass built with ``inputs``/``outputs``)
            with static input shapes; nested functional models are expanded.

    Returns:
        A :class:`ComplexityReport`.

    Raises:
        ValueError: The model is not functional or has a dynamic (``None``) spatial shape.
    """
    if not hasattr(model, "_inbound_nodes") or not model.layers:
        raise ValueError("model_complexity needs a functional keras.Model")
    layers = tuple(_walk(model))
    return ComplexityReport(
        macs=sum(lc.macs for lc in layers),
        params=sum(lc.params for lc in layers),
        layers=layers,
    )
