"""Dataset loaders: each real on-disk layout -> a list of :class:`~tfmedseg.datasets.case.Case`.

========== ======================================== ================================================
name        loader                                   layout (see ``docs/datasets.md``)
========== ======================================== ================================================
lits        :func:`~tfmedseg.datasets.lits.load_lits`             ``volume-N.nii`` / ``segmentation-N.nii``
ircadb      :func:`~tfmedseg.datasets.ircadb.load_ircadb`         ``3Dircadb1.N/PATIENT_DICOM``, ``MASKS_DICOM``
hecktor     :func:`~tfmedseg.datasets.hecktor.load_hecktor`       ``<pid>_ct/_pt/_gtvt.nii.gz`` + ``bbox.csv``
maa_spect   :func:`~tfmedseg.datasets.maa_spect.load_maa_spect`   ``<patient>/CT``, ``SPECT``, ``masks``, ``display``
bone_scan   :func:`~tfmedseg.datasets.bone_scan.load_bone_scan`   ``<patient>/wholebody.dcm`` + ``annotation.json``
========== ======================================== ================================================

Every loader validates the layout and the content and raises a :mod:`tfmedseg.errors` exception
naming the offending file; no case is skipped silently.

Example:
    >>> from tfmedseg.datasets import load_dataset
    >>> cases = load_dataset("lits", "data/LiTS")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from tfmedseg.datasets.case import LESION_CLASSES, Case, Instance
from tfmedseg.errors import ConfigError

__all__ = ["DATASETS", "load_dataset", "Case", "Instance", "LESION_CLASSES"]

#: Names accepted by :func:`load_dataset` (and by the phantom generators).
DATASETS = ("lits", "ircadb", "hecktor", "maa_spect", "bone_scan")

_LOADERS = {
    "lits": "tfmedseg.datasets.lits:load_lits",
    "ircadb": "tfmedseg.datasets.ircadb:load_ircadb",
    "hecktor": "tfmedseg.datasets.hecktor:load_hecktor",
    "maa_spect": "tfmedseg.datasets.maa_spect:load_maa_spect",
    "bone_scan": "tfmedseg.datasets.bone_scan:load_bone_scan",
}


def load_dataset(name: str, root: str | os.PathLike, **options: Any) -> list[Case]:
    """Load every case of dataset ``name`` stored under ``root`` in its real on-disk layout.

    Args:
        name: One of :data:`DATASETS`.
        root: Dataset root directory.
        **options: Loader-specific keyword options (e.g. ``split="test"`` for LiTS).

    Returns:
        The cases, sorted by case id.

    Raises:
        ConfigError: Unknown ``name``.
        DatasetLayoutError, InvalidInputError: From the loader, naming the offending file.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; allowed: {DATASETS}", path="dataset")
    module_name, func_name = _LOADERS[name].split(":")
    loader = getattr(importlib.import_module(module_name), func_name)
    return loader(root, **options)
