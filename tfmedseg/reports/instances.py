"""Seed 001 report pieces: per-view columns, Tables 4-7 (lesion instances, localisation, per class,
metastasis), chest-box Jaccard, training and inference time, and the flat headline summary.

The numbers come from :mod:`tfmedseg.metrics.instances`; this module only lays them out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tfmedseg.metrics.instances import compute_confusion_scores
from tfmedseg.reports.tables import Column

__all__ = ["detection_view_layout", "format_instance_tables", "instance_summary", "instance_drawings",
           "write_instance_report"]


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


def format_instance_tables(metrics: Mapping[str, Any], timings: Mapping[str, Mapping[str, float]], model_name: str, *,
                           class_names: Sequence[str], criterion: str) -> str:
    """Markdown Tables 4, 5, 6 and 7 (seed layouts), the confusion matrix, chest Jaccard and timing.

    Args:
        metrics: ``{"instances", "instances_box"}`` (:func:`~tfmedseg.metrics.instances.compute_instance_metrics`
            on mask and box IoU), ``"metastasis_image"``, ``"metastasis_patient"``, ``"chest_jaccard"``
            and ``"inference_seconds_per_image"``.
        timings: Per stage ``train_seconds``, ``epochs``, ``steps``, ``final_loss``.
        model_name: Row label.
        class_names: Lesion classes in confusion-matrix order.
        criterion: The matching rule, shown in the Table 4 title (``"mask IoU >= 0.5, score >= 0.7"``).
    """
    f = lambda v: f"{v:.3f}"  # noqa: E731
    inst, box = metrics["instances"], metrics["instances_box"]
    w, wb = inst["weighted"], box["weighted"]
    lines = [f"### Table 4-style lesion instance scores ({criterion}; class-weighted means)", "",
             "| Approach | Mean P | Mean S | Mean F1 |", "|---|---|---|---|",
             f"| {model_name} | {f(w['precision'])} | {f(w['sensitivity'])} | {f(w['f1'])} |",
             f"| {model_name} (box IoU) | {f(wb['precision'])} | {f(wb['sensitivity'])} | {f(wb['f1'])} |", "",
             "### Table 5-style class-agnostic localisation", "", "| Model | Precision | Sensitivity | F1 |",
             "|---|---|---|---|"]
    loc = inst["localization"]
    lines += [f"| {model_name} | {f(loc['precision'])} | {f(loc['sensitivity'])} | {f(loc['f1'])} |", "",
              "### Table 6-style per-class scores (Acc and Spec: classification among localised lesions)", "",
              "| Class | Model | Acc | Prec | Sens | Spec | F1 | support |", "|---|---|---|---|---|---|---|---|"]
    conf = np.asarray(inst["confusion"])
    one_vs_rest = compute_confusion_scores(conf, class_names)
    for c in class_names:
        pc, ovr = inst["per_class"][c], one_vs_rest[c]
        lines.append(f"| {c} | {model_name} | {f(ovr['accuracy'])} | {f(pc['precision'])} | {f(pc['sensitivity'])} | "
                     f"{f(ovr['specificity'])} | {f(pc['f1'])} | {inst['support'][c]} |")
    lines += ["", "Confusion among localised lesions (rows reference, columns prediction: "
              + ", ".join(class_names) + "):", "", "```"]
    lines += [" ".join(f"{v:5d}" for v in row) for row in conf.tolist()] + ["```", "",
              "### Table 7-style metastasis detection", "",
              "| Unit | Model | Acc | Prec | Recall | Spec | F1 | TP/FP/FN/TN |", "|---|---|---|---|---|---|---|---|"]
    for unit, key in (("image (view)", "metastasis_image"), ("patient", "metastasis_patient")):
        m = metrics[key]
        lines.append(f"| {unit} | {model_name} | {f(m['accuracy'])} | {f(m['precision'])} | {f(m['sensitivity'])} | "
                     f"{f(m['specificity'])} | {f(m['f1'])} | {m['tp']}/{m['fp']}/{m['fn']}/{m['tn']} |")
    j = metrics["chest_jaccard"]
    lines += ["", "### Chest detector box Jaccard (seed: min 0.804 / mean 0.933 / max 0.987)", "",
              f"min {f(j['min'])} / mean {f(j['mean'])} / max {f(j['max'])} over {len(j['ious'])} views", "",
              "### Time (this machine)", "", "| stage | training s | epochs | steps | final loss |", "|---|---|---|---|---|"]
    for name, t in timings.items():
        lines.append(f"| {name} | {t['train_seconds']:.1f} | {t['epochs']:.0f} | {t['steps']:.0f} | {t['final_loss']:.4f} |")
    lines += ["", f"Inference (SSD + crop + Mask R-CNN + mapping back): "
              f"{metrics['inference_seconds_per_image']:.3f} s per image (view)"]
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


def write_instance_report(out_dir, evaluation, views, timings, model_name: str, *, class_names: Sequence[str], rule,
                          title: str, overlay_images: int = 8) -> tuple[dict[str, float], dict[str, Any]]:
    """The seed-001 report of an evaluation over views: pooled scores, ``per_case.csv``, ``summary.md``
    (per-view columns, Tables 4-7, chest Jaccard, time), ``montage.png`` and the box drawings in
    TensorBoard (``<out_dir>/logs/predictions``).

    Args:
        out_dir: Run directory.
        evaluation: :class:`~tfmedseg.experiments.runner.Evaluation` whose outcomes' ``extra`` is
            ``(prediction, drawing)`` (:func:`tfmedseg.inference.detection.predict_crop_cascade`,
            :func:`instance_drawings`).
        views: The evaluated views (``lesions``, ``chest_box``, ``case_id``).
        timings: Per-stage training figures.
        model_name / class_names / rule / title / overlay_images: As named.

    Returns:
        ``(summary, metrics, paths)``: :func:`instance_summary`, the pooled metrics and the report files.
    """
    from tfmedseg.metrics.instances import compute_detection_report
    from tfmedseg.reports.boxes import write_tensorboard_images
    from tfmedseg.reports.files import write_report

    results = [o.extra[0] for o in evaluation.outcomes]
    write_tensorboard_images(Path(out_dir) / "logs" / "predictions",
                             "validation: reference green, predicted chest yellow, lesions red",
                             [o.extra[1] for o in evaluation.outcomes[:overlay_images]])
    metrics = compute_detection_report(
        [r["lesions"] for r in results], [v.lesions for v in views], [v.case_id for v in views],
        [r["chest_box"] for r in results], [v.chest_box for v in views], classes=class_names, rule=rule)
    metrics["inference_seconds_per_image"] = evaluation.seconds / len(views)
    criterion = f"{rule.use} IoU >= {rule.iou_threshold}, score >= {rule.score_threshold}"
    paths = write_report(out_dir, evaluation.rows, layout=detection_view_layout(), group_by="model", title=title,
                         overlays=evaluation.overlays, sections=[format_instance_tables(
                             metrics, timings, model_name, class_names=class_names, criterion=criterion)])
    return instance_summary(metrics, timings, class_names), metrics, paths
