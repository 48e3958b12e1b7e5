"""Sampling grids and one-pass resampling for 2D/3D geometric augmentation (private).

Conventions:
    Spatial axes are in array order, ``(y, x)`` for 2D ``[B, H, W, C]`` and ``(z, y, x)`` for 3D
    ``[B, D, H, W, C]``; coordinates are in pixels (voxels), pixel ``i`` has its centre at ``i``
    and covers ``[i - 0.5, i + 0.5]``. A transform is a *forward* matrix ``F`` (``[n, n]`` per
    sample) acting on coordinates centred on the array centre ``c = (size - 1) / 2`` plus a
    translation ``t`` in pixels: a source point ``q`` moves to ``p = F (q - c) + t + c``. For
    resampling we need the inverse (pull-back) map, composed with an elastic displacement
    ``e(p)`` (in source pixels): ``q = c + F^-1 (p - c - t) + e(p)``. Images are sampled once at
    ``q`` (multi-linear), labels nearest; points outside the array take a fill value.

    Rotations by ``+theta`` in the plane of axes ``(a, b)`` (``a < b``) turn the content from the
    ``b`` axis towards the ``a`` axis: in 2D (``a = y`` pointing down, ``b = x`` pointing right)
    that is counter-clockwise on screen, the same sense as ``np.rot90(img)`` for +90 degrees and
    Keras' ``RandomRotation``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import tensorflow as tf

try:  # XLA's own gather (windowed slices) and its dimension numbers; ship with every TensorFlow wheel
    from tensorflow.compiler.tf2xla.python import xla as _xla
    from tensorflow.compiler.xla import xla_data_pb2 as _xla_data
except ImportError:  # a TensorFlow build without the XLA bridge (tested: test_without_the_xla_bridge_*)
    _xla = _xla_data = None

__all__: list[str] = []


def _plane_rotation(theta: tf.Tensor, n: int, a: int, b: int) -> tf.Tensor:
    """Forward rotation matrices ``[B, n, n]`` by ``theta`` (radians, ``[B]``) in plane (a, b)."""
    diag = np.zeros((n, n), np.float32)
    diag[a, a] = diag[b, b] = 1.0
    skew = np.zeros((n, n), np.float32)
    skew[b, a], skew[a, b] = 1.0, -1.0
    c = (tf.cos(theta) - 1.0)[:, None, None]
    s = tf.sin(theta)[:, None, None]
    return tf.eye(n, dtype=tf.float32)[None] + c * diag + s * skew


def small_matmul(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """``a @ b`` for ``[B, n, n]`` matrices with ``n <= 3`` as broadcast multiply + sum: one cheap
    elementwise op instead of a batched-matmul kernel (~0.3-0.5 ms of oneDNN set-up per call on the
    CPU, on the critical path of every augmented batch)."""
    return tf.reduce_sum(a[:, :, :, None] * b[:, None, :, :], axis=2)


def _rotation(angles: tf.Tensor, n: int) -> tf.Tensor:
    """``[B, n, n]`` from radians ``[B, 1]`` (2D) or ``[B, 3]`` (3D: about D, H, W axes)."""
    if n == 2:
        return _plane_rotation(angles[:, 0], 2, 0, 1)
    r = _plane_rotation(angles[:, 0], 3, 1, 2)  # about D: axial plane (H, W)
    r = small_matmul(r, _plane_rotation(angles[:, 1], 3, 0, 2))  # about H: plane (D, W)
    return small_matmul(r, _plane_rotation(angles[:, 2], 3, 0, 1))  # about W: plane (D, H)


def _shear(angles: tf.Tensor, n: int) -> tf.Tensor:
    """``I + sum_ij tan(angle_ij) E_ij`` over the ``n (n - 1)`` off-diagonal entries; radians."""
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    basis = np.zeros((len(pairs), n, n), np.float32)
    for k, (i, j) in enumerate(pairs):
        basis[k, i, j] = 1.0
    return tf.eye(n, dtype=tf.float32)[None] + tf.reduce_sum(tf.tan(angles)[:, :, None, None] * basis[None], axis=1)


def _inverse(m: tf.Tensor) -> tf.Tensor:
    """Closed-form inverse of ``[B, 2, 2]`` or ``[B, 3, 3]`` matrices (exact for the identity)."""
    n = m.shape[-1]
    if n == 2:
        a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
        det = a * d - b * c
        adj = tf.stack([tf.stack([d, -b], -1), tf.stack([-c, a], -1)], -2)
        return adj / det[:, None, None]
    e = [[m[:, i, j] for j in range(3)] for i in range(3)]

    def cof(i, j):
        r = [k for k in range(3) if k != i]
        c = [k for k in range(3) if k != j]
        minor = e[r[0]][c[0]] * e[r[1]][c[1]] - e[r[0]][c[1]] * e[r[1]][c[0]]
        return minor if (i + j) % 2 == 0 else -minor

    cofactors = [[cof(i, j) for j in range(3)] for i in range(3)]
    det = e[0][0] * cofactors[0][0] + e[0][1] * cofactors[0][1] + e[0][2] * cofactors[0][2]
    adj = tf.stack([tf.stack([cofactors[j][i] for j in range(3)], -1) for i in range(3)], -2)
    return adj / det[:, None, None]


def _bspline_matrix(size: tf.Tensor, n_ctrl: int) -> tf.Tensor:
    """``[size, n_ctrl]`` cubic B-spline weights of ``n_ctrl`` evenly spread control points.

    Rows are normalised to sum to 1 (the outermost knots are missing at the borders), so a
    constant control displacement gives the same constant field.
    """
    x = tf.cast(tf.range(size), tf.float32)
    h = tf.maximum(tf.cast(size - 1, tf.float32), 1.0) / float(n_ctrl - 1)
    u = tf.abs(x[:, None] / h - tf.range(n_ctrl, dtype=tf.float32)[None, :])
    w = tf.where(
        u < 1.0,
        (4.0 - 6.0 * u**2 + 3.0 * u**3) / 6.0,
        tf.where(u < 2.0, (2.0 - u) ** 3 / 6.0, tf.zeros_like(u)),
    )
    return w / tf.reduce_sum(w, axis=1, keepdims=True)


def elastic_field(ctrl: tf.Tensor, spatial: list) -> list:
    """Smooth displacement field from control points (cubic B-spline, separable).

    Args:
        ctrl: ``[B, n, *n_ctrl_per_axis]`` float32 control-point displacements in pixels, one
            ``n_ctrl`` grid per displacement component.
        spatial: The output spatial shape (ints or scalar tensors), ``n`` entries.

    Returns:
        A list of ``n`` tensors ``[B, *spatial]``: the displacement along each axis in pixels.
    """
    n = len(spatial)
    field = ctrl  # [B, n, c0, c1(, c2)]
    for axis in range(n):
        u = _bspline_matrix(spatial[axis], ctrl.shape[2 + axis])  # [S_a, c_a]
        # contract the axis-th control axis: move it last, matmul, move back (the last, large
        # contraction needs no transpose).
        perm = list(range(n + 2))
        perm.remove(2 + axis)
        perm.append(2 + axis)
        moved = tf.transpose(field, perm) if axis != n - 1 else field
        moved = tf.matmul(moved, u, transpose_b=True)
        field = tf.transpose(moved, np.argsort(perm).tolist()) if axis != n - 1 else moved
    return [field[:, a] for a in range(n)]


def sampling_coords(forward: tf.Tensor, translation: tf.Tensor, spatial: list, field: list | None = None) -> list:
    """Source coordinates ``q = c + F^-1 (p - c - t) + e(p)`` for every output pixel.

    The affine part is separable (a sum of one small term per axis, broadcast), so each
    coordinate costs one full-size add, plus one for the elastic field.

    Args:
        forward: ``[B, n, n]`` forward matrices (centred coordinates).
        translation: ``[B, n]`` forward translations in pixels.
        spatial: Spatial shape (output = input size), ``n`` entries.
        field: Optional list of ``n`` tensors ``[B, *spatial]``: displacement in source pixels.

    Returns:
        A list of ``n`` float32 tensors ``[B, *spatial]``: source coordinate along each axis in pixels.
    """
    n = len(spatial)
    centre = [(tf.cast(s, tf.float32) - 1.0) / 2.0 for s in spatial]
    axes = [tf.cast(tf.range(s), tf.float32) - c for s, c in zip(spatial, centre)]  # p - c per axis
    inv = _inverse(forward)
    offset = tf.stack(centre)[None] - tf.einsum("bij,bj->bi", inv, translation)  # [B, n]
    coords = []
    for i in range(n):
        q = tf.reshape(offset[:, i], [-1] + [1] * n)
        for j in range(n):
            shape = [-1] + [1] * n
            shape[1 + j] = tf.shape(axes[j])[0]
            q = q + tf.reshape(inv[:, i, j : j + 1] * axes[j][None], shape)
        if field is not None:
            q = q + field[i]
        coords.append(q)
    return coords


def forward_points(forward: tf.Tensor, translation: tf.Tensor, points: tf.Tensor, spatial: list) -> tf.Tensor:
    """Maps source points ``[B, K, n]`` (pixels) forward: ``p = F (q - c) + t + c`` (no elastic)."""
    centre = tf.stack([(tf.cast(s, tf.float32) - 1.0) / 2.0 for s in spatial])
    return tf.einsum("bij,bkj->bki", forward, points - centre) + translation[:, None, :] + centre


def _pad_with(x: tf.Tensor, low: int, high: int, fill) -> tf.Tensor:
    """Pads every spatial axis of ``x`` ``[B, *S, C]`` by (low, high) with ``fill``.

    ``fill`` is a Python number (one ``tf.pad``) or a ``[B, C]`` tensor (pad + select).
    """
    n = x.shape.rank - 2
    paddings = [[0, 0]] + [[low, high]] * n + [[0, 0]]
    if isinstance(fill, (int, float)):
        return tf.pad(x, paddings, constant_values=tf.cast(fill, x.dtype))
    padded = tf.pad(x, paddings)
    inside = tf.pad(tf.ones(tf.shape(x)[1:-1], tf.bool), paddings[1:-1])
    fill = tf.reshape(tf.cast(fill, x.dtype), [-1] + [1] * n + [x.shape[-1]])
    return tf.where(inside[None, ..., None], padded, fill)


def _strides(padded_spatial: list) -> list:
    n = len(padded_spatial)
    strides = [1] * n
    for a in range(n - 2, -1, -1):
        strides[a] = strides[a + 1] * padded_spatial[a + 1]
    return strides


class SamplingIndex:
    """Integer base index and fractions of every sampling point, shared by all resampled tensors.

    Coordinates are clamped to ``[-1, size]`` per axis, so with tables padded by 1 (low) and 2
    (high) with the fill value every corner index is valid and points farther than one pixel
    outside read only fill: the constant mode of ``scipy.ndimage.map_coordinates``. Single-channel
    tables are gathered as flat vectors (about 2x faster than ``[N, 1]`` rows on the CPU).

    Args:
        coords: ``n`` tensors ``[B, *S]``: source coordinates in pixels.
        spatial: Spatial shape of the source arrays (``n`` ints or scalar tensors).
    """

    def __init__(self, coords: list, spatial: list):
        n = len(coords)
        self.strides = _strides([s + 3 for s in spatial])
        volume = self.strides[0] * (spatial[0] + 3)
        self.frac = []
        base = None
        for a in range(n):
            qc = tf.clip_by_value(coords[a], -1.0, tf.cast(spatial[a], tf.float32))
            q0 = tf.floor(qc)
            self.frac.append(qc - q0)
            term = tf.cast(q0, tf.int32) if a == n - 1 else tf.cast(q0, tf.int32) * self.strides[a]
            base = term if base is None else base + term
        # + 1 per axis for the low padding, + b * volume for the sample, folded into one add
        start = sum(self.strides) + tf.range(tf.shape(base)[0], dtype=tf.int32) * volume
        self.base = base + tf.reshape(start, [-1] + [1] * n)  # [B, *S]

    @staticmethod
    def _table(x: tf.Tensor, fill) -> tf.Tensor:
        padded = _pad_with(x, 1, 2, fill)
        return tf.reshape(padded, [-1]) if x.shape[-1] == 1 else tf.reshape(padded, [-1, x.shape[-1]])

    @staticmethod
    def _gather(table: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        out = tf.gather(table, index)
        return out[..., None] if table.shape.rank == 1 else out

    def linear(self, x: tf.Tensor, fill) -> tf.Tensor:
        """Multi-linear samples ``[B, *S, C]`` of float ``x``: ``2^n`` gathers and separable lerps."""
        table = self._table(x, fill)
        n = len(self.frac)
        frac = [tf.cast(f, x.dtype)[..., None] for f in self.frac]
        values = []
        for corner in itertools.product((0, 1), repeat=n):
            offset = sum(c * s for c, s in zip(corner, self.strides))
            values.append(self._gather(table, self.base + offset if any(corner) else self.base))
        for a in range(n - 1, -1, -1):  # last axis first: a + (b - a) f is exact at f = 0
            values = [v0 + (v1 - v0) * frac[a] for v0, v1 in zip(values[0::2], values[1::2])]
        return values[0]

    def nearest(self, x: tf.Tensor, fill, select: bool = False) -> tf.Tensor:
        """Nearest samples ``[B, *S, C]`` of ``x`` (any dtype); ties (``.5``) round up.

        ``select=True`` gathers the ``2^n`` corners and picks one per axis with ``where``: more
        gathers, but XLA fuses them into one loop, which is ~20 % faster under XLA on the CPU
        than one standalone gather (slower without XLA).
        """
        table = self._table(x, fill)
        if not select:
            index = self.base
            for a, f in enumerate(self.frac):
                index = index + tf.cast(f >= 0.5, tf.int32) * self.strides[a]
            return self._gather(table, index)
        n = len(self.frac)
        values = []
        for corner in itertools.product((0, 1), repeat=n):
            offset = sum(c * s for c, s in zip(corner, self.strides))
            values.append(self._gather(table, self.base + offset if any(corner) else self.base))
        for a in range(n - 1, -1, -1):
            up = (self.frac[a] >= 0.5)[..., None]
            values = [tf.where(up, v1, v0) for v0, v1 in zip(values[0::2], values[1::2])]
        return values[0]


def xla_gather_available() -> bool:
    """Whether :func:`gather_linear` / :func:`gather_nearest` can be used (XLA-compiled code only)."""
    return _xla is not None


class PaddedIndex:
    """Everything the XLA core gathers need, computed in one vectorised pass and then materialised.

    The same sampling as :class:`SamplingIndex`: :attr:`base` and :attr:`frac` are its base index into
    the batch-folded table padded by 1 low and 2 high with the fill, and its fractions;
    :attr:`nearest` is the flat index of the nearest point (ties round up) in the *unpadded*
    batch-folded array, ``-1`` where that point is outside (the fill), so labels and masks need no
    padded copy. Computed in its own XLA computation so that XLA cannot fuse this arithmetic into the
    gather loops: XLA:CPU emits a gather as a scalar loop that re-derives every fused producer per
    element, while a standalone elementwise pass is vectorised.

    Args:
        coords: ``n`` tensors ``[B, *S]``: source coordinates in pixels.
        spatial: Spatial shape of the source arrays (``n`` ints or scalar tensors).
        nearest: Also compute :attr:`nearest` (the label / mask index).
    """

    def __init__(self, coords: list, spatial: list, nearest: bool = True):
        n = len(coords)
        padded = _strides([s + 3 for s in spatial])
        plain = _strides(list(spatial))
        self.frac = []
        base = near = inside = None
        for a in range(n):
            qc = tf.clip_by_value(coords[a], -1.0, tf.cast(spatial[a], tf.float32))
            q0 = tf.floor(qc)
            f = qc - q0
            self.frac.append(f)
            i0 = tf.cast(q0, tf.int32)
            term = i0 if a == n - 1 else i0 * padded[a]
            base = term if base is None else base + term
            if nearest:
                r = i0 + tf.cast(f >= 0.5, tf.int32)
                ok = tf.logical_and(r >= 0, r < spatial[a])
                inside = ok if inside is None else tf.logical_and(inside, ok)
                term = r if a == n - 1 else r * plain[a]
                near = term if near is None else near + term
        sample = tf.reshape(tf.range(tf.shape(base)[0], dtype=tf.int32), [-1] + [1] * n)
        # + 1 per axis for the low padding, + b * volume for the sample (as SamplingIndex)
        self.base = base + (sum(padded) + sample * (padded[0] * (spatial[0] + 3)))
        self.nearest = None
        if nearest:
            self.nearest = tf.where(inside, near + sample * (plain[0] * spatial[0]), -1)


def padded_table(x: tf.Tensor, fill) -> tf.Tensor:
    """``x`` ``[B, *S, C]`` padded by 1 (low) and 2 (high) with ``fill`` on every spatial axis.

    Returned unflattened: a pad followed by the flattening reshape in the same XLA computation
    compiles to a slow per-element loop; reshaping the materialised table is free.
    """
    return _pad_with(x, 1, 2, fill)


def _row_gather(rows: tf.Tensor, index: tf.Tensor, size: int) -> tf.Tensor:
    """``size`` consecutive rows of ``rows`` ``[N, C]`` from every ``index`` ``[...]``: ``[..., size, C]``."""
    numbers = _xla_data.GatherDimensionNumbers()
    rank = index.shape.rank
    numbers.offset_dims.extend([rank, rank + 1])
    numbers.start_index_map.extend([0])
    numbers.index_vector_dim = rank
    out = _xla.gather(rows, index, numbers, [size, rows.shape[-1]], indices_are_sorted=False)
    out.set_shape(index.shape.concatenate([size, rows.shape[-1]]))  # XlaGather infers no shape
    return out


def gather_linear(table: tf.Tensor, base: tf.Tensor, frac: list) -> tf.Tensor:
    """Multi-linear samples ``[B, *S, C]`` from a :func:`padded_table` at a :class:`PaddedIndex`.

    One XLA gather of a ``[2, C]`` row window (the two neighbours along the last axis, contiguous)
    per corner of the leading axes (2 in 2D, 4 in 3D) instead of ``2^n`` element gathers; then the
    same lerps in the same order as :meth:`SamplingIndex.linear` (last axis first).
    """
    n = len(frac)
    padded = table.shape[1 : n + 1].as_list()
    if any(s is None for s in padded):
        padded = [tf.shape(table)[1 + a] for a in range(n)]
    strides = _strides(padded)
    rows = tf.reshape(table, [-1, table.shape[-1]])
    values = []
    for corner in itertools.product((0, 1), repeat=n - 1):
        offset = sum(c * s for c, s in zip(corner, strides))
        window = _row_gather(rows, base + offset if any(corner) else base, 2)  # [B, *S, 2, C]
        f = tf.cast(frac[n - 1], table.dtype)[..., None]
        v0, v1 = window[..., 0, :], window[..., 1, :]
        values.append(v0 + (v1 - v0) * f)
    for a in range(n - 2, -1, -1):
        f = tf.cast(frac[a], table.dtype)[..., None]
        values = [v0 + (v1 - v0) * f for v0, v1 in zip(values[0::2], values[1::2])]
    return values[0]


def gather_nearest(x: tf.Tensor, index: tf.Tensor, fill) -> tf.Tensor:
    """Samples ``[B, *S, C]`` of the unpadded ``x`` ``[B, *S, C]`` at :attr:`PaddedIndex.nearest`.

    ``fill`` (a number or ``[B, C]``) where the index is ``-1``.
    """
    channels = x.shape[-1]
    inside = index >= 0
    safe = tf.maximum(index, 0)
    if isinstance(fill, (int, float)):
        fill = tf.cast(fill, x.dtype)
    else:
        fill = tf.reshape(tf.cast(fill, x.dtype), [-1] + [1] * (index.shape.rank - 1) + [channels])
    if channels == 1:  # element gather from a flat vector: ~2x faster than [N, 1] rows
        values = tf.gather(tf.reshape(x, [-1]), safe)
        return tf.where(inside, values, fill if isinstance(fill, tf.Tensor) and fill.shape.rank == 0 else fill[..., 0])[..., None]
    values = _row_gather(tf.reshape(x, [-1, channels]), safe, 1)[..., 0, :]
    return tf.where(inside[..., None], values, fill)


def resample_linear(x: tf.Tensor, coords: list, fill) -> tf.Tensor:
    """Multi-linear sampling of float ``x`` ``[B, *S, C]`` at ``coords`` (``n`` x ``[B, *S]``)."""
    spatial = [tf.shape(x)[1 + a] for a in range(len(coords))]
    return SamplingIndex(coords, spatial).linear(x, fill)


def resample_nearest(x: tf.Tensor, coords: list, fill) -> tf.Tensor:
    """Nearest-neighbour sampling of ``x`` ``[B, *S, C]`` (any dtype) at ``coords``."""
    spatial = [tf.shape(x)[1 + a] for a in range(len(coords))]
    return SamplingIndex(coords, spatial).nearest(x, fill)


def radians(x) -> float:
    """Degrees -> radians (a float)."""
    return float(x) * math.pi / 180.0
