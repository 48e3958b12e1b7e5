"""Device-side 2D/3D augmentation as Keras 3 layers (whole batches, inside the compiled step).

* :class:`RandomGeometric`: rotation, shear, scaling, flips, translation and an elastic field,
  composed into one sampling grid per sample and resampled once (linear images, nearest labels
  and instance masks; boxes follow).
* Intensity (image only): :class:`RandomGaussianNoise`, :class:`RandomUniformNoise`,
  :class:`RandomBrightnessContrast`, :class:`RandomIntensityScaleShift`.
* :func:`build_preset` / :class:`AugmentationPipeline`: the seeds' settings by name.

Inputs are a dict ``{"image", "label", "boxes", "masks", "classes", "num_valid"}`` (only
``image`` required), a tuple ``(image, label, ...)`` or an image tensor; every layer is the
identity unless called with ``training=True``.
"""

from tfmedseg.augment.geometric import BOXES_KEY, MASKS_KEY, NUM_VALID_KEY, RandomGeometric
from tfmedseg.augment.intensity import (
    RandomBrightnessContrast,
    RandomGaussianNoise,
    RandomIntensityScaleShift,
    RandomUniformNoise,
)
from tfmedseg.augment.presets import PRESETS, AugmentationPipeline, build_preset

__all__ = [
    "RandomGeometric",
    "RandomGaussianNoise",
    "RandomUniformNoise",
    "RandomBrightnessContrast",
    "RandomIntensityScaleShift",
    "AugmentationPipeline",
    "build_preset",
    "PRESETS",
    "BOXES_KEY",
    "MASKS_KEY",
    "NUM_VALID_KEY",
]
