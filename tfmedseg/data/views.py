"""Whole-body planar views as separate detection images (seed 001): views, chest crops, datasets.

A bone-scan patient has an anterior and a posterior view; each is one :class:`ViewImage` (counts
clipped at a percentile and scaled to [0, 1]) with its reference chest box and the lesions inside
it. From views this module builds the two detection stages' samples:

* :func:`view_box_targets` + :func:`box_dataset`: whole views resized (aspect not kept, as
  ``ssd_keras``) to the chest detector input with the chest box as its one target;
* :func:`crop_sample` + :func:`instance_dataset`: chest crops with their lesion instances (boxes,
  masks, classes), padded batches (:func:`tfmedseg.data.detection.detection_dataset`), device-side
  augmentation on boxes and masks, and Mask R-CNN mini masks.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from tfmedseg.errors import ConfigError, InvalidInputError

__all__ = [
    "VIEWS",
    "ViewImage",
    "normalise_counts",
    "inside_fraction",
    "collect_views",
    "split_patients",
    "view_box_targets",
    "crop_sample",
    "box_dataset",
    "instance_dataset",
    "detector_datasets",
    "instance_datasets",
    "training_crops",
]

VIEWS = ("anterior", "posterior")


@dataclasses.dataclass
class ViewImage:
    """One whole-body view as a separate image (seed §1).

    Attributes:
        case_id, view: Patient and ``anterior`` / ``posterior``.
        image: ``float32 [H, W]`` counts clipped at the percentile and scaled to [0, 1].
        chest_box: Reference ``(y0, x0, y1, x1)`` chest box in view pixels, or None.
        lesions: Reference lesion instances of this view inside the chest box, or None (unlabeled).
    """

    case_id: str
    view: str
    image: np.ndarray
    chest_box: tuple[float, float, float, float] | None
    lesions: list | None


def normalise_counts(counts: np.ndarray, percentile: float) -> np.ndarray:
    """Counts clipped to [min, ``percentile``-th percentile] and scaled to [0, 1] (float32)."""
    from tfmedseg.preprocessing.intensity import clip_and_scale

    hi = float(np.percentile(counts, percentile))
    lo = float(counts.min())
    return clip_and_scale(counts, lo, hi if hi > lo else lo + 1.0)


def inside_fraction(mask: np.ndarray, box) -> float:
    """Fraction of a mask's pixels inside ``box`` ``(y0, x0, y1, x1)`` (0 for an empty mask)."""
    y0, x0, y1, x1 = (int(round(v)) for v in box)
    total = np.count_nonzero(mask)
    return np.count_nonzero(mask[max(y0, 0):y1, max(x0, 0):x1]) / total if total else 0.0


def collect_views(cases: Sequence, *, percentile: float = 99.5, min_inside_fraction: float = 0.5,
                  views: Sequence[str] = VIEWS) -> list[ViewImage]:
    """Every view of every case as a :class:`ViewImage` (lesions restricted to the chest box).

    Args:
        cases: Bone-scan cases (images per view, ``meta["chest_boxes"]``, ``instances`` or None).
        percentile: Per-view clip percentile of the counts.
        min_inside_fraction: A lesion belongs to the chest image when at least this fraction of its
            mask lies inside the chest box.
        views: View names.

    Raises:
        InvalidInputError: A labeled case without a chest box for one of its views.
    """
    out = []
    for case in cases:
        boxes = case.meta.get("chest_boxes", {})
        for view in views:
            image = normalise_counts(np.asarray(case.images[view].array, np.float32), percentile)
            box = boxes.get(view)
            lesions = None
            if case.instances is not None:
                if box is None:
                    raise InvalidInputError(f"labeled patient has no chest_box for the {view} view",
                                            path=case.meta.get("paths", {}).get("annotation", case.case_id))
                lesions = [i for i in case.instances
                           if i.view == view and inside_fraction(i.mask, box) >= min_inside_fraction]
            out.append(ViewImage(case.case_id, view, image, box, lesions))
    return out


def split_patients(cases: Sequence, fraction: float, seed: int) -> tuple[list, list, list]:
    """Seeded patient split: ``(train_labeled, validation_labeled, unlabeled)``; a patient's views
    never straddle it. At least one labeled patient is held out and one kept for training.

    Raises:
        ConfigError: Fewer than two labeled patients.
    """
    labeled = [c for c in cases if c.instances is not None]
    unlabeled = [c for c in cases if c.instances is None]
    if len(labeled) < 2:
        raise ConfigError(f"needs at least 2 labeled patients for a train/validation split, got {len(labeled)}",
                          path="dataset")
    order = np.random.default_rng(seed).permutation(len(labeled))
    n_val = min(len(labeled) - 1, max(1, int(round(fraction * len(labeled)))))
    val_idx = set(order[:n_val].tolist())
    return ([c for i, c in enumerate(labeled) if i not in val_idx],
            [c for i, c in enumerate(labeled) if i in val_idx], unlabeled)


def view_box_targets(views: Sequence[ViewImage], size: int) -> tuple[np.ndarray, np.ndarray]:
    """``images [N, S, S, 1]`` resized views and ``boxes [N, 1, 4]`` chest boxes in detector pixels."""
    from tfmedseg.preprocessing.resample import resize_array

    images = np.stack([resize_array(v.image, (size, size), "linear") for v in views])[..., None].astype(np.float32)
    boxes = []
    for v in views:
        h, w = v.image.shape
        boxes.append(np.asarray(v.chest_box, np.float32) * np.array([size / h, size / w] * 2, np.float32))
    return images, np.asarray(boxes, np.float32)[:, None, :]


def crop_sample(view: ViewImage, crop_size: int, class_names: Sequence[str], box=None):
    """The chest crop of a view and its lesions as a :class:`~tfmedseg.data.detection.DetectionSample`.

    Args:
        view: A view (labeled or not).
        crop_size: Output side.
        class_names: Lesion class names; class ids are ``index + 1`` (0 is padding).
        box: Chest box to crop; default the reference box.

    Returns:
        ``(sample, CropTransform)``; lesions whose crop mask is empty are dropped.
    """
    from tfmedseg.data.detection import DetectionSample
    from tfmedseg.data.box_crops import crop_box

    crop, transform = crop_box(view.image, view.chest_box if box is None else box, crop_size)
    sample_id = f"{view.case_id}/{view.view}"
    if view.lesions is None:
        return DetectionSample(sample_id, crop), transform
    boxes, masks, classes = [], [], []
    for lesion in view.lesions:
        m = transform.mask_to_crop(np.asarray(lesion.mask, bool))
        if not m.any():
            continue
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        boxes.append([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])
        masks.append(m)
        classes.append(list(class_names).index(lesion.class_name) + 1)
    masks_arr = np.asarray(masks, np.uint8).reshape(-1, crop_size, crop_size)
    return DetectionSample(sample_id, crop, np.asarray(boxes, np.float32).reshape(-1, 4), masks_arr,
                           np.asarray(classes, np.int32)), transform


def box_dataset(images: np.ndarray, boxes: np.ndarray, batch_size: int, seed: int, augment=None):
    """Shuffled, repeated ``(image, {"boxes", "classes"})`` batches of one-box targets (class 1),
    optionally augmented on the device (a detection augmentation layer on a dict)."""
    import tensorflow as tf

    n = len(images)
    ds = tf.data.Dataset.from_tensor_slices((images, boxes, np.ones((n, 1), np.int32)))
    ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat().batch(batch_size, drop_remainder=True)

    def fn(image, box, cls):
        data = {"image": image, "boxes": box, "classes": cls, "num_valid": tf.reduce_sum(cls, axis=1)}
        if augment is not None:
            data = augment(data, training=True)
        return data["image"], {"boxes": data["boxes"], "classes": data["classes"]}

    return ds.map(fn, num_parallel_calls=1, deterministic=True).prefetch(2)


def instance_dataset(samples, batch_size: int, *, max_instances: int, mini_mask_size: int, seed: int,
                     augment=None, epochs=None, unlabeled=(), unlabeled_per_batch: int = 0):
    """Padded crops (+ ``unlabeled_per_batch`` of the ``unlabeled`` crops per batch) -> (augmented) ->
    ``{"images", "boxes", "classes", "masks" [B, N, m, m] mini masks, "labeled" [B] 1/0 per view}``."""
    import tensorflow as tf

    from tfmedseg.data.detection import detection_dataset
    from tfmedseg.data.box_crops import aligned_crop

    u = unlabeled_per_batch if len(unlabeled) else 0
    ds = detection_dataset(samples, unlabeled if u else (), batch_size, u, max_instances=max_instances, seed=seed,
                           epochs=epochs)
    m = mini_mask_size

    def fn(batch):
        data = {"image": batch["image"], "boxes": batch["boxes"], "masks": batch["masks"],
                "classes": batch["classes"], "num_valid": batch["num_instances"]}
        if augment is not None:
            data = augment(data, training=True)
        masks = tf.cast(data["masks"], tf.float32)
        b, n = tf.shape(masks)[0], tf.shape(masks)[1]
        s = masks.shape[-1]
        flat = tf.reshape(masks, [-1, s, s, 1])
        boxes = tf.reshape(tf.cast(data["boxes"], tf.float32), [-1, 4])
        mini = aligned_crop(flat, boxes, tf.range(b * n), m)
        return {"images": data["image"], "boxes": data["boxes"], "classes": data["classes"],
                "masks": tf.reshape(mini, [b, n, m, m]), "labeled": tf.cast(batch["labeled"], tf.float32)}

    return ds.map(fn, num_parallel_calls=1, deterministic=True).prefetch(2)


def training_crops(views, unlabeled_views, crop_size: int, class_names: Sequence[str], predicted_boxes=None,
                   use_predicted: bool = False) -> tuple[list, list]:
    """The lesion stage's training samples: labeled views cropped at their reference chest boxes (or at
    ``predicted_boxes`` with ``use_predicted``, seed section 6.2) and unlabeled views at their predicted
    boxes (views without one are left out).

    Args:
        views / unlabeled_views: :class:`ViewImage` s.
        predicted_boxes: One box (or None) per view of ``views + unlabeled_views``, or None.

    Returns:
        ``(labeled_samples, unlabeled_samples)``.
    """
    boxes = list(predicted_boxes) if predicted_boxes is not None else [None] * (len(views) + len(unlabeled_views))
    labeled = [crop_sample(v, crop_size, class_names, b if use_predicted else None)[0] for v, b in zip(views, boxes)]
    unlabeled = [crop_sample(v, crop_size, class_names, b)[0] for v, b in zip(unlabeled_views, boxes[len(views):]) if b]
    return labeled, unlabeled


def detector_datasets(train_views, val_views, size: int, batch_size: int, seed: int, augment=None):
    """Training and validation :func:`box_dataset` s of whole views at detector size ``size``.

    The batch is cut to the number of training views (and of validation views for validation).

    Returns:
        ``(train_ds, val_ds, steps_per_epoch, validation_steps)``: one pass over each set per epoch.
    """
    x_tr, b_tr = view_box_targets(train_views, size)
    x_va, b_va = view_box_targets(val_views, size)
    tb = min(batch_size, len(x_tr))
    vb = min(tb, len(x_va))
    return (box_dataset(x_tr, b_tr, tb, seed, augment), box_dataset(x_va, b_va, vb, seed + 1),
            max(1, len(x_tr) // tb), max(1, len(x_va) // vb))


def instance_datasets(train_samples, val_samples, batch_size: int, seed: int, augment=None, unlabeled=(),
                      unlabeled_per_batch: int = 0, **kwargs):
    """Training (augmented, with ``unlabeled_per_batch`` of the ``unlabeled`` samples in each batch) and
    validation :func:`instance_dataset` s; ``kwargs``: ``max_instances``, ``mini_mask_size``.

    Returns:
        ``(train_ds, val_ds, steps_per_epoch, validation_steps)``: one pass over each set per epoch.
    """
    tb = min(batch_size, len(train_samples))
    vb = min(tb, len(val_samples))
    return (instance_dataset(train_samples, tb, seed=seed, augment=augment, unlabeled=unlabeled,
                             unlabeled_per_batch=unlabeled_per_batch, **kwargs),
            instance_dataset(val_samples, vb, seed=seed + 1, **kwargs),
            max(1, len(train_samples) // tb), max(1, len(val_samples) // vb))
