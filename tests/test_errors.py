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


def test_report_user_errors_prints_one_line_when_a_cause_spans_lines(capsys):
    """A cause quoted from a third-party library may hold line breaks (nibabel: "Expected 2048 bytes, got 1024 bytes
    from \\n - could the file be damaged?"); the command line still prints one ``error:`` line."""
    from tfmedseg.command import report_user_errors

    def fail():
        raise errors.InvalidInputError("cannot read (OSError: got 1024 bytes from \n - damaged?)\r\n", path="scan.nii.gz")

    assert report_user_errors(fail) == 2
    assert capsys.readouterr().err == "error: scan.nii.gz: cannot read (OSError: got 1024 bytes from - damaged?)\n"


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


def test_a_second_stop_while_the_first_unwinds_is_ignored(capsys):
    """A second Ctrl-C (or SIGTERM) during the cleanup of the stopped code neither cuts the cleanup
    short nor reaches the command's end as a traceback: one line, exit 130, handlers restored."""
    import os
    import signal
    import time

    from tfmedseg.command import report_user_errors

    cleaned = []

    def work():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # the impatient second Ctrl-C ...
            os.kill(os.getpid(), signal.SIGTERM)  # ... and a scheduler's SIGTERM
            time.sleep(0.05)
            cleaned.append(True)  # the cleanup still runs to its end

    # a test run started in the background inherits SIGINT ignored (which the wrapper respects): give Ctrl-C back
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        assert report_user_errors(work) == 130
        assert cleaned == [True]
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
        assert capsys.readouterr().err.count("\n") == 1
        # the next command's stop is taken again (the state was reset), not ignored for 10 s
        assert report_user_errors(lambda: os.kill(os.getpid(), signal.SIGINT) or time.sleep(10)) == 130
        assert signal.getsignal(signal.SIGINT) is before[0]
    finally:
        signal.signal(signal.SIGINT, outer)


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_that_code_dropped_is_raised_again_at_the_next_loop_step(capsys, signame, code):
    """C code can replace the KeyboardInterrupt a signal handler raised with its own error (CPython
    runs handlers inside C calls): simulated by a handler-raised stop swallowed on the spot. The next
    step of a progress loop raises it again: the loop stops there, one line, exit 130 / 143."""
    import signal

    from stops import drop_a_stop

    from tfmedseg.command import report_user_errors
    from tfmedseg.progress import progress

    steps = []

    def work():
        for i in progress(range(5), desc="test loop"):
            steps.append(i)
            if i == 1:
                drop_a_stop(getattr(signal, signame))

    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert report_user_errors(work) == code
        assert steps == [0, 1]  # stopped at the next step, not after the whole loop
        assert capsys.readouterr().err.splitlines()[-1].startswith(
            f"interrupted (stopped by {'Ctrl-C' if signame == 'SIGINT' else 'SIGTERM'}): ")
        assert report_user_errors(lambda: steps.append("next")) == 0  # reported once: the next command runs
    finally:
        signal.signal(signal.SIGINT, outer)


def test_a_stop_dropped_after_the_last_loop_step_is_reported_at_the_end(capsys):
    import signal

    from stops import drop_a_stop

    from tfmedseg.command import raise_pending_stop, report_user_errors

    def work():
        drop_a_stop(signal.SIGINT)

    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert report_user_errors(work) == 130
        assert capsys.readouterr().err.startswith("interrupted (stopped by Ctrl-C): ")
        raise_pending_stop()  # nothing pending once reported (nor outside a command)
    finally:
        signal.signal(signal.SIGINT, outer)


@pytest.mark.parametrize("argv0, orig_argv, expected", [
    ("-m", ["python", "-X", "importtime", "-m", "tfmedseg.experiments.liver_ct_2d3d", "--help"], True),
    ("-m", ["python", "-m", "tfmedseg"], True),
    ("-m", ["python", "-m", "mypackage", "-m", "tfmedseg.x"], False),  # someone else's command importing tfmedseg
    ("/venv/bin/tfmedseg-predict", ["python", "/venv/bin/tfmedseg-predict"], True),
    ("train.py", ["python", "train.py"], False),  # a script: its handlers are its own
    ("", ["python"], False),  # the interactive interpreter / a notebook
])
def test_the_loading_guard_is_only_for_tfmedseg_commands(monkeypatch, argv0, orig_argv, expected):
    import sys

    from tfmedseg import command

    monkeypatch.setattr(sys, "argv", [argv0])
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    assert command._loading_a_command() is expected


def test_console_scripts_are_the_installed_ones():
    import tomllib
    from pathlib import Path

    from tfmedseg.command import CONSOLE_SCRIPTS

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert set(CONSOLE_SCRIPTS) == set(pyproject["project"]["scripts"])


_BLOCK_IMPORT = '''
import importlib.abc, os, sys, time
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["TFMEDSEG_TEST_BLOCK_IMPORT"]:
            open(os.environ["TFMEDSEG_TEST_BLOCKED"], "w").close()
            time.sleep(60)  # the test stops the process here
        return None
sys.meta_path.insert(0, _Block())
'''


@pytest.mark.parametrize("module, stop, code, how", [
    ("tfmedseg.experiments.liver_ct_2d3d", "SIGINT", 130, "Ctrl-C"),  # python -m still locating the module
    ("tfmedseg.data.geometry", "SIGTERM", 143, "SIGTERM"),  # the module's own imports, before main()
])
def test_a_stop_while_python_m_loads_the_command_is_one_line(tmp_path, module, stop, code, how, stop_when_ready):
    """``python -m tfmedseg.experiments.liver_ct_2d3d`` stopped before ``main()`` runs (an import held
    by a test-only ``sitecustomize``): one line, exit 128 + signal, no traceback, nothing written."""
    import os
    from pathlib import Path

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_BLOCK_IMPORT)
    blocked = tmp_path / "blocked"
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), repo]), "TF_CPP_MIN_LOG_LEVEL": "3",
           "TFMEDSEG_TEST_BLOCK_IMPORT": module, "TFMEDSEG_TEST_BLOCKED": str(blocked)}
    returncode, err = stop_when_ready(["tfmedseg.experiments.liver_ct_2d3d", "--output-dir", str(tmp_path / "run"),
                                       "--cache-dir", str(tmp_path / "cache")], blocked.exists, stop, env=env, cwd=tmp_path)
    assert returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"interrupted (stopped by {how}): stopped while loading; nothing was started: "
                                            "rerun the same command")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "site"]


def test_a_sigint_ignored_by_the_parent_stays_ignored():
    """A command started as a background job (SIGINT ignored, as Python itself respects) is not made
    stoppable by Ctrl-C behind the shell's back."""
    import os
    import signal

    from tfmedseg.command import report_user_errors

    outer = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert report_user_errors(lambda: os.kill(os.getpid(), signal.SIGINT)) == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, outer)
