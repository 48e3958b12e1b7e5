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
only ~35 GFLOP/s on the VGG shapes, while these products run through SGEMM at 2-3x that. So where
``min(Cin, Cout) >= matmul_grad_conv.MIN_CHANNELS[2]`` the kernel gradient is
:func:`~tfmedseg.models.blocks.matmul_grad_conv.kernel_grad_as_matmuls` (one matmul per tap, or at
>= 512 channels one per column chunk of at most ``IM2COL_BYTES``), elsewhere
``Conv2DBackpropFilter`` (as ``Conv2D``'s). Same weights, names and config as
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

import keras

from tfmedseg.models.blocks import matmul_grad_conv
from tfmedseg.models.blocks.matmul_grad_conv import onednn_fast_path_available

__all__ = ["OneDNNConv2D", "onednn_fast_path_available"]


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
            if min(cin, cout) >= matmul_grad_conv.MIN_CHANNELS[2]:
                dk = matmul_grad_conv.kernel_grad_as_matmuls(
                    x, dy, (kh, kw), matmul_grad_conv.im2col_bytes(2, cin, cout))
            else:
                dk = matmul_grad_conv.kernel_grad_op(tf.raw_ops.Conv2DBackpropFilter, x, dy, tf.shape(kernel),
                                                     strides=strides, padding="SAME")
            return dx, dk

        return y, grad

    y = conv(x, kernel)
    y.set_shape(x.shape[:3].concatenate(kernel.shape[3:]))
    return y


@keras.saving.register_keras_serializable(package="tfmedseg")
class OneDNNConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with the oneDNN fast forward for stride-1 "same" convolutions."""

    def _fast_path(self) -> bool:
        return matmul_grad_conv.is_stride1_same_odd(self) and onednn_fast_path_available()

    def convolution_op(self, inputs, kernel):
        if not self._fast_path():
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        return _same_conv_as_backprop_input(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))
