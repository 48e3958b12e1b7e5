"""Multi-scale encoders under segmentation_models_pytorch's names, for U-Net / UNet++ / MA-Net.

:func:`build_encoder` returns a ``keras.Model`` from an image ``[B, H, W, C]`` (float32 in
[0, 1], any ``C``) to the feature maps at strides 2, 4, 8, 16, 32 (the first ``depth`` of them)
-- the stages smp's encoder of the same name hands its decoders (smp's stage 0, the input itself
or VGG's full-resolution map, is never used by these decoders and is not returned).

Sources:

* ``resnet18``, ``resnet34``: our basic-block builder (:mod:`tfmedseg.models.backbones.resnet34`).
* ``resnet50/101/152``, ``efficientnet-b0..b7``, ``timm-efficientnet-b0..b7`` (the same
  EfficientNet; smp's two names differ only in where the PyTorch weights come from),
  ``mobilenet_v2``, ``vgg16``, ``vgg19``, ``xception``: ``keras.applications``, with the layers
  that match smp's stages (:data:`ENCODERS`). Keras' Xception has two unpadded stem convolutions;
  the input is zero-padded by 3 pixels so that its stride-2 map is exactly ``H / 2`` as in smp's
  padded variant.

Input scaling: every encoder starts with a parameter-free ``Rescaling`` from [0, 1] to what its
ImageNet weights expect -- ``torch`` ``(x - 0.449) / 0.226``, ``efficientnet`` ``255 x`` (the
Keras model normalises inside), ``caffe`` ``255 x - 114.8``, ``tf`` ``2 x - 1``. One scalar per
encoder (the mean of the per-channel ImageNet constants, and no RGB -> BGR flip for ``caffe``), so
the same encoder takes grey, RGB or fused inputs; a documented simplification.

Weights (``weights=``): ``None`` (random init, the default), a local file (a ``keras.applications``
weights file, ``.h5`` or ``.weights.h5``, for the Keras encoders, copied layer by layer by name,
the first kernel summed over RGB for a grey input; a ``.weights.h5`` saved from the same
encoder for ``resnet18/34``); the names ``"imagenet"``, ``"noisy-student"``, ... would need a
download, which tfmedseg never does: they raise :class:`~tfmedseg.errors.ModelBuildError`.

Example:
    >>> enc = build_encoder("resnet34", (64, 64, 3))
    >>> [t.shape[-1] for t in enc.outputs]
    [64, 64, 128, 256, 512]
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence

import keras
import numpy as np

from tfmedseg.errors import ModelBuildError
from tfmedseg.models.backbones.resnet34 import RESNET_BLOCKS, build_basic_resnet

__all__ = ["ENCODERS", "EncoderSpec", "available_encoders", "build_encoder", "encoder_channels"]

logger = logging.getLogger(__name__)

_SCALING = {  # mode -> (scale, offset) applied to [0, 1] input
    "torch": (1.0 / 0.226, -0.449 / 0.226),
    "efficientnet": (255.0, 0.0),
    "caffe": (255.0, -(103.939 + 116.779 + 123.68) / 3.0),
    "tf": (2.0, -1.0),
}


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """How to build one named encoder.

    Attributes:
        channels: Channels of the five feature maps (strides 2 .. 32), as smp's ``out_channels[1:]``.
        scaling: Input scaling mode (module docstring).
        application: ``keras.applications`` constructor name, or None for our own builder.
        stages: Function ``app -> five layer outputs`` (strides 2 .. 32) of the Keras model.
        pad: Zero padding applied to the input before the Keras model (pixels per side).
    """

    channels: tuple[int, ...]
    scaling: str
    application: str | None = None
    stages: Callable[[keras.Model], list] | None = None
    pad: int = 0


def _named(*names: str) -> Callable[[keras.Model], list]:
    return lambda app: [app.get_layer(n).output for n in names]


def _last_of_groups(first: str, groups: Sequence[str]) -> Callable[[keras.Model], list]:
    """``first`` and, per prefix, the output of the last layer whose name starts with it."""

    def stages(app: keras.Model) -> list:
        out = [app.get_layer(first).output]
        for prefix in groups:
            layers = [layer for layer in app.layers if layer.name.startswith(prefix)]
            out.append(layers[-1].output)
        return out

    return stages


def _xception_stages(app: keras.Model) -> list:
    adds = [layer for layer in app.layers if isinstance(layer, keras.layers.Add)]
    # adds: block2 (/4), block3 (/8), block4 .. block12 (/16), block13 (/32)
    return [app.get_layer("block1_conv2_act").output, adds[0].output, adds[1].output, adds[-2].output,
            app.get_layer("block14_sepconv2_bn").output]


_EFFICIENTNET_CHANNELS = {
    0: (32, 24, 40, 112, 320), 1: (32, 24, 40, 112, 320), 2: (32, 24, 48, 120, 352),
    3: (40, 32, 48, 136, 384), 4: (48, 32, 56, 160, 448), 5: (48, 40, 64, 176, 512),
    6: (56, 40, 72, 200, 576), 7: (64, 48, 80, 224, 640),
}
_EFFICIENTNET_STAGES = _last_of_groups("stem_activation", ("block2", "block3", "block5", "block7"))

#: Every encoder name accepted by :func:`build_encoder`.
ENCODERS: dict[str, EncoderSpec] = {
    "resnet18": EncoderSpec((64, 64, 128, 256, 512), "torch"),
    "resnet34": EncoderSpec((64, 64, 128, 256, 512), "torch"),
    "mobilenet_v2": EncoderSpec(
        (16, 24, 32, 96, 1280), "tf", "MobileNetV2",
        _named("expanded_conv_project_BN", "block_2_add", "block_5_add", "block_12_add", "out_relu")),
    "vgg16": EncoderSpec(
        (128, 256, 512, 512, 512), "caffe", "VGG16",
        _named("block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool")),
    "vgg19": EncoderSpec(
        (128, 256, 512, 512, 512), "caffe", "VGG19",
        _named("block2_conv2", "block3_conv4", "block4_conv4", "block5_conv4", "block5_pool")),
    "xception": EncoderSpec((64, 128, 256, 728, 2048), "tf", "Xception", _xception_stages, pad=3),
}
for _depth, _name in ((50, "ResNet50"), (101, "ResNet101"), (152, "ResNet152")):
    ENCODERS[f"resnet{_depth}"] = EncoderSpec(
        (64, 256, 512, 1024, 2048), "caffe", _name,
        _last_of_groups("conv1_relu", ("conv2_block", "conv3_block", "conv4_block", "conv5_block")))
for _b, _channels in _EFFICIENTNET_CHANNELS.items():
    for _prefix in ("efficientnet", "timm-efficientnet"):
        ENCODERS[f"{_prefix}-b{_b}"] = EncoderSpec(_channels, "efficientnet", f"EfficientNetB{_b}", _EFFICIENTNET_STAGES)


def available_encoders() -> list[str]:
    """Sorted encoder names."""
    return sorted(ENCODERS)


def _spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise ModelBuildError(f"unknown encoder {name!r}; available: {available_encoders()}", path="encoder")
    return ENCODERS[name]


def encoder_channels(name: str, depth: int = 5) -> tuple[int, ...]:
    """Channels of the first ``depth`` feature maps of encoder ``name`` (strides 2 .. 2**depth)."""
    return _spec(name).channels[:depth]


def _check_weights(weights) -> str | None:
    if weights is None:
        return None
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return os.fspath(weights)
    if isinstance(weights, str) and not any(sep in weights for sep in "/\\") and not weights.endswith(".h5"):
        raise ModelBuildError(
            f"encoder_weights={weights!r} would need a download, and tfmedseg works offline: pass None "
            "(train from scratch) or the path of a local weights file", path="encoder_weights")
    raise ModelBuildError("encoder weights file does not exist", path=os.fspath(weights))


def _copy_by_name(model: keras.Model, reference: keras.Model, path: str) -> int:
    """Copy same-named layers' weights; the first kernel is summed/sliced over its input channels,
    the input Normalization statistics averaged when the channel count differs."""
    ref_layers = {layer.name: layer for layer in reference.layers}
    copied = 0
    for layer in model.layers:
        ref = ref_layers.get(layer.name)
        if ref is None or not layer.weights:
            continue
        new = []
        for target, value in zip(layer.get_weights(), ref.get_weights()):
            if value.shape != target.shape:
                if value.ndim == 4 and value.shape[:2] + value.shape[3:] == target.shape[:2] + target.shape[3:]:
                    value = value.sum(axis=2, keepdims=True) if target.shape[2] == 1 else value[:, :, : target.shape[2]]
                elif isinstance(layer, keras.layers.Normalization) and value.ndim == 1:
                    value = np.full(target.shape, value.mean(), value.dtype)
            if value.shape != target.shape:
                raise ModelBuildError(f"layer {layer.name!r}: weights {value.shape} do not fit {target.shape}", path=path)
            new.append(value)
        if len(new) != len(layer.get_weights()):
            raise ModelBuildError(f"layer {layer.name!r} has {len(layer.get_weights())} weights, the file {len(new)}", path=path)
        layer.set_weights(new)
        copied += 1
    if copied == 0:
        raise ModelBuildError("no layer of the weights file matches the encoder", path=path)
    return copied


def build_encoder(name: str, input_shape: Sequence[int | None] = (256, 256, 3), weights=None, depth: int = 5) -> keras.Model:
    """Encoder ``name`` from ``[B, H, W, C]`` in [0, 1] to its first ``depth`` feature maps.

    Args:
        name: smp encoder name (:data:`ENCODERS`).
        input_shape: ``(H, W, C)``; ``H, W`` divisible by ``2 ** depth`` (or None).
        weights: None, or a local weights file (module docstring).
        depth: Feature maps returned (1-5), strides 2 .. ``2 ** depth``.

    Returns:
        ``keras.Model`` named ``f"encoder_{name}"`` with ``depth`` outputs.

    Raises:
        ModelBuildError: Unknown name, bad depth or shape, "imagenet" (no download), a weights
            file that does not fit.
    """
    spec = _spec(name)
    path = _check_weights(weights)
    if not 1 <= int(depth) <= 5:
        raise ModelBuildError(f"must be in 1..5, got {depth}", path="encoder_depth")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] is None or int(input_shape[-1]) < 1:
        raise ModelBuildError(f"must be (H, W, C) with a known C, got {input_shape}", path="input_shape")
    for size in input_shape[:2]:
        if size is not None and int(size) % (2 ** depth):
            raise ModelBuildError(f"H and W must be divisible by {2 ** depth} (encoder_depth={depth}), got {input_shape}",
                                  path="input_shape")
    scale, offset = _SCALING[spec.scaling]
    image = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(scale, offset, name=f"{name}_input_scaling")(image)
    if spec.application is None:
        core = build_basic_resnet(input_shape, RESNET_BLOCKS[name], depth=depth, name=name)
        if path:
            try:
                core.load_weights(path)
            except (ValueError, OSError, KeyError) as exc:
                raise ModelBuildError(f"cannot load {name} encoder weights ({exc})", path=path) from exc
        features = core(x)
        features = features if isinstance(features, list) else [features]
    else:
        if spec.pad:
            x = keras.layers.ZeroPadding2D(spec.pad, name=f"{name}_input_pad")(x)
        constructor = getattr(keras.applications, spec.application)
        app = constructor(include_top=False, weights=None, input_tensor=x)
        features = spec.stages(app)[:depth]
    encoder = keras.Model(image, features, name=f"encoder_{name}")
    if path and spec.application is not None:
        try:
            reference = getattr(keras.applications, spec.application)(include_top=False, weights=path,
                                                                       input_shape=(None, None, 3) if spec.application != "Xception" else (299, 299, 3))
        except (ValueError, OSError, KeyError) as exc:
            raise ModelBuildError(f"cannot read {spec.application} weights ({exc})", path=path) from exc
        copied = _copy_by_name(encoder, reference, path)
        logger.info("encoder %s: %d layers loaded from %s", name, copied, path)
    return encoder
