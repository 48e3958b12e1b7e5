"""``OneDNNConv2D``: a ``keras.layers.Conv2D`` whose stride-1 "same" forward runs oneDNN's fast kernel.

Why: with oneDNN on (``TF_ENABLE_ONEDNN_OPTS=1``, see :mod:`tfmedseg`), TensorFlow 2.21 hands
oneDNN the NHWC input and the HWIO kernel of a ``Conv2D`` in their plain layouts, and on an AVX2
CPU the only oneDNN forward convolution that accepts a plain kernel is ``x64:gemm:jit`` (im2col +
SGEMM, 23-63 GFLOP/s on the VGG-16 shapes of SSD512 on our 2-core box). Its gradient with respect
to the input (``Conv2DBackpropInput``) is run by ``brg_conv_bwd:avx2`` (a direct, blocked kernel,
~95-110 GFLOP/s per core), which reorders the kernel itself. A stride-1 "same" convolution with an
odd kernel equals the input-gradient of the convolution with the spatially flipped,
in/out-transposed kernel, so this layer computes its forward pass as ``Conv2DBackpropInput`` and
its input gradient as ``Conv2DBackpropInput`` too. The kernel gradient of such a convolution is,
per kernel tap ``(i, j)``, one matrix product ``x_pad[:, i:i+H, j:j+W, :]^T @ dy`` (pixels as the
contraction axis); oneDNN's ``Conv2DBackpropFilter`` (``jit:avx2 backward_weights`` on NHWC) reaches
only ~35 GFLOP/s on the VGG shapes, while these products run through SGEMM at 2-3x that. So when
``min(Cin, Cout) >= 64`` (:data:`SHIFTED_MATMUL_MIN_CHANNELS`; measured faster there, not on thin
U-Net layers) the kernel gradient is computed as shifted matmuls (:func:`_kernel_grad_shifted`),
elsewhere as ``Conv2DBackpropFilter`` (as ``Conv2D``'s). Same weights, names and config as
``Conv2D``; results agree to float rounding.

The fast path is taken only with the TensorFlow backend, oneDNN on, no GPU, ``channels_last``,
strides 1, dilation 1, ``groups=1``, ``padding="same"`` and an odd kernel larger than 1x1; every
other case is plain ``Conv2D``. ``docs/performance.md`` ("Why SSD stayed at ~1.9x") has the
per-layer figures (``ONEDNN_VERBOSE=1`` shows the kernels).

Example:
    >>> import keras
    >>> y = OneDNNConv2D(8, 3, padding="same", activation="relu")(keras.Input((16, 16, 3)))
    >>> tuple(y.shape)
    (None, 16, 16, 8)
"""

from __future__ import annotations

import functools
import os

import keras

__all__ = ["OneDNNConv2D", "onednn_fast_path_available"]

#: The kernel gradient uses shifted matmuls when ``min(Cin, Cout)`` reaches this (else Conv2DBackpropFilter).
SHIFTED_MATMUL_MIN_CHANNELS = 64
#: Shifted matmuls: one im2col matmul when the per-image column buffer is at most this many bytes
#: (small maps, e.g. VGG block4/5 at 512^2 input), else one matmul per tap (no large buffer).
_IM2COL_MAX_BYTES_PER_IMAGE = 128 << 20


@functools.lru_cache(maxsize=1)
def onednn_fast_path_available() -> bool:
    """True when TensorFlow runs convolutions through oneDNN on the CPU only (decided once)."""
    if keras.backend.backend() != "tensorflow" or os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return False
    import tensorflow as tf

    try:
        from tensorflow.python.util import _pywrap_util_port

        mkl = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # pragma: no cover - TF internals moved
        mkl = os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"
    return mkl and not tf.config.list_physical_devices("GPU")


def _kernel_grad_shifted(x, dy, kh: int, kw: int, cin: int, cout: int):
    """Kernel gradient (HWIO) of a stride-1 "same" conv with an odd ``kh x kw`` kernel, as matmuls.

    ``dk[i, j] = reshape(x_pad[:, i:i+H, j:j+W, :], [-1, Cin])^T @ reshape(dy, [-1, Cout])``; with a
    small per-image map the ``kh*kw`` shifted slices are concatenated into one im2col matrix and one
    matmul (better SGEMM shape), otherwise one matmul per tap.
    """
    import tensorflow as tf

    h, w = x.shape[1], x.shape[2]
    static_hw = h is not None and w is not None
    if not static_hw:
        h, w = tf.shape(x)[1], tf.shape(x)[2]
    xp = tf.pad(x, [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]])
    d = tf.reshape(dy, [-1, cout])
    taps = [xp[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)]
    if static_hw and h * w * kh * kw * cin * x.dtype.size <= _IM2COL_MAX_BYTES_PER_IMAGE:
        cols = tf.reshape(tf.concat(taps, axis=-1), [-1, kh * kw * cin])
        return tf.reshape(tf.matmul(cols, d, transpose_a=True), [kh, kw, cin, cout])
    rows = [tf.matmul(tf.reshape(t, [-1, cin]), d, transpose_a=True) for t in taps]
    return tf.reshape(tf.stack(rows), [kh, kw, cin, cout])


def _same_conv_as_backprop_input(x, kernel):
    """Stride-1 "same" conv2d of NHWC ``x`` with HWIO ``kernel`` (odd size) via Conv2DBackpropInput."""
    import tensorflow as tf

    strides = [1, 1, 1, 1]

    @tf.custom_gradient
    def conv(x, kernel):
        flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
        out_shape = tf.concat([tf.shape(x)[:3], tf.shape(kernel)[3:]], 0)
        y = tf.raw_ops.Conv2DBackpropInput(
            input_sizes=out_shape, filter=flipped, out_backprop=x, strides=strides, padding="SAME"
        )

        def grad(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=strides, padding="SAME"
            )
            kh, kw, cin, cout = kernel.shape
            if min(cin, cout) >= SHIFTED_MATMUL_MIN_CHANNELS:
                dk = _kernel_grad_shifted(x, dy, kh, kw, cin, cout)
            else:
                dk = tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=tf.shape(kernel), out_backprop=dy, strides=strides, padding="SAME"
                )
            return dx, dk

        return y, grad

    y = conv(x, kernel)
    y.set_shape(x.shape[:3].concatenate(kernel.shape[3:]))
    return y


@keras.saving.register_keras_serializable(package="tfmedseg")
class OneDNNConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with the oneDNN fast forward for stride-1 "same" convolutions."""

    def _fast_path(self) -> bool:
        k = tuple(self.kernel_size)
        return (
            self.data_format == "channels_last"
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and self.padding == "same"
            and all(s % 2 == 1 for s in k)
            and k != (1, 1)
            and onednn_fast_path_available()
        )

    def convolution_op(self, inputs, kernel):
        if not self._fast_path():
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        return _same_conv_as_backprop_input(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))
