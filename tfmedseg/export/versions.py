"""Versions under ``saved_models/<name>/``: do not export the same weights twice.

A rerun of an experiment (resumed after a kill, or asked for again) has the same trained weights
as the version it exported before; exporting them again would add an identical version that TF
Serving then switches to. :func:`weights_fingerprint` hashes a model's variables,
:func:`identical_version` finds a version holding the same hash (``fingerprint.json``, written by
:func:`record_fingerprint` after each export).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["version_dirs", "savedmodel_versions", "unservable_newest_version", "weights_fingerprint", "identical_version", "record_fingerprint", "next_export_dir", "export_once", "FINGERPRINT_FILE"]

_log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"


def version_dirs(model_root: str | os.PathLike) -> list[Path]:
    """The version folders of ``model_root`` (numeric children, as TF Serving counts them), highest first."""
    root = Path(model_root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name), reverse=True)


def savedmodel_versions(model_root: str | os.PathLike) -> list[Path]:
    """The version folders of ``model_root`` holding a ``saved_model.pb`` (those TF Serving can load), highest first."""
    return [p for p in version_dirs(model_root) if (p / "saved_model.pb").is_file()]


def unservable_newest_version(model_root: str | os.PathLike) -> Path | None:
    """The newest version folder of ``model_root`` when it has no ``saved_model.pb`` while an older one has
    (e.g. TFLite files only, written by an older tfmedseg): TF Serving's default ``latest`` policy loads that
    folder and fails; None otherwise (also for a model folder of TFLite-only versions, which is not served)."""
    versions, served = version_dirs(model_root), savedmodel_versions(model_root)
    return versions[0] if served and served[0] != versions[0] else None


def weights_fingerprint(models: Iterable) -> str:
    """sha256 over the names, shapes and values of every variable of ``models`` (Keras models)."""
    digest = hashlib.sha256()
    for model in models:
        for var in model.weights:
            value = np.ascontiguousarray(np.asarray(var.numpy() if hasattr(var, "numpy") else var))
            digest.update(f"{var.path}|{value.dtype}|{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def identical_version(model_root: str | os.PathLike, fingerprint: str) -> Path | None:
    """The highest version under ``model_root`` exported from weights with ``fingerprint``, or None."""
    for version in version_dirs(model_root):
        try:
            if json.loads((version / FINGERPRINT_FILE).read_text()).get("weights_sha256") == fingerprint:
                return version
        except (OSError, ValueError, AttributeError):
            continue
    return None


def record_fingerprint(version_dir: str | os.PathLike, fingerprint: str) -> None:
    """Write ``fingerprint.json`` into an exported version directory."""
    (Path(version_dir) / FINGERPRINT_FILE).write_text(json.dumps({"weights_sha256": fingerprint}) + "\n")


def next_export_dir(export_root, name: str) -> Path:
    """``<export_root>/<name>/<next version>`` (TF Serving's numbered versions)."""
    from tfmedseg.export.savedmodel import next_version

    root = Path(export_root) / name
    return root / str(next_version(root))


def export_once(export_root, name: str, models, write) -> Path | None:
    """Export ``models`` as the next version of ``<export_root>/<name>`` unless a version holds these
    weights already (a rerun of a killed run): ``write(version_dir) -> path`` does the export.

    Returns:
        The new version directory, or None when the weights were exported before.
    """
    fingerprint = weights_fingerprint(models)
    same = identical_version(Path(export_root) / name, fingerprint)
    if same is not None:
        _log.info("%s with these weights is exported already: %s (not exported again)", name, same)
        return None
    path = Path(write(next_export_dir(export_root, name)))
    record_fingerprint(path, fingerprint)
    return path
