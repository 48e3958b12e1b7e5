"""Whole-body bone scintigraphy with lesion instances (seed 001): a layout defined by tfmedseg.

Layout (``docs/datasets.md``)::

    <root>/<patient>/wholebody.dcm        multi-frame NM: anterior + posterior views (16-bit counts)
    <root>/<patient>/annotation.json      labeled patients only
    <root>/<patient>/masks/*.png          optional lesion mask images referenced by the JSON

``annotation.json``::

    {"views": {
       "anterior":  {"chest_box": [y0, x0, y1, x1],
                     "lesions": [{"class": "malignant", "polygon": [[x, y], ...]},
                                 {"class": "infection_inflammation", "mask": "masks/anterior_01.png"}]},
       "posterior": {...}}}

Pixel coordinates refer to each view **as stored in the DICOM file** (what a viewer shows: the
posterior seen from behind); ``x`` is the column, ``y`` the row, boxes are ``[y0, x0, y1, x1]``
with exclusive ends. The loader returns both views in the shared left/right convention of
:func:`tfmedseg.io.nm_planar.read_nm_wholebody` (posterior flipped so a lesion has the same column
in both views) and mirrors the posterior annotations with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tfmedseg.datasets._common import require_dir, require_nonempty
from tfmedseg.datasets.case import LESION_CLASSES, Case, Instance
from tfmedseg.datasets.paths import resolve_inside
from tfmedseg.errors import DatasetLayoutError, InvalidInputError

__all__ = ["load_bone_scan", "parse_annotation", "normalise_class", "BONE_VIEWS"]

BONE_VIEWS = ("anterior", "posterior")
SCAN_NAME = "wholebody.dcm"
ANNOTATION_NAME = "annotation.json"


def normalise_class(name: str, path: str | os.PathLike) -> str:
    """Map a class name to :data:`LESION_CLASSES` (case, ``/``, ``-`` and spaces are normalised).

    Raises:
        InvalidInputError: Unknown class, naming ``path``.
    """
    key = str(name).strip().lower().replace("/", "_").replace("-", "_").replace(" ", "_")
    if key not in LESION_CLASSES:
        raise InvalidInputError(f"unknown lesion class {name!r}; allowed: {LESION_CLASSES}", path=path)
    return key


def _box_from_mask(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _lesion_mask(entry: dict, shape: tuple[int, int], folder: Path, path: Path, where: str, root: Path | None = None) -> np.ndarray:
    from skimage.draw import polygon2mask

    has_poly, has_mask = "polygon" in entry, "mask" in entry
    if has_poly == has_mask:
        raise InvalidInputError(f"{where}: give exactly one of 'polygon' or 'mask'", path=path)
    if has_poly:
        try:
            points = np.asarray(entry["polygon"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{where}: polygon must be a list of [x, y] pairs ({exc})", path=path) from exc
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3 or not np.isfinite(points).all():
            raise InvalidInputError(f"{where}: polygon needs >= 3 finite [x, y] points, got shape {points.shape}", path=path)
        if points[:, 0].min() < -0.5 or points[:, 1].min() < -0.5 or points[:, 0].max() > shape[1] - 0.5 or points[:, 1].max() > shape[0] - 0.5:
            raise InvalidInputError(f"{where}: polygon lies outside the {shape[0]}x{shape[1]} image", path=path)
        mask = polygon2mask(shape, points[:, ::-1])
    else:
        from PIL import Image, UnidentifiedImageError

        mask_path = resolve_inside(entry["mask"], folder, root if root is not None else folder.parent, source=path,
                                   what=f"{where}: lesion mask")
        if not mask_path.is_file():
            raise DatasetLayoutError(f"{where}: lesion mask file is missing", path=mask_path)
        try:
            with Image.open(mask_path) as image:
                array = np.asarray(image.convert("L"))
        except (OSError, UnidentifiedImageError) as exc:
            raise InvalidInputError(f"cannot read lesion mask PNG ({exc})", path=mask_path) from exc
        if array.shape != shape:
            raise InvalidInputError(f"mask size {array.shape} differs from the view size {shape}", path=mask_path)
        mask = array > 0
    if not mask.any():
        raise InvalidInputError(f"{where}: lesion covers no pixel", path=path)
    return mask


def parse_annotation(path: str | os.PathLike, shapes: dict[str, tuple[int, int]], root: str | os.PathLike | None = None) -> tuple[list[Instance], dict]:
    """Parse and validate one ``annotation.json``.

    Args:
        path: The JSON file.
        shapes: View name -> ``(H, W)`` of that view.
        root: Dataset root; mask paths named in the file must resolve inside it (default: the
            parent of the annotation's patient folder).

    Returns:
        ``(instances, chest_boxes)``: lesions as :class:`Instance` with masks and boxes in the
        stored pixel frame of each view (not yet mirrored); chest box per view ``(y0, x0, y1, x1)``.

    Raises:
        InvalidInputError: Bad JSON, unknown view or class, a box or polygon outside the image,
            an empty lesion, a mask PNG of the wrong size.
        DatasetLayoutError: A referenced mask file is missing.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"not valid JSON ({exc})", path=path) from exc
    views = data.get("views") if isinstance(data, dict) else None
    if not isinstance(views, dict) or not views:
        raise InvalidInputError("expected an object with a non-empty 'views' mapping", path=path)
    instances, boxes = [], {}
    for view, content in views.items():
        if view not in shapes:
            raise InvalidInputError(f"unknown view {view!r}; allowed: {tuple(shapes)}", path=path)
        shape = shapes[view]
        box = content.get("chest_box") if isinstance(content, dict) else None
        if box is not None:
            try:
                y0, x0, y1, x1 = (float(v) for v in box)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"{view}: chest_box must be [y0, x0, y1, x1] ({exc})", path=path) from exc
            if not (0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]):
                raise InvalidInputError(
                    f"{view}: chest_box {list(box)} lies outside the {shape[0]}x{shape[1]} image or is empty", path=path
                )
            boxes[view] = (y0, x0, y1, x1)
        lesions = content.get("lesions", []) if isinstance(content, dict) else []
        if not isinstance(lesions, list):
            raise InvalidInputError(f"{view}: 'lesions' must be a list", path=path)
        for j, entry in enumerate(lesions):
            where = f"{view} lesion {j}"
            if not isinstance(entry, dict) or "class" not in entry:
                raise InvalidInputError(f"{where}: needs a 'class'", path=path)
            cls = normalise_class(entry["class"], path)
            mask = _lesion_mask(entry, shape, path.parent, path, where, Path(root) if root is not None else None)
            instances.append(Instance(view, cls, _box_from_mask(mask), mask))
    return instances, boxes


def _mirror(instance: Instance) -> Instance:
    mask = instance.mask[:, ::-1].copy()
    return Instance(instance.view, instance.class_name, _box_from_mask(mask), mask)


def load_bone_scan(root: str | os.PathLike) -> list[Case]:
    """Load every bone-scan patient under ``root`` (layout in the module docstring).

    Args:
        root: Dataset root with one folder per patient.

    Returns:
        Cases sorted by folder name: ``images["anterior"]`` and ``images["posterior"]`` (2D
        ``[H, W]`` float32 counts, modality ``NM``, shared left/right convention); ``instances``:
        lesion :class:`Instance` s (``view``, ``class_name`` in :data:`LESION_CLASSES`, ``box``
        ``(y0, x0, y1, x1)``, bool ``mask`` ``[H, W]``) or None for unlabeled patients (no
        ``annotation.json``); ``meta["chest_boxes"]`` per view (labeled patients), ``meta["paths"]``.

    Raises:
        DatasetLayoutError: No patient folders, a folder without ``wholebody.dcm``, a missing
            mask file.
        InvalidInputError: Unreadable DICOM, a view missing, bad annotations (see
            :func:`parse_annotation`).

    Example:
        >>> case = load_bone_scan("data/bone_scan")[0]                 # doctest: +SKIP
        >>> [(i.class_name, i.box) for i in case.instances or []]       # doctest: +SKIP
    """
    from tfmedseg.io.nm_planar import read_nm_wholebody

    root = require_dir(root, "bone scan root")
    patients = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    require_nonempty(patients, root, "patient folders")
    cases = []
    for folder in patients:
        scan = folder / SCAN_NAME
        if not scan.is_file():
            raise DatasetLayoutError(f"patient {folder.name} has no {SCAN_NAME}", path=scan)
        views = read_nm_wholebody(scan)
        images = {name: views[name] for name in BONE_VIEWS}
        paths = {"scan": str(scan)}
        instances, meta = None, {}
        annotation = folder / ANNOTATION_NAME
        if annotation.is_file():
            shapes = {name: images[name].shape for name in BONE_VIEWS}
            stored, boxes = parse_annotation(annotation, shapes, root=folder.parent)
            mirrored = {name: bool(images[name].meta.get("flipped_lr", False)) for name in BONE_VIEWS}
            instances = [_mirror(i) if mirrored[i.view] else i for i in stored]
            chest = {}
            for view, (y0, x0, y1, x1) in boxes.items():
                width = shapes[view][1]
                chest[view] = (y0, width - x1, y1, width - x0) if mirrored[view] else (y0, x0, y1, x1)
            meta["chest_boxes"] = chest
            paths["annotation"] = str(annotation)
        meta["paths"] = paths
        cases.append(Case(folder.name, images, None, instances, meta))
    return cases
