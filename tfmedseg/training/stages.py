"""Training one stage of an experiment: :func:`train_stage` (any model, any datasets) and
:func:`segmentation_stage` (a registry network on a slice or patch geometry).

Both run :class:`~tfmedseg.training.trainer.Trainer` into ``<output_dir>/<stage name>`` (weights,
TensorBoard, history, resume) and return a :class:`StageResult` with the inference network and the
training time. :mod:`tfmedseg.experiments.runner` re-exports them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from tfmedseg.errors import ConfigError
from tfmedseg.training.config import TrainConfig

__all__ = ["SegmentationStage", "DetectionStage", "StageResult", "WEIGHT_CHOICES", "WEIGHT_FILES", "check_weight_choice",
           "check_stage_settings", "candidate_weights", "steps_for", "train_stage", "segmentation_stage"]

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
        select_weights: The weights the stage returns (:data:`WEIGHT_CHOICES`): ``trained`` (as
            training ended: early stopping's best when it is on), ``best`` (``best.weights.h5``,
            the best validation epoch), ``last`` or ``swa`` (the SWA average, a separate candidate
            otherwise: :attr:`StageResult.candidates`).
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
    select_weights: str = "trained"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"must be >= 1, got {self.batch_size}", path="batch_size")
        check_weight_choice(self.select_weights, self.train.swa_start_epoch)


#: What a stage may return: the model as training ended, or the weights of one candidate file.
WEIGHT_CHOICES = ("trained", "best", "last", "swa")
#: Candidate weight files of a stage directory.
WEIGHT_FILES = {"best": "best.weights.h5", "last": "last.weights.h5", "swa": "swa.weights.h5"}


def check_weight_choice(choice: str, swa_start_epoch: int) -> None:
    """ConfigError for an unknown ``select_weights`` or ``swa`` without SWA."""
    if choice not in WEIGHT_CHOICES:
        raise ConfigError(f"unknown value {choice!r}; allowed: {WEIGHT_CHOICES}", path="select_weights")
    if choice == "swa" and swa_start_epoch < 0:
        raise ConfigError("'swa' needs SWA on (train.swa_start_epoch >= 0)", path="select_weights")


def check_stage_settings(config: Any) -> None:
    """Check the settings every stage of ``config`` (an experiment's config dataclass, walked field by field) checks
    only when it starts: each :class:`~tfmedseg.training.config.TrainConfig`'s names and numbers
    (:func:`~tfmedseg.training.trainer.check_train_settings`) and each :class:`SegmentationStage`'s network name,
    sample order and augmentation preset. An experiment runs it before it reads any data, so that a typo in the
    second stage's settings is not found after the first stage has trained.

    Raises:
        ConfigError: The first invalid setting, named by its dotted key (``tumour.train.optimizer``).
    """
    from tfmedseg.augment.presets import PRESETS
    from tfmedseg.data.sampling import ORDERS
    from tfmedseg.models.registry import available
    from tfmedseg.training.trainer import check_train_settings

    def check(node: Any, prefix: str) -> None:
        if isinstance(node, TrainConfig):
            check_train_settings(node)
        if isinstance(node, SegmentationStage):
            if node.model not in available():
                raise ConfigError(f"unknown model name {node.model!r}; registered models: {available()}", path="model")
            if node.order not in ORDERS:
                raise ConfigError(f"unknown value {node.order!r}; allowed: {ORDERS}", path="order")
            if node.augmentation and node.augmentation not in PRESETS:
                raise ConfigError(f"unknown augmentation preset {node.augmentation!r}; choose one of {PRESETS}",
                                  path="augmentation")
        for field in dataclasses.fields(node):
            value = getattr(node, field.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                try:
                    check(value, f"{prefix}{field.name}.")
                except ConfigError as exc:
                    if exc.path is not None and exc.path.startswith(f"{prefix}{field.name}."):
                        raise
                    raise ConfigError(exc.reason, path=f"{prefix}{field.name}.{exc.path}") from exc

    check(config, "")


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
        candidates: Weight files of the stage that exist (``best``, ``last``, ``swa``: name -> path),
            to evaluate the others beside the selected weights.
        selected: Which weights ``model`` holds (:data:`WEIGHT_CHOICES`).
        training_model: The model the weight files were saved from (``model``'s training wrapper),
            for :func:`candidate_weights`.
    """

    model: Any
    timing: dict[str, float]
    history: dict[str, list]
    candidates: dict[str, Path] = dataclasses.field(default_factory=dict)
    selected: str = "trained"
    training_model: Any = None


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
    select_weights: str | None = None,
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
        select_weights: Instead of ``restore_best``: one of :data:`WEIGHT_CHOICES` (``best``,
            ``last``, ``swa``: that file is loaded; ``trained``: the model as training ended).

    Besides ``fit``'s wall time (``train_seconds``), the timing holds the seconds per training
    iteration measured on the steps alone (:class:`~tfmedseg.training.iteration_timer.IterationTimer`,
    the first step of each run excluded): ``iteration_seconds`` / ``iteration_seconds_std`` and,
    with ``units_per_step``, ``iteration_seconds_per_<unit>`` / ``..._std`` (seed 002's ``t / b``).
        **overrides: Further :class:`TrainConfig` fields to replace (e.g. ``image_every_epochs=0``).
    """
    import keras

    from tfmedseg.training.augmented import AugmentedModel
    from tfmedseg.training.trainer import Trainer

    from tfmedseg.training.iteration_timer import ITERATION_FILE, IterationTimer

    cfg = dataclasses.replace(train_config, steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                              output_dir=str(Path(output_dir) / name), seed=seed, **overrides)
    if select_weights is not None:
        check_weight_choice(select_weights, cfg.swa_start_epoch)
    timer = IterationTimer(Path(cfg.output_dir) / ITERATION_FILE)
    trainer = Trainer(cfg, build_model, metrics=metrics, epoch_metrics=epoch_metrics, callbacks=[timer])
    logger.info("training stage %s: %d steps per epoch, up to %d epochs", name, steps_per_epoch, cfg.epochs)
    start = time.perf_counter()
    history = trainer.fit(train_data, validation_data=validation_data)
    seconds = _accumulated_seconds(Path(cfg.output_dir), time.perf_counter() - start)
    losses = _history_losses(Path(cfg.output_dir)) or [float(v) for v in history.history.get("loss", [])]
    epochs = len(losses) or 1  # a resumed run counts the epochs of all its runs (history.csv), not only this call's
    timing = {"train_seconds": seconds, "epochs": float(epochs), "steps": float(epochs * steps_per_epoch),
              "final_loss": float(losses[-1]) if losses else math.nan}
    iterations = timer.total()
    timing.update(iteration_seconds=iterations.mean if iterations.count else math.nan,
                  iteration_seconds_std=iterations.std, iterations_timed=float(iterations.count))
    if units_per_step:
        timing[f"train_seconds_per_{unit}"] = seconds / (epochs * steps_per_epoch * units_per_step)
        per_unit = iterations.per_unit(units_per_step)
        timing[f"iteration_seconds_per_{unit}"] = per_unit["mean"]
        timing[f"iteration_seconds_per_{unit}_std"] = per_unit["std"]
    model = training_model = trainer.model
    stage_dir = Path(cfg.output_dir)
    candidates = {k: stage_dir / f for k, f in WEIGHT_FILES.items() if (stage_dir / f).is_file()}
    choice = select_weights or ("best" if restore_best else "trained")
    if choice != "trained":
        if choice in candidates:
            from tfmedseg.training.callbacks import load_weights_without_optimizer

            load_weights_without_optimizer(model, candidates[choice])
            logger.info("stage %s: selected the %s weights (%s)", name, choice, candidates[choice])
        elif select_weights is not None:
            raise ConfigError(f"stage {name} has no {WEIGHT_FILES[choice]} to select", path=stage_dir)
        else:
            choice = "trained"
    if isinstance(model, AugmentedModel):
        model = model.network
    keras.utils.set_random_seed(seed)
    return StageResult(model, timing, dict(history.history), candidates, choice, training_model)


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

    The training samples use ``stage.order``; in a multi-worker run (``TF_CONFIG``) each worker reads
    only its share of the training cases (:func:`~tfmedseg.data.distribute.worker_shard`);
    validation uses the geometry's default order with seed
    ``seed + 1`` and a batch no larger than the validation set. Time is reported per output slice.
    """
    from tfmedseg.augment.presets import build_preset
    from tfmedseg.data.distribute import worker_shard
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
    train_ds = geometry.dataset(train_cases, batch, order=stage.order, seed=seed, shard=worker_shard(), **fraction)
    val_ds = geometry.dataset(validation_cases, min(batch, max(1, val_units)), seed=seed + 1, **fraction)
    return train_stage(name, stage.train, build, train_ds, val_ds, output_dir=output_dir, seed=seed,
                       steps_per_epoch=steps, validation_steps=val_steps, select_weights=stage.select_weights,
                       units_per_step=batch * geometry.output_slices, unit="slice", **overrides)


@contextlib.contextmanager
def candidate_weights(result: StageResult, name: str):
    """Temporarily hold candidate ``name`` (``best``, ``last``, ``swa``, or ``result.selected``) in
    ``result.model``; the selected weights are back when the block ends.

    Yields:
        ``result.model`` with the candidate's weights.
    """
    if name == result.selected:
        yield result.model
        return
    if name not in result.candidates:
        raise ConfigError(f"no {name} weights in this stage (candidates: {sorted(result.candidates)})", path=name)
    kept = result.model.get_weights()
    target = result.training_model if result.training_model is not None else result.model
    from tfmedseg.training.callbacks import load_weights_without_optimizer

    load_weights_without_optimizer(target, result.candidates[name])
    try:
        yield result.model
    finally:
        result.model.set_weights(kept)
