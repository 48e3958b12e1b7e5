"""tf.data pipeline of seed-004 PET/CT cubes: whole cubes or random patches, z-scored per patch.

Cached cubes are ``[D, H, W, 2]`` (CT in [-1, 1], PET SUV; :func:`tfmedseg.preprocessing.petct.petct_cube`).
Each training sample is either the whole cube (the seed: 144^3 in, batch 1-2) or a patch drawn by
:func:`~tfmedseg.data.pipelines.patch3d_dataset` (``foreground_fraction`` of them centred on GTVt),
and is then z-scored per channel over the patch (seed 004 L35), on the tf.data side so the
augmentation (on the device) sees normalised values, as in the reference code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfmedseg.data.pipelines import build_dataset, patch3d_dataset
from tfmedseg.data.source import as_case_arrays
from tfmedseg.preprocessing.petct import ZSCORE_EPSILON

__all__ = ["petct_dataset", "zscore_patch_tf"]


def zscore_patch_tf(x: tf.Tensor, epsilon: float = ZSCORE_EPSILON) -> tf.Tensor:
    """Per-sample, per-channel z-score of ``[B, D, H, W, C]`` over D, H, W (tf)."""
    mean, var = tf.nn.moments(x, axes=[1, 2, 3], keepdims=True)
    return (x - mean) / (tf.sqrt(var) + epsilon)


def petct_dataset(cases, batch_size: int, patch_size: Sequence[int] | None = None, *, foreground_fraction: float = 0.5,
                  samples_per_epoch: int | None = None, seed: int = 0, epochs: int | None = None) -> tf.data.Dataset:
    """Batches ``(x [B, d, h, w, 2] z-scored float32, y [B, d, h, w, 1] int32)``.

    Args:
        cases: Labeled :class:`~tfmedseg.data.source.CaseArrays` (or tuples) of cached cubes.
        batch_size: Samples per batch.
        patch_size: ``(d, h, w)``; None or the cube size: whole cubes in a seeded random order.
        foreground_fraction: Share of patches centred on a GTVt voxel (patch sampling only).
        samples_per_epoch: Samples per epoch (default one per case).
        seed: Seed of the order.
        epochs: Epochs (None: infinite).
    """
    cases = as_case_arrays(cases)
    shape = tuple(int(s) for s in cases[0].image.shape[:3])
    if patch_size is None or tuple(int(s) for s in patch_size) == shape:
        n = int(samples_per_epoch or len(cases))

        def order_fn(rng):
            return np.concatenate([rng.permutation(len(cases)) for _ in range(-(-n // len(cases)))])[:n, None]

        def extract(row):
            case = cases[int(row[0])]
            return case.image, case.label[..., None]

        specs = [tf.TensorSpec(shape + (cases[0].image.shape[-1],), tf.float32), tf.TensorSpec(shape + (1,), tf.int32)]
        ds = build_dataset(order_fn, 1, extract, specs, batch_size, seed, epochs, n)
    else:
        ds = patch3d_dataset(cases, batch_size, patch_size, foreground_fraction=foreground_fraction,
                             samples_per_epoch=samples_per_epoch, seed=seed, epochs=epochs)
    return ds.map(lambda x, y: (zscore_patch_tf(x), y), num_parallel_calls=tf.data.AUTOTUNE)
