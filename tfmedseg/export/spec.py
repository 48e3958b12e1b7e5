"""Moved to :mod:`tfmedseg.inference.spec` (re-exported: ``tfmedseg.export.spec.ServingSpec`` keeps working)."""

from tfmedseg.inference.spec import (  # noqa: F401
    INPUT_MODES,
    INTENSITY_KINDS,
    CascadeConfig,
    IntensitySpec,
    ServingSpec,
)
