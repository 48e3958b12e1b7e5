"""The in-graph raw-scan pipeline: slicing, windowing, resizing, labels and largest component."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from tfmedseg.errors import ConfigError
from tfmedseg.inference.graph import (
    apply_intensity,
    largest_component,
    predict_volume_probabilities,
    probabilities_to_labels,
    segment_volume,
)
from tfmedseg.inference.spec import IntensitySpec, ServingSpec


def test_clip_scale_matches_seed_002_window():
    x = tf.constant([-1000.0, -200.0, 0.0, 200.0, 3000.0])
    out = apply_intensity(x, IntensitySpec("clip_scale", -200, 200, 0, 1)).numpy()
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1])
    z = apply_intensity(tf.constant([1.0, 3.0]), IntensitySpec("zscore")).numpy()
    np.testing.assert_allclose(z, [-1, 1], atol=1e-6)


@pytest.mark.parametrize("context", [1, 3, 9])
def test_25d_stacks_feed_the_middle_slice_and_zero_pad_the_ends(context, rng):
    volume = rng.normal(size=(5, 6, 7)).astype(np.float32)
    seen = []

    def predict(batch):  # [B, H, W, k]: return the middle channel and remember the stack
        seen.append(batch)
        return batch[..., context // 2: context // 2 + 1]

    spec = ServingSpec(mode="2.5d", context_slices=context, batch_size=2)
    probs = predict_volume_probabilities(predict, tf.constant(volume), spec).numpy()
    np.testing.assert_allclose(probs[..., 0], volume, rtol=0, atol=0)
    first = tf.concat(seen, axis=0).numpy()[0]  # stack of slice 0
    r = context // 2
    for c in range(context):
        src = c - r
        expect = volume[src] if 0 <= src < 5 else np.zeros((6, 7), np.float32)
        np.testing.assert_array_equal(first[..., c], expect)


def test_3d_slab_returns_the_middle_slices(rng):
    volume = rng.normal(size=(10, 4, 5)).astype(np.float32)

    def predict(batch):  # [B, 8, H, W, 1] -> middle 4
        return batch[:, 2:6]

    spec = ServingSpec(mode="3d_slab", context_slices=8, output_slices=4, batch_size=1)
    probs = predict_volume_probabilities(predict, tf.constant(volume), spec).numpy()
    assert probs.shape == (10, 4, 5, 1)
    np.testing.assert_array_equal(probs[..., 0], volume)


def test_3d_patch_reassembles_windows_exactly(rng):
    volume = rng.normal(size=(9, 10, 11)).astype(np.float32)

    def predict(batch):  # identity, two channels
        return tf.concat([batch, -batch], axis=-1)

    spec = ServingSpec(mode="3d_patch", patch_size=(4, 4, 4), batch_size=3)
    probs = predict_volume_probabilities(predict, tf.constant(volume), spec).numpy()
    np.testing.assert_array_equal(probs[..., 0], volume)
    np.testing.assert_array_equal(probs[..., 1], -volume)


def test_resize_to_input_size_and_back_keeps_a_constant(rng):
    volume = np.full((3, 20, 30), 0.25, np.float32)
    spec = ServingSpec(mode="2d", input_size=(8, 8))
    sizes = []

    def predict(batch):
        sizes.append(tuple(batch.shape[1:3]))
        return batch

    probs = predict_volume_probabilities(predict, tf.constant(volume), spec).numpy()
    assert sizes[0] == (8, 8)
    np.testing.assert_allclose(probs[..., 0], volume, atol=1e-6)


def test_labels_from_softmax_and_sigmoid():
    probs = tf.constant([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    np.testing.assert_array_equal(probabilities_to_labels(probs).numpy(), [1, 0])
    np.testing.assert_array_equal(probabilities_to_labels(tf.constant([[0.4], [0.6]]), 0.5).numpy(), [0, 1])


def test_largest_component_matches_scipy_26_connectivity(rng):
    mask = rng.random((12, 14, 13)) > 0.72
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    expect = labels == (np.argmax(sizes) + 1)
    got = largest_component(tf.constant(mask)).numpy()
    np.testing.assert_array_equal(got, expect)
    assert not largest_component(tf.zeros((3, 3, 3), tf.bool)).numpy().any()


def test_segment_volume_removes_small_liver_islands():
    scan = np.full((6, 12, 12), -500.0, np.float32)
    scan[1:5, 2:8, 2:8] = 100.0  # the liver
    scan[2, 10, 10] = 100.0  # an island
    spec = ServingSpec(mode="2d", labels=("bg", "liver"), largest_component_labels=(1,),
                       intensity=IntensitySpec("clip_scale", -200, 200, 0, 1))

    def predict(batch):  # "liver" where the normalised CT is bright
        p = tf.cast(batch > 0.6, tf.float32)
        return tf.concat([1 - p, p], axis=-1)

    labels, _ = segment_volume(predict, tf.constant(scan), spec)
    labels = labels.numpy()
    assert labels[2, 10, 10] == 0
    assert labels[1:5, 2:8, 2:8].all() and labels.sum() == 4 * 36


@pytest.mark.parametrize("kwargs, key", [
    ({"mode": "4d"}, "mode"),
    ({"context_slices": 8, "output_slices": 3}, "context_slices"),
    ({"mode": "3d_patch"}, "patch_size"),
])
def test_bad_specs_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        ServingSpec(**kwargs)


@pytest.mark.parametrize("density", [0.3, 0.55, 0.75])
def test_component_ids_partition_equals_scipy(density, rng):
    from tfmedseg.inference.graph import connected_component_ids

    mask = rng.random((9, 17, 15)) < density
    ref, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    ids = connected_component_ids(tf.constant(mask)).numpy()
    assert ids.dtype == np.int32 and (ids[~mask] == 0).all()
    # same partition: a one-to-one map between our ids and scipy's labels
    pairs = set(zip(ref[mask].tolist(), ids[mask].tolist()))
    assert len(pairs) == n == len({b for _, b in pairs})


def test_component_ids_of_a_long_snake_and_a_large_volume():
    from tfmedseg.inference.graph import connected_component_ids

    snake = np.zeros((1, 41, 41), bool)  # a serpentine path of ~800 voxels: many plain propagation rounds
    for r in range(0, 41, 2):
        snake[0, r, :] = True
        snake[0, r + 1 if r + 1 < 41 else r, 40 if (r // 2) % 2 == 0 else 0] = True
    ids = connected_component_ids(tf.constant(snake)).numpy()
    assert len(np.unique(ids[snake])) == 1
    big = np.zeros((64, 512, 520), bool)  # 17.0M voxels > 2**24: ids must stay exact
    big[:, :, :260] = True
    big[:, :, 261:] = True
    ids = connected_component_ids(tf.constant(big)).numpy()
    assert len(np.unique(ids[:, :, :260])) == 1 and len(np.unique(ids[:, :, 261:])) == 1
    assert ids[0, 0, 0] != ids[0, 0, 300]
