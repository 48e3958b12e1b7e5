"""Atomic writes: a file or a directory appears under its final name only when complete.

Every writer in :mod:`tfmedseg.io` goes through these two helpers, so an interrupted run never
leaves a partial NIfTI, DICOM file or half-written series behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from tfmedseg.errors import InvalidInputError

__all__ = ["atomic_file", "atomic_dir", "commit_dir"]


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary name beside ``path``; rename it to ``path`` when the block succeeds.

    Args:
        path: Final file path; its parent directories are created.
        suffix: Suffix of the temporary name (``".nii.gz"``: some writers choose the format by it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike, overwrite: bool = False, prefix: str = ".tmp-") -> Iterator[Path]:
    """Yield a staging directory beside ``out_dir``; it becomes ``out_dir`` when the block succeeds
    (:func:`commit_dir`) and is removed otherwise."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir.parent))
    try:
        yield tmp
        commit_dir(tmp, out_dir, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def commit_dir(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Move a completed temporary directory ``tmp`` into place as ``out_dir`` (atomic rename).

    Raises:
        InvalidInputError: ``out_dir`` exists as a file or a non-empty directory and not ``overwrite``.
    """
    if out_dir.exists():
        if not out_dir.is_dir():
            if not overwrite:
                raise InvalidInputError("output path exists and is not a directory", path=out_dir)
            out_dir.unlink()
            os.replace(tmp, out_dir)
            return
        if any(out_dir.iterdir()):
            if not overwrite:
                raise InvalidInputError("output directory exists and is not empty (pass overwrite=True)", path=out_dir)
            trash = Path(tempfile.mkdtemp(prefix=".tmp-old-", dir=out_dir.parent))
            os.replace(out_dir, trash / "old")
            os.replace(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
            return
        out_dir.rmdir()
    os.replace(tmp, out_dir)
