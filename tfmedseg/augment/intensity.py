"""Per-sample intensity augmentation of the image only (labels and boxes pass through).

All layers take the same inputs as :class:`~tfmedseg.augment.geometric.RandomGeometric` (a dict
with ``"image"``, a tuple ``(image, label, ...)`` or an image tensor ``[B, *S, C]``, 2D or 3D),
change only the image, keep its dtype (float), and are the identity unless ``training=True``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfmedseg.augment._common import (
    IMAGE_KEY,
    RandomAugmentLayer,
    _bernoulli,
    _check_probability,
    _check_range,
    _add_normal,
    _scaled_normals,
    _per_sample_shape,
    _uniform,
)
from tfmedseg.errors import ConfigError, InvalidInputError

__all__ = ["RandomGaussianNoise", "RandomUniformNoise", "RandomBrightnessContrast", "RandomIntensityScaleShift"]


def _float_image(data: dict) -> tf.Tensor:
    image = data[IMAGE_KEY]
    if not image.dtype.is_floating:
        raise InvalidInputError(f"intensity augmentation needs a float image, got dtype {image.dtype.name}", path=IMAGE_KEY)
    return image


def _sample_shape(image: tf.Tensor, per_channel: bool) -> tf.Tensor:
    """``[B, 1, ..., 1, C or 1]`` for per-sample (per-channel) parameters."""
    shape = _per_sample_shape(image)
    if per_channel:
        shape = tf.concat([shape[:-1], tf.shape(image)[-1:]], 0)
    return shape


@keras.saving.register_keras_serializable(package="tfmedseg")
class RandomGaussianNoise(RandomAugmentLayer):
    """Additive zero-mean Gaussian noise, with a fixed or a per-sample random strength.

    Seed 004 ("RandomNoise, Gaussian, max variance 0.1 or 0.01", on z-scored PET/CT) is
    ``RandomGaussianNoise(max_variance=0.1)`` (or ``0.01``): every sample draws a variance
    ``v ~ U(0, max_variance)`` and adds ``N(0, v)`` (standard deviation ``sqrt(v)``, i.e. at most
    0.316 / 0.1 for the two settings). Give exactly one of ``stddev`` / ``max_variance``.

    Args:
        stddev: Fixed standard deviation (image units) for every sample.
        max_variance: Per-sample variance drawn uniformly in ``[0, max_variance]``.
        probability: Fraction of samples that get noise.
        seed: int or None.

    Example:
        >>> noisy = RandomGaussianNoise(max_variance=0.1, seed=0)(tf.zeros([2, 8, 8, 1]), training=True)
    """

    def __init__(self, stddev: float | None = None, max_variance: float | None = None, probability: float = 1.0,
                 seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if (stddev is None) == (max_variance is None):
            raise ConfigError(f"give exactly one of stddev / max_variance, got {stddev!r} / {max_variance!r}", path="stddev")
        for name, v in (("stddev", stddev), ("max_variance", max_variance)):
            if v is not None and float(v) < 0:
                raise ConfigError(f"must be >= 0, got {v}", path=name)
        self.stddev = None if stddev is None else float(stddev)
        self.max_variance = None if max_variance is None else float(max_variance)
        self.probability = _check_probability("probability", probability)

    def _std(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Per-sample standard deviations ``[B, 1, .., 1]`` (0 for the samples without noise)."""
        shape = _per_sample_shape(image)
        if self.stddev is not None:
            std = tf.fill(shape, self.stddev)
        else:
            std = tf.sqrt(_uniform(seed, 0, shape, 0.0, self.max_variance))
        return std * _bernoulli(seed, 1, shape, self.probability)

    def _noise(self, data: dict, seed: tf.Tensor) -> tf.Tensor:
        """The noise this layer adds to ``data["image"]`` (float32, same shape): what
        :class:`~tfmedseg.augment.presets.AugmentationPipeline` hands to a preceding
        :class:`~tfmedseg.augment.geometric.RandomGeometric` to add inside its resampling."""
        image = _float_image(data)
        return _scaled_normals(seed, 2, tf.shape(image), self._std(image, seed))

    def _augment(self, data: dict, seed: tf.Tensor) -> dict:
        image = _float_image(data)
        data[IMAGE_KEY] = _add_normal(image, seed, 2, self._std(image, seed))  # XLA: words, lookup, scale; XLA add
        return data

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(stddev=self.stddev, max_variance=self.max_variance, probability=self.probability)
        return config


@keras.saving.register_keras_serializable(package="tfmedseg")
class RandomUniformNoise(RandomAugmentLayer):
    """Additive per-pixel noise uniform in ``[-max_abs, max_abs]`` (image units).

    Seed 002 Table 3.1 "random intensity noise [-0.5, 0.5]" "in measures of intensity after
    normalisation, but a range below 2 HU": we read it as +-0.5 HU, i.e. ``max_abs = 0.5 / 400``
    on the seed's [-200, 200] HU -> [0, 1] scale (see ``seed-002-liver-2d3d.md`` section 2).

    Args:
        max_abs: Half-width of the noise distribution (``>= 0``).
        probability: Fraction of samples that get noise.
        seed: int or None.
    """

    def __init__(self, max_abs: float = 0.0, probability: float = 1.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if float(max_abs) < 0:
            raise ConfigError(f"must be >= 0, got {max_abs}", path="max_abs")
        self.max_abs = float(max_abs)
        self.probability = _check_probability("probability", probability)

    def _augment(self, data: dict, seed: tf.Tensor) -> dict:
        image = _float_image(data)
        on = _bernoulli(seed, 0, _per_sample_shape(image), self.probability)
        noise = _uniform(seed, 1, tf.shape(image), -self.max_abs, self.max_abs)
        data[IMAGE_KEY] = image + tf.cast(noise * on, image.dtype)
        return data

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(max_abs=self.max_abs, probability=self.probability)
        return config


class _PerSampleNoise(RandomAugmentLayer):
    """Base of the layers that draw per-sample (per-channel) factors and offsets: their common
    options and the draw setup (float image, factor shape, which samples change)."""

    def _set_noise_options(self, shift, per_channel: bool, probability: float) -> None:
        self.shift = _check_range("shift", shift)
        self.per_channel = bool(per_channel)
        self.probability = _check_probability("probability", probability)

    def _noise_draw_setup(self, data: dict, seed: tf.Tensor):
        """``(image, factor shape [B, 1.., C or 1], on [B, 1..] 0/1: the samples that change)``."""
        image = _float_image(data)
        return image, _sample_shape(image, self.per_channel), _bernoulli(seed, 0, _per_sample_shape(image), self.probability)


@keras.saving.register_keras_serializable(package="tfmedseg")
class RandomBrightnessContrast(_PerSampleNoise):
    """Per-sample contrast about the mean, then multiplicative and additive brightness.

    ``y = ((x - mean) * contrast + mean) * brightness + shift`` with ``mean`` the sample's
    (channel's) spatial mean and ``contrast ~ U(contrast)``, ``brightness ~ U(brightness)``,
    ``shift ~ U(shift)`` drawn per sample. Seed 001 ("light, contrast, brightness up/down to mimic
    the physician's windowing", no ranges given) uses ``contrast=brightness=(0.7, 1.3)``.

    Args:
        brightness: ``(low, high)`` multiplicative factor range.
        contrast: ``(low, high)`` contrast factor range (``1`` = unchanged).
        shift: ``(low, high)`` additive offset range in image units (a number ``a`` means ``(-a, a)``).
        per_channel: Draw separate factors per channel.
        probability: Fraction of samples that are changed.
        seed: int or None.
    """

    def __init__(self, brightness=(1.0, 1.0), contrast=(1.0, 1.0), shift=(0.0, 0.0), per_channel: bool = False,
                 probability: float = 1.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.brightness = _check_range("brightness", brightness, low=0.0, allow_scalar=False)
        self.contrast = _check_range("contrast", contrast, low=0.0, allow_scalar=False)
        self._set_noise_options(shift, per_channel, probability)

    def _augment(self, data: dict, seed: tf.Tensor) -> dict:
        image, shape, on = self._noise_draw_setup(data, seed)
        out = image
        if self.contrast != (1.0, 1.0):  # static skips keep zero magnitude exactly the identity
            contrast = 1.0 + (_uniform(seed, 1, shape, *self.contrast) - 1.0) * on
            mean = tf.reduce_mean(image, axis=list(range(1, image.shape.rank - 1)), keepdims=True)
            out = (out - mean) * tf.cast(contrast, image.dtype) + mean
        if self.brightness != (1.0, 1.0):
            out = out * tf.cast(1.0 + (_uniform(seed, 2, shape, *self.brightness) - 1.0) * on, image.dtype)
        if self.shift != (0.0, 0.0):
            out = out + tf.cast(_uniform(seed, 3, shape, *self.shift) * on, image.dtype)
        data[IMAGE_KEY] = out
        return data

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(brightness=list(self.brightness), contrast=list(self.contrast), shift=list(self.shift),
                      per_channel=self.per_channel, probability=self.probability)
        return config


@keras.saving.register_keras_serializable(package="tfmedseg")
class RandomIntensityScaleShift(_PerSampleNoise):
    """Per-sample (per-channel) intensity scale and shift noise: ``y = x * scale + shift``.

    The nnU-Net-style "multiplicative/additive intensity noise": ``scale ~ U(scale)``,
    ``shift ~ U(shift)`` per sample and, by default, per channel (so PET and CT channels get
    independent factors).

    Args:
        scale: ``(low, high)`` factor range (a number ``a`` means ``(1 - a, 1 + a)``).
        shift: ``(low, high)`` offset range in image units (a number ``a`` means ``(-a, a)``).
        per_channel: Draw separate factors per channel.
        probability: Fraction of samples that are changed.
        seed: int or None.
    """

    def __init__(self, scale=(1.0, 1.0), shift=(0.0, 0.0), per_channel: bool = True, probability: float = 1.0,
                 seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if isinstance(scale, (int, float)):
            scale = (1.0 - float(scale), 1.0 + float(scale))
        self.scale = _check_range("scale", scale, low=0.0, allow_scalar=False)
        self._set_noise_options(shift, per_channel, probability)

    def _augment(self, data: dict, seed: tf.Tensor) -> dict:
        image, shape, on = self._noise_draw_setup(data, seed)
        scale = 1.0 + (_uniform(seed, 1, shape, *self.scale) - 1.0) * on
        shift = _uniform(seed, 2, shape, *self.shift) * on
        data[IMAGE_KEY] = image * tf.cast(scale, image.dtype) + tf.cast(shift, image.dtype)
        return data

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(scale=list(self.scale), shift=list(self.shift), per_channel=self.per_channel,
                      probability=self.probability)
        return config

