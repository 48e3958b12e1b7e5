"""Overlay images: a PNG montage of image slices with liver (green) and lesion (red) masks."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.validation import as_array, check_same_shape

__all__ = ["OverlayItem", "overlay_montage"]


@dataclasses.dataclass
class OverlayItem:
    """One montage tile: an image with its liver and lesion masks.

    Attributes:
        case_id: Caption of the tile.
        image: ``[H, W]`` slice or ``[D, H, W]`` volume (any scale; min-max normalised for display).
        liver: Binary mask of the same shape (green), or None.
        lesion: Binary mask of the same shape (red), or None.
        slice_index: For volumes, the axial slice to show; None = the slice with the most lesion (or
            liver) voxels.
    """

    case_id: str
    image: np.ndarray
    liver: np.ndarray | None = None
    lesion: np.ndarray | None = None
    slice_index: int | None = None


def _tile(item: OverlayItem, size: int, opacity: float):
    from PIL import Image, ImageDraw

    img = as_array(item.image, "image").astype(np.float32)
    masks = []
    for name in ("liver", "lesion"):
        m = getattr(item, name)
        if m is not None:
            m = as_array(m, name) != 0
            check_same_shape(img, m, ("image", name))
        masks.append(m)
    if img.ndim == 3:
        k = item.slice_index
        if k is None:
            ref = masks[1] if masks[1] is not None and masks[1].any() else masks[0]
            k = int(np.argmax(ref.reshape(ref.shape[0], -1).sum(1))) if ref is not None else img.shape[0] // 2
        img = img[k]
        masks = [None if m is None else m[k] for m in masks]
    elif img.ndim != 2:
        raise InvalidInputError(f"must be [H, W] or [D, H, W], got shape {img.shape}", path="image")
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    gray = np.zeros_like(img) if hi <= lo else (img - lo) / (hi - lo)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if masks[0] is not None and masks[1] is not None:
        masks[0] = masks[0] & ~masks[1]  # a lesion voxel is shown red only (label-map colours)
    for m, colour in zip(masks, ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0))):
        if m is not None:
            rgb[m] = (1 - opacity) * rgb[m] + opacity * np.asarray(colour)
    pil = Image.fromarray(np.round(rgb * 255).astype(np.uint8)).resize((size, size), Image.NEAREST)
    ImageDraw.Draw(pil).text((4, 4), str(item.case_id), fill=(255, 255, 0))
    return pil


def overlay_montage(items: Sequence[OverlayItem], path: str | os.PathLike, tile_size: int = 256,
                    columns: int = 4, opacity: float = 0.3) -> Path:
    """Writes a PNG grid of overlays: liver green, lesion red, ``opacity`` (30 %, the seed-003 viewer).

    Returns:
        The PNG path.
    """
    from PIL import Image

    if not items:
        raise InvalidInputError("needs at least one item", path="items")
    tiles = [_tile(it, tile_size, opacity) for it in items]
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (cols * tile_size, rows * tile_size))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * tile_size, (i // cols) * tile_size))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path

