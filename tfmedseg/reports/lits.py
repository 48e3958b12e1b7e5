"""Seed 002 (LiTS cascade) report pieces: the Table 4.8 layout, lesion detection and timing tables."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from tfmedseg.reports.layouts import SIZE_DICE_LAYOUT
from tfmedseg.reports.tables import Column, format_number, format_table, markdown_table, summarize

__all__ = ["lits_score_layout", "format_detection_and_timing", "lits_report"]


def lits_score_layout(classes: tuple[str, ...] = ("liver", "tumour")) -> tuple[Column, ...]:
    """Seed 002 Table 4.8 for each class: Dice per case, global Dice, VOE, RVD, ASSD and MSSD (mm)."""
    scores = [Column("Model", "model", "first", "{}")]
    for name in classes:
        scores += [
            Column(f"{name} Dice/case", f"{name}_dice"),
            Column(f"{name} global Dice", name, "global_dice"),
            Column(f"{name} VOE", f"{name}_voe"),
            Column(f"{name} RVD", f"{name}_rvd"),
            Column(f"{name} ASSD mm", f"{name}_assd"),
            Column(f"{name} MSSD mm", f"{name}_mssd"),
        ]
    return tuple(scores)


def format_detection_and_timing(detection: Mapping[str, float], timings: Mapping[str, Mapping[str, float]]) -> str:
    """Lesion detection (:func:`tfmedseg.metrics.lesions.lesion_detection_summary`) and the
    Table 4.4/4.5-style seconds per output slice of each stage, as markdown."""
    f = format_number
    detection_table = markdown_table(
        ("criterion", "precision", "recall"),
        [("IoU > 0", f(detection["precision_iou0"]), f(detection["recall_iou0"])),
         ("IoU >= 0.5", f(detection["precision_iou50"]), f(detection["recall_iou50"]))],
        "Lesion detection (counts summed over cases)")
    timing_table = markdown_table(
        ("stage", "train", "predict (whole cascade)"),
        [(name, f"{t['train_seconds_per_slice']:.4f}", f"{t['predict_seconds_per_slice']:.4f}") for name, t in timings.items()],
        "Time per output slice in seconds (Tables 4.4/4.5 style, this machine)")
    return detection_table + "\n" + timing_table


def lits_report(rows: Sequence[Mapping[str, Any]], timings: Mapping[str, Mapping[str, float]]):
    """Everything seed 002 reports from its per-case rows (one model).

    Args:
        rows: Per-case rows with :func:`tfmedseg.reports.segmentation.evaluate_segmentation_case` keys
            and :func:`tfmedseg.metrics.lesions.lesion_detection_counts` counts.
        timings: Per stage ``train_seconds_per_slice`` and ``predict_seconds_per_slice``.

    Returns:
        ``(layout, sections, summary)``: the Table 4.8 layout, the markdown of Tables 4.6/4.7, lesion
        detection and timing, and the flat summary (Table 4.8 columns and ``lesion_precision_iou0`` ...).
    """
    from tfmedseg.metrics.lesions import lesion_detection_summary

    layout = lits_score_layout()
    detection = lesion_detection_summary(rows)
    size_table, _ = summarize(rows, SIZE_DICE_LAYOUT, group_by="model")
    sections = [format_table(size_table, SIZE_DICE_LAYOUT, "Tables 4.6/4.7-style tumour Dice by lesion size"),
                format_detection_and_timing(detection, timings)]
    table, _ = summarize(rows, layout, group_by="model")
    summary: dict[str, Any] = {k: v for k, v in table[0].items() if isinstance(v, float)}
    summary.update({f"lesion_{k}": v for k, v in detection.items()})
    return layout, sections, summary
