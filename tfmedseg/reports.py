"""Experiment reports: per-case CSV, a summary table in a seed's layout, and an overlay montage.

Every experiment evaluates each case into one row (:func:`evaluate_segmentation_case` for label
maps, or its own dict of numbers) and then calls :func:`write_report` once::

    rows = [dict(model="3D MobileNet-V2", case=cid, **evaluate_segmentation_case(p, y, spacing=sp))
            for cid, p, y, sp in cases]
    write_report("runs/exp1", rows, layout=LITS_TUMOUR_LAYOUT, group_by="model",
                 overlays=[OverlayItem(cid, ct, liver, lesion) for ...])

which writes ``per_case.csv``, ``summary.md`` (one row per ``group_by`` value, the seed's columns)
and ``montage.png``. Numbers are reduced with ``np.nanmean`` and friends; infinite values (a surface
distance with an empty mask) are excluded and counted in a ``n_inf`` note under the table.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.metrics.lesions import compute_dice_by_lesion_size
from tfmedseg.metrics.overlap import compute_overlap_counts
from tfmedseg.metrics.surface import compute_surface_distances
from tfmedseg.metrics._validate import as_array, check_same_shape, check_spacing

__all__ = [
    "REDUCTIONS",
    "Column",
    "OverlayItem",
    "LITS_TUMOUR_LAYOUT",
    "DICE_IOU_LAYOUT",
    "SIZE_DICE_LAYOUT",
    "LITS_CLASSES",
    "evaluate_segmentation_case",
    "summarize",
    "format_table",
    "overlay_montage",
    "write_report",
]

REDUCTIONS = ("mean", "median", "std", "min", "max", "sum", "mean_std", "global_dice", "first")


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a summary table.

    Attributes:
        header: Column title as in the seed's table (``"Dice/case"``).
        key: Per-case row key to reduce (``"tumour_dice"``); for ``"global_dice"`` the class prefix
            (``"tumour"``: uses ``tumour_intersection``, ``tumour_pred``, ``tumour_ref``); for
            ``"first"`` a text key such as ``"model"``.
        reduce: One of :data:`REDUCTIONS` (default ``"mean"``).
        fmt: Format of the number (default ``"{:.3f}"``).
    """

    header: str
    key: str
    reduce: str = "mean"
    fmt: str = "{:.3f}"


#: Seed 002 Table 4.8 (LiTS tumour): Dice/case, Global Dice, VOE, RVD, ASSD.
LITS_TUMOUR_LAYOUT = (
    Column("Model", "model", "first", "{}"),
    Column("Dice/case", "tumour_dice"),
    Column("Global Dice", "tumour", "global_dice"),
    Column("VOE", "tumour_voe"),
    Column("RVD", "tumour_rvd"),
    Column("ASSD", "tumour_assd", fmt="{:.4f}"),
)
#: Seed 000 tables: DSC / IoU of liver and tumour.
DICE_IOU_LAYOUT = (
    Column("Model", "model", "first", "{}"),
    Column("Liver DSC", "liver_dice", fmt="{:.2f}"),
    Column("Liver IoU", "liver_iou", fmt="{:.2f}"),
    Column("Tumour DSC", "tumour_dice", fmt="{:.2f}"),
    Column("Tumour IoU", "tumour_iou", fmt="{:.2f}"),
)
#: Seed 002 Tables 4.6 / 4.7: tumour Dice by lesion size.
SIZE_DICE_LAYOUT = (
    Column("Model", "model", "first", "{}"),
    Column("Small", "tumour_dice_small"),
    Column("Medium", "tumour_dice_medium"),
    Column("Large", "tumour_dice_large"),
)

#: Label values of each class in a LiTS label map (0 background, 1 liver, 2 tumour; liver includes tumour).
LITS_CLASSES = {"liver": (1, 2), "tumour": (2,)}


def evaluate_segmentation_case(
    y_pred, y, *, spacing, classes: Mapping[str, Sequence[int]] = LITS_CLASSES, surface: bool = True,
    lesion_sizes: str | None = "tumour",
) -> dict[str, float]:
    """All per-case segmentation metrics of a label map, as one flat report row.

    Args:
        y_pred: Predicted label map ``[D, H, W]`` (or ``[H, W]``).
        y: Reference label map, same shape.
        spacing: Voxel size in mm per axis (required; for the surface distances).
        classes: ``{name: label values}``; default LiTS (liver = 1 or 2, tumour = 2).
        surface: Also compute ASSD / MSSD / HD95 (the slowest part).
        lesion_sizes: Class whose per-lesion Dice by size is added (``<name>_dice_small`` ...), or None.

    Returns:
        ``{f"{name}_{metric}": value}`` for metric in dice, iou, voe, rvd, assd, mssd, hd95 and the
        counts ``intersection``, ``pred``, ``ref`` (for the global Dice).
    """
    p = as_array(y_pred, "y_pred")
    t = as_array(y, "y")
    check_same_shape(p, t, ("y_pred", "y"))
    check_spacing(spacing, p.ndim)
    row: dict[str, float] = {}
    for name, values in classes.items():
        pm, tm = np.isin(p, values), np.isin(t, values)
        c = compute_overlap_counts(pm, tm)
        inter, n_p, n_t = c["intersection"], c["pred"], c["ref"]
        union = n_p + n_t - inter
        row[f"{name}_dice"] = 1.0 if n_p + n_t == 0 else 2.0 * inter / (n_p + n_t)
        row[f"{name}_iou"] = 1.0 if union == 0 else inter / union
        row[f"{name}_voe"] = 1.0 - row[f"{name}_iou"]
        row[f"{name}_rvd"] = (0.0 if n_p == 0 else math.inf) if n_t == 0 else (n_p - n_t) / n_t
        row.update({f"{name}_intersection": inter, f"{name}_pred": n_p, f"{name}_ref": n_t})
        if surface:
            d_p, d_r = compute_surface_distances(pm, tm, spacing=spacing)
            if d_p.size == 0 and d_r.size == 0:
                vals = (math.nan,) * 3
            elif np.isinf(d_p).any() or np.isinf(d_r).any():
                vals = (math.inf,) * 3
            else:
                both = np.concatenate([d_p, d_r])
                vals = (float(both.mean()), float(max(d_p.max(), d_r.max())), float(np.percentile(both, 95)))
            row.update(zip((f"{name}_assd", f"{name}_mssd", f"{name}_hd95"), vals))
        if lesion_sizes == name:
            for group, v in compute_dice_by_lesion_size(pm, tm).items():
                row[f"{name}_dice_{group}"] = v["dice"]
    return row


def _reduce(rows: list[Mapping[str, Any]], col: Column) -> tuple[Any, int]:
    if col.reduce not in REDUCTIONS:
        raise ConfigError(f"must be one of {REDUCTIONS}, got {col.reduce!r}", path=f"layout[{col.header}].reduce")
    if col.reduce == "first":
        return (rows[0].get(col.key, "") if rows else ""), 0
    if col.reduce == "global_dice":
        try:
            inter = sum(float(r[f"{col.key}_intersection"]) for r in rows)
            total = sum(float(r[f"{col.key}_pred"]) + float(r[f"{col.key}_ref"]) for r in rows)
        except KeyError as exc:
            raise ConfigError(f"global_dice needs the per-case count {exc.args[0]!r}", path=f"layout[{col.header}]") from exc
        return (1.0 if total == 0 else 2.0 * inter / total), 0
    vals = np.array([float(r.get(col.key, math.nan)) for r in rows], np.float64)
    n_inf = int(np.isinf(vals).sum())
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return math.nan, n_inf
    fn = {"mean": np.mean, "median": np.median, "std": np.std, "min": np.min, "max": np.max, "sum": np.sum}
    if col.reduce == "mean_std":
        return (float(np.mean(vals)), float(np.std(vals))), n_inf
    return float(fn[col.reduce](vals)), n_inf


def summarize(rows: Sequence[Mapping[str, Any]], layout: Sequence[Column], group_by: str | None = None
              ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Reduces per-case rows to table rows (one per ``group_by`` value, in first-seen order).

    Returns:
        ``(table, n_inf)``: a list of ``{header: value}`` and the number of infinite values left out
        per header.
    """
    groups: dict[Any, list] = {}
    for r in rows:
        groups.setdefault(r.get(group_by) if group_by else None, []).append(r)
    table, n_inf = [], {}
    for _, members in groups.items():
        out = {}
        for col in layout:
            out[col.header], k = _reduce(members, col)
            if k:
                n_inf[col.header] = n_inf.get(col.header, 0) + k
        table.append(out)
    return table, n_inf


def _fmt(value: Any, fmt: str) -> str:
    if isinstance(value, tuple):
        return " ± ".join(_fmt(v, fmt) for v in value)
    if isinstance(value, float) and math.isnan(value):
        return "NA"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def format_table(table: Sequence[Mapping[str, Any]], layout: Sequence[Column], title: str = "") -> str:
    """Markdown table in the layout's column order (NaN printed as ``NA``, like the seeds)."""
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(c.header for c in layout) + " |")
    lines.append("|" + "---|" * len(layout))
    for row in table:
        lines.append("| " + " | ".join(_fmt(row[c.header], c.fmt) for c in layout) + " |")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class OverlayItem:
    """One montage tile: an image with its liver and lesion masks.

    Attributes:
        case_id: Caption of the tile.
        image: ``[H, W]`` slice or ``[D, H, W]`` volume (any scale; min-max normalised for display).
        liver: Binary mask of the same shape (green), or None.
        lesion: Binary mask of the same shape (red), or None.
        slice_index: For volumes, the axial slice to show; None = the slice with the most lesion (or
            liver) voxels.
    """

    case_id: str
    image: np.ndarray
    liver: np.ndarray | None = None
    lesion: np.ndarray | None = None
    slice_index: int | None = None


def _tile(item: OverlayItem, size: int, opacity: float):
    from PIL import Image, ImageDraw

    img = as_array(item.image, "image").astype(np.float32)
    masks = []
    for name in ("liver", "lesion"):
        m = getattr(item, name)
        if m is not None:
            m = as_array(m, name) != 0
            check_same_shape(img, m, ("image", name))
        masks.append(m)
    if img.ndim == 3:
        k = item.slice_index
        if k is None:
            ref = masks[1] if masks[1] is not None and masks[1].any() else masks[0]
            k = int(np.argmax(ref.reshape(ref.shape[0], -1).sum(1))) if ref is not None else img.shape[0] // 2
        img = img[k]
        masks = [None if m is None else m[k] for m in masks]
    elif img.ndim != 2:
        raise InvalidInputError(f"must be [H, W] or [D, H, W], got shape {img.shape}", path="image")
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    gray = np.zeros_like(img) if hi <= lo else (img - lo) / (hi - lo)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if masks[0] is not None and masks[1] is not None:
        masks[0] = masks[0] & ~masks[1]  # a lesion voxel is shown red only (label-map colours)
    for m, colour in zip(masks, ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0))):
        if m is not None:
            rgb[m] = (1 - opacity) * rgb[m] + opacity * np.asarray(colour)
    pil = Image.fromarray(np.round(rgb * 255).astype(np.uint8)).resize((size, size), Image.NEAREST)
    ImageDraw.Draw(pil).text((4, 4), str(item.case_id), fill=(255, 255, 0))
    return pil


def overlay_montage(items: Sequence[OverlayItem], path: str | os.PathLike, tile_size: int = 256,
                    columns: int = 4, opacity: float = 0.3) -> Path:
    """Writes a PNG grid of overlays: liver green, lesion red, ``opacity`` (30 %, the seed-003 viewer).

    Returns:
        The PNG path.
    """
    from PIL import Image

    if not items:
        raise InvalidInputError("needs at least one item", path="items")
    tiles = [_tile(it, tile_size, opacity) for it in items]
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (cols * tile_size, rows * tile_size))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * tile_size, (i // cols) * tile_size))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def write_report(
    out_dir: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    *,
    layout: Sequence[Column],
    group_by: str | None = None,
    title: str = "",
    overlays: Sequence[OverlayItem] = (),
) -> dict[str, Path]:
    """Writes ``per_case.csv``, ``summary.md`` and (with ``overlays``) ``montage.png`` into ``out_dir``.

    Args:
        out_dir: Output directory (created).
        rows: One dict per case (and model); all keys become CSV columns.
        layout: The summary's columns (e.g. :data:`LITS_TUMOUR_LAYOUT`).
        group_by: Row key giving one summary row per value (e.g. ``"model"``).
        title: Heading of the summary.
        overlays: Montage tiles for a few cases.

    Returns:
        ``{"per_case": path, "summary": path[, "montage": path]}``.
    """
    if not rows:
        raise InvalidInputError("needs at least one per-case row", path="rows")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    csv_path = out / "per_case.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})
    table, n_inf = summarize(rows, layout, group_by)
    text = format_table(table, layout, title)
    if n_inf:
        text += "\nInfinite values (an empty mask) left out of: " + ", ".join(
            f"{h} ({n})" for h, n in n_inf.items()) + "\n"
    summary_path = out / "summary.md"
    summary_path.write_text(text)
    paths = {"per_case": csv_path, "summary": summary_path}
    if overlays:
        paths["montage"] = overlay_montage(overlays, out / "montage.png")
    return paths
