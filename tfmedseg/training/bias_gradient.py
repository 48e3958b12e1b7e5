"""Bias gradients summed in float32 when a model computes in bfloat16.

Keras 3's TensorFlow backend adds a layer's bias (``Conv*``, ``Dense``, any ``ops.add`` of a ``[C]``
vector to a ``[B, ..., C]`` tensor) with ``tf.nn.bias_add``, whose registered gradient is
``BiasAddGrad``. TensorFlow's CPU kernel of ``BiasAddGrad`` keeps its running sum in the input's
dtype for bfloat16 (only float16 gets a float32 accumulator, ``tensorflow/core/kernels/bias_op.cc``):
the sum stops growing once it is 256 times the value added, so under ``mixed_bfloat16`` with a mean
loss every channel's bias gradient reads ``256 / N`` instead of 1 for ``N`` summed elements (``512 / N``
from ``N = 32768``, where the kernel sums in two parts): 50 % off at ``N = 512``, 99.6 % at ``N = 131072``
(``benchmarks/bf16_bias_grad.py``, table in ``docs/performance.md``), while ``tf.reduce_sum`` sums
bfloat16 in float32.

:func:`install_float32_bias_gradients` replaces the gradient TensorFlow registered for ``BiasAdd``
by one that, for a bfloat16 gradient, runs ``BiasAddGrad`` on its float32 cast and casts the sum
back (one extra pass over the gradient tensor); every other dtype goes to TensorFlow's own function
unchanged. :class:`~tfmedseg.training.trainer.Trainer` installs it when its dtype policy computes in
bfloat16. It is process-wide (the gradient registry is), as Keras' own mixed-precision policy is.
"""

from __future__ import annotations

import logging

import tensorflow as tf

__all__ = ["install_float32_bias_gradients", "float32_bias_gradients_installed"]

_log = logging.getLogger(__name__)

#: TensorFlow's own gradient function of ``BiasAdd`` while ours is installed (None: not installed).
_tensorflow_gradient = {"function": None}


def _registry_entry() -> dict | None:
    """The gradient registry's entry of ``BiasAdd`` (``{"type": fn, "location": ...}``), or None when
    TensorFlow's private registry is not laid out as in TF 2.21."""
    try:
        from tensorflow.python.framework import ops as tf_ops

        entry = tf_ops.gradient_registry._registry["BiasAdd"]
    except (ImportError, AttributeError, KeyError, TypeError):
        return None
    return entry if isinstance(entry, dict) and callable(entry.get("type")) else None


def _bias_add_gradient(op, received_grad):
    """``BiasAdd``'s gradient: the received gradient for the input; for the bias, its sum over all
    but the channel axis, accumulated in float32 when the gradient is bfloat16."""
    if received_grad.dtype != tf.bfloat16:
        return _tensorflow_gradient["function"](op, received_grad)
    try:
        data_format = op.get_attr("data_format")
    except ValueError:
        data_format = b"NHWC"
    if isinstance(data_format, bytes):
        data_format = data_format.decode()
    bias_grad = tf.raw_ops.BiasAddGrad(out_backprop=tf.cast(received_grad, tf.float32), data_format=data_format or "NHWC")
    return received_grad, tf.cast(bias_grad, tf.bfloat16)


def float32_bias_gradients_installed() -> bool:
    """Whether :func:`install_float32_bias_gradients` is in effect."""
    entry = _registry_entry()
    return entry is not None and entry["type"] is _bias_add_gradient


def install_float32_bias_gradients() -> bool:
    """Make ``BiasAdd``'s gradient sum bfloat16 gradients in float32 (see the module docstring).

    Idempotent; logs once at INFO. Where TensorFlow's gradient registry is not laid out as in
    TF 2.21, nothing is changed and a warning says that bfloat16 bias gradients keep TensorFlow's
    bfloat16 sum.

    Returns:
        True when our gradient is in effect.
    """
    entry = _registry_entry()
    if entry is None:
        _log.warning("bias gradients under bfloat16 keep TensorFlow's BiasAddGrad, which sums bfloat16 in bfloat16 "
                     "on the CPU (its gradient registry is not laid out as expected)")
        return False
    if entry["type"] is not _bias_add_gradient:
        _tensorflow_gradient["function"] = entry["type"]
        entry["type"] = _bias_add_gradient
        _log.info("bias gradients under bfloat16 are summed in float32 (TensorFlow's CPU BiasAddGrad sums bfloat16 "
                  "in bfloat16)")
    return True


def _uninstall() -> None:
    """Put TensorFlow's own ``BiasAdd`` gradient back (tests)."""
    entry = _registry_entry()
    if entry is not None and entry["type"] is _bias_add_gradient:
        entry["type"] = _tensorflow_gradient["function"]
        _tensorflow_gradient["function"] = None
