"""Inverted residual blocks of the MobileNet family, 2D and 3D.

* :func:`apply_mbconv`: the MobileNetV2 inverted residual (Sandler et al. 2018) with
  squeeze-and-excitation as used by EfficientNet (Tan & Le 2019, "MBConv"): swish activations,
  SE bottleneck ``int(C_in * se_ratio)`` with a sigmoid gate. The thesis' "MobileNet-V2" encoder
  (Appendix A.3-A.5, SE 0.25 everywhere) is EfficientNet-B0's.
* :func:`apply_mobilenetv3_block`: the MobileNetV3 block (Howard et al. 2019): the same
  inverted residual with h-swish (or ReLU in the early stages) and a hard-sigmoid SE gate with a
  ReLU bottleneck.

The rank (2D ``[B, H, W, C]`` or 3D ``[B, D, H, W, C]``) is taken from the input; 3D blocks use
:class:`tfmedseg.models.blocks.separable3d.DepthwiseConv3D` with ``k x k x k`` kernels.

Example:
    >>> import keras
    >>> from tfmedseg.models.blocks.mobilenet import apply_mbconv
    >>> x = keras.Input((32, 32, 16))
    >>> tuple(apply_mbconv(x, 24, kernel_size=3, strides=2, expand_ratio=6, name="b").shape)
    (None, 16, 16, 24)
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfmedseg.models.blocks import common

__all__ = ["apply_mbconv", "apply_mobilenetv3_block"]


def _inverted_residual(x, filters, kernel_size, strides, expand_ratio, se_ratio, activation,
                       se_activation, se_gate, name, implementation):
    rank = common.spatial_rank(x)
    strides = common.as_tuple(strides, rank, "strides")
    if expand_ratio < 1:
        raise ValueError(f"{name}: expand_ratio must be >= 1, got {expand_ratio}")
    c_in = int(x.shape[-1])
    inputs = x
    if expand_ratio != 1:
        x = common.apply_conv_bn_act(x, int(round(c_in * expand_ratio)), 1, activation=activation,
                                     name=f"{name}_expand")
    x = common.apply_depthwise_conv(x, kernel_size, strides, name=f"{name}_dwconv",
                                    implementation=implementation)
    x = common.batch_norm(momentum=common.BN_MOMENTUM, epsilon=common.BN_EPSILON,
                          name=f"{name}_dw_bn")(x)
    x = common.apply_activation(x, activation, name=f"{name}_dw_act")
    if se_ratio > 0:
        x = common.apply_squeeze_excite(x, max(1, int(c_in * se_ratio)), activation=se_activation,
                                        gate=se_gate, name=f"{name}_se")
    x = common.apply_conv(x, filters, 1, name=f"{name}_project_conv")
    x = common.batch_norm(momentum=common.BN_MOMENTUM, epsilon=common.BN_EPSILON,
                          name=f"{name}_project_bn")(x)
    if all(s == 1 for s in strides) and c_in == filters:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def apply_mbconv(x, filters: int, kernel_size: int | Sequence[int] = 3, strides: int | Sequence[int] = 1,
                 expand_ratio: float = 6.0, se_ratio: float = 0.25, activation: str = "swish",
                 name: str = "mbconv", implementation: str = "grouped"):
    """MobileNetV2 / EfficientNet inverted residual block with squeeze-and-excitation.

    ``x -> [1x1 conv C_in -> C_in*e, BN, act] (skipped when e == 1) -> depthwise k x k (x k),
    stride s, BN, act -> SE(int(C_in * se_ratio), act, sigmoid) -> 1x1 conv -> filters, BN
    (linear) -> + x`` when ``s == 1`` and ``C_in == filters``.

    Trainable weights (2D, e > 1, SE): ``C_in*E + 2E`` (expand) ``+ k^2 E + 2E`` (depthwise)
    ``+ 2 E S + S + E`` (SE) ``+ E*filters + 2 filters`` (project), ``E = C_in*e``,
    ``S = int(C_in*se_ratio)``; 3D replaces ``k^2`` by ``k^3``.

    Sublayers: ``{name}_expand_conv/_bn/_act``, ``{name}_dwconv``, ``{name}_dw_bn``,
    ``{name}_dw_act``, ``{name}_se_*``, ``{name}_project_conv``, ``{name}_project_bn``, ``{name}_add``.

    Args:
        x: ``[B, H, W, C_in]`` or ``[B, D, H, W, C_in]`` float32 tensor.
        filters: Output channels.
        kernel_size: Depthwise kernel, int or per-axis tuple.
        strides: Depthwise stride, int or per-axis tuple.
        expand_ratio: Expansion factor ``e`` (>= 1).
        se_ratio: SE bottleneck relative to ``C_in``; 0 disables SE.
        activation: Block activation, default ``"swish"`` (EfficientNet).
        name: Prefix of the sublayer names.
        implementation: 3D depthwise implementation (``"grouped"`` or ``"unrolled"``).

    Returns:
        ``[B, H/s, W/s, filters]`` (or 3D) float32 tensor.

    Raises:
        ValueError: ``expand_ratio < 1`` or a bad kernel/stride tuple.
    """
    return _inverted_residual(x, filters, kernel_size, strides, expand_ratio, se_ratio, activation,
                              activation, "sigmoid", name, implementation)


def apply_mobilenetv3_block(x, filters: int, kernel_size: int | Sequence[int] = 3,
                            strides: int | Sequence[int] = 1, expand_ratio: float = 6.0,
                            se_ratio: float = 0.25, activation: str = "hard_swish",
                            name: str = "mbv3", implementation: str = "grouped"):
    """MobileNetV3 block: inverted residual, h-swish (or ReLU), hard-sigmoid SE.

    Same structure and weight count as :func:`apply_mbconv`; the SE bottleneck uses ReLU and the
    gate is ``relu6(x + 3) / 6`` (Howard et al. 2019, Sec. 5.2/5.3). ``activation`` is
    ``"relu"`` in the early stages and ``"hard_swish"`` in the later ones.

    Args:
        x: ``[B, H, W, C_in]`` or ``[B, D, H, W, C_in]`` float32 tensor.
        filters: Output channels.
        kernel_size: Depthwise kernel.
        strides: Depthwise stride.
        expand_ratio: Expansion factor (>= 1).
        se_ratio: SE bottleneck relative to ``C_in``; 0 disables SE (as in several stages of
            the thesis' Tables A.6-A.8).
        activation: ``"hard_swish"`` (default) or ``"relu"``.
        name: Prefix of the sublayer names.
        implementation: 3D depthwise implementation.

    Returns:
        ``[B, H/s, W/s, filters]`` (or 3D) float32 tensor.
    """
    return _inverted_residual(x, filters, kernel_size, strides, expand_ratio, se_ratio, activation,
                              "relu", "hard_sigmoid", name, implementation)
