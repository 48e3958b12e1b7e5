"""Seed-004 inference and evaluation on one PET/CT cube, and the NIfTI submission file.

* :func:`predict_cube`: GTVt probability of a cube by sliding windows of the training patch size,
  each window z-scored per channel before the network (as in training), Gaussian blending;
* :func:`petct_case_metrics`: DSC at threshold 0.5 (seed 004 L64-66), precision, recall
  (HECKTOR 2021's secondary metrics) and HD95 in mm (HECKTOR 2022's), on the cube grid;
* :func:`write_prediction_nifti`: the binary mask resampled (nearest) from the cube back onto the
  original CT grid, zero outside the cube (the challenge's submission format: CT grid, inside the
  bounding box), written with the CT's header.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfmedseg.inference.sliding_window import make_predictor, sliding_window_inference
from tfmedseg.metrics.overlap import compute_dice, compute_overlap_counts
from tfmedseg.metrics.surface import compute_hd95
from tfmedseg.preprocessing.petct import ZSCORE_EPSILON

__all__ = ["petct_case_metrics", "predict_cube", "write_prediction_nifti"]


def predict_cube(model: Any, image: np.ndarray, patch_size: Sequence[int], overlap: float = 0.5,
                 sw_batch_size: int = 1) -> np.ndarray:
    """GTVt probability ``[D, H, W]`` float32 of a cube ``[D, H, W, 2]`` (CT in [-1, 1], PET SUV).

    Args:
        model: Keras network ``[n, *patch, 2] -> [n, *patch, 2]`` softmax (channel 1 = GTVt).
        image: The cube from :func:`~tfmedseg.preprocessing.petct.petct_cube`.
        patch_size: Window (the training patch; the whole cube for the seed's setting).
        overlap: Window overlap (0.5).
        sw_batch_size: Windows per network call.
    """
    import tensorflow as tf

    network = make_predictor(model)

    def predictor(windows):
        mean, var = tf.nn.moments(windows, axes=[1, 2, 3], keepdims=True)
        return network((windows - mean) / (tf.sqrt(var) + ZSCORE_EPSILON))

    probs = sliding_window_inference(np.asarray(image, np.float32)[None], tuple(patch_size), sw_batch_size,
                                     tf.function(predictor, reduce_retracing=True), overlap=overlap)
    return probs[0, ..., 1]


def petct_case_metrics(probability: np.ndarray, label: np.ndarray, spacing: Sequence[float],
                       threshold: float = 0.5) -> dict[str, float]:
    """``dsc``, ``precision``, ``recall``, ``hd95_mm`` of ``probability > threshold`` against ``label``.

    Precision and recall are NaN when undefined (nothing predicted / no GTVt); HD95 is NaN when
    either mask is empty. Also returns the voxel counts ``tp``, ``pred``, ``ref`` for pooling.
    """
    pred = np.asarray(probability) > threshold
    ref = np.asarray(label) > 0
    counts = compute_overlap_counts(pred, ref)
    tp, n_pred, n_ref = counts["intersection"], counts["pred"], counts["ref"]
    hd95 = compute_hd95(pred, ref, spacing=tuple(spacing)) if pred.any() and ref.any() else float("nan")
    return {"dsc": compute_dice(pred, ref), "precision": tp / n_pred if n_pred else float("nan"),
            "recall": tp / n_ref if n_ref else float("nan"), "hd95_mm": float(hd95),
            "tp": int(tp), "pred": int(n_pred), "ref": int(n_ref)}


def write_prediction_nifti(mask: np.ndarray, crop, ct_volume, path: str | os.PathLike) -> Path:
    """Write a cube mask onto the CT grid (nearest, 0 outside the cube) with the CT's header.

    Args:
        mask: ``[D, H, W]`` binary mask on the cube grid.
        crop: The :class:`~tfmedseg.preprocessing.crop.GridCrop` of the cube.
        ct_volume: The case's CT :class:`~tfmedseg.io.volume.Volume` (source header and geometry).
        path: Output ``.nii.gz`` path.
    """
    from tfmedseg.io.nifti import write_nifti

    on_ct = crop.invert((np.asarray(mask) > 0).astype(np.uint8), mode="nearest", cval=0)
    return write_nifti(on_ct.astype(np.uint8), path, reference=ct_volume, dtype=np.uint8)
