"""Seed 001: SSD chest detector -> chest crop -> Mask R-CNN / MaligNet lesion instances.

``python -m tfmedseg.experiments.bone_malignet [--config quick|paper|FILE] [--data-dir DIR]``

Wiring on :mod:`tfmedseg.experiments.runner`: patient split (unlabeled apart) -> views -> SSD chest
detector -> chest crops -> Mask R-CNN / MaligNet, or every Table 4 row (ladder FPN, global features,
unlabeled views, self-training rounds), validation F1 per epoch in TensorBoard -> the cascade on the
validation views, all rows timed on the same views -> Tables 4-8 (:mod:`tfmedseg.reports.instances`) ->
SSD, lesion model and whole-body model exported under ``export_dir``.
"""

from __future__ import annotations

import dataclasses
import sys

import tfmedseg  # noqa: F401  (oneDNN on before TensorFlow loads)
from tfmedseg.config import check_range
from tfmedseg.data.views import collect_views as _collect_views, crop_sample, split_patients  # noqa: I001
from tfmedseg.datasets.case import LESION_CLASSES
from tfmedseg.errors import ConfigError
from tfmedseg.experiments import runner
from tfmedseg.experiments.cli import make_main
from tfmedseg.metrics.instances import MatchRule
from tfmedseg.models.detection.config import TABLE4_ROWS, MaligNetConfig, MaskRCNNConfig, SSDConfig, primary_row, resolve_rows
from tfmedseg.training.config import TrainConfig
from tfmedseg.training.self_training import SelfTrainingConfig

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
    """Seed 001 experiment settings (defaults: the paper's, for real data; docs/experiments.md).

    Data: ``validation_fraction`` of the labeled patients held out (seeded), ``max_cases`` > 0 keeps that
    many, counts clipped at ``intensity_percentile``. Crops: ``crop_size`` (= ``mask_rcnn.image_size``)
    around the ``lesion_crop_boxes`` chest box (``reference`` or SSD-``predicted``, seed §6.2) plus
    ``crop_margin``; a lesion is a chest lesion when ``min_inside_fraction`` of its mask is inside.
    Scores: ``score_threshold`` (0.7), ``iou_threshold`` (0.5) on ``iou_type`` ``mask``/``box``. Models:
    ``lesion_model`` (``mask_rcnn`` or ``malignet`` with the ``malignet`` switches), or every Table 4 row
    of ``table4_rows`` (:data:`~tfmedseg.models.detection.malignet.TABLE4_ROWS`; ``self_training``: the
    previous row teaches, ``self_training`` rounds); ``unlabeled_per_batch`` unlabeled views per lesion
    batch (ladder FPN only); ``primary_row`` (default: the last before self-training) is exported and
    compared with ``mask_rcnn``; inference timed in ``timing_repeats`` rounds; ``overlay_images`` drawn.
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
    table4_rows: list = dataclasses.field(default_factory=list)
    primary_row: str | None = None
    self_training: SelfTrainingConfig = dataclasses.field(default_factory=SelfTrainingConfig)
    timing_repeats: int = 5

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
            (self.lesion_crop_boxes not in CROP_BOXES, "lesion_crop_boxes",
             f"unknown {self.lesion_crop_boxes!r}; allowed: {CROP_BOXES}"),
            (not 0.0 < self.validation_fraction < 1.0, "validation_fraction", f"must be in (0, 1), got {self.validation_fraction}"),
            (not 0.0 < self.intensity_percentile <= 100.0, "intensity_percentile",
             f"must be in (0, 100], got {self.intensity_percentile}"),
        ]
        for failed, path, reason in checks:
            if failed:
                raise ConfigError(reason, path=path)
        primary_row(self.rows(), self.primary_row)  # unknown / teacher-less rows, unlabeled views without LFPN
        check_range(self.max_cases, "max_cases", 0, None, integer=True), check_range(self.crop_margin, "crop_margin", 0.0, 1.0)
        check_range(self.timing_repeats, "timing_repeats", 1, None, integer=True)

    def rows(self) -> list[tuple[str, MaligNetConfig | None, int]]:
        """The lesion models to train (:func:`~tfmedseg.models.detection.malignet.resolve_rows`)."""
        return resolve_rows(self.table4_rows, self.lesion_model, self.malignet, self.unlabeled_per_batch)


def collect_views(cases: list, config: BoneMaligNetConfig):
    """Both views of every case (:func:`tfmedseg.data.views.collect_views` with this config's settings)."""
    return _collect_views(cases, percentile=config.intensity_percentile, min_inside_fraction=config.min_inside_fraction)


def build_lesion_model(config: BoneMaligNetConfig, variant: MaligNetConfig | None | str = "config"):
    """The stage-2 model: Mask R-CNN (``variant`` None), or MaligNet / a Table 4 ablation (``variant``;
    default: ``lesion_model`` with the ``config.malignet`` switches)."""
    from tfmedseg.models.detection.malignet import build_malignet
    from tfmedseg.models.detection.mask_rcnn import MaskRCNN, build_mask_rcnn_parts

    if isinstance(variant, str):
        variant = config.malignet if config.lesion_model == "malignet" else None
    if variant is not None:
        return build_malignet(config.mask_rcnn, variant)
    return MaskRCNN(**build_mask_rcnn_parts(config.mask_rcnn), config=config.mask_rcnn, name="mask_rcnn")


def _train(name, stage: StageConfig, build, train_ds, val_ds, steps: int, val_steps: int, out, seed: int, **kw):
    return runner.train_stage(name, stage.train, build, train_ds, val_ds, output_dir=out, seed=seed, image_every_epochs=0,
                              steps_per_epoch=stage.steps_per_epoch or steps, validation_steps=val_steps, **kw)


def run(ctx) -> dict[str, float]:
    """Run the experiment (:class:`~tfmedseg.experiments.cli.ExperimentContext`); returns the headline
    figures (:func:`tfmedseg.reports.instances.write_rows_report`)."""
    from tfmedseg.config import config_hash
    from tfmedseg.data.views import detector_datasets, instance_datasets, training_crops
    from tfmedseg.export.whole_body import seed001_exports
    from tfmedseg.inference import detection as det
    from tfmedseg.inference.bone_scan import predicted_chest_boxes
    from tfmedseg.models.detection.ssd import build_ssd
    from tfmedseg.reports.instances import RowOutcome, read_history, view_evaluator, write_rows_report
    from tfmedseg.training import self_training as st

    config: BoneMaligNetConfig = ctx.config
    out, rows, mcfg, s = ctx.output_dir, config.rows(), config.mask_rcnn, config.ssd.image_size
    cases = runner.load_cases(config.dataset, ctx.data_dir, config.max_cases)
    train_cases, val_cases, unlabeled = split_patients(cases, config.validation_fraction, ctx.seed)
    train_views, val_views = collect_views(train_cases, config), collect_views(val_cases, config)
    runner.logger.info("%d patients: %d train, %d validation, %d unlabeled; %d + %d views; lesion rows: %s", len(cases),
                       len(train_cases), len(val_cases), len(unlabeled), len(train_views), len(val_views), [r[0] for r in rows])

    # stage 1: chest detector on whole-body views (validation chest Jaccard per epoch in TensorBoard)
    *data, steps, val_steps = detector_datasets(train_views, val_views, s, config.ssd_stage.batch_size, ctx.seed,
                                                config.ssd_stage.augmenter(ctx.seed, input_size=s))
    ssd = _train("ssd", config.ssd_stage, lambda: build_ssd(config.ssd), *data, steps, val_steps, out, ctx.seed,
                 epoch_metrics=det.chest_epoch_metrics(val_views, s))
    # stage 2: lesion instances on chest crops (reference or SSD boxes; unlabeled views: SSD boxes)
    unl_views = collect_views(unlabeled, config) if any(u for _, _, u in rows) else []
    predicted = config.lesion_crop_boxes == "predicted"
    boxes = predicted_chest_boxes(ssd.model, [v.image for v in train_views + unl_views], s) if predicted or unl_views else None
    train_samples, unl_samples = training_crops(train_views, unl_views, config.crop_size, LESION_CLASSES, boxes, predicted)
    val_samples = [crop_sample(v, config.crop_size, LESION_CLASSES)[0] for v in val_views]
    epoch_f1 = det.instance_epoch_metrics(val_samples, LESION_CLASSES, config.match_rule())
    trained, self_report = {}, None
    cascade = dict(detector_size=s, crop_size=config.crop_size, crop_margin=config.crop_margin, class_names=LESION_CLASSES)

    def train_row(name, variant, u, labeled, seed, stage=None, **kw):  # -> trained[name] = (stage dir, StageResult)
        runner.logger.info("row %s: %d labeled crops, %d unlabeled (of %d unlabeled views) at %d per batch of %d", name,
                           len(labeled), len(unl_samples) if u else 0, len(unl_views), u, config.lesion_stage.batch_size)
        *data, _, val_steps = instance_datasets(  # unlabeled views join the batch: labeled views per step as without
            labeled, val_samples, config.lesion_stage.batch_size + u, ctx.seed,
            config.lesion_stage.augmenter(ctx.seed + 10, input_size=config.crop_size), unl_samples if u else (), u,
            max_instances=mcfg.max_gt_instances, mini_mask_size=mcfg.mini_mask_size)
        steps = max(1, len(labeled) // config.lesion_stage.batch_size)
        stage = stage or ("mask_rcnn" if not config.table4_rows else f"lesion_{name}")
        trained[name] = stage, _train(stage, config.lesion_stage, lambda: build_lesion_model(config, variant), *data,
                                      steps, val_steps, out, seed, epoch_metrics=epoch_f1, **kw)
        return trained[name][1]

    for name, variant, u in rows:
        if name != "self_training":
            train_row(name, variant, u, train_samples, ctx.seed + 1)
            continue
        teacher, kw = list(trained)[-1], {"epochs": config.self_training.epochs} if config.self_training.epochs else {}
        _, self_report = st.self_training_rounds(  # Table 8: the previous row's pseudo-labels, filtered, retraining
            trained[teacher][1].model, unl_samples, train_samples, config.self_training, score=epoch_f1,
            train=lambda samples, k, v=variant, u=u, kw=kw: train_row("self_training", v, u, samples, ctx.seed + 1 + k,
                                                                       f"lesion_self_training_r{k}", **kw), teacher_name=teacher)

    # validation: every row through the same SSD on the same views; inference time of all rows interleaved
    outcomes = []
    for name, (stage, result) in trained.items():
        label = TABLE4_ROWS.get(name, (name,))[0]
        evaluate_one = view_evaluator(ssd.model, result.model, rule=config.match_rule(), model_name=label, **cascade)
        evaluate_one.warm_up(val_views[0].image)  # trace once, outside the timing
        evaluation = runner.evaluate_cases(val_views, lambda v, f=evaluate_one: runner.CaseOutcome(**f(v)),
                                           max_overlays=config.overlay_images, what="view")
        outcomes.append(RowOutcome(name, label, evaluation, result.timing, read_history(out / stage)))
    inference = det.time_rows(ssd.model, {n: r.model for n, (_, r) in trained.items()}, [v.image for v in val_views],
                              [x.image for x in val_samples], config.timing_repeats, **cascade)
    primary = primary_row(rows, config.primary_row)
    summary, paths = write_rows_report(
        out, outcomes, val_views, class_names=LESION_CLASSES, rule=config.match_rule(), ssd_timing=ssd.timing,
        compare=[n for n in ("mask_rcnn", primary) if n in trained] or [primary], self_training=self_report,
        inference=inference, overlay_images=config.overlay_images,
        title=f"Seed 001 chest detection and lesion instances, {len(val_views)} validation view(s), {len(trained)} row(s)")
    print("\n" + paths["summary"].read_text())
    runner.write_summary_json(out, summary, timings={"ssd": ssd.timing, **{n: r.timing for n, (_, r) in trained.items()}},
                              inference=inference, config_hash=config_hash(config))
    meta = {"config_hash": config_hash(config), "lesion_f1": summary["lesion_f1"], "lesion_row": primary}
    for name, models, write in seed001_exports(ssd.model, trained[primary][1].model, val_views[0].image.shape,
                                               percentile=config.intensity_percentile, crop_margin=config.crop_margin,
                                               class_names=LESION_CLASSES, metadata=meta,
                                               check_views=[v.image for v in val_views]):  # served == Keras
        if (path := runner.export_once(config.export_dir, name, models, write)) is not None:  # no identical re-export
            ctx.exported(path, name)
    return summary


main = make_main(
    run, prog="tfmedseg.experiments.bone_malignet",
    description="Seed 001: SSD chest detector, chest crop, Mask R-CNN / MaligNet lesion instances (Table 4 rows) on bone scans.",
    config_cls=BoneMaligNetConfig, default_config="bone_malignet_quick.yaml", phantom_dataset="bone_scan", default_phantom_cases=36)


if __name__ == "__main__":
    sys.exit(main())
