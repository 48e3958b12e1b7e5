"""Seed 000: liver and tumour segmentation on 99mTc-MAA SPECT/CT (MA-Net / UNet++ / U-Net), TLR and SIRT doses.

Stages per fold of the seed's 3-fold patient split (Table 6, :func:`~tfmedseg.data.folds.contiguous_fold`):
(a) liver model on the CT window (L 30 / W 150) after the abdominal crop, inverse crop to the CT grid,
trained on the fold's patients plus 3DIRCADb-01 when ``ircadb`` is set (the seed's Table 3);
(b) tumour model on the SPECT/CT RGB display images, R,G histogram adjustment for abnormal studies;
(c) combined liver + tumour model (2 sigmoid channels) on the CT + SPECT/CT fusion (0.5 / 0.5, SSIM
matching). Table 8 recipe: Adam 1e-4, Dice loss, batch 16, 50 epochs. Per test patient: DSC / IoU,
TLR from the original SPECT counts on the predicted masks (GTM partial-volume corrected), volumes,
partition-model activity and doses, a JSON + Markdown + PNG report. Prints the rows in the layout of
the seed table named by ``table`` with the 3-fold mean; exports the liver and tumour networks.

Usage:
    python -m tfmedseg.experiments.maa_spect_liver [--config quick|paper|table16|...] [--data-dir DIR]
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tfmedseg.clinical.maa_evaluation import DosimetrySettings
from tfmedseg.config import check_choice
from tfmedseg.datasets.case import released_after
from tfmedseg.errors import ConfigError
from tfmedseg.experiments.cli import make_main
from tfmedseg.training.config import TrainConfig

logger = logging.getLogger(__name__)
STAGES = ("liver", "tumour", "combined")


def _seed_recipe() -> TrainConfig:  # Table 8
    return TrainConfig(optimizer="adam", learning_rate=1e-4, loss="dice", epochs=50, image_every_epochs=0,
                       loss_kwargs={"from_logits": False, "activation": "sigmoid", "batch_dice": True})


@dataclasses.dataclass
class StageConfig:
    """One network: smp-style architecture and encoder, its training recipe."""

    enabled: bool = True
    arch: str = "manet"
    encoder: str = "timm-efficientnet-b6"
    encoder_weights: str | None = None
    encoder_depth: int = 5
    decoder_channels: list = dataclasses.field(default_factory=lambda: [256, 128, 64, 32, 16])
    batch_size: int = 16
    steps_per_epoch: int | None = None
    flip: bool = False
    train: TrainConfig = dataclasses.field(default_factory=_seed_recipe)


@dataclasses.dataclass
class MaaSpectConfig:
    """Seed 000 experiment (defaults: the paper's Table 16 setting). ``hu_window``: the CT window
    (low, high) HU, the seed's "30 ... 150 HU" read as level 30 / width 150 (the other reading: [30, 150])."""

    table: str = "16"
    row: str = "MA-Net timm-EfficientNet-B6 + cropping + R,G adjustment"
    paper: dict = dataclasses.field(default_factory=dict)
    folds: list = dataclasses.field(default_factory=lambda: [1, 2, 3])
    max_cases: int = 0
    validation_fraction: float = 0.1
    size: int = 256
    crop: bool = True
    ct_channels: int = 3
    hu_window: tuple[float, float] = (-45.0, 105.0)
    adjust_rg: bool = True
    adjust_channels: str = "rg"
    ircadb: str | None = None
    ircadb_cases: int = 0
    fusion_weights: list = dataclasses.field(default_factory=lambda: [0.5, 0.5])
    match: str = "ssim"
    liver: StageConfig = dataclasses.field(default_factory=StageConfig)
    tumour: StageConfig = dataclasses.field(default_factory=StageConfig)
    combined: StageConfig = dataclasses.field(default_factory=StageConfig)
    dosimetry: DosimetrySettings = dataclasses.field(default_factory=DosimetrySettings)
    export: bool = True

    def __post_init__(self) -> None:
        check_choice(self.match, "match", ("ssim", "ssim_spect", "index"))
        check_choice(self.adjust_channels, "adjust_channels", ("rg", "rgb"))
        if not self.hu_window[1] > self.hu_window[0]:
            raise ConfigError(f"needs low < high, got {list(self.hu_window)}", path="hu_window")

    def input_kwargs(self) -> dict:
        """The keyword arguments of :func:`~tfmedseg.preprocessing.maa_inputs.prepare_maa_inputs`."""
        (low, high), c = self.hu_window, self
        return {"size": c.size, "level": (low + high) / 2, "width": high - low, "adjust_rg": c.adjust_rg, "crop": c.crop,
                "fusion_weights": tuple(c.fusion_weights), "match": c.match, "adjust_channels": c.adjust_channels,
                "fusion": c.combined.enabled}


def _stage_arrays(prepared: dict, ids: list, stage: str, ct_channels: int, extra_ct: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    parts = [prepared[i] for i in ids]
    if stage == "liver":
        x = np.concatenate([p.ct for p in parts] + [e.ct for e in extra_ct])
        y = np.concatenate([p.ct_masks[..., :1] for p in parts] + [e.masks[..., :1] for e in extra_ct])
        return np.repeat(x, ct_channels, axis=-1), y
    if stage == "tumour":
        return np.concatenate([p.display for p in parts]), np.concatenate([p.display_masks[..., 1:] for p in parts])
    both = np.concatenate([p.fused_masks for p in parts])
    return np.concatenate([p.fused for p in parts]), np.stack([both[..., 0] & ~both[..., 1], both[..., 1]], -1)


def _ircadb_liver_slices(ctx, cfg, kwargs: dict) -> list:
    """3DIRCADb-01 CTs for the liver stage (``ircadb``: a root, or ``phantoms`` for generated ones in
    the real layout, drawn with another seed than the MAA phantoms so no anatomy repeats)."""
    if not cfg.ircadb:
        return []
    from tfmedseg.experiments import runner
    from tfmedseg.preprocessing.maa_inputs import prepare_ct_slices

    root = cfg.ircadb
    if root == "phantoms":
        if not ctx.used_phantoms or cfg.ircadb_cases < 1:
            raise ConfigError("'phantoms' needs the MAA phantoms and ircadb_cases >= 1; with --data-dir give the "
                              "3DIRCADb-01 root (--set ircadb=/path/3Dircadb1) or ircadb=null", path="ircadb")
        from tfmedseg.datasets.phantoms import ensure_phantoms

        seed = ctx.seed + 7919
        root = ensure_phantoms("ircadb", Path(ctx.data_dir).parent / f"ircadb-n{cfg.ircadb_cases}-s{seed}", cfg.ircadb_cases, seed)
    ct_kwargs = {k: kwargs[k] for k in ("size", "level", "width", "crop")}
    return [prepare_ct_slices(c.images["ct"].array, np.asarray(c.label.array), **ct_kwargs)
            for c in released_after(runner.load_cases("ircadb", root, cfg.ircadb_cases), "preparing 3DIRCADb")]


def _train(name: str, sc: StageConfig, prepared: dict, train_ids: list, val_ids: list, cfg, out: Path, seed: int,
           extra_ct: tuple = ()):
    """One stage through :func:`~tfmedseg.experiments.runner.train_stage` (best validation-loss epoch);
    returns the network and up to 8 representative export samples (slices with target)."""
    import keras

    from tfmedseg.data.arrays import image_mask_dataset
    from tfmedseg.experiments import runner
    from tfmedseg.models import registry

    x, y = _stage_arrays(prepared, train_ids, name.split("_")[-1], cfg.ct_channels, extra_ct)
    xv, yv = _stage_arrays(prepared, val_ids, name.split("_")[-1], cfg.ct_channels)
    steps = runner.steps_for(len(x), sc.batch_size, sc.steps_per_epoch)

    def build():
        return registry.build(sc.arch, encoder=sc.encoder, encoder_weights=sc.encoder_weights, classes=y.shape[-1],
                              encoder_depth=sc.encoder_depth, decoder_channels=tuple(sc.decoder_channels),
                              input_shape=x.shape[1:], activation="sigmoid")

    logger.info("stage %s: %d training / %d validation images, %d steps per epoch", name, len(x), len(xv), steps)
    keras.utils.set_random_seed(seed)  # shuffle(seed=) pairs with TF's global seed: the stage's, as the Trainer sets
    stage = runner.train_stage(name, sc.train, build, image_mask_dataset(x, y, sc.batch_size, seed=seed, flip=sc.flip),
                               image_mask_dataset(xv, yv, sc.batch_size, seed=seed + 1, shuffle=False), output_dir=out,
                               seed=seed, steps_per_epoch=steps, validation_steps=max(1, -(-len(xv) // sc.batch_size)),
                               restore_best=True)
    fg = np.flatnonzero(y.reshape(len(y), -1).any(1))
    pick = fg[np.linspace(0, len(fg) - 1, min(8, len(fg))).astype(int)] if len(fg) else np.arange(min(8, len(x)))
    return stage.model, (x[pick], y[pick])


def run(ctx) -> dict[str, Any]:
    """Train and evaluate every configured fold; returns the summary."""
    from tfmedseg.clinical.maa_evaluation import evaluate_patient
    from tfmedseg.clinical.maa_report import write_patient_report
    from tfmedseg.clinical.maa_tables import format_results, seed_table_17
    from tfmedseg.data.folds import contiguous_fold, validation_split
    from tfmedseg.experiments import runner
    from tfmedseg.preprocessing.maa_inputs import prepare_maa_inputs

    cfg = ctx.config
    out = Path(ctx.output_dir)
    cases = runner.load_cases("maa_spect", ctx.data_dir, cfg.max_cases)
    kwargs = cfg.input_kwargs()
    prepared = {c.case_id: prepare_maa_inputs(c.images["ct"].array, c.meta["display"], np.asarray(c.label.array), **kwargs)
                for c in released_after(cases, "preparing patients")}
    stages = [s for s in STAGES if getattr(cfg, s).enabled]
    ircadb = _ircadb_liver_slices(ctx, cfg, kwargs) if "liver" in stages else []
    rows, times, exported = [], {s: [0.0, 0] for s in stages}, {}
    for fold in cfg.folds:
        train_idx, test_idx = contiguous_fold(len(cases), int(fold))
        train_ids, val_ids = validation_split([cases[i].case_id for i in train_idx], cfg.validation_fraction, ctx.seed + fold)
        models, samples = {}, {}
        for stage in stages:
            models[stage], samples[stage] = _train(f"fold{fold}_{stage}", getattr(cfg, stage), prepared, train_ids, val_ids,
                                                   cfg, out, ctx.seed + 100 * fold, ircadb if stage == "liver" else ())

        def evaluate_one(case, fold=fold, models=models) -> runner.CaseOutcome:
            result = evaluate_patient(case, prepared[case.case_id], models, cfg.dosimetry)
            write_patient_report(out / f"fold{fold}" / "patients", case.case_id, result.record, result.ct_hu,
                                 result.spect_on_ct, result.liver, result.tumour)
            return runner.CaseOutcome({"fold": fold, **result.row}, seconds=sum(result.seconds.values()),
                                      units=sum(result.images.values()), extra=result)

        evaluation = runner.evaluate_cases([cases[i] for i in test_idx], evaluate_one, what="patient")
        rows += evaluation.rows
        for result in (o.extra for o in evaluation.outcomes):
            for stage in stages:
                times[stage][0] += result.seconds[stage]
                times[stage][1] += result.images[stage]
        exported = {"models": models, "samples": samples, "fold": fold}
    text, summary = format_results(cfg.table, cfg.row, rows, stages, paper=cfg.paper)
    summary["ircadb_ct_slices"] = int(sum(len(e.ct) for e in ircadb))  # 3DIRCADb slices in the liver training
    text += "\n" + seed_table_17({s: t / max(1, n) for s, (t, n) in times.items()})
    (out / "summary.md").write_text(text)
    print(text)
    if cfg.export:
        summary["export"] = _export(exported, cfg, out)
    runner.write_summary_json(out, summary, rows=rows)
    return summary


def _export(exported: dict, cfg, out: Path) -> dict:
    """Export contract (model.keras + spec + representative samples) of the last fold's liver and
    tumour networks (:func:`~tfmedseg.experiments.runner.export_stage`); ``python -m tfmedseg.export
    <dir>`` writes SavedModel + TFLite and the table."""
    import tensorflow as tf

    from tfmedseg.experiments import runner
    from tfmedseg.export.spec import IntensitySpec, ServingSpec

    dirs = {}
    for stage in ("liver", "tumour"):
        if stage in exported.get("models", {}):
            x, y = exported["samples"][stage]
            intensity = IntensitySpec(low=cfg.hu_window[0], high=cfg.hu_window[1])
            spec = ServingSpec(mode="2d", input_size=(cfg.size, cfg.size), labels=("background", stage), threshold=0.5,
                               intensity=intensity if stage == "liver" else IntensitySpec(kind="none"))
            info = {"seed": "000", "stage": stage, "fold": exported["fold"], "arch": getattr(cfg, stage).arch,
                    "encoder": getattr(cfg, stage).encoder}
            samples = tf.data.Dataset.from_tensors((x, y[..., 0].astype(np.int32)))  # one batch: all of them
            dirs[stage] = str(runner.export_stage(exported["models"][stage], out / "export" / stage, spec, info, samples))
    return dirs


main = make_main(run, config_cls=MaaSpectConfig, phantom_dataset="maa_spect", default_phantom_cases=22)

if __name__ == "__main__":
    raise SystemExit(main())
