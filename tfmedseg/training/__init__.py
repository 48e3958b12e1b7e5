"""tfmedseg.training: strategy, optimizers and schedules, callbacks, and the trainer.

Example:
    >>> from tfmedseg.training import TrainConfig, get_optimizer
    >>> TrainConfig().optimizer
    'adam'
"""

from __future__ import annotations

from tfmedseg.training.callbacks import (
    BestLastCheckpoint,
    ImageSummary,
    LearningRateLogger,
    ReduceLROnPlateau,
    ResumableEarlyStopping,
    ResumeCheckpoint,
    StochasticWeightAveraging,
    overlay_panels,
    recompute_batchnorm_statistics,
)
from tfmedseg.training.optimizers import OPTIMIZER_NAMES, Lookahead, RAdam, get_optimizer
from tfmedseg.training.schedules import (
    SCHEDULE_NAMES,
    CosineWarmRestarts,
    LinearWarmup,
    ScaledSchedule,
    StepDecay,
    get_schedule,
)
from tfmedseg.training.strategy import PRECISION_NAMES, STRATEGY_NAMES, configure_logical_cpus, is_chief, make_strategy, resolve_precision
from tfmedseg.training.trainer import TrainConfig, Trainer, validate_config

__all__ = [
    "BestLastCheckpoint",
    "CosineWarmRestarts",
    "ImageSummary",
    "LearningRateLogger",
    "LinearWarmup",
    "Lookahead",
    "OPTIMIZER_NAMES",
    "PRECISION_NAMES",
    "RAdam",
    "ReduceLROnPlateau",
    "ResumableEarlyStopping",
    "ResumeCheckpoint",
    "SCHEDULE_NAMES",
    "STRATEGY_NAMES",
    "ScaledSchedule",
    "StepDecay",
    "StochasticWeightAveraging",
    "TrainConfig",
    "Trainer",
    "configure_logical_cpus",
    "get_optimizer",
    "get_schedule",
    "is_chief",
    "make_strategy",
    "overlay_panels",
    "recompute_batchnorm_statistics",
    "resolve_precision",
    "validate_config",
]
