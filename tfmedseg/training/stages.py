"""Training one stage of an experiment: :func:`train_stage` (any model, any datasets) and
:func:`segmentation_stage` (a registry network on a slice or patch geometry).

Both run :class:`~tfmedseg.training.trainer.Trainer` into ``<output_dir>/<stage name>`` (weights,
TensorBoard, history, resume) and return a :class:`StageResult` with the inference network and the
training time. :mod:`tfmedseg.experiments.runner` re-exports them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from tfmedseg.errors import ConfigError
from tfmedseg.training.config import TrainConfig

__all__ = ["SegmentationStage", "DetectionStage", "StageResult", "steps_for", "train_stage", "segmentation_stage"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SegmentationStage:
    """Settings of one segmentation stage trained on slices, slabs or patches.

    Attributes:
        model: Registered builder name (:func:`tfmedseg.models.registry.build`).
        variant: Passed to the builder as ``variant`` when not None.
        model_kwargs: Further builder arguments.
        batch_size: Global batch size (samples).
        augmentation: Augmentation preset (:mod:`tfmedseg.augment.presets`), or None.
        train: Optimisation settings (:class:`~tfmedseg.training.trainer.TrainConfig`).
        steps_per_epoch: Optimizer steps per epoch; None: every training sample once.
        validation_steps: Validation batches per epoch; None: every validation sample once.
        order: Epoch order of the samples (:data:`tfmedseg.data.sampling.ORDERS`).
        foreground_fraction: Share of foreground-centred samples for ``order: foreground``.
    """

    model: str = "mobilenetv2_2d"
    variant: str | None = "default"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    batch_size: int = 8
    augmentation: str | None = None
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    order: str = "volume"
    foreground_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"must be >= 1, got {self.batch_size}", path="batch_size")


@dataclasses.dataclass
class DetectionStage:
    """Settings of one detection stage (the datasets are built by the experiment).

    Attributes:
        batch_size: Global batch size.
        augmentation: Augmentation preset (:mod:`tfmedseg.augment.presets`) or None.
        augmentation_overrides: Layer class name -> arguments replacing the preset's.
        train: Optimiser, epochs, callbacks (:class:`~tfmedseg.training.trainer.TrainConfig`).
        steps_per_epoch: Optimizer steps per epoch; None: one pass over the training images.
    """

    batch_size: int = 16
    augmentation: str | None = None
    augmentation_overrides: dict = dataclasses.field(default_factory=dict)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    steps_per_epoch: int | None = None

    def augmenter(self, seed: int, *, input_size: int | None = None, reference_size: int = 320):
        """The augmentation layer (None without a preset); a preset's pixel translation is scaled by
        ``input_size / reference_size`` (seed 001's 16 px are at 320 x 320)."""
        from tfmedseg.augment.presets import build_preset

        if not self.augmentation:
            return None
        overrides = {k: dict(v) for k, v in self.augmentation_overrides.items()}
        if input_size is not None and self.augmentation == "seed001_affine_bc":
            overrides["RandomGeometric"] = {"translation": 16.0 * input_size / reference_size,
                                            **overrides.get("RandomGeometric", {})}
        return build_preset(self.augmentation, ndim=2, seed=seed, overrides=overrides)


@dataclasses.dataclass
class StageResult:
    """A trained stage.

    Attributes:
        model: The trained inference network (augmentation wrapper removed).
        timing: ``train_seconds``, ``epochs``, ``steps``, ``final_loss`` and, when the caller gave
            ``units_per_step``, ``train_seconds_per_<unit>``.
        history: ``keras.callbacks.History.history`` of this run.
    """

    model: Any
    timing: dict[str, float]
    history: dict[str, list]


def steps_for(units: int, batch_size: int, override: int | None = None) -> int:
    """Steps of one pass over ``units`` samples (at least 1), or ``override`` when set."""
    return int(override) if override else max(1, units // batch_size)


def _accumulated_seconds(stage_dir: Path, seconds: float) -> float:
    """Training seconds of a stage over all its (resumed) runs, kept in ``train_seconds.json``."""
    import json

    path = stage_dir / "train_seconds.json"
    try:
        seconds += float(json.loads(path.read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    path.write_text(json.dumps({"seconds": seconds}))
    return seconds


def _history_losses(stage_dir: Path) -> list[float]:
    """The ``loss`` column of ``history.csv`` (every completed epoch, across resumed runs)."""
    import csv

    try:
        with open(stage_dir / "history.csv", newline="") as fh:
            return [float(r["loss"]) for r in csv.DictReader(fh) if r.get("loss") not in (None, "")]
    except (OSError, ValueError, KeyError):
        return []


def train_stage(
    name: str,
    train_config,
    build_model: Callable[[], Any],
    train_data,
    validation_data=None,
    *,
    output_dir,
    seed: int,
    steps_per_epoch: int,
    validation_steps: int | None = None,
    units_per_step: int | None = None,
    unit: str = "sample",
    metrics=None,
    epoch_metrics: Callable[[Any], dict] | None = None,
    restore_best: bool = False,
    **overrides: Any,
) -> StageResult:
    """Train one stage with :class:`~tfmedseg.training.trainer.Trainer` into ``output_dir/name``.

    Args:
        name: Stage name (sub-directory of ``output_dir``: weights, TensorBoard logs, history).
        train_config: The stage's :class:`~tfmedseg.training.trainer.TrainConfig`.
        build_model: Zero-argument builder of the model to train (called in the strategy scope);
            an :class:`~tfmedseg.training.augmented.AugmentedModel` is unwrapped to its network.
        train_data / validation_data: Repeated tf.data datasets of batches.
        output_dir: Run directory.
        seed: Seed of the stage (model initialisation; Keras' global RNG is re-seeded with it after
            training, so the next stage starts from the same state however this one ended).
        steps_per_epoch / validation_steps: Steps per epoch.
        units_per_step: Output units (slices, images) per optimizer step, for
            ``train_seconds_per_<unit>``.
        unit: Name of that unit.
        metrics / epoch_metrics: Keras metrics for ``compile`` and a ``model -> {name: value}``
            function run after each epoch (see :class:`~tfmedseg.training.trainer.Trainer`): both
            reach TensorBoard's ``logs/validation`` per epoch.
        restore_best: Load ``best.weights.h5`` (the epoch of the best ``monitor`` value) into the
            model after training, when it exists; False: the last epoch's weights.
        **overrides: Further :class:`TrainConfig` fields to replace (e.g. ``image_every_epochs=0``).
    """
    import keras

    from tfmedseg.training.augmented import AugmentedModel
    from tfmedseg.training.trainer import Trainer

    cfg = dataclasses.replace(train_config, steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                              output_dir=str(Path(output_dir) / name), seed=seed, **overrides)
    trainer = Trainer(cfg, build_model, metrics=metrics, epoch_metrics=epoch_metrics)
    logger.info("training stage %s: %d steps per epoch, up to %d epochs", name, steps_per_epoch, cfg.epochs)
    start = time.perf_counter()
    history = trainer.fit(train_data, validation_data=validation_data)
    seconds = _accumulated_seconds(Path(cfg.output_dir), time.perf_counter() - start)
    losses = _history_losses(Path(cfg.output_dir)) or [float(v) for v in history.history.get("loss", [])]
    epochs = len(losses) or 1  # a resumed run counts the epochs of all its runs (history.csv), not only this call's
    timing = {"train_seconds": seconds, "epochs": float(epochs), "steps": float(epochs * steps_per_epoch),
              "final_loss": float(losses[-1]) if losses else math.nan}
    if units_per_step:
        timing[f"train_seconds_per_{unit}"] = seconds / (epochs * steps_per_epoch * units_per_step)
    model = trainer.model
    best = Path(cfg.output_dir) / "best.weights.h5"
    if restore_best and best.is_file():
        model.load_weights(best)
    if isinstance(model, AugmentedModel):
        model = model.network
    keras.utils.set_random_seed(seed)
    return StageResult(model, timing, dict(history.history))


def segmentation_stage(
    name: str,
    stage: SegmentationStage,
    geometry,
    train_cases: Sequence,
    validation_cases: Sequence,
    *,
    output_dir,
    seed: int,
    inplane_size: int | Sequence[int] | None = None,
    classes: int = 2,
    **overrides: Any,
) -> StageResult:
    """Train a registry network on one geometry's samples (the common segmentation stage).

    Args:
        name: Stage name.
        stage: Its :class:`SegmentationStage` settings.
        geometry: :class:`~tfmedseg.data.geometry.SliceGeometry` or
            :class:`~tfmedseg.data.geometry.PatchGeometry`; gives the input shape, the samples per
            epoch and the datasets.
        train_cases / validation_cases: :class:`~tfmedseg.data.source.CaseArrays` (labeled).
        output_dir / seed: As :func:`train_stage`.
        inplane_size: Network in-plane size (slice geometries).
        classes: Output channels of the network.
        **overrides: Further :class:`TrainConfig` fields to replace.

    The training samples use ``stage.order``; validation uses the geometry's default order with seed
    ``seed + 1`` and a batch no larger than the validation set. Time is reported per output slice.
    """
    from tfmedseg.augment.presets import build_preset
    from tfmedseg.models import registry
    from tfmedseg.training.augmented import AugmentedModel

    batch = stage.batch_size
    steps = steps_for(geometry.units(train_cases), batch, stage.steps_per_epoch)
    val_units = geometry.units(validation_cases)
    val_steps = steps_for(val_units, batch, stage.validation_steps)
    kwargs = dict(stage.model_kwargs)
    if stage.variant is not None:
        kwargs["variant"] = stage.variant

    def build():
        net = registry.build(stage.model, input_shape=geometry.input_shape(inplane_size), classes=classes, **kwargs)
        augmentation = build_preset(stage.augmentation, ndim=geometry.rank, seed=seed) if stage.augmentation else None
        return AugmentedModel(net, augmentation, name=f"{name}_training")

    fraction = dict(foreground_fraction=stage.foreground_fraction)
    train_ds = geometry.dataset(train_cases, batch, order=stage.order, seed=seed, **fraction)
    val_ds = geometry.dataset(validation_cases, min(batch, max(1, val_units)), seed=seed + 1, **fraction)
    return train_stage(name, stage.train, build, train_ds, val_ds, output_dir=output_dir, seed=seed,
                       steps_per_epoch=steps, validation_steps=val_steps,
                       units_per_step=batch * geometry.output_slices, unit="slice", **overrides)
