"""Basic-block ResNet-18/34 (He et al., 2016; torchvision layout) as a multi-scale feature extractor.

ResNet-34 is not in ``keras.applications``; this is our builder with torchvision's structure
(7x7/2 stem without bias, 3x3/2 max pool, basic blocks of two 3x3 convs, 1x1/2 projection
shortcuts), so its parameter count equals torchvision's and segmentation_models_pytorch's
``resnet34`` encoder (21.28 M). Stride-2 convolutions pad symmetrically (explicit
``ZeroPadding2D`` + ``valid``) as PyTorch does, instead of Keras' asymmetric ``same``.

Outputs (list, strides 2, 4, 8, 16, 32): ``relu`` after the stem (64 ch), ``layer1`` (64),
``layer2`` (128), ``layer3`` (256), ``layer4`` (512) -- the stages smp's encoder returns.

Example:
    >>> m = build_basic_resnet((64, 64, 1), blocks=(1, 1, 1, 1), widths=(4, 8, 8, 8), stem_filters=4)
    >>> [tuple(t.shape[1:]) for t in m.outputs]
    [(32, 32, 4), (16, 16, 4), (8, 8, 8), (4, 4, 8), (2, 2, 8)]
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfmedseg.errors import ModelBuildError
from tfmedseg.models.blocks.matmul_grad_conv import conv as package_conv
from tfmedseg.models.blocks.normalization import batch_norm

__all__ = ["RESNET_BLOCKS", "apply_basic_block", "build_basic_resnet"]

#: Basic blocks per stage.
RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
_BN = {"momentum": 0.9, "epsilon": 1e-5}  # PyTorch BatchNorm2d defaults


def _conv(x, filters: int, kernel: int, stride: int, name: str):
    pad = kernel // 2
    if stride > 1 and pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return package_conv(2, filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)


def apply_basic_block(x, filters: int, stride: int = 1, name: str = "block"):
    """Two 3x3 conv-BN (ReLU between), projection shortcut when the shape changes, ReLU after the add.

    Args:
        x: ``[B, H, W, C]``.
        filters: Output channels.
        stride: Stride of the first conv and the shortcut.
        name: Prefix of the sublayer names.

    Returns:
        ``[B, H / stride, W / stride, filters]``.
    """
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, stride, f"{name}_downsample_conv")
        shortcut = batch_norm(**_BN, name=f"{name}_downsample_bn")(shortcut)
    y = _conv(x, filters, 3, stride, f"{name}_conv1")
    y = batch_norm(**_BN, name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(y, filters, 3, 1, f"{name}_conv2")
    y = batch_norm(**_BN, name=f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_basic_resnet(
    input_shape: Sequence[int | None] = (256, 256, 3),
    blocks: Sequence[int] = RESNET_BLOCKS["resnet34"],
    widths: Sequence[int] = (64, 128, 256, 512),
    stem_filters: int = 64,
    depth: int = 5,
    name: str = "resnet34",
) -> keras.Model:
    """ResNet-18/34 returning the first ``depth`` feature maps (strides 2 .. 2**depth).

    Args:
        input_shape: ``(H, W, C)``; any channel count.
        blocks: Basic blocks per stage (ResNet-34: 3, 4, 6, 3).
        widths: Channels of the four stages.
        stem_filters: Channels of the 7x7 stem.
        depth: Number of feature maps returned (1-5); deeper stages are not built.
        name: Model name.

    Returns:
        A ``keras.Model`` from ``[B, H, W, C]`` to a list of ``depth`` tensors.

    Raises:
        ModelBuildError: ``depth`` outside 1-5 or ``blocks``/``widths`` not of length 4.
    """
    if not 1 <= int(depth) <= 5:
        raise ModelBuildError(f"must be in 1..5, got {depth}", path="encoder_depth")
    if len(blocks) != 4 or len(widths) != 4:
        raise ModelBuildError(f"need 4 stages, got blocks={tuple(blocks)} widths={tuple(widths)}", path="blocks")
    image = keras.Input(tuple(input_shape), name=f"{name}_input")
    x = _conv(image, stem_filters, 7, 2, "conv1")
    x = batch_norm(**_BN, name="bn1")(x)
    x = keras.layers.ReLU(name="relu")(x)
    features = [x]
    for stage, (n, width) in enumerate(zip(blocks, widths)):
        if len(features) >= depth:
            break
        if stage == 0:
            x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
            x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
        for i in range(n):
            x = apply_basic_block(x, width, stride=2 if (i == 0 and stage > 0) else 1, name=f"layer{stage + 1}_{i}")
        features.append(x)
    return keras.Model(image, features, name=name)
