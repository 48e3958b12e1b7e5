"""``Conv2DTranspose`` / ``Conv3DTranspose`` whose kernel equals its stride, with both gradients as one matmul each.

Why: a U-Net's upsampling ``Conv*Transpose(filters, 2, strides=2)`` has non-overlapping output cells:
output voxel ``s * i + t`` (tap ``t`` of the kernel) is ``x[i] @ K[t]^T``. With oneDNN on the CPU
(``TF_ENABLE_ONEDNN_OPTS=1``, see :mod:`tfmedseg`) TensorFlow runs the layer's kernel gradient as
``Conv2DBackpropFilter`` with stride 2 (17-25 GFLOP/s, a tenth of the matmul peak, on the 2D U-Net
of ``benchmarks/bench_training.py``) and its input gradient as a stride-2 ``Conv2D``. With
``D = space_to_depth(dy)`` (``[pixels of x, prod(k) * filters]``, columns ordered ``(tap, filter)``)
and ``W`` the kernel as ``[C_in, prod(k) * filters]`` both gradients are single matmuls near the peak::

    dx = D @ W^T        dK = x^T @ D   (then reordered to Keras' ``[*k, filters, C_in]`` layout)

The forward stays TensorFlow's op (``tf.nn.conv_transpose``, as in Keras), so outputs, SavedModel
and TFLite graphs are Keras' own (:class:`tfmedseg.models.blocks.matmul_grad_conv.Conv2D` does the
same for the 3x3 convolutions). ``MaskHead``'s x2 deconvolution
(:mod:`tfmedseg.models.detection.heads`) is this layer too.

:class:`MatmulGradConv2DTranspose` / :class:`MatmulGradConv3DTranspose` are
``keras.layers.Conv2DTranspose`` / ``Conv3DTranspose`` (same arguments, config and weights; classes
*named* ``Conv2DTranspose`` / ``Conv3DTranspose`` so that Keras 3 weight files, which address layers
by their snake-cased class name, stay interchangeable) that take this gradient where
:func:`uses_matmul_grad` holds: a spatial rank in :data:`RANKS` (2D; 3D measured no faster), oneDNN
on the CPU and no GPU, channels last, ``strides == kernel_size``, dilation 1, no ``output_padding``.
Elsewhere they are Keras' layers. Builders get them through :func:`conv_transpose` (the default follows
:data:`tfmedseg.models.blocks.matmul_grad_conv.MATMUL_GRAD_DEFAULT`); gradients agree with Keras'
layers to float rounding (``tests/models/test_matmul_grad_conv_transpose.py``).

Example:
    >>> import keras
    >>> y = conv_transpose(2, 8, 2, strides=2)(keras.Input((16, 16, 4)))
    >>> tuple(y.shape)
    (None, 32, 32, 8)
"""

from __future__ import annotations

import keras

from tfmedseg.models.blocks import matmul_grad_conv

__all__ = [
    "RANKS",
    "MatmulGradConv2DTranspose",
    "MatmulGradConv3DTranspose",
    "conv_transpose",
    "uses_matmul_grad",
]

#: Spatial ranks that take the matmul gradients. 2D: 0.68-0.86x Keras' layer per U-Net level (forward + gradients;
#: 128^2 32->16 1.01x) and 0.95x the 2D U-Net step; 3D: 0.80x / 0.84x at 8^3 / 16^3 but 1.07x at 32^3 16->8 (the
#: generic 8-axis transpose of the output gradient) and no gain on the 3D U-Net step, so 3D keeps Keras' gradients.
RANKS = (2,)


def uses_matmul_grad(layer) -> bool:
    """Whether the transposed convolution ``layer`` takes the matmul gradients here (module doc)."""
    return (
        layer.rank in RANKS
        and layer.data_format == "channels_last"
        and tuple(layer.strides) == tuple(layer.kernel_size)
        and all(d == 1 for d in layer.dilation_rate)
        and layer.output_padding is None
        and matmul_grad_conv.onednn_fast_path_available()
    )


def _space_to_depth(dy, taps):
    """``[B, *(S * k), F]`` -> ``[B * prod(S), prod(k) * F]``, columns ordered ``(tap, F)``."""
    import tensorflow as tf

    rank = len(taps)
    shape = tf.shape(dy)
    f = dy.shape[-1]
    split = [shape[0]]
    for a, k in enumerate(taps):
        split += [shape[1 + a] // k, k]
    blocks = tf.reshape(dy, tf.stack([*split, f]))  # [B, S1, k1, S2, k2, (S3, k3), F]
    perm = [0, *(1 + 2 * a for a in range(rank)), *(2 + 2 * a for a in range(rank)), 1 + 2 * rank]
    ktot = 1
    for k in taps:
        ktot *= k
    return tf.reshape(tf.transpose(blocks, perm), [-1, ktot * f])


def _conv_transpose_matmul_grads(x, kernel, padding: str):
    """``conv_transpose(x, kernel)`` with stride = kernel size: TensorFlow's forward, matmul gradients.

    Args:
        x: ``[B, *S, C_in]``.
        kernel: ``[*k, F, C_in]`` (Keras' transposed-convolution layout).
        padding: ``"valid"`` or ``"same"`` (identical when the stride equals the kernel size).

    Returns:
        ``[B, *(S * k), F]``.
    """
    import tensorflow as tf

    rank = len(kernel.shape) - 2
    taps = [int(k) for k in kernel.shape[:rank]]
    f, cin = int(kernel.shape[-2]), int(kernel.shape[-1])
    ktot = 1
    for k in taps:
        ktot *= k
    # W: [C_in, prod(k) * F], columns ordered (tap, F) like _space_to_depth's.
    to_w = [rank + 1, *range(rank), rank]
    from_w = [*range(1, rank + 1), rank + 1, 0]  # [C_in, *k, F] -> [*k, F, C_in]

    @tf.custom_gradient
    def conv_t(x, kernel):
        shape = tf.shape(x)
        out_shape = tf.stack([shape[0], *(shape[1 + a] * taps[a] for a in range(rank)), f])
        y = tf.nn.conv_transpose(x, kernel, out_shape, taps, padding=padding.upper())

        def grad(dy):
            d = _space_to_depth(dy, taps)
            w = tf.reshape(tf.transpose(kernel, to_w), [cin, ktot * f])
            dx = tf.reshape(tf.matmul(d, w, transpose_b=True), shape)
            dk = tf.matmul(tf.reshape(x, [-1, cin]), d, transpose_a=True)  # [C_in, prod(k) * F]
            dk = tf.transpose(tf.reshape(dk, [cin, *taps, f]), from_w)
            return dx, dk

        return y, grad

    y = conv_t(x, kernel)
    spatial = [None if s is None else int(s) * k for s, k in zip(x.shape[1:-1], taps)]
    y.set_shape([x.shape[0], *spatial, f])
    return y


class _MatmulGradTransposeMixin:
    def call(self, inputs):
        if not uses_matmul_grad(self):
            return super().call(inputs)
        import tensorflow as tf

        outputs = _conv_transpose_matmul_grads(tf.convert_to_tensor(inputs), tf.convert_to_tensor(self.kernel),
                                               self.padding)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.convert_to_tensor(self.bias))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs


@keras.saving.register_keras_serializable(package="tfmedseg", name="MatmulGradConv2DTranspose")
class Conv2DTranspose(_MatmulGradTransposeMixin, keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose`` with matmul gradients when the kernel equals the stride (module doc).

    Takes exactly ``keras.layers.Conv2DTranspose``'s arguments; input ``[B, H, W, C_in]``, output
    ``[B, H', W', filters]``.
    """


@keras.saving.register_keras_serializable(package="tfmedseg", name="MatmulGradConv3DTranspose")
class Conv3DTranspose(_MatmulGradTransposeMixin, keras.layers.Conv3DTranspose):
    """``keras.layers.Conv3DTranspose`` with matmul gradients when the kernel equals the stride (module doc).

    Takes exactly ``keras.layers.Conv3DTranspose``'s arguments; input ``[B, D, H, W, C_in]``, output
    ``[B, D', H', W', filters]``.
    """


MatmulGradConv2DTranspose = Conv2DTranspose
MatmulGradConv3DTranspose = Conv3DTranspose


def conv_transpose(rank: int, filters: int, kernel_size, matmul_grad: bool | None = None, **kwargs):
    """The transposed convolution builders use: the matmul-gradient layer by default, Keras' otherwise.

    Args:
        rank: 2 or 3 spatial axes.
        filters: Output channels.
        kernel_size: Int or tuple (the matmul gradients need ``strides == kernel_size``).
        matmul_grad: ``True``: :class:`MatmulGradConv2DTranspose` / ``3D``; ``False``: Keras' layer;
            ``None``: :data:`tfmedseg.models.blocks.matmul_grad_conv.MATMUL_GRAD_DEFAULT`.
        **kwargs: Any other ``keras.layers.Conv2DTranspose`` / ``Conv3DTranspose`` argument (``strides``, ...).

    Returns:
        An unbuilt layer.
    """
    cls = matmul_grad_conv.layer_class(rank, matmul_grad, (Conv2DTranspose, Conv3DTranspose),
                                       (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose))
    return cls(filters, kernel_size, **kwargs)
