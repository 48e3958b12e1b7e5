"""Inference: sliding window, slice-wise 2D/2.5D prediction, post-processing, decision fusion."""

from tfmedseg.inference.fusion import (
    WeightedVote,
    build_decision_fusion,
    decision_fusion_predict,
    fuse_majority_vote,
    fuse_mean_probability,
    normalized_weights,
    train_decision_fusion,
)
from tfmedseg.inference.postprocess import (
    combine_labels,
    drop_low_confidence_components,
    fill_holes,
    filter_liver_slices,
    largest_connected_component,
    remove_small_components,
    restrict_to_mask,
)
from tfmedseg.inference.sliding_window import (
    compute_importance_map,
    dense_window_starts,
    flip_tta_predictor,
    make_predictor,
    sliding_window_inference,
)
from tfmedseg.inference.slices import paste_crop, predict_slices, resize_to_shape, slice_stack

__all__ = [
    "WeightedVote",
    "build_decision_fusion",
    "combine_labels",
    "compute_importance_map",
    "decision_fusion_predict",
    "dense_window_starts",
    "drop_low_confidence_components",
    "fill_holes",
    "filter_liver_slices",
    "flip_tta_predictor",
    "fuse_majority_vote",
    "fuse_mean_probability",
    "largest_connected_component",
    "make_predictor",
    "normalized_weights",
    "paste_crop",
    "predict_slices",
    "remove_small_components",
    "resize_to_shape",
    "restrict_to_mask",
    "slice_stack",
    "sliding_window_inference",
    "train_decision_fusion",
]
