"""Paths named inside a dataset's own files stay inside the dataset.

An annotation file may name other files (a lesion mask PNG, an image). A crafted or careless
entry (``../../etc/passwd``, ``/home/other/secret.png``, a symbolic link pointing outside) must not
make the loader read files outside the dataset root: :func:`resolve_inside` resolves the name
against its folder and refuses anything that leaves ``root``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from tfmedseg.errors import InvalidInputError

__all__ = ["resolve_inside"]


def resolve_inside(name: object, folder: str | os.PathLike, root: str | os.PathLike, *, source: str | os.PathLike, what: str = "path") -> Path:
    """``folder / name`` resolved (symbolic links followed), refused when it leaves ``root``.

    Args:
        name: The relative path as written in the dataset file.
        folder: The folder it is relative to (the annotation file's folder).
        root: The dataset root nothing may leave.
        source: The file that names the path (for the error message).
        what: What the path is (``"lesion mask"``), for the message.

    Raises:
        InvalidInputError: Not a non-empty string, absolute, or resolving outside ``root``.
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise InvalidInputError(f"{what} must be a non-empty relative path string, got {name!r}", path=source)
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise InvalidInputError(f"{what} {name!r} is an absolute path; paths in a dataset are relative to it", path=source)
    root_resolved = Path(root).resolve()
    target = (Path(folder) / name).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise InvalidInputError(f"{what} {name!r} leaves the dataset root {root}; refusing to read it", path=source)
    return target
