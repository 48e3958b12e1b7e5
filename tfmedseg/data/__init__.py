"""tf.data pipelines: 2.5D stacks, 3D slabs, 2D slices, 3D patches, detection samples; sampling orders.

See :mod:`~tfmedseg.data.pipelines` (segmentation), :mod:`~tfmedseg.data.detection` (seed 001),
:mod:`~tfmedseg.data.sampling` (epoch orders), :mod:`~tfmedseg.data.extract` (numpy extractors)
and :mod:`~tfmedseg.data.distribute` (tf.distribute helpers).
"""

from tfmedseg.data.detection import DETECTION_KEYS, DetectionSample, detection_dataset, pad_instances
from tfmedseg.data.distribute import distribute_dataset, global_batch_size, pipeline_options
from tfmedseg.data.pipelines import build_dataset, patch3d_dataset, slab3d_dataset, slice2d_dataset, stack25d_dataset
from tfmedseg.data.sampling import ORDERS
from tfmedseg.data.source import CaseArrays, as_case_arrays, cases_from_cache

__all__ = [
    "DETECTION_KEYS", "DetectionSample", "detection_dataset", "pad_instances",
    "distribute_dataset", "global_batch_size", "pipeline_options",
    "build_dataset", "patch3d_dataset", "slab3d_dataset", "slice2d_dataset", "stack25d_dataset",
    "ORDERS", "CaseArrays", "as_case_arrays", "cases_from_cache",
]
