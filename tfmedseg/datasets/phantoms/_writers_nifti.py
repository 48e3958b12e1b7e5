"""Layout writers for the NIfTI datasets: LiTS and HECKTOR 2021 (private)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfmedseg.datasets.phantoms._nifti import save_nifti
from tfmedseg.datasets.phantoms.abdomen import make_abdomen
from tfmedseg.datasets.phantoms.headneck import make_headneck

__all__: list[str] = []

HECKTOR_CENTERS = ("CHGJ", "CHMR", "CHUM", "CHUP", "CHUS")


def tumour_summary(tumours: list[dict]) -> list[dict]:
    """JSON-friendly per-tumour facts (no masks)."""
    return [{k: v for k, v in t.items() if k != "mask"} for t in tumours]


def write_lits(out_dir: Path, rngs: list[np.random.Generator]) -> dict:
    """Write ``volume-N.nii`` / ``segmentation-N.nii`` in ``Training Batch 1`` / ``Training Batch 2``."""
    n_first = (len(rngs) + 1) // 2
    truth = {}
    for index, rng in enumerate(rngs):
        phantom = make_abdomen(rng, index)
        folder = out_dir / ("Training Batch 1" if index < n_first else "Training Batch 2")
        save_nifti(phantom.ct, folder / f"volume-{index}.nii", phantom.spacing, phantom.origin_lps)
        save_nifti(phantom.label, folder / f"segmentation-{index}.nii", phantom.spacing, phantom.origin_lps)
        truth[f"lits-{index:03d}"] = {"tumours": tumour_summary(phantom.tumours)}
    return truth


def write_hecktor(out_dir: Path, rngs: list[np.random.Generator]) -> dict:
    """Write ``<pid>/<pid>_ct|_pt|_gtvt.nii.gz`` and ``bbox.csv`` (LPS mm)."""
    rows = ["PatientID,x1,x2,y1,y2,z1,z2"]
    truth = {}
    for index, rng in enumerate(rngs):
        phantom = make_headneck(rng)
        pid = f"{HECKTOR_CENTERS[index % len(HECKTOR_CENTERS)]}{index + 1:03d}"
        folder = out_dir / pid
        save_nifti(phantom.ct, folder / f"{pid}_ct.nii.gz", phantom.ct_spacing, phantom.ct_origin_lps)
        save_nifti(phantom.pet, folder / f"{pid}_pt.nii.gz", phantom.pet_spacing, phantom.pet_origin_lps, dtype=np.float32)
        save_nifti(phantom.label, folder / f"{pid}_gtvt.nii.gz", phantom.ct_spacing, phantom.ct_origin_lps)
        rows.append(",".join([pid] + [f"{v:.3f}" for v in phantom.bbox_mm]))
        truth[pid] = {"tumour": phantom.tumour, "bbox_mm": list(phantom.bbox_mm)}
    (out_dir / "bbox.csv").write_text("\n".join(rows) + "\n")
    return truth
