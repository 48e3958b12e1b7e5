"""Learning-rate schedules, in optimizer steps: Keras' own where Keras has them.

All schedules take the optimizer's step count (``optimizer.iterations``, 0-based); epoch-based
settings of the seeds are converted with ``steps_per_epoch``. Because the position is the
optimizer's iteration counter, a resumed run continues the schedule where it stopped (the counter
is part of the saved optimizer state).

=====================  =====================================================================
name                   schedule
=====================  =====================================================================
``constant``           a float; with a warm-up ``keras.optimizers.schedules.CosineDecay`` with
                       ``alpha=1`` (no decay) and ``warmup_steps`` (seed 002: RAdam + warm-up)
``cosine``             ``CosineDecay(warmup_steps=...)`` from ``learning_rate`` to
                       ``alpha * learning_rate`` over ``decay_epochs``
``cosine_restarts``    SGDR (Loshchilov & Hutter 2017) with a constant period:
                       ``CosineDecayRestarts(t_mul=1, m_mul=1, alpha=min_lr / max_lr)``; seed 004
                       uses ``1e-3 -> 1e-5`` restarting every 25 epochs
``step``               ``lr0 * factor ** floor(step / step_size)``:
                       ``ExponentialDecay(staircase=True)``; seed 003 uses x0.95 every 10 epochs
                       (liver) and x0.5 every epoch (lesions)
``exponential``        smooth ``lr0 * factor ** (step / steps_per_epoch)``: ``ExponentialDecay``
=====================  =====================================================================

Ours only where Keras has nothing: :class:`LinearWarmup` (a warm-up in front of a schedule Keras
cannot warm up: restarts, step and exponential decay; the same ramp as Keras' ``CosineDecay``,
``target * step / warmup_steps``) and :class:`ScaledSchedule` (any schedule times a mutable
factor, so that ``ReduceLROnPlateau`` can act on a schedule; see
:mod:`tfmedseg.training.callbacks`).

Example:
    >>> s = cosine_warm_restarts(1e-3, 1e-5, period_steps=250)
    >>> float(s(0)), round(float(s(250)), 8)   # restart after 25 epochs of 10 steps
    (0.001, 0.001)
"""

from __future__ import annotations

import keras
from keras import ops

from tfmedseg.errors import ConfigError

__all__ = [
    "SCHEDULE_NAMES",
    "cosine_warm_restarts",
    "step_decay",
    "warmup_constant",
    "LinearWarmup",
    "ScaledSchedule",
    "get_schedule",
]

_Schedule = keras.optimizers.schedules.LearningRateSchedule


def _value(schedule_or_float, step):
    if isinstance(schedule_or_float, _Schedule):
        return ops.cast(schedule_or_float(step), "float32")
    return ops.convert_to_tensor(float(schedule_or_float), "float32")


def _ser(x):
    return keras.saving.serialize_keras_object(x) if isinstance(x, _Schedule) else float(x)


def _deser(x):
    return keras.saving.deserialize_keras_object(x) if isinstance(x, dict) else float(x)


def cosine_warm_restarts(max_lr: float = 1e-3, min_lr: float = 1e-5, period_steps: int = 1000):
    """Cosine annealing with warm restarts of constant period (Keras ``CosineDecayRestarts``).

    ``lr(step) = min_lr + (max_lr - min_lr) * (1 + cos(pi * (step mod period) / period)) / 2``

    Args:
        max_lr: Learning rate at the start of each period (seed 004: 1e-3).
        min_lr: Learning rate approached at the end of each period (seed 004: 1e-5).
        period_steps: Period in optimizer steps (seed 004: 25 epochs x steps per epoch).
    """
    if period_steps < 1 or not 0 <= min_lr <= max_lr or max_lr <= 0:
        raise ConfigError(
            f"need period_steps >= 1 and 0 <= min_lr <= max_lr, max_lr > 0, got {period_steps}, {min_lr}, {max_lr}",
            path="schedule_kwargs",
        )
    return keras.optimizers.schedules.CosineDecayRestarts(
        float(max_lr), int(period_steps), t_mul=1.0, m_mul=1.0, alpha=float(min_lr) / float(max_lr))


def step_decay(initial_lr: float = 0.05, factor: float = 0.95, step_size: int = 1000):
    """Staircase decay ``initial_lr * factor ** floor(step / step_size)`` (Keras ``ExponentialDecay(staircase=True)``).

    Args:
        initial_lr: Starting learning rate (seed 003: 0.05 liver, 0.1 lesions).
        factor: Multiplier per stage (seed 003: 0.95 liver, 0.5 lesions).
        step_size: Steps per stage (seed 003: 10 epochs liver, 1 epoch lesions, in steps).
    """
    if step_size < 1 or not 0 < factor <= 1:
        raise ConfigError(f"need step_size >= 1 and 0 < factor <= 1, got {step_size}, {factor}", path="schedule_kwargs")
    return keras.optimizers.schedules.ExponentialDecay(float(initial_lr), int(step_size), float(factor), staircase=True)


def warmup_constant(learning_rate: float, warmup_steps: int):
    """A linear warm-up from 0 to ``learning_rate`` over ``warmup_steps``, then constant
    (Keras ``CosineDecay`` with ``alpha=1``: its decay leaves the rate unchanged)."""
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=1, alpha=1.0, warmup_target=float(learning_rate), warmup_steps=int(warmup_steps))


@keras.saving.register_keras_serializable(package="tfmedseg")
class LinearWarmup(_Schedule):
    """Linear warm-up in front of a schedule Keras cannot warm up (restarts, step decay).

    For ``step < warmup_steps``: ``lr = start + (after(0) - start) * step / warmup_steps`` (the ramp
    of Keras' ``CosineDecay(warmup_steps=...)``); afterwards ``lr = after(step - warmup_steps)`` so
    that the wrapped schedule starts at its own step 0 when the warm-up ends.

    Args:
        after: The schedule (or float) that follows the warm-up.
        warmup_steps: Length of the ramp in optimizer steps (0 = no warm-up).
        start_lr: Rate the ramp starts from (default 0).
    """

    def __init__(self, after, warmup_steps: int, start_lr: float = 0.0):
        if warmup_steps < 0:
            raise ConfigError(f"must be >= 0, got {warmup_steps}", path="warmup_steps")
        self.after = _deser(after) if isinstance(after, dict) else after
        self.warmup_steps = int(warmup_steps)
        self.start_lr = float(start_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.warmup_steps == 0:
            return _value(self.after, step)
        target = _value(self.after, 0.0)
        frac = ops.minimum(step / float(self.warmup_steps), 1.0)
        ramp = self.start_lr + (target - self.start_lr) * frac
        rest = _value(self.after, ops.maximum(step - float(self.warmup_steps), 0.0))
        return ops.where(step < float(self.warmup_steps), ramp, rest)

    def get_config(self):
        return {"after": _ser(self.after), "warmup_steps": self.warmup_steps, "start_lr": self.start_lr}


@keras.saving.register_keras_serializable(package="tfmedseg")
class ScaledSchedule(_Schedule):
    """``factor * base(step)``, with ``factor`` a variable that callbacks may change.

    Keras's ``ReduceLROnPlateau`` cannot set the rate of an optimizer built on a schedule; our
    :class:`tfmedseg.training.callbacks.ReduceLROnPlateau` multiplies this ``factor`` instead, so a
    plateau reduction composes with warm-up, cosine or step decay. The factor is saved in the
    resume checkpoint by the trainer.

    Args:
        base: The wrapped schedule or a float.
        factor: Initial multiplier (default 1).
    """

    def __init__(self, base, factor: float = 1.0):
        self.base = _deser(base) if isinstance(base, dict) else base
        self.initial_factor = float(factor)
        self.factor = keras.Variable(float(factor), dtype="float32", trainable=False, name="lr_factor")

    def __call__(self, step):
        return _value(self.base, step) * ops.cast(self.factor, "float32")

    def get_config(self):
        return {"base": _ser(self.base), "factor": float(ops.convert_to_numpy(self.factor))}


SCHEDULE_NAMES = ("constant", "cosine", "cosine_restarts", "step", "exponential")


def get_schedule(name: str, learning_rate: float, steps_per_epoch: int, warmup_epochs: float = 0.0, plateau: bool = False, **kwargs):
    """Build a schedule by name, with optional warm-up and a plateau factor.

    Args:
        name: One of :data:`SCHEDULE_NAMES`:
            ``"constant"`` (``learning_rate``);
            ``"cosine"`` (kwargs ``decay_epochs``, required;
            ``alpha`` = 0: the final rate as a fraction of ``learning_rate``);
            ``"cosine_restarts"`` (kwargs ``min_lr`` = 1e-5, ``period_epochs`` = 25; max = ``learning_rate``);
            ``"step"`` (kwargs ``factor`` = 0.95, ``every_epochs`` = 10; seed 003 lesions: 0.5, 1);
            ``"exponential"`` (kwargs ``factor`` per epoch, smooth: ``lr * factor ** (step / steps_per_epoch)``).
        learning_rate: Base / maximum learning rate.
        steps_per_epoch: Optimizer steps per epoch (converts the epoch arguments).
        warmup_epochs: Linear warm-up length in epochs (fractions allowed; 0 = none).
        plateau: Wrap the result in :class:`ScaledSchedule` (needed by ReduceLROnPlateau).
        **kwargs: Schedule arguments listed above.

    Returns:
        A ``LearningRateSchedule``, or a float for a plain constant rate.

    Raises:
        ConfigError: Unknown name or argument.
    """
    if name not in SCHEDULE_NAMES:
        raise ConfigError(f"unknown schedule {name!r}; allowed: {SCHEDULE_NAMES}", path="schedule")
    if steps_per_epoch is None or steps_per_epoch < 1:
        raise ConfigError(f"must be >= 1 to convert epochs to steps, got {steps_per_epoch}", path="steps_per_epoch")
    allowed = {"constant": (), "cosine": ("decay_epochs", "alpha"), "cosine_restarts": ("min_lr", "period_epochs"),
               "step": ("factor", "every_epochs"), "exponential": ("factor",)}[name]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown argument(s) {unknown} for schedule {name!r}; allowed: {allowed}", path="schedule_kwargs")
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    if warmup_steps < 0:
        raise ConfigError(f"must be >= 0, got {warmup_epochs}", path="warmup_epochs")
    if name == "constant":
        schedule = warmup_constant(learning_rate, warmup_steps) if warmup_steps else float(learning_rate)
    elif name == "cosine":
        if "decay_epochs" not in kwargs:
            raise ConfigError("schedule 'cosine' needs schedule_kwargs.decay_epochs", path="schedule_kwargs")
        decay_steps = max(1, int(round(float(kwargs["decay_epochs"]) * steps_per_epoch)))
        alpha = float(kwargs.get("alpha", 0.0))
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must lie in [0, 1], got {alpha}", path="schedule_kwargs")
        if warmup_steps:  # Keras' own warm-up: 0 -> learning_rate, then the cosine decay
            schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps, alpha=alpha, warmup_target=float(learning_rate),
                                                              warmup_steps=warmup_steps)
        else:
            schedule = keras.optimizers.schedules.CosineDecay(float(learning_rate), decay_steps, alpha=alpha)
    else:
        if name == "cosine_restarts":
            period = max(1, int(round(float(kwargs.get("period_epochs", 25)) * steps_per_epoch)))
            schedule = cosine_warm_restarts(learning_rate, kwargs.get("min_lr", 1e-5), period)
        elif name == "step":
            step_size = max(1, int(round(float(kwargs.get("every_epochs", 10)) * steps_per_epoch)))
            schedule = step_decay(learning_rate, kwargs.get("factor", 0.95), step_size)
        else:
            schedule = keras.optimizers.schedules.ExponentialDecay(learning_rate, steps_per_epoch, kwargs.get("factor", 0.95))
        if warmup_steps > 0:
            schedule = LinearWarmup(schedule, warmup_steps)
    if plateau:
        schedule = ScaledSchedule(schedule)
    return schedule
