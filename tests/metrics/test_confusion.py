"""Row-normalised confusion (rows = reference class)."""

import numpy as np
import pytest

from tfmedseg.errors import InvalidInputError
from tfmedseg.metrics.confusion import format_confusion, row_normalised_confusion


def test_rows_sum_to_one_and_empty_rows_stay_zero():
    conf = np.array([[94, 2, 3, 1], [8, 68, 24, 0], [0, 0, 0, 0], [49, 3, 11, 37]])
    norm = row_normalised_confusion(conf)
    np.testing.assert_allclose(norm.sum(axis=1), [1, 1, 0, 1])
    np.testing.assert_allclose(norm[0], [0.94, 0.02, 0.03, 0.01])
    np.testing.assert_allclose(norm[3, 0], 49 / 100)
    text = format_confusion(conf, ["malignant", "infection", "degenerative", "post-trauma"])
    assert "| post-trauma | 0.49 | 0.03 | 0.11 | 0.37 |" in text


def test_bad_matrix():
    with pytest.raises(InvalidInputError):
        row_normalised_confusion(np.ones((2, 3)))
    with pytest.raises(InvalidInputError):
        format_confusion(np.eye(2), ["a"])
