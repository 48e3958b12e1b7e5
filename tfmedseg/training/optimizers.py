"""Optimizers: RAdam, a Lookahead wrapper, and the ``get_optimizer`` factory.

tensorflow-addons (which had ``RectifiedAdam`` and ``Lookahead``) does not import with Keras 3,
so both are written here as ``keras.optimizers.Optimizer`` subclasses that work under every
``tf.distribute`` strategy (they update variables through the same code path as Keras's own
optimizers) and round-trip through ``get_config``.

Example:
    >>> opt = get_optimizer("radam", learning_rate=1e-3, lookahead=True)
    >>> type(opt).__name__, type(opt.inner_optimizer).__name__
    ('Lookahead', 'RAdam')
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from tfmedseg.errors import ConfigError
from tfmedseg.training.fused_optimizers import FusedAdam, FusedSGD

__all__ = ["OPTIMIZER_NAMES", "RAdam", "Lookahead", "get_optimizer"]


@keras.saving.register_keras_serializable(package="tfmedseg")
class RAdam(keras.optimizers.Optimizer):
    """Rectified Adam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond").

    With ``rho_inf = 2 / (1 - beta_2) - 1`` and, at step ``t`` (1-based),
    ``rho_t = rho_inf - 2 t beta_2^t / (1 - beta_2^t)``:

    - ``m_t = beta_1 m + (1 - beta_1) g``, ``v_t = beta_2 v + (1 - beta_2) g^2``,
      ``m_hat = m_t / (1 - beta_1^t)``;
    - if ``rho_t > sma_threshold``: ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf /
      ((rho_inf - 4)(rho_inf - 2) rho_t))`` and
      ``theta -= lr * r_t * m_hat * sqrt(1 - beta_2^t) / (sqrt(v_t) + epsilon)``;
    - else (variance of the adaptive rate intractable, the first few steps):
      ``theta -= lr * m_hat`` (SGD with momentum, un-rectified).

    The threshold: Algorithm 2 of the paper switches at ``rho_t > 4`` (where ``r_t`` becomes
    defined); the authors' code, tensorflow-addons and PyTorch use 5, which skips the first, very
    noisy rectified step. We default to 5 (same numbers as ``torch.optim.RAdam``); pass
    ``sma_threshold=4`` for the paper's rule. With ``beta_2 = 0.999`` the adaptive phase starts at
    step 6 (threshold 5) or step 5 (threshold 4). ``epsilon`` is added to ``sqrt(v_t)`` as in
    PyTorch (the paper has no epsilon).

    Args:
        learning_rate: Float or ``LearningRateSchedule`` (default 1e-3).
        beta_1: First-moment decay (default 0.9).
        beta_2: Second-moment decay (default 0.999).
        epsilon: Added to ``sqrt(v_t)`` (default 1e-8).
        sma_threshold: Switch to the rectified update when ``rho_t`` exceeds it (default 5.0).
        **kwargs: Base optimizer arguments (``weight_decay`` (decoupled), ``clipnorm``,
            ``global_clipnorm``, ``name``...).
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, sma_threshold=5.0, name="radam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not (0.0 <= beta_1 < 1.0 and 0.0 < beta_2 < 1.0):
            raise ConfigError(f"betas must lie in [0, 1), got beta_1={beta_1}, beta_2={beta_2}", path="beta_1/beta_2")
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.sma_threshold = float(sma_threshold)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        # Scalar coefficients in float64: rho_t is a difference of two numbers near
        # 2 / (1 - beta_2) (~2000), which float32 resolves only to ~1e-4 near the threshold.
        t = ops.cast(self.iterations + 1, "float64")
        b1, b2 = self.beta_1, self.beta_2
        b1_t = ops.power(ops.convert_to_tensor(b1, dtype="float64"), t)
        b2_t = ops.power(ops.convert_to_tensor(b2, dtype="float64"), t)
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        rho_t = rho_inf - 2.0 * t * b2_t / (1.0 - b2_t)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1.0 - b1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1.0 - b2))
        rect = ops.sqrt(
            ops.maximum((rho_t - 4.0) * (rho_t - 2.0) * rho_inf, 0.0) / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)
        )
        use_rect = rho_t > self.sma_threshold
        # rectified: lr * r_t * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps); else lr * m / (1 - b1^t)
        coef_rect = ops.cast(rect * ops.sqrt(1.0 - b2_t) / (1.0 - b1_t), variable.dtype)
        coef_sgd = ops.cast(1.0 / (1.0 - b1_t), variable.dtype)
        scale = ops.where(use_rect, coef_rect / (ops.sqrt(v) + self.epsilon), coef_sgd)
        self.assign_sub(variable, lr * m * scale)

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon, sma_threshold=self.sma_threshold)
        return config


@keras.saving.register_keras_serializable(package="tfmedseg")
class Lookahead(keras.optimizers.Optimizer):
    """Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back").

    The inner optimizer updates the fast weights ``theta``; slow weights ``phi`` start equal to the
    weights at the first step, and after every ``k`` inner steps
    ``phi <- phi + alpha (theta - phi)`` and ``theta <- phi``.

    The wrapper follows ``keras.optimizers.LossScaleOptimizer``: ``iterations`` and
    ``learning_rate`` are the inner optimizer's (so schedules and ``ReduceLROnPlateau`` act on
    it), and the slow weights are optimizer variables (saved with the weights and restored on
    resume). Gradient clipping and weight decay belong on the inner optimizer.

    Args:
        inner_optimizer: Any built-in or custom Keras 3 optimizer instance.
        k: Synchronisation period in inner steps (paper default 5).
        alpha: Slow-weights step size in ``(0, 1]`` (paper default 0.5).
        name: Optimizer name.
    """

    def __init__(self, inner_optimizer, k: int = 5, alpha: float = 0.5, name: str = "lookahead", **kwargs):
        for key in ("clipnorm", "global_clipnorm", "clipvalue", "weight_decay"):
            if kwargs.get(key) is not None:
                raise ConfigError("set it on the inner optimizer, not on Lookahead", path=key)
            kwargs.pop(key, None)
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise ConfigError(f"must be a keras.optimizers.Optimizer, got {type(inner_optimizer).__name__}", path="inner_optimizer")
        if int(k) < 1:
            raise ConfigError(f"must be >= 1, got {k}", path="k")
        if not 0.0 < float(alpha) <= 1.0:
            raise ConfigError(f"must lie in (0, 1], got {alpha}", path="alpha")
        self.inner_optimizer = inner_optimizer
        self.k = int(k)
        self.alpha = float(alpha)

    def build(self, var_list):
        if self.built:
            return
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        self._slow = [self.add_variable_from_reference(v, name="slow") for v in var_list]

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        if hasattr(self, "inner_optimizer"):
            self.inner_optimizer.learning_rate = learning_rate

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            self.build(trainable_variables)
        tvars = list(trainable_variables) if trainable_variables is not None else self._trainable_variables
        grads = list(grads)
        first = ops.equal(self.inner_optimizer.iterations, 0)
        self._sync(tvars, first, init=True)
        self.inner_optimizer.apply(grads, tvars)
        sync = ops.equal(ops.mod(self.inner_optimizer.iterations, self.k), 0)
        self._sync(tvars, sync, init=False)

    def _sync(self, tvars, pred, init: bool):
        """``init``: phi <- theta; else phi <- phi + alpha (theta - phi), theta <- phi (when ``pred``)."""
        alpha = self.alpha
        pairs = [(v.value if isinstance(v, keras.Variable) else v, self._slow[self._get_variable_index(v)]) for v in tvars]

        def per_var(var, slow):
            def do():
                if init:
                    slow.assign(var)
                else:
                    new = slow + ops.cast(alpha, slow.dtype) * (var - slow)
                    slow.assign(new)
                    var.assign(new)
                return tf.constant(True)

            tf.cond(pred, do, lambda: tf.constant(False))

        def distributed(distribution, pairs):
            for var, slow in pairs:
                slow = slow.value if isinstance(slow, keras.Variable) else slow
                distribution.extended.update(var, per_var, args=(slow,), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(distributed, tf.distribute.get_strategy(), pairs)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "k": self.k,
            "alpha": self.alpha,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)


_OPTIMIZERS = {
    "adam": FusedAdam,  # keras.optimizers.Adam computed by fused kernels (fused_optimizers.py)
    "adamw": keras.optimizers.AdamW,
    "sgd": FusedSGD,  # keras.optimizers.SGD computed by fused kernels
    "rmsprop": keras.optimizers.RMSprop,
    "radam": RAdam,
    "nadam": keras.optimizers.Nadam,
}
OPTIMIZER_NAMES = tuple(_OPTIMIZERS)


def get_optimizer(name: str, learning_rate=1e-3, lookahead: bool = False, lookahead_k: int = 5, lookahead_alpha: float = 0.5, **kwargs):
    """Build an optimizer by name, optionally wrapped in :class:`Lookahead`.

    Args:
        name: One of :data:`OPTIMIZER_NAMES`.
        learning_rate: Float or ``keras.optimizers.schedules.LearningRateSchedule``.
        lookahead: Wrap in :class:`Lookahead` (seed 002: RAdam + Lookahead).
        lookahead_k: Lookahead period ``k`` (default 5).
        lookahead_alpha: Lookahead step ``alpha`` (default 0.5).
        **kwargs: Constructor arguments (``momentum``, ``weight_decay``, ``clipnorm``...).

    Raises:
        ConfigError: Unknown name (lists the allowed names) or bad arguments.
    """
    if name not in _OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; allowed: {OPTIMIZER_NAMES}", path="optimizer")
    if isinstance(learning_rate, (int, float)) and not math.isfinite(learning_rate) or (
        isinstance(learning_rate, (int, float)) and learning_rate <= 0
    ):
        raise ConfigError(f"must be a positive finite number, got {learning_rate}", path="learning_rate")
    try:
        opt = _OPTIMIZERS[name](learning_rate=learning_rate, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad arguments for optimizer {name!r}: {exc}", path="optimizer_kwargs") from exc
    if lookahead:
        opt = Lookahead(opt, k=lookahead_k, alpha=lookahead_alpha)
    return opt
