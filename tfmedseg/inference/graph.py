"""In-graph scan -> label-map pipeline for the raw-scan serving signature.

Everything here is TensorFlow ops only, so it lives inside the exported SavedModel and TF Serving
runs it: intensity mapping, in-plane resize, 2.5D stacks / 3D slabs / 3D windows, batched model
calls, resize back, argmax or threshold, and the largest 3D connected component of chosen labels
(label propagation with 3x3x3 max pooling until it converges).

Shapes: a scan is ``[D, H, W]`` float32 in raw units (HU for CT) on the canonical grid
(:mod:`tfmedseg.io.volume`); the output label map is ``[D, H, W]`` uint8 on the same grid.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tfmedseg.inference.spec import CascadeConfig, IntensitySpec, ServingSpec

__all__ = [
    "apply_intensity",
    "predict_volume_probabilities",
    "probabilities_to_labels",
    "connected_component_ids",
    "largest_component",
    "drop_low_peak_components",
    "mask_bounding_box",
    "liver_slice_range",
    "segment_volume",
    "segment_cascade",
]


def apply_intensity(x: tf.Tensor, spec: IntensitySpec) -> tf.Tensor:
    """Map raw intensities to network inputs as the model was trained (any shape, float32)."""
    x = tf.cast(x, tf.float32)
    if spec.kind == "clip_scale":
        x = tf.clip_by_value(x, spec.low, spec.high)
        return spec.out_low + (x - spec.low) * ((spec.out_high - spec.out_low) / (spec.high - spec.low))
    if spec.kind == "zscore":
        mean = tf.reduce_mean(x)
        std = tf.math.reduce_std(x)
        return (x - mean) / tf.maximum(std, 1e-6)
    return x


def _resize_slices(x: tf.Tensor, size: tf.Tensor | tuple[int, int]) -> tf.Tensor:
    """Bilinear resize of ``[N, H, W, C]`` to ``size`` (no-op when already that size)."""
    return tf.image.resize(x, size, method="bilinear")


def _batched(predict: Callable[[tf.Tensor], tf.Tensor], inputs: tf.Tensor, batch_size: int) -> tf.Tensor:
    """Run ``predict`` on ``inputs`` ``[N, ...]`` in chunks of ``batch_size`` (N need not divide)."""
    n = tf.shape(inputs)[0]
    n_batches = (n + batch_size - 1) // batch_size
    pad = n_batches * batch_size - n
    padded = tf.pad(inputs, tf.concat([[[0, pad]], tf.zeros([tf.rank(inputs) - 1, 2], tf.int32)], axis=0))
    chunks = tf.reshape(padded, tf.concat([[n_batches, batch_size], tf.shape(inputs)[1:]], axis=0))
    first = predict(chunks[0])
    out = tf.TensorArray(first.dtype, size=n_batches, element_shape=first.shape)
    out = out.write(0, first)

    def body(i, acc):
        return i + 1, acc.write(i, predict(chunks[i]))

    _, out = tf.while_loop(lambda i, _: i < n_batches, body, [tf.constant(1), out])
    stacked = out.stack()
    merged = tf.reshape(stacked, tf.concat([[n_batches * batch_size], tf.shape(stacked)[2:]], axis=0))
    return merged[:n]


def _batched_rows(fn: Callable[[tf.Tensor], tf.Tensor], rows: tf.Tensor, batch_size: int) -> tf.Tensor:
    """``fn`` on ``rows`` (int32 ``[N]``, N >= 1) in chunks of ``batch_size``, outputs concatenated.

    The last chunk is filled up with copies of the last row (their outputs are dropped), so every
    call sees a full batch; ``fn(chunk)`` returns ``[batch_size * q, ...]`` for a fixed q.
    """
    n = tf.shape(rows)[0]
    n_batches = (n + batch_size - 1) // batch_size
    padded = tf.concat([rows, tf.fill([n_batches * batch_size - n], rows[-1])], axis=0)
    first = fn(padded[:batch_size])
    per_row = tf.shape(first)[0] // batch_size
    out = tf.TensorArray(first.dtype, size=n_batches, element_shape=first.shape)
    out = out.write(0, first)

    def body(i, acc):
        return i + 1, acc.write(i, fn(padded[i * batch_size: (i + 1) * batch_size]))

    _, out = tf.while_loop(lambda i, _: i < n_batches, body, [tf.constant(1), out])
    stacked = out.concat()
    return stacked[: n * per_row]


def predict_volume_probabilities(predict: Callable[[tf.Tensor], tf.Tensor], volume: tf.Tensor, spec: ServingSpec,
                                 slice_range: tuple[tf.Tensor, tf.Tensor] | None = None) -> tf.Tensor:
    """Class probabilities ``[D, H, W, C]`` of a preprocessed volume ``[D, H, W]``.

    Args:
        predict: The model's forward pass on a batch (``[B, h, w, k]`` for 2D/2.5D,
            ``[B, k, h, w, 1]`` for 3D slabs, ``[B, d, h, w, 1]`` for 3D patches).
        volume: Intensity-mapped volume ``[D, H, W]`` float32.
        spec: The model's serving spec.
        slice_range: Optional ``(lo, hi)`` (int32 scalars): predict only the output slices
            ``lo <= z < hi`` (slice modes; the slabs covering them, cut from the whole volume so
            each keeps its context) and return 0 for every other slice. Those slices' values equal
            the values of a whole-volume call. None: every slice.
    """
    shape = tf.shape(volume)
    depth, height, width = shape[0], shape[1], shape[2]
    size = spec.input_size
    if spec.mode in ("2d", "2.5d", "3d_slab"):
        k, o = spec.context_slices, spec.output_slices
        r = (k - o) // 2
        n = (depth + o - 1) // o
        # Resize every slice once (the same values as resizing each stack's channels), then cut the
        # stacks / slabs of one batch at a time: nothing of size [n, k, H, W] is ever held.
        small = volume if size is None else _resize_slices(volume[..., None], size)[..., 0]  # [D, h, w]
        padded = tf.pad(small, [[r, n * o - depth + r], [0, 0], [0, 0]])
        first, last = tf.constant(0), n
        if slice_range is not None:
            lo = tf.clip_by_value(tf.cast(slice_range[0], tf.int32), 0, depth)
            hi = tf.clip_by_value(tf.cast(slice_range[1], tf.int32), lo, depth)
            # At least one chunk is computed (static shapes downstream); it is zeroed below when empty.
            first = tf.minimum(lo // o, n - 1)
            last = tf.maximum((hi + o - 1) // o, first + 1)
        m = last - first

        def run(chunks: tf.Tensor) -> tf.Tensor:
            frames = tf.gather(padded, chunks[:, None] * o + tf.range(k)[None, :])  # [B, k, h, w]
            if spec.mode == "3d_slab":
                probs = predict(frames[..., None])  # [B, o, h, w, C]
                probs = tf.reshape(probs, tf.concat([[-1], tf.shape(probs)[2:]], axis=0))  # [B * o, h, w, C]
            else:
                probs = predict(tf.transpose(frames, [0, 2, 3, 1]))  # [B, h, w, C]
            return probs if size is None else _resize_slices(probs, [height, width])

        probs = _batched_rows(run, first + tf.range(m), spec.batch_size)  # [m * o, H, W, C]
        if slice_range is None:
            return probs[:depth]
        z = first * o + tf.range(m * o)
        keep = tf.logical_and(z >= lo, z < hi)
        probs = tf.where(keep[:, None, None, None], probs, tf.zeros_like(probs))
        probs = tf.pad(probs, [[first * o, (n - last) * o], [0, 0], [0, 0], [0, 0]])
        return probs[:depth]
    # 3d_patch: zero-pad to whole windows, cut into non-overlapping blocks, reassemble.
    pd, ph, pw = spec.patch_size
    nd, nh, nw = (depth + pd - 1) // pd, (height + ph - 1) // ph, (width + pw - 1) // pw
    padded = tf.pad(volume, [[0, nd * pd - depth], [0, nh * ph - height], [0, nw * pw - width]])
    blocks = tf.reshape(padded, [nd, pd, nh, ph, nw, pw])
    blocks = tf.transpose(blocks, [0, 2, 4, 1, 3, 5])
    blocks = tf.reshape(blocks, [nd * nh * nw, pd, ph, pw, 1])
    probs = _batched(predict, blocks, spec.batch_size)  # [N, pd, ph, pw, C]
    channels = tf.shape(probs)[-1]
    probs = tf.reshape(probs, [nd, nh, nw, pd, ph, pw, channels])
    probs = tf.transpose(probs, [0, 3, 1, 4, 2, 5, 6])
    probs = tf.reshape(probs, [nd * pd, nh * ph, nw * pw, channels])
    return probs[:depth, :height, :width]


def probabilities_to_labels(probs: tf.Tensor, threshold: float = 0.5) -> tf.Tensor:
    """``[..., C]`` probabilities -> uint8 labels: argmax for C > 1, ``p > threshold`` for C == 1."""
    if probs.shape[-1] == 1:
        return tf.cast(probs[..., 0] > threshold, tf.uint8)
    return tf.cast(tf.argmax(probs, axis=-1), tf.uint8)


def _neighbourhood_max(x: tf.Tensor) -> tf.Tensor:
    """Maximum over each voxel's 3x3x3 neighbourhood (itself included) of an int ``[D, H, W]`` tensor,
    zero outside; separable, so exact for integers (no float rounding of large ids)."""
    p = tf.pad(x, [[1, 1], [0, 0], [0, 0]])
    x = tf.maximum(tf.maximum(p[:-2], p[1:-1]), p[2:])
    p = tf.pad(x, [[0, 0], [1, 1], [0, 0]])
    x = tf.maximum(tf.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    p = tf.pad(x, [[0, 0], [0, 0], [1, 1]])
    return tf.maximum(tf.maximum(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])


def connected_component_ids(mask: tf.Tensor) -> tf.Tensor:
    """26-connected component ids of a boolean ``[D, H, W]`` mask (in-graph; int32, 0 = background).

    Every foreground voxel starts with its own 1-based flat index as id. Each round spreads the
    largest id over the 3x3x3 neighbourhood (restricted to the foreground) and then jumps: a voxel
    takes the id currently held by the voxel its id points to. Ids only ever travel inside a
    component and grow, so every component ends with its largest flat index; the jumps make long
    components converge in far fewer rounds than plain propagation (one round per voxel of path).
    """
    mask = tf.cast(mask, tf.bool)
    size = tf.size(mask)
    zeros = tf.zeros(tf.shape(mask), tf.int32)
    ids = tf.where(mask, tf.reshape(tf.range(1, size + 1, dtype=tf.int32), tf.shape(mask)), zeros)

    def step(current):
        spread = tf.where(mask, _neighbourhood_max(current), zeros)
        table = tf.concat([[0], tf.reshape(spread, [-1])], axis=0)  # table[k] = id now held by voxel k - 1
        jumped = tf.reshape(tf.gather(table, tf.reshape(spread, [-1])), tf.shape(mask))
        return tf.maximum(spread, jumped)

    def cond(current, previous):
        return tf.reduce_any(tf.not_equal(current, previous))

    def body(current, _):
        return step(current), current

    final, _ = tf.while_loop(cond, body, (step(ids), ids), maximum_iterations=size)
    return final


def mask_bounding_box(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(start, stop)`` int32 ``[3]`` of the smallest box holding every True voxel of a ``[D, H, W]``
    mask (``stop`` exclusive); ``start == stop == 0`` for an empty mask."""
    mask = tf.cast(mask, tf.bool)
    starts, stops = [], []
    for axis in range(3):
        other = [a for a in range(3) if a != axis]
        hit = tf.where(tf.reduce_any(mask, axis=other))[:, 0]
        any_hit = tf.size(hit) > 0
        starts.append(tf.cond(any_hit, lambda h=hit: tf.cast(h[0], tf.int32), lambda: tf.constant(0)))
        stops.append(tf.cond(any_hit, lambda h=hit: tf.cast(h[-1], tf.int32) + 1, lambda: tf.constant(0)))
    return tf.stack(starts), tf.stack(stops)


def _in_box(fn: Callable[..., tf.Tensor], mask: tf.Tensor, *others: tf.Tensor) -> tf.Tensor:
    """``fn(mask, *others)`` evaluated on the mask's bounding box only and zero-padded back.

    Exact for functions whose result is False outside the mask and depends only on the mask's
    voxels and their neighbours (connected components): nothing connects across the empty margin.
    """
    mask = tf.cast(mask, tf.bool)
    start, stop = mask_bounding_box(mask)
    size = stop - start
    cut = [tf.slice(t, start, size) for t in (mask,) + others]
    inner = fn(*cut)
    shape = tf.shape(mask)
    return tf.pad(inner, tf.stack([start, shape - stop], axis=1))


def largest_component(mask: tf.Tensor) -> tf.Tensor:
    """Keep the largest 26-connected component of a boolean ``[D, H, W]`` mask (in-graph; computed on
    the mask's bounding box)."""
    return _in_box(_largest_component, mask)


def _largest_component(mask: tf.Tensor) -> tf.Tensor:
    final = connected_component_ids(mask)
    values = tf.boolean_mask(final, mask)
    unique, _, counts = tf.unique_with_counts(values)
    best = tf.cond(tf.size(unique) > 0, lambda: tf.gather(unique, tf.argmax(counts)), lambda: tf.constant(-1))
    return tf.logical_and(mask, tf.equal(final, best))


def drop_low_peak_components(mask: tf.Tensor, probability: tf.Tensor, threshold: float) -> tf.Tensor:
    """Drop 26-connected components of ``mask`` whose maximum ``probability`` is below ``threshold``
    (in-graph; computed on the mask's bounding box)."""
    return _in_box(lambda m, p: _drop_low_peak(m, p, threshold), mask, probability)


def _drop_low_peak(mask: tf.Tensor, probability: tf.Tensor, threshold: float) -> tf.Tensor:
    ids = tf.boolean_mask(connected_component_ids(mask), mask)
    unique, index = tf.unique(ids)
    peak = tf.math.unsorted_segment_max(tf.boolean_mask(probability, mask), index, tf.size(unique))
    keep = tf.gather(peak, index) >= threshold
    return tf.scatter_nd(tf.where(mask), keep, tf.shape(mask, out_type=tf.int64))


def liver_slice_range(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(lo, hi)`` int32: the axial slices ``lo <= z < hi`` holding any voxel of a ``[D, H, W]`` mask
    (``0, 0`` when empty): where the seed-002 tumour stage runs."""
    start, stop = mask_bounding_box(mask)
    return start[0], stop[0]


def segment_volume(predict: Callable[[tf.Tensor], tf.Tensor], scan: tf.Tensor, spec: ServingSpec) -> tuple[tf.Tensor, tf.Tensor]:
    """Raw scan ``[D, H, W]`` -> (labels ``[D, H, W]`` uint8, probabilities ``[D, H, W, C]`` float32)."""
    volume = apply_intensity(scan, spec.intensity)
    probs = predict_volume_probabilities(predict, volume, spec)
    labels = probabilities_to_labels(probs, spec.threshold)
    for label in spec.largest_component_labels:
        # Voxels of ``label`` outside its largest component (and, for a lower label of a nested
        # cascade such as liver=1 / tumour=2, nothing else) fall back to background.
        keep = largest_component(tf.equal(labels, label))
        labels = tf.where(tf.logical_and(tf.equal(labels, label), tf.logical_not(keep)), tf.zeros_like(labels), labels)
    return labels, probs


def segment_cascade(
    liver_predict: Callable[[tf.Tensor], tf.Tensor],
    tumour_predict: Callable[[tf.Tensor], tf.Tensor],
    scan: tf.Tensor,
    liver_spec: ServingSpec,
    tumour_spec: ServingSpec,
    cascade: CascadeConfig = CascadeConfig(),
) -> tf.Tensor:
    """Seed-002 liver-then-tumour cascade in-graph: raw scan ``[D, H, W]`` -> labels 0/1/2 uint8.

    The same steps as :func:`tfmedseg.inference.cascade.predict_cascade` (largest liver component,
    tumour input = CT combined with the liver, tumour stage on the liver's slices only, low-peak
    tumour components dropped, tumour inside the liver), so a served cascade and the host-side one
    agree. Connected components run on the bounding box of their mask; only the foreground
    probability of each stage is kept (``[D, H, W]`` float32, not ``[D, H, W, 2]``).
    """
    unit = apply_intensity(scan, liver_spec.intensity)
    liver_p = predict_volume_probabilities(_foreground(liver_predict), unit, liver_spec)[..., 0]
    liver = largest_component(liver_p > cascade.liver_threshold)
    liver_f = tf.cast(liver, tf.float32)
    combined = unit * liver_f if cascade.combination == "mask" else unit + liver_f
    tumour_p = predict_volume_probabilities(_foreground(tumour_predict), combined, tumour_spec,
                                            slice_range=liver_slice_range(liver))[..., 0]
    tumour = drop_low_peak_components(tumour_p > cascade.tumour_threshold, tf.clip_by_value(tumour_p, 0.0, 1.0),
                                      cascade.tumour_component_threshold)
    tumour = tf.logical_and(tumour, liver)
    return tf.cast(liver, tf.uint8) + tf.cast(tumour, tf.uint8)


def _foreground(predict: Callable[[tf.Tensor], tf.Tensor]) -> Callable[[tf.Tensor], tf.Tensor]:
    """``predict`` keeping only the last (foreground) channel: ``[..., C] -> [..., 1]``; the resize back
    to the scan's size then moves one channel instead of C."""
    return lambda x: predict(x)[..., -1:]
