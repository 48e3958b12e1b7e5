"""Reading and writing ``.npz`` array bundles as plain numeric data.

Every ``.npz`` tfmedseg reads goes through :func:`load_npz`: object arrays are refused (loading
one would run code stored in the file), only numeric/boolean arrays are read, and every
problem becomes one :class:`~tfmedseg.errors.InvalidInputError` naming the file and the key.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.io._atomic import atomic_file

__all__ = ["load_npz", "save_npz"]

_ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float


def load_npz(path: str | os.PathLike, required: Iterable[str] = (), *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, numeric only (object arrays are refused).

    Args:
        path: The ``.npz`` file.
        required: Keys that must be present.
        max_bytes: Refuse arrays whose total declared size exceeds this (default: no limit beyond
            the file's own content).

    Raises:
        InvalidInputError: Missing or corrupt file, a missing key, an object / string array.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError("file does not exist", path=path)
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            total = 0
            for key in data.files:
                try:
                    array = data[key]
                except ValueError as exc:  # object arrays are refused
                    raise InvalidInputError(f"array {key!r} is not numeric ({exc}); only numeric arrays are read", path=path) from exc
                if array.dtype.kind not in _ALLOWED_KINDS:
                    raise InvalidInputError(f"array {key!r} has dtype {array.dtype}; expected a numeric array", path=path)
                total += array.nbytes
                if max_bytes is not None and total > max_bytes:
                    raise InvalidInputError(f"arrays larger than the limit of {max_bytes} bytes", path=path)
                out[key] = array
    except InvalidInputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InvalidInputError(f"not a readable .npz file ({type(exc).__name__}: {exc})", path=path) from exc
    missing = [key for key in required if key not in out]
    if missing:
        raise InvalidInputError(f"missing array(s) {missing} (found {sorted(out)})", path=path)
    return out


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], *, compress: bool = True) -> Path:
    """Write ``arrays`` to ``path`` atomically (numeric arrays only)."""
    path = Path(path)
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    for key, value in arrays.items():
        if value.dtype.kind not in _ALLOWED_KINDS:
            raise InvalidInputError(f"array {key!r} has dtype {value.dtype}; only numeric arrays are written", path=path)
    with atomic_file(path, ".npz") as tmp:
        (np.savez_compressed if compress else np.savez)(tmp, **arrays)
    return path
