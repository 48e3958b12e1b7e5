"""SE U-Net and RRSE U-Net (seed 004): 3D residual U-Net with SE normalisation, RRCNN variants.

The seed (an RRSE U-Net report on HECKTOR 2021) describes the network only as "3D U-Net with
residual layers and SE normalisation, 4 stride-2 downsamplings doubling the feature maps, 4
upsamplings, 1x1x1 convolution to 2 channels"; the layer-level definition is that of its code base,
Iantsen et al.'s HECKTOR 2020 model (``iantsen/hecktor``, ``src/models.py``,
``FastSmoothSENormDeepUNet_supervision_skip_no_drop``), which :func:`se_unet` follows layer for
layer (parameter count within 0.01 %, see ``docs/experiments.md``):

* encoder, ``F`` = ``base_filters`` (24): level 1 ``res(2 -> F, k7)``, ``res(F, k3)``; levels
  2-5: ``MaxPooling(2)`` then three ``res(k3)`` units at ``2F, 4F, 8F, 16F`` (``res`` =
  :func:`~tfmedseg.models.blocks.se_norm.apply_residual_se_unit`, one conv each, 1x1x1 projection
  where the width changes);
* decoder levels 4-1: transposed conv ``k3, stride 2`` (with bias) halving the width, concat with the
  skip, two SE conv units (``k3``);
* the "upsampling pathway" (seed Table 5; the reference's ``vision_4/3/2``): decoder levels 4, 3, 2
  each give a 1x1x1 SE conv unit to ``F`` channels, trilinearly upsampled x8, x4, x2 and summed into
  level 1 between its two conv units;
* head: 1x1x1 conv to ``classes`` (2: background, GTVt) and a softmax (the reference's single
  sigmoid channel for 2 classes differs by ``F + 1`` parameters; the seed says 2 channels).

The RRSE U-Net (:func:`rrse_unet`, seed Table 5) adds R2U-Net RRCNN blocks
(:func:`~tfmedseg.models.blocks.rrcnn.apply_rrcnn`, ``t = 2``, ``k = 3``, instance norm) at the end
of chosen encoder levels (0-4) and decoder levels (0-3), either "after" the last conv unit of the
level or "replace"-ing it; :data:`RRSE_VARIANTS` holds the four rows of Table 5.

Normalisation (Tables 1-3): ``norm="se_instance"`` (reference), ``"se_batch"`` (SE norm over batch
statistics: the report's BatchNorm3d rows), or plain ``"instance"`` / ``"batch"``. Max pooling is
kept as in the reference (``keras.layers.MaxPooling3D``); the TFLite export swaps it for the exact
:class:`~tfmedseg.models.blocks.resampling.ReshapeMaxPooling`.

The builders are rank-agnostic: a 3-element ``input_shape`` ``(H, W, C)`` builds the 2D network.

Example:
    >>> model = se_unet(input_shape=(32, 32, 32, 2), base_filters=4)  # doctest: +SKIP
    >>> model.output_shape  # doctest: +SKIP
    (None, 32, 32, 32, 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfmedseg.errors import ModelBuildError
from tfmedseg.models.blocks.resampling import LinearUpsampling
from tfmedseg.models.blocks.rrcnn import apply_rrcnn
from tfmedseg.models.blocks.se_norm import (
    NORMALIZATIONS,
    apply_norm_conv,
    apply_residual_se_unit,
)
from tfmedseg.models.registry import register

__all__ = ["RRCNN_PLACEMENTS", "RRSE_VARIANTS", "check_input_shape", "rrse_unet", "se_unet"]

RRCNN_PLACEMENTS = ("after", "replace")
#: Seed 004 Table 5 (all instance norm, batch 1, rotation + mirroring).
RRSE_VARIANTS = {
    # 10 filters, RRCNN after the last conv of all 5 encoder and all 4 decoder levels, no upsampling pathway
    "t5_row1": {"base_filters": 10, "encoder_rrcnn_levels": (0, 1, 2, 3, 4), "decoder_rrcnn_levels": (0, 1, 2, 3),
                    "rrcnn_placement": "after", "upsampling_pathway": False},
    # 16 filters, RRCNN after the last conv of all 5 encoder levels, no upsampling pathway
    "t5_row2": {"base_filters": 16, "encoder_rrcnn_levels": (0, 1, 2, 3, 4), "decoder_rrcnn_levels": (),
                    "rrcnn_placement": "after", "upsampling_pathway": False},
    # 16 filters, upsampling pathway, RRCNN after encoder levels 1-4 (not the lowest: "GPU limit")
    "t5_row3": {"base_filters": 16, "encoder_rrcnn_levels": (0, 1, 2, 3), "decoder_rrcnn_levels": (),
                    "rrcnn_placement": "after", "upsampling_pathway": True},
    # 16 filters, upsampling pathway, the last conv of all 5 encoder levels replaced by an RRCNN
    "t5_row4": {"base_filters": 16, "encoder_rrcnn_levels": (0, 1, 2, 3, 4), "decoder_rrcnn_levels": (),
                    "rrcnn_placement": "replace", "upsampling_pathway": True},
}
_POOL = {2: keras.layers.MaxPooling2D, 3: keras.layers.MaxPooling3D}
_UPCONV = {2: keras.layers.Conv2DTranspose, 3: keras.layers.Conv3DTranspose}


def check_input_shape(input_shape: Sequence[int], downsamplings: int) -> tuple[int, ...]:
    """``(*spatial, C)`` with 2 or 3 spatial sizes, each a positive multiple of ``2**downsamplings``.

    Raises:
        ModelBuildError: Otherwise, naming ``input_shape``.
    """
    shape = tuple(int(v) for v in input_shape)
    stride = 2 ** downsamplings
    if len(shape) not in (3, 4) or min(shape) < 1 or any(n % stride for n in shape[:-1]):
        raise ModelBuildError(f"need (D, H, W, C) or (H, W, C) with spatial sizes multiple of {stride} "
                              f"({downsamplings} poolings), got {shape}", path="input_shape")
    return shape


def _levels(levels: Sequence[int], count: int, argument: str) -> tuple[int, ...]:
    levels = tuple(sorted({int(v) for v in levels}))
    if any(v < 0 or v >= count for v in levels):
        raise ModelBuildError(f"levels must lie in 0..{count - 1}, got {levels}", path=argument)
    return levels


def _finish_level(x, filters, last_unit, rrcnn: bool, placement: str, rr_kwargs: dict, name: str):
    """The level's last conv unit, then an RRCNN "after" it, or an RRCNN "replace"-ing it."""
    if rrcnn and placement == "replace":
        return apply_rrcnn(x, filters, name=f"{name}_rrcnn", **rr_kwargs)
    x = last_unit(x)
    if rrcnn:
        x = apply_rrcnn(x, filters, name=f"{name}_rrcnn", **rr_kwargs)
    return x


@register("se_unet")
def se_unet(input_shape: Sequence[int] = (144, 144, 144, 2), classes: int = 2, base_filters: int = 24,
            norm: str = "se_instance", reduction: int = 2, upsampling_pathway: bool = True,
            encoder_rrcnn_levels: Sequence[int] = (), decoder_rrcnn_levels: Sequence[int] = (),
            rrcnn_placement: str = "after", rrcnn_steps: int = 2, rrcnn_norm: str = "instance",
            name: str | None = None) -> keras.Model:
    """Build the SE U-Net of seed 004 (``iantsen/hecktor``'s model); RRCNN options make the RRSE U-Net.

    Args:
        input_shape: ``(D, H, W, 2)`` (CT, PET channels; 144^3 in the seed) or ``(H, W, C)``; spatial
            sizes multiples of 16.
        classes: Softmax output channels (2: background, GTVt).
        base_filters: ``F``, the level-1 width (24 in the seed's best row).
        norm: Normalisation kind, one of :data:`~tfmedseg.models.blocks.se_norm.NORMALIZATIONS`.
        reduction: SE bottleneck ratio (2).
        upsampling_pathway: Sum trilinearly upsampled side outputs of decoder levels 4-2 into level 1.
        encoder_rrcnn_levels: Encoder levels (0 = full resolution .. 4 = bottleneck) with an RRCNN.
        decoder_rrcnn_levels: Decoder levels (0 = full resolution .. 3) with an RRCNN.
        rrcnn_placement: ``"after"`` the level's last conv unit or ``"replace"`` it.
        rrcnn_steps: Recurrent steps ``t`` of each RRCNN (2).
        rrcnn_norm: Normalisation inside the RRCNN blocks (seed: instance norm).
        name: Model name (default ``"se_unet"``, or ``"rrse_unet"`` with RRCNN blocks).

    Returns:
        Functional ``keras.Model``: input ``image`` ``[B, *spatial, C]`` float32 (CT in [-1, 1] then
        z-scored, PET z-scored), output ``probabilities`` ``[B, *spatial, classes]`` (softmax).

    Raises:
        ModelBuildError: A bad argument, named in the message.
    """
    shape = check_input_shape(input_shape, 4)
    for value, allowed, argument in ((norm, NORMALIZATIONS, "norm"), (rrcnn_norm, NORMALIZATIONS, "rrcnn_norm"),
                                     (rrcnn_placement, RRCNN_PLACEMENTS, "rrcnn_placement")):
        if value not in allowed:
            raise ModelBuildError(f"must be one of {allowed}, got {value!r}", path=argument)
    if int(base_filters) < 1 or int(classes) < 1:
        raise ModelBuildError(f"base_filters and classes must be positive, got {base_filters}, {classes}", path="base_filters")
    enc_rr = _levels(encoder_rrcnn_levels, 5, "encoder_rrcnn_levels")
    dec_rr = _levels(decoder_rrcnn_levels, 4, "decoder_rrcnn_levels")
    rank = len(shape) - 1
    f = int(base_filters)
    widths = [f * 2 ** level for level in range(5)]
    kw = {"norm": norm, "reduction": reduction}
    rr_kwargs = {"steps": rrcnn_steps, "norm": rrcnn_norm, "reduction": reduction}

    image = keras.Input(shape, name="image")
    skips = []
    x = image
    for level, width in enumerate(widths):
        prefix = f"enc{level + 1}"
        if level == 0:
            x = apply_residual_se_unit(x, width, 7, name=f"{prefix}_1", **kw)
            units = 2
        else:
            x = _POOL[rank](2, name=f"{prefix}_pool")(x)
            units = 3
        first = 2 if level == 0 else 1
        for u in range(first, units):
            x = apply_residual_se_unit(x, width, 3, name=f"{prefix}_{u}", **kw)
        x = _finish_level(x, width, lambda t, p=prefix, n=units, w=width: apply_residual_se_unit(t, w, 3, name=f"{p}_{n}", **kw),
                          level in enc_rr, rrcnn_placement, rr_kwargs, prefix)
        skips.append(x)

    side = []
    for level in (3, 2, 1, 0):
        width, prefix = widths[level], f"dec{level + 1}"
        x = _UPCONV[rank](width, 3, strides=2, padding="same", name=f"{prefix}_upconv")(x)
        x = keras.layers.Concatenate(name=f"{prefix}_concat")([x, skips[level]])
        x = apply_norm_conv(x, width, 3, name=f"{prefix}_1", **kw)
        if level == 0 and upsampling_pathway:
            x = keras.layers.Add(name="upsampling_pathway_add")([x, *side])
        x = _finish_level(x, width, lambda t, p=prefix, w=width: apply_norm_conv(t, w, 3, name=f"{p}_2", **kw),
                          level in dec_rr, rrcnn_placement, rr_kwargs, prefix)
        if level > 0 and upsampling_pathway:
            s = apply_norm_conv(x, f, 1, name=f"{prefix}_side", **kw)
            side.append(LinearUpsampling(2 ** level, name=f"{prefix}_side_up")(s))

    logits = keras.layers.Conv3D if rank == 3 else keras.layers.Conv2D
    x = logits(int(classes), 1, name="head")(x)
    probabilities = keras.layers.Softmax(axis=-1, dtype="float32", name="probabilities")(x)  # float32 under a mixed policy
    default = "rrse_unet" if (enc_rr or dec_rr) else "se_unet"
    return keras.Model(image, probabilities, name=name or default)


@register("rrse_unet")
def rrse_unet(variant: str = "t5_row3", input_shape: Sequence[int] = (144, 144, 144, 2), classes: int = 2,
              name: str | None = None, **overrides) -> keras.Model:
    """Build a seed-004 Table 5 RRSE U-Net variant (:data:`RRSE_VARIANTS`), instance norm.

    Args:
        variant: ``"t5_row1"`` .. ``"t5_row4"``.
        input_shape, classes, name: As :func:`se_unet`.
        **overrides: Any other :func:`se_unet` argument, replacing the variant's value.

    Raises:
        ModelBuildError: Unknown variant (the message lists them) or a bad argument.
    """
    if variant not in RRSE_VARIANTS:
        raise ModelBuildError(f"unknown variant {variant!r}; allowed: {sorted(RRSE_VARIANTS)}", path="variant")
    config = {"norm": "se_instance", **RRSE_VARIANTS[variant], **overrides}
    return se_unet(input_shape=input_shape, classes=classes, name=name or f"rrse_unet_{variant}", **config)
