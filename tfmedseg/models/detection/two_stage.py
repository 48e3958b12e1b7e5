"""Seed 001's two stages as one graph: whole-body view -> lesion instances in the view's pixels.

:class:`WholeBodyLesionModel` chains, all inside TensorFlow (so one SavedModel serves it):

1. intensity: counts clipped at the view's ``percentile``-th percentile (linear interpolation, as
   ``np.percentile``) and its minimum, scaled to [0, 1] (the experiment's ``normalise_counts``);
2. the SSD chest detector on the view resized (bilinear, aspect not kept) to its input;
3. the top-scoring chest box mapped to view pixels, grown by ``crop_margin``, rounded outwards and
   clipped (as :func:`~tfmedseg.models.detection.crop.crop_box`), then ROIAlign-cropped
   (:func:`~tfmedseg.models.detection.roi.aligned_crop`, half-pixel bilinear = ``tf.image.resize``)
   to the lesion model's input;
4. the lesion model (Mask R-CNN or MaligNet: proposals, NMS, ROIAlign, detection layer in-graph);
5. boxes mapped back to view pixels and the 14x14 masks pasted into the view
   (:func:`~tfmedseg.models.detection.roi.paste_masks`, threshold 0.5).

A view without a chest detection returns no lesions (``num_detections`` 0, ``chest_score`` 0).

Example:
    >>> model = WholeBodyLesionModel(ssd, maligNet, view_size=(384, 128))  # doctest: +SKIP
    >>> out = model(views)   # views [B, 384, 128] raw counts  # doctest: +SKIP
    >>> out["boxes"], out["masks"]  # [B, D, 4] view pixels, uint8 [B, D, 384, 128]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tfmedseg.errors import InvalidInputError
from tfmedseg.models.detection.roi import aligned_crop, paste_masks

__all__ = ["WholeBodyLesionModel", "percentile_normalise"]


def percentile_normalise(views, percentile: float) -> tf.Tensor:
    """``[B, H, W]`` counts -> ``[B, H, W]`` in [0, 1]: ``(x - min) / (p - min)`` clipped.

    ``p`` is each view's ``percentile``-th percentile with ``np.percentile``'s linear
    interpolation; a flat view (``p <= min``) uses ``p = min + 1``.
    """
    x = tf.convert_to_tensor(views, tf.float32)
    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    ordered = tf.sort(flat, axis=-1)
    n = tf.cast(tf.shape(flat)[1], tf.float32)
    pos = percentile / 100.0 * (n - 1.0)
    lo_i = tf.cast(tf.floor(pos), tf.int32)
    hi_i = tf.minimum(lo_i + 1, tf.shape(flat)[1] - 1)
    frac = pos - tf.floor(pos)
    p = ordered[:, lo_i] * (1.0 - frac) + ordered[:, hi_i] * frac
    lo = ordered[:, 0]
    p = tf.where(p > lo, p, lo + 1.0)
    out = (x - lo[:, None, None]) / (p - lo)[:, None, None]
    return tf.clip_by_value(out, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="tfmedseg")
class WholeBodyLesionModel(keras.Model):
    """SSD chest crop + lesion instance model, whole-body view in, view-space instances out.

    Args:
        ssd: Built :class:`~tfmedseg.models.detection.ssd.SSD` (1-channel input).
        lesion_model: Built :class:`~tfmedseg.models.detection.mask_rcnn.MaskRCNN` (or MaligNet).
        view_size: ``(H, W)`` of the whole-body views this model serves.
        intensity_percentile: Clip percentile of the counts (seed choice: 99.5).
        crop_margin: Relative margin added to the chest box (0).

    Call args:
        views: ``float32 [B, H, W]`` raw counts.

    Returns:
        ``boxes [B, D, 4]`` (view pixels ``y0, x0, y1, x1``), ``classes int32 [B, D]`` (1..C, 0 =
        padding), ``scores [B, D]``, ``num_detections int32 [B]``, ``masks uint8 [B, D, H, W]``,
        ``chest_box [B, 4]`` (view pixels) and ``chest_score [B]``.
    """

    def __init__(self, ssd, lesion_model, view_size: Sequence[int], intensity_percentile: float = 99.5,
                 crop_margin: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.ssd, self.lesion_model = ssd, lesion_model
        self.view_size = (int(view_size[0]), int(view_size[1]))
        self.intensity_percentile = float(intensity_percentile)
        self.crop_margin = float(crop_margin)
        self.input_spec_shape = self.view_size
        self.built = True

    def chest_crops(self, images):
        """``[B, H, W]`` normalised views -> ``(crops [B, S, S, 1], crop_boxes [B, 4], chest_score [B])``."""
        h, w = self.view_size
        s = self.ssd.config.image_size
        small = tf.image.resize(images[..., None], (s, s), method="bilinear")
        det = self.ssd(small, training=False)
        scale = tf.constant([h / s, w / s, h / s, w / s], tf.float32)
        box = det["boxes"][:, 0] * scale
        found = det["num_detections"] > 0
        y0, x0, y1, x1 = tf.unstack(box, axis=-1)
        dy, dx = (y1 - y0) * self.crop_margin, (x1 - x0) * self.crop_margin
        iy0 = tf.maximum(tf.floor(y0 - dy), 0.0)
        ix0 = tf.maximum(tf.floor(x0 - dx), 0.0)
        iy1 = tf.minimum(tf.math.ceil(y1 + dy), float(h))
        ix1 = tf.minimum(tf.math.ceil(x1 + dx), float(w))
        crop_box = tf.stack([iy0, ix0, tf.maximum(iy1, iy0 + 1.0), tf.maximum(ix1, ix0 + 1.0)], -1)
        full = tf.constant([0.0, 0.0, float(h), float(w)], tf.float32)
        crop_box = tf.where(found[:, None], crop_box, full)
        size = self.lesion_model.config.image_size
        b = tf.shape(images)[0]
        crops = aligned_crop(images[..., None], crop_box, tf.range(b), size)
        score = tf.where(found, det["scores"][:, 0], 0.0)
        return crops, crop_box, score, found

    def call(self, views, training=False):
        views = tf.convert_to_tensor(views, tf.float32)
        if views.shape.rank != 3 or tuple(views.shape[1:]) != self.view_size:
            raise InvalidInputError(f"expected views [B, {self.view_size[0]}, {self.view_size[1]}], got {tuple(views.shape)}",
                                    path="views")
        images = percentile_normalise(views, self.intensity_percentile)
        crops, crop_box, chest_score, found = self.chest_crops(images)
        out = self.lesion_model(crops, training=False)
        size = float(self.lesion_model.config.image_size)
        y0, x0, y1, x1 = tf.unstack(crop_box[:, None, :], axis=-1)
        sy, sx = (y1 - y0) / size, (x1 - x0) / size
        by0, bx0, by1, bx1 = tf.unstack(out["boxes"], axis=-1)
        boxes = tf.stack([y0 + by0 * sy, x0 + bx0 * sx, y0 + by1 * sy, x0 + bx1 * sx], -1)
        n = tf.where(found, out["num_detections"], 0)
        valid = tf.sequence_mask(n, tf.shape(boxes)[1])
        boxes = tf.where(valid[..., None], boxes, 0.0)
        masks = paste_masks(out["mask_probs"], boxes, self.view_size)
        masks = tf.cast((masks >= 0.5) & valid[..., None, None], tf.uint8)
        return {
            "boxes": boxes,
            "classes": tf.where(valid, out["classes"], 0),
            "scores": tf.where(valid, out["scores"], 0.0),
            "num_detections": tf.cast(n, tf.int32),
            "masks": masks,
            "chest_box": tf.where(found[:, None], crop_box, 0.0),
            "chest_score": chest_score,
        }

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {"name": self.name, "ssd": ser(self.ssd), "lesion_model": ser(self.lesion_model),
                "view_size": list(self.view_size), "intensity_percentile": self.intensity_percentile,
                "crop_margin": self.crop_margin}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        ssd = keras.saving.deserialize_keras_object(config.pop("ssd"))
        lesion = keras.saving.deserialize_keras_object(config.pop("lesion_model"))
        return cls(ssd, lesion, **config)
