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


def test_report_user_errors_turns_a_stop_into_one_line_and_exit_130(capsys):
    from tfmedseg.command import INTERRUPTED_EXIT, TERMINATED_EXIT, report_user_errors

    def stop():
        raise KeyboardInterrupt

    assert INTERRUPTED_EXIT == 130 and TERMINATED_EXIT == 143  # the shells' 128 + SIGINT / 128 + SIGTERM
    assert report_user_errors(stop, "progress is kept in runs/x; rerun the same command to resume") == 130
    assert capsys.readouterr().err == "interrupted (stopped by Ctrl-C): progress is kept in runs/x; rerun the same command to resume\n"
    assert report_user_errors(stop, lambda: "said at the stop") == 130  # a function: asked when the stop happens
    assert capsys.readouterr().err == "interrupted (stopped by Ctrl-C): said at the stop\n"
    assert report_user_errors(stop) == 130
    assert "nothing partial was left" in capsys.readouterr().err


def test_report_user_errors_takes_sigterm_like_ctrl_c_exits_143_and_restores_the_handler(capsys):
    import os
    import signal
    import time

    from tfmedseg.command import report_user_errors

    cleaned = []

    def work():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler raises KeyboardInterrupt long before
        finally:
            cleaned.append(True)  # cleanup of the stopped code runs

    def unhandled(signum, frame):  # without the wrapper's handler: fail this test, not the whole run
        raise RuntimeError("SIGTERM reached the previous handler")

    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        assert report_user_errors(work) == 143  # 128 + SIGTERM, as a shell reports a process killed by it
        assert signal.getsignal(signal.SIGTERM) is unhandled  # restored
    finally:
        signal.signal(signal.SIGTERM, before)
    assert cleaned == [True]
    assert capsys.readouterr().err.startswith("interrupted (stopped by SIGTERM): ")
