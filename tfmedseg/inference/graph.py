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


def predict_volume_probabilities(predict: Callable[[tf.Tensor], tf.Tensor], volume: tf.Tensor, spec: ServingSpec) -> tf.Tensor:
    """Class probabilities ``[D, H, W, C]`` of a preprocessed volume ``[D, H, W]``.

    Args:
        predict: The model's forward pass on a batch (``[B, h, w, k]`` for 2D/2.5D,
            ``[B, k, h, w, 1]`` for 3D slabs, ``[B, d, h, w, 1]`` for 3D patches).
        volume: Intensity-mapped volume ``[D, H, W]`` float32.
        spec: The model's serving spec.
    """
    shape = tf.shape(volume)
    depth, height, width = shape[0], shape[1], shape[2]
    size = spec.input_size
    if spec.mode in ("2d", "2.5d", "3d_slab"):
        k, o = spec.context_slices, spec.output_slices
        r = (k - o) // 2
        n = (depth + o - 1) // o
        padded = tf.pad(volume, [[r, n * o - depth + r], [0, 0], [0, 0]])
        index = tf.range(n)[:, None] * o + tf.range(k)[None, :]  # [n, k]
        frames = tf.gather(padded, index)  # [n, k, H, W]
        if spec.mode == "3d_slab":
            slices = tf.reshape(frames, [n * k, height, width, 1])
            if size is not None:
                slices = _resize_slices(slices, size)
            inputs = tf.reshape(slices, tf.concat([[n, k], tf.shape(slices)[1:]], axis=0))  # [n, k, h, w, 1]
            probs = _batched(predict, inputs, spec.batch_size)  # [n, o, h, w, C]
            probs = tf.reshape(probs, tf.concat([[n * o], tf.shape(probs)[2:]], axis=0))
        else:
            inputs = tf.transpose(frames, [0, 2, 3, 1])  # [n, H, W, k]
            if size is not None:
                inputs = _resize_slices(inputs, size)
            probs = _batched(predict, inputs, spec.batch_size)  # [n, h, w, C]
        if size is not None:
            probs = _resize_slices(probs, [height, width])
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


def largest_component(mask: tf.Tensor) -> tf.Tensor:
    """Keep the largest 26-connected component of a boolean ``[D, H, W]`` mask (in-graph)."""
    mask = tf.cast(mask, tf.bool)
    final = connected_component_ids(mask)
    values = tf.boolean_mask(final, mask)
    unique, _, counts = tf.unique_with_counts(values)
    best = tf.cond(tf.size(unique) > 0, lambda: tf.gather(unique, tf.argmax(counts)), lambda: tf.constant(-1))
    return tf.logical_and(mask, tf.equal(final, best))


def drop_low_peak_components(mask: tf.Tensor, probability: tf.Tensor, threshold: float) -> tf.Tensor:
    """Drop 26-connected components of ``mask`` whose maximum ``probability`` is below ``threshold``."""
    mask = tf.cast(mask, tf.bool)
    ids = tf.boolean_mask(connected_component_ids(mask), mask)
    unique, index = tf.unique(ids)
    peak = tf.math.unsorted_segment_max(tf.boolean_mask(probability, mask), index, tf.size(unique))
    keep = tf.gather(peak, index) >= threshold
    return tf.scatter_nd(tf.where(mask), keep, tf.shape(mask, out_type=tf.int64))


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
    tumour input = CT combined with the liver, low-peak tumour components dropped, tumour inside the
    liver), so a served cascade and the host-side one agree.
    """
    unit = apply_intensity(scan, liver_spec.intensity)
    liver_p = predict_volume_probabilities(liver_predict, unit, liver_spec)[..., -1]
    liver = largest_component(liver_p > cascade.liver_threshold)
    liver_f = tf.cast(liver, tf.float32)
    combined = unit * liver_f if cascade.combination == "mask" else unit + liver_f
    tumour_p = predict_volume_probabilities(tumour_predict, combined, tumour_spec)[..., -1]
    tumour = drop_low_peak_components(tumour_p > cascade.tumour_threshold, tf.clip_by_value(tumour_p, 0.0, 1.0),
                                      cascade.tumour_component_threshold)
    tumour = tf.logical_and(tumour, liver)
    return tf.cast(liver, tf.uint8) + tf.cast(tumour, tf.uint8)
