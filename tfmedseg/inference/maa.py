"""Seed 000 slice-model inference: predict a stack of 2D inputs, put the masks back on the CT grid.

Example:
    >>> import numpy as np
    >>> from tfmedseg.preprocessing.crop import Crop
    >>> crop = Crop.from_box(((0, 4), (0, 8), (0, 8)), (4, 8, 8), (4, 4, 4))
    >>> stack_to_volume(crop, np.ones((2, 4, 4, 1), bool), np.array([1, 3]), 4)[..., 0].sum(axis=(1, 2)).tolist()
    [0, 64, 0, 64]
"""

from __future__ import annotations

import numpy as np

from tfmedseg.preprocessing.crop import Crop

__all__ = ["predict_stack", "stack_to_volume"]


def predict_stack(model, images: np.ndarray, batch_size: int = 16, threshold: float = 0.5) -> np.ndarray:
    """Binary masks ``[N, S, S, K]`` of a sigmoid model on images ``[N, S, S, C]`` (probability > threshold)."""
    if len(images) == 0:
        return np.zeros((0,) + tuple(model.output_shape[1:]), bool)
    out = []
    for i in range(0, len(images), batch_size):
        out.append(np.asarray(model(images[i:i + batch_size], training=False)) > threshold)
    return np.concatenate(out)


def stack_to_volume(crop: Crop, masks: np.ndarray, slices: np.ndarray, depth: int) -> np.ndarray:
    """Masks on crop slices back onto the CT grid: ``[depth, H, W, K]`` bool (other slices empty).

    Args:
        crop: The patient's 3D abdominal crop (in-plane box + resize).
        masks: ``[N, S, S, K]`` masks of CT slices ``slices``.
        slices: ``[N]`` CT slice indices.
        depth: CT slices.
    """
    n = len(slices)
    out = np.zeros((depth,) + tuple(crop.source_shape[1:]) + masks.shape[3:], bool)
    if n == 0:
        return out
    inplane = Crop.from_box(((0, n),) + tuple(crop.box[1:]), (n,) + tuple(crop.source_shape[1:]),
                            (n,) + tuple(crop.output_shape[1:]), allow_padding=True)
    out[np.asarray(slices)] = inplane.invert(masks.astype(np.uint8), "nearest") > 0
    return out
