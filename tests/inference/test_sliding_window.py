"""Sliding window (identity, seams, TTA, low-memory), 2.5D slices and geometry restoration."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.inference import (
    compute_importance_map,
    dense_window_starts,
    flip_tta_predictor,
    make_predictor,
    paste_crop,
    predict_slices,
    resize_to_shape,
    slice_stack,
    sliding_window_inference,
)


def test_window_starts_match_monai():
    # 64x128x128, roi 64, overlap 0.5 -> 1 x 3 x 3 windows (perf-baselines section 4)
    assert dense_window_starts((64, 128, 128), (64, 64, 64), 0.5) == [[0], [0, 32, 64], [0, 32, 64]]
    # 100 with roi 40 and overlap .25 -> step 30: 0, 30, 60 (last shifted back to 100-40=60)
    assert dense_window_starts((100,), (40,), 0.25) == [[0, 30, 60]]
    assert dense_window_starts((10,), (16,), 0.5) == [[0]]


def test_gaussian_importance_map_like_monai():
    w = compute_importance_map((64, 64), "gaussian", 0.125)
    x = np.arange(64) - 31.5
    g = np.exp(-(x**2) / (2 * 8.0**2))
    expect = np.outer(g, g) / g.max() ** 2
    expect = np.maximum(expect, 1e-3)
    np.testing.assert_allclose(w, expect, rtol=1e-5)
    assert w.max() == pytest.approx(1.0) and w.min() == pytest.approx(1e-3)
    assert np.all(compute_importance_map((3, 4, 5), "constant") == 1.0)
    with pytest.raises(ConfigError, match="mode"):
        compute_importance_map((4, 4), "cosine")


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_identity_model_returns_input_3d_and_2d(rng, mode):
    x = rng.random((2, 20, 24, 28, 2)).astype(np.float32)
    y = sliding_window_inference(x, (8, 16, 16), 3, lambda w: w, overlap=0.5, mode=mode)
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
    x2 = rng.random((1, 30, 17, 1)).astype(np.float32)
    y2 = sliding_window_inference(x2, (16, 16), 2, lambda w: w * 3.0, overlap=0.25, mode=mode)
    np.testing.assert_allclose(y2, 3.0 * x2, rtol=1e-5, atol=1e-6)


def test_constant_model_has_no_seams():
    x = np.zeros((1, 16, 40, 40, 1), np.float32)
    const = lambda w: np.full(w.shape[:-1] + (2,), [0.3, 0.7], np.float32)  # noqa: E731
    y = sliding_window_inference(x, (8, 16, 16), 4, const, overlap=0.5, mode="gaussian")
    np.testing.assert_allclose(y[..., 0], 0.3, atol=1e-6)
    np.testing.assert_allclose(y[..., 1], 0.7, atol=1e-6)


def test_blending_weights_a_position_dependent_model_like_monai(rng):
    # A model that returns its window's mean: the blended value at a voxel is the importance-weighted
    # mean of the window means, computed here by brute force over the 1-D windows.
    x = rng.random((1, 1, 50, 1)).astype(np.float32)
    roi, ov = (20,), 0.5
    y = sliding_window_inference(x, (1, 20), 2,
                                 lambda w: np.broadcast_to(w.mean(axis=(1, 2), keepdims=True), w.shape), overlap=ov)
    y = y[:, 0]
    x = x[:, 0]
    imp = compute_importance_map((1, 20))[0]
    num = np.zeros(50)
    den = np.zeros(50)
    for s in dense_window_starts((50,), roi, ov)[0]:
        num[s : s + 20] += imp * x[0, s : s + 20, 0].mean()
        den[s : s + 20] += imp
    np.testing.assert_allclose(y[0, :, 0], num / den, rtol=1e-5)


def test_small_image_is_padded_and_cropped(rng):
    x = rng.random((1, 5, 6, 7, 1)).astype(np.float32)
    y = sliding_window_inference(x, (8, 8, 8), 1, lambda w: w + 1.0)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x + 1.0, rtol=1e-6)


@pytest.fixture(scope="module")
def conv_model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((None, None, None, 1))
    out = keras.layers.Conv3D(3, 3, padding="same", activation="softmax")(inp)
    return keras.Model(inp, out)


def test_low_memory_argmax_equals_full_argmax(rng, conv_model):
    x = rng.normal(size=(1, 24, 20, 20, 1)).astype(np.float32)
    pred = make_predictor(conv_model)
    full = sliding_window_inference(x, (8, 12, 12), 4, pred, overlap=0.5)
    lab = sliding_window_inference(x, (8, 12, 12), 4, pred, overlap=0.5, argmax=True, low_memory=True)
    assert lab.dtype == np.uint8 and lab.shape == (1, 24, 20, 20)
    np.testing.assert_array_equal(lab, np.argmax(full, axis=-1))
    # a Keras model is accepted directly
    direct = sliding_window_inference(x, (8, 12, 12), 4, conv_model, overlap=0.5)
    np.testing.assert_allclose(direct, full, rtol=1e-5, atol=1e-6)
    assert len(np.unique(lab)) > 1


def test_flip_tta_averages_flipped_predictions(rng):
    x = rng.random((1, 6, 8, 1)).astype(np.float32)
    ramp = np.arange(8, dtype=np.float32)[None, None, :, None]
    pred = lambda w: w + ramp  # noqa: E731  (not flip-equivariant along W)
    tta = flip_tta_predictor(pred, spatial_axes=(1,))
    y = np.asarray(tta(x))
    # mean of (x + ramp) and flip(flip(x) + ramp) = x + (ramp + ramp[::-1]) / 2 = x + 3.5
    np.testing.assert_allclose(y, x + 3.5, rtol=1e-6)
    tta_all = flip_tta_predictor(lambda w: w * 2.0, spatial_axes=(0, 1))
    np.testing.assert_allclose(np.asarray(tta_all(x)), 2 * x, rtol=1e-6)


def test_predict_slices_2p5d_context_and_padding():
    vol = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 3, 4), np.float32) + 1.0
    st = slice_stack(vol, 0, 9)
    assert st.shape == (3, 4, 9)
    # slice 0 with context 9: channels z-4..z+4 -> zeros for z<0, then slices 0..4 (values 1..5)
    np.testing.assert_array_equal(st[0, 0], [0, 0, 0, 0, 1, 2, 3, 4, 5])
    out = predict_slices(vol, lambda b: b.sum(axis=-1, keepdims=True), context=9, batch_size=2)
    assert out.shape == (5, 3, 4, 1)
    np.testing.assert_allclose(out[:, 0, 0, 0], [15, 15, 15, 15, 15])
    out3 = predict_slices(vol, lambda b: b.sum(axis=-1, keepdims=True), context=3)
    np.testing.assert_allclose(out3[:, 0, 0, 0], [3, 6, 9, 12, 9])
    with pytest.raises(ConfigError, match="context"):
        predict_slices(vol, lambda b: b, context=4)


def test_paste_crop_and_resize_back():
    pred = np.ones((2, 3), np.uint8)
    full = paste_crop(pred, [(1, 3), (2, 5)], (4, 6))
    assert full.sum() == 6 and full[1:3, 2:5].all()
    lab = np.zeros((4, 4), np.uint8)
    lab[:2, :2] = 1
    up = resize_to_shape(lab, (8, 8), order=0)
    assert up.shape == (8, 8) and up[:4, :4].all() and up.sum() == 16
    with pytest.raises(InvalidInputError, match="box"):
        paste_crop(pred, [(0, 3), (0, 3)], (4, 6))


def test_bad_inputs():
    x = np.zeros((1, 8, 8, 1), np.float32)
    with pytest.raises(InvalidInputError, match="inputs: must be"):
        sliding_window_inference(np.zeros((8, 8)), (4, 4), 1, lambda w: w)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="inputs: contains 1 NaN"):
        sliding_window_inference(bad, (4, 4), 1, lambda w: w)
    with pytest.raises(ConfigError, match="roi_size"):
        sliding_window_inference(x, (4, 4, 4), 1, lambda w: w)
    with pytest.raises(ConfigError, match="overlap"):
        sliding_window_inference(x, (4, 4), 1, lambda w: w, overlap=1.0)
    with pytest.raises(ConfigError, match="mode"):
        sliding_window_inference(x, (4, 4), 1, lambda w: w, mode="hann")
    with pytest.raises(ConfigError, match="low_memory"):
        sliding_window_inference(x, (4, 4), 1, lambda w: w, low_memory=True)
    with pytest.raises(InvalidInputError, match="predictor"):
        sliding_window_inference(x, (4, 4), 1, lambda w: w[:, :2])
