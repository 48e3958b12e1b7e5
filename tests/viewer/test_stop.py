"""``python -m tfmedseg.viewer`` stopped by a real signal while it serves: one ``interrupted`` line, the shell's
exit code (130 Ctrl-C, 143 SIGTERM) and its temporary work folder gone; also as a shell's background job, which
starts with SIGINT ignored (uvicorn catches SIGINT itself, and re-raising it after its shutdown did nothing there:
the viewer used to end with exit 0 and no line)."""

from __future__ import annotations

import os
import socket

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("stop, code, how, background", [
    ("SIGINT", 130, "Ctrl-C", True), ("SIGINT", 130, "Ctrl-C", False), ("SIGTERM", 143, "SIGTERM", True)])
def test_a_stopped_viewer_says_so_and_exits_128_plus_signal(tmp_path, stop_when_ready, stop, code, how, background):
    (tmp_path / "root").mkdir()
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(tmp_path / "tmp")}
    port = _free_port()
    returncode, err = stop_when_ready(["tfmedseg.viewer", "--root", str(tmp_path / "root"), "--port", str(port)],
                                      lambda: _listening(port), stop, env=env, timeout=120, sigint_ignored=background)
    assert returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [f"interrupted (stopped by {how}): the viewer stopped; rerun the same command to "
                                        "start it again"]
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary work folder was removed


def test_a_port_in_use_is_one_error_line_before_anything_starts(tmp_path, capsys, monkeypatch):
    """(Before: uvicorn logged ``[Errno 98] ... address already in use`` and the command exited 3.)"""
    import tempfile

    from tfmedseg.viewer.__main__ import main

    (tmp_path / "root").mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the default work folder would go
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--root", str(tmp_path / "root"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --port: cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port "
                   "(0 picks a free one)\n")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert main(["--root", str(tmp_path / "root"), "--host", "no-such-host.invalid", "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --host: cannot resolve 'no-such-host.invalid'")
