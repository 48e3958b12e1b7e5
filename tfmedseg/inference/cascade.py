"""Liver-then-tumour cascade inference (seed 002, Fig. 3.1), shared by experiments and ``predict``.

Stage 1 predicts liver probabilities slice by slice (2.5D stacks) or slab by slab (3D), keeps the
largest 3D connected component of the thresholded liver; stage 2 predicts tumour probabilities on
the CT combined with that liver mask (``"mask"``: CT x liver, ``"add"``: CT + liver) on the slices
that hold liver only (its training data are the liver's slices too; elsewhere the tumour
probability is 0), drops tumour components whose maximum probability is below a threshold and
keeps tumour inside the liver.

Slicing, in-plane resizing (e.g. 512 -> 256 and back) and batching are the same TF code the
exported raw-scan signature runs (:func:`tfmedseg.inference.graph.predict_volume_probabilities`), so
a served model and this function give the same answer. Components are 26-connected (3x3x3), as
in the in-graph post-processing.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from tfmedseg.inference.graph import predict_volume_probabilities
from tfmedseg.inference.postprocess import (
    combine_labels,
    drop_low_confidence_components,
    largest_connected_component,
    remove_small_components,
    restrict_to_mask,
)
from tfmedseg.inference.spec import CascadeConfig, ServingSpec
from tfmedseg.preprocessing.cascade import combine
from tfmedseg.preprocessing.intensity import hu_to_unit

__all__ = ["CascadeConfig", "CascadeStage", "CascadeResult", "predict_stage", "predict_cascade", "liver_slices"]


@dataclasses.dataclass
class CascadeStage:
    """One stage: a batch predictor (``[B, ...] -> [B, ..., 2]`` probabilities) and its input spec
    (mode ``"2.5d"`` or ``"3d_slab"``, ``context_slices``, ``output_slices``, ``input_size``)."""

    predict: Callable[[tf.Tensor], tf.Tensor]
    spec: ServingSpec


@dataclasses.dataclass
class CascadeResult:
    """Cascade outputs on the CT grid: ``labels`` uint8 0/1/2 ``[D, H, W]``, foreground probabilities
    ``liver_probability`` and ``tumour_probability`` float32 ``[D, H, W]``."""

    labels: np.ndarray
    liver_probability: np.ndarray
    tumour_probability: np.ndarray


def predict_stage(stage: CascadeStage, volume: np.ndarray, slice_range: tuple[int, int] | None = None) -> np.ndarray:
    """Foreground probability ``[D, H, W]`` of one stage on a preprocessed volume ``[D, H, W]``
    (only on the slices ``lo <= z < hi`` of ``slice_range``, 0 elsewhere, when given)."""
    rng = None if slice_range is None else tuple(tf.constant(int(v), tf.int32) for v in slice_range)
    probs = predict_volume_probabilities(lambda x: stage.predict(x)[..., -1:], tf.constant(volume, tf.float32), stage.spec,
                                         slice_range=rng)
    return probs.numpy()[..., 0]


def liver_slices(liver_mask: np.ndarray) -> tuple[int, int]:
    """``(lo, hi)``: the axial slices holding liver (``(0, 0)`` for an empty mask)."""
    zs = np.flatnonzero(np.asarray(liver_mask).reshape(len(liver_mask), -1).any(axis=1))
    return (int(zs[0]), int(zs[-1]) + 1) if zs.size else (0, 0)


def predict_cascade(
    ct_hu: np.ndarray,
    liver: CascadeStage,
    tumour: CascadeStage,
    cascade: CascadeConfig = CascadeConfig(),
    *,
    hu_window: tuple[float, float] = (-200.0, 200.0),
    reference_liver: np.ndarray | None = None,
) -> CascadeResult:
    """Run the two-stage cascade on a CT volume in HU.

    Args:
        ct_hu: ``[D, H, W]`` CT in HU on the canonical grid.
        liver: Liver stage.
        tumour: Tumour stage (trained on the combined input).
        cascade: Combination (:func:`tfmedseg.preprocessing.cascade.combine`) and thresholds
            (:class:`~tfmedseg.inference.spec.CascadeConfig`).
        hu_window: Seed 002 clamp, mapped to [0, 1].
        reference_liver: A given liver mask ``[D, H, W]`` (the reference): stage 1 is skipped and
            stage 2 runs on the CT combined with it (seed 002's stage-2 evaluation, Sec. 4.1.1, L1012);
            ``liver_probability`` is then that mask.
    """
    unit = hu_to_unit(np.asarray(ct_hu, np.float32), *hu_window)
    if reference_liver is None:
        liver_p = predict_stage(liver, unit)
        liver_mask = largest_connected_component(liver_p > cascade.liver_threshold, connectivity=3)
    else:
        liver_mask = np.asarray(reference_liver).astype(bool)
        if liver_mask.shape != unit.shape:
            raise ValueError(f"reference_liver shape {liver_mask.shape} differs from the CT's {unit.shape}")
        liver_p = liver_mask.astype(np.float32)
    tumour_p = predict_stage(tumour, combine(unit, liver_mask.astype(np.float32), cascade.combination),
                             liver_slices(liver_mask))
    tumour_mask = tumour_p > cascade.tumour_threshold
    tumour_mask = drop_low_confidence_components(tumour_mask, np.clip(tumour_p, 0.0, 1.0),
                                                 cascade.tumour_component_threshold, connectivity=3)
    if cascade.min_tumour_voxels > 0:
        tumour_mask = remove_small_components(tumour_mask, cascade.min_tumour_voxels, connectivity=3)
    tumour_mask = restrict_to_mask(tumour_mask, liver_mask)
    return CascadeResult(combine_labels(liver_mask, tumour_mask), liver_p.astype(np.float32), tumour_p.astype(np.float32))
