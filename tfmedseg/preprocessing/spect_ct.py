"""Seed 000 SPECT/CT: world-coordinate resampling, SSIM slice matching, R,G histogram adjustment, fusion.

Two routes are offered:

* the *geometric* route (ours, recommended with DICOM data): :func:`resample_spect_to_ct` puts the
  SPECT counts on the CT voxel grid through both RAS affines (the shared DICOM frame of reference),
  one interpolation with the composed voxel-to-voxel matrix;
* the seed's *display-image* route (RGB SPECT/CT screenshots exported from MIM):
  :func:`match_slices_ssim` pairs every CT slice with its most similar SPECT/CT slice,
  :func:`adjust_rg_histogram` repairs "abnormal" colour histograms, and :func:`fuse_weighted`
  blends CT and SPECT/CT images as ``W1 * CT + W2 * SPECT`` (``cv2.addWeighted`` semantics).

Histogram rule (the seed keeps only the thresholds 150 and 200 and "adjust channels R, G"; this
is our documented reading): the hot-spot (tumour uptake) pixels of the SPECT/CT overlay are those
with R or G >= ``low`` (150). In a *normal* study the display window lets them reach the top of
the 8-bit range; in an *abnormal* study (SPECT window set differently in MIM) they stay compressed
below ``high`` (200): the study is abnormal when the 99th percentile of the R and G values of its
hot-spot pixels is below ``high``. The adjustment stretches R and G linearly so that
``[low, high]`` maps onto ``[low, 255]`` (values above ``high`` saturate at 255, values below
``low`` are unchanged); B (mostly the grey CT under the overlay) is left untouched.
"""

from __future__ import annotations


import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.io.volume import Volume
from tfmedseg.preprocessing.resample import resample_to_reference

__all__ = [
    "resample_spect_to_ct",
    "match_slices_ssim",
    "is_abnormal_histogram",
    "stretch_rg",
    "adjust_rg_histogram",
    "fuse_weighted",
]


def resample_spect_to_ct(spect: Volume, ct: Volume, order: int = 1) -> Volume:
    """Resample a SPECT Volume onto the CT voxel grid through world coordinates.

    Args:
        spect: 3D SPECT Volume (counts), with its RAS affine.
        ct: 3D CT Volume defining the target grid.
        order: 1 = trilinear (counts), 0 = nearest (label maps).

    Returns:
        A Volume on the CT grid (shape, spacing, affine of ``ct``), modality of ``spect``;
        zero outside the SPECT field of view.

    Raises:
        InvalidInputError: If both volumes name different DICOM frames of reference
            (``meta["frame_of_reference_uid"]``): their world coordinates are not comparable.
    """
    for_spect = spect.meta.get("frame_of_reference_uid")
    for_ct = ct.meta.get("frame_of_reference_uid")
    if for_spect and for_ct and for_spect != for_ct:
        raise InvalidInputError(
            f"SPECT frame of reference {for_spect} differs from the CT's {for_ct}; register them first",
            path=spect.meta.get("path", "spect"),
        )
    if order not in (0, 1):
        raise InvalidInputError(f"order must be 0 or 1, got {order}", path="order")
    array = resample_to_reference(spect, ct.affine, ct.shape, mode="linear" if order == 1 else "nearest", cval=0.0)
    meta = {**spect.meta, "resampled_onto": ct.meta.get("path", "ct")}
    return Volume(array, ct.spacing, ct.affine.copy(), spect.modality, meta)


def _ssim_all_pairs(x: np.ndarray, y: np.ndarray, data_range: float, win: int = 7,
                    chunk_bytes: int = 64 << 20) -> np.ndarray:
    """Mean SSIM of every ``x[i]`` with every ``y[j]`` (``[X, H, W]``, ``[Y, H, W]`` float64) -> ``[X, Y]``.

    The same arithmetic as ``skimage.metrics.structural_similarity`` with its defaults (7x7
    uniform window, sample covariance, K1 0.01, K2 0.03, reflected borders, the 3-pixel border
    excluded from the mean), batched: each image's local means and variances once, the local
    cross moments for a chunk of pairs at a time.
    """
    from scipy.ndimage import uniform_filter

    size = (1, win, win)
    cov_norm = win * win / (win * win - 1.0)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pad = (win - 1) // 2
    inner = (slice(None), slice(pad, x.shape[1] - pad), slice(pad, x.shape[2] - pad))
    ux, uy = uniform_filter(x, size), uniform_filter(y, size)
    vx = (cov_norm * (uniform_filter(x * x, size) - ux * ux))[inner]
    vy = (cov_norm * (uniform_filter(y * y, size) - uy * uy))[inner]
    ux, uy = ux[inner], uy[inner]
    out = np.empty((len(x), len(y)))
    rows = max(1, chunk_bytes // max(1, 8 * y.size))
    for start in range(0, len(x), rows):
        stop = min(len(x), start + rows)
        pairs = (x[start:stop, None] * y[None]).reshape((-1,) + y.shape[1:])
        uxy = uniform_filter(pairs, size)[inner].reshape((stop - start, len(y)) + uy.shape[1:])
        mx, sx = ux[start:stop, None], vx[start:stop, None]
        mxy = mx * uy[None]
        uxy -= mxy
        uxy *= 2 * cov_norm
        uxy += c2  # (2 vxy + C2)
        uxy *= 2 * mxy + c1
        uxy /= (mx * mx + (uy * uy)[None] + c1) * (sx + vy[None] + c2)
        out[start:stop] = uxy.reshape(stop - start, len(y), -1).mean(-1)
    return out


def match_slices_ssim(
    ct_slices: np.ndarray, spect_slices: np.ndarray, data_range: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For every CT slice, the index of the SPECT/CT slice with the highest SSIM (many-to-one).

    SSIM as ``skimage.metrics.structural_similarity`` with its defaults (RGB: the mean over the
    channels), computed for all pairs at once.

    Args:
        ct_slices: ``[X, H, W]`` grey or ``[X, H, W, 3]`` RGB CT display images.
        spect_slices: ``[Y, H, W]`` or ``[Y, H, W, 3]`` SPECT/CT images (same H, W and channels).
        data_range: Intensity range for SSIM; default 255 for uint8 input, else the max - min over
            both stacks.

    Returns:
        ``(index [X] int64, ssim [X] float64)``: best SPECT/CT slice and its SSIM in [-1, 1].
    """
    ct_slices, spect_slices = np.asarray(ct_slices), np.asarray(spect_slices)
    if ct_slices.shape[1:] != spect_slices.shape[1:] or ct_slices.ndim not in (3, 4):
        raise InvalidInputError(
            f"CT slices {ct_slices.shape} and SPECT/CT slices {spect_slices.shape} need equal [H, W(, 3)]",
            path="spect_slices",
        )
    if min(ct_slices.shape[1:3]) < 7:
        raise InvalidInputError(f"SSIM needs images of at least 7 x 7 pixels, got {ct_slices.shape[1:3]}", path="ct_slices")
    if data_range is None:
        if ct_slices.dtype == np.uint8 and spect_slices.dtype == np.uint8:
            data_range = 255.0
        else:
            lo = min(float(ct_slices.min()), float(spect_slices.min()))
            hi = max(float(ct_slices.max()), float(spect_slices.max()))
            data_range = max(hi - lo, 1e-12)
    ct_f, sp_f = ct_slices.astype(np.float64), spect_slices.astype(np.float64)
    if ct_f.ndim == 4:
        scores = np.mean([_ssim_all_pairs(ct_f[..., c], sp_f[..., c], data_range) for c in range(ct_f.shape[-1])], axis=0)
    else:
        scores = _ssim_all_pairs(ct_f, sp_f, data_range)
    best = np.argmax(scores, axis=1)
    return best.astype(np.int64), scores[np.arange(len(best)), best]


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise InvalidInputError(f"expected uint8 RGB images [..., 3], got {rgb.dtype} {rgb.shape}", path="rgb")
    return rgb


def is_abnormal_histogram(rgb: np.ndarray, low: int = 150, high: int = 200, percentile: float = 99.0) -> bool:
    """True when a study's R,G hot-spot values stay below ``high`` (module docstring rule).

    Args:
        rgb: uint8 ``[..., H, W, 3]`` SPECT/CT images of one study (all slices together).
        low: Hot-spot threshold (150).
        high: Upper threshold (200).
        percentile: Percentile of the hot-spot R,G values compared with ``high``.

    Returns:
        False when the study has no hot-spot pixel at all (nothing to adjust).
    """
    rgb = _check_rgb(rgb)
    rg = rgb[..., :2]
    hot = rg[(rg >= low).any(axis=-1)]
    if hot.size == 0:
        return False
    return bool(np.percentile(hot.max(axis=-1), percentile) < high)


_CHANNELS = {"rg": 2, "rgb": 3}


def stretch_rg(rgb: np.ndarray, low: int = 150, high: int = 200, channels: str = "rg") -> np.ndarray:
    """Map R,G values ``[low, high]`` linearly to ``[low, 255]`` (above ``high`` -> 255), B unchanged.

    ``channels="rgb"`` stretches B the same way (the seed's "adjust R,G,B" row of Table 12).

    Example:
        >>> stretch_rg(np.array([[[100, 150, 175], [200, 250, 40]]], np.uint8)).tolist()
        [[[100, 150, 175], [255, 255, 40]]]
        >>> stretch_rg(np.array([[[100, 150, 175], [200, 250, 40]]], np.uint8), channels="rgb").tolist()
        [[[100, 150, 202], [255, 255, 40]]]
    """
    rgb = _check_rgb(rgb)
    if not 0 <= low < high <= 255:
        raise InvalidInputError(f"need 0 <= low < high <= 255, got low={low}, high={high}", path="low/high")
    if channels not in _CHANNELS:
        raise InvalidInputError(f"channels must be one of {sorted(_CHANNELS)}, got {channels!r}", path="adjust_channels")
    n = _CHANNELS[channels]
    rg = rgb[..., :n].astype(np.float64)
    stretched = low + (rg - low) * (255.0 - low) / (high - low)
    rg = np.where(rg >= low, np.clip(np.rint(stretched), 0, 255), rg)
    out = rgb.copy()
    out[..., :n] = rg.astype(np.uint8)
    return out


def adjust_rg_histogram(rgb: np.ndarray, low: int = 150, high: int = 200, channels: str = "rg") -> tuple[np.ndarray, bool]:
    """Seed 000 histogram adjustment of one study: :func:`stretch_rg` when it is abnormal.

    Args:
        rgb: uint8 ``[..., H, W, 3]`` SPECT/CT images of one study.
        low / high: Thresholds (150 / 200).
        channels: ``"rg"`` (the seed's best) or ``"rgb"`` (Table 12's R,G,B row); the abnormal
            decision always looks at R and G.

    Returns:
        ``(images, abnormal)``: the (possibly) adjusted uint8 images and the decision.
    """
    abnormal = is_abnormal_histogram(rgb, low, high)
    return (stretch_rg(rgb, low, high, channels) if abnormal else _check_rgb(rgb).copy()), abnormal


def fuse_weighted(ct: np.ndarray, spect: np.ndarray, w1: float = 0.5, w2: float = 0.5, gamma: float = 0.0) -> np.ndarray:
    """Seed 000 input-level fusion ``W1 * CT + W2 * SPECT/CT + gamma`` like ``cv2.addWeighted``.

    Rounded half to even and saturated to uint8 (OpenCV's ``saturate_cast``). A grey CT ``[..., H, W]``
    is repeated to 3 channels when the SPECT/CT is RGB ``[..., H, W, 3]`` (the seed feeds 3-channel
    images to ImageNet encoders).

    Args:
        ct: uint8 CT display image(s) ``[..., H, W]`` or ``[..., H, W, 3]``.
        spect: uint8 SPECT/CT image(s), same ``[..., H, W]``.
        w1: CT weight (0.5, the seed's best).
        w2: SPECT/CT weight (0.5).
        gamma: Added constant (0).

    Returns:
        uint8 fused image(s).

    Example:
        >>> fuse_weighted(np.array([[10, 255]], np.uint8), np.array([[21, 255]], np.uint8)).tolist()
        [[16, 255]]
    """
    ct, spect = np.asarray(ct), np.asarray(spect)
    if ct.ndim == spect.ndim - 1 and spect.shape[-1] == 3:
        ct = np.repeat(ct[..., None], 3, axis=-1)
    if ct.shape != spect.shape:
        raise InvalidInputError(f"CT {ct.shape} and SPECT/CT {spect.shape} shapes differ", path="spect")
    fused = ct.astype(np.float64) * w1 + spect.astype(np.float64) * w2 + gamma
    return np.clip(np.rint(fused), 0, 255).astype(np.uint8)
