"""Predict lesion instances on a whole-body bone-scan NM DICOM with the exported seed-001 model.

The SavedModel (:func:`tfmedseg.export.whole_body.export_whole_body_savedmodel`) does everything
in its graph; this module reads the two views (:func:`tfmedseg.io.nm_planar.read_nm_wholebody`),
resizes each to the model's view size when it differs (boxes and masks are mapped back), calls the
``serving_default`` signature and writes, atomically into one output folder:

* ``instances.json``: per view the chest box/score and every lesion (class name, score, box in the
  DICOM view's pixels ``y0, x0, y1, x1``, mask area in pixels);
* ``overlay_<view>.png``: the view in grey with the lesion masks coloured by class and the chest
  box in yellow.

Used by ``python -m tfmedseg.predict --model <savedmodel version dir> --input scan.dcm --output DIR``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["CLASS_COLOURS", "is_whole_body_model", "predict_bone_scan", "detect_bone_scan_instances"]

log = logging.getLogger(__name__)

CLASS_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180))


def is_whole_body_model(path: str | os.PathLike) -> bool:
    """True for a SavedModel version directory written by ``export_whole_body_savedmodel``."""
    meta = Path(path) / "metadata.json"
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and str(info.get("task", "")).startswith("whole-body bone-scan view")


def _overlay(image: np.ndarray, lesions: list[dict], masks: np.ndarray, chest_box) -> np.ndarray:
    """``uint8 [H, W, 3]``: grey view, class-coloured masks (50 %), yellow chest box."""
    hi = float(np.percentile(image, 99.5)) or 1.0
    grey = (np.clip(image / hi, 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    for lesion, mask in zip(lesions, masks):
        colour = np.array(CLASS_COLOURS[(lesion["class_id"] - 1) % len(CLASS_COLOURS)], np.float32)
        rgb[mask] = 0.5 * rgb[mask] + 0.5 * colour
    rgb = rgb.astype(np.uint8)
    if chest_box is not None:
        h, w = image.shape
        y0, x0, y1, x1 = (round(v) for v in chest_box)
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(max(y1 - 1, 0), h - 1), min(max(x1 - 1, 0), w - 1)
        rgb[y0, x0:x1 + 1] = rgb[y1, x0:x1 + 1] = (255, 255, 0)
        rgb[y0:y1 + 1, x0] = rgb[y0:y1 + 1, x1] = (255, 255, 0)
    return rgb


def predict_bone_scan(model_dir: str | os.PathLike, input_path: str | os.PathLike, output: str | os.PathLike,
                      *, overwrite: bool = False) -> dict[str, Any]:
    """Run the exported two-stage model on both views of a whole-body NM DICOM file.

    Args:
        model_dir: SavedModel version directory (``metadata.json`` with the view size and classes).
        input_path: Two-frame NM DICOM file (anterior + posterior).
        output: Output folder (``instances.json``, ``overlay_anterior.png``, ``overlay_posterior.png``).
        overwrite: Replace an existing output folder written by tfmedseg.

    Returns:
        ``{"instances": the JSON dict, "written": [paths]}``; when ``output`` holds the result of
        this model and input already (the provenance recorded in its marker, :mod:`tfmedseg.io.provenance`)
        and not ``overwrite``: ``{"up_to_date": True, "written": []}`` and nothing is read or written.

    Raises:
        InvalidInputError: Unreadable/non-NM input (names the file) or a model folder that is not
            a whole-body export.
    """
    from PIL import Image

    from tfmedseg.io._atomic import atomic_dir, check_output_not_input, holds_provenance
    from tfmedseg.io.nm_planar import read_nm_wholebody
    from tfmedseg.io.provenance import job_record

    model_dir, input_path, output = Path(model_dir), Path(input_path), Path(output)
    if not is_whole_body_model(model_dir):
        raise InvalidInputError("not a whole-body bone-scan SavedModel (metadata.json task)", path=model_dir)
    check_output_not_input(output, [input_path, model_dir], key=str(output))
    if not input_path.exists():
        raise InvalidInputError("input does not exist", path=input_path)
    provenance = job_record("predict", model_dir, input_path, "bone_scan")
    if not overwrite and holds_provenance(output, provenance):
        return {"up_to_date": True, "written": []}
    views = read_nm_wholebody(input_path)
    per_view, masks = detect_bone_scan_instances(model_dir, views)
    result: dict[str, Any] = {"input": str(input_path), "model": str(model_dir), "views": per_view}
    drawings = {view: _overlay(np.asarray(views[view].array, np.float32), per_view[view]["lesions"], masks[view],
                               per_view[view]["chest_box"]) for view in per_view}
    with atomic_dir(output, overwrite, kind="predict", provenance=provenance, option="--overwrite") as staging:
        (staging / "instances.json").write_text(json.dumps(result, indent=2))
        for view, rgb in drawings.items():
            Image.fromarray(rgb).save(staging / f"overlay_{view}.png")
    written = sorted(p for p in output.iterdir() if p.suffix in (".json", ".png"))
    return {"instances": result, "written": written}


def detect_bone_scan_instances(model_dir: str | os.PathLike, views: dict) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Lesion instances of each whole-body view with the exported two-stage model.

    Args:
        model_dir: SavedModel version directory written by ``export_whole_body_savedmodel``.
        views: ``{"anterior": Volume, "posterior": Volume}`` (:func:`tfmedseg.io.nm_planar.read_nm_wholebody`);
            views of another size than the model's are resized in (bilinear) and the masks out (nearest).

    Returns:
        ``({view: {"chest_box", "chest_score", "lesions": [{"class_id", "class_name", "score", "box",
        "mask_pixels"}], "shape"}}, {view: bool masks [n, H, W]})`` in the view's pixels.

    Raises:
        InvalidInputError: ``model_dir`` is not a whole-body export.
    """
    import tensorflow as tf

    model_dir = Path(model_dir)
    if not is_whole_body_model(model_dir):
        raise InvalidInputError("not a whole-body bone-scan SavedModel (metadata.json task)", path=model_dir)
    info = json.loads((model_dir / "metadata.json").read_text())
    h, w = (int(v) for v in info["inputs"]["views"]["shape"][1:])
    names = list(info.get("class_names") or [])
    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    per_view: dict[str, dict] = {}
    all_masks: dict[str, np.ndarray] = {}
    for view, volume in views.items():
        counts = np.asarray(volume.array, np.float32)
        vh, vw = counts.shape
        resized = tf.image.resize(counts[None, ..., None], (h, w), method="bilinear")[..., 0] if (vh, vw) != (h, w) \
            else tf.constant(counts[None])
        out = {k: v.numpy()[0] for k, v in serve(views=resized).items()}
        n = int(out["num_detections"])
        scale = np.array([vh / h, vw / w, vh / h, vw / w], np.float32)
        masks = out["masks"][:n].astype(bool)
        if (vh, vw) != (h, w) and n:
            masks = tf.image.resize(masks.transpose(1, 2, 0).astype(np.float32), (vh, vw), method="nearest").numpy()
            masks = masks.transpose(2, 0, 1) > 0.5
        lesions = []
        for k in range(n):
            cid = int(out["classes"][k])
            lesions.append({"class_id": cid, "class_name": names[cid - 1] if 0 < cid <= len(names) else str(cid),
                            "score": float(out["scores"][k]), "box": [float(v) for v in out["boxes"][k] * scale],
                            "mask_pixels": int(masks[k].sum())})
        chest = [float(v) for v in out["chest_box"] * scale] if float(out["chest_score"]) > 0 else None
        per_view[view] = {"chest_box": chest, "chest_score": float(out["chest_score"]), "lesions": lesions,
                          "shape": [vh, vw]}
        all_masks[view] = masks.reshape((n, vh, vw))
        log.info("%s: %d lesion(s)", view, n)
    return per_view, all_masks


def predicted_chest_boxes(ssd, images, detector_size: int, batch_size: int = 16) -> list:
    """The SSD's top chest box of each whole-body view, in the view's pixels (seed section 6.2).

    Args:
        ssd: ``images [B, S, S, 1] -> detections`` callable (an :class:`SSD`).
        images: Views ``[H_i, W_i]`` in [0, 1].
        detector_size: ``S``, the SSD input side (views are resized, aspect not kept).
        batch_size: Views per SSD call.

    Returns:
        ``(y0, x0, y1, x1)`` per view, or None where the SSD found nothing (or a box under 1 px).
    """
    from tfmedseg.preprocessing.resample import resize_array

    out: list = []
    for start in range(0, len(images), batch_size):
        part = images[start:start + batch_size]
        x = np.stack([resize_array(im, (detector_size, detector_size), "linear") for im in part])[..., None]
        det = ssd(x.astype(np.float32), training=False)
        n, boxes = np.asarray(det["num_detections"]), np.asarray(det["boxes"])
        for k, im in enumerate(part):
            h, w = im.shape
            scale = np.array([h, w, h, w], np.float32) / detector_size
            box = boxes[k, 0] * scale
            ok = n[k] > 0 and box[2] - box[0] >= 1.0 and box[3] - box[1] >= 1.0
            out.append(tuple(float(v) for v in box) if ok else None)
    return out
