"""3D-IRCADb-01 loader (20 contrast CTs with organ masks, IRCAD Strasbourg).

On-disk layout (after unzipping each patient's ``PATIENT_DICOM.zip`` and ``MASKS_DICOM.zip``)::

    <root>/3Dircadb1.1/PATIENT_DICOM/image_0 ... image_N      CT series (HU)
    <root>/3Dircadb1.1/MASKS_DICOM/liver/image_0 ...          binary mask series (0/255)
    <root>/3Dircadb1.1/MASKS_DICOM/livertumor01/ ...          one series per tumour
    <root>/3Dircadb1.1/MASKS_DICOM/<other organ>/ ...         (ignored: bone, portalvein, ...)

The liver mask and every ``livertumorNN`` / ``livertumor`` / ``livertumors`` mask are merged into
one label map: 0 background, 1 liver, 2 tumour (tumour wins; a tumour voxel outside the liver
mask still counts as tumour). Cysts (``livercyst``) are not tumours and are ignored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


from tfmedseg.datasets._common import lazy_mask_label, require_dir, require_nonempty
from tfmedseg.datasets.case import Case
from tfmedseg.errors import DatasetLayoutError
from tfmedseg.progress import progress

__all__ = ["load_ircadb", "is_tumour_mask_name"]

_PATIENT = re.compile(r"^3Dircadb1\.(\d+)$", re.IGNORECASE)
_TUMOUR = re.compile(r"^livertumou?rs?(_?\d+)?$", re.IGNORECASE)


def is_tumour_mask_name(name: str) -> bool:
    """True for the MASKS_DICOM folder names of liver tumours (``livertumor01``, ``livertumors``, ...)."""
    return bool(_TUMOUR.match(name))


def _require_unzipped(folder: Path, name: str) -> Path:
    path = folder / name
    if path.is_dir():
        return path
    if (folder / f"{name}.zip").is_file():
        raise DatasetLayoutError(f"{name}.zip is not extracted; unzip it in place to get {name}/", path=folder / f"{name}.zip")
    raise DatasetLayoutError(f"missing {name}/ folder", path=path)


def load_ircadb(root: str | os.PathLike) -> list[Case]:
    """Load every ``3Dircadb1.N`` patient under ``root``.

    Args:
        root: Folder holding the ``3Dircadb1.N`` patient folders.

    Returns:
        Cases sorted by N, ``case_id`` ``"3Dircadb1.N"``; ``images["ct"]`` in HU (canonical
        ``[D, H, W]``), ``label`` uint8 0/1/2 on the CT grid; ``meta`` has ``index``,
        ``tumour_masks`` (folder names merged into label 2) and ``paths``. The volumes are
        :class:`~tfmedseg.io.lazy.LazyVolume` s: only the DICOM headers are read here (series,
        geometry and grids checked), the pixel data when ``array`` is first used (mask values
        are checked then); :meth:`~tfmedseg.datasets.case.Case.release` drops them again.

    Raises:
        DatasetLayoutError: No patient folders, missing or still zipped ``PATIENT_DICOM`` /
            ``MASKS_DICOM``, no ``liver`` mask, an empty mask folder.
        InvalidInputError: Unreadable or inconsistent DICOM series, a mask on another grid than
            the CT; undecodable pixel data or mask values other than 0/1 or 0/255 when the voxels
            are read.

    Example:
        >>> case = load_ircadb("data/3Dircadb1")[0]  # doctest: +SKIP
        >>> case.case_id, case.label.array.max()     # doctest: +SKIP
    """
    from tfmedseg.io.lazy import read_dicom_series_lazy

    root = require_dir(root, "3D-IRCADb root")
    patients = sorted(
        ((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _PATIENT.match(p.name))),
        key=lambda t: t[0],
    )
    require_nonempty(patients, root, "3Dircadb1.N patient folders")
    cases = []
    for index, folder in progress(patients, desc="3D-IRCADb headers", unit="patient"):
        ct_dir = _require_unzipped(folder, "PATIENT_DICOM")
        masks_dir = _require_unzipped(folder, "MASKS_DICOM")
        ct = read_dicom_series_lazy(ct_dir)
        liver_dir = masks_dir / "liver"
        if not liver_dir.is_dir():
            raise DatasetLayoutError("missing liver mask folder MASKS_DICOM/liver", path=liver_dir)
        tumour_dirs = sorted(p for p in masks_dir.iterdir() if p.is_dir() and is_tumour_mask_name(p.name))
        masks = []
        for mask_dir, value in [(liver_dir, 1)] + [(p, 2) for p in tumour_dirs]:
            if not any(mask_dir.iterdir()):
                raise DatasetLayoutError("mask folder is empty", path=mask_dir)
            masks.append((read_dicom_series_lazy(mask_dir, labels=True), mask_dir, value))
        meta = {"index": index, "tumour_masks": [p.name for p in tumour_dirs],
                "paths": {"ct": str(ct_dir), "masks": str(masks_dir)}}
        cases.append(Case(folder.name, {"ct": ct}, lazy_mask_label(ct, masks, masks_dir), None, meta))
    return cases
