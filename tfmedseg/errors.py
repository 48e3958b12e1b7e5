"""User-facing exceptions of tfmedseg.

Every error a user can cause (a bad file, a wrong dataset layout, a bad config value, an input that
does not fit a model) is raised as one of these classes, never as a traceback from deep inside
TensorFlow, nibabel or pydicom. Each message names the file (or config key / argument) and the
cause, so the user can fix the input without reading our code.

Example:
    >>> from tfmedseg.errors import InvalidInputError
    >>> raise InvalidInputError("contains NaN voxels", path="case1/volume-1.nii")
    Traceback (most recent call last):
    ...
    tfmedseg.errors.InvalidInputError: case1/volume-1.nii: contains NaN voxels
"""

from __future__ import annotations

import os

__all__ = [
    "TfMedSegError",
    "InvalidInputError",
    "DatasetLayoutError",
    "ConfigError",
    "ModelBuildError",
    "ExportError",
    "ServingError",
]


class TfMedSegError(Exception):
    """Base class of every user-facing tfmedseg error.

    Args:
        message: What is wrong, as a rule the input broke (``"expected a 3-D volume, got shape
            (4, 5, 6, 2)"``).
        path: The file, directory or config key the error is about; it is put in front of the
            message so that it is always named.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InvalidInputError(TfMedSegError, ValueError):
    """An input file or array is unreadable, corrupt or has the wrong content (shape, values, NaN)."""


class DatasetLayoutError(TfMedSegError, FileNotFoundError):
    """A dataset directory does not follow its documented on-disk layout (missing or extra files)."""


class ConfigError(TfMedSegError, ValueError):
    """A configuration key or value is unknown or invalid; ``path`` names the key or the YAML file."""


class ModelBuildError(TfMedSegError, ValueError):
    """A model cannot be built from the given name, configuration or input shape."""


class ExportError(TfMedSegError, RuntimeError):
    """A model cannot be exported (SavedModel, TFLite) or an export directory is malformed."""


class ServingError(TfMedSegError, RuntimeError):
    """A serving request failed: bad request, unknown model, timeout or server error."""
