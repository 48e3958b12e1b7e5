"""Classifier backbones at output stride 8 with a 1-channel stem, for seed 003's DeepLabV3 networks.

Seed 003 (``../shared/specs/seed-003-liver-lesions.md`` section 3b) uses the convolutional part of four
ImageNet classifiers as DeepLabV3 encoders, with the first convolution replaced by a same-kernel
convolution on one (CT) channel, and a 32 x 32 feature map for a 256 x 256 slice (output stride 8):

=====================  ===============================================================  ====  =======================
backbone               how output stride 8 is reached                                   ch    256^2 -> feature map
=====================  ===============================================================  ====  =======================
``resnet152``          ``keras.applications.ResNet152`` cloned; stages conv4/conv5       2048  32 x 32
                       get stride 1 and dilation 2/4 (torchvision's
                       ``replace_stride_with_dilation=[False, True, True]``: the first
                       block of a dilated stage keeps the previous dilation)
``resnext101_32x8d``   our builder (torchvision layout: grouped 3x3, cardinality 32,     2048  32 x 32
                       width 8 per group, stride on the 3x3, no conv bias), same
                       dilation rule
``densenet201``        ``keras.applications.DenseNet201`` cloned without the average     1920  32 x 32
                       pools of transitions 2 and 3 (``pool3_pool``, ``pool4_pool``), no
                       dilation (the seed's convention, thesis L314-316)
``inception_v3``       ``keras.applications.InceptionV3`` cloned without the two stem    2048  30 x 30 (valid padding
                       max-pools (the seed, thesis L320)                                       of the stem and of the
                                                                                               mixed3/mixed8 reductions)
=====================  ===============================================================  ====  =======================

Cloning (``keras.models.clone_model`` with a ``clone_function`` that changes strides and dilation or
puts an ``Identity`` in place of a pooling layer) reuses keras.applications without copying it; the
cloned model keeps the layer order, so ImageNet weights of the keras.applications model copy over
layer by layer. The stem convolution stays randomly initialised (the seed discards the RGB kernel).

Differences to torchvision's parameter count (all well below 1 %, see ``docs/liver_lesions.md``):
keras.applications' ResNet convolutions carry a bias; its InceptionV3 batch norms have no scale.

``size="small"`` builds the same family with few blocks and narrow widths (our builders for all
four: ResNet / ResNeXt bottlenecks, dense blocks, a two-module Inception) for quick phantom runs.

Weights: ``None`` (random init), ``"imagenet"`` (the keras.applications file in the Keras cache
``~/.keras/models``; never downloaded: a clear error if absent) or the path of a local weights file
(a keras.applications ``*_notop.h5`` file for the three keras.applications backbones; a
``.weights.h5`` of this exact builder for ResNeXt, e.g. converted torchvision weights).

Example:
    >>> m = build_os8_backbone("resnet152", (64, 64, 1), size="small")
    >>> tuple(m.output.shape)
    (None, 8, 8, 256)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np

from tfmedseg.errors import ConfigError, InvalidInputError, ModelBuildError
from tfmedseg.models.backbones import OS8_BACKBONES
from tfmedseg.models.blocks.grouped_conv import GroupedConv2D
from tfmedseg.models.blocks.normalization import batch_norm

__all__ = ["OS8_BACKBONES", "SIZES", "build_densenet_small", "build_inception_small", "build_os8_backbone",
           "build_resnet_os8", "resolve_weights"]

SIZES = ("paper", "small")

_APP_FILES = {
    "resnet152": "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "densenet201": "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "inception_v3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
_TORCH_BN = {"momentum": 0.9, "epsilon": 1e-5}


def resolve_weights(weights: str | os.PathLike | None, backbone: str) -> str | None:
    """``None``, or the local file to load for ``weights`` (``"imagenet"``: the Keras cache file).

    Raises:
        InvalidInputError: ``"imagenet"`` without the file in the Keras cache (no download), or a
            path that is not a file.
    """
    if weights is None:
        return None
    if isinstance(weights, str) and weights == "imagenet":
        if backbone not in _APP_FILES:
            raise InvalidInputError(
                f"keras.applications has no ImageNet weights for {backbone}; give the path of a local "
                "weights file of this builder (e.g. converted torchvision weights) or None", path="imagenet")
        cache = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models",
                             _APP_FILES[backbone])
        if not os.path.isfile(cache):
            raise InvalidInputError(
                "ImageNet weights are not downloaded (offline): put the keras.applications file here or "
                "pass its path as weights, or use weights=None to train from scratch", path=cache)
        return cache
    if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights):
        raise InvalidInputError("weights must be None, 'imagenet' or the path of a local weights file",
                                path=os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else repr(weights))
    return os.fspath(weights)


def _weighted(model: keras.Model) -> list:
    return [layer for layer in model.layers if layer.weights]


def _copy_except_stem(model: keras.Model, reference: keras.Model, path: str) -> int:
    """Copy weights layer by layer (same order) from ``reference``, leaving the first conv random."""
    ours, theirs = _weighted(model), _weighted(reference)
    if len(ours) != len(theirs):
        raise ModelBuildError(f"backbone has {len(ours)} weighted layers, the file's model {len(theirs)}", path=path)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if i == 0:
            continue  # the 1-channel stem: new random kernel (seed 003)
        values = b.get_weights()
        if [v.shape for v in values] != [w.shape for w in a.get_weights()]:
            raise ModelBuildError(f"layer {a.name!r} does not match {b.name!r} of the weights file", path=path)
        a.set_weights(values)
    return len(ours) - 1


def _clone(model: keras.Model, change) -> keras.Model:
    def clone_function(layer):
        cfg = change(layer, layer.get_config())
        if isinstance(cfg, keras.layers.Layer):
            return cfg
        return layer.__class__.from_config(cfg)

    return keras.models.clone_model(model, clone_function=clone_function)


def _dilate_resnet(layer, cfg):
    """conv4 / conv5 of keras.applications ResNet: stride 1, torchvision's dilation rule."""
    for stage, rate in (("conv4_", 2), ("conv5_", 4)):
        if layer.name.startswith(stage) and isinstance(layer, keras.layers.Conv2D):
            cfg["strides"] = (1, 1)
            if tuple(cfg["kernel_size"]) == (3, 3):
                first = layer.name.startswith(stage + "block1_")
                d = rate // 2 if first else rate
                cfg["dilation_rate"] = (d, d)
    return cfg


def _no_pool(names_or_count):
    seen = {"n": 0}

    def change(layer, cfg):
        if isinstance(names_or_count, int):
            if isinstance(layer, keras.layers.MaxPooling2D) and seen["n"] < names_or_count:
                seen["n"] += 1
                return keras.layers.Identity(name=layer.name)
        elif layer.name in names_or_count:
            return keras.layers.Identity(name=layer.name)
        return cfg

    return change


def _application_os8(backbone: str, input_shape, weights: str | None) -> keras.Model:
    app, change = {
        "resnet152": (keras.applications.ResNet152, _dilate_resnet),
        "densenet201": (keras.applications.DenseNet201, _no_pool(("pool3_pool", "pool4_pool"))),
        "inception_v3": (keras.applications.InceptionV3, _no_pool(2)),
    }[backbone]
    base = app(include_top=False, weights=None, input_shape=tuple(input_shape))
    model = _clone(base, change)
    if weights is not None:
        reference = app(include_top=False, weights=weights, input_shape=(None, None, 3))
        _copy_except_stem(model, reference, weights)
    return keras.Model(model.inputs[0], model.outputs[0], name=f"{backbone}_os8")


def _conv(filters, kernel, name, strides=1, dilation=1, groups=1):
    # GroupedConv2D: keras' Conv2D, computed per group on CPU (TF's grouped CPU kernel is ~80x slower)
    return GroupedConv2D(filters, kernel, strides=strides, padding="same", dilation_rate=dilation,
                               groups=groups, use_bias=False, name=name)


def build_resnet_os8(
    input_shape: Sequence[int | None] = (256, 256, 1),
    blocks: Sequence[int] = (3, 4, 23, 3),
    planes: Sequence[int] = (64, 128, 256, 512),
    groups: int = 32,
    width_per_group: int = 8,
    stem_filters: int = 64,
    name: str = "resnext101_32x8d_os8",
) -> keras.Model:
    """ResNet / ResNeXt (torchvision layout) at output stride 8; default ResNeXt101-32x8d.

    Bottleneck: 1x1 (width) -> grouped 3x3 (width, ``groups``, stride) -> 1x1 (4 * planes), BN after
    each (eps 1e-5), projection shortcut on the first block of a stage;
    ``width = int(planes * width_per_group / 64) * groups`` (torchvision). Stages 4 and 5 have stride 1
    and dilation 2 and 4 (their first block keeps the previous dilation).

    Args:
        input_shape: ``(H, W, C)``.
        blocks, planes: Blocks and bottleneck planes per stage (4 each).
        groups, width_per_group: Cardinality and per-group width (ResNet: 1, 64).
        stem_filters: Filters of the 7x7 stride-2 stem.
        name: Model name.

    Returns:
        ``[B, H, W, C]`` -> ``[B, H / 8, W / 8, 4 * planes[-1]]``.
    """
    if len(blocks) != 4 or len(planes) != 4 or min(blocks) < 1 or min(planes) < 1:
        raise ModelBuildError(f"need 4 positive blocks and planes, got {tuple(blocks)}, {tuple(planes)}", path="blocks")
    inputs = keras.Input(tuple(input_shape), name="image")
    x = _conv(stem_filters, 7, "conv1_conv", strides=2)(inputs)
    x = batch_norm(**_TORCH_BN, name="conv1_bn")(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    dilation = 1
    for stage, (n, p) in enumerate(zip(blocks, planes), start=2):
        stride, previous = (2 if stage == 3 else 1), dilation
        if stage >= 4:
            dilation *= 2
        width = int(p * width_per_group / 64) * groups
        for i in range(1, n + 1):
            pre = f"conv{stage}_block{i}"
            s, d = (stride, previous) if i == 1 else (1, dilation)
            shortcut = x
            if i == 1:
                shortcut = _conv(4 * p, 1, f"{pre}_0_conv", strides=s)(x)
                shortcut = batch_norm(**_TORCH_BN, name=f"{pre}_0_bn")(shortcut)
            y = _conv(width, 1, f"{pre}_1_conv")(x)
            y = keras.layers.ReLU(name=f"{pre}_1_relu")(batch_norm(**_TORCH_BN, name=f"{pre}_1_bn")(y))
            y = _conv(width, 3, f"{pre}_2_conv", strides=s, dilation=d, groups=groups)(y)
            y = keras.layers.ReLU(name=f"{pre}_2_relu")(batch_norm(**_TORCH_BN, name=f"{pre}_2_bn")(y))
            y = _conv(4 * p, 1, f"{pre}_3_conv")(y)
            y = batch_norm(**_TORCH_BN, name=f"{pre}_3_bn")(y)
            x = keras.layers.ReLU(name=f"{pre}_out")(keras.layers.Add(name=f"{pre}_add")([shortcut, y]))
    return keras.Model(inputs, x, name=name)


def build_densenet_small(input_shape=(256, 256, 1), blocks=(2, 2, 2, 2), growth: int = 8, stem_filters: int = 16,
                         name: str = "densenet_small_os8") -> keras.Model:
    """DenseNet (BN-ReLU-1x1(4k)-BN-ReLU-3x3(k) layers, 0.5-compression transitions), output stride 8.

    Like the cloned DenseNet201: average pools only in the first transition. ``[B, H, W, C]`` ->
    ``[B, H / 8, W / 8, C_out]``.
    """
    inputs = keras.Input(tuple(input_shape), name="image")
    x = _conv(stem_filters, 7, "conv1_conv", strides=2)(inputs)
    x = keras.layers.ReLU(name="conv1_relu")(batch_norm(**_TORCH_BN, name="conv1_bn")(x))
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for b, n in enumerate(blocks, start=2):
        for i in range(1, n + 1):
            pre = f"conv{b}_block{i}"
            y = keras.layers.ReLU()(batch_norm(**_TORCH_BN, name=f"{pre}_0_bn")(x))
            y = _conv(4 * growth, 1, f"{pre}_1_conv")(y)
            y = keras.layers.ReLU()(batch_norm(**_TORCH_BN, name=f"{pre}_1_bn")(y))
            y = _conv(growth, 3, f"{pre}_2_conv")(y)
            x = keras.layers.Concatenate(name=f"{pre}_concat")([x, y])
        if b < 1 + len(blocks):
            x = keras.layers.ReLU()(batch_norm(**_TORCH_BN, name=f"pool{b}_bn")(x))
            x = _conv(int(x.shape[-1]) // 2, 1, f"pool{b}_conv")(x)
            if b == 2:
                x = keras.layers.AveragePooling2D(2, name=f"pool{b}_pool")(x)
    x = keras.layers.ReLU(name="relu")(batch_norm(**_TORCH_BN, name="bn")(x))
    return keras.Model(inputs, x, name=name)


def _cbr(x, filters, kernel, name, strides=1, padding="same"):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(batch_norm(**_TORCH_BN, name=f"{name}_bn")(x))


def build_inception_small(input_shape=(256, 256, 1), filters: int = 16, modules: int = 2,
                          name: str = "inception_small_os8") -> keras.Model:
    """A narrow Inception: valid-padding stem (3x3/2, 3x3, 3x3 -- no max pool), one stride-2
    reduction, ``modules`` Inception-A modules (1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1) and a
    stride-2 reduction, like InceptionV3 without its stem pools: 256^2 -> 30 x 30."""
    inputs = keras.Input(tuple(input_shape), name="image")
    x = _cbr(inputs, filters, 3, "stem1", strides=2, padding="valid")
    x = _cbr(x, filters, 3, "stem2", padding="valid")
    x = _cbr(x, 2 * filters, 3, "stem3")
    x = _cbr(x, 2 * filters, 3, "stem4", padding="valid")
    x = _cbr(x, 2 * filters, 3, "reduce1", strides=2, padding="valid")
    for m in range(modules):
        p = f"mixed{m}"
        b1 = _cbr(x, filters, 1, f"{p}_b1")
        b5 = _cbr(_cbr(x, filters, 1, f"{p}_b5a"), filters, 5, f"{p}_b5b")
        b3 = _cbr(_cbr(_cbr(x, filters, 1, f"{p}_b3a"), filters, 3, f"{p}_b3b"), filters, 3, f"{p}_b3c")
        bp = _cbr(keras.layers.AveragePooling2D(3, strides=1, padding="same", name=f"{p}_pool")(x), filters, 1, f"{p}_bp")
        x = keras.layers.Concatenate(name=p)([b1, b5, b3, bp])
    x = _cbr(x, 4 * filters, 3, "reduce2", strides=2, padding="valid")
    return keras.Model(inputs, x, name=name)


_SMALL = {
    "resnet152": lambda s: build_resnet_os8(s, (1, 1, 2, 1), (8, 16, 32, 64), 1, 64, 16, name="resnet_small_os8"),
    "resnext101_32x8d": lambda s: build_resnet_os8(s, (1, 1, 1, 1), (8, 16, 32, 64), 4, 32, 16, name="resnext_small_os8"),
    "densenet201": lambda s: build_densenet_small(s),
    "inception_v3": lambda s: build_inception_small(s),
}


def build_os8_backbone(
    backbone: str, input_shape: Sequence[int | None] = (256, 256, 1), weights: str | os.PathLike | None = None,
    size: str = "paper",
) -> keras.Model:
    """One of :data:`OS8_BACKBONES` at output stride 8 (InceptionV3: 30 x 30 for 256 x 256).

    Args:
        backbone: ``"resnet152"``, ``"resnext101_32x8d"``, ``"densenet201"`` or ``"inception_v3"``.
        input_shape: ``(H, W, C)``; ``C = 1`` is the seed's CT stem.
        weights: ``None``, ``"imagenet"`` (local Keras cache only) or a local weights file.
        size: ``"paper"`` (real depths) or ``"small"`` (few blocks, narrow; no pretrained weights).

    Returns:
        ``keras.Model``: ``[B, H, W, C]`` -> ``[B, h, w, channels]`` (the last feature map).

    Raises:
        ConfigError: Unknown backbone or size.
        InvalidInputError: Unusable ``weights``.
    """
    if backbone not in OS8_BACKBONES:
        raise ConfigError(f"must be one of {OS8_BACKBONES}, got {backbone!r}", path="backbone")
    if size not in SIZES:
        raise ConfigError(f"must be one of {SIZES}, got {size!r}", path="size")
    if len(input_shape) != 3:
        raise ModelBuildError(f"input_shape must be (H, W, C), got {tuple(input_shape)}", path="input_shape")
    if size == "small":
        if weights is not None:
            raise ConfigError("pretrained weights exist only for size='paper'", path="weights")
        return _SMALL[backbone](tuple(input_shape))
    path = resolve_weights(weights, backbone)
    if backbone == "resnext101_32x8d":
        model = build_resnet_os8(input_shape)
        if path is not None:
            try:
                model.load_weights(path)
            except (ValueError, OSError, KeyError) as exc:
                raise InvalidInputError(f"not a weights file of this ResNeXt builder ({exc})", path=path) from None
        return model
    return _application_os8(backbone, input_shape, path)


def feature_stride(model: keras.Model) -> float:
    """Input side / feature side of a built backbone (8 for the OS-8 models at 256^2)."""
    return float(np.asarray(model.input.shape[1]) / np.asarray(model.output.shape[1]))
