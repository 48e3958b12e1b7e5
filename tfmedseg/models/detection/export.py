"""Moved to :func:`tfmedseg.export.savedmodel.export_detector` (one export mechanism, ``tf.Module``,
for segmentation and detection). Kept so that older imports keep working."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["export_detector"]


def export_detector(model: Any, path: str | os.PathLike, **kwargs: Any) -> str:
    """See :func:`tfmedseg.export.savedmodel.export_detector`."""
    from tfmedseg.export.savedmodel import export_detector as _export

    return _export(model, path, **kwargs)
