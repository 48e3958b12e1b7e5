"""SavedModel of a seed-004 PET/CT network whose raw-scan signature crops, normalises and tiles in-graph.

Layout as :mod:`tfmedseg.export.savedmodel` (TF Serving ``<root>/<name>/<version>/`` with
``metadata.json``). Signatures:

``serving_default``  ``image`` float32 ``[B, d, h, w, 2]`` (z-scored CT, PET patch) -> ``probabilities``,
                     ``mask`` uint8 (argmax)
``segment_petct``    ``ct`` float32 ``[D, H, W]`` (HU) and ``pet`` float32 ``[D, H, W]`` (SUV), both on one
                     grid at the model's spacing (``metadata.json`` ``spacing_mm``; the client resamples,
                     as for every tfmedseg export), and ``box_start`` int32 ``[3]``: the voxel index of
                     the cube corner (the HECKTOR box) in that grid -> ``labels`` uint8 ``[D, H, W]``
                     (GTVt inside the cube, 0 outside) and ``probability`` float32 ``[S, S, S]`` on the
                     cube. In the graph: the cube is cut (padded with -1024 HU / SUV 0 where it leaves
                     the scan), CT clipped to [-1024, 1024] -> [-1, 1], the cube tiled into
                     non-overlapping windows of the training patch (the whole cube in the seed), each
                     window z-scored per channel, the network run window by window, GTVt at
                     probability > 0.5.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfmedseg.errors import ExportError
from tfmedseg.export.savedmodel import _write_export
from tfmedseg.preprocessing.petct import CT_CLIP_HU, ZSCORE_EPSILON

__all__ = ["PETCT_SIGNATURES", "PetCtServingModule", "export_petct_savedmodel"]

PETCT_SIGNATURES = ("serving_default", "segment_petct")


def _cut_cube(volume: tf.Tensor, start: tf.Tensor, size: int, pad_value: float) -> tf.Tensor:
    """``volume[start:start + size]`` per axis, padded with ``pad_value`` where it leaves the volume."""
    shape = tf.shape(volume)
    before = tf.maximum(-start, 0)
    after = tf.maximum(start + size - shape, 0)
    padded = tf.pad(volume, tf.stack([before, after], axis=1), constant_values=pad_value)
    return tf.slice(padded, start + before, [size, size, size])


class PetCtServingModule(tf.Module):
    """A ``tf.Module`` serving a two-channel (CT, PET) softmax network on HECKTOR cubes.

    Args:
        model: Keras network ``[B, p, p, p, 2] -> [B, p, p, p, 2]`` (channel 1 = GTVt).
        cube_size: Cube edge in voxels (144 in the seed); a multiple of the patch edge.
        threshold: GTVt probability threshold (0.5).
    """

    def __init__(self, model: Any, cube_size: int, threshold: float = 0.5):
        super().__init__(name="tfmedseg_petct_serving")
        self.model = model
        patch = tuple(int(v) for v in model.inputs[0].shape[1:4])
        if len(set(patch)) != 1 or cube_size % patch[0]:
            raise ExportError(f"the cube ({cube_size}) must be tiled by the cubic model patch {patch}", path="cube_size")
        p, n = patch[0], cube_size // patch[0]
        low, high = CT_CLIP_HU

        @tf.function(input_signature=[tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="image")])
        def serve(image):
            probs = tf.cast(model(image, training=False), tf.float32)
            return {"probabilities": probs, "mask": tf.cast(tf.argmax(probs, axis=-1), tf.uint8)}

        @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="ct"),
                                      tf.TensorSpec([None, None, None], tf.float32, name="pet"),
                                      tf.TensorSpec([3], tf.int32, name="box_start")])
        def segment_petct(ct, pet, box_start):
            tf.debugging.assert_equal(tf.shape(ct), tf.shape(pet), message="CT and PET must share one grid")
            ct_cube = (tf.clip_by_value(_cut_cube(ct, box_start, cube_size, low), low, high) - low) / (high - low) * 2.0 - 1.0
            pet_cube = _cut_cube(pet, box_start, cube_size, 0.0)
            cube = tf.stack([ct_cube, pet_cube], axis=-1)
            tiles = tf.reshape(cube, [n, p, n, p, n, p, 2])
            tiles = tf.reshape(tf.transpose(tiles, [0, 2, 4, 1, 3, 5, 6]), [n ** 3, p, p, p, 2])
            mean, var = tf.nn.moments(tiles, axes=[1, 2, 3], keepdims=True)
            tiles = (tiles - mean) / (tf.sqrt(var) + ZSCORE_EPSILON)
            probs = tf.map_fn(lambda t: tf.cast(model(t[None], training=False), tf.float32)[0, ..., 1], tiles,
                              fn_output_signature=tf.TensorSpec([p, p, p], tf.float32))
            probs = tf.reshape(tf.transpose(tf.reshape(probs, [n, n, n, p, p, p]), [0, 3, 1, 4, 2, 5]),
                               [cube_size] * 3)
            mask = tf.cast(probs > threshold, tf.uint8)
            shape = tf.shape(ct)
            lo = tf.clip_by_value(box_start, 0, shape)
            hi = tf.clip_by_value(box_start + cube_size, 0, shape)
            inner = tf.slice(mask, lo - box_start, hi - lo)
            labels = tf.pad(inner, tf.stack([lo, shape - hi], axis=1))
            return {"labels": labels, "probability": probs}

        self.serve = serve
        self.segment_petct = segment_petct

    def signatures(self) -> dict[str, Any]:
        return {"serving_default": self.serve.get_concrete_function(),
                "segment_petct": self.segment_petct.get_concrete_function()}


def export_petct_savedmodel(model: Any, export_dir: str | os.PathLike, *, cube_size: int, spacing_mm: float,
                            model_name: str, metadata: dict[str, Any] | None = None, threshold: float = 0.5,
                            overwrite: bool = False) -> Path:
    """Export ``model`` with :data:`PETCT_SIGNATURES` into ``export_dir`` (``.../<name>/<version>``).

    Raises:
        ExportError: A bad version directory, an existing export without ``overwrite``, a patch that
            does not tile the cube, or a tracing failure.
    """
    module = PetCtServingModule(model, int(cube_size), threshold)
    info = {"model_name": model_name, "cube_size": int(cube_size), "spacing_mm": float(spacing_mm),
            "threshold": float(threshold), "inputs": "ct (HU), pet (SUV) on one grid at spacing_mm, box_start",
            **(metadata or {})}
    return _write_export(module, module.signatures(), Path(export_dir), info, overwrite, model_name)
