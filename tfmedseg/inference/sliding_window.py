"""Sliding-window inference with Gaussian blending for 2D and 3D models (MONAI's algorithm).

Windows of ``roi_size`` are placed on a regular grid with step ``int(roi * (1 - overlap))`` (at least
1), the last window of each axis shifted back to end at the image border (MONAI's
``dense_patch_slices``). They are cut on the host, batched ``sw_batch_size`` at a time through the
``predictor`` (a Keras model is wrapped in a ``tf.function``), and blended with an importance map:
``out = Σ w·y / Σ w``. The Gaussian map is MONAI's ``compute_importance_map``: separable, sigma =
``sigma_scale * roi`` per axis, centred, divided by its maximum and clamped below at
``max(min, 1e-3)``. Images smaller than the window are padded (``padding_mode``, ``cval``) and the
output is cropped back.

Low-memory mode (``low_memory=True``, needs ``argmax=True``): windows are processed in order of their
first spatial start and the accumulators only span one window depth (a slab of ``roi_size[0]``
slices); every slab that no later window touches is divided, arg-maxed and written to a ``uint8``
label volume. The labels equal ``argmax`` of the full blended output, with memory
``roi_D x H x W x C`` float32 instead of ``D x H x W x C``.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Callable, Sequence

import numpy as np

from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.validation import as_array, check_finite
from tfmedseg.progress import Progress

_log = logging.getLogger(__name__)

__all__ = [
    "BLEND_MODES",
    "PADDING_MODES",
    "compute_importance_map",
    "dense_window_starts",
    "make_predictor",
    "sliding_window_inference",
    "flip_tta_predictor",
]

BLEND_MODES = ("gaussian", "constant")
PADDING_MODES = ("constant", "reflect", "edge")


def compute_importance_map(roi_size: Sequence[int], mode: str = "gaussian", sigma_scale=0.125) -> np.ndarray:
    """Blending weights of one window (MONAI ``compute_importance_map``).

    Args:
        roi_size: Window size per spatial axis.
        mode: ``"gaussian"`` or ``"constant"`` (all ones).
        sigma_scale: Gaussian sigma as a fraction of the window size (scalar or per axis).

    Returns:
        float32 array of shape ``roi_size``, maximum 1, minimum ``>= 1e-3``.
    """
    if mode not in BLEND_MODES:
        raise ConfigError(f"must be one of {BLEND_MODES}, got {mode!r}", path="mode")
    roi = [int(r) for r in roi_size]
    if mode == "constant":
        return np.ones(roi, np.float32)
    scales = np.broadcast_to(np.asarray(sigma_scale, np.float64), (len(roi),))
    if np.any(scales <= 0):
        raise ConfigError(f"must be > 0, got {sigma_scale}", path="sigma_scale")
    w = np.ones((), np.float64)
    for n, s in zip(roi, scales):
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        g = np.exp(-(x**2) / (2.0 * (s * n) ** 2))
        w = np.multiply.outer(w, g)
    w = w / w.max()
    return np.maximum(w, max(w.min(), 1e-3)).astype(np.float32)


def dense_window_starts(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> list[list[int]]:
    """Window start indices per spatial axis (MONAI ``_get_scan_interval`` + ``dense_patch_slices``)."""
    starts = []
    for n, r in zip(image_size, roi_size):
        if r >= n:
            starts.append([0])
            continue
        step = max(int(r * (1.0 - overlap)), 1)
        count = math.ceil((n - r) / step) + 1
        starts.append(sorted({min(i * step, n - r) for i in range(count)}))
    return starts


def make_predictor(model, jit_compile: bool = False) -> Callable:
    """Wraps a Keras model (or any callable) as ``tf.function(x -> model(x, training=False))``.

    The function is traced with ``reduce_retracing=True`` so that a smaller last batch does not add a
    trace per batch size.
    """
    import tensorflow as tf

    if hasattr(model, "predict_on_batch") or hasattr(model, "get_config"):
        fn = lambda x: model(x, training=False)  # noqa: E731
    else:
        fn = model
    return tf.function(fn, reduce_retracing=True, jit_compile=jit_compile)


def flip_tta_predictor(predictor: Callable, spatial_axes: Sequence[int] = (0, 1, 2)) -> Callable:
    """Test-time augmentation by flips: averages the predictions over all 2^k flip combinations.

    Args:
        predictor: Callable ``[n, *spatial, C] -> [n, *spatial, K]``.
        spatial_axes: Spatial axes to flip (0 = first spatial axis, i.e. tensor axis 1).

    Returns:
        A ``tf.function`` with the same signature; each flipped prediction is flipped back before
        averaging (average the probabilities, as nnU-Net's mirroring).
    """
    import tensorflow as tf

    axes = [int(a) + 1 for a in spatial_axes]
    combos = [c for k in range(len(axes) + 1) for c in itertools.combinations(axes, k)]

    @tf.function(reduce_retracing=True)
    def tta(x):
        total = None
        for c in combos:
            xi = tf.reverse(x, axis=list(c)) if c else x
            yi = tf.convert_to_tensor(predictor(xi))
            yi = tf.reverse(yi, axis=list(c)) if c else yi
            total = yi if total is None else total + yi
        return total / float(len(combos))

    return tta


def _check_inputs(inputs, roi_size, sw_batch_size, overlap, mode, padding_mode, low_memory, argmax):
    x = as_array(inputs, "inputs")
    if x.ndim not in (4, 5):
        raise InvalidInputError(
            f"must be [B, H, W, C] or [B, D, H, W, C] (channels last), got shape {x.shape}", path="inputs"
        )
    x = check_finite(x.astype(np.float32, copy=False), "inputs")
    n_sp = x.ndim - 2
    roi = list(np.atleast_1d(roi_size))
    if len(roi) != n_sp:
        raise ConfigError(f"must have {n_sp} values for inputs of shape {x.shape}, got {roi_size}", path="roi_size")
    roi = [x.shape[1 + i] if (r is None or int(r) <= 0) else int(r) for i, r in enumerate(roi)]
    if int(sw_batch_size) < 1:
        raise ConfigError(f"must be >= 1, got {sw_batch_size}", path="sw_batch_size")
    if not 0.0 <= float(overlap) < 1.0:
        raise ConfigError(f"must be in [0, 1), got {overlap}", path="overlap")
    if mode not in BLEND_MODES:
        raise ConfigError(f"must be one of {BLEND_MODES}, got {mode!r}", path="mode")
    if padding_mode not in PADDING_MODES:
        raise ConfigError(f"must be one of {PADDING_MODES}, got {padding_mode!r}", path="padding_mode")
    if low_memory and not argmax:
        raise ConfigError("low_memory=True writes labels slab by slab and needs argmax=True", path="low_memory")
    return x, roi


def sliding_window_inference(
    inputs,
    roi_size: Sequence[int],
    sw_batch_size: int,
    predictor: Callable,
    overlap: float = 0.25,
    mode: str = "gaussian",
    sigma_scale: float | Sequence[float] = 0.125,
    padding_mode: str = "constant",
    cval: float = 0.0,
    argmax: bool = False,
    low_memory: bool = False,
) -> np.ndarray:
    """Blended sliding-window prediction of a batch of 2D or 3D images.

    Args:
        inputs: ``[B, H, W, C]`` or ``[B, D, H, W, C]`` float array or tensor (channels last).
        roi_size: Window size per spatial axis; a value ``<= 0`` or None means the full axis.
        sw_batch_size: Windows per predictor call.
        predictor: Callable ``[n, *roi_size, C] -> [n, *roi_size, K]`` (tensor or array), e.g. from
            :func:`make_predictor`; a Keras model is wrapped automatically.
        overlap: Fraction of overlap between neighbouring windows, in [0, 1) (default 0.25).
        mode: ``"gaussian"`` (default) or ``"constant"`` blending.
        sigma_scale: Gaussian sigma as a fraction of the window (default 0.125, MONAI).
        padding_mode: How images smaller than the window are padded: ``"constant"``, ``"reflect"``,
            ``"edge"``.
        cval: Padding value for ``"constant"``.
        argmax: Return ``uint8`` labels ``[B, *spatial]`` (argmax over K) instead of the blended output.
        low_memory: Accumulate only one window-deep slab at a time (needs ``argmax=True``).

    Returns:
        float32 ``[B, *spatial, K]`` blended predictions, or ``uint8`` ``[B, *spatial]`` labels.

    Raises:
        InvalidInputError: ``inputs`` has the wrong rank or holds NaN / inf.
        ConfigError: an option is out of range or not one of the allowed strings.

    Example:
        >>> x = np.random.rand(1, 32, 48, 48, 1).astype("float32")
        >>> y = sliding_window_inference(x, (16, 32, 32), 4, lambda w: w * 2.0, overlap=0.5)
        >>> bool(np.allclose(y, 2 * x))
        True
    """
    x, roi = _check_inputs(inputs, roi_size, sw_batch_size, overlap, mode, padding_mode, low_memory, argmax)
    if hasattr(predictor, "get_config") and not hasattr(predictor, "python_function"):
        predictor = make_predictor(predictor)
    spatial = list(x.shape[1:-1])
    pads = [(max(r - n, 0) // 2, max(r - n, 0) - max(r - n, 0) // 2) for n, r in zip(spatial, roi)]
    if any(p != (0, 0) for p in pads):
        kw = {"constant_values": cval} if padding_mode == "constant" else {}
        x = np.pad(x, [(0, 0)] + pads + [(0, 0)], mode=padding_mode, **kw)
    padded = list(x.shape[1:-1])
    importance = compute_importance_map(roi, mode, sigma_scale)
    starts = dense_window_starts(padded, roi, float(overlap))
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, spatial))
    outs = []
    for b in range(x.shape[0]):
        if low_memory:
            labels = _blend_low_memory(x[b], roi, starts, importance, predictor, int(sw_batch_size))
            outs.append(labels[crop])
        else:
            out = _blend(x[b], roi, starts, importance, predictor, int(sw_batch_size))[crop]
            outs.append(np.argmax(out, axis=-1).astype(np.uint8) if argmax else out)
    return np.stack(outs)


def _windows(image, roi, corners):
    return np.stack([image[tuple(slice(c, c + r) for c, r in zip(cor, roi))] for cor in corners])


def _run(predictor, batch) -> np.ndarray:
    y = predictor(batch)
    y = np.asarray(y.numpy() if hasattr(y, "numpy") else y, dtype=np.float32)
    if y.shape[:-1] != batch.shape[:-1]:
        raise InvalidInputError(
            f"must return [n, *roi_size, K] = {batch.shape[:-1]} + (K,), got {y.shape}", path="predictor"
        )
    return y


def _window_progress(total: int) -> Progress:
    return Progress(total, desc="sliding window", unit="window", logger=_log, summary_level=logging.DEBUG)


def _blend(image, roi, starts, importance, predictor, sw_batch_size) -> np.ndarray:
    corners = list(itertools.product(*starts))
    acc = None
    weight = np.zeros(image.shape[:-1], np.float32)
    w = importance[..., None]
    with _window_progress(len(corners)) as bar:
        for i in range(0, len(corners), sw_batch_size):
            chunk = corners[i : i + sw_batch_size]
            y = _run(predictor, _windows(image, roi, chunk))
            if acc is None:
                acc = np.zeros(image.shape[:-1] + (y.shape[-1],), np.float32)
            for cor, yi in zip(chunk, y):
                sl = tuple(slice(c, c + r) for c, r in zip(cor, roi))
                acc[sl] += yi * w
                weight[sl] += importance
            bar.update(len(chunk))
    return acc / weight[..., None]


def _blend_low_memory(image, roi, starts, importance, predictor, sw_batch_size) -> np.ndarray:
    depth = roi[0]
    labels = np.zeros(image.shape[:-1], np.uint8)
    acc = None
    weight = np.zeros((depth,) + image.shape[1:-1], np.float32)
    w = importance[..., None]
    lo = 0  # first slice held in the slab buffers
    rest = list(itertools.product(*starts[1:]))
    bar = _window_progress(len(starts[0]) * len(rest))
    for z in starts[0]:
        if acc is not None and z > lo:  # slices [lo, z) are final: write them out and shift
            k = z - lo
            labels[lo:z] = np.argmax(acc[:k] / weight[:k, ..., None], axis=-1)
            acc[:-k], weight[:-k] = acc[k:].copy(), weight[k:].copy()
            acc[-k:], weight[-k:] = 0.0, 0.0
        lo = z
        corners = [(z,) + c for c in rest]
        for i in range(0, len(corners), sw_batch_size):
            chunk = corners[i : i + sw_batch_size]
            y = _run(predictor, _windows(image, roi, chunk))
            if acc is None:
                acc = np.zeros((depth,) + image.shape[1:-1] + (y.shape[-1],), np.float32)
            for cor, yi in zip(chunk, y):
                sl = (slice(0, depth),) + tuple(slice(c, c + r) for c, r in zip(cor[1:], roi[1:]))
                acc[sl] += yi * w
                weight[sl] += importance
            bar.update(len(chunk))
    bar.close()
    labels[lo : lo + depth] = np.argmax(acc / weight[..., None], axis=-1)
    return labels
