"""Basic 3D U-Net of seed 004 (Fig. 1B), the ``BaselineUNet`` of ``iantsen/hecktor``.

Four resolution levels (three ``MaxPooling(2)``), widths ``F, 2F, 4F, 8F``; every level has two
``conv k3 (no bias) -> instance norm (affine) -> ReLU`` units (the reference's ``BasicConv3d``);
the decoder upsamples with a transposed conv ``k3, stride 2`` (with bias), concatenates the skip
and applies two units; a 1x1x1 conv to ``classes`` and a softmax close it. The parameter count at
``F = 24`` matches the reference's within 0.01 % (its single sigmoid output for 2 classes has
``F + 1`` parameters fewer). ``norm`` selects any
:data:`~tfmedseg.models.blocks.se_norm.NORMALIZATIONS` kind. Rank-agnostic like
:func:`~tfmedseg.models.segmentation.se_unet.se_unet`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfmedseg.errors import ModelBuildError
from tfmedseg.models.blocks.se_norm import NORMALIZATIONS, apply_norm_conv
from tfmedseg.models.registry import register
from tfmedseg.models.segmentation.se_unet import check_input_shape

__all__ = ["basic_unet"]

_POOL = {2: keras.layers.MaxPooling2D, 3: keras.layers.MaxPooling3D}
_UPCONV = {2: keras.layers.Conv2DTranspose, 3: keras.layers.Conv3DTranspose}


@register("basic_unet")
def basic_unet(input_shape: Sequence[int] = (144, 144, 144, 2), classes: int = 2, base_filters: int = 24,
               norm: str = "instance", name: str = "basic_unet") -> keras.Model:
    """Build the basic U-Net (``BaselineUNet``).

    Args:
        input_shape: ``(D, H, W, C)`` or ``(H, W, C)``, spatial sizes multiples of 8.
        classes: Softmax output channels.
        base_filters: Level-1 width ``F``.
        norm: Normalisation kind (default affine instance norm, as the reference).
        name: Model name.

    Returns:
        Functional ``keras.Model`` ``image`` ``[B, *spatial, C]`` -> ``probabilities``
        ``[B, *spatial, classes]``.

    Raises:
        ModelBuildError: Bad argument, named in the message.
    """
    shape = check_input_shape(input_shape, 3)
    if norm not in NORMALIZATIONS:
        raise ModelBuildError(f"must be one of {NORMALIZATIONS}, got {norm!r}", path="norm")
    if int(base_filters) < 1 or int(classes) < 1:
        raise ModelBuildError(f"base_filters and classes must be positive, got {base_filters}, {classes}", path="base_filters")
    rank = len(shape) - 1
    widths = [int(base_filters) * 2 ** level for level in range(4)]
    image = keras.Input(shape, name="image")
    x, skips = image, []
    for level, width in enumerate(widths):
        if level:
            x = _POOL[rank](2, name=f"enc{level + 1}_pool")(x)
        for u in (1, 2):
            x = apply_norm_conv(x, width, 3, norm, name=f"enc{level + 1}_{u}")
        skips.append(x)
    for level in (2, 1, 0):
        width = widths[level]
        x = _UPCONV[rank](width, 3, strides=2, padding="same", name=f"dec{level + 1}_upconv")(x)
        x = keras.layers.Concatenate(name=f"dec{level + 1}_concat")([x, skips[level]])
        for u in (1, 2):
            x = apply_norm_conv(x, width, 3, norm, name=f"dec{level + 1}_{u}")
    logits = keras.layers.Conv3D if rank == 3 else keras.layers.Conv2D
    x = logits(int(classes), 1, name="head")(x)
    return keras.Model(image, keras.layers.Softmax(axis=-1, dtype="float32", name="probabilities")(x), name=name)
