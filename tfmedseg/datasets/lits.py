"""LiTS (Liver Tumor Segmentation Challenge 2017) loader.

On-disk layout (as distributed), either flat or split into the two training folders::

    <root>/volume-0.nii            <root>/Training Batch 1/volume-0.nii
    <root>/segmentation-0.nii      <root>/Training Batch 1/segmentation-0.nii
    ...                            <root>/Training Batch 2/volume-28.nii ...

``.nii`` and ``.nii.gz`` are both accepted. Labels: 0 background, 1 liver, 2 tumour. The test
release (``test-volume-N.nii``, no segmentations) is loaded with ``split="test"``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tfmedseg.datasets._common import lazy_label_volume, require_dir, require_nonempty
from tfmedseg.datasets.case import Case
from tfmedseg.errors import ConfigError, DatasetLayoutError
from tfmedseg.io.lazy import read_nifti_lazy

__all__ = ["load_lits", "LITS_LABELS", "LITS_SPLITS"]

#: Label values of a LiTS segmentation: background, liver, tumour.
LITS_LABELS = (0, 1, 2)
#: ``split`` values accepted by :func:`load_lits`.
LITS_SPLITS = ("train", "test")

_PATTERN = re.compile(r"^(test-volume|volume|segmentation)-(\d+)\.nii(\.gz)?$", re.IGNORECASE)


def _scan(root: Path) -> dict[str, dict[int, Path]]:
    """Map kind (volume / segmentation / test-volume) -> index -> path over root and its subfolders."""
    found: dict[str, dict[int, Path]] = {"volume": {}, "segmentation": {}, "test-volume": {}}
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    for folder in folders:
        for path in sorted(folder.iterdir()):
            match = _PATTERN.match(path.name)
            if not match or not path.is_file():
                continue
            kind, index = match.group(1).lower(), int(match.group(2))
            if index in found[kind]:
                raise DatasetLayoutError(
                    f"duplicate {kind} {index}: also found at {found[kind][index]}", path=path
                )
            found[kind][index] = path
    return found


def load_lits(root: str | os.PathLike, *, split: str = "train") -> list[Case]:
    """Load every LiTS case under ``root``.

    Args:
        root: Folder holding ``volume-N.nii[.gz]`` / ``segmentation-N.nii[.gz]`` directly or in
            subfolders such as ``Training Batch 1`` and ``Training Batch 2``.
        split: ``"train"`` (volume/segmentation pairs) or ``"test"`` (``test-volume-N``, unlabeled).

    Returns:
        Cases sorted by N, ``case_id`` ``"lits-NNN"``; ``images["ct"]`` in HU (modality ``CT``,
        canonical ``[D, H, W]``), ``label`` uint8 0/1/2 (modality ``SEG``) on the CT grid
        (None for ``split="test"``); ``meta`` has ``index`` and ``paths``. The volumes are
        :class:`~tfmedseg.io.lazy.LazyVolume` s: only the headers are read here (sizes checked
        against the files), the voxels when ``array`` is first used (label values are checked
        then); :meth:`~tfmedseg.datasets.case.Case.release` drops them again.

    Raises:
        ConfigError: Unknown ``split``.
        DatasetLayoutError: ``root`` missing or without volumes, a volume without its segmentation
            (or the reverse), a duplicate index.
        InvalidInputError: Unreadable NIfTI header, a header declaring more data than the file
            holds, shape/affine mismatch; label values outside 0/1/2 or unreadable voxels when the
            voxels are read.

    Example:
        >>> cases = load_lits("data/LiTS")  # doctest: +SKIP
        >>> cases[0].images["ct"].shape, cases[0].label.array.max()  # doctest: +SKIP
    """
    if split not in LITS_SPLITS:
        raise ConfigError(f"unknown LiTS split {split!r}; allowed: {LITS_SPLITS}", path="split")
    root = require_dir(root, "LiTS root")
    found = _scan(root)
    if split == "test":
        volumes = require_nonempty(sorted(found["test-volume"].items()), root, "LiTS test-volume-N.nii files")
        return [
            Case(f"lits-test-{n:03d}", {"ct": read_nifti_lazy(p, "CT")}, None, None, {"index": n, "paths": {"ct": str(p)}})
            for n, p in volumes
        ]
    volumes, segmentations = found["volume"], found["segmentation"]
    require_nonempty(list(volumes) + list(segmentations), root, "LiTS volume-N.nii / segmentation-N.nii files")
    for n, path in sorted(segmentations.items()):
        if n not in volumes:
            raise DatasetLayoutError(f"segmentation has no partner volume-{n}.nii[.gz]", path=path)
    for n, path in sorted(volumes.items()):
        if n not in segmentations:
            raise DatasetLayoutError(f"volume has no partner segmentation-{n}.nii[.gz]", path=path)
    cases = []
    for n in sorted(volumes):
        ct = read_nifti_lazy(volumes[n], "CT")
        label = lazy_label_volume(ct, segmentations[n], LITS_LABELS)
        meta = {"index": n, "paths": {"ct": str(volumes[n]), "label": str(segmentations[n])}}
        cases.append(Case(f"lits-{n:03d}", {"ct": ct}, label, None, meta))
    return cases
