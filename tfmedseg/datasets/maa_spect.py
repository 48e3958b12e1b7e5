"""99mTc-MAA SPECT/CT for SIRT planning (seed 000): a layout defined by tfmedseg.

The clinical data of seed 000 is private, so tfmedseg defines the layout (``docs/datasets.md``)::

    <root>/<patient>/CT/                  CT DICOM series (one series, HU)
    <root>/<patient>/SPECT/               SPECT DICOM series (NM, counts), same FrameOfReferenceUID,
                                          own (coarser) grid; one multi-frame file or one per slice
    <root>/<patient>/masks/liver.nii.gz   liver mask 0/1 on the CT grid (tumours included)
    <root>/<patient>/masks/tumor.nii.gz   tumour mask 0/1 on the CT grid
    <root>/<patient>/display/             optional seed-000 display variant:
        fused/slice_KKKK.png              fused SPECT/CT RGB slice of CT slice KKKK
        liver/slice_KKKK.png              liver mask image (0 / 255), same size
        tumor/slice_KKKK.png              tumour mask image (0 / 255), same size
    <root>/<patient>/phantom_truth.json   optional (phantoms only): {"tumour_to_liver_ratio": ..}

``KKKK`` is the index of the CT slice in the canonical order (inferior to superior, i.e. sorted
by ImagePositionPatient z). A patient without ``masks/`` is unlabeled (label None).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from tfmedseg.datasets._common import lazy_mask_label, require_dir, require_nonempty
from tfmedseg.datasets.case import Case
from tfmedseg.errors import DatasetLayoutError, InvalidInputError
from tfmedseg.io.lazy import LazyMapping
from tfmedseg.progress import progress

__all__ = ["load_maa_spect", "read_display_slices", "index_display_slices", "lazy_display_slices", "MASK_NAMES",
           "DISPLAY_KEYS"]

#: Mask files of a labeled patient (under ``masks/``) and their label values.
MASK_NAMES = {"liver": 1, "tumor": 2}
_SLICE = re.compile(r"^slice_(\d+)\.png$", re.IGNORECASE)
_TRUTH = "phantom_truth.json"


def _read_png(path: Path, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = "RGB" if channels == 3 else "L"
            array = np.asarray(image.convert(mode))
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidInputError(f"cannot read PNG image ({exc})", path=path) from exc
    return array


#: The keys of a patient's display variant (:func:`read_display_slices`, ``meta["display"]``).
DISPLAY_KEYS = ("slices", "fused", *MASK_NAMES)


def index_display_slices(display_dir: str | os.PathLike, depth: int | None = None) -> list[tuple[int, Path]]:
    """Check the layout of the seed-000 display variant of one patient, reading no image.

    Args:
        display_dir: The patient's ``display/`` folder.
        depth: Number of CT slices; slice indices must be smaller.

    Returns:
        ``[(slice index, fused PNG path)]`` sorted by slice index; every fused image has its
        ``liver/`` and ``tumor/`` partner and every mask image its fused partner.

    Raises:
        DatasetLayoutError: Missing ``fused/`` folder, no slices, an image without its partner.
        InvalidInputError: A slice index outside the CT.
    """
    display_dir = Path(display_dir)
    fused_dir = display_dir / "fused"
    if not fused_dir.is_dir():
        raise DatasetLayoutError("display variant without a fused/ folder", path=fused_dir)
    files = sorted((int(m.group(1)), p) for p in fused_dir.iterdir() if (m := _SLICE.match(p.name)))
    require_nonempty(files, fused_dir, "fused slice_KKKK.png images")
    for sub in MASK_NAMES:
        sub_dir = display_dir / sub
        if sub_dir.is_dir():
            extra = sorted(p.name for p in sub_dir.iterdir() if _SLICE.match(p.name) and not (fused_dir / p.name).is_file())
            if extra:
                raise DatasetLayoutError(f"mask image has no partner fused/{extra[0]}", path=sub_dir / extra[0])
    for index, path in files:
        if depth is not None and index >= depth:
            raise InvalidInputError(f"slice index {index} is outside the CT (depth {depth})", path=path)
        for name in MASK_NAMES:
            mask_path = display_dir / name / path.name
            if not mask_path.is_file():
                raise DatasetLayoutError(f"fused slice has no partner {name}/{path.name}", path=mask_path)
    return files


def _read_display_images(display_dir: Path, files: list[tuple[int, Path]]) -> dict:
    """Read the PNGs :func:`index_display_slices` listed (sizes and mask values checked)."""
    fused, masks = [], {name: [] for name in MASK_NAMES}
    for _, path in files:
        rgb = _read_png(path, 3)
        for name in MASK_NAMES:
            mask_path = display_dir / name / path.name
            mask = _read_png(mask_path, 1)
            if mask.shape != rgb.shape[:2]:
                raise InvalidInputError(f"mask image size {mask.shape} differs from the fused image {rgb.shape[:2]}", path=mask_path)
            values = set(np.unique(mask).tolist())
            if not values <= {0, 255} and not values <= {0, 1}:
                raise InvalidInputError(f"mask image must hold only 0/255 (or 0/1), found {sorted(values)[:8]}", path=mask_path)
            masks[name].append(mask > 0)
        if fused and rgb.shape != fused[0].shape:
            raise InvalidInputError(f"fused image size {rgb.shape} differs from the first slice {fused[0].shape}", path=path)
        fused.append(rgb)
    slices = np.array([index for index, _ in files])
    return {"slices": slices, "fused": np.stack(fused), **{k: np.stack(v) for k, v in masks.items()}}


def read_display_slices(display_dir: str | os.PathLike, depth: int | None = None) -> dict:
    """Read the seed-000 display variant of one patient.

    Args:
        display_dir: The patient's ``display/`` folder.
        depth: Number of CT slices; slice indices must be smaller.

    Returns:
        ``{"slices": int array [N], "fused": uint8 [N, H, W, 3], "liver": bool [N, H, W],
        "tumor": bool [N, H, W]}``.

    Raises:
        DatasetLayoutError: Missing ``fused/`` folder, no slices, an image without its partner.
        InvalidInputError: Unreadable PNG, size mismatch, mask values other than 0/255 (or 0/1),
            a slice index outside the CT.
    """
    files = index_display_slices(display_dir, depth)
    return _read_display_images(Path(display_dir), files)


def lazy_display_slices(display_dir: str | os.PathLike, depth: int | None = None) -> LazyMapping:
    """:func:`read_display_slices` on demand: the layout is checked now (:func:`index_display_slices`),
    the PNGs are read when a value is first asked for (their errors name the file then) and
    dropped by ``release()`` / :meth:`~tfmedseg.datasets.case.Case.release`."""
    display_dir = Path(display_dir)
    files = index_display_slices(display_dir, depth)
    return LazyMapping(DISPLAY_KEYS, lambda: _read_display_images(display_dir, files), path=display_dir)


def _read_truth(path: Path) -> dict:
    try:
        truth = json.loads(path.read_text())
        ratio = float(truth["tumour_to_liver_ratio"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"expected a JSON object with a numeric tumour_to_liver_ratio ({exc})", path=path) from exc
    if not np.isfinite(ratio) or ratio <= 0:
        raise InvalidInputError(f"tumour_to_liver_ratio must be positive, got {ratio}", path=path)
    return truth


def load_maa_spect(root: str | os.PathLike, *, display: bool = True) -> list[Case]:
    """Load every MAA SPECT/CT patient under ``root`` (layout in the module docstring).

    Args:
        root: Dataset root with one folder per patient.
        display: Also attach the optional ``display/`` variant as ``meta["display"]`` (a
            :class:`~tfmedseg.io.lazy.LazyMapping` with the keys of :func:`read_display_slices`).

    Returns:
        Cases sorted by patient folder name: ``images["ct"]`` (HU) and ``images["spect"]``
        (counts, modality ``NM``) each on its own canonical grid, ``label`` uint8 0/1/2
        (background, liver, tumour; tumour wins) on the CT grid or None without ``masks/``;
        ``meta``: ``paths``, ``display`` (see :func:`read_display_slices`) when present,
        ``tumour_to_liver_ratio`` and ``lung_shunt_fraction`` when ``phantom_truth.json`` exists.
        CT, SPECT and label are :class:`~tfmedseg.io.lazy.LazyVolume` s: only the DICOM and NIfTI
        headers are read here (series, frames of reference and grids checked), the voxels when
        ``array`` is first used (mask values are checked then); :meth:`~tfmedseg.datasets.case.Case.release`
        drops them again. The optional display PNGs are listed and paired here and read on first use
        of ``meta["display"]`` (also dropped by ``release``).

    Raises:
        DatasetLayoutError: No patient folders, a patient without CT/ or SPECT/, ``masks/``
            without both mask files, display images without partners.
        InvalidInputError: Unreadable series, SPECT in another frame of reference than the CT, masks
            not on the CT grid, a display slice index outside the CT, a bad ``phantom_truth.json``;
            undecodable pixel data or non-binary masks when the voxels are read, unreadable or
            mismatched display PNGs when ``meta["display"]`` is first used.

    Example:
        >>> case = load_maa_spect("data/maa_spect")[0]                       # doctest: +SKIP
        >>> case.images["spect"].spacing, case.meta.get("tumour_to_liver_ratio")  # doctest: +SKIP
    """
    from tfmedseg.io.lazy import read_dicom_series_lazy, read_nifti_lazy

    root = require_dir(root, "MAA SPECT/CT root")
    patients = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    require_nonempty(patients, root, "patient folders")
    cases = []
    for folder in progress(patients, desc="MAA SPECT/CT headers", unit="patient"):
        for sub in ("CT", "SPECT"):
            if not (folder / sub).is_dir():
                raise DatasetLayoutError(f"patient {folder.name} has no {sub}/ DICOM series folder", path=folder / sub)
        ct = read_dicom_series_lazy(folder / "CT")
        spect = read_dicom_series_lazy(folder / "SPECT")
        ct_for, spect_for = ct.meta.get("frame_of_reference_uid"), spect.meta.get("frame_of_reference_uid")
        if not ct_for or ct_for != spect_for:
            raise InvalidInputError(
                f"SPECT FrameOfReferenceUID {spect_for!r} differs from the CT's {ct_for!r}; the series must share one frame",
                path=folder / "SPECT",
            )
        paths = {"ct": str(folder / "CT"), "spect": str(folder / "SPECT")}
        label = None
        masks_dir = folder / "masks"
        if masks_dir.is_dir():
            masks = []
            for name, value in MASK_NAMES.items():
                path = masks_dir / f"{name}.nii.gz"
                if not path.is_file() and (masks_dir / f"{name}.nii").is_file():
                    path = masks_dir / f"{name}.nii"
                if not path.is_file():
                    raise DatasetLayoutError(f"masks/ lacks {name}.nii.gz", path=path)
                masks.append((read_nifti_lazy(path, "SEG"), path, value))
                paths[name] = str(path)
            label = lazy_mask_label(ct, masks, masks_dir)
        meta: dict = {"paths": paths}
        if display and (folder / "display").is_dir():
            meta["display"] = lazy_display_slices(folder / "display", depth=ct.shape[0])
        if (folder / _TRUTH).is_file():
            truth = _read_truth(folder / _TRUTH)
            meta["tumour_to_liver_ratio"] = float(truth["tumour_to_liver_ratio"])
            if "lung_shunt_fraction" in truth:
                meta["lung_shunt_fraction"] = float(truth["lung_shunt_fraction"])
        cases.append(Case(folder.name, {"ct": ct, "spect": spect}, label, None, meta))
    return cases
