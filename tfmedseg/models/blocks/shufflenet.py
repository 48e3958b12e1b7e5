"""ShuffleNetV2 unit (Ma et al. 2018) with squeeze-and-excitation, 2D and 3D.

The thesis (Sec. 2.1.12, Fig. 2.10c/d; Appendix A.9-A.11, A.18-A.20) uses the ShuffleNetV2
unit with SE 0.25 in place of EfficientNet's MBConv. Our choices where it says nothing:

* SE sits on the output of the processing branch, before the concatenation, with bottleneck
  ``int(branch_channels * se_ratio)``, ReLU and a sigmoid gate.
* A stage whose first unit changes the channel count at stride 1 (e.g. 80 -> 112) uses the
  two-branch "downsampling" unit with stride 1 (no channel split).
* Channel shuffle uses 2 groups.

Example:
    >>> import keras
    >>> from tfmedseg.models.blocks.shufflenet import apply_shufflenet_v2_unit
    >>> x = keras.Input((16, 16, 24))
    >>> tuple(apply_shufflenet_v2_unit(x, 40, strides=2, name="u").shape)
    (None, 8, 8, 40)
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfmedseg.models.blocks import common

__all__ = ["ChannelShuffle", "ChannelSplit", "apply_shufflenet_v2_unit"]


@keras.saving.register_keras_serializable(package="tfmedseg")
class ChannelShuffle(keras.layers.Layer):
    """Interleave channel groups (ShuffleNet, Zhang et al. 2018, Fig. 1).

    Channel ``c = g * (C / groups) + i`` of the input becomes channel ``i * groups + g`` of the
    output, i.e. with 2 groups ``[a0 a1 a2 b0 b1 b2] -> [a0 b0 a1 b1 a2 b2]``.

    Args:
        groups: Number of groups; must divide the channel count.
        **kwargs: ``keras.layers.Layer`` arguments.

    Input/output: ``[B, ..., C]`` float32, same shape.
    """

    def __init__(self, groups: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(f"{self.name}: channels ({channels}) must be divisible by groups={self.groups}")

    def call(self, inputs):
        shape = ops.shape(inputs)
        channels = inputs.shape[-1]
        spatial = [shape[i] for i in range(1, len(inputs.shape) - 1)]
        x = ops.reshape(inputs, (-1, *spatial, self.groups, channels // self.groups))
        perm = list(range(len(x.shape)))
        perm[-2], perm[-1] = perm[-1], perm[-2]
        x = ops.transpose(x, perm)
        return ops.reshape(x, (-1, *spatial, channels))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="tfmedseg")
class ChannelSplit(keras.layers.Layer):
    """Split the last axis into ``[:C - C//2]`` and ``[C - C//2:]`` (ShuffleNetV2 channel split).

    Input: ``[B, ..., C]``. Output: a list of two tensors with ``C - C//2`` and ``C//2`` channels.
    """

    def call(self, inputs):
        first = inputs.shape[-1] - inputs.shape[-1] // 2
        return [inputs[..., :first], inputs[..., first:]]

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        first = channels - channels // 2
        return [(*input_shape[:-1], first), (*input_shape[:-1], channels - first)]


def _bn(x, name):
    return common.batch_norm(momentum=common.BN_MOMENTUM, epsilon=common.BN_EPSILON, name=name)(x)


def apply_shufflenet_v2_unit(x, filters: int, kernel_size: int | Sequence[int] = 3,
                             strides: int | Sequence[int] = 1, se_ratio: float = 0.25,
                             expand_ratio: float = 1.0, activation: str = "relu", name: str = "shuffle",
                             implementation: str = "grouped"):
    """ShuffleNetV2 unit with SE on the processing branch.

    * Basic unit (``strides == 1`` and ``C_in == filters``): split the channels in halves; the
      first half passes unchanged; the second goes 1x1 conv-BN-act -> depthwise k, BN -> 1x1
      conv-BN-act -> SE; concat -> channel shuffle (2 groups).
    * Otherwise (downsampling, or a channel change): no split. Branch 1: depthwise k stride s,
      BN -> 1x1 conv-BN-act to ``filters // 2``. Branch 2: 1x1 conv-BN-act to ``filters // 2``
      -> depthwise k stride s, BN -> 1x1 conv-BN-act to ``filters - filters // 2`` -> SE; concat
      -> channel shuffle.

    Trainable weights of the basic unit in 2D with ``b = C/2``, SE bottleneck ``S``:
    ``2 b^2 + k^2 b + 6 b`` (+ ``2 b S + S + b`` for SE).

    Sublayers: ``{name}_split``, ``{name}_b1_dwconv``, ``{name}_b1_dw_bn``, ``{name}_b1_pw_*``,
    ``{name}_b2_pw1_*``, ``{name}_b2_dwconv``, ``{name}_b2_dw_bn``, ``{name}_b2_pw2_*``,
    ``{name}_b2_se_*``, ``{name}_concat``, ``{name}_shuffle``.

    Args:
        x: ``[B, H, W, C_in]`` or ``[B, D, H, W, C_in]`` float32 tensor.
        filters: Output channels (even).
        kernel_size: Depthwise kernel, int or per-axis tuple.
        strides: Depthwise stride, int or per-axis tuple.
        se_ratio: SE bottleneck relative to the branch channels; 0 disables SE.
        activation: Activation after the 1x1 convolutions (ReLU in ShuffleNetV2).
        name: Prefix of the sublayer names.
        implementation: 3D depthwise implementation.

    Returns:
        ``[B, H/s, W/s, filters]`` (or 3D) float32 tensor.

    Raises:
        ValueError: ``filters`` is odd.
    """
    rank = common.spatial_rank(x)
    strides = common.as_tuple(strides, rank, "strides")
    if filters % 2:
        raise ValueError(f"{name}: ShuffleNetV2 units need an even number of filters, got {filters}")
    c_in = int(x.shape[-1])
    half = filters // 2
    basic = all(s == 1 for s in strides) and c_in == filters
    if basic:
        shortcut, x2 = ChannelSplit(name=f"{name}_split")(x)
    else:
        shortcut = common.apply_depthwise_conv(x, kernel_size, strides, name=f"{name}_b1_dwconv",
                                               implementation=implementation)
        shortcut = _bn(shortcut, f"{name}_b1_dw_bn")
        shortcut = common.apply_conv_bn_act(shortcut, half, 1, activation=activation, name=f"{name}_b1_pw")
        x2 = x
    branch_out = filters - int(shortcut.shape[-1])
    hidden = int(round((branch_out if basic else half) * expand_ratio))
    b = common.apply_conv_bn_act(x2, hidden, 1, activation=activation, name=f"{name}_b2_pw1")
    b = common.apply_depthwise_conv(b, kernel_size, strides, name=f"{name}_b2_dwconv",
                                    implementation=implementation)
    b = _bn(b, f"{name}_b2_dw_bn")
    b = common.apply_conv_bn_act(b, branch_out, 1, activation=activation, name=f"{name}_b2_pw2")
    if se_ratio > 0:
        b = common.apply_squeeze_excite(b, max(1, int(branch_out * se_ratio)), activation="relu",
                                        gate="sigmoid", name=f"{name}_b2_se")
    y = keras.layers.Concatenate(name=f"{name}_concat")([shortcut, b])
    return ChannelShuffle(2, name=f"{name}_shuffle")(y)
