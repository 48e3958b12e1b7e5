"""Fixed resampling layers that convert to TFLite builtins: reshape max pooling, linear upsampling.

* :class:`ReshapeMaxPooling`: non-overlapping max pooling (``pool_size == strides``, ``"valid"``)
  as one ``reshape -> reduce_max`` per spatial axis on tensors of rank 4 at most. It equals
  ``keras.layers.MaxPooling{2,3}D(p)`` exactly; TFLite has no ``MAX_POOL_3D`` builtin, so
  :func:`tfmedseg.export.tflite.tflite_compatible_clone` swaps every ``MaxPooling3D`` for it.
* :class:`LinearUpsampling`: integer-factor (bi/tri)linear upsampling with PyTorch's
  ``F.interpolate(mode="trilinear", align_corners=False)`` sampling (half-pixel centres, edges
  clamped), as a gather + lerp per axis; the "upsampling pathway" of seed 004's SE U-Net
  (``UpConv`` of ``iantsen/hecktor``). Keras' ``UpSampling3D`` is nearest-neighbour only.

Both need static spatial sizes (the batch may be dynamic).

Example:
    >>> import numpy as np
    >>> x = np.arange(4, dtype="float32").reshape(1, 4, 1)
    >>> LinearUpsampling(2)(x)[0, :, 0].numpy().tolist()
    [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

__all__ = ["LinearUpsampling", "ReshapeMaxPooling", "linear_upsampling_indices"]


def _factors(value, rank: int, argument: str) -> tuple[int, ...]:
    values = (int(value),) * rank if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(values) != rank or min(values) < 1:
        raise ValueError(f"{argument} must be a positive int or {rank} positive ints, got {value!r}")
    return values


@keras.saving.register_keras_serializable(package="tfmedseg")
class ReshapeMaxPooling(keras.layers.Layer):
    """Max pooling with ``strides == pool_size`` and ``"valid"`` padding via reshape + reduce_max.

    Args:
        pool_size: Int or per-axis ints (the number of spatial axes is taken from the input).

    Input ``[B, *spatial, C]`` with static spatial sizes; output ``[B, *(n // p), C]`` (a trailing
    remainder is dropped, as ``"valid"`` pooling does).
    """

    def __init__(self, pool_size: int | Sequence[int] = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size if isinstance(pool_size, int) else tuple(int(p) for p in pool_size)

    def _sizes(self, input_shape):
        rank = len(input_shape) - 2
        pools = _factors(self.pool_size, rank, "pool_size")
        spatial = [int(n) for n in input_shape[1:-1]]
        return pools, spatial

    def compute_output_shape(self, input_shape):
        pools, spatial = self._sizes(input_shape)
        return (input_shape[0], *[n // p for n, p in zip(spatial, pools)], input_shape[-1])

    def call(self, x):
        pools, spatial = self._sizes(x.shape)
        channels = int(x.shape[-1])
        sizes = list(spatial)
        for axis in reversed(range(len(spatial))):
            p = pools[axis]
            if p == 1:
                continue
            keep = sizes[axis] // p * p
            if keep != sizes[axis]:
                index = [slice(None)] * (len(spatial) + 2)
                index[axis + 1] = slice(0, keep)
                x = x[tuple(index)]
            inner = int(np.prod(sizes[axis + 1:], dtype=np.int64)) * channels
            x = ops.max(ops.reshape(x, (-1, keep // p, p, inner)), axis=2)
            sizes[axis] = keep // p
            x = ops.reshape(x, (-1, *sizes, channels))
        return x

    def get_config(self):
        pool = self.pool_size if isinstance(self.pool_size, int) else list(self.pool_size)
        return {**super().get_config(), "pool_size": pool}


def linear_upsampling_indices(size: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of ``align_corners=False`` linear upsampling along one axis.

    Output sample ``o`` reads ``s = max((o + 0.5) / factor - 0.5, 0)``: ``(1 - w) * x[i0] + w * x[i1]``
    with ``i0 = floor(s)``, ``i1 = min(i0 + 1, size - 1)``, ``w = s - i0``.

    Returns:
        ``(i0, i1, w)``, each of length ``size * factor`` (int32, int32, float32).
    """
    src = np.maximum((np.arange(size * factor) + 0.5) / factor - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int32), size - 1)
    i1 = np.minimum(i0 + 1, size - 1).astype(np.int32)
    return i0, i1, (src - i0).astype(np.float32)


@keras.saving.register_keras_serializable(package="tfmedseg")
class LinearUpsampling(keras.layers.Layer):
    """Integer-factor linear / bilinear / trilinear upsampling (``align_corners=False``).

    Args:
        size: Int or per-axis ints (upsampling factors).

    Input ``[B, *spatial, C]`` with static spatial sizes; output ``[B, *(n * f), C]``.
    """

    def __init__(self, size: int | Sequence[int] = 2, **kwargs):
        super().__init__(**kwargs)
        self.size = size if isinstance(size, int) else tuple(int(s) for s in size)

    def compute_output_shape(self, input_shape):
        factors = _factors(self.size, len(input_shape) - 2, "size")
        return (input_shape[0], *[int(n) * f for n, f in zip(input_shape[1:-1], factors)], input_shape[-1])

    def call(self, x):
        rank = len(x.shape) - 2
        factors = _factors(self.size, rank, "size")
        for axis, factor in enumerate(factors):
            if factor == 1:
                continue
            i0, i1, w = linear_upsampling_indices(int(x.shape[axis + 1]), factor)
            shape = [1] * (rank + 2)
            shape[axis + 1] = w.size
            w = ops.convert_to_tensor(w.reshape(shape), dtype=x.dtype)
            lo = ops.take(x, i0, axis=axis + 1)
            hi = ops.take(x, i1, axis=axis + 1)
            x = lo + (hi - lo) * w
        return x

    def get_config(self):
        size = self.size if isinstance(self.size, int) else list(self.size)
        return {**super().get_config(), "size": size}
