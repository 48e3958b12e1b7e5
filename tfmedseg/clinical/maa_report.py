"""Per-patient SIRT planning output from predicted liver and tumour masks (seed 000's motivation).

:func:`patient_dosimetry` measures the tumour-to-liver ratio on the **original SPECT counts**
resampled onto the CT grid of the masks (never on the RGB display images the networks see),
optionally partial-volume corrected (:mod:`tfmedseg.clinical.partial_volume`), the tumour and
non-tumoural liver volumes, and the partition-model activity that gives ``target_normal_dose_gy``
to the normal liver with its tumour and lung doses (:mod:`tfmedseg.clinical.sirt`).
:func:`write_patient_report` writes ``<id>.json``, a one-page ``<id>.md`` and ``<id>.png`` (CT with
the SPECT overlay and both mask outlines on the slice of largest tumour area).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from tfmedseg.clinical.partial_volume import gtm_concentrations, margin_measurement_regions
from tfmedseg.clinical.sirt import (
    mass_kg_from_volume_ml,
    partition_model_doses,
    prescribe_activity_gbq,
    tumour_to_liver_ratio,
)
from tfmedseg.errors import InvalidInputError

__all__ = ["largest_tumour_slice", "patient_dosimetry", "write_patient_report"]


def patient_dosimetry(counts: np.ndarray, liver: np.ndarray, tumour: np.ndarray, spacing: Sequence[float], *,
                      lung_shunt: float, target_normal_dose_gy: float, body: np.ndarray | None = None,
                      sigma_mm: Sequence[float] | None = None, margin_mm: float = 0.0,
                      hot_factor: float | None = None) -> dict:
    """TLR, volumes and partition-model doses of one patient.

    Args:
        counts: ``[D, H, W]`` SPECT counts resampled onto the mask grid.
        liver: Whole-liver mask (tumour included or not).
        tumour: Tumour mask.
        spacing: Voxel size (mm).
        lung_shunt: Lung shunt fraction in [0, 1).
        target_normal_dose_gy: Prescribed mean dose to the non-tumoural liver (Gy).
        body: Body mask for the partial-volume correction's background region (default: none).
        sigma_mm: Resolution sigma per axis for the GTM correction; None: no correction.
        margin_mm: GTM measurement margin (:func:`~tfmedseg.clinical.partial_volume.margin_measurement_regions`:
            tumour core and normal liver this far from the tumour); 0: the masks themselves.
        hot_factor: Leave normal-liver voxels above this multiple of their median out of its
            measurement volume (GTM only); None: keep them.

    Returns:
        ``{"tlr", "tlr_uncorrected", "tlr_method", "volume_tumour_ml", "volume_normal_ml",
        "lung_shunt_fraction", "target_normal_dose_gy", "activity_gbq", "doses": {...}}``;
        without a tumour (or normal liver) voxel ``tlr`` is None, ``"note"`` says why and no
        activity is prescribed.
    """
    liver = np.asarray(liver, bool) | np.asarray(tumour, bool)
    tumour = np.asarray(tumour, bool)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    record: dict = {
        "volume_tumour_ml": float(tumour.sum() * voxel_ml),
        "volume_normal_ml": float((liver & ~tumour).sum() * voxel_ml),
        "lung_shunt_fraction": float(lung_shunt),
        "target_normal_dose_gy": float(target_normal_dose_gy),
        "tlr": None, "tlr_uncorrected": None, "tlr_method": None, "activity_gbq": None, "doses": None,
    }
    try:
        raw = tumour_to_liver_ratio(counts, liver, tumour, spacing=spacing)
    except InvalidInputError as exc:
        record["note"] = f"no TLR: {exc}"
        return record
    record["tlr_uncorrected"] = raw["tlr"]
    tlr, method = raw["tlr"], "uncorrected"
    if sigma_mm is not None:
        regions = [tumour, liver & ~tumour]
        if body is not None and (np.asarray(body, bool) & ~liver).any():
            regions.append(np.asarray(body, bool) & ~liver)
        try:
            core, away = margin_measurement_regions(regions[0], regions[1], spacing, margin_mm, counts, hot_factor)
            measure = [core, away, *regions[2:]]
            conc = gtm_concentrations(counts, regions, spacing, sigma_mm, measure=measure)
            if conc[1] > 0 and conc[0] > 0:
                tlr, method = float(conc[0] / conc[1]), "gtm"
        except InvalidInputError as exc:
            record["note"] = f"partial-volume correction skipped: {exc}"
    record["tlr"], record["tlr_method"] = tlr, method
    m_t, m_n = mass_kg_from_volume_ml(record["volume_tumour_ml"]), mass_kg_from_volume_ml(record["volume_normal_ml"])
    activity = prescribe_activity_gbq(target_normal_dose_gy, tlr, m_t, m_n, lung_shunt)
    record["activity_gbq"] = activity
    record["doses"] = dataclasses.asdict(partition_model_doses(activity, tlr, m_t, m_n, lung_shunt))
    return record


def largest_tumour_slice(tumour: np.ndarray, liver: np.ndarray) -> int:
    """Axial slice with the largest tumour area (largest liver area when there is no tumour)."""
    areas = np.asarray(tumour, bool).sum(axis=(1, 2))
    if not areas.any():
        areas = np.asarray(liver, bool).sum(axis=(1, 2))
    return int(np.argmax(areas))


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def render_slice(ct_hu: np.ndarray, spect: np.ndarray, liver: np.ndarray, tumour: np.ndarray, scale: int = 3) -> np.ndarray:
    """uint8 RGB ``[H*scale, W*scale, 3]``: CT (L 40 / W 400) with a hot SPECT overlay, liver outline
    green, tumour outline red."""
    grey = np.clip((ct_hu + 160.0) / 400.0, 0, 1)
    top = float(np.percentile(spect, 99.9)) or 1.0
    s = np.clip(spect / top, 0, 1)
    hot = np.stack([np.clip(3 * s, 0, 1), np.clip(3 * s - 1, 0, 1), np.clip(3 * s - 2, 0, 1)], -1)
    rgb = 0.6 * grey[..., None] + 0.4 * hot
    rgb = np.repeat(np.repeat(rgb, scale, 0), scale, 1)
    for mask, colour in ((liver, (0.0, 1.0, 0.0)), (tumour, (1.0, 0.0, 0.0))):
        big = np.repeat(np.repeat(np.asarray(mask, bool), scale, 0), scale, 1)
        rgb[_outline(big)] = colour
    return np.rint(255 * np.clip(rgb, 0, 1)).astype(np.uint8)


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def write_patient_report(out_dir: str | os.PathLike, patient_id: str, record: dict, ct_hu: np.ndarray,
                         spect_on_ct: np.ndarray, liver: np.ndarray, tumour: np.ndarray) -> dict[str, Path]:
    """Write ``<patient_id>.json``, ``.md`` (one page) and ``.png`` into ``out_dir``.

    Args:
        record: :func:`patient_dosimetry` output, plus any extras (reference TLR, Dice, truth).
        ct_hu / spect_on_ct / liver / tumour: ``[D, H, W]`` CT, SPECT counts on the CT grid and the
            predicted masks, for the figure.
    """
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = largest_tumour_slice(tumour, liver)
    paths = {"json": out / f"{patient_id}.json", "markdown": out / f"{patient_id}.md", "png": out / f"{patient_id}.png"}
    Image.fromarray(render_slice(ct_hu[k], spect_on_ct[k], liver[k], tumour[k])).save(paths["png"])
    paths["json"].write_text(json.dumps({"patient": patient_id, "figure_slice": k, **record}, indent=2, default=float) + "\n")
    d = record.get("doses") or {}
    lines = [
        f"# SIRT planning summary: {patient_id}", "",
        ("Liver and tumour segmented on CT and fused 99mTc-MAA SPECT/CT; counts from the original SPECT "
         f"resampled onto the CT grid. Figure: slice {k} (largest tumour area), liver green, tumour red."), "",
        f"![{patient_id}]({paths['png'].name})", "",
        "| quantity | value |", "|---|---:|",
        f"| tumour volume (ml) | {_fmt(record.get('volume_tumour_ml'), 1)} |",
        f"| non-tumoral liver volume (ml) | {_fmt(record.get('volume_normal_ml'), 1)} |",
        f"| TLR ({record.get('tlr_method') or 'n/a'}) | {_fmt(record.get('tlr'))} |",
        f"| TLR uncorrected | {_fmt(record.get('tlr_uncorrected'))} |",
    ]
    for key, label in (("tlr_reference", "TLR from reference masks"), ("tlr_truth", "TLR true (phantom)"),
                       ("dice_liver", "liver Dice"), ("dice_tumour", "tumour Dice")):
        if key in record:
            lines.append(f"| {label} | {_fmt(record[key], 3)} |")
    lines += [
        f"| lung shunt fraction | {_fmt(record.get('lung_shunt_fraction'), 3)} |",
        f"| target normal-liver dose (Gy) | {_fmt(record.get('target_normal_dose_gy'), 1)} |",
        f"| prescribed 90Y activity (GBq) | {_fmt(record.get('activity_gbq'))} |",
        f"| tumour dose (Gy) | {_fmt(d.get('dose_tumour_gy'), 1)} |",
        f"| normal-liver dose (Gy) | {_fmt(d.get('dose_normal_gy'), 1)} |",
        f"| lung dose (Gy, 1 kg) | {_fmt(d.get('dose_lung_gy'), 1)} |",
    ]
    if record.get("note"):
        lines += ["", f"Note: {record['note']}"]
    lines += ["", "Partition model (Ho et al. 1996), 49.67 Gy kg/GBq, density 1.03 g/ml. Research use only."]
    paths["markdown"].write_text("\n".join(lines) + "\n")
    return paths
