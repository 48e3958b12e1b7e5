"""The trainer: a thin layer over ``keras.Model.fit`` driven by a :class:`TrainConfig`.

What it adds to ``fit``: strategy and precision selection, optimizer / loss / schedule by name
(checked before anything is built), resumable checkpoints (:class:`ResumeCheckpoint`), best and
last weights, TensorBoard scalars and image overlays, early stopping, ReduceLROnPlateau, SWA,
and the resolved config and package version written next to the weights.

Output directory layout::

    output_dir/
      config.yaml          resolved TrainConfig
      version.json         tfmedseg / TensorFlow / Keras versions, strategy, replicas
      best.weights.h5      weights of the best epoch (``monitor``), best.json: its epoch and value
      swa.weights.h5       the SWA average (when ``swa_start_epoch >= 0``), a separate candidate
      last.weights.h5      weights after the last completed epoch
      history.csv          one row per completed epoch (appended across restarts; rows of epochs
                           redone after a resume are replaced, not repeated)
      backup/              resume checkpoints (latest.json -> ckpt-<epoch>/)
      logs/                TensorBoard: train/ and validation/ scalars, images/ overlays

Example:
    >>> import keras, numpy as np, tensorflow as tf
    >>> def build():
    ...     inp = keras.Input((8, 8, 1))
    ...     return keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same")(inp))
    >>> cfg = TrainConfig(loss="bce_with_logits", epochs=1, steps_per_epoch=2, output_dir="/tmp/run",
    ...                   strategy="default", verbose=0)
    >>> ds = tf.data.Dataset.from_tensors((np.ones((2, 8, 8, 1), "float32"),) * 2).repeat()
    >>> history = Trainer(cfg, build).fit(ds)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

import tfmedseg
from tfmedseg.command import interruptible, sigterm_as_keyboard_interrupt
from tfmedseg.config import save_config
from tfmedseg.errors import ConfigError
from tfmedseg.losses import LOSS_NAMES, get_loss
from tfmedseg.training import callbacks as cbs
from tfmedseg.training.bias_gradient import install_float32_gradient_sums
from tfmedseg.training.config import TrainConfig
from tfmedseg.training.epoch_log import EpochLogger, fit_verbosity
from tfmedseg.training.epoch_metrics import EpochMetrics
from tfmedseg.training.optimizers import OPTIMIZER_NAMES, get_optimizer
from tfmedseg.training.schedules import SCHEDULE_NAMES, get_schedule
from tfmedseg.training.strategy import (
    PRECISION_NAMES,
    STRATEGY_NAMES,
    _set_policy,
    is_chief,
    make_strategy,
    patch_multiworker_build,
    resolve_precision,
    task_index,
)

_log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "Trainer", "validate_config", "check_train_settings", "sigterm_as_keyboard_interrupt"]


def validate_config(cfg: TrainConfig) -> None:
    """Check every name and number of ``cfg`` (nothing is built).

    Raises:
        ConfigError: The first invalid field, named, with the allowed values.
    """
    check_train_settings(cfg)
    needs_steps = cfg.schedule != "constant" or cfg.warmup_epochs > 0
    if needs_steps and cfg.steps_per_epoch is None:
        raise ConfigError(f"schedule {cfg.schedule!r} / warm-up need steps_per_epoch to convert epochs to steps", path="steps_per_epoch")


def check_train_settings(cfg: TrainConfig) -> None:
    """The checks of :func:`validate_config` that hold before a stage fills in its own fields (``steps_per_epoch``
    comes from the data): names and numbers as the config file or ``--set`` gave them. An experiment runs them on
    every stage before it reads any data (:func:`tfmedseg.training.stages.check_stage_settings`).

    Raises:
        ConfigError: The first invalid field, named, with the allowed values.
    """
    checks = [
        ("optimizer", cfg.optimizer, OPTIMIZER_NAMES),
        ("loss", cfg.loss, LOSS_NAMES),
        ("schedule", cfg.schedule, SCHEDULE_NAMES),
        ("mixed_precision", cfg.mixed_precision, PRECISION_NAMES),
        ("monitor_mode", cfg.monitor_mode, ("min", "max")),
    ]
    for key, value, allowed in checks:
        if value not in allowed:
            raise ConfigError(f"unknown value {value!r}; allowed: {allowed}", path=key)
    if not (cfg.strategy in STRATEGY_NAMES[:-1] or (cfg.strategy.startswith("cpu:") and cfg.strategy[4:].isdigit())):
        raise ConfigError(f"unknown value {cfg.strategy!r}; allowed: {STRATEGY_NAMES}", path="strategy")
    if cfg.epochs < 1:
        raise ConfigError(f"must be >= 1, got {cfg.epochs}", path="epochs")
    if cfg.steps_per_epoch is not None and cfg.steps_per_epoch < 1:
        raise ConfigError(f"must be >= 1, got {cfg.steps_per_epoch}", path="steps_per_epoch")
    if not cfg.learning_rate > 0:
        raise ConfigError(f"must be > 0, got {cfg.learning_rate}", path="learning_rate")
    if cfg.image_every_epochs < 0:
        raise ConfigError(f"must be >= 0, got {cfg.image_every_epochs}", path="image_every_epochs")


def build_optimizer_now(model: keras.Model) -> None:
    """Create the compiled optimizer's slot variables now, eagerly (call in the strategy scope).

    Without a ``tf.distribute`` strategy set Keras 3 defers this to the first traced training step:
    every slot (two per weight for Adam) is then created inside ``tf.function`` with a lifted
    initialiser and the step is traced twice (once to find the new variables). For the seed-004
    SE U-Net (310 weights) that was 60 s of variable creation plus a second trace of a 8k-op
    graph (``docs/performance.md``, "First training step").
    """
    if model.optimizer is None or model.optimizer.built:
        return
    if not model.built and getattr(getattr(model, "network", None), "built", False):
        model.build(model.network.input_shape)  # AugmentedModel: the wrapper has no weights of its own
    network = getattr(model, "network", model)
    if model.built and model.trainable_variables and all(layer.built for layer in network._flatten_layers()):
        model.optimizer.build(model.trainable_variables)


class Trainer:
    """Build a model under a strategy and train it with ``fit`` from a :class:`TrainConfig`.

    Args:
        config: The training settings; validated first (ConfigError before anything is built).
        build_model: Zero-argument function returning an uncompiled ``keras.Model``; called inside
            the strategy scope and the precision policy.
        metrics: Keras metrics for ``compile`` (a list, or a function returning one, called in scope).
        callbacks: Extra callbacks, run after the trainer's own.
        epoch_metrics: Optional ``model -> {name: value}`` run at the end of every epoch; its values
            join the epoch logs as ``val_<name>`` before the trainer's callbacks (TensorBoard's
            ``logs/validation/epoch_<name>``, history.csv, the epoch log line, ``monitor``); for
            validation numbers that are not Keras metrics (a detector's F1 or Jaccard).

    Attributes:
        strategy: The ``tf.distribute`` strategy.
        model: The compiled model.
        output_dir: Where this process writes (``output_dir``; ``output_dir/worker-<i>`` on
            non-chief workers of a multi-worker run).
    """

    def __init__(self, config: TrainConfig, build_model: Callable[[], keras.Model], metrics=None, callbacks=(),
                 epoch_metrics: Callable[[keras.Model], dict] | None = None):
        validate_config(config)
        self.config = config
        self.strategy = make_strategy(config.strategy)
        keras.utils.set_random_seed(config.seed)
        self.chief = is_chief()
        out = Path(config.output_dir)
        self.output_dir = out if self.chief else out / f"worker-{task_index()[1]}"
        self.extra_callbacks = list(callbacks)
        self.epoch_metrics = epoch_metrics
        policy = resolve_precision(config.mixed_precision)
        if keras.DTypePolicy(policy).compute_dtype == "bfloat16":  # TF's CPU bias / kernel gradients sum bf16 in bf16
            install_float32_gradient_sums()
        previous = _set_policy(policy)
        try:
            with self.strategy.scope():
                # loss and optimizer first: bad arguments fail before the model is built
                self.loss = get_loss(config.loss, **config.loss_kwargs)
                self.optimizer = self._make_optimizer()
                self.model = build_model()
                self.model.compile(
                    optimizer=self.optimizer,
                    loss=self.loss,
                    metrics=metrics() if callable(metrics) else metrics,
                    jit_compile=config.jit_compile,
                )
                build_optimizer_now(self.model)
        finally:
            _set_policy(previous)
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            patch_multiworker_build(self.model)
        self.precision = policy

    def _make_optimizer(self):
        cfg = self.config
        spe = cfg.steps_per_epoch or 1
        lr = get_schedule(
            cfg.schedule, cfg.learning_rate, spe, warmup_epochs=cfg.warmup_epochs, plateau=cfg.reduce_lr_patience > 0, **cfg.schedule_kwargs
        )
        kwargs = dict(cfg.optimizer_kwargs)
        if cfg.clipnorm is not None:
            kwargs["clipnorm"] = cfg.clipnorm
        if cfg.global_clipnorm is not None:
            kwargs["global_clipnorm"] = cfg.global_clipnorm
        return get_optimizer(
            cfg.optimizer, learning_rate=lr, lookahead=cfg.lookahead, lookahead_k=cfg.lookahead_k, lookahead_alpha=cfg.lookahead_alpha, **kwargs
        )

    @property
    def log_dir(self) -> Path:
        return self.output_dir / "logs"

    def _callbacks(self, train_data, has_validation: bool, image_batch) -> list:
        cfg = self.config
        monitor = cfg.monitor if has_validation or not cfg.monitor.startswith("val_") else cfg.monitor[4:]
        own: list = [cbs.PendingStop(), cbs.LearningRateLogger()]
        if self.epoch_metrics is not None:
            own.insert(0, EpochMetrics(self.epoch_metrics))
        stateful: list = []
        if cfg.reduce_lr_patience > 0:
            cb = cbs.ReduceLROnPlateau(monitor=monitor, mode=cfg.monitor_mode, factor=cfg.reduce_lr_factor, patience=cfg.reduce_lr_patience, min_lr=cfg.reduce_lr_min_lr, verbose=1)
            own.append(cb)
            stateful.append(cb)
        if cfg.early_stopping_patience > 0:
            cb = cbs.ResumableEarlyStopping(monitor=monitor, mode=cfg.monitor_mode, patience=cfg.early_stopping_patience, restore_best_weights=True, verbose=1)
            own.append(cb)
            stateful.append(cb)
        if cfg.swa_start_epoch >= 0:
            cb = cbs.StochasticWeightAveraging(cfg.swa_start_epoch, bn_data=train_data, bn_steps=cfg.swa_bn_steps or cfg.steps_per_epoch,
                                              path=self.output_dir / "swa.weights.h5", replace=cfg.swa_replace)
            own.append(cb)
            stateful.append(cb)
        if cfg.tensorboard:
            own.append(keras.callbacks.TensorBoard(log_dir=str(self.log_dir), write_graph=False, update_freq="epoch", profile_batch=0))
            if cfg.image_every_epochs > 0 and image_batch is not None:
                from_logits = bool(getattr(self.loss, "from_logits", True))
                own.append(
                    cbs.ImageSummary(self.log_dir / "images", image_batch[0], image_batch[1], cfg.image_every_epochs, cfg.image_max_outputs, cfg.image_slices, from_logits)
                )
        best = cbs.BestLastCheckpoint(self.output_dir, monitor=monitor, mode=cfg.monitor_mode)
        own.append(best)
        stateful.append(best)
        own.append(cbs.HistoryCSVLogger(self.output_dir / "history.csv"))
        own.append(cbs.ResumeCheckpoint(self.output_dir / "backup", callbacks=stateful))
        return own + self.extra_callbacks

    def _write_run_info(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.output_dir / "config.yaml")
        info = {
            "tfmedseg": tfmedseg.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "strategy": type(self.strategy).__name__,
            "num_replicas": int(self.strategy.num_replicas_in_sync),
            "precision": self.precision,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        }
        (self.output_dir / "version.json").write_text(json.dumps(info, indent=2))

    def fit(self, train_data, validation_data=None, image_batch=None) -> keras.callbacks.History:
        """Train (or resume) for ``config.epochs`` epochs.

        Args:
            train_data: ``tf.data.Dataset`` of ``(x, y)`` batches; the batch is the *global*
                batch (split across replicas). Repeat it when ``steps_per_epoch`` is set.
            validation_data: Optional dataset of ``(x, y)`` batches.
            image_batch: Optional ``(x, y)`` numpy batch for the TensorBoard overlays; default:
                the first batch of ``validation_data`` (else of ``train_data``).

        Returns:
            The Keras ``History`` of this call (epochs run by it, not the resumed ones).

        Raises:
            KeyboardInterrupt: Ctrl-C or SIGTERM (:func:`sigterm_as_keyboard_interrupt`): the run
                stops, keeping everything up to the last completed epoch; nothing half-written is
                left, and running ``fit`` again resumes.
        """
        cfg = self.config
        if cfg.tensorboard and cfg.image_every_epochs > 0 and image_batch is None:
            source = validation_data if validation_data is not None else train_data
            if isinstance(source, tf.data.Dataset):
                x, y = next(iter(source.take(1)))[:2]
                image_batch = (np.asarray(x)[: cfg.image_max_outputs], np.asarray(y)[: cfg.image_max_outputs])
        self._write_run_info()
        callbacks = self._callbacks(train_data, validation_data is not None, image_batch)
        verbose = fit_verbosity(cfg.verbose)
        if verbose == 0:  # no carriage-return progress bar: one log line per epoch instead
            callbacks.append(EpochLogger())
        _log.info("tfmedseg %s: %s x%d, %s; output %s; TensorBoard logs: %s (tensorboard --logdir %s)",
                  tfmedseg.__version__, type(self.strategy).__name__, self.strategy.num_replicas_in_sync,
                  self.precision, self.output_dir, self.log_dir, self.log_dir)
        kept = f"{self.output_dir / 'backup'} holds the last completed epoch: run the same command again to resume"
        with interruptible(_log, "training", kept):
            return self.model.fit(
                train_data,
                validation_data=validation_data,
                epochs=cfg.epochs,
                steps_per_epoch=cfg.steps_per_epoch,
                validation_steps=cfg.validation_steps,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,
            )
