"""The contract between a training run and the exporter.

A run directory that can be exported holds:

``model.keras``          the inference model (no augmentation layers), Keras 3 format
``serving_spec.json``    :class:`~tfmedseg.inference.spec.ServingSpec` of that model
``export_info.json``     optional extras for ``metadata.json`` (seed, config hash, metrics)
``representative.npz``   optional input samples (array ``inputs``, ``[N, *model input]``) drawn from the
                         training pipeline, used for full-integer int8 calibration and TFLite checks, and
                         optionally their reference labels (array ``labels``, ``[N, *model output
                         spatial]`` integers) for the Dice of each conversion against ground truth

:func:`save_for_export` writes it (every experiment calls it at the end), :func:`load_for_export`
reads it back (the export CLI calls it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tfmedseg.errors import ExportError, InvalidInputError
from tfmedseg.inference.spec import ServingSpec
from tfmedseg.io._atomic import atomic_file
from tfmedseg.io.npz import load_npz

__all__ = ["save_for_export", "load_for_export", "ExportBundle"]


class ExportBundle:
    """What :func:`load_for_export` returns: model, spec, info, representative inputs and labels."""

    def __init__(self, model: Any, spec: ServingSpec, info: dict[str, Any], representative: np.ndarray | None,
                 representative_labels: np.ndarray | None = None):
        self.model = model
        self.spec = spec
        self.info = info
        self.representative = representative
        self.representative_labels = representative_labels


def save_for_export(
    model: Any,
    run_dir: str | os.PathLike,
    spec: ServingSpec,
    info: dict[str, Any] | None = None,
    representative: np.ndarray | None = None,
    representative_labels: np.ndarray | None = None,
) -> Path:
    """Write the export contract files into ``run_dir`` (each file written atomically)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(run_dir / "model.keras", ".keras") as tmp:
        model.save(tmp)
    _write_json(run_dir / "serving_spec.json", spec.to_dict())
    _write_json(run_dir / "export_info.json", info or {})
    if representative is not None:
        arrays = {"inputs": np.asarray(representative, np.float32)}
        if representative_labels is not None:
            arrays["labels"] = np.asarray(representative_labels)
        with atomic_file(run_dir / "representative.npz", ".npz") as tmp:
            np.savez_compressed(tmp, **arrays)
    return run_dir


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_file(path, ".json") as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, default=str))


def load_for_export(path: str | os.PathLike) -> ExportBundle:
    """Load a run directory (or a bare ``.keras`` file with a default spec) for export.

    Raises:
        ExportError: Missing ``model.keras``, unreadable model or malformed JSON, naming the file.
    """
    import keras

    from tfmedseg.models import registry

    registry.available()  # import every builder module so custom layers are registered
    path = Path(path)
    if path.is_dir():
        model_path = path / "model.keras"
        if not model_path.is_file():
            raise ExportError("run directory has no model.keras (train with an experiment first)", path=path)
        spec_path = path / "serving_spec.json"
        spec = ServingSpec.from_dict(_read_json(spec_path)) if spec_path.is_file() else ServingSpec()
        info_path = path / "export_info.json"
        info = _read_json(info_path) if info_path.is_file() else {}
        rep_path = path / "representative.npz"
        representative, labels = None, None
        if rep_path.is_file():
            try:
                data = load_npz(rep_path, required=("inputs",))
            except InvalidInputError as exc:
                raise ExportError(exc.reason, path=rep_path) from exc
            representative = data["inputs"]
            labels = data.get("labels")
    elif path.suffix == ".keras" and path.is_file():
        model_path, spec, info, representative, labels = path, ServingSpec(), {}, None, None
    else:
        raise ExportError("expected a run directory or a .keras file", path=path)
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as exc:
        raise ExportError(f"cannot load the model: {type(exc).__name__}: {str(exc)[:300]}", path=model_path) from exc
    return ExportBundle(model, spec, info, representative, labels)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"not valid JSON: {exc}", path=path) from exc
