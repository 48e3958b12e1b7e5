"""tf.data pipelines over in-memory 2D image / mask stacks (seed 000's slice models).

Example:
    >>> import numpy as np
    >>> ds = image_mask_dataset(np.zeros((5, 8, 8, 3), "float32"), np.zeros((5, 8, 8, 1), "uint8"), 2, seed=0)
    >>> [tuple(t.shape) for t in next(iter(ds))]
    [(2, 8, 8, 3), (2, 8, 8, 1)]
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmedseg.errors import InvalidInputError

__all__ = ["image_mask_dataset"]


def image_mask_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int, *, seed: int, shuffle: bool = True,
                       flip: bool = False, repeat: bool = True) -> tf.data.Dataset:
    """Batches ``(image float32 [B, H, W, C], mask float32 [B, H, W, K])``, shuffled and repeated.

    Args:
        images: ``[N, H, W, C]`` float32 in [0, 1].
        masks: ``[N, H, W, K]`` 0/1.
        batch_size: Batch size (``drop_remainder`` when there are at least ``batch_size`` samples).
        seed: Shuffle / augmentation seed.
        shuffle: Reshuffle every epoch.
        flip: Random left-right flips of image and mask together (on the device, in the graph).
        repeat: Repeat forever (training); False: one pass (evaluation).

    Raises:
        InvalidInputError: Different sample counts or spatial shapes, or no sample.
    """
    images, masks = np.asarray(images, np.float32), np.asarray(masks, np.float32)
    if len(images) == 0 or images.shape[:3] != masks.shape[:3]:
        raise InvalidInputError(f"images {images.shape} and masks {masks.shape} need equal, non-empty [N, H, W]",
                                path="images")
    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=repeat and len(images) >= batch_size)
    if flip:
        gen = tf.random.Generator.from_seed(seed)

        def _flip(x, y):
            do = gen.uniform([tf.shape(x)[0], 1, 1, 1]) < 0.5
            return tf.where(do, tf.reverse(x, [2]), x), tf.where(do, tf.reverse(y, [2]), y)

        ds = ds.map(_flip, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
