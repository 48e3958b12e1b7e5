"""Layout writers for the DICOM datasets: 3DIRCADb-01 and MAA SPECT/CT (private)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tfmedseg.datasets.phantoms._nifti import save_nifti
from tfmedseg.datasets.phantoms._writers_nifti import tumour_summary
from tfmedseg.datasets.phantoms.abdomen import AbdomenPhantom, make_abdomen
from tfmedseg.datasets.phantoms.maa import MAA_TUMOUR_PLAN, display_window_max, fuse_display, simulate_maa_spect
from tfmedseg.io.volume import Volume, canonical_affine

__all__: list[str] = []


def _ct_volume(phantom: AbdomenPhantom) -> Volume:
    return Volume(phantom.ct, phantom.spacing, canonical_affine(phantom.spacing, phantom.origin_lps), "CT")


def write_ircadb(out_dir: Path, rngs: list[np.random.Generator]) -> dict:
    """Write ``3Dircadb1.N/PATIENT_DICOM`` (CT) and ``MASKS_DICOM/<organ>`` (0/255 mask series)."""
    from tfmedseg.io.dicom import read_dicom_series
    from tfmedseg.io.dicom_write import write_dicom_series

    truth = {}
    for index, rng in enumerate(rngs):
        phantom = make_abdomen(rng, index)
        name = f"3Dircadb1.{index + 1}"
        folder = out_dir / name
        write_dicom_series(_ct_volume(phantom), folder / "PATIENT_DICOM", modality="CT", patient_id=name,
                           series_description="PATIENT_DICOM", uid_seed=f"ircadb-{name}", filename="image_{index}")
        reference = read_dicom_series(folder / "PATIENT_DICOM")
        organs = {"liver": phantom.label > 0, "spleen": phantom.masks["spleen"],
                  "leftkidney": phantom.masks["left_kidney"], "rightkidney": phantom.masks["right_kidney"]}
        for j, tumour in enumerate(phantom.tumours):
            organs[f"livertumor{j + 1:02d}"] = tumour["mask"]
        for number, (organ, mask) in enumerate(organs.items(), start=2):
            write_dicom_series(mask.astype(np.uint8) * 255, folder / "MASKS_DICOM" / organ, modality="CT", mask=True,
                               reference=reference, series_description=organ, series_number=number,
                               uid_seed=f"ircadb-{name}-{organ}", filename="image_{index}")
        truth[name] = {"tumours": tumour_summary(phantom.tumours)}
    return truth


def write_maa_spect(out_dir: Path, rngs: list[np.random.Generator]) -> dict:
    """Write ``<patient>/CT``, ``SPECT/spect.dcm``, ``masks/``, ``display/`` and ``phantom_truth.json``."""
    from PIL import Image

    from tfmedseg.io.dicom import read_dicom_series
    from tfmedseg.io.dicom_write import write_dicom_series, write_nm_spect

    truth = {}
    for index, rng in enumerate(rngs):
        phantom = make_abdomen(rng, index, allow_empty=False, tumour_plan=MAA_TUMOUR_PLAN)
        spect = simulate_maa_spect(phantom, rng)
        pid = f"MAA{index + 1:03d}"
        folder = out_dir / pid
        write_dicom_series(_ct_volume(phantom), folder / "CT", modality="CT", patient_id=pid,
                           series_description="CT abdomen", uid_seed=f"maa-{pid}-ct")
        reference = read_dicom_series(folder / "CT")
        spect_vol = Volume(spect.counts, spect.spacing, canonical_affine(spect.spacing, spect.origin_lps), "NM")
        write_nm_spect(spect_vol, folder / "SPECT" / "spect.dcm", reference=reference, series_number=2,
                       series_description="MAA SPECT", uid_seed=f"maa-{pid}-spect")
        save_nifti((phantom.label > 0).astype(np.uint8), folder / "masks" / "liver.nii.gz", phantom.spacing, phantom.origin_lps)
        save_nifti((phantom.label == 2).astype(np.uint8), folder / "masks" / "tumor.nii.gz", phantom.spacing, phantom.origin_lps)
        # Seed-000 display variant: fused RGB slices and mask images for every slice with liver.
        liver_slices = np.flatnonzero((phantom.label > 0).any(axis=(1, 2)))
        display_max = display_window_max(spect.on_ct, phantom.label > 0, rng)
        display = folder / "display"
        for sub in ("fused", "liver", "tumor"):
            (display / sub).mkdir(parents=True, exist_ok=True)
        for k in liver_slices:
            name = f"slice_{k:04d}.png"
            Image.fromarray(fuse_display(phantom.ct[k].astype(np.float32), spect.on_ct[k], display_max)).save(display / "fused" / name)
            Image.fromarray(((phantom.label[k] > 0) * 255).astype(np.uint8)).save(display / "liver" / name)
            Image.fromarray(((phantom.label[k] == 2) * 255).astype(np.uint8)).save(display / "tumor" / name)
        facts = {"tumour_to_liver_ratio": spect.tlr, "lung_shunt_fraction": spect.lsf,
                 "display_max_counts": display_max, "tumours": tumour_summary(phantom.tumours)}
        (folder / "phantom_truth.json").write_text(json.dumps(facts, indent=1) + "\n")
        truth[pid] = {"tumour_to_liver_ratio": spect.tlr, "lung_shunt_fraction": spect.lsf}
    return truth
