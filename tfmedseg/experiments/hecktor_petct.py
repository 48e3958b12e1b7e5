"""Seed 004: HECKTOR 2021 PET/CT GTVt segmentation with the SE U-Net / RRSE U-Net (Tables 1-5).

``python -m tfmedseg.experiments.hecktor_petct [--config quick|paper|table1..table5|FILE] [--data-dir HECKTOR]``

Wiring only, on the stage runner (:mod:`tfmedseg.experiments.runner`: load_cases, seeded_split,
case_cache/prepare_cases, train_stage, write_summary_json, export_stage); choices (also in
docs/experiments.md):

1. data: the HECKTOR 2021 layout (:func:`tfmedseg.datasets.hecktor.load_hecktor`) or its phantoms;
   patients split ``4:1`` (Tables 1-3, 5) or ``6:1`` (Table 4), seeded;
2. cache: CT, PET and GTVt resampled onto the cube around the HECKTOR box (``cube_size`` voxels of
   ``spacing_mm``; seed: 144 at 1 mm), CT clipped to [-1024, 1024] -> [-1, 1]
   (:func:`tfmedseg.preprocessing.petct.petct_cube`);
3. train: whole cubes (seed) or patches, z-scored per patch and channel
   (:func:`tfmedseg.data.petct.petct_dataset`); rotation + mirroring (+ Gaussian noise, Table 4) on
   the device; soft Dice with smoothing 1 on the GTVt channel; Adam, cosine annealing 1e-3 -> 1e-5
   restarting every 25 epochs, 100 epochs, batch 1-2;
4. evaluate the validation patients on the cube (:mod:`tfmedseg.inference.petct`): DSC at 0.5 per
   patient and aggregated (mean and pooled), precision, recall, HD95; a NIfTI per patient on the
   original CT grid inside the box with the CT header (``predictions/<pid>.nii.gz``);
5. report the run's row in the layout of its seed table and export a SavedModel whose
   ``segment_petct`` signature takes CT and PET and crops, normalises and tiles in-graph.
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
from tfmedseg.errors import ConfigError
from tfmedseg.experiments.cli import make_main
from tfmedseg.training.config import TrainConfig

__all__ = ["TABLE_COLUMNS", "HecktorConfig", "main", "run"]

#: Columns of the seed's Tables 1-5 (the run prints its row in its table's layout).
TABLE_COLUMNS = {
    "table1": ("Normalization", "Filters", "Batch", "Augmentation", "DSC"),
    "table2": ("Normalization", "Filters", "Batch", "Augmentation", "DSC"),
    "table3": ("Normalization", "Filters", "Batch", "Augmentation", "DSC"),
    "table4": ("Normalization", "Filters", "Batch", "Augmentation", "Split", "DSC"),
    "table5": ("Filters", "RRCNN contracting", "RRCNN expansive", "Upsampling pathway", "DSC"),
}
SPLITS = {"4:1": 0.2, "6:1": 1.0 / 7.0}


def _seed004_train() -> TrainConfig:
    """Seed 004 L56-72: soft Dice (+1) on the tumour channel, Adam, cosine restarts 1e-3 -> 1e-5 / 25 epochs."""
    return TrainConfig(optimizer="adam", learning_rate=1e-3, schedule="cosine_restarts",
                       schedule_kwargs={"min_lr": 1e-5, "period_epochs": 25},
                       loss="dice", loss_kwargs={"from_logits": False, "include_background": False, "smooth": 1.0},
                       epochs=100, monitor="val_loss", image_every_epochs=10)


def _gtvt_dice() -> list:
    """Pooled GTVt Dice (argmax == 1) per epoch, training and validation (history.csv, TensorBoard)."""
    from tfmedseg.metrics.keras_metrics import DiceMetric

    return [DiceMetric(class_id=1, name="dice")]


@dataclasses.dataclass
class HecktorConfig:
    """Seed 004 settings (defaults: the paper's Table 3 best row on real HECKTOR 2021).

    Attributes:
        dataset: Loader name. max_cases: use the first N patients (0: all).
        split: ``"4:1"`` or ``"6:1"`` train:validation patients.
        cube_size / spacing_mm: The cube around the HECKTOR box (144 voxels, 1 mm).
        patch_size: Training / sliding-window patch edge; 0: the whole cube (seed).
        foreground_fraction: Share of GTVt-centred patches (patch training only).
        samples_per_epoch: Samples per epoch (0: each training patient once).
        model / model_kwargs: Registered builder (``se_unet``, ``rrse_unet``, ``basic_unet``) and its arguments.
        batch_size: 1 or 2 in the seed.
        augmentation: Preset (``seed004_rot_mirror``, ``seed004_rot_mirror_noise``) or None.
        noise_variance: Maximum Gaussian-noise variance of the noise preset (Table 4: 0.1 or 0.01).
        table: Seed table whose layout the run's row is printed in (``table1`` .. ``table5``).
        threshold / overlap: GTVt threshold (0.5) and sliding-window overlap.
        export_dir / export_name: SavedModel root and model name ("" skips the export).
    """

    dataset: str = "hecktor"
    max_cases: int = 0
    split: str = "4:1"
    cube_size: int = 144
    spacing_mm: float = 1.0
    patch_size: int = 0
    foreground_fraction: float = 0.5
    samples_per_epoch: int = 0
    model: str = "se_unet"
    model_kwargs: dict = dataclasses.field(default_factory=lambda: {"base_filters": 24, "norm": "se_instance"})
    batch_size: int = 1
    augmentation: str | None = "seed004_rot_mirror"
    noise_variance: float = 0.1
    table: str = "table3"
    threshold: float = 0.5
    overlap: float = 0.5
    validation_steps: int = 0
    train: TrainConfig = dataclasses.field(default_factory=_seed004_train)
    export_dir: str = "saved_models"
    export_name: str = "hecktor_petct"

    def __post_init__(self) -> None:
        for value, allowed, key in ((self.split, SPLITS, "split"), (self.table, TABLE_COLUMNS, "table")):
            if value not in allowed:
                raise ConfigError(f"must be one of {sorted(allowed)}, got {value!r}", path=key)
        patch = self.patch_size or self.cube_size
        if self.cube_size < 16 or self.cube_size % 16 or self.cube_size % patch or patch % 16:
            raise ConfigError(f"cube_size ({self.cube_size}) and patch_size ({patch}) must be multiples of 16, "
                              "the patch dividing the cube", path="patch_size")
        if self.batch_size < 1:
            raise ConfigError(f"must be >= 1, got {self.batch_size}", path="batch_size")


def table_row(config: HecktorConfig, dsc: float) -> str:
    """The run's row, markdown, in the layout of ``config.table``."""
    kw = config.model_kwargs
    if config.table == "table5":
        from tfmedseg.models.segmentation.se_unet import RRSE_VARIANTS

        kw = {**RRSE_VARIANTS.get(kw.get("variant", ""), {}), **kw}
        cells = [kw.get("base_filters", 24), len(kw.get("encoder_rrcnn_levels", ())) or "-",
                 len(kw.get("decoder_rrcnn_levels", ())) or "-", "yes" if kw.get("upsampling_pathway", True) else "no"]
    else:
        norm = {"se_instance": "InstanceNorm3d", "se_batch": "BatchNorm3d"}.get(kw.get("norm", ""), kw.get("norm", "instance"))
        aug = {None: "none", "seed004_rot_mirror": "rotation + mirroring"}.get(
            config.augmentation, f"rotation + mirroring + noise {config.noise_variance:g}")
        cells = [norm, kw.get("base_filters", 24), config.batch_size, aug] + ([config.split] if config.table == "table4" else [])
    header = TABLE_COLUMNS[config.table]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      "| " + " | ".join(str(c) for c in cells) + f" | {dsc:.3f} |"])


def run(ctx) -> dict[str, Any]:
    """Train, evaluate, report and export; returns the summary."""
    from tfmedseg.augment.presets import build_preset
    from tfmedseg.data.petct import petct_dataset
    from tfmedseg.data.source import CaseArrays
    from tfmedseg.experiments import runner
    from tfmedseg.export.petct import export_petct_savedmodel
    from tfmedseg.export.spec import IntensitySpec, ServingSpec
    from tfmedseg.inference.petct import (
        petct_case_metrics,
        predict_cube,
        write_prediction_nifti,
    )
    from tfmedseg.models import registry
    from tfmedseg.preprocessing.petct import petct_cube
    from tfmedseg.training.augmented import AugmentedModel

    config: HecktorConfig = ctx.config
    out = Path(ctx.output_dir)
    cases = runner.load_cases(config.dataset, ctx.data_dir, config.max_cases)
    train_cases, val_cases = runner.seeded_split(cases, SPLITS[config.split], ctx.seed)
    cache = runner.case_cache(ctx, "hecktor_petct", {"cube_size": config.cube_size, "spacing_mm": config.spacing_mm})
    cubes = runner.prepare_cases(cases, cache, lambda c: (
        dict(zip(("image", "label"), petct_cube(c, config.cube_size, config.spacing_mm)[:2])), (config.spacing_mm,) * 3, {}))
    train_arrays, val_arrays = ([CaseArrays(c.case_id, cubes[c.case_id]["image"], cubes[c.case_id]["label"]) for c in group]
                                for group in (train_cases, val_cases))
    patch = config.patch_size or config.cube_size
    kwargs = {"foreground_fraction": config.foreground_fraction, "samples_per_epoch": config.samples_per_epoch or None}
    train_ds = petct_dataset(train_arrays, config.batch_size, (patch,) * 3, seed=ctx.seed, **kwargs)
    val_ds = petct_dataset(val_arrays, 1, (patch,) * 3, seed=ctx.seed + 1, **kwargs)
    overrides = {"RandomGaussianNoise": {"max_variance": config.noise_variance}} if config.augmentation and "noise" in config.augmentation else None

    def build():
        net = registry.build(config.model, input_shape=(patch, patch, patch, 2), classes=2, **config.model_kwargs)
        aug = build_preset(config.augmentation, ndim=3, seed=ctx.seed, overrides=overrides) if config.augmentation else None
        return AugmentedModel(net, aug, name="hecktor_training")

    steps = runner.steps_for(config.samples_per_epoch or len(train_arrays), config.batch_size)
    stage = runner.train_stage("train", config.train, build, train_ds, val_ds, output_dir=out, seed=ctx.seed,
                               steps_per_epoch=steps, validation_steps=config.validation_steps or len(val_arrays),
                               units_per_step=config.batch_size, unit="cube", metrics=_gtvt_dice)
    net, train_seconds = stage.model, stage.timing["train_seconds"]

    rows = []
    for case, arrays in zip(val_cases, val_arrays):
        t0 = time.perf_counter()
        prob = predict_cube(net, arrays.image, (patch,) * 3, overlap=config.overlap)
        seconds = time.perf_counter() - t0
        metrics = petct_case_metrics(prob, arrays.label, (config.spacing_mm,) * 3, config.threshold)
        _, _, crop = petct_cube(case, config.cube_size, config.spacing_mm)
        write_prediction_nifti(prob > config.threshold, crop, case.images["ct"], out / "predictions" / f"{case.case_id}.nii.gz")
        rows.append({"patient": case.case_id, "center": case.meta.get("center", ""), **metrics, "predict_seconds": seconds})
    with open(out / "per_patient.csv", "w") as fh:
        fh.write(",".join(rows[0]) + "\n" + "".join(",".join(str(v) for v in r.values()) + "\n" for r in rows))
    tp, pred, ref = (sum(r[k] for r in rows) for k in ("tp", "pred", "ref"))
    summary = {f"{k} mean": float(np.nanmean([r[k] for r in rows])) for k in ("dsc", "precision", "recall", "hd95_mm")
               if not all(math.isnan(r[k]) for r in rows)}
    summary.update({"dsc pooled": 2 * tp / (pred + ref) if pred + ref else 1.0, "patients": len(rows),
                    "train_seconds": train_seconds, "predict_seconds_per_patient": float(np.mean([r["predict_seconds"] for r in rows]))})
    text = (f"# Seed 004 {config.table.replace('table', 'Table ')} layout, {len(rows)} validation patient(s), "
            f"split {config.split}\n\n{table_row(config, summary['dsc mean'])}\n\n"
            + "\n".join(f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in summary.items()) + "\n")
    (out / "summary.md").write_text(text)
    runner.write_summary_json(out, summary, timing=stage.timing)
    print("\n" + text)
    if config.export_name:
        path = export_petct_savedmodel(net, runner.next_export_dir(config.export_dir, config.export_name), cube_size=config.cube_size,
                                       spacing_mm=config.spacing_mm, model_name=config.export_name,
                                       metadata={"seed": "004", "summary": summary, "model": config.model})
        ctx.exported(path, "signatures serving_default, segment_petct")
    spec = ServingSpec(mode="3d_patch", patch_size=(patch,) * 3, labels=("background", "gtvt"),
                       spacing_mm=(config.spacing_mm,) * 3, intensity=IntensitySpec(kind="none"))
    runner.export_stage(net, out / "model", spec, {"seed": "004", "model": config.model, "summary": summary},
                        val_ds, max_batches=min(8, len(val_arrays)))
    return summary


main = make_main(run, config_cls=HecktorConfig, phantom_dataset="hecktor", default_phantom_cases=12)

if __name__ == "__main__":
    sys.exit(main())
