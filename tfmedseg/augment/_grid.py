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


def _rotation(angles: tf.Tensor, n: int) -> tf.Tensor:
    """``[B, n, n]`` from radians ``[B, 1]`` (2D) or ``[B, 3]`` (3D: about D, H, W axes)."""
    if n == 2:
        return _plane_rotation(angles[:, 0], 2, 0, 1)
    r = _plane_rotation(angles[:, 0], 3, 1, 2)  # about D: axial plane (H, W)
    r = tf.matmul(r, _plane_rotation(angles[:, 1], 3, 0, 2))  # about H: plane (D, W)
    return tf.matmul(r, _plane_rotation(angles[:, 2], 3, 0, 1))  # about W: plane (D, H)


def _shear(angles: tf.Tensor, n: int) -> tf.Tensor:
    """``I + sum_ij tan(angle_ij) E_ij`` over the ``n (n - 1)`` off-diagonal entries; radians."""
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    basis = np.zeros((len(pairs), n, n), np.float32)
    for k, (i, j) in enumerate(pairs):
        basis[k, i, j] = 1.0
    return tf.eye(n, dtype=tf.float32)[None] + tf.einsum("bk,kij->bij", tf.tan(angles), basis)


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
        A list of ``n`` tensors ``[B, prod(spatial)]``: the displacement along each axis in pixels.
    """
    n = len(spatial)
    field = ctrl  # [B, n, c0, c1(, c2)]
    for axis in range(n):
        u = _bspline_matrix(spatial[axis], ctrl.shape[2 + axis])  # [S_a, c_a]
        # contract the axis-th control axis: move it last, matmul, move back.
        perm = list(range(n + 2))
        perm.remove(2 + axis)
        perm.append(2 + axis)
        moved = tf.transpose(field, perm) if axis != n - 1 else field
        moved = tf.matmul(moved, u, transpose_b=True)
        inv = np.argsort(perm).tolist()
        field = tf.transpose(moved, inv) if axis != n - 1 else moved
    batch = tf.shape(ctrl)[0]
    return [tf.reshape(field[:, a], [batch, -1]) for a in range(n)]


def centred_grid(spatial: list) -> tuple[list, list]:
    """Output pixel coordinates minus the centre (``n`` tensors ``[P]``) and the centre (``n`` scalars)."""
    axes = [tf.cast(tf.range(s), tf.float32) for s in spatial]
    centre = [(tf.cast(s, tf.float32) - 1.0) / 2.0 for s in spatial]
    mesh = tf.meshgrid(*[a - c for a, c in zip(axes, centre)], indexing="ij")
    return [tf.reshape(m, [-1]) for m in mesh], centre


def sampling_coords(forward: tf.Tensor, translation: tf.Tensor, spatial: list, field: list | None = None) -> list:
    """Source coordinates ``q = c + F^-1 (p - c - t) + e(p)`` for every output pixel.

    Args:
        forward: ``[B, n, n]`` forward matrices (centred coordinates).
        translation: ``[B, n]`` forward translations in pixels.
        spatial: Spatial shape (output = input size), ``n`` entries.
        field: Optional list of ``n`` tensors ``[B, P]``: displacement in source pixels
            (``P = prod(spatial)``).

    Returns:
        A list of ``n`` float32 tensors ``[B, P]``: source coordinate along each axis in pixels.
    """
    n = len(spatial)
    pc, centre = centred_grid(spatial)
    inv = _inverse(forward)
    offset = tf.stack(centre)[None] - tf.einsum("bij,bj->bi", inv, translation)  # [B, n]
    coords = []
    for i in range(n):
        q = offset[:, i : i + 1]
        for j in range(n):
            q = q + inv[:, i, j : j + 1] * pc[j][None]
        if field is not None:
            q = q + field[i]
        coords.append(q)
    return coords


def forward_points(forward: tf.Tensor, translation: tf.Tensor, points: tf.Tensor, spatial: list) -> tf.Tensor:
    """Maps source points ``[B, K, n]`` (pixels) forward: ``p = F (q - c) + t + c`` (no elastic)."""
    centre = tf.stack([(tf.cast(s, tf.float32) - 1.0) / 2.0 for s in spatial])
    return tf.einsum("bij,bkj->bki", forward, points - centre) + translation[:, None, :] + centre


def _pad_with(x: tf.Tensor, low: int, high: int, fill: tf.Tensor) -> tf.Tensor:
    """Pads every spatial axis of ``x`` ``[B, *S, C]`` by (low, high) with ``fill`` (``[B, C]``)."""
    n = x.shape.rank - 2
    paddings = [[0, 0]] + [[low, high]] * n + [[0, 0]]
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


def _flat_index(k: list, padded_spatial: list) -> tf.Tensor:
    """Flat row index ``[B, P]`` into ``[B * prod(padded_spatial), C]`` from ``n`` int tensors ``[B, P]``."""
    strides = _strides(padded_spatial)
    idx = k[-1]
    for a in range(len(k) - 1):
        idx = idx + k[a] * strides[a]
    volume = strides[0] * padded_spatial[0]
    return idx + (tf.range(tf.shape(idx)[0], dtype=tf.int32) * volume)[:, None]


def resample_linear(x: tf.Tensor, coords: list, fill: tf.Tensor, stacked: bool = False) -> tf.Tensor:
    """Multi-linear sampling of ``x`` ``[B, *S, C]`` (float) at ``coords`` -> ``[B, *S, C]``.

    Args:
        x: Float image ``[B, *S, C]``.
        coords: ``n`` tensors ``[B, P]`` of source coordinates in pixels (``P = prod(S)``).
        fill: ``[B, C]`` value outside the array. Points farther than one pixel outside are pure
            ``fill``; within one pixel they blend with the border (constant mode).
        stacked: Gather the ``2^n`` neighbours as one row each (stack them as channels first)
            instead of ``2^n`` separate gathers.
    """
    n = len(coords)
    spatial = [tf.shape(x)[1 + a] for a in range(n)]
    channels = x.shape[-1]
    padded = _pad_with(x, 1, 2, fill)  # size S + 3: neighbour k + 1 of every base k exists
    psize = [s + 3 for s in spatial]
    frac, k = [], []
    for a in range(n):
        qc = tf.clip_by_value(coords[a], -1.0, tf.cast(spatial[a], tf.float32))
        q0 = tf.floor(qc)
        frac.append(tf.cast(qc - q0, x.dtype)[..., None])
        k.append(tf.cast(q0, tf.int32) + 1)
    corners = list(itertools.product((0, 1), repeat=n))
    if stacked:
        ssize = [s + 2 for s in spatial]
        slices = []
        for corner in corners:
            sl = [slice(None)] + [slice(c, c + ssize[a]) for a, c in enumerate(corner)] + [slice(None)]
            slices.append(padded[tuple(sl)])
        table = tf.reshape(tf.concat(slices, axis=-1), [-1, len(corners) * channels])
        rows = tf.gather(table, _flat_index(k, ssize))
        values = [rows[..., i * channels : (i + 1) * channels] for i in range(len(corners))]
    else:
        table = tf.reshape(padded, [-1, channels])
        base = _flat_index(k, psize)
        strides = _strides(psize)
        values = []
        for corner in corners:
            offset = sum(c * s for c, s in zip(corner, strides))
            values.append(tf.gather(table, base + offset if corner != (0,) * n else base))
    # separable lerp, last axis first: a + (b - a) f is exact at f = 0
    for a in range(n - 1, -1, -1):
        values = [v0 + (v1 - v0) * frac[a] for v0, v1 in zip(values[0::2], values[1::2])]
    return tf.reshape(values[0], tf.shape(x))


def resample_nearest(x: tf.Tensor, coords: list, fill: tf.Tensor) -> tf.Tensor:
    """Nearest-neighbour sampling of ``x`` ``[B, *S, C]`` (any dtype) at ``coords`` (``n`` x ``[B, P]``).

    Ties (``.5``) round up. Points outside ``[-0.5, size - 0.5)`` take ``fill`` (``[B, C]``).
    """
    n = len(coords)
    spatial = [tf.shape(x)[1 + a] for a in range(n)]
    padded = _pad_with(x, 1, 1, fill)
    k = [
        tf.cast(tf.clip_by_value(tf.floor(coords[a] + 0.5), -1.0, tf.cast(spatial[a], tf.float32)), tf.int32) + 1
        for a in range(n)
    ]
    rows = tf.gather(tf.reshape(padded, [-1, x.shape[-1]]), _flat_index(k, [s + 2 for s in spatial]))
    return tf.reshape(rows, tf.shape(x))


def radians(x) -> float:
    """Degrees -> radians (a float)."""
    return float(x) * math.pi / 180.0
