"""Box drawings: rectangle outlines on an image, and a batch of them as TensorBoard images."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

__all__ = ["draw_boxes", "write_tensorboard_images"]

#: Colours used by the experiments' drawings (RGB).
GREEN, YELLOW, RED = (0, 255, 0), (255, 255, 0), (255, 0, 0)


def draw_boxes(image: np.ndarray, boxes_colours: Sequence[tuple[Sequence[float], tuple[int, int, int]]]) -> np.ndarray:
    """``[H, W]`` image in [0, 1] -> ``uint8 [H, W, 3]`` with the outline of each ``(y0, x0, y1, x1)``
    box (exclusive ends, clipped to the image) in its RGB colour."""
    rgb = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    h, w = image.shape
    for box, colour in boxes_colours:
        y0, x0, y1, x1 = (int(round(v)) for v in box)
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(max(y1 - 1, 0), h - 1), min(max(x1 - 1, 0), w - 1)
        rgb[y0, x0:x1 + 1] = rgb[y1, x0:x1 + 1] = colour
        rgb[y0:y1 + 1, x0] = rgb[y0:y1 + 1, x1] = colour
    return rgb


def write_tensorboard_images(log_dir: str | os.PathLike, tag: str, images: Sequence[np.ndarray], step: int = 0) -> None:
    """Write ``uint8 [H, W, 3]`` images (same shape) as one TensorBoard image summary under ``log_dir``."""
    import tensorflow as tf

    if not len(images):
        return
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.image(tag, np.stack(images), step=step, max_outputs=len(images))
    writer.flush()
