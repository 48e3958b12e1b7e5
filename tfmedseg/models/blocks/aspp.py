"""Atrous spatial pyramid pooling (Chen et al., 2017, DeepLabV3) and the DeepLabV3 head.

torchvision's ``DeepLabHead(in_channels, num_classes)``, channels-last:

* ASPP: five parallel branches of ``channels`` (256) filters, each Conv-BN-ReLU without conv bias:
  a 1x1 conv, three 3x3 convs with dilation ``rates`` (seed 003: 4, 8, 12 because its feature map
  is 32 x 32, thesis L306; torchvision: 12, 24, 36, :data:`TORCHVISION_RATES`), and image pooling
  (global average -> 1x1 conv -> BN -> ReLU -> repeated back to the feature map size);
* concatenation (5 x 256) -> 1x1 Conv-BN-ReLU (256) -> Dropout 0.5;
* head: 3x3 Conv-BN-ReLU (256) -> 1x1 conv (``num_classes`` logits, with bias).

BN: epsilon 1e-5, momentum 0.9 (PyTorch's defaults); kernels He-normal ("Kaiming", the seed).

Example:
    >>> import keras
    >>> y = apply_deeplab_head(keras.Input((8, 8, 16)), num_classes=1, channels=4, name="head")
    >>> tuple(y.shape)
    (None, 8, 8, 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfmedseg.models.blocks.normalization import batch_norm

__all__ = ["SEED_RATES", "TORCHVISION_RATES", "apply_aspp", "apply_deeplab_head"]

SEED_RATES = (4, 8, 12)
TORCHVISION_RATES = (12, 24, 36)
_BN = {"momentum": 0.9, "epsilon": 1e-5}


def _conv_bn_relu(x, channels: int, kernel: int, name: str, dilation: int = 1):
    x = keras.layers.Conv2D(channels, kernel, padding="same", dilation_rate=dilation, use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = batch_norm(**_BN, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def apply_aspp(x, rates: Sequence[int] = SEED_RATES, channels: int = 256, dropout: float = 0.5, name: str = "aspp"):
    """ASPP on ``[B, h, w, C]`` (static ``h, w``) -> ``[B, h, w, channels]`` (after the dropout).

    Branch layers are named ``{name}_b0`` (1x1), ``{name}_b1..`` (one per rate; the 3x3 conv's
    ``dilation_rate`` is that rate), ``{name}_pool``, ``{name}_project``.
    """
    h, w = int(x.shape[1]), int(x.shape[2])
    branches = [_conv_bn_relu(x, channels, 1, f"{name}_b0")]
    for i, rate in enumerate(rates, start=1):
        branches.append(_conv_bn_relu(x, channels, 3, f"{name}_b{i}", dilation=int(rate)))
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool_gap")(x)
    pooled = _conv_bn_relu(pooled, channels, 1, f"{name}_pool")
    branches.append(keras.layers.UpSampling2D((h, w), name=f"{name}_pool_up")(pooled))
    y = keras.layers.Concatenate(name=f"{name}_concat")(branches)
    y = _conv_bn_relu(y, channels, 1, f"{name}_project")
    return keras.layers.Dropout(dropout, name=f"{name}_dropout")(y)


def apply_deeplab_head(x, num_classes: int = 1, rates: Sequence[int] = SEED_RATES, channels: int = 256,
                       dropout: float = 0.5, name: str = "head"):
    """torchvision's ``DeepLabHead``: ASPP -> 3x3 Conv-BN-ReLU -> 1x1 conv to ``num_classes`` logits.

    ``[B, h, w, C]`` -> ``[B, h, w, num_classes]`` (logits, at the feature resolution).
    """
    y = apply_aspp(x, rates, channels, dropout, name=f"{name}_aspp")
    y = _conv_bn_relu(y, channels, 3, f"{name}_refine")
    return keras.layers.Conv2D(num_classes, 1, kernel_initializer="he_normal", name=f"{name}_logits")(y)
