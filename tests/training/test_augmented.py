"""AugmentedModel: device-side augmentation inside train_step, labels aligned, slabs handled."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfmedseg.augment.geometric import RandomGeometric
from tfmedseg.augment.presets import AugmentationPipeline, build_preset
from tfmedseg.training.augmented import AugmentedModel


def _net(shape, classes=2):
    inp = keras.Input(shape, name="image")
    conv = keras.layers.Conv3D if len(shape) == 4 else keras.layers.Conv2D
    x = conv(4, 3, padding="same", activation="relu")(inp)
    return keras.Model(inp, conv(classes, 1, activation="softmax", name="probabilities")(x))


def test_flip_keeps_2d_label_aligned(rng):
    x = (rng.random((4, 16, 16, 1)) > 0.5).astype(np.float32)
    y = x.astype(np.int32)
    aug = AugmentationPipeline([RandomGeometric(ndim=2, flip_axes=(0, 1), flip_probability=1.0, seed=3)])
    model = AugmentedModel(_net((16, 16, 1)), aug)
    xa, ya = model.augment(tf.constant(x), tf.constant(y))
    np.testing.assert_array_equal(xa.numpy().astype(np.int32), ya.numpy())
    np.testing.assert_array_equal(xa.numpy(), x[:, ::-1, ::-1])


def test_slab_labels_follow_the_middle_slices(rng):
    x = (rng.random((2, 8, 12, 12, 1)) > 0.5).astype(np.float32)
    y = x[:, 2:6].astype(np.int32)
    aug = AugmentationPipeline([RandomGeometric(ndim=3, rotation=20.0, flip_axes=(2,), flip_probability=1.0,
                                                interpolation="nearest", in_plane=True, seed=5)])
    model = AugmentedModel(_net((8, 12, 12, 1)), aug)
    xa, ya = model.augment(tf.constant(x), tf.constant(y))
    assert ya.shape == (2, 4, 12, 12, 1)
    np.testing.assert_array_equal(xa.numpy()[:, 2:6].astype(np.int32), ya.numpy())
    assert not np.array_equal(xa.numpy(), x)


def test_fit_under_mirrored_strategy_and_identity_at_inference(two_cpu_strategy, rng):
    x = rng.random((8, 16, 16, 3)).astype(np.float32)
    y = (x[..., :1] > 0.5).astype(np.int32)
    with two_cpu_strategy.scope():
        net = _net((16, 16, 3))
        model = AugmentedModel(net, build_preset("seed002_table31", ndim=2, seed=0))
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy())
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    np.testing.assert_allclose(model.predict(x, verbose=0), net.predict(x, verbose=0), atol=1e-6)
