"""Bias and kernel gradients summed in float32 when a model computes in bfloat16.

Keras 3's TensorFlow backend adds a layer's bias (``Conv*``, ``Dense``, any ``ops.add`` of a ``[C]``
vector to a ``[B, ..., C]`` tensor) with ``tf.nn.bias_add``, whose registered gradient is
``BiasAddGrad``. TensorFlow's CPU kernel of ``BiasAddGrad`` keeps its running sum in the input's
dtype for bfloat16 (only float16 gets a float32 accumulator, ``tensorflow/core/kernels/bias_op.cc``):
the sum stops growing once it is 256 times the value added, so under ``mixed_bfloat16`` with a mean
loss every channel's bias gradient reads ``256 / N`` instead of 1 for ``N`` summed elements (``512 / N``
from ``N = 32768``, where the kernel sums in two parts): 50 % off at ``N = 512``, 99.6 % at ``N = 131072``
(``benchmarks/bf16_bias_grad.py``, table in ``docs/performance.md``), while ``tf.reduce_sum`` sums
bfloat16 in float32.

The kernel gradients of Keras' convolutions have the same fault on the CPU: ``Conv2DBackpropFilter``,
``Conv3DBackpropFilterV2`` and ``DepthwiseConv2dNativeBackpropFilter`` sum bfloat16 in bfloat16 (all-ones
input, ``1 / N`` output gradient: 0.80 instead of 1 for a 3x3 Conv2D at 8 x 64^2, 0.016 for a depthwise
3x3 at 8 x 128^2; :func:`tfmedseg.models.blocks.matmul_grad_conv.kernel_grad_op`).

:func:`install_float32_bias_gradients` replaces the gradient TensorFlow registered for ``BiasAdd``
by one that, for a bfloat16 gradient, runs ``BiasAddGrad`` on its float32 cast and casts the sum
back (one extra pass over the gradient tensor); :func:`install_float32_kernel_gradients` does the same
for the kernel gradient of ``Conv2D``, ``Conv3D``, ``DepthwiseConv2dNative`` and the transposed
convolutions' ``Conv2DBackpropInput`` / ``Conv3DBackpropInputV2`` (the input gradient stays
TensorFlow's). Every other dtype goes to TensorFlow's own functions unchanged.
:class:`~tfmedseg.training.trainer.Trainer` installs both (:func:`install_float32_gradient_sums`) when its
dtype policy computes in bfloat16. They are process-wide (the gradient registry is), as Keras' own
mixed-precision policy is.
"""

from __future__ import annotations

import logging
from typing import Callable

import tensorflow as tf

from tfmedseg.models.blocks.matmul_grad_conv import kernel_grad_op

__all__ = ["install_float32_gradient_sums", "install_float32_bias_gradients", "install_float32_kernel_gradients",
           "float32_bias_gradients_installed", "float32_kernel_gradients_installed"]

_log = logging.getLogger(__name__)

#: TensorFlow's own gradient function of each op type whose gradient ours replaces while installed.
_tensorflow_gradients: dict[str, Callable] = {}


def _registry_entry(op_type: str) -> dict | None:
    """The gradient registry's entry of ``op_type`` (``{"type": fn, "location": ...}``), or None when
    TensorFlow's private registry is not laid out as in TF 2.21."""
    try:
        from tensorflow.python.framework import ops as tf_ops

        entry = tf_ops.gradient_registry._registry[op_type]
    except (ImportError, AttributeError, KeyError, TypeError):
        return None
    return entry if isinstance(entry, dict) and callable(entry.get("type")) else None


def _data_format(op) -> str:
    try:
        data_format = op.get_attr("data_format")
    except (ValueError, KeyError):
        data_format = b"NHWC"
    if isinstance(data_format, bytes):
        data_format = data_format.decode()
    return data_format or "NHWC"


def _bias_add_gradient(op, received_grad):
    """``BiasAdd``'s gradient: the received gradient for the input; for the bias, its sum over all
    but the channel axis, accumulated in float32 when the gradient is bfloat16."""
    if received_grad.dtype != tf.bfloat16:
        return _tensorflow_gradients["BiasAdd"](op, received_grad)
    bias_grad = tf.raw_ops.BiasAddGrad(out_backprop=tf.cast(received_grad, tf.float32), data_format=_data_format(op))
    return received_grad, tf.cast(bias_grad, tf.bfloat16)


def _attrs(op, names: tuple[str, ...]) -> dict:
    return {name: (_data_format(op) if name == "data_format" else op.get_attr(name)) for name in names}


_CONV2D_ATTRS = ("dilations", "strides", "padding", "explicit_paddings", "use_cudnn_on_gpu", "data_format")
_CONV3D_ATTRS = ("dilations", "strides", "padding", "data_format")
_DEPTHWISE_ATTRS = ("dilations", "strides", "padding", "explicit_paddings", "data_format")

#: Per forward op: (kernel-gradient op, its attributes, whether the forward is a transposed convolution, whose
#: inputs are ``(output sizes, kernel, x)`` and whose kernel gradient takes the received gradient as ``input``).
_KERNEL_GRADIENT_OPS = {
    "Conv2D": (tf.raw_ops.Conv2DBackpropFilter, _CONV2D_ATTRS, False),
    "Conv3D": (tf.raw_ops.Conv3DBackpropFilterV2, _CONV3D_ATTRS, False),
    "DepthwiseConv2dNative": (tf.raw_ops.DepthwiseConv2dNativeBackpropFilter, _DEPTHWISE_ATTRS, False),
    "Conv2DBackpropInput": (tf.raw_ops.Conv2DBackpropFilter, _CONV2D_ATTRS, True),
    "Conv3DBackpropInputV2": (tf.raw_ops.Conv3DBackpropFilterV2, _CONV3D_ATTRS, True),
}


def _kernel_gradient(op_type: str) -> Callable:
    """The gradient of ``op_type``: TensorFlow's, with the kernel's (input 1) summed in float32 for bfloat16."""
    grad_op, names, transposed = _KERNEL_GRADIENT_OPS[op_type]

    def gradient(op, received_grad):
        grads = list(_tensorflow_gradients[op_type](op, received_grad))
        if received_grad.dtype == tf.bfloat16:  # TensorFlow's bfloat16 kernel gradient is left unused (pruned in a graph)
            kernel = op.inputs[1]
            x, dy = (received_grad, op.inputs[2]) if transposed else (op.inputs[0], received_grad)
            grads[1] = kernel_grad_op(grad_op, x, dy, tf.shape(kernel), **_attrs(op, names))
        return grads

    gradient.__name__ = f"_float32_sum_{op_type}_gradient"
    return gradient


#: Our gradient function of each op type (one object per type, so that "installed" is an identity check).
_OURS: dict[str, Callable] = {"BiasAdd": _bias_add_gradient, **{t: _kernel_gradient(t) for t in _KERNEL_GRADIENT_OPS}}


def _installed(op_types) -> bool:
    entries = [_registry_entry(t) for t in op_types]
    return all(e is not None and e["type"] is _OURS[t] for t, e in zip(op_types, entries))


def _install(op_types, what: str) -> bool:
    entries = {t: _registry_entry(t) for t in op_types}
    if any(e is None for e in entries.values()):
        _log.warning("%s under bfloat16 keep TensorFlow's, which sum bfloat16 in bfloat16 on the CPU (its gradient "
                     "registry is not laid out as expected)", what)
        return False
    if not _installed(op_types):
        for op_type, entry in entries.items():
            if entry["type"] is not _OURS[op_type]:
                _tensorflow_gradients[op_type] = entry["type"]
                entry["type"] = _OURS[op_type]
        _log.info("%s under bfloat16 are summed in float32 (TensorFlow's CPU kernels sum bfloat16 in bfloat16)", what)
    return True


def float32_bias_gradients_installed() -> bool:
    """Whether :func:`install_float32_bias_gradients` is in effect."""
    return _installed(("BiasAdd",))


def float32_kernel_gradients_installed() -> bool:
    """Whether :func:`install_float32_kernel_gradients` is in effect."""
    return _installed(tuple(_KERNEL_GRADIENT_OPS))


def install_float32_bias_gradients() -> bool:
    """Make ``BiasAdd``'s gradient sum bfloat16 gradients in float32 (see the module docstring).

    Idempotent; logs once at INFO. Where TensorFlow's gradient registry is not laid out as in
    TF 2.21, nothing is changed and a warning says that bfloat16 bias gradients keep TensorFlow's
    bfloat16 sum.

    Returns:
        True when our gradient is in effect.
    """
    return _install(("BiasAdd",), "bias gradients")


def install_float32_kernel_gradients() -> bool:
    """Make the kernel gradients of ``Conv2D``, ``Conv3D``, ``DepthwiseConv2dNative``, ``Conv2DBackpropInput`` and
    ``Conv3DBackpropInputV2`` sum bfloat16 in float32 (see the module docstring); idempotent, as
    :func:`install_float32_bias_gradients`.

    Returns:
        True when our gradients are in effect.
    """
    return _install(tuple(_KERNEL_GRADIENT_OPS), "convolution kernel gradients")


def install_float32_gradient_sums() -> bool:
    """:func:`install_float32_bias_gradients` and :func:`install_float32_kernel_gradients` (what
    :class:`~tfmedseg.training.trainer.Trainer` installs under a bfloat16 policy).

    Returns:
        True when both are in effect.
    """
    bias = install_float32_bias_gradients()
    return install_float32_kernel_gradients() and bias


def _uninstall() -> None:
    """Put TensorFlow's own gradients back (tests)."""
    for op_type, function in list(_tensorflow_gradients.items()):
        entry = _registry_entry(op_type)
        if entry is not None and entry["type"] is _OURS[op_type]:
            entry["type"] = function
        del _tensorflow_gradients[op_type]
