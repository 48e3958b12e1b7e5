"""DeepLabV3 with an output-stride-8 classifier backbone (seed 003): one logit per pixel.

``[B, H, W, 1]`` CT slice (windowed to [-1, 1]) -> backbone
(:mod:`tfmedseg.models.backbones.os8`) -> :func:`tfmedseg.models.blocks.aspp.apply_deeplab_head` ->
bilinear resize to ``H x W`` (``align_corners=False``, as the seed's ``F.interpolate``) ->
``[B, H, W, num_classes]`` logits. No decoder (DeepLabV3, not V3+).

Registered builders: ``deeplabv3_resnet152``, ``deeplabv3_resnext101_32x8d``,
``deeplabv3_densenet201``, ``deeplabv3_inception_v3``.

Example:
    >>> from tfmedseg.models import registry
    >>> m = registry.build("deeplabv3_resnet152", input_shape=(64, 64, 1), size="small", head_channels=8)
    >>> tuple(m.output.shape)
    (None, 64, 64, 1)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras

from tfmedseg.errors import ModelBuildError
from tfmedseg.models.backbones.os8 import OS8_BACKBONES, build_os8_backbone
from tfmedseg.models.blocks.aspp import SEED_RATES, apply_deeplab_head
from tfmedseg.models.registry import register

__all__ = ["build_deeplabv3"]


def build_deeplabv3(
    backbone: str,
    input_shape: Sequence[int] = (256, 256, 1),
    num_classes: int = 1,
    weights: str | os.PathLike | None = None,
    size: str = "paper",
    aspp_rates: Sequence[int] = SEED_RATES,
    head_channels: int = 256,
    dropout: float = 0.5,
    name: str | None = None,
) -> keras.Model:
    """DeepLabV3 on one of the OS-8 backbones.

    Args:
        backbone: One of :data:`tfmedseg.models.backbones.os8.OS8_BACKBONES`.
        input_shape: ``(H, W, C)`` with static ``H, W`` (256, 256, 1 in the seed).
        num_classes: Output logits (1: binary liver or lesion).
        weights: Backbone weights: None, ``"imagenet"`` (local cache) or a local file.
        size: ``"paper"`` or ``"small"`` (quick runs).
        aspp_rates: ASPP dilation rates (seed 4, 8, 12; torchvision 12, 24, 36).
        head_channels: ASPP / head width (256).
        dropout: Dropout after the ASPP projection (0.5).
        name: Model name (default ``deeplabv3_<backbone>``).

    Returns:
        ``keras.Model``: ``[B, H, W, C]`` -> ``[B, H, W, num_classes]`` logits.
    """
    if len(input_shape) != 3 or input_shape[0] is None or input_shape[1] is None:
        raise ModelBuildError(f"input_shape must be a static (H, W, C), got {tuple(input_shape)}", path="input_shape")
    encoder = build_os8_backbone(backbone, input_shape, weights=weights, size=size)
    logits = apply_deeplab_head(encoder.output, num_classes, aspp_rates, head_channels, dropout)
    outputs = keras.layers.Resizing(int(input_shape[0]), int(input_shape[1]), interpolation="bilinear",
                                    dtype="float32", name="upsample")(logits)  # float32 logits under a mixed policy
    return keras.Model(encoder.input, outputs, name=name or f"deeplabv3_{backbone}")


def _registered(backbone: str):
    def builder(**config):
        return build_deeplabv3(backbone, **config)

    builder.__name__ = builder.__qualname__ = f"deeplabv3_{backbone}"
    builder.__doc__ = f"DeepLabV3 on the output-stride-8 {backbone} (see :func:`build_deeplabv3`)."
    return register(f"deeplabv3_{backbone}")(builder)


for _backbone in OS8_BACKBONES:
    _registered(_backbone)
