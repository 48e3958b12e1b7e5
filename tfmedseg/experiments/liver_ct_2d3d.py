"""Seed 002: LiTS liver-then-tumour cascade with efficient 2.5D / 3D networks, and the thesis' sweep.

``python -m tfmedseg.experiments.liver_ct_2d3d [--config quick|paper|sweep_quick|sweep|FILE] [--data-dir LiTS]``

Wiring on :mod:`tfmedseg.experiments.runner`: LiTS layout -> split (Table A.2's 20 volumes when
present, else seeded) -> cache (:func:`tfmedseg.preprocessing.cascade.cascade_training_arrays`: HU
clamp -> [0, 1], in-plane resize, tumour input = CT combined with the reference liver, cut to the
liver's slices) -> two :func:`~tfmedseg.experiments.runner.segmentation_stage` s on their
:class:`~tfmedseg.data.geometry.SliceGeometry` (RAdam + Lookahead + warm-up + ReduceLROnPlateau +
early stopping, best-validation weights selected, SWA a separate candidate, Dice + CE, Table 3.1
augmentation on the device) -> evaluation (:mod:`tfmedseg.experiments.lits_cascade`): the cascade
(stage 1 -> stage 2) and stage 2 alone on the reference liver -> Tables 4.6/4.7, 4.8, lesion
detection, 4.4/4.5 timing per iteration (:mod:`tfmedseg.reports.lits`), LiTS-submission NIfTIs ->
run-dir exports and one cascade SavedModel. With ``sweep.networks`` (``--config sweep``): one row
per tumour network x variant (:mod:`tfmedseg.experiments.sweep`, resumable per configuration),
Tables 4.2-4.8 in ``summary.md`` (:mod:`tfmedseg.reports.lits_sweep`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any


import tfmedseg  # noqa: F401  (oneDNN on before TensorFlow loads)
from tfmedseg.config import check_range
from tfmedseg.errors import ConfigError
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
    slice once, volume by volume), ``uniform`` or ``foreground``; ``select_weights`` ``best`` (the
    thesis keeps the best-validation weights, L865; the SWA average is evaluated beside them)."""

    augmentation: str | None = "seed002_table31"
    train: TrainConfig = dataclasses.field(default_factory=_seed002_train)
    select_weights: str = "best"
    geometry: SliceGeometry = dataclasses.field(default_factory=lambda: STACK_25D)


@dataclasses.dataclass
class SweepConfig:
    """The seed-002 comparison (Tables 4.2-4.8, ``--config sweep`` / ``sweep_quick``): one row per tumour
    network ``networks`` x ``variants`` (2D ones on :data:`STACK_25D`, 3D on :data:`SLAB_3D` with
    ``batch_size_3d`` slabs, 0: the tumour batch); the liver stage is shared (``share_liver``) or the
    row's network; complexity counted at ``complexity_size`` in-plane. No ``networks``: one cascade."""

    networks: tuple[str, ...] = ()
    variants: tuple[str, ...] = ("top", "default", "bottom")
    batch_size_3d: int = 0
    share_liver: bool = True
    complexity_size: int = 256


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
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)

    def __post_init__(self) -> None:
        check_range(self.inplane_size, "inplane_size", 16, 1024, integer=True)  # 1024^2 x batch x channels fits memory
        check_range(self.max_cases, "max_cases", 0, None, integer=True)
        check_range(self.tumour_slice_margin, "tumour_slice_margin", 0, 512, integer=True)
        check_range(self.validation_fraction, "validation_fraction", 0.0, 1.0)
        bad = [n for n in self.sweep.networks if not n.endswith(("_2d", "_3d"))] or sorted(set(self.sweep.variants) - {"top", "default", "bottom"})
        if bad:
            raise ConfigError(f"{bad}: networks end in _2d / _3d (rank), variants are top, default, bottom", path="sweep")
        for key in ("liver_threshold", "tumour_threshold", "tumour_component_threshold"):
            check_range(getattr(self.cascade, key), f"cascade.{key}", 0.0, 1.0)
        for name in ("liver", "tumour"):
            stage = getattr(self, name)
            check_range(stage.batch_size, f"{name}.batch_size", 1, 4096, integer=True)
            check_range(stage.steps_per_epoch, f"{name}.steps_per_epoch", 1, None, integer=True)
            check_range(stage.validation_steps, f"{name}.validation_steps", 1, None, integer=True)
            check_range(stage.foreground_fraction, f"{name}.foreground_fraction", 0.0, 1.0)


# ----------------------------------------------------------------------------- one cascade
_INPUTS = {"liver": "image", "tumour": "tumour_input"}


def _train(ctx, name, stage, data, out, seed):
    from tfmedseg.experiments.lits_cascade import foreground_dice

    train_cases, val_cases, arrays = data
    return runner.segmentation_stage(name, stage, stage.geometry, arrays(train_cases, _INPUTS[name], name),
                                     arrays(val_cases, _INPUTS[name], name), output_dir=out, seed=seed,
                                     inplane_size=ctx.config.inplane_size, metrics=foreground_dice)


def cascade_run(ctx, config: LiverCT2D3DConfig, out: Path, data, *, liver=None, export: bool = True) -> dict[str, Any]:
    """Train (resume) both stages into ``out`` (or reuse a trained ``liver`` stage), evaluate the
    cascade and each stage alone with its candidate weights, report; returns the summary and timings."""
    from tfmedseg.experiments import lits_cascade as lc
    from tfmedseg.reports.lits import lits_report

    _, val_cases, arrays = data
    stages = {"liver": config.liver, "tumour": config.tumour}
    results = {n: liver if n == "liver" and liver is not None else _train(ctx, n, s, data, out, ctx.seed + i)
               for i, (n, s) in enumerate(stages.items())}
    nets = {n: r.model for n, r in results.items()}
    specs = {n: lc.serving_spec(s.geometry, config.inplane_size, config.hu_window, ("background", n)) for n, s in stages.items()}
    names = {n: f"{s.model}/{s.variant}" for n, s in stages.items()}
    evaluation = runner.evaluate_cases(val_cases, lc.cascade_evaluator(
        nets["liver"], nets["tumour"], (specs["liver"], specs["tumour"]), config.cascade, config.hu_window,
        f"{names['liver']} + {names['tumour']}", out if export else None))
    rows = evaluation.rows + lc.evaluate_stages_alone(results, specs, val_cases, config.cascade, config.hu_window, names)
    timings = {n: {**results[n].timing, "predict_seconds_per_slice": evaluation.seconds_per_unit,
                   **lc.prediction_timing(nets[n], specs[n], s.geometry, arrays(val_cases, _INPUTS[n], n), seed=ctx.seed)}
               for n, s in stages.items()}
    scores, sections, summary = lits_report(rows, timings)
    runner.write_tables(out, rows, scores, overlays=evaluation.overlays, sections=sections, show=export, summary_rows=evaluation.rows,
                        title=f"Seed 002 Table 4.8-style scores, {len(evaluation.rows)} validation case(s)")
    runner.write_summary_json(out, summary, timings=timings)
    if export:
        path = lc.export_cascade(config, out, nets, specs, summary, {n: arrays(val_cases, _INPUTS[n], n) for n in stages}, ctx.seed)
        if path is not None:
            ctx.exported(path, "the cascade (signatures segment, segment_bytes)")
    return {"summary": summary, "timings": timings}


# ----------------------------------------------------------------------------- entry point
def run(ctx) -> dict[str, Any]:
    """Run the experiment (:class:`~tfmedseg.experiments.cli.ExperimentContext`): one cascade, or the
    sweep of ``config.sweep``; returns the summary (Table 4.8 columns, stage 2, detection)."""
    from tfmedseg.data.source import CaseArrays
    from tfmedseg.experiments import lits_cascade as lc

    config: LiverCT2D3DConfig = ctx.config
    cases = runner.load_cases(config.dataset, ctx.data_dir, config.max_cases)
    train_cases, val_cases = lc.split_cases(cases, config.validation_ids, config.validation_fraction, ctx.seed)
    runner.logger.info("%d cases from %s: %d train, %d validation", len(cases), ctx.data_dir, len(train_cases), len(val_cases))
    prep = {"hu_window": list(config.hu_window), "inplane_size": config.inplane_size, "combination": config.cascade.combination,
            "tumour_slice_margin": config.tumour_slice_margin, "version": 1}
    prepared = runner.prepare_cases(cases, runner.case_cache(ctx, "liver_ct_2d3d", prep), lambda c: lc.case_arrays(c, config))

    def arrays(subset, image_key, label_key):
        return [CaseArrays(c.case_id, prepared[c.case_id][image_key], prepared[c.case_id][label_key]) for c in subset]

    data = (train_cases, val_cases, arrays)
    if config.sweep.networks:
        return _sweep(ctx, config, data)
    return cascade_run(ctx, config, ctx.output_dir, data)["summary"]


def _sweep(ctx, config: LiverCT2D3DConfig, data) -> dict[str, Any]:
    """Tables 4.2-4.8 over ``config.sweep`` (:mod:`tfmedseg.experiments.sweep`): one tumour network
    per row; the liver stage is trained once into ``<output_dir>/liver`` when ``share_liver``."""
    from tfmedseg.config import config_hash
    from tfmedseg.experiments.sweep import SweepEntry, run_sweep
    from tfmedseg.reports.lits_sweep import sweep_report, sweep_row

    sw, out, shared = config.sweep, ctx.output_dir, {}
    configs = [(n, v) for n in sw.networks for v in sw.variants]
    entries, entry_configs = [], {}
    for network, variant in configs:
        is3d = network.endswith("_3d")
        tumour = dataclasses.replace(config.tumour, model=network, variant=variant, geometry=SLAB_3D if is3d else STACK_25D,
                                     batch_size=sw.batch_size_3d if is3d and sw.batch_size_3d else config.tumour.batch_size)
        liver = config.liver if sw.share_liver else dataclasses.replace(tumour, train=config.liver.train)
        cfg = dataclasses.replace(config, tumour=tumour, liver=liver, sweep=SweepConfig())
        entries.append(SweepEntry(f"{network}-{variant}", {"config": config_hash(cfg), "seed": ctx.seed, "shared": sw.share_liver}))
        entry_configs[entries[-1].name] = cfg

    def run_one(entry, directory):
        cfg, start, cpu = entry_configs[entry.name], time.perf_counter(), time.process_time()
        if sw.share_liver and "liver" not in shared:
            shared["liver"] = _train(ctx, "liver", config.liver, data, out, ctx.seed)
        result = cascade_run(ctx, cfg, directory, data, liver=shared.get("liver"), export=False)
        return sweep_row(cfg.tumour.model, cfg.tumour.variant, result["summary"], result["timings"]["tumour"],
                         cfg.tumour.geometry.input_shape(sw.complexity_size), seconds=time.perf_counter() - start,
                         cpu_seconds=time.process_time() - cpu)

    def on_rows(rows, pending):
        title = f"Seed 002 sweep: {len(configs)} tumour-network configuration(s)"
        (out / "summary.md").write_text(sweep_report(rows, configs, title=title, pending=pending))
        runner.write_summary_json(out, {"finished": len(rows), "pending": len(pending)}, rows=rows, pending=pending)

    rows = run_sweep(entries, run_one, out, on_rows=on_rows)
    print("\n" + (out / "summary.md").read_text())
    return {"finished": float(len(rows))}


main = make_main(run, config_cls=LiverCT2D3DConfig, phantom_dataset="lits", default_phantom_cases=16)

if __name__ == "__main__":
    sys.exit(main())
