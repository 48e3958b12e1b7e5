"""Device-side augmentation inside the compiled training step: :class:`AugmentedModel`.

The augmentation layers of :mod:`tfmedseg.augment` transform an image and its label together, so
they cannot be an ordinary input layer of the network. :class:`AugmentedModel` wraps a network and
an augmentation layer: ``train_step`` augments each (per-replica) batch on the device the step runs
on, then trains the network on it; ``call``, ``evaluate`` and ``predict`` see the bare network.
Export ``model.network``, never the wrapper.

3D slab samples (seed 002: 8 input slices, labels for the middle 4) are handled by padding the
label with background slices to the image depth before the transform and cropping it after; the
seed-002 3D preset is in-plane, so this is exact.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["AugmentedModel"]


@keras.saving.register_keras_serializable(package="tfmedseg")
class AugmentedModel(keras.Model):
    """A network trained on device-augmented batches.

    Args:
        network: The segmentation network, ``x -> probabilities`` (a built ``keras.Model``).
        augmentation: A layer taking ``{"image": x, "label": y}`` and ``training=True`` and returning
            the same structure (e.g. :func:`tfmedseg.augment.presets.build_preset`), or None.

    Example:
        >>> model = AugmentedModel(net, build_preset("seed002_table31", ndim=2, seed=0))  # doctest: +SKIP
        >>> model.compile(optimizer="adam", loss=DiceLoss()); model.fit(ds)               # doctest: +SKIP
    """

    def __init__(self, network: keras.Model, augmentation: keras.layers.Layer | None = None, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.augmentation = augmentation

    def build(self, input_shape=None):
        """The wrapper has no weights of its own; the network is built with its input shape."""
        if not self.network.built and input_shape is not None:
            self.network.build(input_shape)
        self.built = True

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def augment(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Augment one batch ``x`` ``[B, *S, C]`` with its label ``y`` ``[B, *S', 1]`` (S' may be a
        centred sub-range of S along the first spatial axis: 3D slabs)."""
        if self.augmentation is None:
            return x, y
        pad, depth = 0, None
        if y.shape.rank == 5 and x.shape.rank == 5 and y.shape[1] is not None and x.shape[1] is not None and y.shape[1] < x.shape[1]:
            depth = y.shape[1]
            pad = (x.shape[1] - depth) // 2
            y = tf.pad(y, [[0, 0], [pad, x.shape[1] - y.shape[1] - pad], [0, 0], [0, 0], [0, 0]])
        out = self.augmentation({"image": x, "label": y}, training=True)
        x, y = out["image"], out["label"]
        if depth is not None:
            y = y[:, pad : pad + depth]
        return x, y

    def train_step(self, data):
        x, y = data[0], data[1]
        x, y = self.augment(x, y)
        return super().train_step((x, y) + tuple(data[2:]))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "augmentation": keras.saving.serialize_keras_object(self.augmentation) if self.augmentation is not None else None,
        }

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        if config.get("augmentation") is not None:
            config["augmentation"] = keras.saving.deserialize_keras_object(config["augmentation"])
        return cls(**config)
