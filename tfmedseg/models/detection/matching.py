"""IoU, anchor/ROI-to-ground-truth matching, balanced sampling and ground-truth checks.

Ground truth is always a **padded batch**, never ragged: ``gt_boxes [B, N, 4]`` pixels
``(y0, x0, y1, x1)`` and ``gt_classes [B, N]`` int with foreground classes ``1..C``; padding rows
have class ``0`` or ``-1`` (any value ``<= 0``) and are ignored everywhere.
:func:`pad_ground_truth` builds such a batch from per-image lists and checks it
(:func:`validate_ground_truth`), so a bad annotation fails on the host with a clear error
instead of silently producing NaN losses in the graph.

Matching labels follow the usual convention: ``1`` positive, ``0`` negative (background),
``-1`` ignored (between thresholds, or not sampled).

Example:
    >>> import numpy as np
    >>> iou = box_iou(np.array([[0., 0., 2., 2.]]), np.array([[1., 1., 3., 3.]]))
    >>> round(float(iou[0, 0]), 4)
    0.1429
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tfmedseg.errors import InvalidInputError

__all__ = [
    "box_iou",
    "validate_ground_truth",
    "pad_ground_truth",
    "assign_targets",
    "sample_balanced",
    "select_fixed",
]


def box_iou(boxes1, boxes2) -> tf.Tensor:
    """Pairwise IoU.

    Args:
        boxes1: ``[..., N, 4]`` boxes ``(y0, x0, y1, x1)``.
        boxes2: ``[..., M, 4]`` boxes with the same leading (batch) dims.

    Returns:
        ``float32 [..., N, M]`` in ``[0, 1]``; 0 where either box has zero area.
    """
    b1 = tf.convert_to_tensor(boxes1, tf.float32)[..., :, None, :]
    b2 = tf.convert_to_tensor(boxes2, tf.float32)[..., None, :, :]
    ih = tf.maximum(tf.minimum(b1[..., 2], b2[..., 2]) - tf.maximum(b1[..., 0], b2[..., 0]), 0.0)
    iw = tf.maximum(tf.minimum(b1[..., 3], b2[..., 3]) - tf.maximum(b1[..., 1], b2[..., 1]), 0.0)
    inter = ih * iw
    a1 = tf.maximum(b1[..., 2] - b1[..., 0], 0.0) * tf.maximum(b1[..., 3] - b1[..., 1], 0.0)
    a2 = tf.maximum(b2[..., 2] - b2[..., 0], 0.0) * tf.maximum(b2[..., 3] - b2[..., 1], 0.0)
    union = a1 + a2 - inter
    return tf.math.divide_no_nan(inter, union)


def validate_ground_truth(
    boxes: np.ndarray,
    classes: np.ndarray,
    image_size: Sequence[int],
    num_classes: int,
    name: str = "gt",
) -> None:
    """Check one image's annotations before they enter a pipeline.

    Args:
        boxes: ``[N, 4]`` pixel boxes ``(y0, x0, y1, x1)``, exclusive ends.
        classes: ``[N]`` int classes in ``1..num_classes``.
        image_size: ``(H, W)`` of the image the boxes refer to.
        num_classes: Number of foreground classes ``C``.
        name: Prefix for the error path (e.g. the case id).

    Raises:
        InvalidInputError: Wrong shape, a non-finite or empty box, a box outside the image, or a
            class outside ``1..num_classes``; the path names the offending row.
    """
    boxes = np.asarray(boxes, np.float64)
    classes = np.asarray(classes)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise InvalidInputError(f"boxes must have shape [N, 4], got {boxes.shape}", path=f"{name}.boxes")
    if classes.shape != (boxes.shape[0],):
        raise InvalidInputError(
            f"classes must have shape [{boxes.shape[0]}], got {classes.shape}", path=f"{name}.classes"
        )
    h, w = image_size
    for i, (box, cls) in enumerate(zip(boxes, classes)):
        where = f"{name}[{i}]"
        if not np.all(np.isfinite(box)):
            raise InvalidInputError(f"box {box.tolist()} is not finite", path=where)
        y0, x0, y1, x1 = box
        if y1 <= y0 or x1 <= x0:
            raise InvalidInputError(f"box {box.tolist()} is empty (need y1 > y0 and x1 > x0)", path=where)
        if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
            raise InvalidInputError(
                f"box {box.tolist()} lies outside the {h}x{w} image (need 0 <= y0 < y1 <= {h}, "
                f"0 <= x0 < x1 <= {w})",
                path=where,
            )
        if int(cls) != cls or not 1 <= int(cls) <= num_classes:
            raise InvalidInputError(
                f"unknown class {cls.item() if hasattr(cls, 'item') else cls!r}; expected an integer in 1..{num_classes}", path=where
            )


def pad_ground_truth(
    boxes: Sequence[np.ndarray],
    classes: Sequence[np.ndarray],
    max_instances: int,
    image_size: Sequence[int],
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and pad per-image annotations into fixed-size arrays.

    Args:
        boxes: ``B`` arrays ``[N_i, 4]`` pixel boxes.
        classes: ``B`` arrays ``[N_i]`` classes ``1..C``.
        max_instances: ``N_max`` (Table 11 "max ground truth instances": 100).
        image_size: ``(H, W)``.
        num_classes: ``C``.

    Returns:
        ``(boxes float32 [B, N_max, 4], classes int32 [B, N_max] (0 = padding), count int32 [B])``.

    Raises:
        InvalidInputError: An invalid annotation (see :func:`validate_ground_truth`) or more than
            ``max_instances`` objects in one image.
    """
    n_img = len(boxes)
    out_b = np.zeros((n_img, max_instances, 4), np.float32)
    out_c = np.zeros((n_img, max_instances), np.int32)
    count = np.zeros((n_img,), np.int32)
    for i, (b, c) in enumerate(zip(boxes, classes)):
        b = np.asarray(b, np.float32).reshape(-1, 4)
        c = np.asarray(c).reshape(-1)
        validate_ground_truth(b, c, image_size, num_classes, name=f"image[{i}]")
        if len(b) > max_instances:
            raise InvalidInputError(
                f"{len(b)} objects exceed max_instances={max_instances}", path=f"image[{i}]"
            )
        out_b[i, : len(b)] = b
        out_c[i, : len(b)] = c
        count[i] = len(b)
    return out_b, out_c, count


def assign_targets(
    anchors,
    gt_boxes,
    gt_classes,
    positive_iou: float,
    negative_iou: float,
    force_match_best: bool = True,
) -> dict[str, tf.Tensor]:
    """Match every anchor (or ROI) to its best-overlapping ground-truth box.

    An anchor is positive if its best IoU >= ``positive_iou``, negative if < ``negative_iou``,
    ignored otherwise. With ``force_match_best`` each ground-truth box also makes its best anchor(s)
    positive (SSD's bipartite step, Mask R-CNN's "low-quality" matches), so no object is lost.

    Args:
        anchors: ``[A, 4]`` shared anchors or ``[B, A, 4]`` per-image boxes (ROIs); pixels.
        gt_boxes: ``[B, N, 4]`` padded ground truth, pixels.
        gt_classes: ``[B, N]`` int, ``<= 0`` = padding.
        positive_iou: IoU at or above which an anchor is positive.
        negative_iou: IoU below which an anchor is negative (``<= positive_iou``).
        force_match_best: Make each object's highest-IoU anchor(s) positive. Default True.

    Returns:
        Dict with ``labels int32 [B, A]`` (1 / 0 / -1), ``matched_index int32 [B, A]`` (index into
        ``N``, 0 for anchors without a match), ``matched_boxes float32 [B, A, 4]``,
        ``matched_classes int32 [B, A]`` (0 unless positive) and ``max_iou float32 [B, A]``.
    """
    gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
    gt_classes = tf.cast(gt_classes, tf.int32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    batch = tf.shape(gt_boxes)[0]
    if anchors.shape.rank == 2:
        anchors = tf.broadcast_to(anchors[None], [batch, tf.shape(anchors)[0], 4])
    valid = gt_classes > 0  # [B, N]
    iou = box_iou(anchors, gt_boxes)  # [B, A, N]
    iou = tf.where(valid[:, None, :], iou, -1.0)
    max_iou = tf.reduce_max(iou, axis=-1) if gt_boxes.shape[1] != 0 else tf.fill(tf.shape(iou)[:2], -1.0)
    matched = tf.argmax(iou, axis=-1, output_type=tf.int32)
    labels = tf.where(max_iou >= positive_iou, 1, tf.where(max_iou < negative_iou, 0, -1))
    if force_match_best:
        best_per_gt = tf.reduce_max(iou, axis=1, keepdims=True)  # [B, 1, N]
        is_best = (iou >= best_per_gt - 1e-7) & (iou > 0.0) & valid[:, None, :]  # [B, A, N]
        forced = tf.reduce_any(is_best, axis=-1)
        forced_idx = tf.argmax(tf.cast(is_best, tf.float32), axis=-1, output_type=tf.int32)
        matched = tf.where(forced & (labels != 1), forced_idx, matched)
        labels = tf.where(forced, 1, labels)
    max_iou = tf.maximum(max_iou, 0.0)
    matched_boxes = tf.gather(gt_boxes, matched, batch_dims=1)
    matched_classes = tf.where(labels == 1, tf.gather(gt_classes, matched, batch_dims=1), 0)
    return {
        "labels": tf.cast(labels, tf.int32),
        "matched_index": matched,
        "matched_boxes": matched_boxes,
        "matched_classes": matched_classes,
        "max_iou": max_iou,
    }


def _random_rank(mask: tf.Tensor, seed: int | None) -> tf.Tensor:
    """Random rank (0 = first picked) of each True entry of ``mask [B, A]``; False -> large."""
    noise = tf.random.uniform(tf.shape(mask), seed=seed)
    score = tf.where(mask, noise, -1.0)
    order = tf.argsort(score, axis=-1, direction="DESCENDING")
    return tf.argsort(order, axis=-1)


def sample_balanced(labels, num_samples: int, positive_fraction: float, seed: int | None = None) -> tf.Tensor:
    """Keep at most ``num_samples`` labelled entries per image, at most a fraction positive.

    Positives beyond ``floor(num_samples * positive_fraction)`` and negatives beyond the remaining
    budget are turned into ``-1`` (ignored), chosen uniformly at random.

    Args:
        labels: ``int32 [B, A]`` with 1 / 0 / -1.
        num_samples: Budget per image (RPN: 256 anchors per image).
        positive_fraction: Largest share of positives (RPN: 0.5; ROIs: 0.33).
        seed: Op seed for reproducible sampling.

    Returns:
        ``int32 [B, A]`` labels; ``sum(labels >= 0) <= num_samples`` per image.
    """
    labels = tf.cast(labels, tf.int32)
    max_pos = int(num_samples * positive_fraction)
    pos = labels == 1
    neg = labels == 0
    keep_pos = pos & (_random_rank(pos, seed) < max_pos)
    n_pos = tf.reduce_sum(tf.cast(keep_pos, tf.int32), axis=-1, keepdims=True)
    keep_neg = neg & (_random_rank(neg, None if seed is None else seed + 1) < num_samples - n_pos)
    return tf.where(keep_pos, 1, tf.where(keep_neg, 0, -1))


def select_fixed(labels, num_samples: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Indices of exactly ``num_samples`` entries per image: labelled ones first (positives first).

    Args:
        labels: ``int32 [B, A]`` sampled labels (see :func:`sample_balanced`), ``A >= num_samples``.
        num_samples: Output size ``R``.

    Returns:
        ``(indices int32 [B, R], valid bool [B, R])``; ``valid`` is False for filler entries.
    """
    labels = tf.cast(labels, tf.int32)
    a = tf.shape(labels)[1]
    # Priority: positives, then negatives, then the rest, each by position (stable).
    position = tf.cast(tf.range(a), tf.float32) / tf.cast(a, tf.float32)
    priority = tf.cast(labels, tf.float32) + 1.0 - position[None, :] * 0.5
    _, indices = tf.math.top_k(priority, k=num_samples, sorted=True)
    valid = tf.gather(labels, indices, batch_dims=1) >= 0
    return indices, valid
