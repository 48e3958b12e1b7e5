"""One-pass 2D/3D geometric augmentation: affine + elastic composed into one sampling grid.

:class:`RandomGeometric` draws, per sample, a rotation, shear, scaling, flips and a translation
(one forward matrix), optionally adds a smooth elastic displacement field drawn on a coarse
control grid (cubic B-spline, for a fraction of the samples), and resamples image, label and
instance masks **once** from the composed grid: multi-linear for images, nearest for labels and
masks. Keras' own ``RandomElasticTransform`` blurs a full-resolution noise field for the whole
batch and resamples separately from the affine layers; it ran at 0.01-0.05x albumentations'
speed (``perf-baselines.md`` section 5), which is why this layer exists.
"""

from __future__ import annotations

import itertools
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmedseg.augment import _grid
from tfmedseg.augment._common import (
    IMAGE_KEY,
    LABEL_KEY,
    RandomAugmentLayer,
    _unpack,
    _bernoulli,
    _check_probability,
    _check_range,
    _uniform,
)
from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.config import attribute_config

__all__ = ["RandomGeometric", "BOXES_KEY", "MASKS_KEY", "NUM_VALID_KEY"]

BOXES_KEY = "boxes"
MASKS_KEY = "masks"
NUM_VALID_KEY = "num_valid"
_INTERPOLATIONS = ("linear", "nearest")


def _add_to(image: tf.Tensor, addend: tf.Tensor) -> tf.Tensor:
    """``image + addend`` in the image's dtype (as ``_common._add_xla``)."""
    return image + tf.cast(addend, image.dtype)


def _per_axis(name: str, value: Any, n: int) -> tuple[float, ...]:
    """A non-negative scalar or an ``n``-tuple of non-negative numbers -> ``n`` floats."""
    values = (value,) * n if isinstance(value, (int, float)) else tuple(value)
    if len(values) != n:
        raise ConfigError(f"expected a number or {n} numbers (one per axis), got {value!r}", path=name)
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"expected numbers, got {value!r}", path=name) from None
    if any(v < 0 for v in values):
        raise ConfigError(f"magnitudes must be >= 0, got {value!r}", path=name)
    return values


@keras.saving.register_keras_serializable(package="tfmedseg")
class RandomGeometric(RandomAugmentLayer):
    """Random affine + elastic transform of 2D or 3D batches, resampled once per sample.

    Every sample gets its own transform; the same transform hits every image channel, the label
    and the instance masks. With all magnitudes zero the layer is exactly the identity.

    The forward map of a source pixel ``q`` (centred on the array centre ``c``) is
    ``p = Flip . R . Shear . Scale (q - c) + t + c``; the image is sampled at
    ``q = c + F^-1 (p - c - t) + e(p)`` where ``e`` is the elastic displacement (source pixels).
    Rotation ``+theta`` in the plane of array axes ``(a, b)`` turns axis ``b`` towards axis
    ``a``; in 2D (rows down, columns right) that is counter-clockwise on screen:
    ``+90`` degrees equals ``np.rot90`` on ``(H, W)``.

    Seeds: seed 002 Table 3.1 (rotation +-15 deg, shear +-10 deg, translation +-16 px, scaling
    +-12.5 %, flipping, elastic on 10 % of images); seed 004 (rotation + mirroring); seed 001
    (affine). See :func:`tfmedseg.augment.presets.build_preset`.

    Args:
        ndim: 2 (``[B, H, W, C]``) or 3 (``[B, D, H, W, C]``).
        rotation: Maximum absolute angle in degrees, uniform in ``[-r, r]``. 3D: a number (same
            for the three angles) or ``(about_D, about_H, about_W)``; ``about_D`` rotates in the
            axial ``(H, W)`` plane. A zero disables that axis.
        rotation_probability: Fraction of samples that are rotated (the others get angle 0).
        shear: Maximum absolute shear angle in degrees for every off-diagonal entry (``2`` in
            2D, ``6`` in 3D), ``tan`` of a uniform angle.
        translation: Maximum absolute shift in pixels, a number or one per spatial axis
            (per in-plane axis when ``in_plane``).
        scale: ``(low, high)`` zoom factor range (``> 0``; ``(0.875, 1.125)`` = +-12.5 %).
        anisotropic_scale: Draw one zoom factor per axis instead of one per sample.
        flip_axes: Spatial axes (``0 .. ndim - 1``, array order) each flipped with
            ``flip_probability``.
        flip_probability: Probability of flipping each axis in ``flip_axes``.
        elastic_probability: Fraction of samples that get an elastic field (e.g. ``0.1``).
        elastic_magnitude: Maximum absolute control-point displacement in pixels (uniform per
            control point and axis); the B-spline field stays below it.
        elastic_control_points: Control points per axis over the whole array (``>= 2``). An
            object's volume changes by about the field's divergence: a magnitude below ~0.3x the
            control spacing ``(size - 1) / (points - 1)`` keeps volumes within a few percent.
        fill_value: Image value outside the source, a number or ``"min"`` (each sample's and
            channel's minimum).
        label_fill_value: Label class outside the source (integer).
        one_hot_label: The label is one-hot ``[B, *S, K]``; its fill is ``one_hot(label_fill_value)``.
        interpolation: ``"linear"`` (multi-linear) or ``"nearest"`` for images.
        instance_keys: Per-instance keys ``[B, N, ...]`` reordered with boxes when instances
            that left the image are dropped.
        in_plane: 3D only: one 2D transform per sample, the same for every slice along D
            (rotation in the ``(H, W)`` plane, in-plane shear / scale / shift / elastic field;
            nothing moves along D). For slabs and 2.5D stacks stored as 3D. Flips still use
            ``flip_axes`` (array axes).
        jit_compile: Compile the grid + resampling with XLA: vectorised computations for the
            padded image, the image's sampling index and the label's nearest index, then the gathers (a
            ``[2, C]`` row window per leading corner for linear, one lookup for nearest), the
            elastic field only in batches that drew one. Several times faster on the CPU; the
            same samples as the graph path. Random draws stay outside (graph ops, the same on
            both paths).
        seed: int or None.
        **kwargs: ``keras.layers.Layer`` arguments.

    Inputs:
        ``{"image": float [B, *S, C], "label": int [B, *S] / [B, *S, 1] or one-hot [B, *S, K],
        "boxes": float [B, N, 2 ndim] (lo..., hi...) pixels, hi exclusive, "masks": [B, N, *S],
        "num_valid": int [B], "classes": [B, N], ...}`` (only ``image`` is required), a tuple
        ``(image, label, ...)`` or an image tensor. Detection entries at index ``>= num_valid``
        are padding. After the transform, a mask-backed box is recomputed from its
        transformed mask; a box-only entry (empty mask or no ``masks``) is the clipped box
        enclosing its transformed corners (affine part only: the elastic field is ignored for
        box-only entries). Instances that leave the image are dropped: the valid ones are
        moved to the front and the padding is zeroed; ``num_valid`` is updated.

    Example:
        >>> aug = RandomGeometric(ndim=2, rotation=15, shear=10, translation=16,
        ...                       scale=(0.875, 1.125), elastic_probability=0.1,
        ...                       elastic_magnitude=8, seed=1)
        >>> out = aug({"image": tf.zeros([2, 32, 32, 1]),
        ...            "label": tf.zeros([2, 32, 32], tf.int32)}, training=True)
        >>> out["image"].shape
        TensorShape([2, 32, 32, 1])
    """

    def __init__(
        self,
        ndim: int = 2,
        rotation: float | tuple = 0.0,
        rotation_probability: float = 1.0,
        shear: float = 0.0,
        translation: float | tuple = 0.0,
        scale: tuple[float, float] = (1.0, 1.0),
        anisotropic_scale: bool = False,
        flip_axes: tuple[int, ...] = (),
        flip_probability: float = 0.5,
        elastic_probability: float = 0.0,
        elastic_magnitude: float = 0.0,
        elastic_control_points: int = 7,
        fill_value: float | str = 0.0,
        label_fill_value: int = 0,
        one_hot_label: bool = False,
        interpolation: str = "linear",
        instance_keys: tuple[str, ...] = ("classes",),
        in_plane: bool = False,
        jit_compile: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        if ndim not in (2, 3):
            raise ConfigError(f"ndim must be one of (2, 3), got {ndim!r}", path="ndim")
        self.ndim = ndim
        if in_plane and ndim != 3:
            raise ConfigError(f"in_plane applies to ndim=3 only, got ndim={ndim}", path="in_plane")
        self.in_plane = bool(in_plane)
        nt = 2 if self.in_plane else ndim  # dimension of the drawn transform
        if nt == 2 and not isinstance(rotation, (int, float)):
            rotation = _per_axis("rotation", rotation, 1)[0]
        self.rotation = _per_axis("rotation", rotation, 1 if nt == 2 else 3)
        self.rotation_probability = _check_probability("rotation_probability", rotation_probability)
        self.shear = _per_axis("shear", shear, 1)[0]
        if self.shear >= 90.0:
            raise ConfigError(f"shear must be < 90 degrees, got {shear}", path="shear")
        self.translation = _per_axis("translation", translation, nt)
        self.scale = _check_range("scale", scale, allow_scalar=False)
        if self.scale[0] <= 0:
            raise ConfigError(f"zoom factors must be > 0, got {scale!r}", path="scale")
        self.anisotropic_scale = bool(anisotropic_scale)
        self.flip_axes = tuple(int(a) for a in flip_axes)
        if any(a not in range(ndim) for a in self.flip_axes) or len(set(self.flip_axes)) != len(self.flip_axes):
            raise ConfigError(f"flip_axes must be distinct values in {tuple(range(ndim))}, got {flip_axes!r}", path="flip_axes")
        self.flip_probability = _check_probability("flip_probability", flip_probability)
        self.elastic_probability = _check_probability("elastic_probability", elastic_probability)
        self.elastic_magnitude = _per_axis("elastic_magnitude", elastic_magnitude, 1)[0]
        if int(elastic_control_points) < 2:
            raise ConfigError(f"need >= 2 control points per axis, got {elastic_control_points}", path="elastic_control_points")
        self.elastic_control_points = int(elastic_control_points)
        if isinstance(fill_value, str) and fill_value != "min":
            raise ConfigError(f"fill_value must be a number or 'min', got {fill_value!r}", path="fill_value")
        self.fill_value = fill_value if isinstance(fill_value, str) else float(fill_value)
        self.label_fill_value = int(label_fill_value)
        self.one_hot_label = bool(one_hot_label)
        if interpolation not in _INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}", path="interpolation")
        self.interpolation = interpolation
        self.instance_keys = tuple(instance_keys)
        self.jit_compile = bool(jit_compile)
        # The XLA core (see _resample_xla) and the elastic field.
        self._core_pad = tf.function(self._pad_image, jit_compile=True)
        self._core_index = tf.function(self._sampling_index, jit_compile=True)
        self._core_nearest = tf.function(self._nearest_index, jit_compile=True)
        self._core_image = tf.function(self._gather_image, jit_compile=True)
        self._core_labels = tf.function(self._gather_labels, jit_compile=True)
        self._core_field = tf.function(self._field, jit_compile=True)

    @property
    def _has_elastic(self) -> bool:
        return self.elastic_probability > 0.0 and self.elastic_magnitude > 0.0

    def _draw(self, seed: tf.Tensor, batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
        """Forward matrices ``[B, n, n]``, translations ``[B, n]`` and elastic control points."""
        n = 2 if self.in_plane else self.ndim
        rmax = tf.constant([_grid.radians(r) for r in self.rotation], tf.float32)
        angles = _uniform(seed, 0, [batch, len(self.rotation)], -1.0, 1.0) * rmax
        angles = angles * _bernoulli(seed, 7, [batch, 1], self.rotation_probability)
        forward = _grid._rotation(angles, n)
        if self.shear > 0:
            smax = _grid.radians(self.shear)
            shear = _grid._shear(_uniform(seed, 1, [batch, n * (n - 1)], -smax, smax), n)
            forward = _grid.small_matmul(forward, shear)
        if self.scale != (1.0, 1.0):
            zoom = _uniform(seed, 2, [batch, n if self.anisotropic_scale else 1], *self.scale)
            forward = forward * (zoom * tf.ones([1, n]))[:, None, :]  # F . diag(zoom)
        tmax = tf.constant(self.translation, tf.float32)
        translation = _uniform(seed, 4, [batch, n], -1.0, 1.0) * tmax
        ctrl = None
        if self._has_elastic:
            shape = [batch, n] + [self.elastic_control_points] * n
            on = _bernoulli(seed, 5, [batch], self.elastic_probability)
            ctrl = _uniform(seed, 6, shape, -self.elastic_magnitude, self.elastic_magnitude)
            ctrl = ctrl * tf.reshape(on, [-1] + [1] * (n + 1))
        if self.in_plane:  # embed the (H, W) transform: D row / column of the identity, no D shift
            forward = tf.pad(forward, [[0, 0], [1, 0], [1, 0]]) + tf.constant(np.diag([1.0, 0, 0]), tf.float32)
            translation = tf.pad(translation, [[0, 0], [1, 0]])
            if ctrl is not None:
                ctrl = tf.pad(ctrl, [[0, 0], [1, 0], [0, 0], [0, 0]])  # zero D displacement
                ctrl = tf.tile(ctrl[:, :, None], [1, 1, self.elastic_control_points, 1, 1])
        n = self.ndim
        if self.flip_axes:
            axes = np.zeros([n], np.float32)
            axes[list(self.flip_axes)] = 1.0
            flips = _bernoulli(seed, 3, [batch, n], self.flip_probability) * axes
            forward = forward * (1.0 - 2.0 * flips)[:, :, None]  # diag(sign) . F
        return forward, translation, ctrl

    def _spatial(self, x: tf.Tensor) -> list:
        return [x.shape[1 + a] if x.shape[1 + a] is not None else tf.shape(x)[1 + a] for a in range(self.ndim)]

    def _field(self, ctrl: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
        """The elastic displacement ``[B, n, *S]`` (pixels) for arrays shaped like ``like`` (XLA-compiled)."""
        return tf.stack(_grid.elastic_field(ctrl, self._spatial(like)), axis=1)

    def _image_fill(self, image: tf.Tensor):
        """``(float image, fill)``: the fill a number or the ``[B, C]`` per-sample minima."""
        work = image if image.dtype.is_floating else tf.cast(image, tf.float32)
        fill = tf.reduce_min(work, axis=list(range(1, self.ndim + 1))) if self.fill_value == "min" else self.fill_value
        return work, fill

    def _label_fill(self, label: tf.Tensor):
        """The label class outside the source: an int, or ``[B, K]`` one-hot rows."""
        if not self.one_hot_label:
            return self.label_fill_value
        return tf.tile(tf.one_hot(self.label_fill_value, label.shape[-1], dtype=label.dtype)[None], [tf.shape(label)[0], 1])

    # The XLA core: five computations, so that XLA cannot fuse the index arithmetic into the gather
    # loops (see _grid.PaddedIndex) and so that TensorFlow's executor can run independent ones side by
    # side: the padded image (needs no random draw: runs while the draw and the noise are computed),
    # the image's sampling index (base and fractions), the label / mask index (nearest), the image
    # gathers and, beside them, the label / mask lookups. The nearest index is a computation of its own so
    # that it runs beside the image's index or gathers, off the path the image waits on.

    def _pad_image(self, image):
        return _grid.padded_table(*self._image_fill(image))

    def _index(self, forward, translation, field, image, nearest: bool) -> "_grid.PaddedIndex":
        spatial = self._spatial(image)
        fields = None if field is None else tf.unstack(field, axis=1)
        return _grid.PaddedIndex(_grid.sampling_coords(forward, translation, spatial, fields), spatial, nearest=nearest)

    def _sampling_index(self, forward, translation, field, image):
        """``(base, frac)`` of the linear image sampling. ``field``: ``[B, n, *S]`` elastic displacement or None;
        ``image`` only gives the shape."""
        index = self._index(forward, translation, field, image, nearest=False)
        return index.base, index.frac

    def _nearest_index(self, forward, translation, field, image):
        """The nearest index (``_grid.PaddedIndex.nearest``) of labels, masks and nearest-interpolated images."""
        return self._index(forward, translation, field, image, nearest=True).nearest

    def _gather_image(self, table_or_image, base, frac, nearest, addend, image_dtype):
        if self.interpolation == "linear":
            out = _grid.gather_linear(table_or_image, base, frac)
        else:
            work, fill = self._image_fill(table_or_image)
            out = _grid.gather_nearest(work, nearest, fill)
        if not image_dtype.is_floating:
            out = tf.cast(tf.round(out), image_dtype)
        return out if addend is None else _add_to(out, addend)

    def _gather_labels(self, label, masks, nearest):
        return (None if label is None else _grid.gather_nearest(label, nearest, self._label_fill(label)),
                None if masks is None else _grid.gather_nearest(masks, nearest, 0))

    def _resample_xla(self, forward, translation, ctrl, image, label, masks, addend=None) -> tuple:
        """Image, label and masks resampled by the XLA core over the whole batch (no batch halves, no
        concatenation). The elastic field is computed once, and only in batches where a sample drew
        one (81 % of batches of 16 at p = 0.1 draw none)."""
        linear = self.interpolation == "linear"
        table = self._core_pad(image) if linear else image
        need_nearest = label is not None or masks is not None or not linear

        def resample(field):
            base = frac = nearest = None
            if linear:
                base, frac = self._core_index(forward, translation, field, image)
            if need_nearest:
                nearest = self._core_nearest(forward, translation, field, image)
            out = self._core_image(table, base, frac, nearest, addend, image_dtype=image.dtype)
            if label is None and masks is None:
                return out, None, None
            return (out, *self._core_labels(label, masks, nearest))

        if ctrl is None:
            return resample(None)
        return tf.cond(tf.reduce_any(tf.not_equal(ctrl, 0.0)),
                       lambda: resample(self._core_field(ctrl, image)), lambda: resample(None))

    def _resample_all(self, forward, translation, ctrl, image, label, masks):
        """Composes the grid and resamples image, label ``[B, *S, L]`` and masks ``[B, *S, N]`` (graph ops)."""
        spatial = self._spatial(image)
        field = _grid.elastic_field(ctrl, spatial) if ctrl is not None else None
        return self._resample_from(forward, translation, field, image, label, masks, spatial)

    def _resample_from(self, forward, translation, field, image, label, masks, spatial):
        coords = _grid.sampling_coords(forward, translation, spatial, field)
        work, fill = self._image_fill(image)
        index = _grid.SamplingIndex(coords, spatial)
        out = index.linear(work, fill) if self.interpolation == "linear" else index.nearest(work, fill)
        if not image.dtype.is_floating:
            out = tf.cast(tf.round(out), image.dtype)
        return (out, None if label is None else index.nearest(label, self._label_fill(label)),
                None if masks is None else index.nearest(masks, 0))

    def _call_with_noise(self, inputs, noise) -> Any:
        """This layer, then ``noise`` (a :class:`~tfmedseg.augment.intensity.RandomGaussianNoise`), with the
        noise added inside the image resampling (one pass and one XLA launch less than the two layers one
        after the other; the same draws). Used by :class:`~tfmedseg.augment.presets.AugmentationPipeline`."""
        data, pack = _unpack(inputs)
        seed = self._next_seed()
        return pack(self._augment(data, seed, image_addend=noise._noise(data, noise._next_seed())))

    def _augment(self, data: dict, seed: tf.Tensor, image_addend: tf.Tensor | None = None) -> dict:
        n = self.ndim
        image = data[IMAGE_KEY]
        if image.shape.rank != n + 2:
            raise InvalidInputError(
                f"expected a rank-{n + 2} image [B, {'D, ' if n == 3 else ''}H, W, C] for ndim={n}, "
                f"got shape {tuple(image.shape)}",
                path=IMAGE_KEY,
            )
        if image.shape[-1] is None:
            raise InvalidInputError("the channel axis of the image must have a static size", path=IMAGE_KEY)
        batch = tf.shape(image)[0]
        forward, translation, ctrl = self._draw(seed, batch)

        label = data.get(LABEL_KEY)
        squeeze_label = label is not None and label.shape.rank == n + 1
        if squeeze_label:
            label = label[..., None]
        if label is not None and label.shape.rank != n + 2:
            raise InvalidInputError(f"expected a label [B, *S] or [B, *S, K], got shape {tuple(label.shape)}", path=LABEL_KEY)
        masks = data.get(MASKS_KEY)
        mask_dtype = None
        if masks is not None:
            if masks.shape.rank != n + 2:
                raise InvalidInputError(f"expected instance masks [B, N, *S], got shape {tuple(masks.shape)}", path=MASKS_KEY)
            mask_dtype = masks.dtype
            masks_in = tf.cast(masks, tf.uint8) if masks.dtype == tf.bool else masks
            masks = tf.transpose(masks_in, [0] + list(range(2, n + 2)) + [1])
        if self.jit_compile and _grid.xla_gather_available():
            image_out, label_out, masks_out = self._resample_xla(forward, translation, ctrl, image, label, masks,
                                                                 image_addend)
        else:
            image_out, label_out, masks_out = self._resample_all(forward, translation, ctrl, image, label, masks)
            if image_addend is not None:
                image_out = _add_to(image_out, image_addend)

        out = dict(data)
        out[IMAGE_KEY] = image_out
        if label_out is not None:
            out[LABEL_KEY] = label_out[..., 0] if squeeze_label else label_out
        if masks_out is not None:
            masks_out = tf.transpose(masks_out, [0, n + 1] + list(range(1, n + 1)))
            if mask_dtype == tf.bool:
                masks_out = tf.cast(masks_out, tf.bool)
            out[MASKS_KEY] = masks_out
        if BOXES_KEY in data:
            masks_before = None if masks is None else masks_in
            out = self._update_instances(out, masks_before, forward, translation, tf.shape(image)[1 : n + 1])
        return out

    def _update_instances(self, out: dict, masks_before, forward, translation, spatial) -> dict:
        """Recomputes boxes, drops instances that left the image and compacts the padding."""
        n = self.ndim
        boxes = tf.cast(out[BOXES_KEY], tf.float32)
        if boxes.shape.rank != 3 or boxes.shape[-1] != 2 * n:
            raise InvalidInputError(f"expected boxes [B, N, {2 * n}], got shape {tuple(boxes.shape)}", path=BOXES_KEY)
        size = tf.cast(spatial, tf.float32)
        num = tf.shape(boxes)[1]
        count = out.get(NUM_VALID_KEY)
        index = tf.range(num)[None, :]
        valid = index < tf.cast(count, tf.int32)[:, None] if count is not None else tf.ones_like(boxes[..., 0], tf.bool)

        # box-only entries: clipped box enclosing the forward-mapped corners (pixel edges at +-0.5)
        lo, hi = boxes[..., :n] - 0.5, boxes[..., n:] - 0.5
        corners = [tf.stack([hi[..., a] if c else lo[..., a] for a, c in enumerate(bits)], -1)
                   for bits in itertools.product((0, 1), repeat=n)]
        corners = tf.stack(corners, axis=2)  # [B, N, 2^n, n]
        flat = tf.reshape(corners, [tf.shape(boxes)[0], -1, n])
        moved = _grid.forward_points(forward, translation, flat, [spatial[a] for a in range(n)])
        moved = tf.reshape(moved, tf.shape(corners))
        c_lo = tf.clip_by_value(tf.reduce_min(moved, axis=2) + 0.5, 0.0, size)
        c_hi = tf.clip_by_value(tf.reduce_max(moved, axis=2) + 0.5, 0.0, size)
        new_boxes = tf.concat([c_lo, c_hi], -1)
        visible = tf.reduce_all(c_hi > c_lo, axis=-1)

        if masks_before is not None:
            masks = tf.cast(out[MASKS_KEY], tf.bool)  # [B, N, *S]
            had_mask = tf.reduce_any(masks_before != 0, axis=list(range(2, n + 2)))  # [B, N]
            m_lo, m_hi, m_any = [], [], None
            for a in range(n):
                other = [2 + b for b in range(n) if b != a]
                prof = tf.cast(tf.reduce_any(masks, axis=other), tf.int32)  # [B, N, S_a]
                m_lo.append(tf.argmax(prof, axis=-1, output_type=tf.int32))
                m_hi.append(spatial[a] - tf.argmax(tf.reverse(prof, [-1]), axis=-1, output_type=tf.int32))
                m_any = tf.reduce_any(prof > 0, axis=-1)
            mask_boxes = tf.cast(tf.stack(m_lo + m_hi, -1), tf.float32)
            new_boxes = tf.where(had_mask[..., None], mask_boxes, new_boxes)
            visible = tf.where(had_mask, m_any, visible)
        keep = tf.logical_and(valid, visible)

        order = tf.argsort(tf.cast(tf.logical_not(keep), tf.int32), axis=1, stable=True)
        new_count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
        slot_used = index < new_count[:, None]

        def compact(x):
            x = tf.gather(x, order, batch_dims=1)
            mask = tf.reshape(slot_used, tf.concat([tf.shape(slot_used), tf.ones([x.shape.rank - 2], tf.int32)], 0))
            return tf.where(mask, x, tf.zeros_like(x))

        out[BOXES_KEY] = tf.cast(compact(new_boxes), out[BOXES_KEY].dtype)
        if MASKS_KEY in out:
            out[MASKS_KEY] = compact(out[MASKS_KEY])
        for key in self.instance_keys:
            if key in out:
                out[key] = compact(out[key])
        if count is not None:
            out[NUM_VALID_KEY] = tf.cast(new_count, count.dtype)
        return out

    def get_config(self) -> dict:
        return attribute_config(
            super().get_config(), self, "ndim", "rotation_probability", "shear", "anisotropic_scale", "flip_probability",
            "elastic_probability", "elastic_magnitude", "elastic_control_points", "fill_value", "label_fill_value",
            "one_hot_label", "interpolation", "in_plane", "jit_compile",
            rotation=self.rotation[0] if len(self.rotation) == 1 else list(self.rotation), translation=list(self.translation),
            scale=list(self.scale), flip_axes=list(self.flip_axes), instance_keys=list(self.instance_keys))
