"""MaligNet's global-feature classifier (seed 001 §3d, Fig. 8, L752-779).

``C5 -> C6 = ReLU(BN(Conv1x1(C5)))`` (the embedding, Table 4's "C6" layer) ``-> global average
pool -> [B, E]``, tiled once per ROI (``J`` = the ROIs of the image: 200 in training, the inference
proposals at test time; the seed's ``tf.tile``) and over the ``S x S`` pooled grid, then concatenated
with each ROI's ROIAlign features before the classifier's two conv+BN+ReLU layers. Only the
class/box branch reads it; the mask head does not (Fig. 6/8).

Choices where the seed is silent (spec §3d): embedding width ``E = 256``, fusion before the 7x7
"fc" conv (``[B, J, 7, 7, C + E]``). The head computes that conv without materialising the tile
(:meth:`GlobalFeatureBoxHead.call`: the global part is the same for every ROI, so it is computed
once per image; identical result, the baseline's cost per ROI).

Example:
    >>> head = GlobalFeatureBoxHead(num_classes=5, fc_filters=8, pool_size=7, global_filters=4)
    >>> logits, deltas = head(np.zeros((2, 3, 7, 7, 6), np.float32), context=np.zeros((2, 2, 2, 16), np.float32))
    >>> tuple(logits.shape), tuple(deltas.shape)
    ((2, 3, 5), (2, 3, 5, 4))
"""

from __future__ import annotations

import keras
import numpy as np  # noqa: F401  (doctest)
import tensorflow as tf

from tfmedseg.models.blocks.normalization import batch_norm

from tfmedseg.models.detection.heads import BoxClassHead, _merge_rois

__all__ = ["GlobalFeatureBoxHead", "tile_global_features"]


def tile_global_features(global_features, num_rois, pool_size: int) -> tf.Tensor:
    """Repeat each image's global vector for every ROI and pooled cell.

    Args:
        global_features: ``[B, E]``.
        num_rois: ``J`` (int or scalar tensor).
        pool_size: ``S`` of the ROIAlign grid.

    Returns:
        ``[B, J, S, S, E]``.
    """
    g = tf.convert_to_tensor(global_features)
    g = g[:, None, None, None, :]
    return tf.tile(g, tf.stack([1, num_rois, pool_size, pool_size, 1]))


@keras.saving.register_keras_serializable(package="tfmedseg")
class GlobalFeatureBoxHead(BoxClassHead):
    """:class:`BoxClassHead` whose ROI features are concatenated with the tiled C6 embedding.

    Args:
        num_classes, fc_filters, pool_size, weight_decay: As :class:`BoxClassHead`.
        global_filters: ``E``, width of the C6 embedding (256).

    Call args:
        roi_features: ``[B, J, S, S, C]``.
        context: ``C5`` ``[B, h, w, c5]``.

    Returns:
        ``(logits [B, J, K], deltas [B, J, K, 4])``.
    """

    uses_context = True

    def __init__(self, num_classes: int, fc_filters: int = 1024, pool_size: int = 7, weight_decay: float = 0.0,
                 global_filters: int = 256, **kwargs):
        super().__init__(num_classes, fc_filters, pool_size, weight_decay, **kwargs)
        self.global_filters = int(global_filters)
        reg = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
        self.c6_conv = keras.layers.Conv2D(self.global_filters, 1, kernel_regularizer=reg, name="mrcnn_c6_conv")
        self.c6_bn = batch_norm(name="mrcnn_c6_bn")

    def build(self, input_shape):
        # the C6 conv/BN build on their first call (C5's channels are only known then)
        super().build((*input_shape[:-1], input_shape[-1] + self.global_filters))

    def global_features(self, c5, training=False) -> tf.Tensor:
        """``C5 [B, h, w, c5] -> [B, E]`` (C6 embedding, global average pooled)."""
        x = tf.nn.relu(self.c6_bn(self.c6_conv(c5), training=training))
        return tf.reduce_mean(x, axis=[1, 2])

    def call(self, roi_features, context=None, training=False):
        """The classifier on ``concat([roi_features, tile(C6)])``, computed without the tile.

        The first "fc" layer is a ``S x S`` valid conv, i.e. a dense layer on the flattened cell
        grid, so its kernel splits into an ROI part ``W_r [S, S, C, F]`` and a global part
        ``W_g [S, S, E, F]``; the global part of every ROI of an image is the same
        ``g @ sum_ij W_g[i, j]`` (the tiled vector is constant over ROIs and cells). Computing it once
        per image gives exactly the tiled concatenation's result (same weights, tested against
        :func:`tile_global_features`) at the baseline head's cost per ROI.
        """
        if context is None:
            raise ValueError("GlobalFeatureBoxHead needs context=C5")
        return self._from_features(self.fused_fc1(tf.convert_to_tensor(roi_features), context, training), training)

    def fused_fc1(self, roi_features, context, training=False) -> tf.Tensor:
        """First "fc" conv of ``concat([roi_features [B, J, S, S, C], tile(C6)])``, before BN: ``[B, J, F]``."""
        g = self.global_features(context, training)  # [B, E]
        x, b, r = _merge_rois(roi_features)  # [B * J, S, S, C]
        c = roi_features.shape[-1]
        kernel = tf.cast(self.conv1.kernel, x.dtype)
        y = tf.reshape(self.fc1(x, c), [b, r, self.fc_filters])  # the ROI part, one matmul
        y += tf.matmul(tf.cast(g, x.dtype), tf.reduce_sum(kernel[:, :, c:], axis=[0, 1]))[:, None, :]
        return y + tf.cast(self.conv1.bias, x.dtype) if self.conv1.use_bias else y

    def tiled_call(self, roi_features, context, training=False):
        """The seed's formulation (``tf.tile`` + concat, then the plain head): the reference of :meth:`call`."""
        roi_features = tf.convert_to_tensor(roi_features)
        g = tile_global_features(self.global_features(context, training), tf.shape(roi_features)[1], self.pool_size)
        return super().call(tf.concat([roi_features, tf.cast(g, roi_features.dtype)], -1), training=training)

    def _from_features(self, y, training):
        """BN/ReLU of the fused first layer ``[B, J, F]``, the second layer and the two outputs."""
        b, r = tf.shape(y)[0], tf.shape(y)[1]
        x = self.fc2(tf.reshape(y, [-1, self.fc_filters]), training)
        return (tf.reshape(self.logits(x), [b, r, self.num_classes]),
                tf.reshape(self.deltas(x), [b, r, self.num_classes, 4]))

    def get_config(self):
        return {**super().get_config(), "global_filters": self.global_filters}
