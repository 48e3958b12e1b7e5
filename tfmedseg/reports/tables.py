"""Summary tables in a seed's layout: :class:`Column` s reduce per-case rows to table rows, rendered as markdown.

Numbers are reduced with ``np.nanmean`` and friends; infinite values (a surface distance with an
empty mask) are excluded and counted (``n_inf``); NaN prints as ``NA``, like the seeds' tables.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from tfmedseg.errors import ConfigError
from tfmedseg.metrics.overlap import overlap_scores_from_counts

__all__ = ["REDUCTIONS", "Column", "summarize", "format_table", "format_number", "markdown_table"]

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



def _reduce(rows: list[Mapping[str, Any]], col: Column) -> tuple[Any, int]:
    if col.reduce not in REDUCTIONS:
        raise ConfigError(f"must be one of {REDUCTIONS}, got {col.reduce!r}", path=f"layout[{col.header}].reduce")
    if col.reduce == "first":
        return (rows[0].get(col.key, "") if rows else ""), 0
    if col.reduce == "global_dice":
        try:
            inter, pred, ref = (sum(float(r[f"{col.key}_{k}"]) for r in rows) for k in ("intersection", "pred", "ref"))
        except KeyError as exc:
            raise ConfigError(f"global_dice needs the per-case count {exc.args[0]!r}", path=f"layout[{col.header}]") from exc
        return overlap_scores_from_counts(inter, pred, ref)["dice"], 0
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


def format_number(value: Any, fmt: str = "{:.3f}") -> str:
    """One table cell: ``fmt`` applied to a number, ``NA`` for None or NaN, ``a ± b`` for a pair."""
    if value is None:
        return "NA"
    return _fmt(value, fmt)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """A markdown table of already formatted cells (``### title`` above it when given)."""
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
