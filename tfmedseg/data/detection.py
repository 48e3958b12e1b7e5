"""Seed 001 detection samples: dense, padded instance targets and labeled/unlabeled batch mixing.

Ragged per-image box lists break distributed and exported graphs, so every sample is padded to
``max_instances``:

* ``image``  ``[H, W, C]`` float32 (the 320x320 chest crop);
* ``boxes``  ``[N_max, 4]`` float32 ``(y0, x0, y1, x1)`` in pixels of the image, zeros when padded;
* ``masks``  ``[N_max, H, W]`` uint8 full-image instance masks, zeros when padded. Full size (not
  Mask R-CNN "mini masks") so that device-side geometric augmentation warps them exactly like the
  image; the model crops/resizes them per ROI (``tf.image.crop_and_resize``) when it builds targets;
* ``classes`` ``[N_max]`` int32, 1..4 = :data:`tfmedseg.datasets.case.LESION_CLASSES` + 1, 0 = padding;
* ``num_instances`` int32 scalar: the valid count (rows ``[:n]`` are real);
* ``labeled`` bool scalar: False for unlabeled images (all targets zero; only the unsupervised
  ladder loss uses them).

Batch mixing (thesis L821: every minibatch mixes labeled and unlabeled images; the ratio is not
given, 8 + 8 of 16 suggested): each global batch holds ``batch_size - unlabeled_per_batch``
labeled and ``unlabeled_per_batch`` unlabeled images, laid out per replica (replica ``r`` gets
rows ``[r * b, (r + 1) * b)`` under tf.distribute, each with the same labeled/unlabeled split).
An epoch is one pass over the labeled images in random order; unlabeled images cycle through
random permutations.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfmedseg.data.pipelines import build_dataset
from tfmedseg.errors import InvalidInputError

__all__ = ["DetectionSample", "pad_instances", "detection_dataset", "DETECTION_KEYS"]

DETECTION_KEYS = ("image", "boxes", "masks", "classes", "num_instances", "labeled")


@dataclasses.dataclass
class DetectionSample:
    """One image with its instances (or none when unlabeled).

    Attributes:
        sample_id: Identifier named in errors.
        image: ``[H, W]`` or ``[H, W, C]`` preprocessed image.
        boxes: ``[N, 4]`` ``(y0, x0, y1, x1)`` pixels, or None when unlabeled.
        masks: ``[N, H, W]`` instance masks, or None.
        classes: ``[N]`` class ids (1-based), or None.
    """

    sample_id: str
    image: np.ndarray
    boxes: np.ndarray | None = None
    masks: np.ndarray | None = None
    classes: np.ndarray | None = None

    def __post_init__(self) -> None:
        image = np.asarray(self.image, dtype=np.float32)
        self.image = image[..., None] if image.ndim == 2 else image
        if self.image.ndim != 3:
            raise InvalidInputError(f"image must be [H, W] or [H, W, C], got {image.shape}", path=self.sample_id)

    @property
    def is_labeled(self) -> bool:
        """True when boxes are given (possibly zero boxes: an image without lesions)."""
        return self.boxes is not None


def pad_instances(sample: DetectionSample, max_instances: int) -> dict[str, np.ndarray]:
    """Dense, padded targets of one sample (see the module docstring for shapes).

    Raises:
        InvalidInputError: If the sample has more than ``max_instances`` instances or its
            boxes, masks and classes disagree (names the sample).
    """
    h, w = sample.image.shape[:2]
    out = {
        "image": sample.image,
        "boxes": np.zeros((max_instances, 4), np.float32),
        "masks": np.zeros((max_instances, h, w), np.uint8),
        "classes": np.zeros((max_instances,), np.int32),
        "num_instances": np.int32(0),
        "labeled": np.bool_(sample.is_labeled),
    }
    if not sample.is_labeled:
        return out
    boxes = np.asarray(sample.boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    classes = np.zeros(n, np.int32) if sample.classes is None else np.asarray(sample.classes, np.int32).reshape(-1)
    masks = None if sample.masks is None else np.asarray(sample.masks)
    if len(classes) != n or (masks is not None and masks.shape != (n, h, w)):
        raise InvalidInputError(
            f"{n} boxes, {len(classes)} classes and masks of shape {None if masks is None else masks.shape} "
            f"do not match (expected masks [{n}, {h}, {w}])",
            path=sample.sample_id,
        )
    if n > max_instances:
        raise InvalidInputError(f"{n} instances exceed max_instances={max_instances}", path=sample.sample_id)
    out["boxes"][:n] = boxes
    out["classes"][:n] = classes
    if masks is not None:
        out["masks"][:n] = masks > 0
    out["num_instances"] = np.int32(n)
    return out


def _batch_layout(n_labeled: int, n_unlabeled: int, batch_size: int, u_per_batch: int, replicas: int, rng) -> np.ndarray:
    """``int64 [n_batches * batch_size, 2]`` rows ``(is_unlabeled, index)`` of one epoch."""
    l_per_batch = batch_size - u_per_batch
    n_batches = n_labeled // l_per_batch
    lab = rng.permutation(n_labeled)[: n_batches * l_per_batch].reshape(n_batches, replicas, -1)
    need = n_batches * u_per_batch
    unl = np.zeros((0,), np.int64)
    if u_per_batch:
        unl = np.concatenate([rng.permutation(n_unlabeled) for _ in range(-(-need // n_unlabeled))])[:need]
    unl = unl.reshape(n_batches, replicas, -1)
    rows = np.concatenate(
        [np.stack([np.zeros_like(lab), lab], -1), np.stack([np.ones_like(unl), unl], -1)], axis=2
    )  # [batches, replicas, per_replica, 2]
    return rows.reshape(-1, 2)


def detection_dataset(
    labeled: Sequence[DetectionSample],
    unlabeled: Sequence[DetectionSample] = (),
    batch_size: int = 16,
    unlabeled_per_batch: int = 8,
    *,
    max_instances: int = 32,
    num_replicas: int = 1,
    seed: int = 0,
    epochs: int | None = None,
) -> tf.data.Dataset:
    """Batches of padded detection samples with unlabeled images mixed in at a fixed ratio.

    Args:
        labeled: Labeled samples (an image without lesions has ``boxes`` of shape ``[0, 4]``).
        unlabeled: Unlabeled samples (``boxes=None``).
        batch_size: Global batch size (16 in the seed: 8 per GPU on 2 GPUs).
        unlabeled_per_batch: Unlabeled images per global batch (8: half, our choice).
        max_instances: ``N_max`` of the padded targets.
        num_replicas: Replicas the batch is split over (each gets the same mix); use
            ``strategy.num_replicas_in_sync``.
        seed: Seed of the orders.
        epochs: Epochs (one pass over the labeled images each), None = infinite.

    Returns:
        Dataset of dicts with :data:`DETECTION_KEYS`, leading batch axis ``B``.
    """
    labeled, unlabeled = list(labeled), list(unlabeled)
    if not 0 <= unlabeled_per_batch < batch_size:
        raise InvalidInputError(f"must be in [0, batch_size={batch_size}), got {unlabeled_per_batch}", path="unlabeled_per_batch")
    if batch_size % num_replicas or unlabeled_per_batch % num_replicas:
        raise InvalidInputError(
            f"batch_size {batch_size} and unlabeled_per_batch {unlabeled_per_batch} must be multiples of "
            f"num_replicas={num_replicas}",
            path="unlabeled_per_batch",
        )
    if unlabeled_per_batch and not unlabeled:
        raise InvalidInputError("unlabeled_per_batch > 0 but no unlabeled samples were given", path="unlabeled")
    for s in labeled:
        if not s.is_labeled:
            raise InvalidInputError("sample in the labeled list has no boxes", path=s.sample_id)
    if len(labeled) < batch_size - unlabeled_per_batch:
        raise InvalidInputError(f"{len(labeled)} labeled samples cannot fill one batch", path="labeled")
    shape = labeled[0].image.shape
    for s in labeled + unlabeled:
        if s.image.shape != shape:
            raise InvalidInputError(f"image shape {s.image.shape} differs from {shape}", path=s.sample_id)
    for s in labeled:
        pad_instances(s, max_instances)  # validate counts and shapes now, not inside the graph
    h, w, c = shape
    n_rows = (len(labeled) // (batch_size - unlabeled_per_batch)) * batch_size

    def order_fn(rng):
        return _batch_layout(len(labeled), len(unlabeled), batch_size, unlabeled_per_batch, num_replicas, rng)

    def fn(row):
        sample = (unlabeled if row[0] else labeled)[row[1]]
        d = pad_instances(sample, max_instances)
        return tuple(d[k] for k in DETECTION_KEYS)

    specs = [
        tf.TensorSpec([h, w, c], tf.float32),
        tf.TensorSpec([max_instances, 4], tf.float32),
        tf.TensorSpec([max_instances, h, w], tf.uint8),
        tf.TensorSpec([max_instances], tf.int32),
        tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.bool),
    ]
    ds = build_dataset(order_fn, 2, fn, specs, batch_size, seed, epochs, n_rows)
    return ds.map(lambda *t: dict(zip(DETECTION_KEYS, t)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
