"""Invertible crops: every crop returns the cropped array and a record that maps masks back.

Two records:

* :class:`Crop`: an index box on the leading (spatial) axes, optional padding where the box
  extends past the image, optional resize of the cropped region (field of view kept, see
  :mod:`tfmedseg.preprocessing.resample`). ``apply`` crops (+ resizes) any array on the source grid,
  ``invert`` puts a crop-grid array (a predicted mask) back onto the source grid, filling the rest,
  and ``boxes_to_crop`` / ``boxes_to_source`` map ``(y0, x0, y1, x1)`` pixel boxes both ways.
* :class:`GridCrop`: a crop that is also a resampling through world coordinates (seed 004's
  144 mm cube at 1 mm), inverted by resampling back through the affines.

Seed crops built on them:

* :func:`liver_voi` (seed 003): liver 3D bounding box, made square in-plane, resized to 256x256,
  zero background filled with the mean of the liver pixels of the slice, CLAHE per slice.
* :func:`body_crop` (seed 000): body mask (HU threshold, largest connected component),
  bounding box made square, resized to 256x256.
* :func:`hecktor_cube` (seed 004): 144 mm cube at 1 mm centred on the HECKTOR bounding box.
* :func:`chest_crop` (seed 001): the chest box of a whole-body view resized to 320x320.

Squaring rule (seeds 000, 003): the smaller in-plane side is enlarged symmetrically to the larger
one; the square is then shifted to lie inside the image when it fits, and padded (zeros for
masks, ``pad_value`` for images) only when the square is larger than the image.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import ndimage

from tfmedseg.errors import InvalidInputError
from tfmedseg.io.volume import Volume
from tfmedseg.preprocessing.resample import resample_to_reference, resize_array

__all__ = ["Crop", "GridCrop", "bounding_box", "liver_voi", "body_crop", "hecktor_cube", "chest_crop"]


@dataclasses.dataclass(frozen=True)
class Crop:
    """An invertible index crop of the leading ``len(box)`` axes of an array.

    Attributes:
        box: ``((start, stop), ...)`` per cropped axis in source voxel indices, ``stop``
            exclusive; may extend beyond the image when the crop was made with padding.
        source_shape: Spatial shape of the source grid (the cropped axes only).
        out_shape: Spatial shape after resizing the cropped region, or None (no resize).
    """

    box: tuple[tuple[int, int], ...]
    source_shape: tuple[int, ...]
    out_shape: tuple[int, ...] | None = None

    @classmethod
    def from_box(
        cls,
        box: Sequence[Sequence[int]],
        source_shape: Sequence[int],
        out_shape: Sequence[int] | None = None,
        allow_padding: bool = False,
    ) -> "Crop":
        """Check and build a crop.

        Args:
            box: ``((start, stop), ...)`` integer voxel indices per axis.
            source_shape: Shape of the source image axes the box refers to.
            out_shape: Resize target of the crop, or None.
            allow_padding: Accept a box that extends past the image (the part outside is padded);
                a box with no overlap with the image is always an error.

        Raises:
            InvalidInputError: If the box is empty, lies (partly, without ``allow_padding``)
                outside the image, or its rank differs from ``source_shape``.
        """
        box = tuple((int(a), int(b)) for a, b in box)
        source_shape = tuple(int(s) for s in source_shape)
        if len(box) != len(source_shape):
            raise InvalidInputError(f"box {box} has {len(box)} axes, the image {len(source_shape)}", path="box")
        for (start, stop), size in zip(box, source_shape):
            if stop <= start:
                raise InvalidInputError(f"crop box {box} is empty along an axis (stop <= start)", path="box")
            outside = start < 0 or stop > size
            no_overlap = start >= size or stop <= 0
            if no_overlap or (outside and not allow_padding):
                raise InvalidInputError(
                    f"crop box {box} lies outside the image of shape {source_shape}", path="box"
                )
        if out_shape is not None:
            out_shape = tuple(int(s) for s in out_shape)
            if len(out_shape) != len(box):
                raise InvalidInputError(f"out_shape {out_shape} does not match the box rank {len(box)}", path="out_shape")
        return cls(box, source_shape, out_shape)

    @property
    def crop_shape(self) -> tuple[int, ...]:
        """Size of the box before any resize."""
        return tuple(b - a for a, b in self.box)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Spatial shape of :meth:`apply`'s result."""
        return self.out_shape or self.crop_shape

    def _slices(self) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        src, dst = [], []
        for (start, stop), size in zip(self.box, self.source_shape):
            a, b = max(start, 0), min(stop, size)
            src.append(slice(a, b))
            dst.append(slice(a - start, b - start))
        return tuple(src), tuple(dst)

    def apply(self, array: np.ndarray, mode: str = "linear", pad_value: float = 0.0) -> np.ndarray:
        """Crop (pad, resize) an array on the source grid.

        Args:
            array: ``[*source_shape, *channels]``.
            mode: Resize mode, ``"linear"`` for images, ``"nearest"`` for masks (see
                :data:`~tfmedseg.preprocessing.resample.MODES`).
            pad_value: Value of padded voxels outside the image.

        Returns:
            ``[*output_shape, *channels]`` (float32 for ``"linear"`` with a resize, else the dtype).
        """
        array = np.asarray(array)
        n = len(self.box)
        if tuple(array.shape[:n]) != self.source_shape:
            raise InvalidInputError(
                f"array of shape {array.shape} is not on the crop's source grid {self.source_shape}", path="array"
            )
        src, dst = self._slices()
        out = np.full(self.crop_shape + array.shape[n:], pad_value, dtype=array.dtype)
        out[dst] = array[src]
        if self.out_shape is not None:
            out = resize_array(out, self.out_shape, mode)
        return out

    def invert(self, array: np.ndarray, mode: str = "nearest", fill: float = 0.0) -> np.ndarray:
        """Put a crop-grid array (a predicted mask or probabilities) back on the source grid.

        Args:
            array: ``[*output_shape, *channels]``.
            mode: Resize mode back to the box size: ``"nearest"`` for masks, ``"linear"`` for
                probabilities.
            fill: Value of the source voxels outside the box.

        Returns:
            ``[*source_shape, *channels]``.
        """
        array = np.asarray(array)
        n = len(self.box)
        if tuple(array.shape[:n]) != self.output_shape:
            raise InvalidInputError(
                f"array of shape {array.shape} is not on the crop grid {self.output_shape}", path="array"
            )
        if self.out_shape is not None:
            array = resize_array(array, self.crop_shape, mode)
        src, dst = self._slices()
        out = np.full(self.source_shape + array.shape[n:], fill, dtype=array.dtype)
        out[src] = array[dst]
        return out

    def _yx_scale(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.box) < 2:
            raise InvalidInputError("box mapping needs a crop with at least two (H, W) axes", path="box")
        start = np.array([self.box[-2][0], self.box[-1][0]] * 2, dtype=np.float64)
        size = np.array(self.crop_shape[-2:] * 2, dtype=np.float64)
        out = np.array(self.output_shape[-2:] * 2, dtype=np.float64)
        return start, out / size

    def boxes_to_crop(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``[N, 4]`` ``(y0, x0, y1, x1)`` source-pixel boxes (edges, exclusive ends) to the crop grid."""
        start, scale = self._yx_scale()
        return ((np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - start) * scale).astype(np.float32)

    def boxes_to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`boxes_to_crop`: ``[N, 4]`` crop-grid boxes to source pixels."""
        start, scale = self._yx_scale()
        return (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale + start).astype(np.float32)


def bounding_box(mask: np.ndarray, path: str = "mask") -> tuple[tuple[int, int], ...]:
    """``((start, stop), ...)`` of the non-zero voxels of ``mask`` (stop exclusive).

    Raises:
        InvalidInputError: If the mask is empty (``path`` names it).
    """
    mask = np.asarray(mask)
    if not mask.any():
        raise InvalidInputError("mask is empty, it has no bounding box", path=path)
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _square(y: tuple[int, int], x: tuple[int, int], shape: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int], bool]:
    """Enlarge the smaller in-plane side symmetrically, shift inside the image when it fits."""
    side = max(y[1] - y[0], x[1] - x[0])
    out, padded = [], False
    for (a, b), size in zip((y, x), shape):
        start = a - (side - (b - a)) // 2
        if side <= size:
            start = min(max(start, 0), size - side)
        else:
            padded = True
        out.append((start, start + side))
    return out[0], out[1], padded


def liver_voi(
    ct_unit: np.ndarray,
    liver_mask: np.ndarray,
    out_size: int = 256,
    clahe: bool = True,
    clip_limit: float = 0.01,
    kernel_size: int | None = None,
) -> tuple[np.ndarray, Crop]:
    """Seed 003 lesion-stage input: the liver VOI, square in-plane, filled background, CLAHE.

    Steps: CT x liver mask -> 3D bounding box of the liver -> in-plane box made square (module
    docstring) -> crop (slices without liver dropped) -> each slice resized to ``out_size`` ->
    zero pixels of a slice set to the mean of its non-zero (liver) pixels -> CLAHE per slice
    (``skimage.exposure.equalize_adapthist``; the default ``kernel_size`` = 1/8 of the image is the
    thesis' "8x8 blocks").

    Args:
        ct_unit: ``[D, H, W]`` CT already windowed to ``[0, 1]`` (seed 003: [-250, 250] HU).
        liver_mask: ``[D, H, W]`` liver mask (ground truth in training, stage-1 prediction at test).
        out_size: In-plane size of the output (256).
        clahe: Apply CLAHE.
        clip_limit: CLAHE clip limit (skimage default 0.01; not given in the thesis).
        kernel_size: CLAHE tile size, None = skimage default (image size / 8).

    Returns:
        ``(voi, crop)``: ``voi`` float32 ``[D', out_size, out_size]`` in ``[0, 1]``; ``crop`` maps
        lesion labels (``crop.apply(label, "nearest")``) and predictions (``crop.invert``).

    Raises:
        InvalidInputError: If the liver mask is empty or does not match the CT's shape.
    """
    from skimage import exposure

    ct_unit = np.asarray(ct_unit, dtype=np.float32)
    liver = np.asarray(liver_mask) > 0
    if ct_unit.ndim != 3 or liver.shape != ct_unit.shape:
        raise InvalidInputError(f"ct {ct_unit.shape} and liver mask {liver.shape} must be equal 3-D shapes", path="liver_mask")
    z, y, x = bounding_box(liver, path="liver_mask")
    y, x, padded = _square(y, x, ct_unit.shape[1:])
    crop = Crop.from_box((z, y, x), ct_unit.shape, (z[1] - z[0], out_size, out_size), allow_padding=padded)
    voi = crop.apply(ct_unit * liver, mode="linear")
    out = np.empty_like(voi)
    for k, sl in enumerate(voi):
        inside = sl != 0
        if inside.any():
            sl = np.where(inside, sl, sl[inside].mean())
        if clahe:
            sl = exposure.equalize_adapthist(np.clip(sl, 0.0, 1.0), kernel_size=kernel_size, clip_limit=clip_limit)
        out[k] = sl
    return out.astype(np.float32), crop


def body_crop(
    ct_hu: np.ndarray, threshold: float = -500.0, out_size: int = 256, pad_value: float = -1024.0
) -> tuple[np.ndarray, Crop]:
    """Seed 000 abdominal crop: body mask -> bounding box -> square -> resize to ``out_size``.

    The body is the largest connected component of ``ct_hu > threshold`` (drops the couch, air
    and noise; the seed's exact rule is lost, this is our documented choice). For a 3D volume the
    component is found in 3D and the in-plane box is the union over slices; all slices are kept.

    Args:
        ct_hu: ``[H, W]`` slice or ``[D, H, W]`` volume in HU.
        threshold: HU threshold of the body mask (-500).
        out_size: Output in-plane size (256).
        pad_value: Image value of padded pixels when the square exceeds the image (air).

    Returns:
        ``(cropped, crop)``: float32 ``[out, out]`` or ``[D, out, out]`` and its :class:`Crop`.

    Raises:
        InvalidInputError: If no voxel is above the threshold.
    """
    ct_hu = np.asarray(ct_hu, dtype=np.float32)
    if ct_hu.ndim not in (2, 3):
        raise InvalidInputError(f"expected a 2-D slice or 3-D volume, got shape {ct_hu.shape}", path="ct_hu")
    body = ct_hu > threshold
    labels, n = ndimage.label(body)
    if n == 0:
        raise InvalidInputError(f"no voxel above {threshold} HU: no body to crop", path="ct_hu")
    sizes = ndimage.sum_labels(body, labels, index=np.arange(1, n + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    box = bounding_box(largest, path="ct_hu")
    y, x, padded = _square(box[-2], box[-1], ct_hu.shape[-2:])
    if ct_hu.ndim == 3:
        crop = Crop.from_box(((0, ct_hu.shape[0]), y, x), ct_hu.shape, (ct_hu.shape[0], out_size, out_size), padded)
    else:
        crop = Crop.from_box((y, x), ct_hu.shape, (out_size, out_size), padded)
    return crop.apply(ct_hu, "linear", pad_value=pad_value), crop


def chest_crop(
    image: np.ndarray, box: Sequence[float], out_size: Sequence[int] = (320, 320)
) -> tuple[np.ndarray, Crop]:
    """Seed 001: crop the chest box of a whole-body view and resize it to 320x320 (aspect not kept).

    A detected box partly outside the image is clipped to it (SSD boxes may overshoot).

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` view (counts).
        box: ``(y0, x0, y1, x1)`` pixels (edges; floats are rounded outwards).
        out_size: ``(h, w)`` of the crop (320, 320).

    Returns:
        ``(crop_image float32 [h, w(, C)], crop)``; ``crop.apply(mask, "nearest")`` maps instance
        masks, ``crop.boxes_to_crop`` / ``boxes_to_source`` map lesion boxes, ``crop.invert`` maps
        predicted masks back to the whole-body view.

    Raises:
        InvalidInputError: If the box is empty or has no overlap with the image (names ``box``).
    """
    image = np.asarray(image)
    h, w = image.shape[:2]
    y0, x0, y1, x1 = (float(v) for v in box)
    if not (y1 > y0 and x1 > x0) or y0 >= h or x0 >= w or y1 <= 0 or x1 <= 0:
        raise InvalidInputError(f"chest box {tuple(box)} is empty or outside the image of shape {(h, w)}", path="box")
    yb = (max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), h))
    xb = (max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), w))
    crop = Crop.from_box((yb, xb), (h, w), tuple(out_size))
    return crop.apply(image.astype(np.float32), "linear"), crop


@dataclasses.dataclass(frozen=True)
class GridCrop:
    """A crop defined as a target voxel grid in world coordinates (resampling crop).

    Attributes:
        affine: 4x4 index -> RAS mm affine of the crop grid.
        shape: ``(D, H, W)`` of the crop grid.
        source_affine: Affine of the source grid.
        source_shape: Shape of the source grid.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    source_affine: np.ndarray
    source_shape: tuple[int, int, int]

    def apply(self, volume: Volume, mode: str = "linear", cval: float = 0.0) -> Volume:
        """Resample a source-grid Volume onto the crop grid (``cval`` outside the source)."""
        array = resample_to_reference(volume, self.affine, self.shape, mode=mode, cval=cval)
        spacing = tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
        return Volume(array, spacing, self.affine.copy(), volume.modality, dict(volume.meta))

    def invert(self, array: np.ndarray, mode: str = "nearest", cval: float = 0.0) -> np.ndarray:
        """Resample a crop-grid array (a predicted mask) back onto the source grid."""
        array = np.asarray(array)
        if tuple(array.shape) != tuple(self.shape):
            raise InvalidInputError(f"array of shape {array.shape} is not on the crop grid {self.shape}", path="array")
        spacing = tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
        return resample_to_reference(Volume(array, spacing, self.affine), self.source_affine, self.source_shape, mode, cval)


def hecktor_cube(
    volume: Volume, box_ras: Sequence[Sequence[float]], size: int = 144, spacing: float = 1.0
) -> GridCrop:
    """Seed 004: the ``size``-voxel cube at ``spacing`` mm centred on the HECKTOR bounding box.

    The cube has canonical axes (D = superior, H = posterior, W = left); apply it to the CT
    (``cval=-1024``), PET (``cval=0``) and label (``mode="nearest"``) of a case; ``invert`` maps a
    prediction back onto the source grid.

    Args:
        volume: Source Volume (its affine and shape define the source grid).
        box_ras: ``((x0, y0, z0), (x1, y1, z1))`` corners of the HECKTOR box in RAS+ mm
            (HECKTOR's csv is in ITK/LPS mm: negate x and y first).
        size: Cube size in voxels (144).
        spacing: Voxel size in mm (1.0).

    Returns:
        The :class:`GridCrop`.

    Raises:
        InvalidInputError: If the cube does not overlap the image (names ``box_ras``).
    """
    lo, hi = (np.asarray(c, dtype=np.float64) for c in box_ras)
    center = (lo + hi) / 2.0
    rot = np.zeros((3, 3))
    rot[0, 2], rot[1, 1], rot[2, 0] = -spacing, -spacing, spacing
    affine = np.eye(4)
    affine[:3, :3] = rot
    affine[:3, 3] = center - rot @ np.full(3, (size - 1) / 2.0)
    # Overlap check: cube corners in source index space vs the source extent.
    corners = np.array([[d, h, w, 1.0] for d in (0, size - 1) for h in (0, size - 1) for w in (0, size - 1)])
    idx = (np.linalg.inv(volume.affine) @ affine @ corners.T)[:3]
    shape = np.array(volume.shape[:3], dtype=np.float64)
    if np.any(idx.max(axis=1) < -0.5) or np.any(idx.min(axis=1) > shape - 0.5):
        raise InvalidInputError(
            f"the {size * spacing:g} mm cube around {tuple(center)} lies outside the image", path="box_ras"
        )
    return GridCrop(affine, (size, size, size), volume.affine.copy(), tuple(volume.shape))
