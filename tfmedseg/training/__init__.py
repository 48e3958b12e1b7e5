"""tfmedseg.training: strategy, optimizers and schedules, callbacks, and the trainer.

Names are imported from their submodules on first use, so ``from tfmedseg.training import
TrainConfig`` does not import TensorFlow.

Example:
    >>> from tfmedseg.training import TrainConfig, get_optimizer
    >>> TrainConfig().optimizer
    'adam'
"""

from __future__ import annotations

from tfmedseg._lazy import lazy_attributes

_LAZY = {
    "install_float32_bias_gradients": "tfmedseg.training.bias_gradient",
    "install_float32_gradient_sums": "tfmedseg.training.bias_gradient",
    "install_float32_kernel_gradients": "tfmedseg.training.bias_gradient",
    "BestLastCheckpoint": "tfmedseg.training.callbacks",
    "ImageSummary": "tfmedseg.training.callbacks",
    "LearningRateLogger": "tfmedseg.training.callbacks",
    "ReduceLROnPlateau": "tfmedseg.training.callbacks",
    "ResumableEarlyStopping": "tfmedseg.training.callbacks",
    "ResumeCheckpoint": "tfmedseg.training.callbacks",
    "StochasticWeightAveraging": "tfmedseg.training.callbacks",
    "overlay_panels": "tfmedseg.training.callbacks",
    "recompute_batchnorm_statistics": "tfmedseg.training.callbacks",
    "TrainConfig": "tfmedseg.training.config",
    "Lookahead": "tfmedseg.training.optimizers",
    "OPTIMIZER_NAMES": "tfmedseg.training.optimizers",
    "RAdam": "tfmedseg.training.optimizers",
    "get_optimizer": "tfmedseg.training.optimizers",
    "LinearWarmup": "tfmedseg.training.schedules",
    "SCHEDULE_NAMES": "tfmedseg.training.schedules",
    "ScaledSchedule": "tfmedseg.training.schedules",
    "cosine_warm_restarts": "tfmedseg.training.schedules",
    "get_schedule": "tfmedseg.training.schedules",
    "step_decay": "tfmedseg.training.schedules",
    "warmup_constant": "tfmedseg.training.schedules",
    "PRECISION_NAMES": "tfmedseg.training.strategy",
    "STRATEGY_NAMES": "tfmedseg.training.strategy",
    "configure_logical_cpus": "tfmedseg.training.strategy",
    "is_chief": "tfmedseg.training.strategy",
    "make_strategy": "tfmedseg.training.strategy",
    "resolve_precision": "tfmedseg.training.strategy",
    "Trainer": "tfmedseg.training.trainer",
    "validate_config": "tfmedseg.training.trainer",
}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)


__all__ = [
    "BestLastCheckpoint",
    "cosine_warm_restarts",
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
    "step_decay",
    "warmup_constant",
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
    "install_float32_bias_gradients",
    "install_float32_gradient_sums",
    "install_float32_kernel_gradients",
    "validate_config",
]
