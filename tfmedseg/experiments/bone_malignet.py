"""Seed 001: SSD chest detector -> chest crop -> Mask R-CNN / MaligNet lesion instances.

``python -m tfmedseg.experiments.bone_malignet [--config quick|paper|FILE] [--data-dir DIR]``

Wiring on :mod:`tfmedseg.experiments.runner`: seeded patient split (unlabeled apart) -> views as images
(:mod:`tfmedseg.data.views`) -> SSD "chest" detector on whole views -> Mask R-CNN or MaligNet
(``lesion_model``; ladder FPN with unlabeled views at SSD boxes, global features) on chest crops ->
validation through :func:`tfmedseg.inference.detection.predict_crop_cascade` -> Tables 4-7, chest
Jaccard, time (:mod:`tfmedseg.metrics.instances`, :mod:`tfmedseg.reports.instances`) -> both detectors
(``bone_malignet_ssd``, ``bone_malignet_maskrcnn``) and the whole-body model (``bone_malignet``)
exported under ``export_dir``.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

import tfmedseg  # noqa: F401  (oneDNN on before TensorFlow loads)
from tfmedseg.config import check_range
from tfmedseg.data.views import collect_views as _collect_views  # noqa: I001
from tfmedseg.data.views import crop_sample, split_patients
from tfmedseg.datasets.case import LESION_CLASSES
from tfmedseg.errors import ConfigError
from tfmedseg.experiments import runner
from tfmedseg.experiments.cli import make_main
from tfmedseg.metrics.instances import MatchRule
from tfmedseg.models.detection.config import MaligNetConfig, MaskRCNNConfig, SSDConfig
from tfmedseg.training.config import TrainConfig

__all__ = ["StageConfig", "BoneMaligNetConfig", "collect_views", "build_lesion_model", "run", "main"]

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
class StageConfig(runner.DetectionStage):
    """One stage's training (:class:`~tfmedseg.training.stages.DetectionStage`, Tables 10/11: batch 16,
    ``seed001_affine_bc``, 16 px translation scaled by ``input size / 320``; the SSD stage turns rotation
    off: the box around a rotated chest box is taller than the chest, biasing the detector outwards)."""

    augmentation: str | None = "seed001_affine_bc"
    augmentation_overrides: dict = dataclasses.field(default_factory=lambda: {"RandomGeometric": {"rotation": 0.0}})
    train: TrainConfig = dataclasses.field(default_factory=_ssd_train)


@dataclasses.dataclass
class BoneMaligNetConfig:
    """Seed 001 experiment settings (defaults: the paper's, for real data).

    ``validation_fraction`` of the labeled patients (seeded) is held out; ``max_cases`` > 0 keeps that
    many patients. Each view's counts are clipped at ``intensity_percentile``. The chest crop fed to
    Mask R-CNN is ``crop_size`` (seed 320; equal to ``mask_rcnn.image_size``) around the detected box
    plus ``crop_margin``; a lesion belongs to the chest image when ``min_inside_fraction`` of its mask is
    inside the chest box. Evaluation: ``score_threshold`` (seed 0.7), ``iou_threshold`` (0.5) on
    ``iou_type`` ``mask`` (seed) or ``box``. ``unlabeled_per_batch`` unlabeled views (cropped at the SSD's
    boxes) join each lesion batch, which needs the ladder FPN's unsupervised loss (``lesion_model:
    malignet`` with ``malignet.ladder_fpn``; ``malignet``: :class:`~tfmedseg.models.detection.malignet.
    MaligNetConfig`, its switches give Table 4's rows; ``mask_rcnn`` is the baseline). The lesion
    stage trains on crops at the ``reference`` or ``predicted`` (SSD, seed section 6.2) chest boxes
    (``lesion_crop_boxes``). ``ssd`` / ``mask_rcnn``: Tables 10 / 11 model configs; ``ssd_stage`` /
    ``lesion_stage``: their training;
    ``overlay_images`` views are drawn; SavedModels go under ``export_dir``.
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

    def match_rule(self):
        """The evaluation's :class:`~tfmedseg.metrics.instances.MatchRule`."""
        return MatchRule(self.iou_threshold, self.score_threshold, self.iou_type)

    def __post_init__(self) -> None:
        checks = [
            (self.crop_size != self.mask_rcnn.image_size, "crop_size",
             f"must equal mask_rcnn.image_size ({self.mask_rcnn.image_size}), got {self.crop_size}"),
            (self.mask_rcnn.num_classes != len(LESION_CLASSES), "mask_rcnn.num_classes",
             f"must be {len(LESION_CLASSES)} (the lesion classes {LESION_CLASSES}), got {self.mask_rcnn.num_classes}"),
            (self.ssd.num_classes != 1, "ssd.num_classes", f"the chest detector has one class, got {self.ssd.num_classes}"),
            (self.iou_type not in ("mask", "box"), "iou_type", f"unknown iou_type {self.iou_type!r}; allowed: ('mask', 'box')"),
            (self.lesion_model not in LESION_MODELS, "lesion_model",
             f"unknown lesion_model {self.lesion_model!r}; allowed: {LESION_MODELS}"),
            (self.unlabeled_per_batch != 0 and not (self.lesion_model == "malignet" and self.malignet.ladder_fpn),
             "unlabeled_per_batch", "unlabeled views only train through the ladder FPN's denoising cost: set "
             "lesion_model: malignet (with malignet.ladder_fpn) or keep 0"),
            (self.lesion_crop_boxes not in CROP_BOXES, "lesion_crop_boxes",
             f"unknown {self.lesion_crop_boxes!r}; allowed: {CROP_BOXES}"),
            (not 0.0 < self.validation_fraction < 1.0, "validation_fraction", f"must be in (0, 1), got {self.validation_fraction}"),
            (not 0.0 < self.intensity_percentile <= 100.0, "intensity_percentile",
             f"must be in (0, 100], got {self.intensity_percentile}"),
        ]
        for failed, path, reason in checks:
            if failed:
                raise ConfigError(reason, path=path)
        check_range(self.max_cases, "max_cases", 0, None, integer=True), check_range(self.crop_margin, "crop_margin", 0.0, 1.0)


# ----------------------------------------------------------------------------- stages
def collect_views(cases: list, config: BoneMaligNetConfig):
    """Both views of every case (:func:`tfmedseg.data.views.collect_views` with this config's settings)."""
    return _collect_views(cases, percentile=config.intensity_percentile, min_inside_fraction=config.min_inside_fraction)


def build_lesion_model(config: BoneMaligNetConfig):
    """The stage-2 model: Mask R-CNN, or MaligNet / a Table 4 ablation (``config.malignet`` switches)."""
    from tfmedseg.models.detection.malignet import build_malignet
    from tfmedseg.models.detection.mask_rcnn import MaskRCNN, build_mask_rcnn_parts

    if config.lesion_model == "malignet":
        return build_malignet(config.mask_rcnn, config.malignet)
    return MaskRCNN(**build_mask_rcnn_parts(config.mask_rcnn), config=config.mask_rcnn, name="mask_rcnn")


def _train(name, stage: StageConfig, build, train_ds, val_ds, steps: int, val_steps: int, out, seed: int):
    return runner.train_stage(name, stage.train, build, train_ds, val_ds, output_dir=out, seed=seed, image_every_epochs=0,
                              steps_per_epoch=stage.steps_per_epoch or steps, validation_steps=val_steps)


# ----------------------------------------------------------------------------- evaluation
def view_evaluator(ssd, mrcnn, config: BoneMaligNetConfig, model_name: str):
    """``view -> CaseOutcome``: the detection cascade on one view, its per-view row, overlay and box drawing."""
    from tfmedseg.inference.detection import crop_cascade_predictor
    from tfmedseg.metrics.instances import compute_image_scores
    from tfmedseg.reports.instances import instance_drawings

    predict = crop_cascade_predictor(ssd, mrcnn, detector_size=config.ssd.image_size, crop_size=config.crop_size,
                                     crop_margin=config.crop_margin, class_names=LESION_CLASSES)

    def evaluate_one(v) -> runner.CaseOutcome:
        result = predict(v.image)
        scores = compute_image_scores(result["lesions"], v.lesions, result["chest_box"], v.chest_box,
                                      classes=LESION_CLASSES, rule=config.match_rule())
        row = {"model": model_name, "case": v.case_id, "view": v.view, "chest_jaccard": scores.pop("chest_jaccard"),
               "chest_score": result["chest_score"], **scores, "seconds": result["seconds"]}
        overlay, drawing = instance_drawings(f"{v.case_id} {v.view[:3]}", v.image, v.lesions, result["lesions"],
                                             v.chest_box, result["chest_box"])
        return runner.CaseOutcome(row, overlay, result["seconds"], 1, (result, drawing))

    evaluate_one.warm_up = predict  # trace once (image), outside the timing
    return evaluate_one


# ----------------------------------------------------------------------------- entry point
def run(ctx) -> dict[str, float]:
    """Run the experiment (:class:`~tfmedseg.experiments.cli.ExperimentContext`); returns the headline
    figures (:func:`tfmedseg.reports.instances.instance_summary`)."""
    from tfmedseg.config import config_hash
    from tfmedseg.data.views import detector_datasets, instance_datasets, training_crops
    from tfmedseg.export.savedmodel import export_detector
    from tfmedseg.export.whole_body import export_whole_body_savedmodel
    from tfmedseg.inference.bone_scan import predicted_chest_boxes
    from tfmedseg.models.detection.ssd import build_ssd
    from tfmedseg.models.detection.two_stage import WholeBodyLesionModel
    from tfmedseg.reports.instances import write_instance_report

    config: BoneMaligNetConfig = ctx.config
    out = ctx.output_dir
    cases = runner.load_cases(config.dataset, ctx.data_dir, config.max_cases)
    train_cases, val_cases, unlabeled = split_patients(cases, config.validation_fraction, ctx.seed)
    train_views, val_views = collect_views(train_cases, config), collect_views(val_cases, config)
    runner.logger.info("%d patients from %s: %d train, %d validation, %d unlabeled; %d + %d views", len(cases), ctx.data_dir,
                       len(train_cases), len(val_cases), len(unlabeled), len(train_views), len(val_views))

    # stage 1: chest detector on whole-body views
    s, mcfg = config.ssd.image_size, config.mask_rcnn
    *data, steps, val_steps = detector_datasets(train_views, val_views, s, config.ssd_stage.batch_size, ctx.seed,
                                                config.ssd_stage.augmenter(ctx.seed, input_size=s))
    ssd = _train("ssd", config.ssd_stage, lambda: build_ssd(config.ssd), *data, steps, val_steps, out, ctx.seed)
    # stage 2: lesion instances on chest crops (reference or SSD boxes; unlabeled views: SSD boxes)
    unl_views = collect_views(unlabeled, config) if config.unlabeled_per_batch else []
    predicted = config.lesion_crop_boxes == "predicted"
    boxes = predicted_chest_boxes(ssd.model, [v.image for v in train_views + unl_views], s) if predicted or unl_views else None
    train_samples, unl_samples = training_crops(train_views, unl_views, config.crop_size, LESION_CLASSES, boxes, predicted)
    if unl_views:
        runner.logger.info("unlabeled: %d of %d views with a predicted chest box, %d per batch of %d", len(unl_samples),
                           len(unl_views), config.unlabeled_per_batch, config.lesion_stage.batch_size)
    val_samples = [crop_sample(v, config.crop_size, LESION_CLASSES)[0] for v in val_views]
    *data, steps, val_steps = instance_datasets(
        train_samples, val_samples, config.lesion_stage.batch_size, ctx.seed,
        config.lesion_stage.augmenter(ctx.seed + 10, input_size=config.crop_size), unl_samples,
        config.unlabeled_per_batch, max_instances=mcfg.max_gt_instances, mini_mask_size=mcfg.mini_mask_size)
    mrcnn = _train("mask_rcnn", config.lesion_stage, lambda: build_lesion_model(config), *data, steps, val_steps, out,
                   ctx.seed + 1)
    timings = {"ssd": ssd.timing, "mask_rcnn": mrcnn.timing}

    model_name = (f"SSD{s} + {'MaligNet' if config.lesion_model == 'malignet' else 'Mask R-CNN'} {config.crop_size} "
                  f"(ResNet {'-'.join(map(str, mcfg.stage_blocks))} x{mcfg.stem_filters})")
    evaluate_one = view_evaluator(ssd.model, mrcnn.model, config, model_name)
    evaluate_one.warm_up(val_views[0].image)
    evaluation = runner.evaluate_cases(val_views, evaluate_one, max_overlays=config.overlay_images, what="view")
    summary, metrics, paths = write_instance_report(
        out, evaluation, val_views, timings, model_name, class_names=LESION_CLASSES, rule=config.match_rule(),
        overlay_images=config.overlay_images,
        title=f"Seed 001 chest detection and lesion instances, {len(evaluation.rows)} validation view(s)")
    print("\n" + paths["summary"].read_text())
    runner.write_summary_json(out, summary, timings=timings, confusion=np.asarray(metrics["instances"]["confusion"]).tolist(),
                              config_hash=config_hash(config))
    whole = WholeBodyLesionModel(ssd.model, mrcnn.model, val_views[0].image.shape, config.intensity_percentile, config.crop_margin, name="bone_malignet")
    for name, models, write in (
            ("bone_malignet_ssd", [ssd.model], lambda p: export_detector(ssd.model, p, model_name="bone_malignet_ssd")),
            ("bone_malignet_maskrcnn", [mrcnn.model], lambda p: export_detector(mrcnn.model, p, model_name="bone_malignet_maskrcnn")),
            ("bone_malignet", [ssd.model, mrcnn.model], lambda p: export_whole_body_savedmodel(whole, p, class_names=LESION_CLASSES, metadata={"config_hash": config_hash(config), "lesion_f1": summary["lesion_f1"]}))):  # no identical re-export
        if (path := runner.export_once(config.export_dir, name, models, write)) is not None:
            ctx.exported(path, name)
    return summary

main = make_main(
    run, prog="tfmedseg.experiments.bone_malignet",
    description="Seed 001: SSD chest detector, chest crop, Mask R-CNN lesion instances on bone scans.",
    config_cls=BoneMaligNetConfig, default_config="bone_malignet_quick.yaml",
    phantom_dataset="bone_scan", default_phantom_cases=36)


if __name__ == "__main__":
    sys.exit(main())
