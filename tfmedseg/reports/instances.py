"""Seed 001 report pieces: per-view columns, Tables 4-8 (lesion instances per Table 4 row, localisation,
per class, metastasis, self-training), chest-box Jaccard, training and inference time, and the flat headline summary.

The numbers come from :mod:`tfmedseg.metrics.instances`; this module only lays them out.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tfmedseg.metrics.confusion import format_confusion
from tfmedseg.metrics.instances import compute_confusion_scores
from tfmedseg.reports.tables import Column

__all__ = ["RowOutcome", "detection_view_layout", "format_rows_tables", "instance_summary", "instance_drawings",
           "read_history", "view_evaluator", "write_rows_report"]


def detection_view_layout() -> tuple[Column, ...]:
    """Per-view summary columns (the seed's chest-detector Jaccard and lesion counts)."""
    return (
        Column("Model", "model", "first", "{}"),
        Column("Chest Jaccard min", "chest_jaccard", "min"),
        Column("Chest Jaccard mean", "chest_jaccard", "mean"),
        Column("Chest Jaccard max", "chest_jaccard", "max"),
        Column("Ref lesions", "lesions_ref", "sum", "{:.0f}"),
        Column("Pred lesions", "lesions_pred", "sum", "{:.0f}"),
        Column("TP", "tp", "sum", "{:.0f}"),
        Column("Seconds/image", "seconds", "mean", "{:.3f}"),
    )


def read_history(stage_dir) -> dict[str, list[float]]:
    """Every numeric column of a stage's ``history.csv`` (all epochs, across resumed runs: an epoch
    logged again after a resume from an earlier checkpoint counts once, its last row); {} if absent."""
    import csv

    try:
        with open(Path(stage_dir) / "history.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return {}
    if rows and "epoch" in rows[0]:
        rows = list({row["epoch"]: row for row in rows}.values())  # insertion order, the last row per epoch
    out: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                out.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                pass
    return out


@dataclasses.dataclass
class RowOutcome:
    """One trained lesion model (a Table 4 row) and its evaluation.

    Attributes:
        name: Row key (``mask_rcnn``, ``malignet``, ...).
        label: Approach name as in Table 4.
        evaluation: :class:`~tfmedseg.experiments.runner.Evaluation` over the validation views
            (outcome ``extra`` = ``(prediction, drawing)``).
        timing: The stage's training figures (``train_seconds``, ``epochs``, ``steps``, ``final_loss``).
        history: Per-epoch columns (:func:`read_history`: ``denoising_loss``, ``unlabeled_views``...).
        metrics: Pooled scores (:func:`~tfmedseg.metrics.instances.compute_detection_report`), set by
            :func:`write_rows_report`.
    """

    name: str
    label: str
    evaluation: Any
    timing: Mapping[str, float]
    history: Mapping[str, list] = dataclasses.field(default_factory=dict)
    metrics: dict | None = None


def _f(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def format_rows_tables(rows: Sequence[RowOutcome], compare: Sequence[str], *, class_names: Sequence[str],
                       criterion: str, ssd_timing: Mapping[str, float] | None = None,
                       self_training: Mapping[str, Any] | None = None,
                       inference: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Markdown Tables 4-8 (seed layouts), row-normalised confusion matrices, the semi-supervised
    figures, chest Jaccard and time.

    Args:
        rows: The trained rows (``metrics`` set).
        compare: Rows shown in Tables 5-7 and the confusion matrices (Mask R-CNN and MaligNet).
        class_names: Lesion classes in confusion-matrix order.
        criterion: The matching rule, shown in the titles (``"mask IoU >= 0.5, score >= 0.7"``).
        ssd_timing: The chest detector's training figures.
        self_training: ``{"table": pseudo_label_table rows, "rounds": [{"round", "images", "lesions",
            "threshold", "filter"}], "teacher": row}`` or None.
        inference: ``{row: {"cascade": {"median", "min"}, "model": {"median", "min"}}}`` seconds per view
            (:func:`~tfmedseg.inference.detection.interleaved_seconds_per_item`) or None.
    """
    by = {r.name: r for r in rows}
    cmp = [by[n] for n in compare if n in by]
    lines = [f"### Table 4-style lesion instance scores ({criterion}; class-weighted means)", "",
             "| Approach | row | Mean P | Mean S | Mean F1 | F1 (box IoU) | localisation F1 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        w, wb, loc = r.metrics["instances"]["weighted"], r.metrics["instances_box"]["weighted"], r.metrics["instances"]["localization"]
        lines.append(f"| {r.label} | {r.name} | {_f(w['precision'])} | {_f(w['sensitivity'])} | {_f(w['f1'])} | "
                     f"{_f(wb['f1'])} | {_f(loc['f1'])} |")
    lines += ["", "### Table 5-style class-agnostic localisation", "", "| Model | Precision | Sensitivity | F1 |", "|---|---|---|---|"]
    for r in cmp:
        loc = r.metrics["instances"]["localization"]
        lines.append(f"| {r.label} | {_f(loc['precision'])} | {_f(loc['sensitivity'])} | {_f(loc['f1'])} |")
    lines += ["", "### Table 6-style per-class scores (Acc and Spec: classification among localised lesions)", "",
              "| Class | Model | Acc | Prec | Sens | Spec | F1 | support |", "|---|---|---|---|---|---|---|---|"]
    for c in class_names:
        for r in cmp:
            inst = r.metrics["instances"]
            pc, ovr = inst["per_class"][c], compute_confusion_scores(np.asarray(inst["confusion"]), class_names)[c]
            lines.append(f"| {c} | {r.label} | {_f(ovr['accuracy'])} | {_f(pc['precision'])} | {_f(pc['sensitivity'])} | "
                         f"{_f(ovr['specificity'])} | {_f(pc['f1'])} | {inst['support'][c]} |")
    for k, r in enumerate(cmp):
        lines += ["", f"Confusion among localised lesions, row-normalised (Fig. {17 + k}-style), {r.label}:", "",
                  format_confusion(r.metrics["instances"]["confusion"], class_names)]
    lines += ["", "### Table 7-style metastasis detection", "",
              "| Unit | Model | Acc | Prec | Recall | Spec | F1 | TP/FP/FN/TN |", "|---|---|---|---|---|---|---|---|"]
    for unit, key in (("image (view)", "metastasis_image"), ("patient", "metastasis_patient")):
        for r in cmp:
            m = r.metrics[key]
            lines.append(f"| {unit} | {r.label} | {_f(m['accuracy'])} | {_f(m['precision'])} | {_f(m['sensitivity'])} | "
                         f"{_f(m['specificity'])} | {_f(m['f1'])} | {m['tp']}/{m['fp']}/{m['fn']}/{m['tn']} |")
    if self_training:
        lines += ["", f"### Table 8-style self-training (teacher: {self_training['teacher']}; pseudo-labels at confidence "
                  f">= {self_training['min_confidence']} on {self_training['unlabeled_images']} unlabeled views)", "",
                  "| Threshold | Filter | Images | Lesions |", "|---|---|---|---|"]
        for t in self_training["table"]:
            lines.append(f"| {'All' if t['threshold'] is None else t['threshold']} | {t['filter']} | {t['images']} | {t['lesions']} |")
        lines += ["", "| Round | Threshold | Filter | Images added | Lesions added | student F1 |", "|---|---|---|---|---|---|"]
        for rd in self_training["rounds"]:
            lines.append(f"| {rd['round']} | {rd['threshold']} | {rd['filter']} | {rd['images']} | {rd['lesions']} | "
                         f"{_f(rd.get('f1'))} |")
    lines += ["", "### Semi-supervised training (per epoch, from each stage's history.csv)", "",
              "| row | labeled views / epoch | unlabeled views / epoch | denoising cost epoch 1 | last epoch | min |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        d = r.history.get("denoising_loss") or []
        lab, unl = (f"{r.history[k][-1]:.0f}" if r.history.get(k) else "-" for k in ("labeled_views", "unlabeled_views"))
        lines.append(f"| {r.name} | {lab} | {unl} | "
                     + (f"{d[0]:.4f} | {d[-1]:.4f} | {min(d):.4f} |" if d else "- | - | - |"))
    j = cmp[-1].metrics["chest_jaccard"] if cmp else rows[-1].metrics["chest_jaccard"]
    lines += ["", "### Chest detector box Jaccard (seed: min 0.804 / mean 0.933 / max 0.987)", "",
              f"min {_f(j['min'])} / mean {_f(j['mean'])} / max {_f(j['max'])} over {len(j['ious'])} views", "",
              "### Training time (this machine)", "", "| stage | training s | epochs | steps | final loss |", "|---|---|---|---|---|"]
    stages = ([("ssd", ssd_timing)] if ssd_timing else []) + [(f"lesion_{r.name}", r.timing) for r in rows]
    for name, t in stages:
        lines.append(f"| {name} | {t['train_seconds']:.1f} | {t['epochs']:.0f} | {t['steps']:.0f} | {t['final_loss']:.4f} |")
    if inference:
        base = inference.get(compare[0]) if compare else None
        lines += ["", "### Inference time per view (same validation views, batch 1, warm, interleaved; median of rounds)", "",
                  "| row | whole cascade s/view | ratio | lesion model alone s/view | ratio |", "|---|---|---|---|---|"]
        for name, t in inference.items():
            rc, rm = ((t[k]["median"] / base[k]["median"]) if base else math.nan for k in ("cascade", "model"))
            lines.append(f"| {name} | {t['cascade']['median']:.4f} | {_f(rc)} | {t['model']['median']:.4f} | {_f(rm)} |")
    return "\n".join(lines) + "\n"


def instance_summary(metrics: Mapping[str, Any], timings: Mapping[str, Mapping[str, float]],
                     class_names: Sequence[str]) -> dict[str, float]:
    """The headline numbers of :func:`format_instance_tables` as a flat dict (``summary.json``)."""
    inst = metrics["instances"]
    out = {
        "chest_jaccard_min": metrics["chest_jaccard"]["min"],
        "chest_jaccard_mean": metrics["chest_jaccard"]["mean"],
        "chest_jaccard_max": metrics["chest_jaccard"]["max"],
        "lesion_precision": inst["weighted"]["precision"],
        "lesion_sensitivity": inst["weighted"]["sensitivity"],
        "lesion_f1": inst["weighted"]["f1"],
        "lesion_f1_box_iou": metrics["instances_box"]["weighted"]["f1"],
        "localization_f1": inst["localization"]["f1"],
        "metastasis_sensitivity": metrics["metastasis_image"]["sensitivity"],
        "metastasis_specificity": metrics["metastasis_image"]["specificity"],
        "patient_metastasis_sensitivity": metrics["metastasis_patient"]["sensitivity"],
        "patient_metastasis_specificity": metrics["metastasis_patient"]["specificity"],
        "inference_seconds_per_image": metrics["inference_seconds_per_image"],
    }
    for c in class_names:
        for k in ("precision", "sensitivity", "f1"):
            out[f"{c}_{k}"] = inst["per_class"][c][k]
    for name, t in timings.items():
        out[f"{name}_train_seconds"] = t["train_seconds"]
    return out


def instance_drawings(caption: str, image: np.ndarray, refs: Sequence, preds: Sequence, ref_box, pred_box):
    """A montage tile (reference masks green, predicted red) and a box drawing (reference chest and
    lesion boxes green, detected chest yellow, predicted lesions red) of one image.

    Returns:
        ``(OverlayItem, uint8 [H, W, 3])``.
    """
    from tfmedseg.reports.boxes import GREEN, RED, YELLOW, draw_boxes
    from tfmedseg.reports.overlays import OverlayItem

    get = lambda o, k: o[k] if isinstance(o, Mapping) else getattr(o, k)  # noqa: E731
    ref_mask = np.any([get(r, "mask") for r in refs], axis=0) if refs else None
    pred_mask = np.any([get(p, "mask") for p in preds], axis=0) if preds else None
    boxes = [(ref_box, GREEN)] + [(get(r, "box"), GREEN) for r in refs]
    boxes += [(pred_box, YELLOW)] if pred_box is not None else []
    boxes += [(get(p, "box"), RED) for p in preds]
    return OverlayItem(caption, image, ref_mask, pred_mask), draw_boxes(image, boxes)


def view_evaluator(detector, model, *, detector_size: int, crop_size: int, class_names: Sequence[str], rule,
                   model_name: str, crop_margin: float = 0.0):
    """``view -> {"row", "overlay", "seconds", "units", "extra"}`` (the fields of
    :class:`~tfmedseg.experiments.runner.CaseOutcome`): the detection cascade on one view
    (:func:`~tfmedseg.inference.detection.crop_cascade_predictor`), its per-view report row, montage tile
    and box drawing (``extra = (prediction, drawing)``). ``.warm_up(image)`` predicts once (tracing)."""
    from tfmedseg.inference.detection import crop_cascade_predictor
    from tfmedseg.metrics.instances import compute_image_scores

    predict = crop_cascade_predictor(detector, model, detector_size=detector_size, crop_size=crop_size,
                                     crop_margin=crop_margin, class_names=class_names)

    def evaluate_one(v) -> dict[str, Any]:
        result = predict(v.image)
        scores = compute_image_scores(result["lesions"], v.lesions, result["chest_box"], v.chest_box,
                                      classes=class_names, rule=rule)
        row = {"model": model_name, "case": v.case_id, "view": v.view, "chest_jaccard": scores.pop("chest_jaccard"),
               "chest_score": result["chest_score"], **scores, "seconds": result["seconds"]}
        overlay, drawing = instance_drawings(f"{v.case_id} {v.view[:3]}", v.image, v.lesions, result["lesions"],
                                             v.chest_box, result["chest_box"])
        return {"row": row, "overlay": overlay, "seconds": result["seconds"], "units": 1, "extra": (result, drawing)}

    evaluate_one.warm_up = predict
    return evaluate_one


def write_rows_report(out_dir, rows: Sequence[RowOutcome], views, *, class_names: Sequence[str], rule, title: str,
                      compare: Sequence[str], ssd_timing: Mapping[str, float] | None = None,
                      self_training: Mapping[str, Any] | None = None, inference: Mapping[str, Any] | None = None,
                      overlay_images: int = 8) -> tuple[dict[str, float], dict[str, Any]]:
    """The seed-001 report of every trained row over the same views: pooled scores per row,
    ``per_case.csv`` (one line per row and view), ``summary.md`` (per-view columns per row, Tables 4-8,
    confusion matrices, semi-supervised figures, chest Jaccard, time), ``montage.png`` and box
    drawings in TensorBoard (``<out_dir>/logs/predictions``) of the last ``compare`` row.

    Args:
        out_dir: Run directory.
        rows: :class:`RowOutcome` s (their ``metrics`` are filled in here).
        views: The evaluated views (``lesions``, ``chest_box``, ``case_id``).
        class_names / rule / title / overlay_images: As named.
        compare / ssd_timing / self_training / inference: As :func:`format_rows_tables`.

    Returns:
        ``(summary, paths)``: the headline numbers (:func:`instance_summary` of the last ``compare`` row,
        plus ``<row>_lesion_f1``, ``<row>_seconds_per_view``, the inference ratios and the denoising
        costs) and the report files.
    """
    from tfmedseg.metrics.instances import compute_detection_report
    from tfmedseg.reports.boxes import write_tensorboard_images
    from tfmedseg.reports.files import write_report

    for r in rows:
        results = [o.extra[0] for o in r.evaluation.outcomes]
        r.metrics = compute_detection_report(
            [x["lesions"] for x in results], [v.lesions for v in views], [v.case_id for v in views],
            [x["chest_box"] for x in results], [v.chest_box for v in views], classes=class_names, rule=rule)
        r.metrics["inference_seconds_per_image"] = r.evaluation.seconds / max(1, len(views))
    by = {r.name: r for r in rows}
    main = by[[n for n in compare if n in by][-1]] if any(n in by for n in compare) else rows[-1]
    write_tensorboard_images(Path(out_dir) / "logs" / "predictions",
                             "validation: reference green, predicted chest yellow, lesions red",
                             [o.extra[1] for o in main.evaluation.outcomes[:overlay_images]])
    criterion = f"{rule.use} IoU >= {rule.iou_threshold}, score >= {rule.score_threshold}"
    section = format_rows_tables(rows, compare, class_names=class_names, criterion=criterion, ssd_timing=ssd_timing,
                                 self_training=self_training, inference=inference)
    paths = write_report(out_dir, [row for r in rows for row in r.evaluation.rows], layout=detection_view_layout(),
                         group_by="model", title=title, overlays=main.evaluation.overlays, sections=[section])
    timings = {"ssd": ssd_timing} if ssd_timing else {}
    timings.update({f"lesion_{r.name}": r.timing for r in rows})
    summary = instance_summary(main.metrics, timings, class_names)
    summary["primary_row"] = main.name
    for r in rows:
        summary[f"{r.name}_lesion_f1"] = r.metrics["instances"]["weighted"]["f1"]
        if r.history.get("denoising_loss"):
            d = r.history["denoising_loss"]
            summary[f"{r.name}_denoising_first"], summary[f"{r.name}_denoising_last"] = d[0], d[-1]
        if r.history.get("unlabeled_views"):
            summary[f"{r.name}_unlabeled_views_per_epoch"] = r.history["unlabeled_views"][-1]
    for name, t in (inference or {}).items():
        summary[f"{name}_seconds_per_view"] = t["cascade"]["median"]
        summary[f"{name}_model_seconds_per_view"] = t["model"]["median"]
    base = (inference or {}).get(compare[0]) if compare else None
    if base and main.name in inference and main.name != compare[0]:
        summary["inference_ratio"] = inference[main.name]["cascade"]["median"] / base["cascade"]["median"]
        summary["inference_ratio_model"] = inference[main.name]["model"]["median"] / base["model"]["median"]
    return summary, paths
