"""Metrics of an ensemble of segmentation networks and its fusion (seed 003, Tables 1-2 and Fig. 9).

:func:`summarize_ensemble` averages per-case Dice of every network (with and without
post-processing) and of the fusion; :func:`format_ensemble_table` lays them out as the seed's Tables
1 and 2 (networks as columns, the fusion last).

Diversity: how much the networks' errors overlap.
The error map of network ``i`` is ``E_i = |y - P_i|`` (its false positives and false negatives); the
overlap of two networks is the Dice of their error maps, pooled over all voxels of all cases:
``2 |E_i ∩ E_j| / (|E_i| + |E_j|)``. Low values mean the networks err in different places, which is
what a vote can correct (the seed: all liver pairs below 70 %). The diagonal is 1 (0 when a network
makes no error at all).

Example:
    >>> import numpy as np
    >>> y = np.array([1, 1, 0, 0])
    >>> compute_error_overlap([[np.array([1, 0, 0, 0]), np.array([1, 0, 1, 0])]], [y]).round(3).tolist()
    [[1.0, 0.667], [0.667, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["compute_error_overlap", "format_ensemble_table", "format_error_overlap", "summarize_ensemble"]


def compute_error_overlap(predictions: Sequence[Sequence[np.ndarray]], references: Sequence[np.ndarray]) -> np.ndarray:
    """``[M, M]`` pooled Dice of the networks' error maps.

    Args:
        predictions: Per case, the M networks' binary masks (each the reference's shape).
        references: Per case, the binary reference mask.

    Raises:
        InvalidInputError: Different numbers of cases or networks, or shape mismatches.
    """
    if len(predictions) != len(references) or not predictions:
        raise InvalidInputError(f"need one list of masks per reference, got {len(predictions)} and {len(references)}",
                                path="predictions")
    m = len(predictions[0])
    inter = np.zeros((m, m), np.float64)
    size = np.zeros(m, np.float64)
    for masks, ref in zip(predictions, references):
        ref = np.asarray(ref) != 0
        if len(masks) != m or any(np.shape(p) != ref.shape for p in masks):
            raise InvalidInputError(f"every case needs {m} masks of shape {ref.shape}", path="predictions")
        errors = np.stack([(np.asarray(p) != 0) ^ ref for p in masks]).reshape(m, -1).astype(np.float32)
        inter += errors @ errors.T
        size += errors.sum(axis=1)
    denom = size[:, None] + size[None, :]
    return np.divide(2 * inter, denom, out=np.zeros_like(inter), where=denom > 0)


def format_error_overlap(matrix: np.ndarray, names: Sequence[str], title: str) -> str:
    """Markdown table of :func:`compute_error_overlap` in percent."""
    lines = [f"### {title}", "", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, matrix):
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
    return "\n".join(lines) + "\n"


def summarize_ensemble(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, float]:
    """Mean over cases (NaN ignored) of each column ``key`` of the per-case ``rows``."""
    out = {}
    for key in keys:
        values = np.array([r[key] for r in rows if key in r], np.float64)
        out[key] = float(np.nanmean(values)) if values.size and not np.all(np.isnan(values)) else float("nan")
    return out


def format_ensemble_table(means: dict[str, float], names: Sequence[str], rows: Sequence[tuple[str, str]],
                          fusion_key: str, title: str) -> str:
    """Markdown table in percent: one column per network plus ``Fusion``.

    Args:
        means: From :func:`summarize_ensemble`.
        names: Network names (columns).
        rows: ``(row label, key pattern)`` with ``{name}`` in the pattern (``"liver_{name}_post"``).
        fusion_key: The fusion's key, shown in the last row's ``Fusion`` column ("-" elsewhere).
        title: Heading.
    """
    def pct(v):
        return "-" if v is None or np.isnan(v) else f"{100 * v:.2f}"

    lines = [f"### {title}", "", "| | " + " | ".join(names) + " | Fusion |", "|---" * (len(names) + 2) + "|"]
    for i, (label, pattern) in enumerate(rows):
        cells = [pct(means.get(pattern.format(name=n))) for n in names]
        cells.append(pct(means.get(fusion_key)) if i == len(rows) - 1 else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
