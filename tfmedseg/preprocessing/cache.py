"""A disk cache of preprocessed cases: one ``.npz`` per case, keyed by case id and config hash.

Layout: ``<root>/<config_hash>/<case_id>.npz`` holding the named arrays plus ``__spacing__``
(mm, float64) and ``__meta__`` (JSON text), and ``<root>/<config_hash>/config.json`` with the
preprocessing config the hash was made from. A changed config gives a new hash, hence a new
directory, so cases are rebuilt; an unchanged config reuses the files. Writes are atomic (a
temporary file in the same directory, then ``os.replace``), so a crash never leaves a truncated
``.npz`` under the final name; an unreadable file is rebuilt.

Streaming: the arrays are stored *uncompressed* (``np.savez``), so each one lies contiguously in
its file and :meth:`CaseCache.lazy_arrays` returns :class:`CachedArray` s that read only the slices a
sample needs (``os.pread`` of ``array[z0:z1]``); a dataset far larger than memory trains from the
cache with one sample's slices in memory per reader. :meth:`CaseCache.ensure` builds a missing case
without keeping its arrays, so a cache is built case by case with one case in memory, and an
interrupted build resumes at the first missing case. Files of older caches written compressed are
rewritten uncompressed once, the first time :meth:`CaseCache.ensure` meets them.

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
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["CachedCase", "CachedArray", "CaseCache", "hash_config"]

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


class CachedArray(np.lib.mixins.NDArrayOperatorsMixin):
    """One array of a cached case, read from its file on demand (a read-only array-like).

    Indexing with an integer, a step-1 slice or an integer array along axis 0 (optionally
    followed by more indices, e.g. ``a[z0:z1, y0:y1]``) reads only the slices spanned. Anything
    else behaves as the numpy array would, reading the whole array for that use: other indexing,
    ``np.asarray(a)``, numpy functions and operators (``a > 0``), ndarray methods and attributes
    (``a.max()``, ``a.astype(...)``).

    Attributes:
        path: The case file.
        name: The array name.
        shape: Shape as presented (with a trailing channel axis after :meth:`view` ``channel=True``).
        dtype: dtype as presented (after :meth:`view` ``dtype=``).
        streamable: True when the array is stored uncompressed (slices are read directly).
    """

    def __init__(self, path: Path, name: str, offset: int | None, stored_shape: tuple[int, ...], stored_dtype: np.dtype,
                 fortran: bool, *, dtype: np.dtype | None = None, channel: bool = False):
        self.path, self.name, self._offset = Path(path), name, offset
        self._stored_shape, self._stored_dtype, self._fortran = tuple(stored_shape), np.dtype(stored_dtype), fortran
        self.dtype = np.dtype(dtype) if dtype is not None else self._stored_dtype
        self._channel = channel
        self.shape = self._stored_shape + ((1,) if channel else ())

    @classmethod
    def _from_member(cls, path: Path, name: str, info: zipfile.ZipInfo, handle) -> "CachedArray":
        handle.seek(info.header_offset)
        local = handle.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"bad zip entry {info.filename}")
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        if info.compress_type != zipfile.ZIP_STORED:
            with zipfile.ZipFile(path) as archive, archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                shape, fortran, dtype = _read_npy_header(member, version)
            return cls(path, name, None, shape, dtype, fortran)
        handle.seek(start)
        version = np.lib.format.read_magic(handle)
        shape, fortran, dtype = _read_npy_header(handle, version)
        if dtype.hasobject:
            raise ValueError(f"array {name} holds Python objects")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if handle.tell() - start + nbytes > info.file_size:
            raise ValueError(f"array {name} is truncated: its header declares shape {shape} ({nbytes} bytes), "
                             f"the zip member holds {info.file_size - (handle.tell() - start)}")
        return cls(path, name, handle.tell(), shape, dtype, fortran)

    @property
    def streamable(self) -> bool:
        return self._offset is not None and not self._fortran and len(self._stored_shape) > 0

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def view(self, *, dtype=None, channel: bool = False) -> "CachedArray":
        """The same stored array presented cast to ``dtype`` and/or with a trailing axis of 1."""
        return CachedArray(self.path, self.name, self._offset, self._stored_shape, self._stored_dtype, self._fortran,
                           dtype=dtype if dtype is not None else self.dtype, channel=channel or self._channel)

    def _present(self, array: np.ndarray) -> np.ndarray:
        array = array.astype(self.dtype, copy=False)
        return array[..., None] if self._channel else array

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """``array[start:stop]`` along axis 0 (clipped to the array), reading only those slices."""
        if not self.streamable:
            with np.load(self.path, allow_pickle=False) as data:
                whole = np.asarray(data[self.name])
            return self._present(whole if not whole.ndim else whole[start:stop])
        depth = self._stored_shape[0]
        stop = depth if stop is None else min(int(stop), depth)
        start = max(0, min(int(start), stop))
        nbytes = int(np.prod(self._stored_shape, dtype=np.int64)) * self._stored_dtype.itemsize
        try:
            size = os.path.getsize(self.path)
        except OSError as exc:
            raise InvalidInputError(f"cannot read cached array {self.name}: {exc.strerror or exc}", path=self.path) from exc
        if size < self._offset + nbytes:  # checked before mapping: reading past the end would be SIGBUS
            raise InvalidInputError(f"cached array {self.name} is truncated: its header declares shape {self._stored_shape} "
                                    f"({nbytes} bytes from byte {self._offset}), the file has {size} bytes", path=self.path)
        if stop == start or nbytes == 0:
            return self._present(np.empty((stop - start,) + self._stored_shape[1:], self._stored_dtype))
        mapped = np.memmap(self.path, self._stored_dtype, "r", offset=self._offset, shape=self._stored_shape)
        return self._present(np.array(mapped[start:stop]))  # a copy: the mapping closes when dropped

    def __getitem__(self, key):
        rest: tuple = ()
        if isinstance(key, tuple) and key and key[0] is not Ellipsis:
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            z = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= z < self.shape[0]:
                raise IndexError(f"index {int(key)} is out of bounds for axis 0 with size {self.shape[0]}")
            out = self.read(z, z + 1)[0]
            return out[rest] if rest else out
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.shape[0])
            out = self.read(start, max(start, stop))
        elif isinstance(key, (np.ndarray, list)) and np.asarray(key).dtype.kind in "iu" and np.size(key):
            index = np.asarray(key, np.int64)
            index = np.where(index < 0, index + self.shape[0], index)
            if index.min() < 0 or index.max() >= self.shape[0]:
                raise IndexError(f"index out of bounds for axis 0 with size {self.shape[0]}")
            lo = int(index.min())
            out = self.read(lo, int(index.max()) + 1)[index - lo]
        else:
            return np.asarray(self)[(key,) + rest if rest else key]
        return out[(slice(None),) + rest] if rest else out

    def __array__(self, dtype=None, copy=None):
        array = self.read()
        return array if dtype is None else array.astype(dtype, copy=False)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(np.asarray(x) if isinstance(x, CachedArray) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("_") or not hasattr(np.ndarray, name):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(np.asarray(self), name)

    def __repr__(self) -> str:
        return f"CachedArray({self.path.name}:{self.name}, shape={self.shape}, dtype={self.dtype})"


def _read_npy_header(handle, version) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


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
        self._atomic_write(path, lambda f: np.savez(f, **payload))
        return path

    def ensure(self, case_id: str, build: BuildFn) -> bool:
        """Make sure ``case_id`` is cached and streamable, building it when missing or unreadable.

        Unlike :meth:`get_or_build` nothing is returned or kept: building a cache of many cases
        this way holds one case's arrays at a time, and a rerun after an interruption skips every
        case already written. A readable file written compressed (older caches) is rewritten
        uncompressed.

        Returns:
            True when the case was built now.
        """
        if case_id in self:
            try:
                if all(member.streamable for member in self.lazy_arrays(case_id).values()):
                    return False
                entry = self.load(case_id)
                self.save(case_id, entry.arrays, entry.spacing, entry.meta)
                return False
            except InvalidInputError:
                pass  # corrupt file: rebuild below
        arrays, spacing, meta = build()
        self.save(case_id, arrays, spacing, meta)
        return True

    def lazy_arrays(self, case_id: str) -> dict[str, "CachedArray"]:
        """The arrays of a cached case as :class:`CachedArray` s (nothing read but the file's index
        and the arrays' headers).

        Raises:
            InvalidInputError: Missing or unreadable file (names it).
        """
        path = self.path(case_id)
        try:
            with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
                out = {}
                for info in archive.infolist():
                    name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                    if name.startswith("__"):
                        continue
                    out[name] = CachedArray._from_member(path, name, info, handle)
                return out
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise InvalidInputError(f"cannot read cached case: {exc}", path=path) from exc

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
        """``write(binary file)`` into a staging file renamed to ``path`` (``io._atomic.atomic_file``:
        the visible staging name of every output; a killed build's staging is removed by the next write)."""
        from tfmedseg.io._atomic import atomic_file

        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            write(f)
