"""Seed 003's clinical tool: a CT DICOM series in, the liver and lesion segmentation out as DICOM.

``python -m tfmedseg.apps.liver_lesions <dicom_folder> <output_folder> --model <bundle>``
(console script ``tfmedseg-liver-lesions``)

Runs the trained two-stage fusion system exported by ``python -m tfmedseg.experiments.liver_lesion_fusion``
(a SavedModel bundle of the eight networks and the two fusion layers,
:mod:`tfmedseg.export.fusion_bundle`) without the training code:

1. reads the folder as exactly one CT series (pydicom, Modality LUT -> HU); anything else (no DICOM,
   several series, not CT) is a one-line error and nothing is written;
2. liver stage, lesion stage (:func:`tfmedseg.inference.liver_lesion.segment_liver_lesions`), with a
   progress line per stage;
3. writes, atomically, into ``<output_folder>``: ``overlay/`` (the RGB overlay series: liver green,
   lesion red, opacity 0.3, a new series in the same study, one instance per input slice),
   ``seg.dcm`` (DICOM-SEG), ``label.nii.gz`` (0 background, 1 liver, 2 lesion) and ``report.json`` /
   ``report.txt`` (liver volume, lesion count, lesion volume, tumour burden = lesion / liver volume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import tfmedseg  # noqa: F401  (oneDNN on before TensorFlow loads)
from tfmedseg.command import report_user_errors
from tfmedseg.errors import InvalidInputError

__all__ = ["liver_lesion_report", "main", "read_ct_series", "run_liver_lesions"]

LABEL_NAMES = ("background", "liver", "lesion")


def read_ct_series(folder: str | Path):
    """The folder's single CT series as a Volume in HU.

    Raises:
        InvalidInputError: Not a folder, no DICOM series, several series, or not CT.
    """
    from tfmedseg.io.dicom import list_dicom_series, read_dicom_series

    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError("is not a folder of DICOM files", path=folder)
    series = list_dicom_series(folder)
    if len(series) != 1:
        found = ", ".join(f"{v['modality']} #{v['series_number']} ({len(v['files'])} files)" for v in series.values())
        raise InvalidInputError(f"must hold exactly one CT series, found {len(series)}" + (f": {found}" if found else ""),
                                path=folder)
    info = next(iter(series.values()))
    if info["modality"] != "CT":
        raise InvalidInputError(f"holds a {info['modality'] or 'unknown'} series, not CT", path=folder)
    return read_dicom_series(folder, modality="CT")


def liver_lesion_report(labels: np.ndarray, spacing) -> dict[str, Any]:
    """Liver volume, lesion count (3D components) and volume (ml), tumour burden (lesion / liver)."""
    from scipy import ndimage

    voxel_ml = float(np.prod(spacing)) / 1000.0
    liver_ml = float((labels >= 1).sum()) * voxel_ml
    lesion = labels == 2
    _, count = ndimage.label(lesion, structure=np.ones((3, 3, 3)))
    lesion_ml = float(lesion.sum()) * voxel_ml
    return {"liver_volume_ml": round(liver_ml, 2), "lesion_count": int(count), "lesion_volume_ml": round(lesion_ml, 2),
            "tumour_burden": round(lesion_ml / liver_ml, 5) if liver_ml > 0 else None}


def resolve_bundle_path(model: str | Path) -> Path:
    """The bundle folder ``model`` names: a model root (``saved_models/liver_lesion_fusion``, no ``saved_model.pb`` of
    its own) gives its highest version folder holding a ``saved_model.pb``, as ``python -m tfmedseg.predict`` does;
    anything else is returned as it is (:func:`~tfmedseg.inference.liver_lesion.load_fusion_bundle` checks it)."""
    from tfmedseg.export.versions import savedmodel_versions

    path = Path(model)
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        versions = savedmodel_versions(path)
        if versions:
            return versions[0]
    return path


def run_liver_lesions(dicom_folder, output_folder, model, *, overwrite: bool = False, uid_seed: str | None = None) -> dict:
    """The whole application (module docstring); returns the report dict. ``model``: a bundle folder, or a model
    root whose highest SavedModel version is used (:func:`resolve_bundle_path`).

    The output folder records what made it (the bundle's fingerprint, the DICOM folder's file list
    with sizes and mtimes; :func:`~tfmedseg.io.provenance.job_record`): the same command again says
    so, reads and writes nothing and returns the stored report with ``"up_to_date": True``; another
    model or input into it is refused unless ``overwrite``.

    Raises:
        TfMedSegError: A bad input folder, model bundle or output folder (nothing written).
    """
    from tfmedseg.inference.liver_lesion import (
        load_fusion_bundle,
        segment_liver_lesions,
    )
    from tfmedseg.io._atomic import _check_replaceable, atomic_dir, check_output_not_input, holds_provenance
    from tfmedseg.io.provenance import job_record
    from tfmedseg.io.segmentation_outputs import write_dicom_outputs

    dicom_folder, output_folder = Path(dicom_folder), Path(output_folder)
    check_output_not_input(output_folder, [dicom_folder, Path(model)], key=str(output_folder))
    model = resolve_bundle_path(model)
    provenance = job_record("liver-lesions", model, dicom_folder, "folder", {"uid_seed": uid_seed}) \
        if dicom_folder.is_dir() else None  # (not a folder: read_ct_series says so)
    if provenance is not None and not overwrite and holds_provenance(output_folder, provenance):  # the same command again
        print(f"{output_folder} holds the result of this model and input already; nothing to do "
              "(pass --overwrite to write it again)")
        try:
            return {**json.loads((output_folder / "report.json").read_text()), "up_to_date": True}
        except (OSError, ValueError):
            return {"up_to_date": True}
    _check_replaceable(output_folder, overwrite, option="--overwrite")  # fail before any work
    volume = read_ct_series(dicom_folder)
    print(f"input: {dicom_folder}: CT, {volume.shape[0]} slices of {volume.shape[1]} x {volume.shape[2]}")
    functions, settings, info = load_fusion_bundle(model)
    print(f"model: {model} ({', '.join(info.get('networks', []))})")
    result = segment_liver_lesions(volume.array, functions["liver_votes"], functions["lesion_votes"], functions["liver_fuse"],
                                   functions["lesion_fuse"], settings, progress=lambda m: print(m, flush=True))
    labels = result.labels
    report = {"input": str(dicom_folder), "model": str(model), **liver_lesion_report(labels, volume.spacing)}
    print("writing the overlay series, DICOM-SEG, label map and report")
    with atomic_dir(output_folder, overwrite, kind="liver_lesions", option="--overwrite", provenance=provenance) as staging:
        notes = write_dicom_outputs(volume, labels, staging, label_names=LABEL_NAMES, name="tfmedseg liver lesions",
                                    opacity=0.3, window="auto", uid_seed=uid_seed)
        (staging / "report.json").write_text(json.dumps(report, indent=2))
        (staging / "report.txt").write_text("".join(f"{k}: {v}\n" for k, v in report.items()))
    for note in notes:
        print(f"note: {note}")
    burden = "n/a" if report["tumour_burden"] is None else f"{100 * report['tumour_burden']:.2f} %"
    print(f"liver {report['liver_volume_ml']} ml, {report['lesion_count']} lesion(s), {report['lesion_volume_ml']} ml, "
          f"tumour burden {burden}; wrote {output_folder}")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; 0 on success, 2 after a one-line error, 130 / 143 after Ctrl-C / SIGTERM (nothing partial left)."""
    parser = argparse.ArgumentParser(prog="python -m tfmedseg.apps.liver_lesions",
                                     description="Liver and lesion segmentation of a CT DICOM series (seed 003); writes an "
                                                 "RGB overlay series, a DICOM-SEG, a NIfTI label map and a report.")
    parser.add_argument("dicom_folder", type=Path, help="folder holding one CT series (one file per slice)")
    parser.add_argument("output_folder", type=Path, help="new folder for the results")
    parser.add_argument("--model", type=Path, required=True,
                        help="exported fusion bundle (saved_models/liver_lesion_fusion/<version>), or the model root "
                             "saved_models/liver_lesion_fusion: its highest version")
    parser.add_argument("--overwrite", action="store_true", help="replace an output folder written by tfmedseg")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return report_user_errors(lambda: run_liver_lesions(args.dicom_folder, args.output_folder, args.model,
                                                        overwrite=args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
