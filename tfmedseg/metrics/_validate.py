"""Moved to :mod:`tfmedseg.validation` (kept so that older imports keep working)."""

from tfmedseg.validation import (  # noqa: F401
    as_array,
    as_binary,
    check_finite,
    check_same_shape,
    check_spacing,
)
