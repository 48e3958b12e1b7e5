"""What the viewer may read: paths confined to ``--root``, directory listings, what a folder holds.

Every path a browser sends is relative to the root. :func:`resolve_under_root` refuses, with a
:class:`~tfmedseg.errors.InvalidInputError` naming the path:

* absolute paths (``/etc/passwd``, ``C:\\...``, ``\\\\server\\share``), NUL bytes;
* any ``..`` component (even one that would stay inside the root);
* a path that leaves the root through a symbolic link (the resolved path must lie under the
  resolved root);
* a path that does not exist.

Listings (:func:`list_directory`) show what can be opened: NIfTI files, folders of DICOM files,
finished experiment run directories (``summary.json`` or ``per_case.csv``) and plain folders;
entries whose symbolic link leaves the root are listed as refused, never followed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tfmedseg.errors import InvalidInputError

__all__ = ["resolve_under_root", "list_directory", "entry_kind", "is_run_directory", "relative_to_root", "NIFTI_SUFFIXES"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_DRIVE = re.compile(r"^[A-Za-z]:")
#: Files of a folder looked at to decide whether it holds DICOM (the reader checks every file).
_DICOM_PROBE_FILES = 8


def _is_inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_under_root(root: str | os.PathLike, relative: str, *, must_exist: bool = True) -> Path:
    """The real path of ``relative`` under ``root`` (symbolic links resolved), or a clear error.

    Args:
        root: The viewer's ``--root`` (need not be resolved).
        relative: A ``/``-separated path relative to ``root``; ``""`` or ``"."`` is the root itself.
        must_exist: Refuse a path that does not exist.

    Raises:
        InvalidInputError: Absolute path, ``..`` component, NUL byte, a symbolic link leaving the
            root, or a missing path; the message names ``relative``.
    """
    text = str(relative if relative is not None else "")
    shown = text or "."
    if "\x00" in text:
        raise InvalidInputError("path contains a NUL byte", path=repr(text))
    if text.startswith(("/", "\\")) or _DRIVE.match(text) or os.path.isabs(text):
        raise InvalidInputError("absolute paths are refused: give a path relative to the viewer's --root", path=shown)
    parts = [p for p in re.split(r"[\\/]+", text) if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidInputError("'..' is refused: paths must stay inside the viewer's --root", path=shown)
    real_root = Path(root).resolve()
    candidate = real_root.joinpath(*parts)
    real = candidate.resolve()
    if not _is_inside(real, real_root):
        raise InvalidInputError("refused: a symbolic link leads outside the viewer's --root", path=shown)
    if must_exist and not real.exists():
        raise InvalidInputError("does not exist under the viewer's --root", path=shown)
    return real


def relative_to_root(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """``path`` (under ``root``) as the ``/``-separated relative path the browser uses."""
    rel = Path(path).resolve().relative_to(Path(root).resolve())
    return "" if str(rel) == "." else rel.as_posix()


def is_run_directory(path: Path) -> bool:
    """A finished experiment run directory: ``summary.json`` or ``per_case.csv`` (``runner.write_tables``)."""
    return path.is_dir() and ((path / "summary.json").is_file() or (path / "per_case.csv").is_file())


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _holds_dicom(path: Path) -> bool:
    probed = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.name.lower().endswith(".dcm") or _has_dicom_magic(Path(entry.path)):
                    return True
                probed += 1
                if probed >= _DICOM_PROBE_FILES:
                    break
    except OSError:
        return False
    return False


def entry_kind(path: Path) -> str:
    """``"nifti"``, ``"dicom_file"`` (one DICOM file: a whole-body bone scan), ``"run"``, ``"dicom"``
    (a folder holding DICOM files), ``"dir"`` or ``"file"``."""
    if path.is_file():
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            return "nifti"
        return "dicom_file" if path.name.lower().endswith(".dcm") or _has_dicom_magic(path) else "file"
    if is_run_directory(path):
        return "run"
    if _holds_dicom(path):
        return "dicom"
    return "dir"


def list_directory(root: str | os.PathLike, relative: str, *, limit: int = 2000) -> dict:
    """The entries of a folder under ``root``: ``{"path", "parent", "entries": [{"name", "path", "kind"}]}``.

    Entries whose symbolic link leaves the root get ``"kind": "refused"``; hidden files are skipped.

    Raises:
        InvalidInputError: As :func:`resolve_under_root`, or the path is not a folder.
    """
    real_root = Path(root).resolve()
    folder = resolve_under_root(real_root, relative)
    if not folder.is_dir():
        raise InvalidInputError("is not a folder", path=relative or ".")
    here = relative_to_root(real_root, folder)
    entries = []
    for child in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
        if child.name.startswith("."):
            continue
        rel = f"{here}/{child.name}" if here else child.name
        real = child.resolve()
        if not _is_inside(real, real_root):
            entries.append({"name": child.name, "path": rel, "kind": "refused",
                            "note": "symbolic link leading outside the root"})
            continue
        entries.append({"name": child.name, "path": rel, "kind": entry_kind(real)})
        if len(entries) >= limit:
            break
    parent = None if not here else (str(Path(here).parent.as_posix()) if "/" in here else "")
    return {"path": here, "parent": parent, "kind": entry_kind(folder), "entries": entries}
