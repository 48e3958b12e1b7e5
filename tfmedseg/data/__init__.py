"""tf.data pipelines: 2.5D stacks, 3D slabs, 2D slices, 3D patches, detection samples; sampling orders.

See :mod:`~tfmedseg.data.pipelines` (segmentation), :mod:`~tfmedseg.data.detection` (seed 001),
:mod:`~tfmedseg.data.sampling` (epoch orders), :mod:`~tfmedseg.data.extract` (numpy extractors)
and :mod:`~tfmedseg.data.distribute` (tf.distribute helpers).
"""

from tfmedseg._lazy import lazy_attributes

_LAZY = {
    "DETECTION_KEYS": "tfmedseg.data.detection",
    "DetectionSample": "tfmedseg.data.detection",
    "detection_dataset": "tfmedseg.data.detection",
    "pad_instances": "tfmedseg.data.detection",
    "distribute_dataset": "tfmedseg.data.distribute",
    "global_batch_size": "tfmedseg.data.distribute",
    "pipeline_options": "tfmedseg.data.distribute",
    "build_dataset": "tfmedseg.data.pipelines",
    "patch3d_dataset": "tfmedseg.data.pipelines",
    "slab3d_dataset": "tfmedseg.data.pipelines",
    "slice2d_dataset": "tfmedseg.data.pipelines",
    "stack25d_dataset": "tfmedseg.data.pipelines",
    "ORDERS": "tfmedseg.data.sampling",
    "CaseArrays": "tfmedseg.data.source",
    "as_case_arrays": "tfmedseg.data.source",
    "cases_from_cache": "tfmedseg.data.source",
}

__all__ = [
    "DETECTION_KEYS", "DetectionSample", "detection_dataset", "pad_instances",
    "distribute_dataset", "global_batch_size", "pipeline_options",
    "build_dataset", "patch3d_dataset", "slab3d_dataset", "slice2d_dataset", "stack25d_dataset",
    "ORDERS", "CaseArrays", "as_case_arrays", "cases_from_cache",
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
