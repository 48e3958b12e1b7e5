"""Patient-level k-fold splits with contiguous test blocks (seed 000 Table 6).

Seed 000's three folds over 43 patients test on the contiguous blocks 35-43, 26-34 and 17-25 and
train on the rest (34 / 9 patients; 70 % train, 10 % validation, 20 % test of patients). For ``n``
patients the block has ``round(9 / 43 * n)`` patients (at least 1) and fold ``f`` tests on the
``f``-th block from the end.

Example:
    >>> contiguous_fold(43, 1)[1][:3], len(contiguous_fold(43, 1)[0])
    ([34, 35, 36], 34)
"""

from __future__ import annotations

import numpy as np

from tfmedseg.errors import ConfigError

__all__ = ["TEST_FRACTION", "contiguous_fold", "validation_split"]

#: Seed 000's test block: 9 of 43 patients.
TEST_FRACTION = 9 / 43


def contiguous_fold(n: int, fold: int, test_fraction: float = TEST_FRACTION) -> tuple[list[int], list[int]]:
    """``(train indices, test indices)`` (0-based, sorted) of fold ``fold`` (1-based) over ``n`` patients.

    Raises:
        ConfigError: ``fold`` < 1, or the blocks do not fit ``n`` patients.
    """
    size = max(1, round(test_fraction * n))
    stop = n - (fold - 1) * size
    if fold < 1 or stop - size < 1:
        raise ConfigError(f"fold {fold} of {n} patients with test blocks of {size} leaves no training patient",
                          path="folds")
    test = list(range(stop - size, stop))
    return [i for i in range(n) if i not in test], test


def validation_split(ids: list, fraction: float, seed: int) -> tuple[list, list]:
    """``(train, validation)``: a seeded ``fraction`` of ``ids`` (at least 1, leaving at least 1) for validation."""
    if len(ids) < 2:
        raise ConfigError(f"{len(ids)} training patient(s) leave none for validation", path="validation_fraction")
    n_val = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    chosen = set(np.random.default_rng(seed).permutation(len(ids))[:n_val].tolist())
    return [x for i, x in enumerate(ids) if i not in chosen], [x for i, x in enumerate(ids) if i in chosen]
