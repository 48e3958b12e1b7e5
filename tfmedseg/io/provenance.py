"""What made an output: cheap, deterministic fingerprints of a model, an input and the options.

A command run again with the same arguments must say that its output is there and stop, and a
different job into the same output must still be refused. The outputs therefore record their
provenance (in :data:`~tfmedseg.io._atomic.OUTPUT_MARKER` of an output folder, as a digest in the
``descrip`` of a NIfTI label map), built here without reading large files:

* a model: sha256 over the files that define it (a SavedModel's ``saved_model.pb``,
  ``fingerprint.pb``, ``variables/variables.index`` (it holds a checksum of every tensor) and
  ``metadata.json``; a run directory's ``model.keras``, ``serving_spec.json``, ``export_info.json``
  and ``representative.npz``; a ``.keras`` file and the ``serving_spec.json`` beside it); a file
  over :data:`CONTENT_HASH_LIMIT` bytes enters with its size and mtime instead of its bytes;
* an input: its path, size and mtime (ns); for a folder (a DICOM series) the number of files and a
  sha256 over the sorted list of their relative paths, sizes and mtimes (no file is read).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["CONTENT_HASH_LIMIT", "model_fingerprint", "input_fingerprint", "job_record", "job_digest"]

#: Files up to this size (bytes) are hashed by content; larger ones by size and mtime.
CONTENT_HASH_LIMIT = 256 * 2**20

_SAVEDMODEL_FILES = ("saved_model.pb", "fingerprint.pb", "variables/variables.index", "metadata.json")
_RUN_DIR_FILES = ("model.keras", "serving_spec.json", "export_info.json", "representative.npz")


def _hash_file(digest: "hashlib._Hash", path: Path) -> None:
    stat = path.stat()
    if stat.st_size > CONTENT_HASH_LIMIT:
        digest.update(f"size={stat.st_size}|mtime_ns={stat.st_mtime_ns}".encode())
        return
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def model_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path": absolute path, "sha256": digest of the defining files}`` of a SavedModel version
    directory, a run directory or a ``.keras`` file (a file that is absent enters as absent)."""
    path = Path(path)
    if path.is_dir():
        names = _SAVEDMODEL_FILES if (path / "saved_model.pb").is_file() else _RUN_DIR_FILES
        files = [(name, path / name) for name in names]
    else:
        files = [(path.name, path), ("serving_spec.json", path.with_name("serving_spec.json"))]
    digest = hashlib.sha256()
    for name, file in files:
        digest.update(f"\0{name}\0".encode())
        if file.is_file():
            _hash_file(digest, file)
        else:
            digest.update(b"<absent>")
    return {"path": os.path.abspath(path), "sha256": digest.hexdigest()}


def input_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Path, size and mtime of an input file; for a folder, its file count and a digest of the
    sorted (relative path, size, mtime) list of every file below it. Nothing is read."""
    path = Path(path)
    if not path.is_dir():
        stat = path.stat()
        return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in files:
            file = Path(root) / name
            try:
                stat = file.stat()
            except OSError:
                continue
            entries.append(f"{file.relative_to(path).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}")
    entries.sort()
    listing = hashlib.sha256("\n".join(entries).encode()).hexdigest()
    return {"path": os.path.abspath(path), "files": len(entries), "listing_sha256": listing}


def job_record(command: str, model: str | os.PathLike, input_path: str | os.PathLike, output_kind: str,
               options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance of one output: ``command``, the model (:func:`model_fingerprint`), the input
    (:func:`input_fingerprint`), the kind of output and (when given) the ``options`` that change it,
    as plain JSON values (tuples become lists, as they read back from a marker)."""
    record: dict[str, Any] = {"command": command, "model": model_fingerprint(model), "input": input_fingerprint(input_path),
                              "output": output_kind}
    if options is not None:
        record["options"] = dict(sorted(options.items()))
    return json.loads(json.dumps(record, default=str))


def job_digest(provenance: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``provenance`` (how two jobs are compared)."""
    return hashlib.sha256(json.dumps(provenance, sort_keys=True, default=str).encode()).hexdigest()
