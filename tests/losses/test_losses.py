"""Segmentation losses: hand-computed values, config round trip, reduction under MirroredStrategy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.errors import ConfigError
from tfmedseg.losses import (
    BCEWithLogitsLoss,
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    WeightedCrossEntropyLoss,
    get_loss,
)


def _binary_example():
    y = np.zeros((2, 4, 4, 1), "float32")
    y[0, :2] = 1  # 8 foreground voxels in sample 0, none in sample 1
    p = np.full((2, 4, 4, 1), 0.3, "float32")
    return y, p


def test_dice_matches_seed_004_formula_per_sample():
    y, p = _binary_example()
    loss = DiceLoss(from_logits=False, activation="sigmoid")
    # sample 0: 1 - (2*2.4 + 1) / (8 + 4.8 + 1); sample 1: 1 - 1 / (0 + 4.8 + 1)
    expected = np.array([1 - 5.8 / 13.8, 1 - 1 / 5.8])
    np.testing.assert_allclose(loss.call(y, p).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(float(loss(y, p)), expected.mean(), rtol=1e-6)
    # batch Dice: one value for the batch, given to every sample
    batch = DiceLoss(from_logits=False, activation="sigmoid", batch_dice=True)
    np.testing.assert_allclose(batch.call(y, p).numpy(), [1 - (4.8 + 1) / (8 + 9.6 + 1)] * 2, rtol=1e-6)


def test_dice_multiclass_sparse_labels_and_background_flag():
    labels = np.array([[[0, 1], [2, 2]]])  # [1, 2, 2]
    logits = np.log(np.array([[[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], [[0.2, 0.2, 0.6], [0.1, 0.1, 0.8]]]], "float32"))
    p = np.exp(logits)
    onehot = np.eye(3)[labels]
    dice_c = (2 * (onehot * p).sum((1, 2)) + 1) / (onehot.sum((1, 2)) + p.sum((1, 2)) + 1)
    np.testing.assert_allclose(DiceLoss()(labels, logits).numpy(), 1 - dice_c.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        DiceLoss(include_background=False)(labels[..., None], logits).numpy(), 1 - dice_c[:, 1:].mean(), rtol=1e-5
    )
    np.testing.assert_allclose(DiceLoss(from_logits=False)(onehot, p).numpy(), 1 - dice_c.mean(), rtol=1e-5)
    weighted = DiceLoss(class_weights=[0, 1, 3])(labels, logits).numpy()
    np.testing.assert_allclose(weighted, 1 - (dice_c[0, 1] + 3 * dice_c[0, 2]) / 4, rtol=1e-5)


def test_jaccard_and_dice_ce():
    y, p = _binary_example()
    jac = JaccardLoss(from_logits=False, activation="sigmoid").call(y, p).numpy()
    np.testing.assert_allclose(jac, [1 - 3.4 / (12.8 - 2.4 + 1), 1 - 1 / 5.8], rtol=1e-6)
    z = np.log(p / (1 - p))
    ce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).reshape(2, -1).mean(1)
    dice = np.array([1 - 5.8 / 13.8, 1 - 1 / 5.8])
    got = DiceCELoss(activation="sigmoid", dice_weight=0.5, ce_weight=2.0).call(y, z).numpy()
    np.testing.assert_allclose(got, 0.5 * dice + 2.0 * ce, rtol=1e-5)


def test_bce_weighted_ce_and_focal_against_numpy(rng):
    z = rng.normal(size=(2, 5, 5, 1)).astype("float32")
    t = (rng.random((2, 5, 5, 1)) > 0.5).astype("float32")
    s = 1 / (1 + np.exp(-z.astype("float64")))
    bce = -(3.0 * t * np.log(s) + (1 - t) * np.log(1 - s))
    np.testing.assert_allclose(BCEWithLogitsLoss(pos_weight=3.0).call(t, z).numpy(), bce.reshape(2, -1).mean(1), rtol=1e-5)
    wce = -(2.0 * t * np.log(s) + 0.5 * (1 - t) * np.log(1 - s))
    got = WeightedCrossEntropyLoss([0.5, 2.0], activation="sigmoid").call(t, z).numpy()
    np.testing.assert_allclose(got, wce.reshape(2, -1).mean(1), rtol=1e-5)
    pt = np.where(t == 1, s, 1 - s)
    at = np.where(t == 1, 0.25, 0.75)
    focal = -at * (1 - pt) ** 2 * np.log(pt)
    np.testing.assert_allclose(FocalLoss(alpha=0.25).call(t, z).numpy(), focal.reshape(2, -1).mean(1), rtol=1e-5)
    # softmax weighted CE with sparse labels
    logits = rng.normal(size=(2, 3, 3, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 3, 3))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    w = np.array([0.2, 1.0, 4.0])
    ref = -(w[labels] * np.take_along_axis(logp, labels[..., None], -1)[..., 0]).reshape(2, -1).mean(1)
    np.testing.assert_allclose(WeightedCrossEntropyLoss(list(w)).call(labels, logits).numpy(), ref, rtol=1e-5)
    # focal with gamma 0 and softmax == categorical CE
    ce = -np.take_along_axis(logp, labels[..., None], -1)[..., 0].reshape(2, -1).mean(1)
    np.testing.assert_allclose(FocalLoss(gamma=0.0, activation="softmax").call(labels, logits).numpy(), ce, rtol=1e-5)


@pytest.mark.parametrize(
    "loss",
    [
        DiceLoss(activation="sigmoid", include_background=False, smooth=0.5, squared=True),
        DiceCELoss(dice_weight=2.0),
        JaccardLoss(batch_dice=True),
        BCEWithLogitsLoss(pos_weight=2.0),
        WeightedCrossEntropyLoss([1.0, 3.0]),
        FocalLoss(gamma=1.5, alpha=0.3),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_config_round_trip(loss, rng):
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(clone) is type(loss)
    assert clone.get_config() == loss.get_config()
    y = (rng.random((2, 4, 4, 2)) > 0.5).astype("float32")
    z = rng.normal(size=(2, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(float(clone(y, z)), float(loss(y, z)), rtol=1e-6)


def test_factory_names_and_errors():
    assert isinstance(get_loss("dice_ce", activation="sigmoid"), DiceCELoss)
    with pytest.raises(ConfigError, match="unknown loss 'dicee'.*allowed"):
        get_loss("dicee")
    with pytest.raises(ConfigError, match="loss_kwargs"):
        get_loss("dice", smoothing=1)
    with pytest.raises(ConfigError, match="activation"):
        DiceLoss(activation="relu")


def _tiny_model(activation=None):
    inp = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(1, 3, padding="same", kernel_initializer="ones", activation=activation)
    return keras.Model(inp, conv(inp))


def test_dice_loss_reduction_under_mirrored_strategy(two_cpu_strategy, rng):
    """Per-sample Dice is logged in [0, 1] and equal to one device; a scalar Dice is logged x replicas."""
    x = rng.normal(size=(8, 8, 8, 1)).astype("float32")
    y = (x > 0).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def evaluate(strategy, loss, activation=None):
        with strategy.scope():
            model = _tiny_model(activation)
            model.compile(loss=loss)
        return model.evaluate(ds, verbose=0)

    ours = lambda: DiceLoss(activation="sigmoid")  # noqa: E731
    one = evaluate(tf.distribute.get_strategy(), ours())
    two = evaluate(two_cpu_strategy, ours())
    assert 0.0 <= two <= 1.0
    np.testing.assert_allclose(two, one, rtol=1e-5)
    # keras.losses.Dice reduces the batch to a scalar itself: Keras skips the 1/replicas scaling
    # but multiplies the logged value by the replica count (the 1.0144 of the dependency probe).
    scalar_one = evaluate(tf.distribute.get_strategy(), keras.losses.Dice(), "sigmoid")
    scalar_two = evaluate(two_cpu_strategy, keras.losses.Dice(), "sigmoid")
    assert 0.0 < scalar_one < 1.0
    assert scalar_two > 1.5 * scalar_one
