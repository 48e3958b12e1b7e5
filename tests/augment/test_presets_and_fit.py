"""Presets, get_config round trips and the layers inside model.fit under MirroredStrategy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.augment import (
    PRESETS,
    AugmentationPipeline,
    RandomBrightnessContrast,
    RandomGaussianNoise,
    RandomGeometric,
    RandomIntensityScaleShift,
    RandomUniformNoise,
    build_preset,
)
from tfmedseg.errors import ConfigError, InvalidInputError


def test_presets_carry_the_seeds_ranges():
    table31 = build_preset("seed002_table31", ndim=2, seed=0).augment_layers
    geo = table31[0]
    assert (geo.rotation, geo.shear, geo.translation, geo.scale) == ((15.0,), 10.0, (16.0, 16.0), (0.875, 1.125))
    assert geo.elastic_probability == 0.1 and geo.flip_axes == (1,)
    assert isinstance(table31[1], RandomUniformNoise) and table31[1].max_abs == pytest.approx(0.00125)
    slab = build_preset("seed002_table31", ndim=3).augment_layers[0]
    assert slab.in_plane and slab.flip_axes == (2,)
    rot_mirror = build_preset("seed004_rot_mirror", ndim=3).augment_layers
    assert len(rot_mirror) == 1 and rot_mirror[0].flip_axes == (0, 1, 2) and rot_mirror[0].rotation == (15.0,) * 3
    noise = build_preset("seed004_rot_mirror_noise", ndim=3).augment_layers[1]
    assert isinstance(noise, RandomGaussianNoise) and noise.max_variance == 0.1
    noise01 = build_preset("seed004_rot_mirror_noise", 3, overrides={"RandomGaussianNoise": {"max_variance": 0.01}})
    assert noise01.augment_layers[1].max_variance == 0.01
    bc = build_preset("seed001_affine_bc", ndim=2).augment_layers[1]
    assert isinstance(bc, RandomBrightnessContrast) and bc.contrast == (0.7, 1.3) and bc.brightness == (0.7, 1.3)
    with pytest.raises(ConfigError, match="seed002_table31"):
        build_preset("table31")
    with pytest.raises(ConfigError, match="overrides"):
        build_preset("seed001_affine_bc", overrides={"RandomGaussianNoise": {}})


@pytest.mark.parametrize("name", PRESETS)
def test_presets_run_and_keep_labels(rng, name):
    ndim = 2 if name.startswith(("seed002", "seed001")) else 3
    shape = (2, 24, 24, 1) if ndim == 2 else (2, 12, 12, 12, 2)
    image = rng.random(shape).astype(np.float32)
    label = (image[..., 0] > 0.5).astype(np.int32)
    pipe = build_preset(name, ndim, seed=1, overrides={"RandomGeometric": {"jit_compile": False}})
    out = pipe({"image": image, "label": label}, training=True)
    assert out["image"].shape == shape and set(np.unique(out["label"].numpy())) <= {0, 1}
    assert not np.allclose(out["image"].numpy(), image)


LAYERS = [
    RandomGeometric(ndim=3, rotation=(10, 0, 5), shear=3, translation=(1, 2, 3), scale=(0.9, 1.2),
                    anisotropic_scale=True, flip_axes=(0, 2), elastic_probability=0.3, elastic_magnitude=1.5,
                    elastic_control_points=4, fill_value="min", label_fill_value=2, seed=3, jit_compile=False),
    RandomGaussianNoise(max_variance=0.01, probability=0.5, seed=3),
    RandomUniformNoise(max_abs=0.1, seed=3),
    RandomBrightnessContrast(brightness=(0.8, 1.2), contrast=(0.7, 1.3), shift=0.1, per_channel=True, seed=3),
    RandomIntensityScaleShift(scale=(0.9, 1.1), shift=(-0.1, 0.1), seed=3),
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: type(l).__name__)
def test_get_config_round_trip(rng, layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer) and revived.get_config() == layer.get_config()
    image = rng.random((2, 8, 8, 8, 2)).astype(np.float32)
    fresh = type(layer).from_config(layer.get_config())  # same seed -> same draws as the clone
    np.testing.assert_array_equal(clone(image, training=True).numpy(), fresh(image, training=True).numpy())


def test_pipeline_round_trip():
    pipe = build_preset("seed001_affine_bc", ndim=2, seed=4, overrides={"RandomGeometric": {"jit_compile": False}})
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pipe))
    assert isinstance(revived, AugmentationPipeline)
    assert [l.get_config() for l in revived.augment_layers] == [l.get_config() for l in pipe.augment_layers]
    image = np.linspace(0, 1, 2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16, 1)
    np.testing.assert_allclose(revived(image, training=True).numpy(), pipe(image, training=True).numpy(), atol=1e-6)
    np.testing.assert_array_equal(pipe(image).numpy(), image)


class AugmentedModel(keras.Model):
    """Tiny segmenter whose train step augments (image, label) on the device first."""

    def __init__(self, augment, **kwargs):
        super().__init__(**kwargs)
        self.augment = augment
        self.conv = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, x):
        return self.conv(x)

    def train_step(self, data):
        x, y = data
        out = self.augment({"image": x, "label": y}, training=True)
        return super().train_step((out["image"], tf.cast(out["label"], tf.float32)[..., None]))


def test_layers_run_inside_fit_under_mirrored_strategy(rng, two_cpu_strategy):
    image = rng.random((8, 32, 32, 1)).astype(np.float32)
    label = (image[..., 0] > 0.5).astype(np.int32)
    with two_cpu_strategy.scope():
        pipe = AugmentationPipeline([
            RandomGeometric(ndim=2, rotation=15, shear=10, translation=4, scale=(0.875, 1.125), flip_axes=(1,),
                            elastic_probability=0.5, elastic_magnitude=2.0, seed=0, jit_compile=True),
            RandomGaussianNoise(max_variance=0.01, seed=1),
        ])
        model = AugmentedModel(pipe)
        model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(image, label, batch_size=4, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    # each layer drew a fresh seed once per step (2 steps)
    for layer in pipe.augment_layers:
        assert int(layer.seed_generator.state.numpy()[1]) == 2


def test_replicas_draw_different_transforms(two_cpu_strategy):
    with two_cpu_strategy.scope():
        layer = RandomGeometric(ndim=2, rotation=30, seed=0, jit_compile=False)
    image = tf.reshape(tf.range(16 * 16, dtype=tf.float32), [1, 16, 16, 1])
    per_replica = two_cpu_strategy.run(tf.function(lambda: layer(image, training=True)))
    first, second = (t.numpy() for t in two_cpu_strategy.experimental_local_results(per_replica))
    assert not np.allclose(first, second)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("jit", [True, False])
def test_pipeline_adds_the_noise_inside_the_geometric_step(rng, ndim, jit):
    """RandomGeometric + RandomGaussianNoise in a pipeline (noise added inside the resampling) equals
    the two layers applied one after the other with the same seeds, elastic batches included."""
    spatial = (24, 20) if ndim == 2 else (10, 12, 8)
    image = rng.random((4, *spatial, 2)).astype(np.float32)
    label = rng.integers(0, 3, (4, *spatial)).astype(np.uint8)

    def layers():
        return (RandomGeometric(ndim=ndim, rotation=20, shear=5, translation=3, scale=(0.9, 1.1),
                                elastic_probability=0.5, elastic_magnitude=2.0, jit_compile=jit, seed=3),
                RandomGaussianNoise(max_variance=0.05, probability=0.75, seed=4))

    pipe = AugmentationPipeline(list(layers()))
    geo, noise = layers()
    for _ in range(2):  # two calls: the seed streams advance alike
        fused = pipe({"image": image, "label": label}, training=True)
        apart = noise(geo({"image": image, "label": label}, training=True), training=True)
        np.testing.assert_allclose(fused["image"].numpy(), apart["image"].numpy(), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(fused["label"].numpy(), apart["label"].numpy())
        assert np.abs(fused["image"].numpy() - geo({"image": image}, training=False)["image"]).max() > 0.05
    with pytest.raises(InvalidInputError, match="float image"):
        pipe({"image": image.astype(np.int32), "label": label}, training=True)
