"""A disk cache of preprocessed cases: one ``.npz`` per case, keyed by case id and config hash.

Layout: ``<root>/<config_hash>/<case_id>.npz`` holding the named arrays plus ``__spacing__``
(mm, float64) and ``__meta__`` (JSON text), and ``<root>/<config_hash>/config.json`` with the
preprocessing config the hash was made from. A changed config gives a new hash, hence a new
directory, so cases are rebuilt; an unchanged config reuses the files. Writes are atomic (a
temporary file in the same directory, then ``os.replace``), so a crash never leaves a truncated
``.npz`` under the final name; an unreadable file is rebuilt.

Example:
    >>> cache = CaseCache("/tmp/cache", {"hu": [-200, 200], "size": 256})
    >>> entry = cache.get_or_build("lits-003", lambda: ({"image": img, "label": lab}, (1.0, 0.8, 0.8), {}))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["CachedCase", "CaseCache", "hash_config"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def hash_config(config: Any) -> str:
    """12-hex-digit sha256 of a config: a dataclass (via :func:`tfmedseg.config.config_hash`) or a dict."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        from tfmedseg.config import config_hash

        return config_hash(config)
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclasses.dataclass
class CachedCase:
    """One cached case.

    Attributes:
        case_id: The case identifier.
        arrays: Array name -> numpy array (e.g. ``"image"`` ``[D, H, W]`` float32, ``"label"`` int).
        spacing: Voxel size in mm of the cached arrays.
        meta: JSON-serialisable metadata (source path, crop box, ...).
        built: True when this call built the case, False when it was read from disk.
    """

    case_id: str
    arrays: dict[str, np.ndarray]
    spacing: tuple[float, ...]
    meta: dict[str, Any]
    built: bool = False


BuildFn = Callable[[], "tuple[dict[str, np.ndarray], tuple[float, ...], dict[str, Any]]"]


class CaseCache:
    """Preprocessed cases on disk, built once per (case id, preprocessing config).

    Args:
        root: Cache directory (created on first write).
        config: The preprocessing config (dataclass or JSON-serialisable dict); its hash names the
            sub-directory.
    """

    def __init__(self, root: str | os.PathLike, config: Any):
        self.root = Path(root)
        self.config = config
        self.key = hash_config(config)
        self.directory = self.root / self.key

    def path(self, case_id: str) -> Path:
        """File of ``case_id`` under this config."""
        if not isinstance(case_id, str) or not _SAFE_ID.match(case_id):
            raise InvalidInputError(
                f"case id {case_id!r} must be letters, digits, '.', '_' or '-' (it names a file)", path="case_id"
            )
        return self.directory / f"{case_id}.npz"

    def __contains__(self, case_id: str) -> bool:
        return self.path(case_id).is_file()

    def load(self, case_id: str) -> CachedCase:
        """Read a cached case.

        Raises:
            InvalidInputError: If the file is missing or unreadable (names the file).
        """
        path = self.path(case_id)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files if not k.startswith("__")}
                spacing = tuple(float(s) for s in data["__spacing__"])
                meta = json.loads(str(data["__meta__"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise InvalidInputError(f"cannot read cached case: {exc}", path=path) from exc
        return CachedCase(case_id, arrays, spacing, meta, built=False)

    def save(self, case_id: str, arrays: dict[str, np.ndarray], spacing, meta: dict[str, Any] | None = None) -> Path:
        """Write a case atomically; returns its path."""
        path = self.path(case_id)
        bad = [k for k in arrays if k.startswith("__")]
        if bad:
            raise InvalidInputError(f"array names may not start with '__': {bad}", path="arrays")
        self.directory.mkdir(parents=True, exist_ok=True)
        config_file = self.directory / "config.json"
        if not config_file.exists():
            self._atomic_write(config_file, lambda f: f.write(json.dumps(self._config_dict(), sort_keys=True, indent=1, default=str).encode()))
        payload = {k: np.asarray(v) for k, v in arrays.items()}
        payload["__spacing__"] = np.asarray(spacing, dtype=np.float64)
        payload["__meta__"] = np.asarray(json.dumps(meta or {}, sort_keys=True, default=str))
        self._atomic_write(path, lambda f: np.savez_compressed(f, **payload))
        return path

    def get_or_build(self, case_id: str, build: BuildFn) -> CachedCase:
        """Return the cached case, building and saving it first when missing or unreadable.

        Args:
            case_id: Case identifier.
            build: Zero-argument function returning ``(arrays, spacing, meta)``.
        """
        if case_id in self:
            try:
                return self.load(case_id)
            except InvalidInputError:
                pass  # corrupt file: rebuild below
        arrays, spacing, meta = build()
        self.save(case_id, arrays, spacing, meta)
        return CachedCase(case_id, {k: np.asarray(v) for k, v in arrays.items()}, tuple(float(s) for s in spacing), dict(meta or {}), built=True)

    def _config_dict(self) -> Any:
        if dataclasses.is_dataclass(self.config) and not isinstance(self.config, type):
            from tfmedseg.config import to_dict

            return to_dict(self.config)
        return self.config

    def _atomic_write(self, path: Path, write: Callable) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
