"""Box crops of images on the host and in the graph (the detection data's crops).

:func:`crop_box` cuts a detector box (e.g. the SSD's chest box on a whole-body view) out of an
image and resizes it to the second stage's input (320x320 for MaligNet, seed §2);
:class:`CropTransform` maps boxes and masks between the crop and the source (host-side numpy, once
per view). :func:`aligned_crop` is ROIAlign on ``tf.image.crop_and_resize`` ("aligned": pixel ``k``
covers ``[k, k + 1)``), used for mini-mask targets here and for ROI pooling by the detection models
(:mod:`tfmedseg.models.detection.roi`).

Example:
    >>> img = np.zeros((100, 80), np.float32)
    >>> crop, tf_ = crop_box(img, (10, 20, 60, 60), output_size=20)
    >>> crop.shape, tf_.boxes_to_source([[0, 0, 20, 20]]).tolist()
    ((20, 20), [[10.0, 20.0, 60.0, 60.0]])
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfmedseg.errors import InvalidInputError

__all__ = ["CropTransform", "crop_box", "crop_top_detection", "aligned_crop"]


@dataclasses.dataclass(frozen=True)
class CropTransform:
    """Integer crop window on a source image and the output size it was resized to.

    Attributes:
        box: ``(y0, x0, y1, x1)`` integer pixels on the source (``y1``/``x1`` exclusive).
        source_shape: ``(H, W)`` of the source image.
        output_shape: ``(h, w)`` of the resized crop.
    """

    box: tuple[int, int, int, int]
    source_shape: tuple[int, int]
    output_shape: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Source pixels per crop pixel ``(sy, sx)``."""
        y0, x0, y1, x1 = self.box
        return (y1 - y0) / self.output_shape[0], (x1 - x0) / self.output_shape[1]

    def boxes_to_source(self, boxes) -> np.ndarray:
        """``[N, 4]`` crop-pixel boxes -> source-pixel boxes."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        sy, sx = self.scale
        return (b * [sy, sx, sy, sx] + [self.box[0], self.box[1], self.box[0], self.box[1]]).astype(np.float32)

    def boxes_to_crop(self, boxes) -> np.ndarray:
        """``[N, 4]`` source-pixel boxes -> crop-pixel boxes, clipped to the crop."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        sy, sx = self.scale
        out = (b - [self.box[0], self.box[1], self.box[0], self.box[1]]) / [sy, sx, sy, sx]
        h, w = self.output_shape
        return np.clip(out, 0, [h, w, h, w]).astype(np.float32)

    def mask_to_source(self, mask) -> np.ndarray:
        """``[h, w]`` or ``[N, h, w]`` crop masks -> source-size masks (zero outside the crop).

        Bool masks are resampled bilinearly and thresholded at 0.5 (bool out); float masks
        (probabilities) are resampled bilinearly.
        """
        m = np.asarray(mask)
        single = m.ndim == 2
        m3 = m[None] if single else m
        y0, x0, y1, x1 = self.box
        resized = tf.image.resize(m3.astype(np.float32)[..., None], (y1 - y0, x1 - x0), method="bilinear").numpy()[..., 0]
        out = np.zeros((m3.shape[0], *self.source_shape), np.float32)
        out[:, y0:y1, x0:x1] = resized
        if m.dtype == bool:
            out = out >= 0.5
        return out[0] if single else out

    def mask_to_crop(self, mask) -> np.ndarray:
        """``[H, W]`` or ``[N, H, W]`` source masks -> crop masks (bool in -> bool out)."""
        m = np.asarray(mask)
        single = m.ndim == 2
        m3 = m[None] if single else m
        y0, x0, y1, x1 = self.box
        part = m3[:, y0:y1, x0:x1].astype(np.float32)[..., None]
        out = tf.image.resize(part, self.output_shape, method="bilinear").numpy()[..., 0]
        if m.dtype == bool:
            out = out >= 0.5
        return out[0] if single else out


def crop_box(image, box: Sequence[float], output_size: int | Sequence[int] = 320, margin: float = 0.0) -> tuple[np.ndarray, CropTransform]:
    """Crop ``box`` (grown by ``margin`` of its size per side, rounded outwards, clipped) and resize.

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` array (e.g. counts of a whole-body view).
        box: ``(y0, x0, y1, x1)`` pixels on ``image``.
        output_size: Crop output side or ``(h, w)``; 320 for MaligNet.
        margin: Relative padding added on every side. Default 0.

    Returns:
        ``(crop float32 [h, w(, C)], CropTransform)``; bilinear resampling.

    Raises:
        InvalidInputError: The box is empty or does not overlap the image.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise InvalidInputError(f"image must be [H, W] or [H, W, C], got shape {img.shape}", path="image")
    h, w = img.shape[:2]
    y0, x0, y1, x1 = (float(v) for v in box)
    if not (y1 > y0 and x1 > x0):
        raise InvalidInputError(f"box {tuple(box)} is empty", path="box")
    dy, dx = (y1 - y0) * margin, (x1 - x0) * margin
    iy0, ix0 = max(int(math.floor(y0 - dy)), 0), max(int(math.floor(x0 - dx)), 0)
    iy1, ix1 = min(int(math.ceil(y1 + dy)), h), min(int(math.ceil(x1 + dx)), w)
    if iy1 <= iy0 or ix1 <= ix0:
        raise InvalidInputError(f"box {tuple(box)} does not overlap the {h}x{w} image", path="box")
    out_shape = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    part = img[iy0:iy1, ix0:ix1].astype(np.float32)
    part3 = part[..., None] if img.ndim == 2 else part
    crop = tf.image.resize(part3, out_shape, method="bilinear").numpy()
    crop = crop[..., 0] if img.ndim == 2 else crop
    return crop, CropTransform((iy0, ix0, iy1, ix1), (h, w), tuple(int(s) for s in out_shape))


def crop_top_detection(image, detections: dict, index: int = 0, output_size: int | Sequence[int] = 320, margin: float = 0.0) -> tuple[np.ndarray, CropTransform]:
    """Crop the best-scoring box of one image's detections (seed §2: top-1 chest box per view).

    Args:
        image: ``[H, W(, C)]`` view **at the detector's input resolution** (or scale the boxes
            first).
        detections: Output dict of a detector (``boxes [B, K, 4]``, ``num_detections [B]``).
        index: Which image of the batch.
        output_size, margin: See :func:`crop_box`.

    Raises:
        InvalidInputError: The detector found nothing on this image.
    """
    n = int(np.asarray(detections["num_detections"])[index])
    if n == 0:
        raise InvalidInputError("the detector found no box on this image", path=f"detections[{index}]")
    return crop_box(image, np.asarray(detections["boxes"])[index, 0], output_size, margin)


def aligned_crop(images, boxes, box_indices, output_size: int | Sequence[int], sampling_ratio: int = 1) -> tf.Tensor:
    """ROIAlign of ``boxes`` (in pixel units of ``images``) into ``n x n`` bins.

    Args:
        images: ``float32 [N, H, W, C]`` feature maps (or masks).
        boxes: ``float32 [K, 4]`` ``(y0, x0, y1, x1)`` in pixels of ``images`` (divide image
            coordinates by the level's stride first).
        box_indices: ``int32 [K]`` which of the ``N`` maps each box reads.
        output_size: ``n`` or ``(nh, nw)`` bins.
        sampling_ratio: Samples per bin side, averaged. Default 1 (Matterport: one sample).

    Returns:
        ``float32 [K, nh, nw, C]``; samples outside the map read 0.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    nh, nw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    mh, mw = nh * sampling_ratio, nw * sampling_ratio
    shape = tf.shape(images)
    hm1 = tf.maximum(tf.cast(shape[1], tf.float32) - 1.0, 1.0)
    wm1 = tf.maximum(tf.cast(shape[2], tf.float32) - 1.0, 1.0)
    y0, x0, y1, x1 = tf.unstack(boxes, axis=-1)
    bh = (y1 - y0) / mh
    bw = (x1 - x0) / mw
    norm = tf.stack(
        [
            (y0 + 0.5 * bh - 0.5) / hm1,
            (x0 + 0.5 * bw - 0.5) / wm1,
            (y1 - 0.5 * bh - 0.5) / hm1,
            (x1 - 0.5 * bw - 0.5) / wm1,
        ],
        axis=-1,
    )
    crops = tf.image.crop_and_resize(
        images, tf.stop_gradient(norm), tf.cast(box_indices, tf.int32), (mh, mw), extrapolation_value=0.0
    )
    if sampling_ratio > 1:
        crops = tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")
    return crops
