"""Seed 002 (LiTS cascade) report pieces: the Table 4.8 layout, the stage-alone evaluations, Dice by
lesion size, lesion detection and the Tables 4.4/4.5 timing.

Rows carry ``evaluation``: ``cascade`` (stage 1 -> stage 2, what the LiTS server scored, Table 4.8)
or a stage evaluated alone on the reference (``stage 2 (reference liver)``: the tumour network on
the CT combined with the reference liver, what the thesis' local Tables 4.6/4.7 measured,
Sec. 4.1.1 / L1012; ``liver stage``), see :mod:`tfmedseg.experiments.lits_cascade`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from tfmedseg.reports.layouts import SIZE_DICE_LAYOUT
from tfmedseg.reports.tables import Column, format_number, format_table, markdown_table, summarize

__all__ = ["lits_score_layout", "class_score_layout", "format_detection", "format_timing", "lits_report"]

_SCORES = (("Dice/case", "dice", "mean"), ("global Dice", "", "global_dice"), ("VOE", "voe", "mean"),
           ("RVD", "rvd", "mean"), ("ASSD mm", "assd", "mean"), ("MSSD mm", "mssd", "mean"))


def class_score_layout(name: str, first: str = "model", first_header: str = "Model") -> tuple[Column, ...]:
    """Table 4.8's scores of one class: Dice per case, global Dice, VOE, RVD, ASSD and MSSD (mm)."""
    cols = [Column(first_header, first, "first", "{}")]
    for header, metric, reduce in _SCORES:
        cols.append(Column(f"{name} {header}", name if reduce == "global_dice" else f"{name}_{metric}", reduce))
    return tuple(cols)


def lits_score_layout(classes: tuple[str, ...] = ("liver", "tumour")) -> tuple[Column, ...]:
    """Seed 002 Table 4.8 for each class: Dice per case, global Dice, VOE, RVD, ASSD and MSSD (mm)."""
    scores = [Column("Model", "model", "first", "{}")]
    for name in classes:
        scores += list(class_score_layout(name)[1:])
    return tuple(scores)


def format_detection(detections: Mapping[str, Mapping[str, float]]) -> str:
    """Lesion detection (:func:`tfmedseg.metrics.lesions.lesion_detection_summary`) per evaluation."""
    f = format_number
    rows = []
    for evaluation, d in detections.items():
        rows += [(evaluation, "IoU > 0", f(d["precision_iou0"]), f(d["recall_iou0"])),
                 (evaluation, "IoU >= 0.5", f(d["precision_iou50"]), f(d["recall_iou50"]))]
    return markdown_table(("evaluation", "criterion", "precision", "recall"), rows,
                          "Lesion detection (counts summed over cases)")


def _mean_sd(timing: Mapping[str, float], key: str, fmt: str = "{:.4f}") -> str:
    mean, sd = timing.get(key, math.nan), timing.get(f"{key}_std", math.nan)
    if math.isnan(mean):
        return "NA"
    return f"{fmt.format(mean)} ± {fmt.format(sd)}" if not math.isnan(sd) else fmt.format(mean)


def format_timing(timings: Mapping[str, Mapping[str, float]]) -> str:
    """Tables 4.4/4.5: seconds per output slice as the thesis defines them (L1087): ``t / b`` per
    training iteration and ``t / (b z)`` per prediction batch (mean ± sd over the timed batches),
    beside ``fit``'s wall time per slice and the whole cascade's seconds per slice."""
    rows = [(name, _mean_sd(t, "iteration_seconds_per_slice"), _mean_sd(t, "predict_batch_seconds_per_slice"),
             format_number(t.get("train_seconds_per_slice"), "{:.4f}"),
             format_number(t.get("predict_seconds_per_slice"), "{:.4f}"),
             f"{int(t.get('iterations_timed', 0))} / {int(t.get('predict_batches_timed', 0))}")
            for name, t in timings.items()]
    return markdown_table(
        ("stage", "train t/b per iteration", "predict t/(b z) per batch", "fit wall per slice",
         "cascade wall per slice", "iterations / batches timed"), rows,
        "Time per output slice in seconds (Tables 4.4/4.5: iterations only, first step excluded; this machine)")


def _evaluation_rows(rows, evaluation):
    return [r for r in rows if r.get("evaluation", "cascade") == evaluation]


def lits_report(rows: Sequence[Mapping[str, Any]], timings: Mapping[str, Mapping[str, float]]):
    """Everything seed 002 reports from its per-case rows (one trained cascade).

    Args:
        rows: Per-case rows (:mod:`tfmedseg.experiments.lits_cascade`): ``evaluation`` ``cascade``
            (liver and tumour keys), ``stage 2 (reference liver)`` (tumour keys) and ``liver stage``
            (liver keys), each with ``model`` naming the weights (``... (swa)`` for a candidate).
        timings: Per stage the :func:`~tfmedseg.training.stages.train_stage` timing plus
            ``predict_batch_seconds_per_slice`` (``_std``) and ``predict_seconds_per_slice``.

    Returns:
        ``(layout, sections, summary)``: the Table 4.8 layout of the cascade rows, the markdown of the
        stage-alone scores, Tables 4.6/4.7 (stage 2 and cascade), lesion detection and timing, and the
        flat summary: Table 4.8 columns of the cascade (``tumour Dice/case`` ...), the stage-2 ones
        prefixed ``stage 2 `` (selected weights) and ``swa stage 2 `` (the SWA candidate, when
        evaluated), ``lesion_*`` of the cascade.
    """
    from tfmedseg.metrics.lesions import lesion_detection_summary

    cascade = _evaluation_rows(rows, "cascade")
    stage2 = _evaluation_rows(rows, "stage 2 (reference liver)")
    liver_alone = _evaluation_rows(rows, "liver stage")
    layout = lits_score_layout()
    sections, summary = [], {}
    if stage2:
        table, _ = summarize(stage2, class_score_layout("tumour"), group_by="model")
        sections.append(format_table(table, class_score_layout("tumour"),
                                     "Stage 2 alone: tumour network on the reference liver (the thesis' local evaluation)"))
        summary.update({f"stage 2 {k}": v for k, v in table[0].items() if isinstance(v, float)})
        for other in table[1:]:
            if str(other["Model"]).endswith("(swa)"):
                summary.update({f"swa stage 2 {k}": v for k, v in other.items() if isinstance(v, float)})
    if liver_alone:
        table, _ = summarize(liver_alone, class_score_layout("liver"), group_by="model")
        sections.append(format_table(table, class_score_layout("liver"), "Liver stage alone (candidate weights)"))
    size_layout = (Column("Evaluation", "evaluation", "first", "{}"),) + SIZE_DICE_LAYOUT
    size_table = summarize(stage2, size_layout, group_by="model")[0] + summarize(cascade, size_layout, group_by="model")[0]
    sections.append(format_table(size_table, size_layout, "Tables 4.6/4.7-style tumour Dice by lesion size"))
    for key in ("Small", "Medium", "Large"):
        if stage2:
            summary[f"stage 2 tumour Dice {key.lower()}"] = size_table[0][key]
    detections = {"cascade": lesion_detection_summary(cascade)}
    if stage2:
        detections["stage 2"] = lesion_detection_summary([r for r in stage2 if r["model"] == stage2[0]["model"]])
    sections += [format_detection(detections), format_timing(timings)]
    table, _ = summarize(cascade, layout, group_by="model")
    summary.update({k: v for k, v in table[0].items() if isinstance(v, float)})
    summary.update({f"lesion_{k}": v for k, v in detections["cascade"].items()})
    return layout, sections, summary
