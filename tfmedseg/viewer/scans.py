"""Scans open in the viewer: the volume, its segmentation, slices for the three views, the read-outs.

Views (canonical ``[D, H, W]`` = superior, posterior, left; :mod:`tfmedseg.io.volume`), each a 2D
array with row 0 at the top of the screen:

* ``axial`` (axis 0): ``array[k]`` ``[H, W]``: anterior at the top, patient's right on the left;
* ``coronal`` (axis 1): ``array[::-1, k, :]`` ``[D, W]``: superior at the top;
* ``sagittal`` (axis 2): ``array[::-1, :, k]`` ``[D, H]``: superior at the top, anterior on the left.

Read-outs use the library: label volumes as :func:`tfmedseg.predict.label_volumes` (the figures
``python -m tfmedseg.predict`` prints), lesions with :func:`tfmedseg.metrics.lesion_list.lesion_list`,
the SIRT plan with :func:`tfmedseg.clinical.maa_report.patient_dosimetry`.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.io.volume import Volume

__all__ = ["Scan", "ScanStore", "VIEWS", "view_slice", "view_spacing", "label_table", "lesion_table",
           "sirt_plan", "label_colours", "planar_volume", "planar_views", "instance_labels"]

#: View name -> array axis it slices.
VIEWS = {"axial": 0, "coronal": 1, "sagittal": 2}

#: Names that count as tumour / lesion labels (the lesion list and the TLR use them).
LESION_NAMES = ("tumour", "tumor", "lesion", "lesions", "gtvt", "metastasis")


@dataclasses.dataclass
class Scan:
    """One opened scan. ``labels`` / ``label_names`` / ``model`` are set by a segmentation."""

    id: str
    name: str
    path: str
    volume: Volume
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] = ()
    model: str | None = None
    counts: Volume | None = None  # SPECT counts on this scan's grid (SIRT)
    instances: list[dict] | None = None  # bone scans: lesion instances of the whole-body model
    opened: float = dataclasses.field(default_factory=time.time)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        finite = self.volume.array[np.isfinite(self.volume.array)]
        self._range = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)

    def describe(self) -> dict[str, Any]:
        v = self.volume
        return {
            "id": self.id, "name": self.name, "path": self.path, "shape": list(v.shape),
            "spacing": [float(s) for s in v.spacing], "modality": v.modality, "format": v.meta.get("format"),
            "min": self._range[0], "max": self._range[1],
            "units": units_of(v), "segmented": self.labels is not None, "model": self.model,
            "labels": label_colours(self.label_names) if self.labels is not None else [],
            "has_counts": self.counts is not None, "planar": self.planar,
            "view_names": list(v.meta.get("views", [])),
        }

    @property
    def planar(self) -> bool:
        """A whole-body bone scan: ``volume.array`` stacks the planar views ``[2, H, W]``."""
        return self.volume.meta.get("format") == "nm_planar"


def units_of(volume: Volume) -> str:
    modality = str(volume.modality or "").upper()
    if modality == "CT":
        return "HU"
    if modality == "PT":
        return "SUV" if volume.meta.get("suv_factor") else "Bq/ml"
    if modality == "NM":
        return "counts"
    return ""


def label_colours(names) -> list[dict[str, Any]]:
    """``[{"value", "name", "color": [r, g, b]}]`` for labels 1.. (the DICOM overlay's colours)."""
    from tfmedseg.io.dicom_overlay import label_colors

    colours = label_colors(list(names), max(len(names), 2))
    return [{"value": v, "name": names[v] if v < len(names) else f"label {v}", "color": list(colours[v])}
            for v in range(1, len(names)) if v in colours]


class ScanStore:
    """Open scans by id; the oldest are dropped beyond ``capacity`` (memory)."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._scans: OrderedDict[str, Scan] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, volume: Volume, name: str, path: str) -> Scan:
        with self._lock:
            scan = Scan(id=f"scan-{next(self._ids)}", name=name, path=path, volume=volume)
            self._scans[scan.id] = scan
            while len(self._scans) > self.capacity:
                self._scans.popitem(last=False)
            return scan

    def get(self, scan_id: str) -> Scan:
        with self._lock:
            scan = self._scans.get(scan_id)
        if scan is None:
            raise InvalidInputError("no such open scan (it may have been closed; open it again)", path=scan_id)
        return scan

    def all(self) -> list[Scan]:
        with self._lock:
            return list(self._scans.values())


def _check_view(view: str, index: int, shape) -> int:
    if view not in VIEWS:
        raise InvalidInputError(f"unknown view; allowed: {sorted(VIEWS)}", path=view)
    axis = VIEWS[view]
    if len(shape) != 3:
        raise InvalidInputError(f"views need a 3-D scan, this one has shape {tuple(shape)}", path=view)
    if not 0 <= index < shape[axis]:
        raise InvalidInputError(f"slice index {index} outside [0, {shape[axis] - 1}]", path=view)
    return axis


def view_slice(array: np.ndarray, view: str, index: int) -> np.ndarray:
    """The 2D slice of ``array`` ``[D, H, W]`` shown in ``view`` (see the module docstring)."""
    axis = _check_view(view, index, array.shape)
    if axis == 0:
        return array[index]
    if axis == 1:
        return array[::-1, index, :]
    return array[::-1, :, index]


def view_spacing(spacing, view: str) -> tuple[float, float]:
    """(row, column) pixel size in mm of ``view``."""
    sz, sy, sx = (float(s) for s in spacing)
    return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[view]


def label_table(labels: np.ndarray, spacing, names) -> list[dict[str, Any]]:
    """Per-label voxels and ml, the figures ``python -m tfmedseg.predict`` prints."""
    from tfmedseg.predict import label_volumes

    counts, volumes = label_volumes(labels, spacing, names)
    rows = []
    for value in sorted(v for v in counts if v):
        name = names[value] if value < len(names) else f"label {value}"
        voxels, ml = volumes[name]
        rows.append({"value": value, "name": name, "voxels": voxels, "volume_ml": ml})
    return rows


def lesion_labels(names) -> list[int]:
    """Label values whose name is a tumour / lesion."""
    return [v for v, n in enumerate(names) if v and str(n).lower() in LESION_NAMES]


def lesion_table(labels: np.ndarray, spacing, names) -> list[dict[str, Any]]:
    """The lesion list of every tumour/lesion label (all foreground labels when none is so named)."""
    from tfmedseg.metrics.lesion_list import lesion_list

    values = lesion_labels(names) or [v for v in range(1, len(names) or 2)]
    rows = []
    for value in values:
        for record in lesion_list(labels == value, spacing):
            rows.append({"label": value, "label_name": names[value] if value < len(names) else f"label {value}", **record})
    return rows


def sirt_plan(scan: Scan, *, lung_shunt: float, target_normal_dose_gy: float) -> dict[str, Any]:
    """TLR and partition-model plan of a segmented scan with SPECT counts on its grid.

    Raises:
        InvalidInputError: Not segmented, no SPECT counts opened, no liver/tumour labels.
    """
    from tfmedseg.clinical.maa_report import patient_dosimetry

    if scan.labels is None:
        raise InvalidInputError("segment the scan (liver and tumour) before asking for a SIRT plan", path=scan.name)
    names = [str(n).lower() for n in scan.label_names]
    if "liver" not in names:
        raise InvalidInputError(f"the segmentation has no 'liver' label (labels: {list(scan.label_names)})", path=scan.name)
    tumour_values = lesion_labels(scan.label_names)
    counts = scan.counts.array if scan.counts is not None else (scan.volume.array if scan.volume.modality == "NM" else None)
    if counts is None:
        raise InvalidInputError("open the SPECT counts of this case first (SIRT needs MAA SPECT counts)", path=scan.name)
    liver = scan.labels == names.index("liver")
    tumour = np.isin(scan.labels, tumour_values) if tumour_values else np.zeros_like(liver)
    return patient_dosimetry(np.clip(np.asarray(counts, np.float64), 0, None), liver, tumour, scan.volume.spacing,
                             lung_shunt=lung_shunt, target_normal_dose_gy=target_normal_dose_gy)


def counts_on_grid(counts: Volume, reference: Volume) -> Volume:
    """SPECT counts resampled (linear, world coordinates) onto ``reference``'s grid."""
    from tfmedseg.preprocessing.resample import resample_to_reference

    if counts.array.ndim != 3:
        raise InvalidInputError(f"SPECT counts must be 3-D, got shape {counts.shape}", path=counts.meta.get("path"))
    if counts.shape == reference.shape and np.allclose(counts.affine, reference.affine, atol=1e-3):
        array = counts.array.astype(np.float32)
    else:
        array = resample_to_reference(counts, reference.affine, reference.shape, "linear", 0.0)
    return Volume(array, reference.spacing, reference.affine, modality="NM", meta={"path": counts.meta.get("path")})


def planar_volume(views: dict[str, Volume], path: Path) -> Volume:
    """The planar views of a bone scan stacked as one ``[n_views, H, W]`` volume (axial index = view)."""
    names = list(views)
    shapes = {views[n].shape for n in names}
    if len(shapes) != 1:
        raise InvalidInputError(f"the views have different sizes {sorted(shapes)}; the viewer shows views of one size", path=path)
    first = views[names[0]]
    array = np.stack([np.asarray(views[n].array, np.float32) for n in names])
    return Volume(array, (1.0, *first.spacing), modality="NM",
                  meta={"format": "nm_planar", "views": names, "path": str(path)})


def planar_views(volume: Volume) -> dict[str, Volume]:
    """Inverse of :func:`planar_volume`: ``{view name: 2-D Volume}``."""
    return {name: Volume(volume.array[i], volume.spacing[1:], modality="NM", meta={"view": name})
            for i, name in enumerate(volume.meta["views"])}


def instance_labels(shape, per_view: dict[str, dict], masks: dict[str, np.ndarray], view_names) -> tuple[np.ndarray, list[dict]]:
    """Label map ``[n_views, H, W]`` (class id per instance mask; higher scores painted last) and the
    instance list ``[{"id", "view", "index", "class_id", "class_name", "score", "box", "mask_pixels", "center"}]``."""
    labels = np.zeros(shape, np.uint8)
    rows = []
    for index, view in enumerate(view_names):
        lesions = per_view[view]["lesions"]
        for k in sorted(range(len(lesions)), key=lambda k: lesions[k]["score"]):
            labels[index][masks[view][k]] = lesions[k]["class_id"]
        for lesion in lesions:
            y0, x0, y1, x1 = lesion["box"]
            center = [index, int(np.clip((y0 + y1) / 2, 0, shape[1] - 1)), int(np.clip((x0 + x1) / 2, 0, shape[2] - 1))]
            rows.append({"view": view, "index": index, **lesion, "center": center})
    rows.sort(key=lambda r: -r["score"])
    return labels, [{"id": i, **r} for i, r in enumerate(rows, start=1)]


def source_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
