"""User-facing errors name the file and keep their standard base classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfmedseg import errors


@pytest.mark.parametrize(
    "cls, base",
    [
        (errors.InvalidInputError, ValueError),
        (errors.DatasetLayoutError, FileNotFoundError),
        (errors.ConfigError, ValueError),
        (errors.ModelBuildError, ValueError),
        (errors.ExportError, RuntimeError),
        (errors.ServingError, RuntimeError),
    ],
)
def test_message_names_path_and_cause(cls, base):
    err = cls("label values {3} outside {0, 1, 2}", path=Path("data/segmentation-7.nii"))
    assert isinstance(err, errors.TfMedSegError) and isinstance(err, base)
    assert str(err) == "data/segmentation-7.nii: label values {3} outside {0, 1, 2}"
    assert err.path == "data/segmentation-7.nii"
    assert err.reason.startswith("label values")


def test_message_without_path():
    assert str(errors.ConfigError("bad")) == "bad"


def test_report_user_errors_turns_user_errors_into_exit_code_2(capsys):
    def fail():
        raise errors.InvalidInputError("contains NaN voxels", path="scan.nii")

    from tfmedseg.command import report_user_errors

    assert report_user_errors(fail) == 2
    assert capsys.readouterr().err == "error: scan.nii: contains NaN voxels\n"
    assert report_user_errors(lambda: None) == 0
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error: it keeps its traceback
        report_user_errors(lambda: 1 / 0)
