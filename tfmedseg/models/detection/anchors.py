"""Anchor (default / prior box) generation for single- and multi-level detectors.

All anchors are ``float32`` numpy arrays ``[A, 4]`` of ``(y0, x0, y1, x1)`` in **pixels of the
network input** (``y1``/``x1`` exclusive, the same convention as
:class:`tfmedseg.datasets.case.Instance`). They are constants of a model configuration, so they
are computed once on the host and baked into the graph as constants (no ops at run time).

Ordering (both generators): level by level (finest first), then feature-map row ``i``, column
``j``, then anchor type. This is the order in which the detection heads flatten their outputs,
``[B, h, w, k * d] -> [B, h * w * k, d]``, so anchor ``a`` and prediction ``a`` always match.

Two recipes:

* :func:`ssd_anchors` - SSD (Liu et al., 2016, "SSD: Single Shot MultiBox Detector") as in the
  Keras reference ``ssd_keras`` ``ssd_512``: per level ``l`` a scale ``s_l`` (fraction of the
  shorter image side), aspect ratios ``ar`` giving ``w = s_l * sqrt(ar)``, ``h = s_l / sqrt(ar)``,
  and for ``ar == 1`` a second box of size ``sqrt(s_l * s_{l+1})``; centres at
  ``(j + offset) * step``.
* :func:`multilevel_anchors` - FPN / Mask R-CNN (Lin et al., 2017): one pixel size per pyramid
  level, ratios ``r = w / h`` with ``h = size / sqrt(r)``, ``w = size * sqrt(r)``, centres at
  ``(j * anchor_stride + offset) * stride``.

Example:
    >>> a = multilevel_anchors((64, 64), strides=(16,), sizes=(16,), ratios=(1.0,))
    >>> a.shape, a[0].tolist()
    ((16, 4), [0.0, 0.0, 16.0, 16.0])
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tfmedseg.errors import ConfigError

__all__ = [
    "grid_anchors",
    "feature_sizes",
    "ssd_anchor_shapes",
    "ssd_anchors",
    "multilevel_anchors",
    "num_anchors_per_location",
]


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise ConfigError(f"expected a positive (height, width), got {size!r}", path=name)
    return size  # type: ignore[return-value]


def grid_anchors(
    feature_size: tuple[int, int],
    stride: float | tuple[float, float],
    shapes: Sequence[tuple[float, float]],
    offset: float = 0.5,
    anchor_stride: int = 1,
) -> np.ndarray:
    """Anchors of one feature map: every ``(h, w)`` shape centred on every grid cell.

    Args:
        feature_size: ``(rows, cols)`` of the feature map.
        stride: Pixels between neighbouring cells (``step`` in SSD), scalar or ``(sy, sx)``.
        shapes: Anchor ``(height, width)`` in pixels, in the order of the head's channels.
        offset: Centre of cell ``j`` is at ``(j + offset) * stride`` pixels. Default 0.5.
        anchor_stride: Place anchors on every ``anchor_stride``-th cell only. Default 1.

    Returns:
        ``float32 [rows' * cols' * len(shapes), 4]`` boxes ``(y0, x0, y1, x1)`` in pixels.
    """
    sy, sx = (stride, stride) if np.isscalar(stride) else stride
    rows = np.arange(0, feature_size[0], anchor_stride, dtype=np.float64)
    cols = np.arange(0, feature_size[1], anchor_stride, dtype=np.float64)
    cy = (rows + offset) * sy
    cx = (cols + offset) * sx
    cy, cx = np.meshgrid(cy, cx, indexing="ij")  # [rows, cols]
    hw = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    cy = cy[:, :, None]
    cx = cx[:, :, None]
    h = hw[None, None, :, 0]
    w = hw[None, None, :, 1]
    boxes = np.stack(
        np.broadcast_arrays(cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2), axis=-1
    )
    return boxes.reshape(-1, 4).astype(np.float32)


def feature_sizes(image_size: int | Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature-map sizes ``ceil(image / stride)`` (what ``'same'``-padded stride-2 convs give)."""
    h, w = _pair(image_size, "image_size")
    return [(int(math.ceil(h / s)), int(math.ceil(w / s))) for s in strides]


def ssd_anchor_shapes(
    image_size: int | Sequence[int],
    scales: Sequence[float],
    aspect_ratios: Sequence[Sequence[float]],
    two_boxes_for_ar1: bool = True,
) -> list[list[tuple[float, float]]]:
    """Per-level anchor ``(height, width)`` in pixels for SSD.

    Args:
        image_size: Network input ``(H, W)`` or a side length.
        scales: ``L + 1`` scale factors (fraction of ``min(H, W)``); level ``l`` uses ``scales[l]``
            and its extra ``ar = 1`` box ``sqrt(scales[l] * scales[l + 1])``.
        aspect_ratios: Per level, the ratios ``w / h``.
        two_boxes_for_ar1: Add the extra square box for ``ar == 1``. Default True.

    Returns:
        ``L`` lists of ``(h, w)`` in the channel order of the head.

    Raises:
        ConfigError: ``len(scales) != len(aspect_ratios) + 1`` or a non-positive value.
    """
    h, w = _pair(image_size, "image_size")
    if len(scales) != len(aspect_ratios) + 1:
        raise ConfigError(
            f"needs one scale per level plus one (got {len(scales)} scales for "
            f"{len(aspect_ratios)} levels)",
            path="scales",
        )
    if min(scales) <= 0 or min(min(a) for a in aspect_ratios) <= 0:
        raise ConfigError("scales and aspect ratios must be positive", path="scales")
    side = min(h, w)
    shapes = []
    for level, ratios in enumerate(aspect_ratios):
        size = scales[level] * side
        level_shapes = []
        for ar in ratios:
            level_shapes.append((size / math.sqrt(ar), size * math.sqrt(ar)))
            if ar == 1 and two_boxes_for_ar1:
                extra = math.sqrt(scales[level] * scales[level + 1]) * side
                level_shapes.append((extra, extra))
        shapes.append(level_shapes)
    return shapes


def num_anchors_per_location(aspect_ratios: Sequence[float], two_boxes_for_ar1: bool = True) -> int:
    """Anchors per cell of an SSD level: one per ratio, plus one if ``1.0`` is doubled."""
    return len(aspect_ratios) + int(two_boxes_for_ar1 and 1.0 in [float(a) for a in aspect_ratios])


def ssd_anchors(
    image_size: int | Sequence[int],
    level_sizes: Sequence[tuple[int, int]],
    scales: Sequence[float],
    steps: Sequence[float],
    offsets: Sequence[float],
    aspect_ratios: Sequence[Sequence[float]],
    two_boxes_for_ar1: bool = True,
) -> np.ndarray:
    """All SSD anchors, level by level, as in ``ssd_keras`` (anchors are not clipped).

    Args:
        image_size: Network input ``(H, W)`` or a side length, pixels.
        level_sizes: ``(rows, cols)`` of each predictor feature map (``L`` levels).
        scales: ``L + 1`` scale factors (Table 10: ``[0.07, 0.15, ..., 1.05]``).
        steps: ``L`` pixel steps between cells (Table 10: ``[8, 16, ..., 512]``).
        offsets: ``L`` cell-centre offsets in units of the step (Table 10: all 0.5).
        aspect_ratios: ``L`` lists of ratios ``w / h``.
        two_boxes_for_ar1: Extra square box per cell. Default True.

    Returns:
        ``float32 [A, 4]`` anchors ``(y0, x0, y1, x1)`` in pixels.

    Raises:
        ConfigError: The per-level lists do not all have ``L`` entries.
    """
    n = len(level_sizes)
    for name, seq in (("steps", steps), ("offsets", offsets), ("aspect_ratios", aspect_ratios)):
        if len(seq) != n:
            raise ConfigError(f"needs one entry per predictor level ({n}), got {len(seq)}", path=name)
    shapes = ssd_anchor_shapes(image_size, scales, aspect_ratios, two_boxes_for_ar1)
    return np.concatenate(
        [grid_anchors(level_sizes[i], steps[i], shapes[i], offsets[i]) for i in range(n)], axis=0
    )


def multilevel_anchors(
    image_size: int | Sequence[int],
    strides: Sequence[int],
    sizes: Sequence[float],
    ratios: Sequence[float] = (0.5, 1.0, 2.0),
    anchor_stride: int = 1,
    offset: float = 0.5,
) -> np.ndarray:
    """FPN anchors: one size per level, every ratio at every cell.

    Args:
        image_size: Network input ``(H, W)`` or a side length, pixels.
        strides: Pixel stride of each level (``P2..P6``: ``4, 8, 16, 32, 64``).
        sizes: Anchor side (``sqrt(h * w)``) per level in pixels (Table 11: 32..512).
        ratios: Width / height ratios. Default ``(0.5, 1, 2)``.
        anchor_stride: Anchors on every n-th cell. Default 1 (Table 11).
        offset: Cell-centre offset in units of the stride. Default 0.5 (Model Garden; Matterport
            uses 0).

    Returns:
        ``float32 [A, 4]``, ``A = sum_l ceil(H/s_l) * ceil(W/s_l) * len(ratios)`` for stride 1.

    Raises:
        ConfigError: ``len(strides) != len(sizes)`` or non-positive values.
    """
    if len(strides) != len(sizes):
        raise ConfigError(f"needs one size per level ({len(strides)}), got {len(sizes)}", path="sizes")
    if min(sizes) <= 0 or min(ratios) <= 0 or anchor_stride < 1:
        raise ConfigError("anchor sizes, ratios and anchor_stride must be positive", path="sizes")
    out = []
    for stride, size, fsize in zip(strides, sizes, feature_sizes(image_size, strides)):
        shapes = [(size / math.sqrt(r), size * math.sqrt(r)) for r in ratios]
        out.append(grid_anchors(fsize, stride, shapes, offset, anchor_stride))
    return np.concatenate(out, axis=0)
