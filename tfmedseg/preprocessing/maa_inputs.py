"""Seed 000 network inputs of one MAA SPECT/CT patient: CT liver slices, SPECT/CT display slices, fusion.

Three 2D inputs, all on one abdominal crop of the patient's CT (:func:`~tfmedseg.preprocessing.crop.body_crop`:
body mask, square box, resized to ``size``; :meth:`Crop.invert` puts predictions back on the CT grid,
the seed's "inverse crop to 512x512"):

* ``ct``: the CT display window (level 30 / width 150 HU, :func:`ct_display_window`) in [0, 1],
  every CT slice -- the liver model's input (a) and the base of the fusion;
* ``display``: the fused SPECT/CT RGB display images (``display/fused``), R,G histogram adjusted
  for "abnormal" studies (:func:`~tfmedseg.preprocessing.spect_ct.adjust_rg_histogram`, 150/200)
  -- the tumour model's input (b);
* ``fused``: ``W1 * CT + W2 * SPECT/CT`` (:func:`fuse_weighted`, 0.5/0.5) -- the combined liver +
  tumour model's input (c). Seed Table 15's two registration bases: ``match="ssim"`` (CT-based,
  the seed's best): each CT slice that has a display image gets the most similar display image
  (:func:`match_display_slices`), labels from the CT masks; ``match="ssim_spect"`` (SPECT/CT-based):
  each display image gets the most similar CT slice of the whole CT, labels from the display's
  masks; ``match="index"``: the display file's own CT slice.

Masks come with each input on the same crop (``liver`` includes the tumour).
:func:`prepare_ct_slices` alone prepares a CT-only patient (3DIRCADb, the liver stage's public
data in the seed).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.preprocessing.crop import Crop, body_crop
from tfmedseg.preprocessing.intensity import ct_display_window
from tfmedseg.preprocessing.resample import resize_array
from tfmedseg.preprocessing.spect_ct import adjust_rg_histogram, fuse_weighted

__all__ = ["MaaInputs", "CtSlices", "crop_stack", "match_display_slices", "prepare_ct_slices", "prepare_maa_inputs",
           "MATCH_MODES"]

#: Slice pairing of the fusion (module docstring).
MATCH_MODES = ("ssim", "ssim_spect", "index")


@dataclasses.dataclass
class MaaInputs:
    """The prepared 2D inputs of one patient (module docstring).

    Attributes:
        crop: The in-plane abdominal crop (3D :class:`Crop`, all CT slices kept).
        ct: float32 ``[D, S, S, 1]`` windowed CT in [0, 1].
        ct_masks: uint8 ``[D, S, S, 2]`` (liver, tumour) or None without labels.
        display_slices: int ``[N]`` CT slice index of each display image.
        display: float32 ``[N, S, S, 3]`` adjusted SPECT/CT display in [0, 1].
        display_masks: uint8 ``[N, S, S, 2]`` or None.
        abnormal: The R,G histogram decision of the study.
        fused_slices: int ``[M]`` CT slice where each fused image's prediction and label live
            (the CT slice for CT-based matching, the display's own slice for SPECT/CT-based).
        fused_partner: int ``[M]`` index (into ``display``) of each fused image's display image.
        fused: float32 ``[M, S, S, 3]`` fused images in [0, 1].
        fused_masks: uint8 ``[M, S, S, 2]`` labels of the fused images (CT masks, or the display
            masks for SPECT/CT-based matching), or None.
        match_ssim: float ``[M]`` SSIM of each chosen pair.
        fused_ct: int ``[M]`` CT slice blended into each fused image.
    """

    crop: Crop
    ct: np.ndarray
    ct_masks: np.ndarray | None
    display_slices: np.ndarray
    display: np.ndarray
    display_masks: np.ndarray | None
    abnormal: bool
    fused_slices: np.ndarray
    fused_partner: np.ndarray
    fused: np.ndarray
    fused_masks: np.ndarray | None
    match_ssim: np.ndarray
    fused_ct: np.ndarray | None = None


@dataclasses.dataclass
class CtSlices:
    """The liver model's input of one CT: ``crop``, ``window`` uint8 ``[D, H, W]`` (CT grid),
    ``ct`` float32 ``[D, S, S, 1]`` in [0, 1], ``masks`` uint8 ``[D, S, S, 2]`` (liver, tumour) or None."""

    crop: Crop
    window: np.ndarray
    ct: np.ndarray
    masks: np.ndarray | None


def prepare_ct_slices(ct_hu: np.ndarray, label: np.ndarray | None = None, *, size: int = 256, level: float = 30.0,
                      width: float = 150.0, crop: bool = True) -> CtSlices:
    """CT window (level / width HU) on the abdominal crop resized to ``size`` (seed Fig. 29), every slice.

    Args:
        ct_hu: ``[D, H, W]`` CT in HU.
        label: uint8 ``[D, H, W]`` 0/1/2 (tumour 2), or None.
        size: Network in-plane size.
        level / width: CT window (30 / 150 HU).
        crop: Abdominal crop; False: the whole slice resized to ``size``.
    """
    ct_hu = np.asarray(ct_hu, np.float32)
    if crop:
        _, box = body_crop(ct_hu, out_size=size)
    else:
        box = Crop.from_box([(0, n) for n in ct_hu.shape], ct_hu.shape, (ct_hu.shape[0], size, size))
    window = ct_display_window(ct_hu, level, width)
    ct = box.apply(window.astype(np.float32) / 255.0, "linear")[..., None].astype(np.float32)
    masks = None if label is None else box.apply(_mask_pair(label > 0, label == 2), "nearest")
    return CtSlices(box, window, ct, masks)


def crop_stack(crop: Crop, stack: np.ndarray, mode: str = "linear") -> np.ndarray:
    """Apply the in-plane part of a 3D ``crop`` to ``[N, H, W, ...]`` images (any ``N``)."""
    inplane = Crop.from_box(((0, len(stack)),) + tuple(crop.box[1:]), (len(stack),) + tuple(crop.source_shape[1:]),
                            (len(stack),) + tuple(crop.output_shape[1:]), allow_padding=True)
    return inplane.apply(stack, mode)


def match_display_slices(ct_window: np.ndarray, display: np.ndarray, candidates: np.ndarray, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """CT-based SSIM matching (seed 000 sec 3.4.1): each CT slice's most similar display image.

    The display images are compared as grey (RGB mean) with the CT window image, both resized to
    ``size`` (speed); only CT slices in ``candidates`` are matched.

    Args:
        ct_window: uint8 ``[D, H, W]`` CT display window.
        display: uint8 ``[N, H, W, 3]`` SPECT/CT display images.
        candidates: CT slice indices to match.
        size: In-plane size of the comparison.

    Returns:
        ``(display index [len(candidates)], ssim [len(candidates)])``.
    """
    from tfmedseg.preprocessing.spect_ct import match_slices_ssim

    ct_small = resize_array(ct_window[candidates].astype(np.float32), (len(candidates), size, size))
    grey = display.astype(np.float32).mean(-1)
    sp_small = resize_array(grey, (len(grey), size, size))
    return match_slices_ssim(ct_small, sp_small, data_range=255.0)


def match_ct_slices(ct_window: np.ndarray, display: np.ndarray, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """SPECT/CT-based SSIM matching (seed Table 15's other base): each display image's most similar
    CT slice among all ``D`` slices of ``ct_window`` (uint8 ``[D, H, W]``); ``(CT index [N], ssim [N])``."""
    from tfmedseg.preprocessing.spect_ct import match_slices_ssim

    ct_small = resize_array(ct_window.astype(np.float32), (len(ct_window), size, size))
    grey = display.astype(np.float32).mean(-1)
    sp_small = resize_array(grey, (len(grey), size, size))
    return match_slices_ssim(sp_small, ct_small, data_range=255.0)


def _mask_pair(liver: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    return np.stack([(liver > 0) | (tumour > 0), tumour > 0], axis=-1).astype(np.uint8)


def prepare_maa_inputs(ct_hu: np.ndarray, display: dict, label: np.ndarray | None = None, *, size: int = 256,
                       level: float = 30.0, width: float = 150.0, adjust_rg: bool = True, rg_low: int = 150,
                       rg_high: int = 200, fusion_weights: tuple[float, float] = (0.5, 0.5),
                       match: str = "ssim", crop: bool = True, adjust_channels: str = "rg",
                       fusion: bool = True) -> MaaInputs:
    """All three inputs of one patient (module docstring).

    Args:
        ct_hu: ``[D, H, W]`` CT in HU.
        display: :func:`~tfmedseg.datasets.maa_spect.read_display_slices` output (``slices``,
            ``fused`` uint8 ``[N, H, W, 3]`` on the CT pixel grid, ``liver``, ``tumor``).
        label: uint8 ``[D, H, W]`` 0/1/2 (tumour 2) on the CT grid, or None.
        size: Network in-plane size (256).
        level / width: CT window (30 / 150 HU).
        adjust_rg: Apply the R,G histogram adjustment to abnormal studies.
        rg_low / rg_high: Its thresholds (150 / 200).
        fusion_weights: ``(W_CT, W_SPECT)``.
        match: One of :data:`MATCH_MODES` (module docstring).
        crop: Abdominal crop (seed Tables 10, 12); False: the whole slice resized to ``size``.
        adjust_channels: ``"rg"`` or ``"rgb"`` (seed Table 12).
        fusion: False skips the SSIM matching (runs without the combined model): the fused images
            then pair each display image with its own CT slice, as ``match="index"``.

    Raises:
        InvalidInputError: Display images not on the CT pixel grid, unknown ``match``.
    """
    ct_hu = np.asarray(ct_hu, np.float32)
    fused_rgb = np.asarray(display["fused"])
    if fused_rgb.shape[1:3] != ct_hu.shape[1:]:
        raise InvalidInputError(f"display images {fused_rgb.shape[1:3]} are not on the CT pixel grid {ct_hu.shape[1:]}",
                                path="display/fused")
    if match not in MATCH_MODES:
        raise InvalidInputError(f"match must be one of {MATCH_MODES}, got {match!r}", path="match")
    base = prepare_ct_slices(ct_hu, label, size=size, level=level, width=width, crop=crop)
    box, window = base.crop, base.window
    rgb, abnormal = adjust_rg_histogram(fused_rgb, rg_low, rg_high, adjust_channels) if adjust_rg else (fused_rgb, False)
    slices = np.asarray(display["slices"], np.int64)
    display_masks = None
    if label is not None:
        display_masks = crop_stack(box, _mask_pair(display["liver"], display["tumor"]), "nearest")
    if not fusion:
        match = "index"
    if match == "ssim_spect":  # SPECT/CT base: every display image gets its most similar CT slice
        ct_of, ssim = match_ct_slices(window, fused_rgb)
        partner, fused_slices, fused_masks = np.arange(len(slices)), slices, display_masks
    else:
        if match == "ssim":
            partner, ssim = match_display_slices(window, fused_rgb, slices)
        else:
            partner, ssim = np.arange(len(slices)), np.ones(len(slices))
        ct_of, fused_slices = slices, slices
        fused_masks = None if base.masks is None else base.masks[slices]
    fused = fuse_weighted(window[ct_of], rgb[partner], *fusion_weights)
    return MaaInputs(
        crop=box, ct=base.ct, ct_masks=base.masks, display_slices=slices,
        display=(crop_stack(box, rgb.astype(np.float32) / 255.0, "linear")).astype(np.float32),
        display_masks=display_masks, abnormal=bool(abnormal), fused_slices=np.asarray(fused_slices),
        fused_partner=np.asarray(partner),
        fused=(crop_stack(box, fused.astype(np.float32) / 255.0, "linear")).astype(np.float32),
        fused_masks=fused_masks, match_ssim=np.asarray(ssim, np.float64), fused_ct=np.asarray(ct_of),
    )
