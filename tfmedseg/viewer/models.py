"""Exported models the viewer can segment with: SavedModel versions found under ``--models``.

A model is a folder holding ``saved_model.pb`` and the ``metadata.json`` that
``python -m tfmedseg.export`` writes (TF Serving layout ``<models>/<name>/<version>/``). The listing
reads only the metadata (name, version, labels, expected modality and spacing); the model itself
is loaded by :func:`tfmedseg.predict.load_segmenter` when a job first needs it, and kept.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

__all__ = ["ModelEntry", "find_models", "SegmenterCache"]

#: How deep under ``--models`` to look for ``metadata.json`` (``<root>/<group>/<name>/<version>``).
_MAX_DEPTH = 4


def _expected_modality(meta: dict[str, Any]) -> str:
    """The modality a model expects: ``metadata["modality"]``, else CT for an HU window, else any."""
    if meta.get("modality"):
        return str(meta["modality"]).upper()
    intensity = (meta.get("serving_spec") or {}).get("intensity") or {}
    if intensity.get("kind", "clip_scale") == "clip_scale" and float(intensity.get("low", -200.0)) < 0:
        return "CT"
    return "any"


class ModelEntry(dict):
    """One model as the browser sees it: ``{"id", "name", "version", "labels", "modality",
    "spacing_mm", "kind", "path"}`` (``path`` relative to ``--models``); ``.directory`` is the folder."""

    directory: Path


def _entry(directory: Path, models_root: Path) -> ModelEntry | None:
    try:
        meta = json.loads((directory / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        _log.warning("skipping %s: unreadable metadata.json (%s)", directory, exc)
        return None
    if not isinstance(meta, dict):
        return None
    spec = meta.get("serving_spec") or {}
    whole_body = str(meta.get("task", "")).startswith("whole-body bone-scan view")  # as inference.bone_scan
    if not spec and not whole_body:
        _log.warning("skipping %s: metadata.json has no serving_spec", directory)
        return None
    rel = directory.relative_to(models_root).as_posix()
    entry = ModelEntry(
        id=rel,
        name=str(meta.get("model_name") or directory.parent.name),
        version=directory.name,
        labels=list(meta.get("labels") or spec.get("labels") or meta.get("class_names") or []),
        modality="NM" if whole_body else _expected_modality(meta),
        spacing_mm=spec.get("spacing_mm"),
        kind="whole_body" if whole_body else ("cascade" if "cascade" in meta else "segmentation"),
        path=rel,
    )
    entry.directory = directory
    return entry


def find_models(models_root: str | os.PathLike | None) -> list[ModelEntry]:
    """Every exported model version under ``models_root`` (sorted by name, then version)."""
    if models_root is None:
        return []
    root = Path(models_root).resolve()
    if not root.is_dir():
        return []
    found: list[ModelEntry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < _MAX_DEPTH else []
        if "metadata.json" in filenames and "saved_model.pb" in filenames:
            entry = _entry(Path(dirpath), root)
            if entry is not None:
                found.append(entry)
            dirnames[:] = []
    found.sort(key=lambda e: (e["name"], int(e["version"]) if e["version"].isdigit() else 0, e["id"]))
    return found


class SegmenterCache:
    """Loaded :class:`tfmedseg.predict.Segmenter` objects by model folder (loaded once, on first use)."""

    def __init__(self):
        self._loaded: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def get(self, directory: Path):
        from tfmedseg.predict import load_segmenter

        with self._lock:
            if directory not in self._loaded:
                self._loaded[directory] = load_segmenter(directory)
            return self._loaded[directory]
