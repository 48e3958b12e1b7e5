"""Feature pyramid network decoder (Lin et al., 2017, "Feature Pyramid Networks"), Matterport layout.

``P5 = conv1x1(C5)``, ``P_l = up2(P_{l+1}) + conv1x1(C_l)``, each then smoothed by a 3x3 conv;
``P6 = maxpool(1, stride 2)(P5)`` for the 512-px anchors. Layer names follow Matterport
(``fpn_c5p5``, ``fpn_p5``). The decoder is a separate ``keras.Model`` mapping the backbone's
feature dict to the pyramid dict, so Mask R-CNN can take any decoder with the same contract (the
ladder FPN of MaligNet is a drop-in replacement: its top-down upsampling is bicubic, which this
module already supports).

Example:
    >>> from tfmedseg.models.backbones.resnet import build_resnet_backbone
    >>> bb = build_resnet_backbone((64, 64, 1), 4, (4, 4, 4, 4), (1, 1, 1, 1))
    >>> fpn = build_fpn(bb, filters=8)
    >>> sorted(fpn.output), tuple(fpn.output["P6"].shape)
    (['P2', 'P3', 'P4', 'P5', 'P6'], (None, 1, 1, 8))
"""

from __future__ import annotations

import keras

from tfmedseg.errors import ConfigError, ModelBuildError
from tfmedseg.models.detection.config import UPSAMPLING_MODES

__all__ = ["UPSAMPLING_MODES", "apply_fpn", "build_fpn"]



def apply_fpn(features: dict, filters: int = 256, min_level: int = 2, max_level: int = 6, upsampling: str = "nearest", regularizer=None, name: str = "fpn") -> dict:
    """Top-down pathway with lateral connections on ``{"C2": .., "C5": ..}``.

    Args:
        features: Backbone maps ``C_l`` with stride ``2^l`` for ``l = min_level .. 5``.
        filters: Pyramid channels (256).
        min_level: Finest output level (2).
        max_level: Coarsest level; levels above 5 are max-pooled from ``P5`` (6).
        upsampling: One of :data:`UPSAMPLING_MODES` for the x2 top-down upsampling.
        regularizer: Kernel regulariser of the convs.
        name: Layer-name prefix.

    Returns:
        ``{"P{l}": [B, H / 2^l, W / 2^l, filters]}`` for ``l = min_level .. max_level``.

    Raises:
        ConfigError: Unknown upsampling mode or levels.
        ModelBuildError: A needed ``C_l`` is missing.
    """
    if upsampling not in UPSAMPLING_MODES:
        raise ConfigError(f"unknown upsampling {upsampling!r}; allowed: {UPSAMPLING_MODES}", path="upsampling")
    if not 2 <= min_level <= 5 or max_level < 5:
        raise ConfigError(f"need 2 <= min_level <= 5 <= max_level, got {min_level}, {max_level}", path="min_level")
    missing = [f"C{l}" for l in range(min_level, 6) if f"C{l}" not in features]
    if missing:
        raise ModelBuildError(f"backbone features lack {missing}", path="backbone")
    prefix = "" if name == "fpn" else f"{name}_"
    conv = lambda k, n: keras.layers.Conv2D(filters, k, padding="same", kernel_regularizer=regularizer, name=f"{prefix}{n}")  # noqa: E731
    lateral = {}
    top = None
    for level in range(5, min_level - 1, -1):
        x = conv(1, f"fpn_c{level}p{level}")(features[f"C{level}"])
        if top is not None:
            up = keras.layers.UpSampling2D(2, interpolation=upsampling, name=f"{prefix}fpn_p{level + 1}upsampled")(top)
            x = keras.layers.Add(name=f"{prefix}fpn_p{level}add")([up, x])
        lateral[level] = top = x
    out = {f"P{l}": conv(3, f"fpn_p{l}")(lateral[l]) for l in range(min_level, 6)}
    for level in range(6, max_level + 1):
        out[f"P{level}"] = keras.layers.MaxPooling2D(1, 2, name=f"{prefix}fpn_p{level}")(out[f"P{level - 1}"])
    return out


def build_fpn(backbone: keras.Model, filters: int = 256, min_level: int = 2, max_level: int = 6, upsampling: str = "nearest", regularizer=None, name: str = "fpn") -> keras.Model:
    """FPN decoder as a model whose inputs mirror ``backbone.output`` (a dict of ``C_l``).

    Args:
        backbone: Built backbone returning a dict with ``C{min_level}`` .. ``C5``.
        filters, min_level, max_level, upsampling, regularizer: See :func:`apply_fpn`.
        name: Model name.

    Returns:
        ``keras.Model``: dict of ``C_l`` -> dict of ``P_l``.
    """
    inputs = {k: keras.Input(tuple(v.shape[1:]), name=k) for k, v in backbone.output.items()}
    outputs = apply_fpn(inputs, filters, min_level, max_level, upsampling, regularizer, name="fpn")
    return keras.Model(inputs, outputs, name=name)
