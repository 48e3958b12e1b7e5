"""Synthetic phantoms written in each dataset's real on-disk layout (the embedded default data).

Every dataset that :func:`tfmedseg.datasets.load_dataset` reads has a generator here that writes
small cases (CPU sized) in exactly that layout, so the whole pipeline runs without the real data:

========== ============================================================================
lits        abdominal CT + liver/tumour labels, ``volume-N.nii`` in ``Training Batch 1/2``
ircadb      the same CTs as 3DIRCADb-01 DICOM: ``3Dircadb1.N/PATIENT_DICOM``, ``MASKS_DICOM``
hecktor     head and neck CT + PET (SUV) + GTVt NIfTI and ``bbox.csv``
maa_spect   abdominal CT + paired 99mTc-MAA SPECT DICOM, masks, fused display PNGs, TLR truth
bone_scan   whole-body NM (anterior/posterior) + JSON lesion annotations, some unlabeled
========== ============================================================================

Generation is deterministic per ``(seed, case index)``: case ``i`` is the same whatever the
number of cases. A ``phantom.json`` manifest at the root records the dataset, seed and the
generator's ground truth (tumour sizes, TLR, ...), which real datasets do not have.

Example:
    >>> from tfmedseg.datasets.phantoms import ensure_phantoms
    >>> root = ensure_phantoms("lits", "/tmp/phantoms/lits-n4-s0", cases=4, seed=0)  # doctest: +SKIP
    >>> from tfmedseg.datasets import load_dataset
    >>> len(load_dataset("lits", root))                                               # doctest: +SKIP
    4
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from tfmedseg.io._atomic import atomic_dir, make_staging_dir
from tfmedseg.errors import ConfigError, DatasetLayoutError
from tfmedseg.progress import ProgressSequence

__all__ = ["generate", "ensure_phantoms", "manifest_matches", "PHANTOM_DATASETS", "MANIFEST_NAME", "COMPLETE_MARKER",
           "case_rng"]

#: Dataset names with a phantom generator (the same names as the loaders).
PHANTOM_DATASETS = ("lits", "ircadb", "hecktor", "maa_spect", "bone_scan")
#: Manifest written at the root of every generated dataset.
MANIFEST_NAME = "phantom.json"
#: Marker written by :func:`ensure_phantoms` once a dataset is complete.
COMPLETE_MARKER = ".tfmedseg-phantoms-complete"
#: Bump when a generator changes its output; :func:`ensure_phantoms` regenerates on mismatch.
GENERATOR_VERSION = 1
#: Per-dataset version where one generator changed alone (others keep :data:`GENERATOR_VERSION`):
#: maa_spect 2 = MAA tumour plan (no sub-resolution tumours) and display window 0.8-1.6.
DATASET_VERSIONS = {"maa_spect": 2}


def generator_version(dataset: str) -> int:
    """The generator version recorded in (and required of) a phantom dataset of ``dataset``."""
    return DATASET_VERSIONS.get(dataset, GENERATOR_VERSION)

_WRITERS = {
    "lits": "tfmedseg.datasets.phantoms._writers_nifti:write_lits",
    "hecktor": "tfmedseg.datasets.phantoms._writers_nifti:write_hecktor",
    "ircadb": "tfmedseg.datasets.phantoms._writers_dicom:write_ircadb",
    "maa_spect": "tfmedseg.datasets.phantoms._writers_dicom:write_maa_spect",
    "bone_scan": "tfmedseg.datasets.phantoms.bonescan:write_bone_scan",
}


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of case ``index`` under ``seed`` (independent of the number of cases)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _check_args(dataset: str, cases: int, seed: int) -> None:
    if dataset not in PHANTOM_DATASETS:
        raise ConfigError(f"unknown phantom dataset {dataset!r}; allowed: {PHANTOM_DATASETS}", path="dataset")
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 1:
        raise ConfigError(f"cases must be a positive integer, got {cases!r}", path="cases")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}", path="seed")


def generate(dataset: str, out_dir: str | os.PathLike, cases: int = 4, seed: int = 0) -> Path:
    """Write ``cases`` phantom cases of ``dataset`` into ``out_dir`` in the dataset's real layout.

    Args:
        dataset: One of :data:`PHANTOM_DATASETS`.
        out_dir: Target directory; created, must be empty if it exists. The cases are written into a
            staging folder beside it that is renamed to ``out_dir`` when complete, so an
            interrupted run leaves nothing behind (and no parent folders it created).
        cases: Number of cases (patients), >= 1.
        seed: Random seed; the same seed gives byte-identical arrays.

    Returns:
        ``out_dir`` (the dataset root to pass to the loader).

    Raises:
        ConfigError: Unknown dataset, ``cases < 1`` or a negative seed.
        DatasetLayoutError: ``out_dir`` exists and is not an empty directory.
    """
    _check_args(dataset, cases, seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DatasetLayoutError("phantom output directory exists and is not empty; remove it or choose another directory",
                                 path=out_dir)
    with atomic_dir(out_dir, marker=False) as staging:  # an interrupted run leaves no half dataset
        _write_cases(dataset, staging, cases, seed)
    return out_dir


def _write_cases(dataset: str, out_dir: Path, cases: int, seed: int) -> None:
    """Write the cases and the manifest into the existing, empty folder ``out_dir``."""
    module_name, func_name = _WRITERS[dataset].split(":")
    writer = getattr(importlib.import_module(module_name), func_name)
    rngs = ProgressSequence([case_rng(seed, i) for i in range(int(cases))], desc=f"generating {dataset} phantoms",
                            unit="case")
    truth = writer(out_dir, rngs)
    manifest = {"dataset": dataset, "cases": int(cases), "seed": int(seed), "generator_version": generator_version(dataset),
                "truth": truth}
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, default=float) + "\n")


def manifest_matches(out_dir: str | os.PathLike, dataset: str, cases: int, seed: int) -> bool:
    """True when ``out_dir`` holds the phantom set :func:`generate` makes with these arguments (its
    :data:`MANIFEST_NAME` names them and the current generator version; :func:`generate` renames
    the folder into place only when complete)."""
    try:
        info = json.loads((Path(out_dir) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    keys = ("dataset", "cases", "seed", "generator_version")
    return isinstance(info, dict) and tuple(info.get(k) for k in keys) == (dataset, int(cases), int(seed), generator_version(dataset))


def _marker_matches(out_dir: Path, dataset: str, cases: int, seed: int) -> bool:
    marker = out_dir / COMPLETE_MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info == {"dataset": dataset, "cases": int(cases), "seed": int(seed), "generator_version": generator_version(dataset)}


def ensure_phantoms(dataset: str, out_dir: str | os.PathLike, cases: int = 4, seed: int = 0) -> Path:
    """Generate a phantom dataset once and reuse it afterwards.

    The dataset is generated into a temporary sibling directory and renamed to ``out_dir`` when
    complete, with a marker file; an interrupted run never leaves a half dataset at ``out_dir``.
    An existing ``out_dir`` with a matching marker is reused as it is, and so is one that
    :func:`generate` wrote with these arguments (its manifest names them: :func:`generate` also
    renames its folder into place only when complete, with the manifest written last); one with
    our marker from an older generator version is replaced.

    Args:
        dataset: One of :data:`PHANTOM_DATASETS`.
        out_dir: Final dataset root.
        cases: Number of cases.
        seed: Random seed.

    Returns:
        ``out_dir``.

    Raises:
        ConfigError: Bad ``dataset``, ``cases`` or ``seed``.
        DatasetLayoutError: ``out_dir`` exists but is not a completed phantom set of these
            arguments (it is never deleted unless it carries our marker).
    """
    _check_args(dataset, cases, seed)
    out_dir = Path(out_dir)
    if _marker_matches(out_dir, dataset, cases, seed) or manifest_matches(out_dir, dataset, cases, seed):
        return out_dir
    if out_dir.exists():
        marker = out_dir / COMPLETE_MARKER
        if not marker.is_file():
            raise DatasetLayoutError(
                "exists but is not a completed phantom dataset (no marker file); remove it or choose another directory",
                path=out_dir,
            )
        try:
            info = json.loads(marker.read_text() or "{}")
            if not isinstance(info, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            raise DatasetLayoutError(f"marker {COMPLETE_MARKER} is unreadable ({exc}); remove the folder to regenerate it",
                                     path=out_dir) from exc
        if (info.get("dataset"), info.get("cases"), info.get("seed")) != (dataset, int(cases), int(seed)):
            raise DatasetLayoutError(f"holds other phantoms ({info}); remove it or choose another directory", path=out_dir)
        shutil.rmtree(out_dir)  # same arguments, older generator version
    try:
        tmp = make_staging_dir(out_dir)  # also removes staging left by a killed run
    except OSError as exc:
        raise DatasetLayoutError(f"cannot create the phantom dataset here: {exc.strerror or exc}", path=out_dir) from exc
    try:
        _write_cases(dataset, tmp, cases, seed)
        info = {"dataset": dataset, "cases": int(cases), "seed": int(seed), "generator_version": generator_version(dataset)}
        (tmp / COMPLETE_MARKER).write_text(json.dumps(info))
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not _marker_matches(out_dir, dataset, cases, seed):  # not a concurrent twin: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
