"""Export: SavedModel in TF Serving's layout with named signatures, TFLite conversion, run-dir contract.

See :mod:`tfmedseg.export.savedmodel`, :mod:`tfmedseg.export.tflite`, :mod:`tfmedseg.export.run_dir`
and the command line ``python -m tfmedseg.export``.
"""

from tfmedseg.export.run_dir import load_for_export, save_for_export
from tfmedseg.inference.spec import IntensitySpec, ServingSpec

__all__ = ["IntensitySpec", "ServingSpec", "save_for_export", "load_for_export"]
