"""Seed 002: LiTS liver-then-tumour cascade with efficient 2.5D / 3D networks.

``python -m tfmedseg.experiments.liver_ct_2d3d [--config quick|paper|FILE] [--data-dir LiTS]``

Wiring only (the pieces live in the shared tree):

1. load the LiTS layout (:func:`tfmedseg.datasets.load_dataset`), split train/validation
   (Table A.2's 20 validation volumes when present, else a seeded 15 % split);
2. preprocess once into the npz cache: HU clamp [-200, 200] -> [0, 1], in-plane resize
   (512 -> 256 on LiTS), liver target ``label >= 1``; tumour stage input = CT combined with the
   reference liver (``mask``: CT x liver, or ``add``), tumour target ``label == 2``, cut to the
   liver's slice range plus a margin (the stage-2 network only ever sees liver slices at inference);
3. train each stage (:class:`tfmedseg.training.Trainer`: RAdam + Lookahead + linear warm-up +
   ReduceLROnPlateau + early stopping + SWA; Dice + CE) on 2.5D stacks (9 slices -> 1) or 3D slabs
   (8 -> middle 4) in the seed's epoch order, with Table 3.1 augmentation on the device;
4. predict the validation cases with the cascade (:mod:`tfmedseg.inference.cascade`): liver
   largest 3D component, tumour components below the max-probability threshold dropped, tumour
   inside the liver, probabilities resized back to the source grid;
5. report Tables 4.6/4.7 (Dice by lesion size), 4.8 (Dice per case, global Dice, VOE, RVD, ASSD,
   MSSD), lesion detection, 4.4/4.5 (seconds per slice for training and prediction), write a
   LiTS-submission NIfTI per case, and export both stages to ``saved_models/``.
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
from tfmedseg.errors import ConfigError
from tfmedseg.training.trainer import TrainConfig

__all__ = ["StageConfig", "LiverCT2D3DConfig", "run", "main"]

#: Table A.2: the 20 LiTS training volumes the thesis held out for validation.
LITS_VALIDATION = (100, 109, 112, 121, 125, 129, 24, 25, 30, 32, 38, 35, 37, 4, 50, 56, 69, 71, 77, 84)
COMBINATIONS = ("mask", "add")


def _seed002_train() -> TrainConfig:
    """Seed 002 Sec. 3.1.9: RAdam + linear warm-up + Lookahead + ReduceLROnPlateau + best weights +
    early stopping + SWA. The thesis gives no numbers; these are ours (documented in docs/experiments.md)."""
    return TrainConfig(
        optimizer="radam",
        learning_rate=1e-3,
        lookahead=True,
        lookahead_k=5,
        lookahead_alpha=0.5,
        warmup_epochs=1.0,
        reduce_lr_patience=3,
        reduce_lr_factor=0.5,
        early_stopping_patience=10,
        swa_start_epoch=-1,
        loss="dice_ce",
        loss_kwargs={"from_logits": False, "include_background": False},
        epochs=100,
        monitor="val_loss",
        image_every_epochs=5,
    )


@dataclasses.dataclass
class StageConfig:
    """One cascade stage.

    Attributes:
        model: Registered builder (``mobilenetv2_2d``, ``mobilenetv3_2d``, ``shufflenetv2_2d``,
            ``mobilenetv2_3d``, ``mobilenetv3_3d``, ``shufflenetv2_3d``, ``dsts_3d``).
        variant: Appendix A configuration: ``top``, ``default`` or ``bottom``.
        batch_size: Global batch size (stacks or slabs).
        augmentation: Augmentation preset name, or None.
        train: Optimisation settings.
        steps_per_epoch: Optimizer steps per epoch; None: every training slice once (seed 002).
        validation_steps: Validation batches per epoch; None: every validation slice once.
        order: Training epoch order: ``volume`` (seed 002: every slice once, volume by volume in
            random order), ``uniform``, or ``foreground`` (``foreground_fraction`` of the samples
            centred on a slice with target voxels).
        foreground_fraction: Share of foreground samples for ``order: foreground``.
    """

    model: str = "mobilenetv2_2d"
    variant: str = "default"
    batch_size: int = 8
    augmentation: str | None = "seed002_table31"
    train: TrainConfig = dataclasses.field(default_factory=_seed002_train)
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    order: str = "volume"
    foreground_fraction: float = 0.5


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
        combination: Stage-2 input, ``mask`` (CT x liver) or ``add`` (CT + liver).
        tumour_slice_margin: Slices kept above and below the liver for stage-2 training.
        liver_threshold / tumour_threshold: Probability thresholds.
        tumour_component_threshold: Tumour components whose maximum probability is below it are dropped.
        liver / tumour: The two stages.
        export_name: Model name under ``saved_models/``.
        export_dir: Root of the exports.
    """

    dataset: str = "lits"
    hu_window: tuple[float, float] = (-200.0, 200.0)
    inplane_size: int = 256
    validation_ids: tuple[int, ...] = LITS_VALIDATION
    validation_fraction: float = 0.15
    max_cases: int = 0
    combination: str = "mask"
    tumour_slice_margin: int = 2
    liver_threshold: float = 0.5
    tumour_threshold: float = 0.5
    tumour_component_threshold: float = 0.8
    liver: StageConfig = dataclasses.field(default_factory=StageConfig)
    tumour: StageConfig = dataclasses.field(default_factory=StageConfig)
    export_name: str = "liver_ct_2d3d"
    export_dir: str = "saved_models"

    def __post_init__(self) -> None:
        if self.combination not in COMBINATIONS:
            raise ConfigError(f"unknown combination {self.combination!r}; allowed: {COMBINATIONS}", path="combination")
        if self.inplane_size < 1:
            raise ConfigError(f"must be >= 1, got {self.inplane_size}", path="inplane_size")


# ----------------------------------------------------------------------------- data
def split_cases(cases: list, config: LiverCT2D3DConfig, seed: int) -> tuple[list, list]:
    """Table A.2 split when all its volumes are present, else a seeded ``validation_fraction`` split."""
    index = {c.meta.get("index"): c for c in cases}
    if all(i in index for i in config.validation_ids):
        val = [index[i] for i in config.validation_ids]
        ids = {c.case_id for c in val}
        return [c for c in cases if c.case_id not in ids], val
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cases))
    n_val = max(1, int(round(config.validation_fraction * len(cases))))
    if len(cases) - n_val < 1:
        raise ConfigError(f"{len(cases)} case(s) leave none for training", path="validation_fraction")
    val_idx = set(order[:n_val].tolist())
    return [c for i, c in enumerate(cases) if i not in val_idx], [c for i, c in enumerate(cases) if i in val_idx]


def preprocess_case(case, config: LiverCT2D3DConfig, cache) -> dict[str, np.ndarray]:
    """Cached arrays of one case: ``image`` [D, S, S] in [0, 1], ``liver`` / ``tumour`` targets, and
    ``tumour_input`` (combined with the reference liver) cut to the liver slice range."""
    from tfmedseg.preprocessing.cascade import combine
    from tfmedseg.preprocessing.intensity import hu_to_unit
    from tfmedseg.preprocessing.resample import resize_array

    def build():
        ct = case.images["ct"]
        label = case.label.array
        depth = ct.array.shape[0]
        size = (depth, config.inplane_size, config.inplane_size)
        unit = hu_to_unit(ct.array, *config.hu_window)
        liver = (label >= 1).astype(np.float32)
        image = resize_array(unit, size, "linear")
        small_label = resize_array(label.astype(np.uint8), size, "nearest")
        combined = resize_array(combine(unit, liver, config.combination), size, "linear")
        zs = np.flatnonzero((label >= 1).reshape(depth, -1).any(axis=1))
        lo, hi = (int(zs[0]), int(zs[-1]) + 1) if zs.size else (0, depth)
        lo, hi = max(0, lo - config.tumour_slice_margin), min(depth, hi + config.tumour_slice_margin)
        arrays = {
            "image": image.astype(np.float32),
            "liver": (small_label >= 1).astype(np.uint8),
            "tumour_input": combined[lo:hi].astype(np.float32),
            "tumour": (small_label[lo:hi] == 2).astype(np.uint8),
        }
        return arrays, ct.spacing, {"liver_slices": [lo, hi]}

    return cache.get_or_build(case.case_id, build).arrays


def _stage_inputs(stage: StageConfig) -> tuple[int, str]:
    return (3, "3d_slab") if stage.model.endswith("_3d") else (2, "2.5d")


def _dataset(stage: StageConfig, arrays: list, batch_size: int, seed: int, epochs: int | None, order: str = "volume"):
    from tfmedseg.data.pipelines import slab3d_dataset, stack25d_dataset

    rank, _ = _stage_inputs(stage)
    kwargs = dict(order=order, seed=seed, epochs=epochs, foreground_fraction=stage.foreground_fraction)
    if rank == 3:
        return slab3d_dataset(arrays, batch_size, n_in=8, n_out=4, **kwargs)
    return stack25d_dataset(arrays, batch_size, n_slices=9, **kwargs)


def _units_per_epoch(stage: StageConfig, arrays: list) -> int:
    from tfmedseg.data.sampling import slab_starts

    rank, _ = _stage_inputs(stage)
    if rank == 3:
        return sum(len(slab_starts(a.depth, 4)) for a in arrays)
    return sum(a.depth for a in arrays)


# ----------------------------------------------------------------------------- training
def train_stage(name: str, stage: StageConfig, train_arrays: list, val_arrays: list, config: LiverCT2D3DConfig,
                output_dir: Path, seed: int) -> tuple[Any, dict[str, float]]:
    """Train one stage; returns the trained network and its timing figures."""
    import keras

    from tfmedseg.augment.presets import build_preset
    from tfmedseg.models import registry
    from tfmedseg.training.augmented import AugmentedModel
    from tfmedseg.training.trainer import Trainer

    rank, _ = _stage_inputs(stage)
    size = config.inplane_size
    input_shape = (8, size, size, 1) if rank == 3 else (size, size, 9)
    batch = stage.batch_size
    units = _units_per_epoch(stage, train_arrays)
    steps = stage.steps_per_epoch or max(1, units // batch)
    val_units = _units_per_epoch(stage, val_arrays)
    val_steps = stage.validation_steps or max(1, val_units // batch)
    train_cfg = dataclasses.replace(stage.train, steps_per_epoch=steps, validation_steps=val_steps,
                                    output_dir=str(output_dir / name), seed=seed)

    def build():
        net = registry.build(stage.model, variant=stage.variant, input_shape=input_shape, classes=2)
        augmentation = build_preset(stage.augmentation, ndim=rank, seed=seed) if stage.augmentation else None
        return AugmentedModel(net, augmentation, name=f"{name}_training")

    trainer = Trainer(train_cfg, build)
    train_ds = _dataset(stage, train_arrays, batch, seed, None, stage.order)
    val_ds = _dataset(stage, val_arrays, min(batch, max(1, val_units)), seed + 1, None)
    start = time.perf_counter()
    history = trainer.fit(train_ds, validation_data=val_ds)
    seconds = time.perf_counter() - start
    epochs_run = len(history.history.get("loss", [])) or 1
    per = 4 if rank == 3 else 1  # output slices per sample
    timing = {
        "train_seconds": seconds,
        "train_seconds_per_slice": seconds / (epochs_run * steps * batch * per),
        "epochs": float(epochs_run),
        "final_loss": float(history.history["loss"][-1]) if history.history.get("loss") else math.nan,
    }
    network = trainer.model.network
    keras.utils.set_random_seed(seed)
    return network, timing


# ----------------------------------------------------------------------------- evaluation
def _stage_spec(stage: StageConfig, config: LiverCT2D3DConfig, labels: tuple[str, ...]):
    from tfmedseg.export.spec import IntensitySpec, ServingSpec

    _, mode = _stage_inputs(stage)
    context, out = (8, 4) if mode == "3d_slab" else (9, 1)
    return ServingSpec(mode=mode, input_size=(config.inplane_size, config.inplane_size), context_slices=context,
                       output_slices=out, labels=labels, batch_size=8,
                       intensity=IntensitySpec("clip_scale", *config.hu_window, 0.0, 1.0))


def evaluate(cases: list, liver_net, tumour_net, config: LiverCT2D3DConfig, output_dir: Path) -> tuple[list, list, float]:
    """Cascade prediction, per-case report rows, LiTS-submission NIfTIs and overlay tiles; s/slice."""
    import tensorflow as tf

    from tfmedseg.inference.cascade import CascadeStage, predict_cascade
    from tfmedseg.io.nifti import write_nifti
    from tfmedseg.metrics.lesions import compute_lesion_detection
    from tfmedseg.reports import OverlayItem, evaluate_segmentation_case

    stages = []
    for net, stage, labels in ((liver_net, config.liver, ("background", "liver")), (tumour_net, config.tumour, ("background", "tumour"))):
        fn = tf.function(lambda x, _net=net: _net(x, training=False), reduce_retracing=True)
        stages.append(CascadeStage(fn, _stage_spec(stage, config, labels)))
    model_name = f"{config.liver.model}/{config.liver.variant} + {config.tumour.model}/{config.tumour.variant}"
    rows, overlays, seconds, slices = [], [], 0.0, 0
    for case in cases:
        ct = case.images["ct"]
        start = time.perf_counter()
        result = predict_cascade(
            ct.array, stages[0], stages[1], hu_window=config.hu_window, combination=config.combination,
            liver_threshold=config.liver_threshold, tumour_threshold=config.tumour_threshold,
            tumour_component_threshold=config.tumour_component_threshold,
        )
        seconds += time.perf_counter() - start
        slices += ct.array.shape[0]
        index = case.meta.get("index", case.case_id)
        write_nifti(result.labels, output_dir / "submission" / f"test-segmentation-{index}.nii", reference=ct, dtype=np.uint8)
        reference = case.label.array
        row = {"model": model_name, "case": case.case_id,
               **evaluate_segmentation_case(result.labels, reference, spacing=ct.spacing)}
        for tag, threshold in (("iou0", 0.0), ("iou50", 0.5)):
            det = compute_lesion_detection(result.labels == 2, reference == 2, iou_threshold=threshold)
            row.update({f"lesion_{k}_{tag}": det[k] for k in ("tp", "fp", "fn")})
        rows.append(row)
        if len(overlays) < 8:
            overlays.append(OverlayItem(case.case_id, ct.array, result.labels >= 1, result.labels == 2))
    return rows, overlays, seconds / max(1, slices)


def lesion_detection_summary(rows: list) -> dict[str, float]:
    """Precision and recall of lesion detection from counts summed over the cases."""
    out = {}
    for tag in ("iou0", "iou50"):
        tp, fp, fn = (sum(r[f"lesion_{k}_{tag}"] for r in rows) for k in ("tp", "fp", "fn"))
        out[f"precision_{tag}"] = tp / (tp + fp) if tp + fp else math.nan
        out[f"recall_{tag}"] = tp / (tp + fn) if tp + fn else math.nan
    return out


def report_layouts():
    """Summary columns: Table 4.8 (liver and tumour) and Tables 4.6/4.7 (Dice by lesion size)."""
    from tfmedseg.reports import SIZE_DICE_LAYOUT, Column

    scores = [Column("Model", "model", "first", "{}")]
    for name in ("liver", "tumour"):
        scores += [
            Column(f"{name} Dice/case", f"{name}_dice"),
            Column(f"{name} global Dice", name, "global_dice"),
            Column(f"{name} VOE", f"{name}_voe"),
            Column(f"{name} RVD", f"{name}_rvd"),
            Column(f"{name} ASSD mm", f"{name}_assd"),
            Column(f"{name} MSSD mm", f"{name}_mssd"),
        ]
    return tuple(scores), SIZE_DICE_LAYOUT


def format_extra_tables(detection: dict[str, float], timings: dict[str, dict[str, float]]) -> str:
    """Lesion detection and the Table 4.4/4.5-style timing table, as markdown."""
    f = lambda v: "NA" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"  # noqa: E731
    lines = ["### Lesion detection (counts summed over cases)", "", "| criterion | precision | recall |", "|---|---|---|",
             f"| IoU > 0 | {f(detection['precision_iou0'])} | {f(detection['recall_iou0'])} |",
             f"| IoU >= 0.5 | {f(detection['precision_iou50'])} | {f(detection['recall_iou50'])} |", "",
             "### Time per output slice in seconds (Tables 4.4/4.5 style, this machine)", "",
             "| stage | train | predict (whole cascade) |", "|---|---|---|"]
    for name, t in timings.items():
        lines.append(f"| {name} | {t['train_seconds_per_slice']:.4f} | {t['predict_seconds_per_slice']:.4f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- entry point
def run(ctx) -> dict[str, Any]:
    """Run the experiment for a parsed :class:`~tfmedseg.experiments.cli.ExperimentContext`.

    Returns:
        The summary figures (Table 4.8 columns, lesion detection) as a flat dict.
    """
    from tfmedseg.config import config_hash
    from tfmedseg.data.source import CaseArrays
    from tfmedseg.datasets import load_dataset
    from tfmedseg.export.run_dir import save_for_export
    from tfmedseg.export.savedmodel import export_cascade_savedmodel, next_version
    from tfmedseg.preprocessing.cache import CaseCache
    from tfmedseg.reports import format_table, summarize, write_report

    config: LiverCT2D3DConfig = ctx.config
    out = ctx.output_dir
    cases = load_dataset(config.dataset, ctx.data_dir)
    if config.max_cases:
        cases = cases[: config.max_cases]
    train_cases, val_cases = split_cases(cases, config, ctx.seed)
    print(f"{len(cases)} cases from {ctx.data_dir}: {len(train_cases)} train, {len(val_cases)} validation")
    prep = {"hu_window": list(config.hu_window), "inplane_size": config.inplane_size, "combination": config.combination,
            "tumour_slice_margin": config.tumour_slice_margin, "version": 1}
    cache_root = Path(ctx.data_dir).parent / f".{Path(ctx.data_dir).name}-cache" if ctx.used_phantoms else out / "cache"
    cache = CaseCache(cache_root / "liver_ct_2d3d", prep)
    prepared = {c.case_id: preprocess_case(c, config, cache) for c in cases}

    def arrays(subset, image_key, label_key):
        return [CaseArrays(c.case_id, prepared[c.case_id][image_key], prepared[c.case_id][label_key]) for c in subset]

    timings: dict[str, dict[str, float]] = {}
    liver_net, timings["liver"] = train_stage("liver", config.liver, arrays(train_cases, "image", "liver"),
                                              arrays(val_cases, "image", "liver"), config, out, ctx.seed)
    tumour_net, timings["tumour"] = train_stage("tumour", config.tumour, arrays(train_cases, "tumour_input", "tumour"),
                                                arrays(val_cases, "tumour_input", "tumour"), config, out, ctx.seed + 1)
    rows, overlays, predict_per_slice = evaluate(val_cases, liver_net, tumour_net, config, out)
    for t in timings.values():
        t["predict_seconds_per_slice"] = predict_per_slice
    scores, sizes = report_layouts()
    paths = write_report(out, rows, layout=scores, group_by="model", overlays=overlays,
                         title=f"Seed 002 Table 4.8-style scores, {len(rows)} validation case(s)")
    size_table, _ = summarize(rows, sizes, group_by="model")
    detection = lesion_detection_summary(rows)
    with open(paths["summary"], "a") as fh:
        fh.write("\n" + format_table(size_table, sizes, "Tables 4.6/4.7-style tumour Dice by lesion size"))
        fh.write("\n" + format_extra_tables(detection, timings))
    print("\n" + paths["summary"].read_text())
    table, _ = summarize(rows, scores, group_by="model")
    summary: dict[str, Any] = {k: v for k, v in table[0].items() if isinstance(v, float)}
    summary.update({f"lesion_{k}": v for k, v in detection.items()})
    (out / "summary.json").write_text(json.dumps({"summary": summary, "timings": timings}, indent=2, default=str))

    info = {"seed": "002", "experiment": "liver_ct_2d3d", "config_hash": config_hash(config),
            "metrics": {k: v for k, v in summary.items() if not math.isnan(v)}}
    specs = {}
    for name, net, stage, image_key in (("liver", liver_net, config.liver, "image"), ("tumour", tumour_net, config.tumour, "tumour_input")):
        specs[name] = _stage_spec(stage, config, ("background", name))
        samples = _dataset(stage, arrays(val_cases, image_key, name), 1, ctx.seed, 1)
        batches = list(samples.take(8))
        save_for_export(net, out / f"{name}_model", specs[name],
                        {**info, "stage": name, "model": stage.model, "variant": stage.variant},
                        representative=np.concatenate([np.asarray(x) for x, _ in batches]),
                        representative_labels=np.concatenate([np.asarray(y) for _, y in batches]))
    model_root = Path(config.export_dir) / config.export_name
    path = export_cascade_savedmodel(
        liver_net, tumour_net, model_root / str(next_version(model_root)), liver_spec=specs["liver"],
        tumour_spec=specs["tumour"], combination=config.combination, liver_threshold=config.liver_threshold,
        tumour_threshold=config.tumour_threshold, tumour_component_threshold=config.tumour_component_threshold,
        model_name=config.export_name, metadata=info,
    )
    print(f"exported the cascade to {path} (signatures segment, segment_bytes)")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    from tfmedseg.experiments.cli import experiment_main

    return experiment_main(
        argv,
        run,
        prog="tfmedseg.experiments.liver_ct_2d3d",
        description="Seed 002: LiTS liver-then-tumour cascade with efficient 2.5D/3D networks.",
        config_cls=LiverCT2D3DConfig,
        default_config="liver_ct_2d3d_quick.yaml",
        phantom_dataset="lits",
        default_phantom_cases=10,
    )


if __name__ == "__main__":
    sys.exit(main())
