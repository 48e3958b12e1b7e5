"""Row-normalised confusion matrices (seed 001 Figs. 17/18: rows = reference class, each row sums to 1).

Example:
    >>> row_normalised_confusion([[3, 1], [0, 0]]).tolist()
    [[0.75, 0.25], [0.0, 0.0]]
    >>> print(format_confusion([[3, 1], [0, 2]], ["malignant", "degenerative"]))  # doctest: +NORMALIZE_WHITESPACE
    | reference / predicted | malignant | degenerative |
    |---|---|---|
    | malignant | 0.75 | 0.25 |
    | degenerative | 0.00 | 1.00 |
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["format_confusion", "row_normalised_confusion"]


def row_normalised_confusion(confusion) -> np.ndarray:
    """``[C, C]`` counts (rows reference, columns prediction) -> each row divided by its sum.

    Rows without any reference instance stay 0 (not NaN).

    Raises:
        InvalidInputError: Not a square 2-D matrix or negative counts.
    """
    conf = np.asarray(confusion, np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1] or (conf < 0).any():
        raise InvalidInputError(f"confusion must be a square matrix of counts, got shape {conf.shape}", path="confusion")
    totals = conf.sum(axis=1, keepdims=True)
    return np.divide(conf, totals, out=np.zeros_like(conf), where=totals > 0)


def format_confusion(confusion, class_names: Sequence[str], digits: int = 2) -> str:
    """Markdown table of the row-normalised matrix (rows = reference class, as the seed's figures)."""
    norm = row_normalised_confusion(confusion)
    if len(class_names) != len(norm):
        raise InvalidInputError(f"{len(class_names)} class names for a {len(norm)}x{len(norm)} matrix", path="class_names")
    lines = ["| reference / predicted | " + " | ".join(class_names) + " |", "|" + "---|" * (len(class_names) + 1)]
    for name, row in zip(class_names, norm):
        lines.append(f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in row) + " |")
    return "\n".join(lines)
