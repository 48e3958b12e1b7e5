"""The training settings (:class:`TrainConfig`), the one owner of optimizer, schedule, loss and
batch settings of every stage that :class:`tfmedseg.training.trainer.Trainer` trains.

A plain dataclass without TensorFlow, so that command lines build and check their configs (and
answer ``--help``) without importing TensorFlow; ``Trainer`` validates the names in it
(:func:`tfmedseg.training.trainer.validate_config`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["TrainConfig"]


@dataclasses.dataclass
class TrainConfig:
    """Training settings (defaults: Adam 1e-3, soft Dice, seed 004's optimizer).

    Attributes:
        optimizer: One of ``OPTIMIZER_NAMES`` (``adam``, ``adamw``, ``sgd``, ``rmsprop``,
            ``radam``, ``nadam``).
        learning_rate: Base (maximum) learning rate.
        optimizer_kwargs: Extra optimizer arguments (``momentum``, ``weight_decay``, ``beta_1``...).
        lookahead: Wrap the optimizer in Lookahead (``lookahead_k`` steps, ``lookahead_alpha``).
        schedule: One of ``SCHEDULE_NAMES``; ``schedule_kwargs`` its arguments in epochs
            (``cosine_restarts``: ``min_lr``, ``period_epochs``; ``step``: ``factor``, ``every_epochs``).
        warmup_epochs: Linear warm-up in epochs (0 = none).
        reduce_lr_patience: Epochs without improvement of ``monitor`` before the rate is
            multiplied by ``reduce_lr_factor`` (0 = off); ``reduce_lr_min_lr`` bounds it.
        loss: One of ``LOSS_NAMES``; ``loss_kwargs`` its arguments.
        epochs: Number of epochs.
        steps_per_epoch: Optimizer steps per epoch (needed for epoch-based schedules and an
            infinite dataset; default: the dataset's cardinality).
        validation_steps: Validation batches per epoch (default: all).
        monitor / monitor_mode: Quantity for best weights, early stopping and plateau
            (``val_loss``/``min``; ``loss`` is used when there is no validation data).
        early_stopping_patience: Stop after that many epochs without improvement and restore the
            best weights (0 = off).
        swa_start_epoch: First epoch (0-based) of stochastic weight averaging (-1 = off);
            ``swa_bn_steps`` training batches recompute BatchNorm statistics at the end
            (default ``steps_per_epoch``). The average is saved to ``swa.weights.h5``;
            ``swa_replace``: it also replaces the trained weights at the end (False, the default:
            the model keeps the weights training ended with, e.g. the best epoch's that early
            stopping restored, and SWA stays a separate candidate to evaluate).
        mixed_precision: One of ``PRECISION_NAMES`` (``float32``, ``mixed_float16``,
            ``mixed_bfloat16``, ``auto``: bfloat16 where the CPU or GPU computes it natively,
            float16 on older GPUs, float32 on other CPUs; see
            :func:`tfmedseg.training.strategy.resolve_precision`).
        clipnorm: Clip each gradient to this L2 norm (None = off); ``global_clipnorm`` clips the
            global norm.
        jit_compile: Compile the train step with XLA.
        strategy: ``auto``, ``default``, ``mirrored``, ``multiworker`` or ``cpu:N``.
        output_dir: Directory of weights, checkpoints, logs and the resolved config.
        tensorboard: Write TensorBoard logs.
        image_every_epochs: Period of the overlay image summaries (0 = off).
        image_max_outputs / image_slices: Images per summary; slices per 3D sample.
        seed: Seed of weight initialisation and of every RNG (``keras.utils.set_random_seed``).
        verbose: ``model.fit`` verbosity: ``"auto"`` (Keras' progress bar on a terminal; one log line
            per epoch, :class:`~tfmedseg.training.epoch_log.EpochLogger`, when stdout is a file or
            a pipe), or 0 (log lines), 1 (bar), 2 (Keras' line per epoch).
    """

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    optimizer_kwargs: dict = dataclasses.field(default_factory=dict)
    lookahead: bool = False
    lookahead_k: int = 5
    lookahead_alpha: float = 0.5
    schedule: str = "constant"
    schedule_kwargs: dict = dataclasses.field(default_factory=dict)
    warmup_epochs: float = 0.0
    reduce_lr_patience: int = 0
    reduce_lr_factor: float = 0.5
    reduce_lr_min_lr: float = 1e-7
    loss: str = "dice"
    loss_kwargs: dict = dataclasses.field(default_factory=dict)
    epochs: int = 100
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    monitor: str = "val_loss"
    monitor_mode: str = "min"
    early_stopping_patience: int = 0
    swa_start_epoch: int = -1
    swa_bn_steps: int | None = None
    swa_replace: bool = False
    mixed_precision: str = "float32"
    clipnorm: float | None = None
    global_clipnorm: float | None = None
    jit_compile: bool = False
    strategy: str = "auto"
    output_dir: str = "runs/train"
    tensorboard: bool = True
    image_every_epochs: int = 5
    image_max_outputs: int = 6
    image_slices: int = 3
    seed: int = 0
    verbose: Any = "auto"
