"""The report files of a run: ``per_case.csv``, ``summary.md`` and ``montage.png``."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from tfmedseg.errors import InvalidInputError
from tfmedseg.reports.overlays import OverlayItem, overlay_montage
from tfmedseg.reports.tables import Column, format_table, summarize

__all__ = ["write_report"]


def write_report(
    out_dir: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    *,
    layout: Sequence[Column],
    group_by: str | None = None,
    title: str = "",
    overlays: Sequence[OverlayItem] = (),
    sections: Sequence[str] = (),
    summary_rows: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Writes ``per_case.csv``, ``summary.md`` and (with ``overlays``) ``montage.png`` into ``out_dir``.

    Args:
        out_dir: Output directory (created).
        rows: One dict per case (and model); all keys become CSV columns.
        layout: The summary's columns (e.g. :data:`LITS_TUMOUR_LAYOUT`).
        group_by: Row key giving one summary row per value (e.g. ``"model"``).
        title: Heading of the summary.
        overlays: Montage tiles for a few cases.
        sections: Markdown appended to ``summary.md`` after the table (further tables in the seed's layouts).
        summary_rows: The rows the summary table reduces (default: ``rows``; e.g. one evaluation
            of several in ``per_case.csv``).

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
    table, n_inf = summarize(rows if summary_rows is None else summary_rows, layout, group_by)
    text = format_table(table, layout, title)
    if n_inf:
        text += "\nInfinite values (an empty mask) left out of: " + ", ".join(
            f"{h} ({n})" for h, n in n_inf.items()) + "\n"
    summary_path = out / "summary.md"
    summary_path.write_text(text + "".join("\n" + section for section in sections))
    paths = {"per_case": csv_path, "summary": summary_path}
    if overlays:
        paths["montage"] = overlay_montage(overlays, out / "montage.png")
    return paths
