"""The liver-then-tumour cascade with hand-made stage predictors."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmedseg.inference.cascade import CascadeStage, predict_cascade
from tfmedseg.inference.spec import CascadeConfig, ServingSpec


def _threshold_stage(low, high, context):
    """Foreground where the middle input slice lies in [low, high] (unit intensities)."""
    def predict(batch):
        mid = batch[..., context // 2: context // 2 + 1]
        p = tf.cast((mid >= low) & (mid <= high), tf.float32)
        return tf.concat([1 - p, p], axis=-1)
    return CascadeStage(predict, ServingSpec(mode="2.5d", context_slices=context, input_size=(16, 16)))


def test_cascade_keeps_largest_liver_and_tumour_inside_it():
    ct = np.full((6, 32, 32), -500.0, np.float32)
    ct[1:5, 4:20, 4:20] = 60.0  # liver, maps to 0.65
    ct[2:4, 8:12, 8:12] = 150.0  # tumour, maps to 0.875
    ct[3, 28:31, 28:31] = 60.0  # a liver-like island (dropped by the largest component)
    ct[3, 28, 2] = 150.0  # tumour-like voxel outside the liver
    liver = _threshold_stage(0.55, 1.0, 3)
    # Tumour stage sees the masked CT (0 outside the liver): bright inside the liver.
    tumour = _threshold_stage(0.8, 1.0, 3)
    result = predict_cascade(ct, liver, tumour, CascadeConfig(tumour_component_threshold=0.5))
    labels = result.labels
    assert labels.dtype == np.uint8 and labels.shape == ct.shape
    assert (labels[3, 28:31, 28:31] == 0).all()
    assert labels[3, 28, 2] == 0
    assert (labels[2:4, 9:11, 9:11] == 2).all()
    assert (labels[1, 6:18, 6:18] == 1).all()
    assert labels[0].max() == 0
