"""Evaluation metrics: overlap, surface distances in mm, LiTS lesion detection, instances, Keras Dice.

Every host metric is a pure ``compute_*(y_pred, y, ...)`` function on numpy arrays (tensors are
converted) with MONAI argument names; see ``docs/metrics.md`` for the definitions and the
conventions for empty masks.
"""

from tfmedseg.metrics.instances import (
    binary_scores,
    box_iou,
    compute_box_jaccard,
    compute_confusion_scores,
    compute_instance_metrics,
    compute_metastasis_detection,
    compute_patient_metastasis,
    match_instances,
)
from tfmedseg.metrics.lesions import (
    DETECTION_CRITERIA,
    SIZE_GROUPS,
    LesionMatch,
    compute_dice_by_lesion_size,
    compute_lesion_detection,
    lesion_detection_counts,
    lesion_detection_summary,
    lesion_size_group,
    match_lesions,
)
from tfmedseg.metrics.overlap import (
    compute_dice,
    compute_global_dice,
    compute_iou,
    compute_overlap_counts,
    compute_rvd,
    compute_voe,
)
from tfmedseg.metrics.surface import (
    LITS_LARGE,
    compute_assd,
    compute_hausdorff_distance,
    compute_hd95,
    compute_mssd,
    compute_surface_distances,
)

__all__ = [
    "DETECTION_CRITERIA",
    "DiceMetric",
    "LITS_LARGE",
    "LesionMatch",
    "SIZE_GROUPS",
    "binary_scores",
    "box_iou",
    "compute_assd",
    "compute_box_jaccard",
    "compute_confusion_scores",
    "compute_dice",
    "compute_dice_by_lesion_size",
    "compute_global_dice",
    "compute_hausdorff_distance",
    "compute_hd95",
    "compute_instance_metrics",
    "compute_iou",
    "compute_lesion_detection",
    "compute_metastasis_detection",
    "compute_mssd",
    "compute_overlap_counts",
    "compute_patient_metastasis",
    "compute_rvd",
    "compute_surface_distances",
    "compute_voe",
    "lesion_detection_counts",
    "lesion_detection_summary",
    "lesion_size_group",
    "match_instances",
    "match_lesions",
]


def __getattr__(name: str):
    # DiceMetric needs Keras (and so TensorFlow); load it only when asked for, so that the host
    # metrics stay importable in light-weight evaluation scripts.
    if name == "DiceMetric":
        from tfmedseg.metrics.keras_metrics import DiceMetric

        return DiceMetric
    raise AttributeError(f"module 'tfmedseg.metrics' has no attribute {name!r}")
