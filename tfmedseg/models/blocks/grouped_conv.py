"""Grouped 2D convolution computed as one ordinary convolution per group on CPU hosts.

TensorFlow's CPU kernels for a grouped ``Conv2D`` (``groups > 1``) are very slow to train: on this
2-core CPU one grouped 3x3 convolution (batch 16, 32 x 32 x 64, 4 groups) took 3.3 s forward +
input gradient, the same convolution split into its 4 groups 41 ms (``docs/performance.md``,
"Grouped convolutions"). The seed-003 ResNeXt spent most of its training step there.

:class:`GroupedConv2D` is a drop-in ``keras.layers.Conv2D`` (same arguments, config, kernel
``[kh, kw, C_in / groups, C_out]`` and bias, so weights and parameter counts are unchanged) whose
``convolution_op`` splits the input channels and the kernel's output channels into ``groups``
parts, convolves each pair and concatenates the results: exactly the grouped convolution. When a
GPU is visible it keeps TensorFlow's grouped kernel (cuDNN's grouped convolution is fast).

Like :mod:`tfmedseg.models.blocks.normalization`, the class itself is named ``Conv2D`` so Keras 3's
weight files (which address layers by their snake-cased class name) stay interchangeable with
models built from ``keras.layers.Conv2D``; it is serialised as ``tfmedseg>GroupedConv2D``.

Example:
    >>> layer = GroupedConv2D(8, 3, groups=4, padding="same")
    >>> isinstance(layer, keras.layers.Conv2D)
    True
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["GroupedConv2D", "split_groups_here"]


def split_groups_here() -> bool:
    """Whether grouped convolutions run split per group (no GPU visible to TensorFlow)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


@keras.saving.register_keras_serializable(package="tfmedseg", name="GroupedConv2D")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose ``groups > 1`` convolution runs per group on CPU (module doc).

    Takes exactly ``keras.layers.Conv2D``'s arguments. Input ``[B, H, W, C_in]`` (channels last; a
    channels-first layer uses Keras' kernel), output ``[B, H', W', filters]``.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1 or self.data_format != "channels_last" or not split_groups_here():
            return super().convolution_op(inputs, kernel)
        parts = zip(ops.split(inputs, self.groups, axis=-1), ops.split(kernel, self.groups, axis=-1))
        return ops.concatenate([ops.conv(x, k, strides=list(self.strides), padding=self.padding,
                                         dilation_rate=self.dilation_rate, data_format=self.data_format)
                                for x, k in parts], axis=-1)


GroupedConv2D = Conv2D
