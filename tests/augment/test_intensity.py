"""Intensity layers: image only, strengths, identities, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from tfmedseg.augment import (
    RandomBrightnessContrast,
    RandomGaussianNoise,
    RandomIntensityScaleShift,
    RandomUniformNoise,
)
from tfmedseg.errors import ConfigError, InvalidInputError


def test_gaussian_noise_fixed_stddev_and_label_untouched(rng):
    image = np.zeros((4, 32, 32, 1), np.float32)
    label = rng.integers(0, 3, (4, 32, 32)).astype(np.int32)
    out = RandomGaussianNoise(stddev=0.1, seed=0)({"image": image, "label": label}, training=True)
    np.testing.assert_allclose(out["image"].numpy().reshape(4, -1).std(1), 0.1, rtol=0.1)
    np.testing.assert_array_equal(out["label"].numpy(), label)


def test_gaussian_noise_max_variance_is_a_variance():
    """Seed 004's max variance 0.1: per-sample variance ~ U(0, 0.1), so std <= sqrt(0.1)."""
    image = np.zeros((32, 32, 32, 1), np.float32)
    out = RandomGaussianNoise(max_variance=0.1, seed=1)(image, training=True).numpy()
    var = out.reshape(32, -1).var(1)
    assert var.max() < 0.1 * 1.1 and var.max() > 0.07 and var.min() < 0.03
    np.testing.assert_allclose(var.mean(), 0.05, atol=0.015)


def test_uniform_noise_is_bounded(rng):
    image = rng.random((2, 16, 16, 16, 1)).astype(np.float32)
    out = RandomUniformNoise(max_abs=0.5 / 400, seed=0)(image, training=True).numpy()
    diff = out - image
    assert np.abs(diff).max() <= 0.5 / 400 + 1e-7 and np.abs(diff).max() > 0.9 * 0.5 / 400


def test_brightness_contrast_per_sample_affine(rng):
    image = rng.random((3, 16, 16, 2)).astype(np.float32)
    out = RandomBrightnessContrast(contrast=(0.5, 1.5), seed=3)(image, training=True).numpy()
    # contrast about the mean keeps each sample's mean and scales its deviations by one factor
    np.testing.assert_allclose(out.mean((1, 2)), image.mean((1, 2)), atol=1e-5)
    dev_in = image - image.mean((1, 2), keepdims=True)
    dev_out = out - out.mean((1, 2), keepdims=True)
    factors = (dev_out * dev_in).sum((1, 2, 3)) / (dev_in**2).sum((1, 2, 3))
    np.testing.assert_allclose(dev_out, factors[:, None, None, None] * dev_in, atol=1e-5)
    assert np.all((factors >= 0.5) & (factors <= 1.5)) and np.ptp(factors) > 0.01
    out2 = RandomBrightnessContrast(brightness=(0.7, 1.3), shift=0.1, seed=3)(image, training=True).numpy()
    scale = (out2[:, 1, 1, 0] - out2[:, 0, 0, 0]) / (image[:, 1, 1, 0] - image[:, 0, 0, 0])
    np.testing.assert_allclose(out2, image * scale[:, None, None, None] + (out2 - image * scale[:, None, None, None])[:, :1, :1, :1], atol=1e-5)


def test_scale_shift_per_channel(rng):
    image = rng.random((2, 8, 8, 8, 2)).astype(np.float32) + 1.0
    out = RandomIntensityScaleShift(scale=0.2, shift=0.0, seed=0)(image, training=True).numpy()
    ratio = (out / image).reshape(2, -1, 2)
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-5)
    assert np.all(np.abs(ratio[:, 0] - 1) <= 0.2) and abs(ratio[0, 0, 0] - ratio[0, 0, 1]) > 1e-4


def test_zero_magnitude_and_inference_are_identity(rng):
    image = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    for layer in (RandomGaussianNoise(stddev=0.0, seed=0), RandomUniformNoise(0.0, seed=0),
                  RandomBrightnessContrast(seed=0), RandomIntensityScaleShift(seed=0)):
        np.testing.assert_array_equal(layer(image, training=True).numpy(), image)
    np.testing.assert_array_equal(RandomGaussianNoise(stddev=1.0)(image).numpy(), image)


def test_probability_zero_keeps_samples(rng):
    image = rng.random((4, 8, 8, 1)).astype(np.float32)
    out = RandomGaussianNoise(stddev=0.5, probability=0.0, seed=0)(image, training=True).numpy()
    np.testing.assert_array_equal(out, image)
    out = RandomGaussianNoise(stddev=0.5, probability=0.5, seed=2)(np.zeros((64, 4, 4, 1), np.float32), training=True)
    hit = (out.numpy().reshape(64, -1) != 0).any(1).mean()
    assert 0.3 < hit < 0.7


def test_seeded_noise_is_deterministic(rng):
    image = rng.random((2, 8, 8, 1)).astype(np.float32)
    a = RandomGaussianNoise(max_variance=0.01, seed=5)(image, training=True).numpy()
    b = RandomGaussianNoise(max_variance=0.01, seed=5)(image, training=True).numpy()
    c = RandomGaussianNoise(max_variance=0.01, seed=6)(image, training=True).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="exactly one"):
        RandomGaussianNoise(stddev=0.1, max_variance=0.1)
    with pytest.raises(ConfigError, match="probability"):
        RandomUniformNoise(0.1, probability=1.5)
    with pytest.raises(ConfigError, match="contrast"):
        RandomBrightnessContrast(contrast=(1.2, 0.8))
    with pytest.raises(InvalidInputError, match="float image"):
        RandomGaussianNoise(stddev=0.1)(np.zeros((1, 4, 4, 1), np.int32), training=True)


def test_fast_normal_is_standard_normal():
    import tensorflow as tf

    from tfmedseg.augment._common import _normal

    z = _normal(tf.constant([3, 4], tf.int64), 0, [101, 999]).numpy()  # odd size: last pair is cut
    assert z.shape == (101, 999)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    np.testing.assert_allclose([(np.abs(z) < 1).mean(), (np.abs(z) < 2).mean()], [0.6827, 0.9545], atol=0.005)
    assert np.abs(z).max() < 4.9
    from scipy import stats

    flat = z.ravel()
    assert stats.kstest(flat, "norm").pvalue > 1e-3  # 100 k draws against N(0, 1)
    # neighbours (the two normals of one random word are 2i, 2i + 1) and neighbours two apart
    for a, b in ((flat[0:-1:2], flat[1::2]), (flat[:-2], flat[2:])):
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.02


@pytest.mark.parametrize("shape", [(4, 6, 10, 1), (5, 7, 9, 2), (1, 8, 8, 1)])
def test_gaussian_noise_equals_the_reference_normals(rng, shape):
    """The XLA noise adds exactly the reference normals
    ``_normal`` of the same sub-stream, with a static and with an unknown batch size."""
    import tensorflow as tf

    from tfmedseg.augment._common import _add_normal, _normal

    x = rng.random(shape).astype(np.float32)
    std = rng.uniform(0.05, 0.5, (shape[0], 1, 1, 1)).astype(np.float32)
    seed = tf.constant([7, 8], tf.int64)
    z = _normal(seed, 2, shape).numpy()
    out = _add_normal(tf.constant(x), seed, 2, tf.constant(std)).numpy()
    np.testing.assert_allclose(out, x + z * std, rtol=0, atol=1e-6)  # the add may fuse into one multiply-add
    assert np.abs(out - x).max() > 0.05

    @tf.function(input_signature=[tf.TensorSpec([None, *shape[1:]], tf.float32)])
    def dynamic(v):  # unknown batch size (tf.data / fit)
        return _add_normal(v, seed, 2, tf.constant(std))

    np.testing.assert_allclose(dynamic(tf.constant(x)).numpy(), x + z * std, rtol=0, atol=1e-6)


def _chi2_pvalue(counts: np.ndarray) -> float:
    from scipy import stats

    counts = counts.ravel()
    return stats.chisquare(counts, np.full(counts.shape, counts.sum() / counts.size)).pvalue


def test_noise_words_are_uniform_independent_and_keyed():
    """The counter-hash words under the noise: every bit fair, the 16-bit halves (the table indices) and the
    bytes uniform, no dependence between a word's two halves, neighbouring words, or streams of nearby
    seeds; a pure function of the seed."""
    import tensorflow as tf

    from tfmedseg.augment._common import _hash_words, _hash_words_xla

    n = 1 << 18
    seed = tf.constant([3, 4], tf.int32)
    words = _hash_words_xla(seed, n).numpy().view(np.uint32)
    assert words.dtype == np.uint32 and words.shape == (n,)
    np.testing.assert_array_equal(words, _hash_words(seed, n).numpy().view(np.uint32))  # eager == XLA
    np.testing.assert_array_equal(words, _hash_words_xla(seed, n).numpy().view(np.uint32))  # reproducible
    assert np.unique(words).size == n  # a permutation of the counters: no repeated word
    bits = (words[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    assert np.abs(bits.mean(0) - 0.5).max() < 5 * 0.5 / np.sqrt(n)  # each bit fair within 5 sigma
    low, high = words & 0xFFFF, words >> 16
    for half in (low, high):
        assert _chi2_pvalue(np.bincount(half, minlength=1 << 16)) > 1e-4  # the 65536 table indices
        assert _chi2_pvalue(np.bincount(half & 0xFF, minlength=256)) > 1e-4
        assert _chi2_pvalue(np.bincount(half >> 8, minlength=256)) > 1e-4
    # pairs on a 64 x 64 grid (top 6 bits): the two halves of a word (normals 2i, 2i + 1), neighbouring words,
    # words 2 apart, and the same counter under seeds that differ in one bit / by one in either word
    pairs = [(low, high), (high[:-1], high[1:]), (low[:-2], low[2:])]
    for other in ([3, 5], [2, 4], [3 + (1 << 20), 4], [4, 4]):
        w2 = _hash_words_xla(tf.constant(other, tf.int32), n).numpy().view(np.uint32)
        assert (w2 == words).mean() < 1e-3
        pairs.append((high, w2 >> 16))
        flipped = np.unpackbits((words ^ w2).view(np.uint8)).mean()
        assert abs(flipped - 0.5) < 0.005
    for a, b in pairs:
        assert _chi2_pvalue(np.bincount((a >> 10) * 64 + (b >> 10), minlength=64 * 64)) > 1e-4
    # an int64 seed uses all four 32-bit halves
    w64 = _hash_words_xla(tf.constant([3, 4 + (1 << 40)], tf.int64), 1024).numpy()
    assert (w64 != _hash_words_xla(tf.constant([3, 4], tf.int64), 1024).numpy()).mean() > 0.99


def test_gaussian_noise_layer_is_seeded_and_fresh_per_batch():
    """RandomGaussianNoise: the same seed gives the same noise, consecutive batches and other seeds get
    uncorrelated noise of the right strength."""
    from tfmedseg.augment import RandomGaussianNoise

    x = np.zeros((4, 64, 64, 1), np.float32)
    a = RandomGaussianNoise(stddev=0.5, seed=11)
    first, second = a(x, training=True).numpy(), a(x, training=True).numpy()
    again = RandomGaussianNoise(stddev=0.5, seed=11)(x, training=True).numpy()
    other = RandomGaussianNoise(stddev=0.5, seed=12)(x, training=True).numpy()
    np.testing.assert_array_equal(first, again)
    for z in (first, second, other):
        assert abs(z.std() - 0.5) < 0.01 and abs(z.mean()) < 0.01
    for z in (second, other):  # 16 k values: 5 standard errors of a correlation is 0.04
        assert abs(np.corrcoef(first.ravel(), z.ravel())[0, 1]) < 0.04
    for s in range(1, 4):  # the samples of one batch differ too (4 k values: 5 standard errors is 0.08)
        assert abs(np.corrcoef(first[0].ravel(), first[s].ravel())[0, 1]) < 0.08
