"""Batch normalisation on TensorFlow's fused kernels, and the factory every builder calls.

Keras 3's :class:`keras.layers.BatchNormalization` computes the batch moments and the
normalisation as separate element-wise ops (and as many ops again for the gradient).
:class:`FusedBatchNormalization` is a drop-in subclass that runs the same maths as one
``FusedBatchNormV3`` kernel forward and one ``FusedBatchNormGradV3`` backward (oneDNN's
batch norm when ``TF_ENABLE_ONEDNN_OPTS=1``, cuDNN on a GPU). Because it *is* a
``BatchNormalization`` (same weights, same order, same config), weights saved from a Keras BN
load into it and ``isinstance(layer, keras.layers.BatchNormalization)`` still holds (the BN
re-estimation callback and the FLOP counter rely on it).

Equivalence with Keras' layer (tested in ``tests/models/test_normalization.py``):

* training mode: outputs and gradients equal within 1e-5; the moving statistics are updated
  with the *population* (biased) batch variance exactly like Keras (the kernel returns the
  Bessel-corrected variance, which is scaled back by ``(n - 1) / n``);
* inference mode (and a frozen layer) runs Keras' own code, so exported graphs (SavedModel,
  TFLite float and int8) are the ones a Keras BN gives: the BN folds into the convolution;
* 5D inputs ``[B, D, H, W, C]`` are reshaped to ``[B, D * H, W, C]`` for the kernel (the
  statistics are per channel over every other axis, so the result is the same);
* anything the fused kernel cannot do (a channel axis other than the last, a mask,
  ``synchronized=True``, ``renorm=True``, a rank other than 4 or 5, a non-TensorFlow backend)
  falls back to Keras' implementation, so the layer is always correct.

Example:
    >>> import keras
    >>> from tfmedseg.models.blocks.normalization import batch_norm
    >>> x = keras.Input((16, 16, 8))
    >>> y = batch_norm(name="bn")(x)
    >>> type(y._keras_history.operation).__module__
    'tfmedseg.models.blocks.normalization'
"""

from __future__ import annotations

import keras

__all__ = ["FUSED_DEFAULT", "FusedBatchNormalization", "batch_norm"]

FUSED_DEFAULT = True
"""Whether :func:`batch_norm` returns the fused layer when ``fused`` is not given (see
``docs/performance.md``: the fused layer made every measured builder's training step faster
or equal)."""

_MIN_EPSILON = 1.001e-5  # cuDNN's lower bound, which tf.nn.fused_batch_norm also enforces


@keras.saving.register_keras_serializable(package="tfmedseg", name="FusedBatchNormalization")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by the fused ``FusedBatchNormV3`` kernel.

    Exported as :data:`FusedBatchNormalization` (serialised as ``tfmedseg>FusedBatchNormalization``).
    The class itself is *named* ``BatchNormalization`` on purpose: Keras 3 addresses a layer's
    weights in ``.weights.h5`` / ``.keras`` files by its snake-cased class name
    (``layers/batch_normalization_3/vars``) and auto-names layers the same way, so only with the
    same class name do weight files written by models with Keras' layer load into models with this
    one (and back), and do auto-generated layer names stay what they were.

    Takes exactly the arguments of ``keras.layers.BatchNormalization`` (and has its config and
    weights: ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``).

    Input/output: ``[B, H, W, C]`` or ``[B, D, H, W, C]``, channels last; any float dtype
    (``float16``/``bfloat16`` inputs are normalised in float32 like Keras' layer and the output
    is cast to the layer's compute dtype).

    An ``epsilon`` below 1.001e-5 is raised to 1.001e-5 in training mode (cuDNN's limit, as
    ``tf.nn.fused_batch_norm`` does); Keras' default is 1e-3.
    """

    def _fusable(self, inputs, mask) -> bool:
        rank = len(inputs.shape)
        axis = self.axis if self.axis >= 0 else self.axis + rank
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.synchronized
            and not self.renorm
            and rank in (4, 5)
            and axis == rank - 1
        )

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or not self._fusable(inputs, mask):
            # Inference (and frozen layers): Keras' x * a + b, which converters fold into the
            # preceding convolution (SavedModel, TFLite float and int8 export exactly as before).
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32") if inputs.dtype != tf.float32 else inputs
        shape = None
        if len(x.shape) == 5:  # [B, D, H, W, C] -> [B, D*H, W, C]: same per-channel statistics
            shape = tf.shape(x)
            x = tf.reshape(x, tf.stack([shape[0], shape[1] * shape[2], shape[3], shape[4]]))
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels], "float32")
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels], "float32")
        y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=tf.constant([], "float32"),
            variance=tf.constant([], "float32"), epsilon=max(float(self.epsilon), _MIN_EPSILON),
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True,
        )
        # The kernel returns the Bessel-corrected variance; Keras tracks the population one.
        count = tf.cast(tf.size(x) // channels, "float32")
        variance = variance * (tf.maximum(count - 1.0, 1.0) / tf.maximum(count, 1.0))
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + tf.cast(mean, self.moving_mean.dtype) * (1.0 - m))
        self.moving_variance.assign(
            self.moving_variance * m + tf.cast(variance, self.moving_variance.dtype) * (1.0 - m))
        if shape is not None:
            y = tf.reshape(y, shape)
        return tf.cast(y, self.compute_dtype) if y.dtype != self.compute_dtype else y


def batch_norm(momentum: float = 0.99, epsilon: float = 1e-3, name: str | None = None,
               fused: bool | None = None, **kwargs) -> keras.layers.BatchNormalization:
    """The batch-norm layer builders use: fused by default, Keras' layer with ``fused=False``.

    Args:
        momentum: Moving-average momentum (Keras convention: ``new = m * old + (1 - m) * batch``;
            PyTorch's ``momentum=0.1`` is ``0.9`` here).
        epsilon: Added to the variance.
        name: Layer name.
        fused: ``True``: :class:`FusedBatchNormalization`; ``False``: ``keras.layers.BatchNormalization``;
            ``None``: :data:`FUSED_DEFAULT`.
        **kwargs: Any other ``keras.layers.BatchNormalization`` argument (``center``, ``scale``,
            initialisers, ``dtype``, ...).

    Returns:
        An unbuilt layer (call it on a ``[B, H, W, C]`` or ``[B, D, H, W, C]`` tensor).
    """
    cls = BatchNormalization if (FUSED_DEFAULT if fused is None else fused) else keras.layers.BatchNormalization
    return cls(momentum=momentum, epsilon=epsilon, name=name, **kwargs)


FusedBatchNormalization = BatchNormalization
"""The public name of the fused layer (``tfmedseg>FusedBatchNormalization`` in saved configs)."""
