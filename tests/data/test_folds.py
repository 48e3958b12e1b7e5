"""Seed 000 Table 6 patient folds."""

import pytest

from tfmedseg.data.folds import contiguous_fold, validation_split
from tfmedseg.errors import ConfigError


def test_table6_blocks_for_43_patients():
    blocks = [contiguous_fold(43, f)[1] for f in (1, 2, 3)]
    assert [(b[0] + 1, b[-1] + 1) for b in blocks] == [(35, 43), (26, 34), (17, 25)]
    train, test = contiguous_fold(43, 2)
    assert len(train) == 34 and not set(train) & set(test)


def test_validation_split_and_errors():
    train, val = validation_split(list("abcdefghij"), 0.1, seed=3)
    assert len(val) == 1 and sorted(train + val) == list("abcdefghij")
    with pytest.raises(ConfigError):
        contiguous_fold(4, 5)
    with pytest.raises(ConfigError):
        validation_split(["a"], 0.1, 0)
