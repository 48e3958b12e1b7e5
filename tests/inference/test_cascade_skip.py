"""Whole-scan speed without changing answers: the tumour stage runs on the liver's slices only,
connected components run on their mask's bounding box, stages keep one probability channel."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.inference import graph
from tfmedseg.inference.cascade import CascadeStage, liver_slices, predict_cascade
from tfmedseg.inference.spec import CascadeConfig, IntensitySpec, ServingSpec


def _tiny_net(rank: int, context: int, seed: int):
    """A random conv net (softmax over 2 classes): 2.5D ``[B, h, w, k] -> [B, h, w, 2]`` or 3D slab
    ``[B, k, h, w, 1] -> [B, o, h, w, 2]`` (the middle 4 of the slab)."""
    import keras

    keras.utils.set_random_seed(seed)
    if rank == 2:
        inp = keras.Input((16, 16, context))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
        out = keras.layers.Conv2D(2, 3, padding="same", activation="softmax")(x)
    else:
        inp = keras.Input((context, 16, 16, 1))
        x = keras.layers.Conv3D(4, 3, padding="same", activation="relu")(inp)
        x = keras.layers.Conv3D(2, 3, padding="same", activation="softmax")(x)
        out = x[:, (context - 4) // 2: (context + 4) // 2]
    return keras.Model(inp, out)


@pytest.mark.parametrize("mode,context,output", [("2.5d", 5, 1), ("3d_slab", 8, 4)])
def test_slice_range_equals_the_whole_volume_call_on_those_slices(mode, context, output):
    net = _tiny_net(2 if mode == "2.5d" else 3, context, seed=1)
    spec = ServingSpec(mode=mode, context_slices=context, output_slices=output, input_size=(16, 16), batch_size=3)
    volume = tf.constant(np.random.default_rng(0).random((13, 24, 20)), tf.float32)
    full = graph.predict_volume_probabilities(net, volume, spec).numpy()
    for lo, hi in ((3, 9), (0, 13), (5, 6), (11, 13), (7, 7)):
        part = graph.predict_volume_probabilities(net, volume, spec, slice_range=(tf.constant(lo), tf.constant(hi))).numpy()
        assert part.shape == full.shape
        np.testing.assert_allclose(part[lo:hi], full[lo:hi], atol=1e-6)
        assert not part[:lo].any() and not part[hi:].any()


def test_components_on_the_bounding_box_equal_the_whole_volume():
    rng = np.random.default_rng(3)
    for density in (0.0, 0.05, 0.3):
        mask = np.zeros((9, 20, 24), bool)
        mask[2:7, 3:15, 5:20] = rng.random((5, 12, 15)) < density
        prob = rng.random(mask.shape).astype(np.float32)
        m, p = tf.constant(mask), tf.constant(prob)
        np.testing.assert_array_equal(graph.largest_component(m).numpy(), graph._largest_component(m).numpy())
        np.testing.assert_array_equal(graph.drop_low_peak_components(m, p, 0.9).numpy(), graph._drop_low_peak(m, p, 0.9).numpy())
    start, stop = graph.mask_bounding_box(tf.constant(mask))
    assert start.numpy().tolist() == [2, 3, 5] and stop.numpy().tolist() == [7, 15, 20]
    assert graph.liver_slice_range(tf.zeros((4, 5, 5), tf.bool))[1].numpy() == 0


def _scan():
    """A CT in HU: a liver block (60 HU) with a bright tumour, on 8 of 20 slices."""
    ct = np.full((20, 24, 24), -600.0, np.float32)
    ct[6:14, 4:20, 4:20] = 60.0
    ct[8:11, 8:13, 8:13] = 160.0
    ct[:, 0:2, :] = 60.0  # a thin liver-like strip on every slice, not connected to the liver block
    return ct


def _threshold(low, high, context):
    def predict(batch):
        mid = batch[..., context // 2: context // 2 + 1]
        p = tf.cast((mid >= low) & (mid <= high), tf.float32) * 0.9 + 0.05
        return tf.concat([1 - p, p], axis=-1)
    return predict


def _reference_cascade(liver_predict, tumour_predict, scan, spec, cascade):
    """The cascade before the change: tumour stage on every slice, components on the whole volume."""
    unit = graph.apply_intensity(scan, spec.intensity)
    liver_p = graph.predict_volume_probabilities(liver_predict, unit, spec)[..., -1]
    liver = graph._largest_component(liver_p > cascade.liver_threshold)
    combined = unit * tf.cast(liver, tf.float32)
    tumour_p = graph.predict_volume_probabilities(tumour_predict, combined, spec)[..., -1]
    tumour = graph._drop_low_peak(tumour_p > cascade.tumour_threshold, tumour_p, cascade.tumour_component_threshold)
    return tf.cast(liver, tf.uint8) + tf.cast(tf.logical_and(tumour, liver), tf.uint8)


def test_tumour_stage_skips_liver_free_slices_with_the_same_labels():
    spec = ServingSpec(mode="2.5d", context_slices=3, input_size=(16, 16), batch_size=4,
                       intensity=IntensitySpec("clip_scale", -200.0, 200.0, 0.0, 1.0))
    cascade = CascadeConfig(tumour_component_threshold=0.5)
    rows = []

    def tumour(batch):
        rows.append(int(batch.shape[0]))
        return _threshold(0.8, 1.0, 3)(batch)

    liver = _threshold(0.55, 1.0, 3)
    scan = tf.constant(_scan())
    labels = graph.segment_cascade(liver, tumour, scan, spec, spec, cascade).numpy()
    skipped_rows, rows[:] = sum(rows), []
    expected = _reference_cascade(liver, tumour, scan, spec, cascade).numpy()
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) == {0, 1, 2} and not labels[:6].any() and not labels[14:].any()
    assert skipped_rows == 8 and sum(rows) == 20  # the tumour network saw the 8 liver slices, not 20

    # The host-side cascade (experiments, predict with a Keras model) does the same.
    stage = lambda fn: CascadeStage(fn, spec)  # noqa: E731
    host = predict_cascade(_scan(), stage(liver), stage(tumour), cascade)
    np.testing.assert_array_equal(host.labels, labels)
    assert not host.tumour_probability[:6].any() and liver_slices(host.labels >= 1) == (6, 14)
