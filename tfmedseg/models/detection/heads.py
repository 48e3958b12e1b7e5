"""ROI heads of Mask R-CNN: the box/class head and the mask head (Matterport layout, seed 001 §3d-e).

Both take pooled ROI features ``[B, R, S, S, C]`` and treat the ROIs as a batch of images
(TimeDistributed in Matterport). They are separate, swappable layers: :class:`MaskRCNN` calls
``box_head(roi_features, context=...)`` only when the head sets ``uses_context = True``, which is
the seam for MaligNet's global-feature ("C6") classifier that also reads ``C5``.

Example:
    >>> head = BoxClassHead(num_classes=5, fc_filters=8, pool_size=7)
    >>> logits, deltas = head(np.zeros((2, 3, 7, 7, 4), np.float32))
    >>> tuple(logits.shape), tuple(deltas.shape)
    ((2, 3, 5), (2, 3, 5, 4))
"""

from __future__ import annotations

import keras
import numpy as np  # noqa: F401  (doctest)
import tensorflow as tf
from tfmedseg.config import attribute_config
from tfmedseg.models.blocks.matmul_grad_conv_transpose import conv_transpose
from tfmedseg.models.blocks.normalization import batch_norm

__all__ = ["BoxClassHead", "MaskHead"]


def _merge_rois(x):
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([[-1], shape[2:]], 0)), shape[0], shape[1]


@keras.saving.register_keras_serializable(package="tfmedseg")
class BoxClassHead(keras.layers.Layer):
    """Two conv+BN+ReLU "fc" layers, then class logits and class-specific box deltas.

    ``Conv(fc, pool_size x pool_size, valid) -> BN -> ReLU -> Conv(fc, 1) -> BN -> ReLU``, then
    ``Dense(K)`` logits and ``Dense(4 K)`` deltas (Matterport ``fpn_classifier_graph``).

    Args:
        num_classes: ``K = C + 1`` outputs including background.
        fc_filters: Width of the two layers (1024).
        pool_size: ROIAlign output side (7).
        weight_decay: L2 factor on kernels.

    Call args:
        roi_features: ``[B, R, S, S, C]``.
        training: Batch-norm mode.

    Returns:
        ``(logits [B, R, K], deltas [B, R, K, 4])``.
    """

    uses_context = False

    def __init__(self, num_classes: int, fc_filters: int = 1024, pool_size: int = 7, weight_decay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.fc_filters = int(fc_filters)
        self.pool_size = int(pool_size)
        self.weight_decay = float(weight_decay)
        reg = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
        self.conv1 = keras.layers.Conv2D(fc_filters, pool_size, padding="valid", kernel_regularizer=reg, name="mrcnn_class_conv1")
        self.bn1 = batch_norm(name="mrcnn_class_bn1")
        self.conv2 = keras.layers.Conv2D(fc_filters, 1, kernel_regularizer=reg, name="mrcnn_class_conv2")
        self.bn2 = batch_norm(name="mrcnn_class_bn2")
        self.logits = keras.layers.Dense(num_classes, kernel_regularizer=reg, name="mrcnn_class_logits")
        self.deltas = keras.layers.Dense(4 * num_classes, kernel_regularizer=reg, name="mrcnn_bbox_fc")

    def build(self, input_shape):
        s, c, f = input_shape[-2], input_shape[-1], self.fc_filters
        self.conv1.build((None, s, s, c))
        self.bn1.build((None, 1, 1, f))
        self.conv2.build((None, 1, 1, f))
        self.bn2.build((None, 1, 1, f))
        self.logits.build((None, f))
        self.deltas.build((None, f))

    def fc1(self, x, channels: int | None = None) -> tf.Tensor:
        """The first "fc" layer (``S x S`` valid conv on ``S x S`` cells) as one matmul, before BN.

        A valid ``S x S`` convolution of an ``S x S`` map is a dense layer on the flattened cells;
        as ``MatMul`` it runs forward and backward 5-6x faster on the CPU than oneDNN's 7x7
        convolution (same kernel variable, same result up to summation order).

        Args:
            x: ``[N, S, S, C]`` ROI features.
            channels: Use only the kernel's first ``channels`` input channels (default ``C``).

        Returns:
            ``[N, fc]`` (no bias).
        """
        c = x.shape[-1] if channels is None else channels
        kernel = tf.cast(self.conv1.kernel, x.dtype)
        if c != kernel.shape[2]:
            kernel = kernel[:, :, :c]  # (a slice's gradient costs a full-size copy: only when needed)
        return tf.matmul(tf.reshape(x, [-1, self.pool_size * self.pool_size * c]), tf.reshape(kernel, [-1, self.fc_filters]))

    def fc2(self, x, training=False) -> tf.Tensor:
        """BN + ReLU of the first layer's ``[N, fc]`` output, the 1x1 second layer (a matmul), BN + ReLU."""
        x = tf.nn.relu(self.bn1(tf.reshape(x, [-1, 1, 1, self.fc_filters]), training=training))
        x = tf.matmul(tf.reshape(x, [-1, self.fc_filters]), tf.reshape(tf.cast(self.conv2.kernel, x.dtype), [self.fc_filters, -1]))
        if self.conv2.use_bias:
            x = x + tf.cast(self.conv2.bias, x.dtype)
        x = tf.nn.relu(self.bn2(tf.reshape(x, [-1, 1, 1, self.fc_filters]), training=training))
        return tf.reshape(x, [-1, self.fc_filters])

    def features(self, roi_features, training=False):
        """Shared ``[B * R, fc]`` representation (for heads that extend this one)."""
        x, b, r = _merge_rois(roi_features)
        y = self.fc1(x)
        if self.conv1.use_bias:
            y = y + tf.cast(self.conv1.bias, y.dtype)
        return self.fc2(y, training), b, r

    def call(self, roi_features, training=False):
        x, b, r = self.features(roi_features, training)
        logits = tf.reshape(self.logits(x), [b, r, self.num_classes])
        deltas = tf.reshape(self.deltas(x), [b, r, self.num_classes, 4])
        return logits, deltas

    def get_config(self):
        return attribute_config(super().get_config(), self, "num_classes", "fc_filters", "pool_size", "weight_decay")


@keras.saving.register_keras_serializable(package="tfmedseg")
class MaskHead(keras.layers.Layer):
    """``num_convs`` x (Conv 3x3 + BN + ReLU), optional x2 transposed conv, sigmoid per class.

    The seed's mask frontend outputs ``14 x 14`` masks (``upsample=False``, ROIAlign 14);
    Matterport's default (``upsample=True``) gives 28 x 28.

    Args:
        num_classes: ``K = C + 1`` mask channels.
        filters: Conv width (256).
        num_convs: Number of conv+BN+ReLU blocks (4).
        upsample: Add ``Conv2DTranspose(filters, 2, stride 2)`` + ReLU.
        weight_decay: L2 factor on kernels.

    Call args:
        roi_features: ``[B, R, S, S, C]``.

    Returns:
        ``[B, R, S', S', K]`` probabilities, ``S' = S`` or ``2 S``.
    """

    def __init__(self, num_classes: int, filters: int = 256, num_convs: int = 4, upsample: bool = False, weight_decay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.filters = int(filters)
        self.num_convs = int(num_convs)
        self.upsample = bool(upsample)
        self.weight_decay = float(weight_decay)
        reg = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
        self.convs = [keras.layers.Conv2D(filters, 3, padding="same", kernel_regularizer=reg, name=f"mrcnn_mask_conv{i + 1}") for i in range(num_convs)]
        self.bns = [batch_norm(name=f"mrcnn_mask_bn{i + 1}") for i in range(num_convs)]
        # the U-Nets' matmul-gradient transposed conv (Keras' Conv2DTranspose, same weights and forward op)
        self.deconv = conv_transpose(2, filters, 2, strides=2, activation="relu", kernel_regularizer=reg,
                                     name="mrcnn_mask_deconv") if upsample else None
        self.out = keras.layers.Conv2D(num_classes, 1, activation="sigmoid", kernel_regularizer=reg, name="mrcnn_mask")

    def build(self, input_shape):
        s, c = input_shape[-2], input_shape[-1]
        for conv, bn in zip(self.convs, self.bns):
            conv.build((None, s, s, c))
            bn.build((None, s, s, self.filters))
            c = self.filters
        if self.deconv is not None:
            self.deconv.build((None, s, s, c))
            s *= 2
        self.out.build((None, s, s, c))

    def call(self, roi_features, training=False):
        x, b, r = _merge_rois(roi_features)
        for conv, bn in zip(self.convs, self.bns):
            x = tf.nn.relu(bn(conv(x), training=training))
        if self.deconv is not None:
            x = self.deconv(x)
        x = self.out(x)
        return tf.reshape(x, tf.concat([[b, r], tf.shape(x)[1:]], 0))

    def get_config(self):
        return attribute_config(super().get_config(), self, "num_classes", "filters", "num_convs", "upsample", "weight_decay")
