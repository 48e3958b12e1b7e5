"""MA-Net attention blocks (Fan et al., 2020) as segmentation_models_pytorch 0.6 runs them (seed 000).

* :class:`PositionAttention` (PAB, the MA-Net centre): ``q = Conv1x1(C -> 64)(x)`` ("top"),
  ``k = Conv1x1(C -> 64)(x)`` ("centre"), ``v = Conv3x3(C -> C)(x)`` ("bottom");
  ``S = k q^T`` ``[B, HW, HW]``; **softmax over the whole flattened ``HW * HW`` map** (smp's
  ``Softmax(dim=1)`` on ``view(B, -1)``; the paper, DANet-style, normalises each row);
  ``O = S v`` ``[B, HW, C]`` is then *reshaped* (not transposed) to ``[B, C, H, W]`` as smp does;
  ``y = Conv3x3(C -> C)(x + O)``. No learnable ``alpha`` (the paper has ``alpha * O + x``).
  Both are deviations of smp from the paper, kept because the seed ran smp.
* :func:`apply_mfab` (MFAB, each decoder stage with a skip): ``x = Conv3x3-BN-ReLU(in -> in)``,
  ``Conv1x1-BN-ReLU(in -> skip)``, nearest x2; ``a = SE(x) + SE(skip)`` with
  ``SE = GAP -> Conv1x1(C -> max(1, C // 16)) -> ReLU -> Conv1x1 -> sigmoid``; ``x = x * a``;
  ``concat(x, skip)`` -> ``Conv3x3-BN-ReLU(2 skip -> out)`` -> ``Conv3x3-BN-ReLU(out -> out)``.

All convolutions of the Conv-BN-ReLU units have no bias (smp's ``Conv2dReLU`` with batch norm);
PAB's and SE's convolutions have one. Batch norm uses PyTorch's defaults (momentum 0.1, eps 1e-5).

Example:
    >>> import keras
    >>> x = keras.Input((4, 4, 8)); s = keras.Input((8, 8, 6))
    >>> tuple(apply_mfab(PositionAttention(pab_channels=4)(x), s, 5, name="m").shape)
    (None, 8, 8, 5)
"""

from __future__ import annotations

import keras
from keras import ops

from tfmedseg.models.blocks import matmul_grad_conv
from tfmedseg.models.blocks.normalization import batch_norm

__all__ = ["BN_KWARGS", "PositionAttention", "apply_conv_bn_relu", "apply_mfab", "apply_squeeze_excite_gate"]

#: PyTorch BatchNorm2d defaults (smp's decoders).
BN_KWARGS = {"momentum": 0.9, "epsilon": 1e-5}


@keras.saving.register_keras_serializable(package="tfmedseg")
class PositionAttention(keras.layers.Layer):
    """smp's PAB: position attention with a softmax over the flattened ``HW x HW`` map.

    Args:
        pab_channels: Channels of the query/key 1x1 convolutions (smp default 64).

    Input ``[B, H, W, C]``, output ``[B, H, W, C]``. Memory is ``O((HW)^2)``: apply it at the
    encoder head (stride 32: 64 positions at 256x256).
    """

    def __init__(self, pab_channels: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.pab_channels = int(pab_channels)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.top_conv = keras.layers.Conv2D(self.pab_channels, 1, name="top_conv")
        self.center_conv = keras.layers.Conv2D(self.pab_channels, 1, name="center_conv")
        self.bottom_conv = keras.layers.Conv2D(channels, 3, padding="same", name="bottom_conv")
        self.out_conv = keras.layers.Conv2D(channels, 3, padding="same", name="out_conv")
        for conv in (self.top_conv, self.center_conv, self.bottom_conv, self.out_conv):
            conv.build(input_shape)

    def call(self, x):
        shape = ops.shape(x)
        batch, height, width, channels = shape[0], shape[1], shape[2], x.shape[-1]
        positions = height * width
        q = ops.reshape(self.top_conv(x), (batch, positions, self.pab_channels))
        k = ops.reshape(self.center_conv(x), (batch, positions, self.pab_channels))
        v = ops.reshape(self.bottom_conv(x), (batch, positions, channels))
        scores = ops.matmul(k, ops.transpose(q, (0, 2, 1)))  # [B, HW(k), HW(q)]
        flat = ops.reshape(scores, (batch, -1))
        flat = ops.exp(flat - ops.max(flat, axis=-1, keepdims=True))  # softmax over the whole map
        weights = ops.reshape(flat / ops.sum(flat, axis=-1, keepdims=True), (batch, positions, positions))
        out = ops.matmul(weights, v)  # [B, HW, C]
        # smp reshapes the [HW, C] result straight into [C, H, W]: the same memory read as [C, HW]
        out = ops.transpose(ops.reshape(out, (batch, channels, positions)), (0, 2, 1))
        out = ops.reshape(out, (batch, height, width, channels))
        return self.out_conv(x + out)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "pab_channels": self.pab_channels}


def apply_conv_bn_relu(x, filters: int, kernel_size: int = 3, name: str = "conv"):
    """smp ``Conv2dReLU``: conv (no bias) -> batch norm -> ReLU, ``same`` padding."""
    x = matmul_grad_conv.conv(2, filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = batch_norm(**BN_KWARGS, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def apply_squeeze_excite_gate(x, reduction: int = 16, name: str = "se"):
    """Channel gate ``[B, 1, 1, C]`` in (0, 1): GAP -> 1x1 (C -> max(1, C // r)) -> ReLU -> 1x1 -> sigmoid."""
    channels = int(x.shape[-1])
    g = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    g = keras.layers.Conv2D(max(1, channels // reduction), 1, activation="relu", name=f"{name}_reduce")(g)
    return keras.layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_expand")(g)


def apply_mfab(x, skip, out_channels: int, reduction: int = 16, name: str = "mfab"):
    """smp's MFAB decoder stage (module docstring).

    Args:
        x: High-level map ``[B, h, w, C_in]``.
        skip: Encoder skip ``[B, 2h, 2w, C_skip]``.
        out_channels: Output channels.
        reduction: SE reduction (16).
        name: Prefix of the sublayer names.

    Returns:
        ``[B, 2h, 2w, out_channels]``.
    """
    in_channels, skip_channels = int(x.shape[-1]), int(skip.shape[-1])
    x = apply_conv_bn_relu(x, in_channels, 3, name=f"{name}_hl1")
    x = apply_conv_bn_relu(x, skip_channels, 1, name=f"{name}_hl2")
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up")(x)
    gate_hl = apply_squeeze_excite_gate(x, reduction, name=f"{name}_se_hl")
    gate_ll = apply_squeeze_excite_gate(skip, reduction, name=f"{name}_se_ll")
    gate = keras.layers.Add(name=f"{name}_gate")([gate_hl, gate_ll])
    x = keras.layers.Multiply(name=f"{name}_attend")([x, gate])
    x = keras.layers.Concatenate(name=f"{name}_concat")([x, skip])
    x = apply_conv_bn_relu(x, out_channels, 3, name=f"{name}_conv1")
    return apply_conv_bn_relu(x, out_channels, 3, name=f"{name}_conv2")
