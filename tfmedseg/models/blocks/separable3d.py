"""The DSTS block (3D depthwise spatio-temporal separate convolutions).

* :class:`DepthwiseConv3D` and :func:`with_depthwise3d_implementation` live in
  :mod:`tfmedseg.models.blocks.depthwise3d` (re-exported here).
* :func:`apply_dsts_block`: Depthwise Spatio-Temporal Separate module (Zhang et al., LW-HCN
  2019; thesis Sec. 2.1.9, Fig. 2.6) inside an inverted residual: 1x1x1 expansion -> parallel
  depthwise ``k x 1 x 1`` (temporal) and ``1 x k x k`` (spatial) -> concatenation -> SE ->
  1x1x1 projection -> residual.

Example:
    >>> import keras
    >>> x = keras.Input((8, 16, 16, 4))
    >>> tuple(apply_dsts_block(x, 8, strides=(1, 2, 2), name="b1").shape)
    (None, 8, 8, 8, 8)
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfmedseg.models.blocks import common
from tfmedseg.models.blocks.depthwise3d import (
    DEPTHWISE3D_IMPLEMENTATIONS,
    DepthwiseConv3D,
    with_depthwise3d_implementation,
)

__all__ = [
    "DEPTHWISE3D_IMPLEMENTATIONS",
    "DepthwiseConv3D",
    "with_depthwise3d_implementation",
    "apply_dsts_block",
]

DSTS_MERGES = ("concat", "add")


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
