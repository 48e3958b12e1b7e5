"""Inference: sliding window, slice-wise 2D/2.5D prediction, post-processing, decision fusion."""

from tfmedseg._lazy import lazy_attributes

_LAZY = {
    "WeightedVote": "tfmedseg.inference.fusion",
    "build_decision_fusion": "tfmedseg.inference.fusion",
    "decision_fusion_predict": "tfmedseg.inference.fusion",
    "fuse_majority_vote": "tfmedseg.inference.fusion",
    "fuse_mean_probability": "tfmedseg.inference.fusion",
    "normalized_weights": "tfmedseg.inference.fusion",
    "train_decision_fusion": "tfmedseg.inference.fusion",
    "combine_labels": "tfmedseg.inference.postprocess",
    "drop_low_confidence_components": "tfmedseg.inference.postprocess",
    "fill_holes": "tfmedseg.inference.postprocess",
    "filter_liver_slices": "tfmedseg.inference.postprocess",
    "largest_connected_component": "tfmedseg.inference.postprocess",
    "remove_small_components": "tfmedseg.inference.postprocess",
    "restrict_to_mask": "tfmedseg.inference.postprocess",
    "compute_importance_map": "tfmedseg.inference.sliding_window",
    "dense_window_starts": "tfmedseg.inference.sliding_window",
    "flip_tta_predictor": "tfmedseg.inference.sliding_window",
    "make_predictor": "tfmedseg.inference.sliding_window",
    "sliding_window_inference": "tfmedseg.inference.sliding_window",
    "paste_crop": "tfmedseg.inference.slices",
    "predict_slices": "tfmedseg.inference.slices",
    "resize_to_shape": "tfmedseg.inference.slices",
    "slice_stack": "tfmedseg.inference.slices",
}

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


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
