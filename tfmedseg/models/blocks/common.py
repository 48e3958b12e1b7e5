"""Building pieces shared by the efficient block families, for 2D and 3D tensors.

Every helper takes the spatial rank (2 for ``[B, H, W, C]``, 3 for ``[B, D, H, W, C]``) from
its input tensor, so one implementation serves both. Sublayers are named after the ``name``
argument (``f"{name}_conv"``, ``f"{name}_bn"``, ...), so weights and MAC reports can be traced
back to a block.

Activation names accepted by :func:`apply_activation` (tuple :data:`ACTIVATIONS`):

* ``"relu"``, ``"relu6"``: ``keras.layers.ReLU`` (the only ones ptflops counts, see
  :mod:`tfmedseg.models.flops`);
* ``"swish"``: ``x * sigmoid(x)`` (EfficientNet);
* ``"hard_swish"``: ``x * relu6(x + 3) / 6`` (MobileNetV3, Howard et al. 2019, eq. 2; the
  thesis' eq. 2.5 has a typo);
* ``"sigmoid"``, ``"hard_sigmoid"`` (``relu6(x + 3) / 6``): squeeze-and-excitation gates;
* ``"linear"``: identity, no layer.

Example:
    >>> import keras

from tfmedseg.models.blocks.normalization import batch_norm
    >>> from tfmedseg.models.blocks import common
    >>> x = keras.Input((16, 16, 8))
    >>> y = common.apply_conv_bn_act(x, 12, kernel_size=3, strides=2, name="stem")
    >>> tuple(y.shape)
    (None, 8, 8, 12)
"""

from __future__ import annotations

import functools
from typing import Sequence

import keras

from tfmedseg.models.blocks import matmul_grad_conv
from tfmedseg.models.blocks.depthwise3d import DepthwiseConv3D
from tfmedseg.models.blocks.normalization import batch_norm
from tfmedseg.models.blocks.shapes import as_tuple, spatial_rank

__all__ = [
    "ACTIVATIONS",
    "spatial_rank",
    "as_tuple",
    "apply_activation",
    "apply_conv",
    "apply_conv_bn_act",
    "apply_depthwise_conv",
    "apply_squeeze_excite",
    "BN_MOMENTUM",
    "BN_EPSILON",
    "batch_norm",
]

ACTIVATIONS = ("relu", "relu6", "swish", "hard_swish", "sigmoid", "hard_sigmoid", "linear")
BN_MOMENTUM = 0.9  # PyTorch BatchNorm2d default (momentum 0.1), the framework the seed-002 thesis used; 0.99 left inference-mode statistics far behind on short CPU runs
BN_EPSILON = 1e-3

_CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
_GLOBAL_POOL = {
    1: keras.layers.GlobalAveragePooling1D,
    2: keras.layers.GlobalAveragePooling2D,
    3: keras.layers.GlobalAveragePooling3D,
}


def apply_activation(x, activation: str, name: str):
    """Apply a named activation as its own layer ``name`` (nothing for ``"linear"``).

    Args:
        x: Tensor of any shape.
        activation: One of :data:`ACTIVATIONS`.
        name: Layer name.

    Returns:
        Tensor of the same shape and dtype.

    Raises:
        ValueError: Unknown activation name; the message lists the allowed names.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if activation == "linear":
        return x
    if activation == "relu":
        return keras.layers.ReLU(name=name)(x)
    if activation == "relu6":
        return keras.layers.ReLU(max_value=6.0, name=name)(x)
    keras_name = {"hard_swish": "hard_silu", "swish": "silu"}.get(activation, activation)
    return keras.layers.Activation(keras_name, name=name)(x)


def apply_conv(x, filters: int, kernel_size: int | Sequence[int] = 1, strides: int | Sequence[int] = 1,
               use_bias: bool = False, name: str = "conv"):
    """A plain 2D/3D convolution with ``"same"`` padding (rank taken from ``x``).

    2D/3D: :func:`tfmedseg.models.blocks.matmul_grad_conv.conv` (Keras' layer with the kernel
    gradient as matmuls, or for 3D as 2D kernel gradients over the planes, where that is faster).

    Args:
        x: ``[B, H, W, C]`` or ``[B, D, H, W, C]`` float32 tensor.
        filters: Output channels.
        kernel_size: Int or per-axis tuple.
        strides: Int or per-axis tuple.
        use_bias: Add a bias (False when a normalisation follows).
        name: Layer name.

    Returns:
        ``[B, H/s, W/s, filters]`` (ceil division) or its 3D counterpart.
    """
    rank = spatial_rank(x)
    layer = _CONV[rank] if rank == 1 else functools.partial(matmul_grad_conv.conv, rank)
    return layer(
        filters,
        as_tuple(kernel_size, rank, "kernel_size"),
        strides=as_tuple(strides, rank, "strides"),
        padding="same",
        use_bias=use_bias,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def apply_conv_bn_act(x, filters: int, kernel_size: int | Sequence[int] = 1,
                      strides: int | Sequence[int] = 1, activation: str = "relu", name: str = "conv"):
    """Convolution (no bias) -> batch normalisation -> activation.

    Sublayers: ``f"{name}_conv"``, ``f"{name}_bn"``, ``f"{name}_act"``.

    Args:
        x: ``[B, H, W, C]`` or ``[B, D, H, W, C]`` float32 tensor.
        filters: Output channels.
        kernel_size: Int or per-axis tuple.
        strides: Int or per-axis tuple.
        activation: One of :data:`ACTIVATIONS`.
        name: Prefix of the sublayer names.

    Returns:
        Tensor with ``filters`` channels, spatial size divided by ``strides`` (ceil).
    """
    x = apply_conv(x, filters, kernel_size, strides, use_bias=False, name=f"{name}_conv")
    x = batch_norm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return apply_activation(x, activation, name=f"{name}_act")


def apply_depthwise_conv(x, kernel_size: int | Sequence[int] = 3, strides: int | Sequence[int] = 1,
                         name: str = "dwconv", implementation: str = "grouped"):
    """Depthwise (one filter per channel) convolution, ``"same"`` padding, no bias.

    2D uses ``keras.layers.DepthwiseConv2D``; 3D uses
    :class:`tfmedseg.models.blocks.depthwise3d.DepthwiseConv3D` with the given
    ``implementation`` (``"grouped"`` or ``"unrolled"``, see there).

    Args:
        x: ``[B, H, W, C]`` or ``[B, D, H, W, C]`` float32 tensor.
        kernel_size: Int or per-axis tuple, e.g. ``(3, 1, 1)``.
        strides: Int or per-axis tuple.
        name: Layer name.
        implementation: 3D only, the :class:`DepthwiseConv3D` implementation.

    Returns:
        Tensor with the same channels, spatial size divided by ``strides`` (ceil).
    """
    rank = spatial_rank(x)
    kernel_size = as_tuple(kernel_size, rank, "kernel_size")
    strides = as_tuple(strides, rank, "strides")
    if rank == 2:
        return keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding="same", use_bias=False,
            depthwise_initializer="he_normal", name=name,
        )(x)
    return DepthwiseConv3D(kernel_size, strides=strides, implementation=implementation, name=name)(x)


def apply_squeeze_excite(x, squeeze_filters: int, activation: str = "relu", gate: str = "sigmoid",
                         name: str = "se"):
    """Squeeze-and-excitation (Hu et al. 2018; thesis Sec. 2.1.8, Fig. 2.5 left).

    Global average pool -> 1x1 conv ``C -> squeeze_filters`` (bias) -> ``activation`` -> 1x1 conv
    ``squeeze_filters -> C`` (bias) -> ``gate`` -> channel-wise multiply with ``x``. Sublayers:
    ``f"{name}_squeeze"``, ``f"{name}_reduce"``, ``f"{name}_reduce_act"``, ``f"{name}_expand"``,
    ``f"{name}_gate"``, ``f"{name}_excite"``.

    Args:
        x: ``[B, H, W, C]`` or ``[B, D, H, W, C]`` float32 tensor.
        squeeze_filters: Bottleneck width (at least 1).
        activation: Activation between the two 1x1 convolutions.
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        name: Prefix of the sublayer names.

    Returns:
        Tensor of the shape of ``x``, each channel scaled by a gate in [0, 1].
    """
    rank = spatial_rank(x)
    channels = int(x.shape[-1])
    s = _GLOBAL_POOL[rank](keepdims=True, name=f"{name}_squeeze")(x)
    s = _CONV[rank](max(1, int(squeeze_filters)), 1, use_bias=True, name=f"{name}_reduce")(s)
    s = apply_activation(s, activation, name=f"{name}_reduce_act")
    s = _CONV[rank](channels, 1, use_bias=True, name=f"{name}_expand")(s)
    s = apply_activation(s, gate, name=f"{name}_gate")
    return keras.layers.Multiply(name=f"{name}_excite")([x, s])
