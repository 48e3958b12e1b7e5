"""Safe outputs: atomic writes, our own marker, stale staging cleanup, inputs never overwritten.

Every writer of tfmedseg goes through these helpers, so that

* a file or a directory appears under its final name only when complete (staged beside it and
  renamed);
* staging is visible (``<name>.tfmedseg-partial-<host>-<pid>-<random>``, never a hidden file that
  could keep patient data unnoticed) and a stale one left by a killed process (SIGKILL, power
  loss) of this host is removed by the next write into the same folder;
* outputs get the permissions of the user's umask, like any other tool (no forced 0600/0700);
* a directory we write carries :data:`OUTPUT_MARKER`, and ``overwrite`` replaces only a directory
  that carries it: a folder of someone else's files is never deleted;
* :func:`check_output_not_input` refuses an output that is, contains or sits inside an input.

The file half (staging names, stale-staging removal, :func:`atomic_file`) lives in the base-layer
module :mod:`tfmedseg.staging` (so that :mod:`tfmedseg.config` can use it) and is re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tfmedseg.errors import InvalidInputError
from tfmedseg.staging import STAGING_TAG, _host, atomic_file, clean_stale_staging, staging_path  # noqa: F401 (re-exported)

__all__ = [
    "atomic_file",
    "atomic_dir",
    "commit_dir",
    "OUTPUT_MARKER",
    "STAGING_TAG",
    "write_marker",
    "has_marker",
    "read_marker",
    "holds_provenance",
    "staging_path",
    "clean_stale_staging",
    "make_staging_dir",
    "check_output_not_input",
    "current_umask",
]

#: File written into every output directory of ours; ``overwrite`` only replaces such directories.
OUTPUT_MARKER = ".tfmedseg-output.json"


def current_umask() -> int:
    """The process umask (read from ``/proc`` where possible, so that no thread sees it change)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_staging_dir(final: str | os.PathLike) -> Path:
    """Create a staging directory beside ``final`` (parents created, stale staging removed)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(final.parent)
    tmp = staging_path(final)
    tmp.mkdir()  # mode 0o777 & ~umask
    return tmp


def write_marker(directory: str | os.PathLike, kind: str = "output", provenance: dict | None = None) -> Path:
    """Write :data:`OUTPUT_MARKER` (no patient data: tool, kind, version and, when given, the
    ``provenance`` of the output: model, input and options, :mod:`tfmedseg.io.provenance`) into ``directory``."""
    from tfmedseg import __version__

    marker = Path(directory) / OUTPUT_MARKER
    record: dict = {"written_by": "tfmedseg", "kind": kind, "version": __version__}
    if provenance is not None:
        record["provenance"] = provenance
    marker.write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    return marker


def read_marker(directory: str | os.PathLike) -> dict | None:
    """The contents of ``directory``'s :data:`OUTPUT_MARKER`, or None when it is absent or unreadable."""
    try:
        record = json.loads((Path(directory) / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def holds_provenance(directory: str | os.PathLike, provenance: dict) -> bool:
    """True when ``directory`` is a real directory (not a symlink) whose marker records exactly
    ``provenance`` (:func:`atomic_dir`'s ``provenance``): it holds the output of this very job."""
    directory = Path(directory)
    return (not directory.is_symlink() and directory.is_dir()
            and (read_marker(directory) or {}).get("provenance") == provenance)


def has_marker(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds our :data:`OUTPUT_MARKER` (it was written by tfmedseg)."""
    return (Path(directory) / OUTPUT_MARKER).is_file()


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike, overwrite: bool = False, prefix: str = "", *, kind: str = "output",
               marker: bool = True, update: bool = False, ours: Callable[[Path], bool] | None = None,
               provenance: dict | None = None, option: str | None = None) -> Iterator[Path]:
    """Yield a staging directory beside ``out_dir``; it becomes ``out_dir`` when the block succeeds
    (:func:`commit_dir`, with our marker written into it) and is removed otherwise, together with
    the parent folders this call created (a failed write leaves nothing behind).

    Args:
        out_dir: Final directory.
        overwrite: Replace an existing ``out_dir`` that we wrote (it carries :data:`OUTPUT_MARKER`).
        prefix: Unused (kept for compatibility); staging names are :func:`staging_path`.
        kind: Recorded in the marker (``"predict"``, ``"savedmodel"``...).
        marker: Write :data:`OUTPUT_MARKER` into the directory. DICOM series folders are written
            without it (tools that read every file of a series folder would trip on it); such a
            folder is replaced only when it holds nothing but DICOM files.
        update: Add to an existing ``out_dir`` instead of replacing it: the staging directory
            starts as a copy of it and replaces it when the block succeeds, so everything it held
            is kept unless the block replaced that file, and ``out_dir`` is untouched until the
            final rename. The block must replace files (e.g. :func:`atomic_file`), not edit them.
            ``overwrite`` is not needed; the caller decides whether ``out_dir`` may be added to.
        ours: With ``overwrite``, also replace an existing ``out_dir`` without the marker for which
            ``ours(out_dir)`` is true: outputs of ours written before they carried the marker,
            recognised by their contents (resume checkpoints, :mod:`tfmedseg.training.callbacks`).
        provenance: Recorded in the marker (what made the output, :mod:`tfmedseg.io.provenance`),
            so that the same job run again can tell its own output from another job's.
        option: How the caller's user asks for ``overwrite`` (``"--overwrite"`` on a command line,
            ``"overwrite=True"`` in a Python API), named when an existing ``out_dir`` is refused;
            None for a caller without such an option (the message then says to remove it or
            choose another output).
    """
    out_dir = Path(out_dir)
    carry = update and os.path.lexists(out_dir)
    if carry and (out_dir.is_symlink() or not out_dir.is_dir()):
        raise InvalidInputError("output path exists and is not a directory; remove it or choose another output", path=out_dir)
    if not carry:
        _check_replaceable(out_dir, overwrite, ours, option=option)  # fail before any work
    created = _missing_parents(out_dir)
    tmp, committed = None, False
    try:
        tmp = make_staging_dir(out_dir)
        if carry:
            shutil.copytree(out_dir, tmp, symlinks=True, dirs_exist_ok=True)
        yield tmp
        if marker:
            write_marker(tmp, kind, provenance)
        if carry:
            _swap_dir(tmp, out_dir)
        else:
            commit_dir(tmp, out_dir, overwrite, ours, option=option)
        committed = True
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not committed:
            for parent in created:  # deepest first, only while empty
                with contextlib.suppress(OSError):
                    parent.rmdir()


def _missing_parents(path: Path) -> list[Path]:
    """The ancestors of ``path`` that do not exist yet, deepest first."""
    missing = []
    parent = Path(os.path.abspath(path)).parent
    while not os.path.lexists(parent) and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing


def _check_replaceable(out_dir: Path, overwrite: bool, ours: Callable[[Path], bool] | None = None, *,
                       option: str | None = None) -> None:
    """Raise unless ``out_dir`` is absent, an empty directory, or (``overwrite``) a directory of ours
    (our marker, only DICOM files, or ``ours(out_dir)``).

    ``option`` is how the caller's user asks for ``overwrite`` (``"--overwrite"``,
    ``"overwrite=True"``), named in the refusal of a non-empty ``out_dir``; None: the caller has no
    such option and the message says to remove it or choose another output.
    """
    if not os.path.lexists(out_dir):
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise InvalidInputError("output path exists and is not a directory; remove it or choose another output", path=out_dir)
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        how = f"pass {option} to replace an output of tfmedseg, or choose another output" if option else \
            "remove it or choose another output"
        raise InvalidInputError(f"output directory exists and is not empty; {how}", path=out_dir)
    if not has_marker(out_dir) and not _only_dicom_files(out_dir) and not (ours is not None and ours(out_dir)):
        raise InvalidInputError(
            f"output directory holds files tfmedseg did not write (no {OUTPUT_MARKER}); refusing to replace it: "
            "remove it yourself or choose another output",
            path=out_dir,
        )


def _only_dicom_files(directory: Path) -> bool:
    """True for a folder holding only DICOM files (128-byte preamble + ``DICM``), e.g. a series we wrote."""
    for entry in directory.iterdir():
        if entry.is_symlink() or not entry.is_file():
            return False
        try:
            with open(entry, "rb") as f:
                head = f.read(132)
        except OSError:
            return False
        if head[128:132] != b"DICM":
            return False
    return True


def commit_dir(tmp: Path, out_dir: Path, overwrite: bool, ours: Callable[[Path], bool] | None = None, *,
               option: str | None = None) -> None:
    """Move a completed staging directory ``tmp`` into place as ``out_dir`` (atomic rename).

    Raises:
        InvalidInputError: ``out_dir`` exists as a file, or as a non-empty directory and not
            ``overwrite``, or (``overwrite``) as a directory without our marker (and not
            ``ours(out_dir)``, see :func:`atomic_dir`); ``option`` names how to ask for ``overwrite``
            (:func:`atomic_dir`).
    """
    tmp, out_dir = Path(tmp), Path(out_dir)
    _check_replaceable(out_dir, overwrite, ours, option=option)
    _swap_dir(tmp, out_dir)


def _swap_dir(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an existing non-empty ``out_dir`` is moved aside first and removed after."""
    if out_dir.exists():
        if not any(out_dir.iterdir()):
            out_dir.rmdir()
        else:
            trash = staging_path(out_dir)
            os.replace(out_dir, trash)
            os.replace(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
            return
    os.replace(tmp, out_dir)


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_not_input(output: str | os.PathLike, inputs: Iterable[str | os.PathLike], *, key: str | None = None) -> None:
    """Refuse an output that is an input, contains one, or sits inside an input directory.

    Paths are compared after resolving symbolic links; an existing output file that is the same
    file as an input (hard link) is refused too.

    Raises:
        InvalidInputError: Naming the output and the input it would overwrite.
    """
    out = _resolved(output)
    for source in inputs:
        if source is None:
            continue
        src = _resolved(source)
        same = _inside(out, src) if Path(source).is_dir() else out == src
        if not same and os.path.exists(out) and os.path.exists(src):
            with contextlib.suppress(OSError):
                same = os.path.samefile(out, src)
        if same:
            what = "is or sits inside" if Path(source).is_dir() else "is"
            raise InvalidInputError(f"output {what} the input {source}; choose an output outside the input", path=key or output)
        if _inside(src, out):
            raise InvalidInputError(f"output contains the input {source}; choose an output outside the input", path=key or output)

