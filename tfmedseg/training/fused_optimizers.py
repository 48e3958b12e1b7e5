"""Adam and SGD whose per-variable update is one fused TensorFlow kernel (small graphs, fast tracing).

Keras 3 writes each optimizer update as element-wise ops per variable: its ``Adam`` adds about 37
graph ops per trainable variable (the bias-correction powers, the moment updates, the step), its
momentum ``SGD`` about 10. For networks with many small variables this dominates the training
graph: the seed-004 SE U-Net has 300 trainable variables (every SE normalisation owns eight small
dense kernels and biases), so Keras' Adam turns a 6.4k-op gradient graph into a 17.5k-op training
graph, and tracing plus Grappler's first-call optimisation of that graph took minutes on a loaded
2-core CPU (measured in ``docs/performance.md``, "Training-graph size").

:class:`FusedAdam` and :class:`FusedSGD` are drop-in subclasses of ``keras.optimizers.Adam`` /
``keras.optimizers.SGD`` (same arguments, config, variables and checkpoint layout) whose
``update_step`` issues TensorFlow's fused training kernels instead:

* Adam: ``ResourceApplyAdam`` with the bias-correction powers ``beta^t`` computed once per step
  (Keras computes them per variable). Same maths as Keras: ``m += (g - m)(1 - b1)``,
  ``v += (g^2 - v)(1 - b2)``, ``w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``.
* SGD: ``ResourceApplyKerasMomentum`` (``m = momentum * m - lr * g; w += m``, Nesterov:
  ``w += momentum * m - lr * g``), or ``ResourceApplyGradientDescent`` without momentum.

The kernels exist on CPU, GPU and under XLA. The fused path is used for dense float gradients on a
single replica; anything else (``amsgrad``, sparse ``IndexedSlices`` gradients, a multi-replica
strategy, a non-TensorFlow backend) runs Keras' own ``update_step``, so results are always those
of Keras' optimizers (equal within float rounding, ``tests/training/test_fused_optimizers.py``).

Example:
    >>> opt = FusedAdam(learning_rate=1e-3)
    >>> isinstance(opt, keras.optimizers.Adam)
    True
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["FusedAdam", "FusedSGD"]


def _single_replica() -> bool:
    return keras.backend.backend() == "tensorflow" and tf.distribute.get_strategy().num_replicas_in_sync == 1


def _tf_variable(variable):
    """The ``tf.Variable`` behind a Keras variable (or the variable itself), if it has a resource handle."""
    var = variable.value if isinstance(variable, keras.Variable) else variable
    return var if isinstance(var, tf.Variable) and hasattr(var, "handle") else None


def _fusable(gradient, *variables) -> bool:
    if isinstance(gradient, tf.IndexedSlices):
        return False
    tf_vars = [_tf_variable(v) for v in variables]
    return all(v is not None and v.dtype.is_floating for v in tf_vars) and len({v.dtype for v in tf_vars}) == 1


@keras.saving.register_keras_serializable(package="tfmedseg")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with one ``ResourceApplyAdam`` kernel per variable (see module doc).

    Takes exactly ``keras.optimizers.Adam``'s arguments; ``amsgrad=True`` runs Keras' update.
    """

    _fused_powers = None

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if self.amsgrad or not _single_replica():
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        step = tf.cast(self.iterations + 1, tf.float32)
        self._fused_powers = (tf.pow(tf.cast(self.beta_1, tf.float32), step),
                              tf.pow(tf.cast(self.beta_2, tf.float32), step))
        try:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._fused_powers = None

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        if self._fused_powers is None or not _fusable(gradient, variable, m, v):
            return super().update_step(gradient, variable, learning_rate)
        var = _tf_variable(variable)
        dtype = var.dtype

        def cast(x):
            return tf.cast(x, dtype)

        beta_1_power, beta_2_power = self._fused_powers
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=_tf_variable(m).handle, v=_tf_variable(v).handle,
            beta1_power=cast(beta_1_power), beta2_power=cast(beta_2_power), lr=cast(learning_rate),
            beta1=cast(self.beta_1), beta2=cast(self.beta_2), epsilon=cast(self.epsilon),
            grad=cast(gradient), use_locking=False, use_nesterov=False)


@keras.saving.register_keras_serializable(package="tfmedseg")
class FusedSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with one ``ResourceApplyKerasMomentum`` (or gradient-descent) kernel per variable."""

    def update_step(self, gradient, variable, learning_rate):
        m = self.momentums[self._get_variable_index(variable)] if self.momentum != 0 else None
        fusable = _fusable(gradient, variable, *([m] if m is not None else []))
        if not (_single_replica() and fusable):
            return super().update_step(gradient, variable, learning_rate)
        var = _tf_variable(variable)
        dtype = var.dtype
        lr, grad = tf.cast(learning_rate, dtype), tf.cast(gradient, dtype)
        if m is None:
            tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=lr, delta=grad, use_locking=False)
        else:
            tf.raw_ops.ResourceApplyKerasMomentum(
                var=var.handle, accum=_tf_variable(m).handle, lr=lr, grad=grad,
                momentum=tf.cast(self.momentum, dtype), use_locking=False, use_nesterov=bool(self.nesterov))
