"""Seed 000 result tables: per-fold DSC / IoU in the layout of the seed's Tables 9-16, TLR per patient, Table 17.

Example:
    >>> rows = [{"fold": 1, "patient": "P1", "liver_dsc": 0.9, "liver_iou": 0.82}]
    >>> text, summary = format_results("9", "U-Net ResNet34", rows, ["liver"])
    >>> round(summary["liver_dsc"], 2)
    0.9
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["SEED_TABLES", "SEED_TABLE_17_SECONDS", "format_results", "seed_table_17"]

#: What each seed table compares (seed 000, spec section 6).
SEED_TABLES = {
    "9": "liver on CT, encoders (ImageNet weights)",
    "10": "liver on CT, EfficientNet encoders, pre-training and cropping",
    "11": "tumour on SPECT/CT, encoders",
    "12": "tumour on SPECT/CT, R,G(,B) channel adjustment",
    "13": "tumour on SPECT/CT, normal / abnormal histogram test patients",
    "14": "combined liver + tumour on fused CT + SPECT/CT, fusion weights",
    "15": "combined model, registration base (CT-based SSIM matching)",
    "16": "3-fold cross-validation, MA-Net timm-EfficientNet-B6",
}
#: Table 17 inference time per image (s): minutes x 60 / images, the seed's 11 GB GPU.
SEED_TABLE_17_SECONDS = {"liver": 1.66 * 60 / 1087, "tumour": 1.70 * 60 / 705, "combined": 1.93 * 60 / 1087}
_COLUMNS = {
    "liver": [("liver_dsc", "liver DSC"), ("liver_iou", "liver IoU")],
    "tumour": [("tumour_dsc", "tumour DSC"), ("tumour_iou", "tumour IoU")],
    "combined": [("combined_liver_dsc", "comb. liver DSC"), ("combined_liver_iou", "comb. liver IoU"),
                 ("combined_tumour_dsc", "comb. tumour DSC"), ("combined_tumour_iou", "comb. tumour IoU")],
}


def _mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else math.nan


def _cell(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def format_results(table: str, row_label: str, rows: Sequence[dict], stages: Sequence[str], paper: dict | None = None,
                   tlr_tolerance: float = 0.15) -> tuple[str, dict]:
    """Markdown of the per-fold rows, the fold mean and the paper's row; TLR per patient.

    Args:
        table: Seed table number (``"9"`` .. ``"16"``).
        row_label: The configuration's row name in that table.
        rows: Per-patient rows (``fold``, ``patient``, ``<stage>_dsc/iou``, ``tlr_pred/ref/true``).
        stages: Stages run (column groups).
        paper: The seed's numbers for this row, keyed like the columns (``liver_dsc`` ...).
        tlr_tolerance: Relative TLR error counted as "within".

    Returns:
        ``(markdown, summary)``; summary holds the fold-mean of each column, ``tlr_within`` (share of
        patients whose predicted TLR is within the tolerance of the truth, when known).
    """
    columns = [c for s in stages for c in _COLUMNS[s]]
    folds = sorted({r["fold"] for r in rows})
    head = "| " + " | ".join(["row", "fold"] + [name for _, name in columns]) + " |"
    lines = [f"## Seed 000 Table {table}: {SEED_TABLES.get(str(table), '')}", "", head,
             "|" + "---|" * (len(columns) + 2)]
    fold_means = {}
    for fold in folds:
        mine = [r for r in rows if r["fold"] == fold]
        fold_means[fold] = {key: _mean(r.get(key) for r in mine) for key, _ in columns}
        lines.append("| " + " | ".join([row_label, str(fold)] + [_cell(fold_means[fold][k]) for k, _ in columns]) + " |")
    summary = {key: _mean(fold_means[f][key] for f in folds) for key, _ in columns}
    lines.append("| " + " | ".join([row_label, f"mean of {len(folds)}"] + [_cell(summary[k]) for k, _ in columns]) + " |")
    if paper:
        lines.append("| " + " | ".join(["seed (paper)", "-"] + [_cell(paper.get(k)) for k, _ in columns]) + " |")
    lines += ["", "### Tumour-to-liver ratio per test patient (original SPECT counts on the masks)", "",
              "| fold | patient | TLR predicted masks | TLR reference masks | TLR true | error vs true |", "|---|---|---:|---:|---:|---:|"]
    within = []
    for r in rows:
        err = r.get("tlr_error")
        if "tlr_true" in r:
            within.append(err is not None and err <= tlr_tolerance)
        lines.append(f"| {r['fold']} | {r['patient']} | {_cell(r.get('tlr_pred'))} | {_cell(r.get('tlr_ref'))} | "
                     f"{_cell(r.get('tlr_true'))} | {'n/a' if err is None else f'{100 * err:.1f} %'} |")
    if within:
        summary["tlr_within"] = float(np.mean(within))
        lines += ["", f"TLR within {100 * tlr_tolerance:.0f} % of the truth: {sum(within)}/{len(within)} patients."]
    return "\n".join(lines) + "\n", summary


def seed_table_17(seconds_per_image: dict) -> str:
    """Markdown: our inference seconds per image (CPU, includes the inverse crop) vs the seed's Table 17."""
    lines = ["## Seed 000 Table 17: inference time per image", "",
             "| model | ours (s / image) | seed (s / image, GPU) |", "|---|---:|---:|"]
    for stage, sec in seconds_per_image.items():
        lines.append(f"| {stage} | {sec:.4f} | {SEED_TABLE_17_SECONDS[stage]:.4f} |")
    return "\n".join(lines) + "\n"
