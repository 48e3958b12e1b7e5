"""Progress reporting: log lines (not redrawn bars) when stderr is not a terminal; silent with -q."""

from __future__ import annotations

import logging

from tfmedseg.progress import Progress, format_seconds, progress, progress_mode


def test_log_mode_writes_summary_and_periodic_lines(caplog, monkeypatch):
    monkeypatch.delenv("TFMEDSEG_PROGRESS", raising=False)
    caplog.set_level(logging.INFO, logger="tfmedseg")
    assert progress_mode() == "log"  # pytest's captured stderr is not a terminal
    items = list(progress(range(5), desc="generating phantoms", unit="case", interval=0.0))
    assert items == [0, 1, 2, 3, 4]
    lines = [r.getMessage() for r in caplog.records if r.name == "tfmedseg.progress"]
    assert lines[0].startswith("generating phantoms: 1/5 cases (20 %)")
    assert len(lines) == 5  # four periodic lines, then the summary
    assert lines[-1].startswith("generating phantoms: 5 cases in ")
    assert all("\r" not in line for line in lines)


def test_summary_only_when_fast_and_nothing_when_quiet(caplog, monkeypatch):
    monkeypatch.delenv("TFMEDSEG_PROGRESS", raising=False)
    caplog.set_level(logging.INFO, logger="tfmedseg")
    with Progress(total=3, desc="sliding window", unit="window") as bar:
        for _ in range(3):
            bar.update()
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["sliding window: 3 windows"]
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="tfmedseg")
    logging.getLogger("tfmedseg").setLevel(logging.WARNING)
    try:
        assert progress_mode() == "off"
        assert list(progress([1, 2], desc="quiet")) == [1, 2]
    finally:
        logging.getLogger("tfmedseg").setLevel(logging.NOTSET)
    assert caplog.records == []


def test_bar_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv("TFMEDSEG_PROGRESS", "bar")
    assert list(progress(iter(range(3)), total=3, desc="caching")) == [0, 1, 2]
    assert "caching" in capsys.readouterr().err


def test_format_seconds():
    assert format_seconds(3.21) == "3.2 s"
    assert format_seconds(42) == "42 s"
    assert format_seconds(600) == "10.0 min"
    assert format_seconds(7200) == "2.0 h"
