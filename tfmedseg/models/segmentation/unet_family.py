"""U-Net, UNet++ and MA-Net on named encoders, as segmentation_models_pytorch 0.6 builds them (seed 000).

Registered builders ``unet``, ``unet_plus_plus`` and ``manet`` take an smp encoder name
(:mod:`tfmedseg.models.backbones.encoders`) and build the same decoder as smp 0.6 (the library
the seed trained with):

* encoder features at strides 2 .. ``2 ** encoder_depth``; the deepest is the *head*, the others
  are skips, deep to shallow; the last decoder block (stride 2 -> 1) has no skip;
* **U-Net** block: nearest x2, concat skip, 2 x (Conv3x3 - BN - ReLU); a centre block of
  2 x Conv3x3-BN-ReLU on the head only for VGG encoders (smp's rule);
* **UNet++**: smp's nested dense skips ``x_{d}_{l}`` (node ``x_{d}_{l}`` upsamples ``x_{d}_{l-1}``
  and concatenates every ``x_{k}_{l}``, ``k > d``, with the encoder skip of that level); smp builds
  a VGG centre block but never calls it, so it is not built here. ``deep_supervision=True`` adds
  (our extension; smp has none) a Conv3x3 head with bilinear x2 upsampling on each of the other
  stride-2 nodes ``x_{depth-1-i}_{depth-1}``, as in Zhou et al. (2018);
* **MA-Net**: :class:`~tfmedseg.models.blocks.attention.PositionAttention` (PAB, 64 channels) on
  the head, :func:`~tfmedseg.models.blocks.attention.apply_mfab` in every block with a skip, a
  plain U-Net block for the last; smp's softmax over the flattened ``HW x HW`` map and its
  reshape are kept (deviations from the MA-Net paper, see the attention module);
* segmentation head: Conv3x3 -> ``classes`` (with bias), then ``activation`` (None: logits, smp's
  default; ``"sigmoid"`` or ``"softmax"``).

Parameter counts equal the parameters smp's forward pass uses within 2 % (``docs/models.md``,
``benchmarks/param_parity_smp.py``).

Example:
    >>> m = unet(encoder="resnet18", input_shape=(32, 32, 1), decoder_channels=(8, 8, 8, 8, 8), classes=2)
    >>> tuple(m.output.shape)
    (None, 32, 32, 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from tfmedseg.errors import ModelBuildError
from tfmedseg.models.backbones.encoders import build_encoder, encoder_channels
from tfmedseg.models.blocks.attention import (
    PositionAttention,
    apply_conv_bn_relu,
    apply_mfab,
)
from tfmedseg.models.registry import register

__all__ = ["DECODER_CHANNELS", "decode", "decoder_parameter_count", "manet", "manet_decoder", "unet", "unet_decoder", "unet_plus_plus", "unet_plus_plus_decoder"]

#: smp's default decoder widths (deep to shallow).
DECODER_CHANNELS = (256, 128, 64, 32, 16)
_ACTIVATIONS = (None, "sigmoid", "softmax")


def _decoder_block(x, skip, out_channels: int, name: str):
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up")(x)
    if skip is not None:
        x = keras.layers.Concatenate(name=f"{name}_concat")([x, *skip] if isinstance(skip, list) else [x, skip])
    x = apply_conv_bn_relu(x, out_channels, 3, name=f"{name}_conv1")
    return apply_conv_bn_relu(x, out_channels, 3, name=f"{name}_conv2")


def unet_decoder(features: list, decoder_channels: Sequence[int], center: bool = False):
    """smp ``UnetDecoder`` on encoder ``features`` (strides 2 .. 2**n, shallow to deep); output stride 1."""
    head, skips = features[-1], features[:-1][::-1]
    x = head
    if center:
        channels = int(head.shape[-1])
        x = apply_conv_bn_relu(x, channels, 3, name="decoder_center1")
        x = apply_conv_bn_relu(x, channels, 3, name="decoder_center2")
    for i, out_channels in enumerate(decoder_channels):
        x = _decoder_block(x, skips[i] if i < len(skips) else None, out_channels, name=f"decoder_block{i}")
    return x


def unet_plus_plus_decoder(features: list, decoder_channels: Sequence[int]) -> tuple:
    """smp ``UnetPlusPlusDecoder``; returns ``(output at stride 1, [other stride-2 nodes])``."""
    feats = features[::-1]  # head first
    n = len(decoder_channels)
    depth = n - 1
    skip_channels = [int(f.shape[-1]) for f in feats[1:]] + [0]
    dense: dict[str, object] = {}
    for layer_idx in range(depth):
        for depth_idx in range(depth - layer_idx):
            if layer_idx == 0:
                out_ch = decoder_channels[depth_idx] if depth_idx == 0 else skip_channels[depth_idx]
                dense[f"x_{depth_idx}_{depth_idx}"] = _decoder_block(
                    feats[depth_idx], feats[depth_idx + 1], out_ch, name=f"decoder_x_{depth_idx}_{depth_idx}")
            else:
                level = depth_idx + layer_idx
                out_ch = decoder_channels[level] if depth_idx == 0 else skip_channels[level]
                cat = [dense[f"x_{idx}_{level}"] for idx in range(depth_idx + 1, level + 1)] + [feats[level + 1]]
                dense[f"x_{depth_idx}_{level}"] = _decoder_block(
                    dense[f"x_{depth_idx}_{level - 1}"], cat, out_ch, name=f"decoder_x_{depth_idx}_{level}")
    out = _decoder_block(dense[f"x_0_{depth - 1}"], None, decoder_channels[-1], name=f"decoder_x_0_{depth}")
    side = [dense[f"x_{d}_{depth - 1}"] for d in range(depth - 1, 0, -1)]
    return out, side


def manet_decoder(features: list, decoder_channels: Sequence[int], pab_channels: int = 64, reduction: int = 16):
    """smp ``MAnetDecoder``: PAB on the head, MFAB per skip, a plain block last; output stride 1."""
    head, skips = features[-1], features[:-1][::-1]
    x = PositionAttention(pab_channels, name="decoder_pab")(head)
    for i, out_channels in enumerate(decoder_channels):
        if i < len(skips):
            x = apply_mfab(x, skips[i], out_channels, reduction, name=f"decoder_mfab{i}")
        else:
            x = _decoder_block(x, None, out_channels, name=f"decoder_block{i}")
    return x


def _head(x, classes: int, activation: str | None, name: str, upsample: int = 1):
    x = keras.layers.Conv2D(classes, 3, padding="same", name=f"{name}_conv")(x)
    if upsample > 1:
        x = keras.layers.UpSampling2D(upsample, interpolation="bilinear", name=f"{name}_up")(x)
    if activation is not None:
        x = keras.layers.Activation(activation, dtype="float32", name=f"{name}_{activation}")(x)
    return x


def _check(arch: str, encoder_depth: int, decoder_channels, classes, activation):
    decoder_channels = tuple(int(c) for c in decoder_channels)
    if len(decoder_channels) != int(encoder_depth):
        raise ModelBuildError(f"{arch}: encoder_depth={encoder_depth} needs {encoder_depth} decoder_channels, "
                              f"got {decoder_channels}", path="decoder_channels")
    if min(decoder_channels) < 1:
        raise ModelBuildError(f"must be positive, got {decoder_channels}", path="decoder_channels")
    if not isinstance(classes, int) or classes < 1:
        raise ModelBuildError(f"must be a positive int, got {classes!r}", path="classes")
    if activation not in _ACTIVATIONS:
        raise ModelBuildError(f"must be one of {_ACTIVATIONS}, got {activation!r}", path="activation")
    return decoder_channels


def decode(arch: str, features: list, encoder: str, decoder_channels: Sequence[int], classes: int,
           activation: str | None = None, deep_supervision: bool = False, pab_channels: int = 64):
    """Decoder + segmentation head(s) of ``arch`` on encoder ``features`` (strides 2 .. 2**n).

    Args:
        arch: ``"unet"``, ``"unet_plus_plus"`` or ``"manet"``.
        features: Encoder feature tensors, shallow to deep.
        encoder: Encoder name (U-Net adds a centre block for VGG encoders).
        decoder_channels: Decoder widths, deep to shallow.
        classes: Output channels.
        activation: None, ``"sigmoid"`` or ``"softmax"``.
        deep_supervision: UNet++ only: also return the side outputs.
        pab_channels: MA-Net only.

    Returns:
        One tensor ``[B, H, W, classes]`` or, with deep supervision, a list of them.
    """
    if arch == "unet":
        x = unet_decoder(features, decoder_channels, center=encoder.startswith("vgg"))
    elif arch == "manet":
        x = manet_decoder(features, decoder_channels, pab_channels=pab_channels)
    elif arch == "unet_plus_plus":
        x, side = unet_plus_plus_decoder(features, decoder_channels)
        if deep_supervision:
            return [_head(s, classes, activation, f"deep_supervision{i + 1}", upsample=2) for i, s in enumerate(side)] + [
                _head(x, classes, activation, "segmentation_head")]
    else:
        raise ModelBuildError(f"unknown architecture {arch!r}; use unet, unet_plus_plus or manet", path="arch")
    return _head(x, classes, activation, "segmentation_head")


def decoder_parameter_count(arch: str, encoder: str, classes: int = 1, decoder_channels: Sequence[int] = DECODER_CHANNELS,
                            encoder_depth: int = 5, **kwargs) -> int:
    """Trainable parameters of ``arch``'s decoder and head on ``encoder`` (no encoder is built).

    The full model's trainable count is this plus the encoder's (``build_encoder(...).count_params()``
    minus its non-trainable statistics); used by the smp parity test and benchmark.
    """
    shapes = encoder_channels(encoder, encoder_depth)
    inputs = [keras.Input((2 ** (encoder_depth - i), 2 ** (encoder_depth - i), c)) for i, c in enumerate(shapes)]
    outputs = decode(arch, inputs, encoder, tuple(decoder_channels), classes, **kwargs)
    model = keras.Model(inputs, outputs)
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def _build(arch: str, encoder, encoder_weights, encoder_depth, decoder_channels, input_shape, classes, activation,
           name, **kwargs) -> keras.Model:
    decoder_channels = _check(arch, encoder_depth, decoder_channels, classes, activation)
    enc = build_encoder(encoder, input_shape, weights=encoder_weights, depth=encoder_depth)
    image = keras.Input(tuple(input_shape), name="image")
    features = enc(image)
    features = features if isinstance(features, list) else [features]
    outputs = decode(arch, features, encoder, decoder_channels, classes, activation, **kwargs)
    return keras.Model(image, outputs, name=name or f"{arch}_{encoder}")


@register("unet")
def unet(encoder: str = "resnet34", encoder_weights=None, encoder_depth: int = 5,
         decoder_channels: Sequence[int] = DECODER_CHANNELS, input_shape: Sequence[int | None] = (256, 256, 3),
         classes: int = 1, activation: str | None = None, name: str | None = None) -> keras.Model:
    """smp U-Net.

    Args:
        encoder: smp encoder name (``resnet34``, ``efficientnet-b3``, ``timm-efficientnet-b6``, ...).
        encoder_weights: None, or a local weights file (no downloads).
        encoder_depth: Encoder stages used (3-5); ``len(decoder_channels)`` must equal it.
        decoder_channels: Decoder widths, deep to shallow.
        input_shape: ``(H, W, C)``, any ``C``; ``H, W`` divisible by ``2 ** encoder_depth``.
        classes: Output channels.
        activation: None (logits), ``"sigmoid"`` or ``"softmax"``.
        name: Model name (default ``f"unet_{encoder}"``).

    Returns:
        ``keras.Model``: ``image`` ``[B, H, W, C]`` float32 in [0, 1] -> ``[B, H, W, classes]``.
    """
    return _build("unet", encoder, encoder_weights, encoder_depth, decoder_channels, input_shape, classes, activation, name)


@register("unet_plus_plus")
def unet_plus_plus(encoder: str = "resnet34", encoder_weights=None, encoder_depth: int = 5,
                   decoder_channels: Sequence[int] = DECODER_CHANNELS, input_shape: Sequence[int | None] = (256, 256, 3),
                   classes: int = 1, activation: str | None = None, deep_supervision: bool = False,
                   name: str | None = None) -> keras.Model:
    """smp UNet++ (arguments as :func:`unet`).

    Args:
        deep_supervision: Also output one map per other stride-2 node (``encoder_depth - 2`` extra
            outputs, bilinear x2 to full size), shallowest nesting first; the model then returns the
            list ``[side_1, ..., side_{depth-2}, main]``, all ``[B, H, W, classes]``.
    """
    if int(encoder_depth) < 2:
        raise ModelBuildError("UNet++ needs encoder_depth >= 2", path="encoder_depth")
    return _build("unet_plus_plus", encoder, encoder_weights, encoder_depth, decoder_channels, input_shape, classes,
                  activation, name, deep_supervision=bool(deep_supervision))


@register("manet")
def manet(encoder: str = "resnet34", encoder_weights=None, encoder_depth: int = 5,
          decoder_channels: Sequence[int] = DECODER_CHANNELS, input_shape: Sequence[int | None] = (256, 256, 3),
          classes: int = 1, activation: str | None = None, pab_channels: int = 64, name: str | None = None) -> keras.Model:
    """smp MA-Net (arguments as :func:`unet`; ``pab_channels`` of the PAB query/key convs, 64)."""
    return _build("manet", encoder, encoder_weights, encoder_depth, decoder_channels, input_shape, classes, activation,
                  name, pab_channels=int(pab_channels))
