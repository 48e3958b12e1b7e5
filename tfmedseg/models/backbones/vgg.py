"""VGG-16 feature extractor (Simonyan & Zisserman, 2015) for SSD, any input depth, from scratch.

Same layer names and shapes as ``keras.applications.VGG16(include_top=False)`` (``block1_conv1``
... ``block5_conv3``), so a local keras.applications weights file can initialise it (the first
kernel is summed over RGB for 1-channel input). ``filters`` shrinks the network for tests.

Outputs are keyed by stride level (``C_l`` has stride ``2^l``, the Model Garden convention):
``C1`` = ``block2_conv2`` (stride 2), ``C2`` = ``block3_conv3``, ``C3`` = ``block4_conv3``
(stride 8; SSD's ``conv4_3``), ``C4`` = ``block5_conv3`` (stride 16). ``pool5`` and the fully
connected layers are not part of the backbone (SSD replaces them with ``fc6``/``fc7`` convs).
The convolutions are :class:`~tfmedseg.models.blocks.onednn_conv.OneDNNConv2D` (a ``Conv2D``
whose 1-image forward runs oneDNN's direct kernel instead of im2col + GEMM on AVX2 CPUs).

Example:
    >>> m = build_vgg16_backbone((32, 32, 1), filters=(4, 4, 4, 4, 4))
    >>> [tuple(m.output[k].shape) for k in ("C3", "C4")]
    [(None, 4, 4, 4), (None, 2, 2, 4)]
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfmedseg.errors import ModelBuildError
from tfmedseg.models.backbones._weights import application_input, application_model
from tfmedseg.models.blocks.onednn_conv import OneDNNConv2D

__all__ = ["VGG16_FILTERS", "build_vgg16_backbone"]

VGG16_FILTERS = (64, 128, 256, 512, 512)
_CONVS = (2, 2, 3, 3, 3)


def build_vgg16_backbone(
    input_shape: Sequence[int | None] = (512, 512, 1),
    filters: Sequence[int] = VGG16_FILTERS,
    weights: str | None = None,
    kernel_regularizer: keras.regularizers.Regularizer | None = None,
    name: str = "vgg16",
) -> keras.Model:
    """VGG-16 convolutional body returning ``{"C1": ..., "C4": ...}``.

    Args:
        input_shape: ``(H, W, C)``; ``H, W`` divisible by 16 (None allowed).
        filters: Filters of the five blocks. Default the paper's ``(64, 128, 256, 512, 512)``.
        weights: None (random init, from scratch) or the path of a local
            ``keras.applications`` VGG16 "notop" weights file.
        kernel_regularizer: Applied to every conv kernel (SSD: L2 5e-4).
        name: Model name.

    Returns:
        Functional ``keras.Model`` from ``[B, H, W, C]`` float images to a dict of feature maps.

    Raises:
        ModelBuildError: Wrong number of filters or bad input shape.
        InvalidInputError: ``weights`` is not None and not an existing file.
    """
    if len(filters) != 5 or min(filters) < 1:
        raise ModelBuildError(f"filters needs 5 positive values, got {tuple(filters)}", path="filters")
    inputs = application_input(input_shape, weights)
    x = inputs
    outputs = {}
    for block, (n_conv, f) in enumerate(zip(_CONVS, filters), start=1):
        if block > 1:
            x = keras.layers.MaxPooling2D(2, 2, name=f"block{block - 1}_pool")(x)
        for i in range(1, n_conv + 1):
            x = OneDNNConv2D(
                f, 3, padding="same", activation="relu", kernel_regularizer=kernel_regularizer,
                name=f"block{block}_conv{i}",
            )(x)
        if block > 1:
            outputs[f"C{block - 1}"] = x
    return application_model(inputs, outputs, name, keras.applications.VGG16, weights)
