"""Named augmentation presets with the seeds' ranges, and the pipeline layer that chains them.

| preset | layers (per sample) | source |
|---|---|---|
| ``seed002_table31`` | rotation +-15 deg, shear +-10 deg, translation +-16 px, zoom 0.875-1.125, left-right flip p=0.5, elastic on 10 % (max 8 px, 7x7 control points), uniform noise +-0.5/400 | seed 002 Table 3.1 |
| ``seed004_rot_mirror`` | rotation +-15 deg about each axis on 50 % of samples, mirroring of each axis p=0.5 | seed 004 + iantsen/hecktor |
| ``seed004_rot_mirror_noise`` | the above + Gaussian noise, variance ~ U(0, 0.1) | seed 004 Table 4 |
| ``seed001_affine_bc`` | rotation +-10 deg, zoom 0.9-1.1, translation +-16 px, contrast and brightness x[0.7, 1.3] | seed 001 (ranges suggested, not in the paper) |

Ranges the seeds leave open are our choices and are listed in :func:`build_preset`.
"""

from __future__ import annotations

from typing import Any

import keras

from tfmedseg.augment.geometric import RandomGeometric
from tfmedseg.augment.intensity import RandomBrightnessContrast, RandomGaussianNoise, RandomUniformNoise
from tfmedseg.errors import ConfigError

__all__ = ["AugmentationPipeline", "build_preset", "PRESETS"]

PRESETS = ("seed002_table31", "seed004_rot_mirror", "seed004_rot_mirror_noise", "seed001_affine_bc")


@keras.saving.register_keras_serializable(package="tfmedseg")
class AugmentationPipeline(keras.layers.Layer):
    """Applies augmentation layers in order; the identity unless ``training=True``.

    Unlike ``keras.layers.Pipeline`` (whose ``training`` defaults to True) this layer is the
    identity at inference, like every tfmedseg augmentation layer. A :class:`RandomGeometric`
    directly followed by a :class:`RandomGaussianNoise` runs as one step: the noise (the same draws)
    is added inside the geometric layer's image resampling.

    Args:
        layers: Augmentation layers taking and returning the same structure (dict / tuple / tensor).
        **kwargs: ``keras.layers.Layer`` arguments.

    Example:
        >>> pipe = AugmentationPipeline([RandomGeometric(ndim=2, rotation=10, seed=1),
        ...                              RandomGaussianNoise(stddev=0.01, seed=2)])
        >>> out = pipe({"image": tf.zeros([2, 16, 16, 1])}, training=True)
    """

    def __init__(self, layers: list, **kwargs):
        super().__init__(**kwargs)
        self.augment_layers = list(layers)
        self._allow_non_tensor_positional_args = True

    def build(self, input_shape=None):
        # the layers hold no weights (only seed state, made in __init__); a fused pair is not called
        # through Layer.__call__, which would mark it built
        for layer in self.augment_layers:
            layer.built = True
        self.built = True

    def call(self, inputs, training=False):
        if not training:
            return inputs
        layers, i = self.augment_layers, 0
        while i < len(layers):
            if i + 1 < len(layers) and isinstance(layers[i], RandomGeometric) and type(layers[i + 1]) is RandomGaussianNoise:
                # the noise is added inside the geometric layer's resampling: the same draws, one pass less
                inputs = layers[i]._call_with_noise(inputs, layers[i + 1])
                i += 2
            else:
                inputs = layers[i](inputs, training=True)
                i += 1
        return inputs

    def compute_output_spec(self, inputs, training=False):
        return keras.tree.map_structure(lambda x: keras.KerasTensor(x.shape, x.dtype), inputs)

    def get_config(self) -> dict:
        config = super().get_config()
        config["layers"] = [keras.saving.serialize_keras_object(layer) for layer in self.augment_layers]
        return config

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["layers"] = [keras.saving.deserialize_keras_object(c) for c in config["layers"]]
        return cls(**config)


def _preset_layers(name: str, ndim: int) -> list[tuple[type, dict]]:
    if name == "seed002_table31":
        geometric = dict(
            ndim=ndim, rotation=15.0, shear=10.0, translation=16.0, scale=(0.875, 1.125),
            flip_axes=(ndim - 1,), flip_probability=0.5,
            elastic_probability=0.1, elastic_magnitude=8.0, elastic_control_points=7,
            in_plane=ndim == 3,
        )
        return [(RandomGeometric, geometric), (RandomUniformNoise, dict(max_abs=0.5 / 400.0))]
    if name in ("seed004_rot_mirror", "seed004_rot_mirror_noise"):
        geometric = dict(ndim=ndim, rotation=15.0, rotation_probability=0.5,
                         flip_axes=tuple(range(ndim)), flip_probability=0.5)
        layers = [(RandomGeometric, geometric)]
        if name.endswith("_noise"):
            layers.append((RandomGaussianNoise, dict(max_variance=0.1)))
        return layers
    if name == "seed001_affine_bc":
        geometric = dict(ndim=ndim, rotation=10.0, scale=(0.9, 1.1), translation=16.0)
        return [(RandomGeometric, geometric),
                (RandomBrightnessContrast, dict(brightness=(0.7, 1.3), contrast=(0.7, 1.3)))]
    raise ConfigError(f"unknown augmentation preset {name!r}; choose one of {PRESETS}", path="name")


def build_preset(name: str, ndim: int = 2, seed: int | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> AugmentationPipeline:
    """Builds a named augmentation pipeline with a seed's ranges.

    Choices where the seeds are silent (documented here, used by the experiments):

    * ``seed002_table31``: Table 3.1 lists flipping without axes or probability -> left-right
      (last axis) with p=0.5; elastic deformation on 10 % of images without alpha/sigma -> a
      cubic B-spline field on 7 control points per axis with control displacements up to 8 px
      (about 3 % of 256); translation +-16 px is read at the 256x256 model input; the intensity
      noise "[-0.5, 0.5], range < 2 HU" -> uniform +-0.5 HU = +-0.5/400 on the [-200, 200] HU ->
      [0, 1] scale. For ``ndim=3`` (slabs) the transform is in-plane (``in_plane=True``): every
      slice of a slab moves alike.
    * ``seed004_*``: the report gives only "RandomRotation, Mirroring"; its code base
      (iantsen/hecktor ``transforms.py``) rotates 50 % of samples by 5-15 deg about 1-3 random
      axes and mirrors a random subset of axes on 50 % of samples. We use a uniform angle in
      [-15, 15] about all three axes on 50 % of samples and flip each axis with p=0.5. The noise
      preset uses max variance 0.1 (Table 4; pass ``overrides={"RandomGaussianNoise":
      {"max_variance": 0.01}}`` for the other row).
    * ``seed001_affine_bc``: "affine transforms; light, contrast, brightness" without ranges ->
      rotation +-10 deg, zoom 0.9-1.1, shift +-16 px (5 % of 320), no flip (anatomical
      laterality), brightness and contrast x[0.7, 1.3]. Boxes and instance masks follow.

    Args:
        name: One of :data:`PRESETS`.
        ndim: 2 (``[B, H, W, C]``) or 3 (``[B, D, H, W, C]``).
        seed: Base seed; layer ``i`` gets ``seed + i`` (None: random).
        overrides: Layer class name -> constructor arguments replacing the preset's.

    Returns:
        An :class:`AugmentationPipeline`.

    Raises:
        ConfigError: Unknown name, ndim or override.

    Example:
        >>> pipe = build_preset("seed002_table31", ndim=2, seed=0)
        >>> out = pipe({"image": tf.zeros([2, 64, 64, 1]), "label": tf.zeros([2, 64, 64], tf.int32)},
        ...            training=True)
    """
    if ndim not in (2, 3):
        raise ConfigError(f"ndim must be one of (2, 3), got {ndim!r}", path="ndim")
    layers = _preset_layers(name, ndim)
    overrides = dict(overrides or {})
    unknown = set(overrides) - {cls.__name__ for cls, _ in layers}
    if unknown:
        raise ConfigError(f"preset {name!r} has no layer {sorted(unknown)}; it has {[c.__name__ for c, _ in layers]}",
                          path="overrides")
    built = []
    for i, (cls, kwargs) in enumerate(layers):
        kwargs = {**kwargs, **overrides.get(cls.__name__, {})}
        built.append(cls(seed=None if seed is None else seed + i, name=f"{name}_{i}_{cls.__name__.lower()}", **kwargs))
    return AugmentationPipeline(built, name=name)
