"""HECKTOR 2021 (head and neck PET/CT, primary tumour GTVt) loader.

On-disk layout (as distributed; files flat in ``<root>`` or one folder per patient)::

    <root>/bbox.csv                          (or one ``*bbox*.csv``, e.g. hecktor2021_bbox_training.csv)
    <root>/[<pid>/]<pid>_ct.nii.gz           CT in HU
    <root>/[<pid>/]<pid>_pt.nii.gz           PET in SUVbw (HECKTOR ships SUV directly)
    <root>/[<pid>/]<pid>_gtvt.nii.gz         GTVt label map 0/1 on the CT grid

``<pid>`` is the centre code and the patient number, ``CHGJ007`` in the 2021 release
(``CHGJ-007`` is accepted too). CT and PET keep their own grids (PET is coarser); both are in
the same world frame. ``bbox.csv`` has the columns ``PatientID,x1,x2,y1,y2,z1,z2``: the
144 mm cube around the oropharynx in world millimetres, ITK/DICOM **LPS** coordinates (the
official file was computed with SimpleITK physical points).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from tfmedseg.datasets._common import lazy_label_volume, require_dir, require_nonempty
from tfmedseg.datasets.case import Case
from tfmedseg.errors import DatasetLayoutError, InvalidInputError
from tfmedseg.io.lazy import read_nifti_lazy
from tfmedseg.io.volume import Volume

__all__ = ["load_hecktor", "read_bbox_csv", "HECKTOR_LABELS", "BBOX_COLUMNS", "world_extent_lps"]

#: Label values of a GTVt map.
HECKTOR_LABELS = (0, 1)
#: Required columns of the bounding-box CSV (mm, LPS).
BBOX_COLUMNS = ("PatientID", "x1", "x2", "y1", "y2", "z1", "z2")

_PATTERN = re.compile(r"^(?P<pid>.+)_(?P<kind>ct|pt|gtvt)\.nii(\.gz)?$", re.IGNORECASE)


def read_bbox_csv(path: str | os.PathLike) -> dict[str, tuple[float, ...]]:
    """Read a HECKTOR bounding-box CSV.

    Args:
        path: CSV with the header ``PatientID,x1,x2,y1,y2,z1,z2`` (extra columns are ignored).

    Returns:
        PatientID -> ``(x1, x2, y1, y2, z1, z2)`` in mm (LPS world coordinates).

    Raises:
        InvalidInputError: Missing columns, non-numeric or NaN values, ``x1 >= x2`` (or y, z),
            duplicate PatientID.
    """
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in BBOX_COLUMNS if c not in columns]
            if missing:
                raise InvalidInputError(f"bounding-box CSV lacks the columns {missing}; has {columns}", path=path)
            boxes: dict[str, tuple[float, ...]] = {}
            for line, row in enumerate(reader, start=2):
                row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                pid = row["PatientID"]
                try:
                    box = tuple(float(row[c]) for c in BBOX_COLUMNS[1:])
                except ValueError as exc:
                    raise InvalidInputError(f"line {line} ({pid}): non-numeric coordinate ({exc})", path=path) from exc
                if not np.isfinite(box).all():
                    raise InvalidInputError(f"line {line} ({pid}): coordinates must be finite, got {box}", path=path)
                if not (box[0] < box[1] and box[2] < box[3] and box[4] < box[5]):
                    raise InvalidInputError(f"line {line} ({pid}): need x1<x2, y1<y2, z1<z2, got {box}", path=path)
                if pid in boxes:
                    raise InvalidInputError(f"line {line}: duplicate PatientID {pid!r}", path=path)
                boxes[pid] = box
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"not a text CSV file ({exc})", path=path) from exc
    return boxes


def world_extent_lps(volume: Volume) -> np.ndarray:
    """``[[xmin, xmax], [ymin, ymax], [zmin, zmax]]`` (LPS mm) of the voxel centres of a 3D volume."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in volume.shape], indexing="ij")).reshape(3, -1)
    world = (volume.affine @ np.vstack([corners, np.ones(corners.shape[1])]))[:3]
    world[:2] *= -1.0  # RAS -> LPS
    return np.stack([world.min(axis=1), world.max(axis=1)], axis=1)


def _find_bbox_csv(root: Path) -> Path:
    exact = root / "bbox.csv"
    if exact.is_file():
        return exact
    candidates = sorted(p for p in root.glob("*.csv") if "bbox" in p.name.lower())
    if not candidates:
        raise DatasetLayoutError("missing bounding-box CSV (bbox.csv with PatientID,x1,x2,y1,y2,z1,z2)", path=root / "bbox.csv")
    if len(candidates) > 1:
        raise DatasetLayoutError(f"several bounding-box CSVs, keep one: {[p.name for p in candidates]}", path=root)
    return candidates[0]


def _scan(root: Path) -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(list(root.glob("*.nii*")) + list(root.glob("*/*.nii*"))):
        match = _PATTERN.match(path.name)
        if not match:
            continue
        pid, kind = match.group("pid"), match.group("kind").lower()
        entry = found.setdefault(pid, {})
        if kind in entry:
            raise DatasetLayoutError(f"duplicate {kind} file for patient {pid}: also {entry[kind]}", path=path)
        entry[kind] = path
    return found


def _center(pid: str) -> str:
    match = re.match(r"^([A-Za-z]+)", pid)
    return match.group(1).upper() if match else ""


def load_hecktor(root: str | os.PathLike, *, labels: bool = True) -> list[Case]:
    """Load every HECKTOR 2021 patient under ``root``.

    Args:
        root: Dataset folder (see the module docstring for the layout).
        labels: Require and load ``<pid>_gtvt.nii.gz``; False for the unlabeled test release.

    Returns:
        Cases sorted by patient id: ``images["ct"]`` (HU) and ``images["pt"]`` (SUV) each on its own
        canonical grid, ``label`` uint8 0/1 on the CT grid (None when ``labels=False``);
        ``meta["bbox_mm"]`` = ``(x1, x2, y1, y2, z1, z2)`` LPS mm, ``meta["center"]``, ``meta["paths"]``.
        The volumes are read lazily (headers now, voxels on first use; label values checked then),
        as in :func:`tfmedseg.datasets.lits.load_lits`.

    Raises:
        DatasetLayoutError: Missing root, no patients, a CT without PET or GTVt (or the reverse),
            missing bounding-box CSV or a patient missing from it.
        InvalidInputError: Unreadable files, GTVt/CT grid mismatch, label values outside 0/1,
            a bounding box that does not overlap the CT.

    Example:
        >>> case = load_hecktor("data/hecktor2021")[0]  # doctest: +SKIP
        >>> case.images["pt"].spacing, case.meta["bbox_mm"]  # doctest: +SKIP
    """
    root = require_dir(root, "HECKTOR root")
    found = _scan(root)
    require_nonempty(list(found), root, "HECKTOR <pid>_ct/_pt/_gtvt.nii.gz files")
    needed = ("ct", "pt", "gtvt") if labels else ("ct", "pt")
    for pid, files in sorted(found.items()):
        present = next(iter(files.values()))
        for kind in needed:
            if kind not in files:
                raise DatasetLayoutError(
                    f"patient {pid} has no partner {pid}_{kind}.nii.gz (found {sorted(files)})", path=present
                )
    bbox_path = _find_bbox_csv(root)
    boxes = read_bbox_csv(bbox_path)
    cases = []
    for pid, files in sorted(found.items()):
        if pid not in boxes:
            raise DatasetLayoutError(f"patient {pid} is missing from the bounding-box CSV", path=bbox_path)
        ct = read_nifti_lazy(files["ct"], "CT")
        pt = read_nifti_lazy(files["pt"], "PT")
        pt.meta["units"] = "SUVbw"
        box = boxes[pid]
        extent = world_extent_lps(ct)
        overlap = all(box[2 * i] < extent[i, 1] and box[2 * i + 1] > extent[i, 0] for i in range(3))
        if not overlap:
            raise InvalidInputError(
                f"bounding box of {pid} {box} does not overlap the CT extent {extent.round(1).tolist()} (LPS mm)",
                path=bbox_path,
            )
        label = None
        paths = {"ct": str(files["ct"]), "pt": str(files["pt"]), "bbox_csv": str(bbox_path)}
        if labels:
            label = lazy_label_volume(ct, files["gtvt"], HECKTOR_LABELS)
            paths["label"] = str(files["gtvt"])
        meta = {"bbox_mm": box, "bbox_frame": "LPS", "center": _center(pid), "paths": paths}
        cases.append(Case(pid, {"ct": ct, "pt": pt}, label, None, meta))
    return cases
