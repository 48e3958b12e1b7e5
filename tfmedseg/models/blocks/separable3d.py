"""3D depthwise convolution and the DSTS block.

* :class:`DepthwiseConv3D`: Keras 3.15 has no ``DepthwiseConv3D``. The layer keeps one kernel
  ``[kd, kh, kw, 1, C]`` and two interchangeable implementations with identical weights and
  outputs:

  - ``"grouped"``: one grouped 3D convolution (``groups = C``). Fast in TensorFlow and exact in
    SavedModel / TF Serving, but TFLite rejects it at run time
    (``conv3d.cc: input->dims->data[4] != filter->dims->data[3]``).
  - ``"unrolled"``: ``kd`` depthwise 2D convolutions over depth-shifted slices, summed. Only
    TFLite builtins (``PAD``, ``STRIDED_SLICE``, ``RESHAPE``, ``DEPTHWISE_CONV_2D``, ``ADD``),
    so 3D models convert and run in TFLite. Needs a static depth.

  :func:`with_depthwise3d_implementation` rebuilds a model with the other implementation and
  the same weights (use it before TFLite conversion).
* :func:`apply_dsts_block`: Depthwise Spatio-Temporal Separate module (Zhang et al., LW-HCN
  2019; thesis Sec. 2.1.9, Fig. 2.6) inside an inverted residual: 1x1x1 expansion -> parallel
  depthwise ``k x 1 x 1`` (temporal) and ``1 x k x k`` (spatial) -> concatenation -> SE ->
  1x1x1 projection -> residual.

Example:
    >>> import keras
    >>> from tfmedseg.models.blocks.separable3d import DepthwiseConv3D
    >>> x = keras.Input((8, 16, 16, 4))
    >>> tuple(DepthwiseConv3D(3, strides=(1, 2, 2))(x).shape)
    (None, 8, 8, 8, 4)
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import ops

from tfmedseg.models.blocks import common

__all__ = [
    "DEPTHWISE3D_IMPLEMENTATIONS",
    "DepthwiseConv3D",
    "with_depthwise3d_implementation",
    "apply_dsts_block",
]

DEPTHWISE3D_IMPLEMENTATIONS = ("grouped", "unrolled")
DSTS_MERGES = ("concat", "add")


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
        self.kernel_size = common.as_tuple(kernel_size, 3, "kernel_size")
        self.strides = common.as_tuple(strides, 3, "strides")
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
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            strides=self.strides,
            use_bias=self.use_bias,
            implementation=self.implementation,
            depthwise_initializer=keras.initializers.serialize(self.depthwise_initializer),
        )
        return config


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


def apply_dsts_block(x, filters: int, kernel_size: int = 3, strides: int | Sequence[int] = 1,
                     expand_ratio: float = 1.0, se_ratio: float = 0.25, activation: str = "relu",
                     merge: str = "concat", name: str = "dsts", implementation: str = "grouped"):
    """Inverted residual block whose depthwise step is a DSTS module.

    ``x -> [1x1x1 expand to C*e, BN, act] (skipped when e == 1) -> (depthwise k x 1 x 1 ||
    depthwise 1 x k x k, both with ``strides``) -> concat (2*C*e channels) -> BN -> act -> SE
    (squeeze = max(1, int(C_in * se_ratio))) -> 1x1x1 projection to ``filters`` -> BN -> + x``
    (residual when ``strides == 1`` and ``C_in == filters``).

    With ``e = 1`` the weights are ``C*(k + k^2) + 2C*filters`` plus BN/SE; for k = 3 and
    ``filters = C/2`` that is the thesis' ``c^2 + 12c`` (Sec. 2.1.9).

    Sublayers: ``{name}_expand_conv/_bn/_act``, ``{name}_temporal_dwconv``,
    ``{name}_spatial_dwconv``, ``{name}_concat``, ``{name}_dw_bn``, ``{name}_dw_act``,
    ``{name}_se_*``, ``{name}_project_conv``, ``{name}_project_bn``, ``{name}_add``.

    Args:
        x: ``[B, D, H, W, C]`` float32 tensor.
        filters: Output channels.
        kernel_size: Temporal and in-plane kernel length ``k``.
        strides: Int or ``(sd, sh, sw)``.
        expand_ratio: Expansion factor ``e`` of the inverted residual.
        se_ratio: SE bottleneck relative to the block input channels (0 disables SE).
        activation: Block activation (one of ``common.ACTIVATIONS``).
        name: Prefix of the sublayer names.
        implementation: :class:`DepthwiseConv3D` implementation.

    Returns:
        ``[B, D/sd, H/sh, W/sw, filters]`` float32 tensor.
    """
    if common.spatial_rank(x) != 3:
        raise ValueError(f"{name}: the DSTS block needs a [B, D, H, W, C] tensor, got shape {tuple(x.shape)}")
    strides = common.as_tuple(strides, 3, "strides")
    c_in = int(x.shape[-1])
    inputs = x
    hidden = int(round(c_in * expand_ratio))
    if expand_ratio != 1:
        x = common.apply_conv_bn_act(x, hidden, 1, activation=activation, name=f"{name}_expand")
    k = int(kernel_size)
    temporal = common.apply_depthwise_conv(x, (k, 1, 1), strides, name=f"{name}_temporal_dwconv",
                                           implementation=implementation)
    spatial = common.apply_depthwise_conv(x, (1, k, k), strides, name=f"{name}_spatial_dwconv",
                                          implementation=implementation)
    if merge not in DSTS_MERGES:
        raise ValueError(f"{name}: merge must be one of {DSTS_MERGES}, got {merge!r}")
    if merge == "concat":
        x = keras.layers.Concatenate(name=f"{name}_concat")([temporal, spatial])
    else:
        x = keras.layers.Add(name=f"{name}_merge_add")([temporal, spatial])
    x = common.batch_norm(momentum=common.BN_MOMENTUM, epsilon=common.BN_EPSILON,
                          name=f"{name}_dw_bn")(x)
    x = common.apply_activation(x, activation, name=f"{name}_dw_act")
    if se_ratio > 0:
        x = common.apply_squeeze_excite(x, max(1, int(c_in * se_ratio)), activation="relu",
                                        gate="sigmoid", name=f"{name}_se")
    x = common.apply_conv(x, filters, 1, name=f"{name}_project_conv")
    x = common.batch_norm(momentum=common.BN_MOMENTUM, epsilon=common.BN_EPSILON,
                          name=f"{name}_project_bn")(x)
    if strides == (1, 1, 1) and c_in == filters:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x
