"""ResNet-50 v1 feature extractor (He et al., 2016) for Mask R-CNN / MaligNet, any input depth.

Same layer names and shapes as ``keras.applications.ResNet50(include_top=False)``
(``conv1_conv``, ``conv2_block1_1_conv``, ... ``conv5_block3_out``), built here so that the
widths and depths can shrink for tests and a kernel regulariser can be set; with the defaults it
is ResNet-50 and a local keras.applications weights file can initialise it. The seed trains it
from scratch (``weights=None``).

Outputs: ``{"C2": conv2_block3_out (stride 4, 256 ch), "C3": (stride 8, 512), "C4": (stride 16,
1024), "C5": (stride 32, 2048)}``; at 320x320 input: 80, 40, 20, 10 pixels per side.

Example:
    >>> m = build_resnet_backbone((64, 64, 1), stem_filters=4, stage_filters=(4, 4, 4, 4),
    ...                           stage_blocks=(1, 1, 1, 1))
    >>> tuple(m.output["C5"].shape)
    (None, 2, 2, 16)
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfmedseg.errors import ModelBuildError
from tfmedseg.models.backbones._weights import application_input, application_model
from tfmedseg.models.blocks.normalization import batch_norm

__all__ = ["RESNET50_BLOCKS", "apply_bottleneck_block", "build_resnet_backbone"]

RESNET50_BLOCKS = (3, 4, 6, 3)
_EPS = 1.001e-5


def apply_bottleneck_block(x, filters: int, stride: int = 1, conv_shortcut: bool = True, regularizer=None, name: str = "block"):
    """ResNet v1 bottleneck: 1x1 (stride) -> 3x3 -> 1x1 (4 x filters), BN after each, residual add.

    Args:
        x: ``[B, H, W, C]`` input.
        filters: Bottleneck width; output has ``4 * filters`` channels.
        stride: Stride of the first 1x1 conv and the projection shortcut.
        conv_shortcut: Project the shortcut (first block of a stage).
        regularizer: Kernel regulariser of the convs.
        name: Prefix of the sublayer names (``conv3_block1``).

    Returns:
        ``[B, ceil(H / stride), ceil(W / stride), 4 * filters]``.
    """
    conv = lambda f, k, s, n: keras.layers.Conv2D(  # noqa: E731
        f, k, strides=s, padding="same" if k > 1 else "valid", kernel_regularizer=regularizer, name=f"{name}_{n}_conv"
    )
    bn = lambda n: batch_norm(epsilon=_EPS, name=f"{name}_{n}_bn")  # noqa: E731
    if conv_shortcut:
        shortcut = bn(0)(conv(4 * filters, 1, stride, 0)(x))
    else:
        shortcut = x
    y = keras.layers.Activation("relu", name=f"{name}_1_relu")(bn(1)(conv(filters, 1, stride, 1)(x)))
    y = keras.layers.Activation("relu", name=f"{name}_2_relu")(bn(2)(conv(filters, 3, 1, 2)(y)))
    y = bn(3)(conv(4 * filters, 1, 1, 3)(y))
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def build_resnet_backbone(
    input_shape: Sequence[int | None] = (320, 320, 1),
    stem_filters: int = 64,
    stage_filters: Sequence[int] = (64, 128, 256, 512),
    stage_blocks: Sequence[int] = RESNET50_BLOCKS,
    weights: str | None = None,
    kernel_regularizer: keras.regularizers.Regularizer | None = None,
    name: str = "resnet50",
) -> keras.Model:
    """ResNet (default ResNet-50) returning ``{"C2", "C3", "C4", "C5"}`` feature maps.

    Args:
        input_shape: ``(H, W, C)``, ``H, W`` divisible by 32 (None allowed).
        stem_filters: Filters of the 7x7 stride-2 stem. Default 64.
        stage_filters: Bottleneck widths of stages 2-5. Default ``(64, 128, 256, 512)``.
        stage_blocks: Blocks per stage. Default ResNet-50 ``(3, 4, 6, 3)``.
        weights: None (from scratch, the seed) or a local keras.applications ResNet50 weights file.
        kernel_regularizer: Applied to every conv kernel.
        name: Model name.

    Returns:
        Functional ``keras.Model``: ``[B, H, W, C]`` -> dict of ``[B, H / 2^l, W / 2^l, 4 f_l]``.

    Raises:
        ModelBuildError: Mismatched stage lists or bad shape.
        InvalidInputError: ``weights`` is not None and not an existing file.
    """
    if len(stage_filters) != 4 or len(stage_blocks) != 4 or min(stage_blocks) < 1 or min(stage_filters) < 1:
        raise ModelBuildError(
            f"need 4 positive stage_filters and stage_blocks, got {tuple(stage_filters)}, {tuple(stage_blocks)}",
            path="stage_filters",
        )
    inputs = application_input(input_shape, weights)
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(stem_filters, 7, strides=2, kernel_regularizer=kernel_regularizer, name="conv1_conv")(x)
    x = batch_norm(epsilon=_EPS, name="conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    outputs = {}
    for stage, (f, n) in enumerate(zip(stage_filters, stage_blocks), start=2):
        for i in range(1, n + 1):
            stride = 2 if (i == 1 and stage > 2) else 1
            x = apply_bottleneck_block(
                x, f, stride=stride, conv_shortcut=(i == 1), regularizer=kernel_regularizer, name=f"conv{stage}_block{i}"
            )
        outputs[f"C{stage}"] = x
    return application_model(inputs, outputs, name, keras.applications.ResNet50, weights)
