"""Command-line logging setup and the filter for TensorFlow's import-time stderr noise."""

from __future__ import annotations

import argparse
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

from tfmedseg import logs

REPO = Path(__file__).resolve().parents[1]


def test_verbosity_options_and_levels():
    parser = logs.add_verbosity_options(argparse.ArgumentParser())
    assert parser.parse_args([]).verbose == 0
    assert parser.parse_args(["-vv"]).verbose == 2
    assert parser.parse_args(["-q"]).quiet
    assert logs.verbosity_level(0, False) == logging.INFO
    assert logs.verbosity_level(1, False) == logging.DEBUG
    assert logs.verbosity_level(0, True) == logging.WARNING


def test_configure_logging_routes_tfmedseg_loggers():
    stream = io.StringIO()
    try:
        logs.configure_logging(argparse.Namespace(verbose=0, quiet=True), stream=stream)
        logging.getLogger("tfmedseg.demo").info("hidden")
        logging.getLogger("tfmedseg.demo").warning("shown")
        logs.configure_logging(verbose=1, quiet=False, stream=stream)  # replaces, never duplicates
        logging.getLogger("tfmedseg.demo").debug("debugging")
    finally:
        root = logging.getLogger()
        for h in list(root.handlers):
            if getattr(h, "_tfmedseg_console", False):
                root.removeHandler(h)
        logging.getLogger("tfmedseg").setLevel(logging.NOTSET)
    text = stream.getvalue()
    assert "hidden" not in text and text.count("shown") == 1 and "debugging" in text


def test_console_info_on_stdout_warnings_on_stderr(capsys):
    try:
        logs.configure_logging(verbose=0, quiet=False)
        logging.getLogger("tfmedseg.demo").info("an info line")
        logging.getLogger("tfmedseg.demo").warning("a warning")
    finally:
        root = logging.getLogger()
        for h in list(root.handlers):
            if getattr(h, "_tfmedseg_console", False):
                root.removeHandler(h)
        logging.getLogger("tfmedseg").setLevel(logging.NOTSET)
    out, err = capsys.readouterr()
    assert "an info line" in out and "a warning" not in out
    assert "a warning" in err and "an info line" not in err


def test_tensorflow_import_noise_filtered():
    noisy = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796590959.740585    6939 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n"
        "I0000 00:00:1796590959.740164    6939 port.cc:153] oneDNN custom operations are on. You may see ...\n"
        "something else\n"
    )
    assert logs._filter_stderr_lines(noisy) == "something else\n"
    assert any("cudart_stub" in line for line in logs.tensorflow_import_messages())


def _run(code, **env):
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    full.pop("TFMEDSEG_TF_LOGS", None) if "TFMEDSEG_TF_LOGS" not in env else None
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def test_importing_tensorflow_through_tfmedseg_is_quiet():
    quiet = _run("import tfmedseg, tensorflow; import sys; print('ok', file=sys.stderr)")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.strip().splitlines() == ["ok"], quiet.stderr
    raw = _run("import tfmedseg, tensorflow", TFMEDSEG_TF_LOGS="1")
    assert raw.returncode == 0
    # With the filter off the noise is there (skip the comparison on a machine where TF is silent).
    if raw.stderr.strip():
        assert "absl" in raw.stderr or "cuda" in raw.stderr or "oneDNN" in raw.stderr


def test_help_does_not_import_tensorflow():
    code = (
        "import runpy, sys\n"
        "for module in ('tfmedseg.predict', 'tfmedseg.export', 'tfmedseg.datasets.phantoms', 'tfmedseg',\n"
        "               'tfmedseg.experiments.liver_ct_2d3d'):\n"
        "    sys.argv = ['x', '--help']\n"
        "    try:\n"
        "        runpy.run_module(module, run_name='__main__')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    assert 'tensorflow' not in sys.modules, module\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr[-2000:]


def test_native_stderr_captured_takes_fd2_and_gives_it_back(capfd, monkeypatch):
    """What C/C++ code writes to fd 2 in the block lands in the list (also when the block raises), fd 2
    and faulthandler are as before after it; ``TFMEDSEG_TF_LOGS=1`` captures nothing."""
    import faulthandler

    import pytest

    from tfmedseg.logs import native_stderr_captured

    enabled = faulthandler.is_enabled()
    capfd.readouterr()
    with native_stderr_captured() as lines:
        os.write(2, b"native line\n\n")
    assert lines == ["native line"]
    with pytest.raises(RuntimeError), native_stderr_captured() as lines:
        os.write(2, b"before the failure\n")
        raise RuntimeError("failed")
    assert lines == ["before the failure"] and faulthandler.is_enabled() == enabled
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    monkeypatch.setenv("TFMEDSEG_TF_LOGS", "1")
    with native_stderr_captured() as lines:
        os.write(2, b"shown\n")
    assert lines == [] and capfd.readouterr().err == "shown\n"
