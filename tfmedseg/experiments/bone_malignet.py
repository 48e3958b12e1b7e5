"""Seed 001 (first version): SSD chest detector -> chest crop -> Mask R-CNN lesion instances.

``python -m tfmedseg.experiments.bone_malignet [--config quick|paper|FILE] [--data-dir DIR]``

Wiring only (the pieces live in the shared tree):

1. load the bone-scan layout (:func:`tfmedseg.datasets.load_dataset`), split the patients
   (seeded, by patient so a patient's two views never straddle the split); unlabeled patients
   form the unlabeled pool; every view is a separate image (seed §1) with its counts clipped at
   the 99.5th percentile and scaled to [0, 1];
2. stage 1: SSD (:mod:`tfmedseg.models.detection.ssd`) on whole-body views resized to the
   detector input (aspect not kept, as ``ssd_keras``), one class "chest";
3. stage 2: Mask R-CNN (:mod:`tfmedseg.models.detection.mask_rcnn`) on ground-truth chest crops
   resized to ``crop_size`` (seed: 320x320) with the lesions inside the chest box, padded batches
   from :func:`tfmedseg.data.detection.detection_dataset`, ``seed001_affine_bc`` augmentation on
   boxes and masks; both stages train through :class:`tfmedseg.training.Trainer` (TensorBoard,
   best/last weights, resume);
4. validation: SSD top box -> crop -> Mask R-CNN -> instances mapped back to the whole-body view;
   seed Tables 4/5/6/7-style scores (:mod:`tfmedseg.metrics.instances`), chest-box Jaccard, training
   and per-image inference time, per-image CSV (:func:`tfmedseg.reports.write_report`);
5. export both inference models (:func:`tfmedseg.models.detection.export.export_detector`) to
   ``<export_dir>/bone_malignet_ssd/<v>`` and ``<export_dir>/bone_malignet_maskrcnn/<v>``.

Seams for the later MaligNet pieces: the Mask R-CNN ``decoder`` (ladder FPN) and ``box_head``
(global-feature classifier) are swapped in :func:`build_lesion_model`; unlabeled images are mixed
into the batches (``unlabeled_per_batch``) once the model has an unsupervised loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import tfmedseg  # noqa: F401  (oneDNN on before TensorFlow loads)
from tfmedseg.datasets.case import LESION_CLASSES
from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.models.detection.malignet import MaligNetConfig
from tfmedseg.models.detection.mask_rcnn import MaskRCNNConfig
from tfmedseg.models.detection.ssd import SSDConfig
from tfmedseg.training.trainer import TrainConfig

__all__ = [
    "StageConfig",
    "BoneMaligNetConfig",
    "ViewImage",
    "collect_views",
    "split_patients",
    "crop_sample",
    "build_lesion_model",
    "predict_view",
    "run",
    "main",
]

VIEWS = ("anterior", "posterior")
LESION_MODELS = ("mask_rcnn", "malignet")
CROP_BOXES = ("reference", "predicted")


def _ssd_train() -> TrainConfig:
    """Table 10: Adam 1e-3 (the 5e-4 weight decay is the model's L2); epochs are not given."""
    return TrainConfig(optimizer="adam", learning_rate=1e-3, epochs=60, monitor="val_loss", image_every_epochs=0)


def _mrcnn_train() -> TrainConfig:
    """Table 11: Adam 1e-3 (L2 1e-4 in the model), Matterport's global-norm clip 5; epochs not given."""
    return TrainConfig(optimizer="adam", learning_rate=1e-3, global_clipnorm=5.0, epochs=100, monitor="val_loss",
                       image_every_epochs=0)


@dataclasses.dataclass
class StageConfig:
    """Training settings of one stage.

    Attributes:
        batch_size: Global batch size (Tables 10/11: 16).
        augmentation: Augmentation preset (``seed001_affine_bc``) or None. Its 16 px translation
            is scaled by ``input size / 320``.
        augmentation_overrides: Layer class name -> arguments replacing the preset's (the SSD
            stage turns rotation off: the box around a rotated chest box is taller than the chest,
            which biases the detector's boxes outwards).
        train: Optimiser, epochs, callbacks (:class:`~tfmedseg.training.trainer.TrainConfig`).
        steps_per_epoch: Optimizer steps per epoch; None: one pass over the training images.
    """

    batch_size: int = 16
    augmentation: str | None = "seed001_affine_bc"
    augmentation_overrides: dict = dataclasses.field(default_factory=lambda: {"RandomGeometric": {"rotation": 0.0}})
    train: TrainConfig = dataclasses.field(default_factory=_ssd_train)
    steps_per_epoch: int | None = None


@dataclasses.dataclass
class BoneMaligNetConfig:
    """Seed 001 experiment settings (defaults: the paper's, for real data).

    Attributes:
        dataset: Dataset loader name (bone-scan layout).
        validation_fraction: Seeded fraction of the labeled patients held out for validation.
        max_cases: Use at most this many patients (0: all).
        intensity_percentile: Per-view clip percentile of the counts before scaling to [0, 1].
        crop_size: Side of the chest crop fed to Mask R-CNN (seed: 320); must equal
            ``mask_rcnn.image_size``.
        crop_margin: Relative margin added to the detected chest box before cropping (0).
        min_inside_fraction: A lesion belongs to the chest image when at least this fraction of its
            mask lies inside the chest box.
        score_threshold: Evaluation confidence (seed: 0.7, the detection minimum confidence).
        iou_threshold: Lesion match IoU (seed: 0.5); ``iou_type`` ``mask`` (seed) or ``box``.
        unlabeled_per_batch: Unlabeled views per lesion-stage batch (needs the ladder FPN's
            unsupervised loss: ``lesion_model: malignet`` with ``malignet.ladder_fpn``); they are
            cropped at the SSD's predicted chest boxes.
        lesion_crop_boxes: Chest boxes of the lesion stage's training crops: ``reference`` or
            ``predicted`` (the SSD's, seed section 6.2).
        lesion_model: Stage-2 model: ``mask_rcnn`` or ``malignet`` (its ``malignet.ladder_fpn`` /
            ``malignet.global_features`` switches give Table 4's rows).
        malignet: :class:`~tfmedseg.models.detection.malignet.MaligNetConfig`.
        ssd / mask_rcnn: Model configs (Tables 10 / 11).
        ssd_stage / lesion_stage: Training settings of the two stages.
        overlay_images: Views drawn in the montage and the TensorBoard prediction images.
        export_dir: Root of the SavedModel exports.
    """

    dataset: str = "bone_scan"
    validation_fraction: float = 0.2
    max_cases: int = 0
    intensity_percentile: float = 99.5
    crop_size: int = 320
    crop_margin: float = 0.0
    min_inside_fraction: float = 0.5
    score_threshold: float = 0.7
    iou_threshold: float = 0.5
    iou_type: str = "mask"
    unlabeled_per_batch: int = 0
    lesion_model: str = "mask_rcnn"
    lesion_crop_boxes: str = "reference"
    malignet: MaligNetConfig = dataclasses.field(default_factory=MaligNetConfig)
    ssd: SSDConfig = dataclasses.field(default_factory=SSDConfig)
    mask_rcnn: MaskRCNNConfig = dataclasses.field(default_factory=MaskRCNNConfig)
    ssd_stage: StageConfig = dataclasses.field(default_factory=StageConfig)
    lesion_stage: StageConfig = dataclasses.field(
        default_factory=lambda: StageConfig(augmentation_overrides={}, train=_mrcnn_train()))
    overlay_images: int = 8
    export_dir: str = "saved_models"

    def __post_init__(self) -> None:
        if self.crop_size != self.mask_rcnn.image_size:
            raise ConfigError(f"must equal mask_rcnn.image_size ({self.mask_rcnn.image_size}), got {self.crop_size}",
                              path="crop_size")
        if self.mask_rcnn.num_classes != len(LESION_CLASSES):
            raise ConfigError(f"must be {len(LESION_CLASSES)} (the lesion classes {LESION_CLASSES}), got "
                              f"{self.mask_rcnn.num_classes}", path="mask_rcnn.num_classes")
        if self.ssd.num_classes != 1:
            raise ConfigError(f"the chest detector has one class, got {self.ssd.num_classes}", path="ssd.num_classes")
        if self.iou_type not in ("mask", "box"):
            raise ConfigError(f"unknown iou_type {self.iou_type!r}; allowed: ('mask', 'box')", path="iou_type")
        if self.lesion_model not in LESION_MODELS:
            raise ConfigError(f"unknown lesion_model {self.lesion_model!r}; allowed: {LESION_MODELS}", path="lesion_model")
        if self.unlabeled_per_batch and not (self.lesion_model == "malignet" and self.malignet.ladder_fpn):
            raise ConfigError("unlabeled views only train through the ladder FPN's denoising cost: set lesion_model: "
                              "malignet (with malignet.ladder_fpn) or keep 0", path="unlabeled_per_batch")
        if self.lesion_crop_boxes not in CROP_BOXES:
            raise ConfigError(f"unknown {self.lesion_crop_boxes!r}; allowed: {CROP_BOXES}", path="lesion_crop_boxes")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"must be in (0, 1), got {self.validation_fraction}", path="validation_fraction")
        if not 0.0 < self.intensity_percentile <= 100.0:
            raise ConfigError(f"must be in (0, 100], got {self.intensity_percentile}", path="intensity_percentile")


# ----------------------------------------------------------------------------- data
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


def _normalise(counts: np.ndarray, percentile: float) -> np.ndarray:
    from tfmedseg.preprocessing.intensity import clip_and_scale

    hi = float(np.percentile(counts, percentile))
    lo = float(counts.min())
    return clip_and_scale(counts, lo, hi if hi > lo else lo + 1.0)


def _inside_fraction(mask: np.ndarray, box) -> float:
    y0, x0, y1, x1 = (int(round(v)) for v in box)
    total = np.count_nonzero(mask)
    return np.count_nonzero(mask[max(y0, 0):y1, max(x0, 0):x1]) / total if total else 0.0


def collect_views(cases: list, config: BoneMaligNetConfig) -> list[ViewImage]:
    """Both views of every case as :class:`ViewImage` s (lesions restricted to the chest box).

    Raises:
        InvalidInputError: A labeled case without a chest box for one of its views.
    """
    out = []
    for case in cases:
        boxes = case.meta.get("chest_boxes", {})
        for view in VIEWS:
            image = _normalise(np.asarray(case.images[view].array, np.float32), config.intensity_percentile)
            box = boxes.get(view)
            lesions = None
            if case.instances is not None:
                if box is None:
                    raise InvalidInputError(f"labeled patient has no chest_box for the {view} view",
                                            path=case.meta.get("paths", {}).get("annotation", case.case_id))
                lesions = [i for i in case.instances
                           if i.view == view and _inside_fraction(i.mask, box) >= config.min_inside_fraction]
            out.append(ViewImage(case.case_id, view, image, box, lesions))
    return out


def split_patients(cases: list, fraction: float, seed: int) -> tuple[list, list, list]:
    """Seeded patient split: ``(train_labeled, validation_labeled, unlabeled)``.

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


def _ssd_arrays(views: list[ViewImage], size: int) -> tuple[np.ndarray, np.ndarray]:
    """``images [N, S, S, 1]`` resized views and ``boxes [N, 1, 4]`` chest boxes in detector pixels."""
    from tfmedseg.preprocessing.resample import resize_array

    images = np.stack([resize_array(v.image, (size, size), "linear") for v in views])[..., None].astype(np.float32)
    boxes = []
    for v in views:
        h, w = v.image.shape
        boxes.append(np.asarray(v.chest_box, np.float32) * np.array([size / h, size / w] * 2, np.float32))
    return images, np.asarray(boxes, np.float32)[:, None, :]


def crop_sample(view: ViewImage, crop_size: int, box=None):
    """The chest crop of a view and its lesions as a :class:`~tfmedseg.data.detection.DetectionSample`.

    Args:
        view: A view (labeled or not).
        crop_size: Output side.
        box: Chest box to crop; default the reference box.

    Returns:
        ``(sample, CropTransform)``; lesions whose crop mask is empty are dropped.
    """
    from tfmedseg.data.detection import DetectionSample
    from tfmedseg.models.detection.crop import crop_box

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
        classes.append(LESION_CLASSES.index(lesion.class_name) + 1)
    masks_arr = np.asarray(masks, np.uint8).reshape(-1, crop_size, crop_size)
    return DetectionSample(sample_id, crop, np.asarray(boxes, np.float32).reshape(-1, 4), masks_arr,
                           np.asarray(classes, np.int32)), transform


def _augmenter(stage: StageConfig, size: int, seed: int):
    from tfmedseg.augment.presets import build_preset

    if not stage.augmentation:
        return None
    overrides = {k: dict(v) for k, v in stage.augmentation_overrides.items()}
    if stage.augmentation == "seed001_affine_bc":
        overrides["RandomGeometric"] = {"translation": 16.0 * size / 320.0, **overrides.get("RandomGeometric", {})}
    return build_preset(stage.augmentation, ndim=2, seed=seed, overrides=overrides)


def _ssd_dataset(images, boxes, batch_size: int, seed: int, augment=None):
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


def _lesion_dataset(samples, batch_size: int, config: BoneMaligNetConfig, seed: int, augment=None, epochs=None,
                    unlabeled=()):
    """Padded crops (+ ``unlabeled_per_batch`` unlabeled ones) -> (augmented) -> ``{"images", "boxes",
    "classes", "masks" (mini masks), "labeled" (1/0 per view)}``."""
    import tensorflow as tf

    from tfmedseg.data.detection import detection_dataset
    from tfmedseg.models.detection.roi import aligned_crop

    mcfg = config.mask_rcnn
    u = config.unlabeled_per_batch if unlabeled else 0
    ds = detection_dataset(samples, unlabeled if u else (), batch_size, u, max_instances=mcfg.max_gt_instances, seed=seed,
                           epochs=epochs)
    m = mcfg.mini_mask_size

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


# ----------------------------------------------------------------------------- models
def build_lesion_model(config: BoneMaligNetConfig):
    """The stage-2 model: Mask R-CNN, or MaligNet / a Table 4 ablation (``config.malignet`` switches)."""
    from tfmedseg.models.detection.malignet import build_malignet
    from tfmedseg.models.detection.mask_rcnn import MaskRCNN, build_mask_rcnn_parts

    if config.lesion_model == "malignet":
        return build_malignet(config.mask_rcnn, config.malignet)
    parts = build_mask_rcnn_parts(config.mask_rcnn)
    return MaskRCNN(**parts, config=config.mask_rcnn, name="mask_rcnn")


def _train(name: str, stage: StageConfig, build, train_ds, val_ds, steps: int, val_steps: int, output_dir: Path, seed: int):
    from tfmedseg.training.trainer import Trainer

    cfg = dataclasses.replace(stage.train, steps_per_epoch=stage.steps_per_epoch or steps, validation_steps=val_steps,
                              output_dir=str(output_dir / name), seed=seed, image_every_epochs=0)
    trainer = Trainer(cfg, build)
    start = time.perf_counter()
    history = trainer.fit(train_ds, validation_data=val_ds)
    seconds = time.perf_counter() - start
    epochs = len(history.history.get("loss", [])) or 1
    return trainer.model, {
        "train_seconds": seconds,
        "epochs": float(epochs),
        "steps": float(epochs * cfg.steps_per_epoch),
        "final_loss": float(history.history["loss"][-1]) if history.history.get("loss") else math.nan,
    }


# ----------------------------------------------------------------------------- prediction
def predict_view(view: ViewImage, ssd_fn, mrcnn_fn, config: BoneMaligNetConfig) -> dict[str, Any]:
    """SSD top chest box -> crop -> Mask R-CNN -> lesions on the whole-body view.

    Args:
        view: The view.
        ssd_fn / mrcnn_fn: ``images -> detections`` callables of the two models.
        config: Supplies the sizes.

    Returns:
        ``{"chest_box": (y0, x0, y1, x1) or None, "chest_score", "lesions": [dict(class_name, box,
        mask, score)], "seconds"}``; masks are bool ``[H, W]`` on the view.
    """
    from tfmedseg.models.detection.crop import crop_box
    from tfmedseg.preprocessing.resample import resize_array

    start = time.perf_counter()
    s = config.ssd.image_size
    h, w = view.image.shape
    small = resize_array(view.image, (s, s), "linear")[None, ..., None].astype(np.float32)
    det = ssd_fn(small)
    if int(np.asarray(det["num_detections"])[0]) == 0:
        return {"chest_box": None, "chest_score": 0.0, "lesions": [], "seconds": time.perf_counter() - start}
    box = np.asarray(det["boxes"])[0, 0] * np.array([h / s, w / s] * 2, np.float32)
    crop, transform = crop_box(view.image, box, config.crop_size, config.crop_margin)
    out = mrcnn_fn(crop[None, ..., None].astype(np.float32))
    n = int(np.asarray(out["num_detections"])[0])
    boxes = transform.boxes_to_source(np.asarray(out["boxes"])[0, :n])
    masks = transform.mask_to_source(np.asarray(out["masks"])[0, :n].astype(bool)) if n else np.zeros((0, h, w), bool)
    classes, scores = np.asarray(out["classes"])[0, :n], np.asarray(out["scores"])[0, :n]
    lesions = [{"class_name": LESION_CLASSES[int(c) - 1], "box": tuple(float(v) for v in b), "mask": m, "score": float(p)}
               for b, m, c, p in zip(boxes, masks, classes, scores)]
    return {"chest_box": tuple(float(v) for v in box), "chest_score": float(np.asarray(det["scores"])[0, 0]),
            "lesions": lesions, "seconds": time.perf_counter() - start}


def _draw_boxes(image: np.ndarray, boxes_colours) -> np.ndarray:
    """``[H, W]`` in [0, 1] -> ``uint8 [H, W, 3]`` with rectangle outlines."""
    rgb = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    h, w = image.shape
    for box, colour in boxes_colours:
        y0, x0, y1, x1 = (int(round(v)) for v in box)
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(max(y1 - 1, 0), h - 1), min(max(x1 - 1, 0), w - 1)
        rgb[y0, x0:x1 + 1] = rgb[y1, x0:x1 + 1] = colour
        rgb[y0:y1 + 1, x0] = rgb[y0:y1 + 1, x1] = colour
    return rgb


def _patient_metastasis(per_image: list[tuple[str, dict]]) -> dict[str, float]:
    """Patient-level metastasis from per-view outcomes (a patient is metastatic if any view has a
    malignant reference lesion; TP if any view's malignant prediction matches one)."""
    by_patient: dict[str, list[dict]] = {}
    for case_id, outcome in per_image:
        by_patient.setdefault(case_id, []).append(outcome)
    tp = fp = fn = tn = 0
    for outcomes in by_patient.values():
        if any(o["tp"] or o["fn"] for o in outcomes):
            tp, fn = (tp + 1, fn) if any(o["tp"] for o in outcomes) else (tp, fn + 1)
        elif any(o["fp"] for o in outcomes):
            fp += 1
        else:
            tn += 1
    n = tp + fp + fn + tn
    prec = tp / (tp + fp) if tp + fp else 0.0
    sens = tp / (tp + fn) if tp + fn else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "accuracy": (tp + tn) / n if n else 0.0, "precision": prec,
            "sensitivity": sens, "specificity": tn / (tn + fp) if tn + fp else 0.0,
            "f1": 2 * prec * sens / (prec + sens) if prec + sens else 0.0}


def evaluate(views: list[ViewImage], ssd, mrcnn, config: BoneMaligNetConfig, model_name: str, log_dir: Path):
    """Predict every validation view; per-image rows, pooled metrics and overlay tiles."""
    import tensorflow as tf

    from tfmedseg.metrics.instances import (
        compute_box_jaccard,
        compute_instance_metrics,
        compute_metastasis_detection,
    )
    from tfmedseg.reports import OverlayItem

    ssd_fn = tf.function(lambda x: ssd(x, training=False), reduce_retracing=True)
    mrcnn_fn = tf.function(lambda x: mrcnn(x, training=False), reduce_retracing=True)
    first = views[0]
    predict_view(first, ssd_fn, mrcnn_fn, config)  # trace once, outside the timing
    kw = dict(iou_threshold=config.iou_threshold, score_threshold=config.score_threshold, use=config.iou_type)
    rows, preds_all, refs_all, pred_boxes, ref_boxes, outcomes, overlays, tb_images = [], [], [], [], [], [], [], []
    seconds = 0.0
    for v in views:
        result = predict_view(v, ssd_fn, mrcnn_fn, config)
        seconds += result["seconds"]
        preds, refs = result["lesions"], v.lesions
        preds_all.append(preds)
        refs_all.append(refs)
        pred_boxes.append(result["chest_box"])
        ref_boxes.append(v.chest_box)
        jac = compute_box_jaccard([result["chest_box"]], [v.chest_box])["mean"]
        one = compute_instance_metrics([preds], [refs], **kw)
        met = compute_metastasis_detection([preds], [refs], **kw)
        outcomes.append((v.case_id, met))
        loc = one["localization"]
        rows.append({
            "model": model_name, "case": v.case_id, "view": v.view, "chest_jaccard": jac,
            "chest_score": result["chest_score"], "lesions_ref": len(refs),
            "lesions_pred": sum(p["score"] >= config.score_threshold for p in preds),
            "tp": loc["tp"], "fp": loc["fp"], "fn": loc["fn"],
            **{f"ref_{c}": one["support"][c] for c in LESION_CLASSES},
            **{f"tp_{c}": one["per_class"][c]["tp"] for c in LESION_CLASSES},
            "metastasis_ref": int(bool(met["tp"] or met["fn"])),
            "metastasis_pred": int(any(p["class_name"] == "malignant" and p["score"] >= config.score_threshold for p in preds)),
            "metastasis_outcome": next(k for k in ("tp", "fp", "fn", "tn") if met[k]),
            "seconds": result["seconds"],
        })
        if len(overlays) < config.overlay_images:
            ref_mask = np.any([r.mask for r in refs], axis=0) if refs else None
            pred_mask = np.any([p["mask"] for p in preds], axis=0) if preds else None
            overlays.append(OverlayItem(f"{v.case_id} {v.view[:3]}", v.image, ref_mask, pred_mask))
            boxes = [(v.chest_box, (0, 255, 0))] + [(r.box, (0, 255, 0)) for r in refs]
            if result["chest_box"] is not None:
                boxes.append((result["chest_box"], (255, 255, 0)))
            boxes += [(p["box"], (255, 0, 0)) for p in preds]
            tb_images.append(_draw_boxes(v.image, boxes))
    if tb_images:
        writer = tf.summary.create_file_writer(str(log_dir / "predictions"))
        with writer.as_default():
            tf.summary.image("validation: reference green, predicted chest yellow, lesions red",
                             np.stack(tb_images), step=0, max_outputs=len(tb_images))
        writer.flush()
    metrics = {
        "instances": compute_instance_metrics(preds_all, refs_all, **kw),
        "instances_box": compute_instance_metrics(preds_all, refs_all, **{**kw, "use": "box"}),
        "metastasis_image": compute_metastasis_detection(preds_all, refs_all, **kw),
        "metastasis_patient": _patient_metastasis(outcomes),
        "chest_jaccard": compute_box_jaccard(pred_boxes, ref_boxes),
        "inference_seconds_per_image": seconds / len(views),
    }
    return rows, metrics, overlays


# ----------------------------------------------------------------------------- reporting
def report_layout():
    """Per-image summary columns (the seed's chest-detector Jaccard and lesion counts)."""
    from tfmedseg.reports import Column

    return (
        Column("Model", "model", "first", "{}"),
        Column("Chest Jaccard min", "chest_jaccard", "min"),
        Column("Chest Jaccard mean", "chest_jaccard", "mean"),
        Column("Chest Jaccard max", "chest_jaccard", "max"),
        Column("Ref lesions", "lesions_ref", "sum", "{:.0f}"),
        Column("Pred lesions", "lesions_pred", "sum", "{:.0f}"),
        Column("TP", "tp", "sum", "{:.0f}"),
        Column("Seconds/image", "seconds", "mean", "{:.3f}"),
    )


def format_seed_tables(metrics: dict, timings: dict, model_name: str, config: BoneMaligNetConfig) -> str:
    """Markdown Tables 4, 5, 6 and 7 (seed layouts), the confusion matrix and timing."""
    f = lambda v: f"{v:.3f}"  # noqa: E731
    inst, box = metrics["instances"], metrics["instances_box"]
    w, wb = inst["weighted"], box["weighted"]
    iou = f"{config.iou_type} IoU >= {config.iou_threshold}, score >= {config.score_threshold}"
    lines = [f"### Table 4-style lesion instance scores ({iou}; class-weighted means)", "",
             "| Approach | Mean P | Mean S | Mean F1 |", "|---|---|---|---|",
             f"| {model_name} | {f(w['precision'])} | {f(w['sensitivity'])} | {f(w['f1'])} |",
             f"| {model_name} (box IoU) | {f(wb['precision'])} | {f(wb['sensitivity'])} | {f(wb['f1'])} |", "",
             "### Table 5-style class-agnostic localisation", "", "| Model | Precision | Sensitivity | F1 |",
             "|---|---|---|---|"]
    loc = inst["localization"]
    lines += [f"| {model_name} | {f(loc['precision'])} | {f(loc['sensitivity'])} | {f(loc['f1'])} |", "",
              "### Table 6-style per-class scores (Acc and Spec: classification among localised lesions)", "",
              "| Class | Model | Acc | Prec | Sens | Spec | F1 | support |", "|---|---|---|---|---|---|---|---|"]
    conf = np.asarray(inst["confusion"])
    total = conf.sum()
    for k, c in enumerate(LESION_CLASSES):
        pc = inst["per_class"][c]
        tp = conf[k, k]
        fp, fn = conf[:, k].sum() - tp, conf[k, :].sum() - tp
        tn = total - tp - fp - fn
        acc = (tp + tn) / total if total else math.nan
        spec = tn / (tn + fp) if tn + fp else math.nan
        lines.append(f"| {c} | {model_name} | {f(acc)} | {f(pc['precision'])} | {f(pc['sensitivity'])} | {f(spec)} | "
                     f"{f(pc['f1'])} | {inst['support'][c]} |")
    lines += ["", "Confusion among localised lesions (rows reference, columns prediction: "
              + ", ".join(LESION_CLASSES) + "):", "", "```"]
    lines += [" ".join(f"{v:5d}" for v in row) for row in conf.tolist()] + ["```", "",
              "### Table 7-style metastasis detection", "",
              "| Unit | Model | Acc | Prec | Recall | Spec | F1 | TP/FP/FN/TN |", "|---|---|---|---|---|---|---|---|"]
    for unit, key in (("image (view)", "metastasis_image"), ("patient", "metastasis_patient")):
        m = metrics[key]
        lines.append(f"| {unit} | {model_name} | {f(m['accuracy'])} | {f(m['precision'])} | {f(m['sensitivity'])} | "
                     f"{f(m['specificity'])} | {f(m['f1'])} | {m['tp']}/{m['fp']}/{m['fn']}/{m['tn']} |")
    j = metrics["chest_jaccard"]
    lines += ["", "### Chest detector box Jaccard (seed: min 0.804 / mean 0.933 / max 0.987)", "",
              f"min {f(j['min'])} / mean {f(j['mean'])} / max {f(j['max'])} over {len(j['ious'])} views", "",
              "### Time (this machine)", "", "| stage | training s | epochs | steps | final loss |", "|---|---|---|---|---|"]
    for name, t in timings.items():
        lines.append(f"| {name} | {t['train_seconds']:.1f} | {t['epochs']:.0f} | {t['steps']:.0f} | {t['final_loss']:.4f} |")
    lines += ["", f"Inference (SSD + crop + Mask R-CNN + mapping back): "
              f"{metrics['inference_seconds_per_image']:.3f} s per image (view)"]
    return "\n".join(lines) + "\n"


def flat_summary(metrics: dict, timings: dict) -> dict[str, float]:
    """The headline numbers as a flat dict (also written to ``summary.json``)."""
    inst = metrics["instances"]
    out = {
        "chest_jaccard_min": metrics["chest_jaccard"]["min"],
        "chest_jaccard_mean": metrics["chest_jaccard"]["mean"],
        "chest_jaccard_max": metrics["chest_jaccard"]["max"],
        "lesion_precision": inst["weighted"]["precision"],
        "lesion_sensitivity": inst["weighted"]["sensitivity"],
        "lesion_f1": inst["weighted"]["f1"],
        "lesion_f1_box_iou": metrics["instances_box"]["weighted"]["f1"],
        "localization_f1": inst["localization"]["f1"],
        "metastasis_sensitivity": metrics["metastasis_image"]["sensitivity"],
        "metastasis_specificity": metrics["metastasis_image"]["specificity"],
        "patient_metastasis_sensitivity": metrics["metastasis_patient"]["sensitivity"],
        "patient_metastasis_specificity": metrics["metastasis_patient"]["specificity"],
        "inference_seconds_per_image": metrics["inference_seconds_per_image"],
    }
    for c in LESION_CLASSES:
        for k in ("precision", "sensitivity", "f1"):
            out[f"{c}_{k}"] = inst["per_class"][c][k]
    for name, t in timings.items():
        out[f"{name}_train_seconds"] = t["train_seconds"]
    return out


# ----------------------------------------------------------------------------- entry point
def run(ctx) -> dict[str, Any]:
    """Run the experiment for a parsed :class:`~tfmedseg.experiments.cli.ExperimentContext`.

    Returns:
        The headline figures (:func:`flat_summary`).
    """
    from tfmedseg.config import config_hash
    from tfmedseg.datasets import load_dataset
    from tfmedseg.export.savedmodel import next_version
    from tfmedseg.models.detection.export import export_detector
    from tfmedseg.models.detection.ssd import build_ssd
    from tfmedseg.reports import write_report

    config: BoneMaligNetConfig = ctx.config
    out = ctx.output_dir
    cases = load_dataset(config.dataset, ctx.data_dir)
    if config.max_cases:
        cases = cases[: config.max_cases]
    train_cases, val_cases, unlabeled = split_patients(cases, config.validation_fraction, ctx.seed)
    train_views, val_views = collect_views(train_cases, config), collect_views(val_cases, config)
    print(f"{len(cases)} patients from {ctx.data_dir}: {len(train_cases)} train, {len(val_cases)} validation, "
          f"{len(unlabeled)} unlabeled; {len(train_views)} + {len(val_views)} views")

    timings: dict[str, dict[str, float]] = {}
    # stage 1: chest detector on whole-body views
    s = config.ssd.image_size
    x_tr, b_tr = _ssd_arrays(train_views, s)
    x_va, b_va = _ssd_arrays(val_views, s)
    sb = min(config.ssd_stage.batch_size, len(x_tr))
    ssd_train = _ssd_dataset(x_tr, b_tr, sb, ctx.seed, _augmenter(config.ssd_stage, s, ctx.seed))
    ssd_val = _ssd_dataset(x_va, b_va, min(sb, len(x_va)), ctx.seed + 1)
    ssd, timings["ssd"] = _train("ssd", config.ssd_stage, lambda: build_ssd(config.ssd), ssd_train, ssd_val,
                                 max(1, len(x_tr) // sb), max(1, len(x_va) // min(sb, len(x_va))), out, ctx.seed)

    # stage 2: lesion instances on chest crops (reference or SSD boxes; unlabeled views: SSD boxes)
    from tfmedseg.inference.bone_scan import predicted_chest_boxes

    unl_views = collect_views(unlabeled, config) if config.unlabeled_per_batch else []
    boxes = [None] * len(train_views)
    if config.lesion_crop_boxes == "predicted" or unl_views:
        boxes = predicted_chest_boxes(ssd, [v.image for v in train_views + unl_views], s)
    unl_samples = [crop_sample(v, config.crop_size, b)[0] for v, b in zip(unl_views, boxes[len(train_views):]) if b]
    if unl_views:
        print(f"unlabeled: {len(unl_samples)} of {len(unl_views)} views with a predicted chest box, "
              f"{config.unlabeled_per_batch} per batch of {config.lesion_stage.batch_size}")
    train_samples = [crop_sample(v, config.crop_size, b if config.lesion_crop_boxes == "predicted" else None)[0]
                     for v, b in zip(train_views, boxes)]
    val_samples = [crop_sample(v, config.crop_size)[0] for v in val_views]
    lb = min(config.lesion_stage.batch_size, len(train_samples))
    vb = min(lb, len(val_samples))
    les_train = _lesion_dataset(train_samples, lb, config, ctx.seed,
                                _augmenter(config.lesion_stage, config.crop_size, ctx.seed + 10), unlabeled=unl_samples)
    les_val = _lesion_dataset(val_samples, vb, config, ctx.seed + 1)
    mrcnn, timings["mask_rcnn"] = _train("mask_rcnn", config.lesion_stage, lambda: build_lesion_model(config), les_train,
                                         les_val, max(1, len(train_samples) // lb), max(1, len(val_samples) // vb), out,
                                         ctx.seed + 1)

    model_name = (f"SSD{config.ssd.image_size} + {'MaligNet' if config.lesion_model == 'malignet' else 'Mask R-CNN'} "
                  f"{config.crop_size} "
                  f"(ResNet {'-'.join(map(str, config.mask_rcnn.stage_blocks))} x{config.mask_rcnn.stem_filters})")
    rows, metrics, overlays = evaluate(val_views, ssd, mrcnn, config, model_name, out / "logs")
    paths = write_report(out, rows, layout=report_layout(), group_by="model", overlays=overlays,
                         title=f"Seed 001 chest detection and lesion instances, {len(rows)} validation view(s)")
    with open(paths["summary"], "a") as fh:
        fh.write("\n" + format_seed_tables(metrics, timings, model_name, config))
    print("\n" + paths["summary"].read_text())
    summary = flat_summary(metrics, timings)
    (out / "summary.json").write_text(json.dumps({"summary": summary, "timings": timings,
                                                  "confusion": np.asarray(metrics["instances"]["confusion"]).tolist(),
                                                  "config_hash": config_hash(config)}, indent=2, default=str))
    for name, model in (("bone_malignet_ssd", ssd), ("bone_malignet_maskrcnn", mrcnn)):
        root = Path(config.export_dir) / name
        path = export_detector(model, root / str(next_version(root)))
        print(f"exported {name} to {path} (endpoint serve)")
    from tfmedseg.export.whole_body import export_whole_body_savedmodel
    from tfmedseg.models.detection.two_stage import WholeBodyLesionModel

    whole = WholeBodyLesionModel(ssd, mrcnn, val_views[0].image.shape, config.intensity_percentile, config.crop_margin,
                                 name="bone_malignet")
    root = Path(config.export_dir) / "bone_malignet"
    path = export_whole_body_savedmodel(whole, root / str(next_version(root)), class_names=LESION_CLASSES,
                                        metadata={"config_hash": config_hash(config), "lesion_f1": summary["lesion_f1"]})
    print(f"exported the whole-body model to {path} (serving_default: views [B, H, W] counts -> lesion instances)")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    from tfmedseg.experiments.cli import experiment_main

    return experiment_main(
        argv,
        run,
        prog="tfmedseg.experiments.bone_malignet",
        description="Seed 001: SSD chest detector, chest crop, Mask R-CNN lesion instances on bone scans.",
        config_cls=BoneMaligNetConfig,
        default_config="bone_malignet_quick.yaml",
        phantom_dataset="bone_scan",
        default_phantom_cases=36,
    )


if __name__ == "__main__":
    sys.exit(main())
