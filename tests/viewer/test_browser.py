"""The viewer in headless Chromium (slow): two sessions segment two phantom CTs, overlays where the liver
is, volumes equal predict's, the download equals predict's output. See browser_check.py (also a script)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
def test_viewer_in_headless_chromium(tmp_path):
    # playwright and starlette are in the `test` extra; the browser is Debian's. This slow test fails
    # (it does not skip) when the browser is missing, so a green run always means the page was driven.
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Debian's chromium is not installed: apt-get install chromium chromium-driver")
    spec = importlib.util.spec_from_file_location("browser_check", Path(__file__).with_name("browser_check.py"))
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    report = check.run(tmp_path, chromium=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"))
    assert len(report["sessions"]) == 2
    for session in report["sessions"].values():
        assert session["axial"]["liver_pixels_checked"] >= 20 and session["coronal"]["liver_pixels_checked"] >= 20
        assert session["axial"]["max_colour_error"] <= 4 and session["download"]
    assert any("queued" in session["job_states"] for session in report["sessions"].values())
