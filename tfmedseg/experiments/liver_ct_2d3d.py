"""Seed 002: LiTS liver-then-tumour cascade with efficient 2.5D / 3D networks.

``python -m tfmedseg.experiments.liver_ct_2d3d [--config quick|paper|FILE] [--data-dir LiTS]``

Wiring on :mod:`tfmedseg.experiments.runner`: LiTS layout -> split (Table A.2's 20 volumes when
present, else seeded) -> cache (:func:`tfmedseg.preprocessing.cascade.cascade_training_arrays`: HU
clamp -> [0, 1], in-plane resize, tumour input = CT combined with the reference liver, cut to the
liver's slices) -> two :func:`~tfmedseg.experiments.runner.segmentation_stage` s on their
:class:`~tfmedseg.data.geometry.SliceGeometry` (RAdam + Lookahead + warm-up + ReduceLROnPlateau +
early stopping + SWA, Dice + CE, Table 3.1 augmentation on the device) -> cascade prediction of the
validation cases (:mod:`tfmedseg.inference.cascade`) -> Tables 4.6/4.7, 4.8, lesion detection, 4.4/4.5
(:mod:`tfmedseg.reports.lits`), LiTS-submission NIfTIs -> run-dir exports and one cascade SavedModel.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import tfmedseg  # noqa: F401  (oneDNN on before TensorFlow loads)
from tfmedseg.config import check_range
from tfmedseg.data.geometry import SliceGeometry
from tfmedseg.experiments import runner
from tfmedseg.experiments.cli import make_main
from tfmedseg.inference.spec import CascadeConfig
from tfmedseg.training.config import TrainConfig

__all__ = ["StageConfig", "LiverCT2D3DConfig", "STACK_25D", "SLAB_3D", "run", "main"]

#: Table A.2: the 20 LiTS training volumes the thesis held out for validation.
LITS_VALIDATION = (100, 109, 112, 121, 125, 129, 24, 25, 30, 32, 38, 35, 37, 4, 50, 56, 69, 71, 77, 84)
#: Seed 002's two input geometries: 2.5D stacks of 9 slices -> the middle one; 3D slabs 8 -> middle 4.
STACK_25D = SliceGeometry(rank=2, context_slices=9, output_slices=1)
SLAB_3D = SliceGeometry(rank=3, context_slices=8, output_slices=4)


def _dice() -> list:
    """Per-epoch training and validation Dice of a stage's foreground (TensorBoard, history.csv)."""
    from tfmedseg.metrics.keras_metrics import DiceMetric

    return [DiceMetric(class_id=1, name="dice")]


def _seed002_train() -> TrainConfig:
    """Seed 002 Sec. 3.1.9: RAdam + linear warm-up + Lookahead + ReduceLROnPlateau + best weights +
    early stopping + SWA. The thesis gives no numbers; these are ours (documented in docs/experiments.md)."""
    return TrainConfig(optimizer="radam", learning_rate=1e-3, lookahead=True, lookahead_k=5, lookahead_alpha=0.5,
                       warmup_epochs=1.0, reduce_lr_patience=3, reduce_lr_factor=0.5, early_stopping_patience=10,
                       swa_start_epoch=-1, loss="dice_ce", loss_kwargs={"from_logits": False, "include_background": False},
                       epochs=100, monitor="val_loss", image_every_epochs=5)


@dataclasses.dataclass
class StageConfig(runner.SegmentationStage):
    """One cascade stage (:class:`~tfmedseg.training.stages.SegmentationStage`, seed 002 defaults): ``model``
    ``mobilenetv2_2d`` ... ``dsts_3d`` of rank ``geometry.rank``, ``variant`` ``top``/``default``/``bottom``
    (Appendix A), ``geometry`` :data:`STACK_25D` or :data:`SLAB_3D` (YAML ``geometry: {rank: 3,
    context_slices: 8, output_slices: 4}`` with a ``*_3d`` model), ``order`` ``volume`` (seed 002: every
    slice once, volume by volume), ``uniform`` or ``foreground``."""

    augmentation: str | None = "seed002_table31"
    train: TrainConfig = dataclasses.field(default_factory=_seed002_train)
    geometry: SliceGeometry = dataclasses.field(default_factory=lambda: STACK_25D)


@dataclasses.dataclass
class LiverCT2D3DConfig:
    """Seed 002 experiment settings (defaults: the paper's, on real LiTS).

    Attributes:
        dataset: Dataset loader name (LiTS layout).
        hu_window: HU clamp mapped to [0, 1].
        inplane_size: Network in-plane size (LiTS 512 is resized to it and back).
        validation_ids: LiTS indices held out (Table A.2); used when all are present.
        validation_fraction: Otherwise a seeded fraction of the cases.
        max_cases: Use at most this many cases (0: all).
        tumour_slice_margin: Slices kept above and below the liver for stage-2 training.
        cascade: Stage-2 input combination (``mask``: CT x liver, ``add``: CT + liver) and the
            thresholds (:class:`~tfmedseg.inference.spec.CascadeConfig`), for training and inference.
        liver / tumour: The two stages.
        export_name / export_dir: Model name and root of the SavedModel exports.
    """

    dataset: str = "lits"
    hu_window: tuple[float, float] = (-200.0, 200.0)
    inplane_size: int = 256
    validation_ids: tuple[int, ...] = LITS_VALIDATION
    validation_fraction: float = 0.15
    max_cases: int = 0
    tumour_slice_margin: int = 2
    cascade: CascadeConfig = dataclasses.field(default_factory=CascadeConfig)
    liver: StageConfig = dataclasses.field(default_factory=StageConfig)
    tumour: StageConfig = dataclasses.field(default_factory=StageConfig)
    export_name: str = "liver_ct_2d3d"
    export_dir: str = "saved_models"

    def __post_init__(self) -> None:
        check_range(self.inplane_size, "inplane_size", 16, 1024, integer=True)  # 1024^2 x batch x channels fits memory
        check_range(self.max_cases, "max_cases", 0, None, integer=True)
        check_range(self.tumour_slice_margin, "tumour_slice_margin", 0, 512, integer=True)
        check_range(self.validation_fraction, "validation_fraction", 0.0, 1.0)
        for key in ("liver_threshold", "tumour_threshold", "tumour_component_threshold"):
            check_range(getattr(self.cascade, key), f"cascade.{key}", 0.0, 1.0)
        for name in ("liver", "tumour"):
            stage = getattr(self, name)
            check_range(stage.batch_size, f"{name}.batch_size", 1, 4096, integer=True)
            check_range(stage.steps_per_epoch, f"{name}.steps_per_epoch", 1, None, integer=True)
            check_range(stage.validation_steps, f"{name}.validation_steps", 1, None, integer=True)
            check_range(stage.foreground_fraction, f"{name}.foreground_fraction", 0.0, 1.0)


# ----------------------------------------------------------------------------- data
def split_cases(cases: list, config: LiverCT2D3DConfig, seed: int) -> tuple[list, list]:
    """Table A.2 split when all its volumes are present, else a seeded ``validation_fraction`` split."""
    index = {c.meta.get("index"): c for c in cases}
    if all(i in index for i in config.validation_ids):
        val = [index[i] for i in config.validation_ids]
        ids = {c.case_id for c in val}
        return [c for c in cases if c.case_id not in ids], val
    return runner.seeded_split(cases, config.validation_fraction, seed, keep_one=False)


def preprocess_case(case, config: LiverCT2D3DConfig):
    """``(arrays, spacing, meta)`` of one case for the cache
    (:func:`tfmedseg.preprocessing.cascade.cascade_training_arrays`)."""
    from tfmedseg.preprocessing.cascade import cascade_training_arrays

    ct = case.images["ct"]
    arrays, (lo, hi) = cascade_training_arrays(
        ct.array, case.label.array, hu_window=config.hu_window, inplane_size=config.inplane_size,
        combination=config.cascade.combination, slice_margin=config.tumour_slice_margin)
    return arrays, ct.spacing, {"liver_slices": [lo, hi]}


# ----------------------------------------------------------------------------- evaluation
def stage_spec(stage: StageConfig, config: LiverCT2D3DConfig, labels: tuple[str, ...]):
    """Serving spec of one stage: its geometry, in-plane size and HU window."""
    from tfmedseg.inference.spec import IntensitySpec, ServingSpec

    return ServingSpec(input_size=(config.inplane_size, config.inplane_size), labels=labels, batch_size=8,
                       intensity=IntensitySpec("clip_scale", *config.hu_window, 0.0, 1.0),
                       **stage.geometry.serving_fields())


def case_evaluator(liver_net, tumour_net, config: LiverCT2D3DConfig, output_dir: Path):
    """``case -> CaseOutcome``: cascade prediction, LiTS-submission NIfTI, Table 4.8 row, lesion counts."""
    import tensorflow as tf

    from tfmedseg.inference.cascade import CascadeStage, predict_cascade
    from tfmedseg.io.nifti import write_nifti
    from tfmedseg.metrics.lesions import lesion_detection_counts
    from tfmedseg.reports import OverlayItem, evaluate_segmentation_case

    stages = []
    for net, stage, labels in ((liver_net, config.liver, ("background", "liver")), (tumour_net, config.tumour, ("background", "tumour"))):
        fn = tf.function(lambda x, _net=net: _net(x, training=False), reduce_retracing=True)
        stages.append(CascadeStage(fn, stage_spec(stage, config, labels)))
    model_name = f"{config.liver.model}/{config.liver.variant} + {config.tumour.model}/{config.tumour.variant}"

    def evaluate_one(case) -> runner.CaseOutcome:
        ct = case.images["ct"]
        start = time.perf_counter()
        result = predict_cascade(ct.array, stages[0], stages[1], config.cascade, hu_window=config.hu_window)
        seconds = time.perf_counter() - start
        index = case.meta.get("index", case.case_id)
        write_nifti(result.labels, output_dir / "submission" / f"test-segmentation-{index}.nii", reference=ct, dtype=np.uint8)
        reference = case.label.array
        row = {"model": model_name, "case": case.case_id,
               **evaluate_segmentation_case(result.labels, reference, spacing=ct.spacing),
               **lesion_detection_counts(result.labels == 2, reference == 2)}
        overlay = OverlayItem(case.case_id, ct.array, result.labels >= 1, result.labels == 2)
        return runner.CaseOutcome(row, overlay, seconds, ct.array.shape[0])

    return evaluate_one


# ----------------------------------------------------------------------------- entry point
def run(ctx) -> dict[str, Any]:
    """Run the experiment (:class:`~tfmedseg.experiments.cli.ExperimentContext`); returns the summary
    figures (Table 4.8 columns, lesion detection) as a flat dict."""
    from tfmedseg.config import config_hash
    from tfmedseg.data.source import CaseArrays
    from tfmedseg.export.savedmodel import export_cascade_savedmodel
    from tfmedseg.reports.lits import lits_report

    config: LiverCT2D3DConfig = ctx.config
    out = ctx.output_dir
    cases = runner.load_cases(config.dataset, ctx.data_dir, config.max_cases)
    train_cases, val_cases = split_cases(cases, config, ctx.seed)
    runner.logger.info("%d cases from %s: %d train, %d validation", len(cases), ctx.data_dir, len(train_cases), len(val_cases))
    prep = {"hu_window": list(config.hu_window), "inplane_size": config.inplane_size, "combination": config.cascade.combination,
            "tumour_slice_margin": config.tumour_slice_margin, "version": 1}
    prepared = runner.prepare_cases(cases, runner.case_cache(ctx, "liver_ct_2d3d", prep), lambda c: preprocess_case(c, config))

    def arrays(subset, image_key, label_key):
        return [CaseArrays(c.case_id, prepared[c.case_id][image_key], prepared[c.case_id][label_key]) for c in subset]

    inputs = {"liver": "image", "tumour": "tumour_input"}
    stages = {"liver": config.liver, "tumour": config.tumour}
    nets, timings = {}, {}
    for offset, (name, stage) in enumerate(stages.items()):
        result = runner.segmentation_stage(
            name, stage, stage.geometry, arrays(train_cases, inputs[name], name), arrays(val_cases, inputs[name], name),
            output_dir=out, seed=ctx.seed + offset, inplane_size=config.inplane_size, metrics=_dice)
        nets[name], timings[name] = result.model, result.timing

    evaluation = runner.evaluate_cases(val_cases, case_evaluator(nets["liver"], nets["tumour"], config, out))
    rows = evaluation.rows
    for t in timings.values():
        t["predict_seconds_per_slice"] = evaluation.seconds_per_unit
    scores, sections, summary = lits_report(rows, timings)
    runner.write_tables(out, rows, scores, overlays=evaluation.overlays, sections=sections,
                        title=f"Seed 002 Table 4.8-style scores, {len(rows)} validation case(s)")
    runner.write_summary_json(out, summary, timings=timings)

    info = {"seed": "002", "experiment": "liver_ct_2d3d", "config_hash": config_hash(config),
            "metrics": {k: v for k, v in summary.items() if not math.isnan(v)}}
    specs = {}
    for name, stage in stages.items():
        specs[name] = stage_spec(stage, config, ("background", name))
        samples = stage.geometry.dataset(arrays(val_cases, inputs[name], name), 1, seed=ctx.seed, epochs=1,
                                         foreground_fraction=stage.foreground_fraction)
        runner.export_stage(nets[name], out / f"{name}_model", specs[name],
                            {**info, "stage": name, "model": stage.model, "variant": stage.variant}, samples)
    path = runner.export_once(config.export_dir, config.export_name, [nets["liver"], nets["tumour"]], lambda p: export_cascade_savedmodel(
        nets["liver"], nets["tumour"], p, liver_spec=specs["liver"], tumour_spec=specs["tumour"], cascade=config.cascade,
        model_name=config.export_name, metadata=info))
    if path is not None:
        ctx.exported(path, "the cascade (signatures segment, segment_bytes)")
    return summary


main = make_main(run, "tfmedseg.experiments.liver_ct_2d3d", LiverCT2D3DConfig,
                 "Seed 002: LiTS liver-then-tumour cascade with efficient 2.5D/3D networks.",
                 phantom_dataset="lits", default_phantom_cases=10)

if __name__ == "__main__":
    sys.exit(main())
