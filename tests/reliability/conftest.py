"""Adversarial inputs (issue 13): every bad input gives one clear line and leaves nothing behind.

The ``probe`` fixture runs one bad input and checks the contract of ``tfmedseg.errors``:

* a :class:`~tfmedseg.errors.TfMedSegError` (library call) or exit status 2 with one
  ``error: ...`` line on stderr (command line, called in-process: ``main(argv)``);
* the message is one line and names the file or key (``names``);
* the folder the case lives in holds afterwards exactly what it held before (no partial output,
  no staging, no hidden file);
* under 10 s and under 1 GB of peak memory growth.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tfmedseg.errors import TfMedSegError

LIMIT_S = 10.0
LIMIT_BYTES = 1 << 30


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


class Probe:
    """Run a bad input and check the error contract (see the module docstring)."""

    def __init__(self, capsys):
        self.capsys = capsys
        self.count = 0

    def error(self, fn: Callable[[], object], names: str | Path | tuple, *, watch: Path | None = None,
              match: str | None = None, kind: type = TfMedSegError) -> TfMedSegError:
        """``fn()`` must raise ``kind`` (a TfMedSegError) with a one-line message naming ``names``."""
        before = _listing(watch) if watch else None
        peak, start = _peak_bytes(), time.perf_counter()
        with pytest.raises(TfMedSegError) as info:
            fn()
        self._check_budget(start, peak)
        message = str(info.value)
        assert isinstance(info.value, kind), f"{type(info.value).__name__}: {message}"
        assert "\n" not in message, f"not one line: {message!r}"
        self._check_names(message, names)
        if match is not None:
            assert match in message, message
        if watch is not None:
            assert _listing(watch) == before, f"left behind: {_listing(watch) - before}"
        self.count += 1
        return info.value

    def exit2(self, main: Callable[[list], int], argv: list, names: str | Path | tuple, *, watch: Path | None = None,
              match: str | None = None) -> str:
        """``main(argv)`` must return 2 and print exactly one ``error: ...`` line naming ``names``."""
        self.capsys.readouterr()
        before = _listing(watch) if watch else None
        peak, start = _peak_bytes(), time.perf_counter()
        rc = main([str(a) for a in argv])
        self._check_budget(start, peak)
        err = self.capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2, f"exit {rc}: {err}"
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1, f"expected one error line, got: {err!r}"
        assert "Traceback" not in err, err
        self._check_names(errors[0], names)
        if match is not None:
            assert match in errors[0], errors[0]
        if watch is not None:
            assert _listing(watch) == before, f"left behind: {_listing(watch) - before}"
        self.count += 1
        return errors[0]

    @staticmethod
    def _check_names(message: str, names) -> None:
        names = names if isinstance(names, tuple) else (names,)
        assert any(str(n) in message for n in names), f"{message!r} names none of {names}"

    @staticmethod
    def _check_budget(start: float, peak: int) -> None:
        elapsed = time.perf_counter() - start
        assert elapsed < LIMIT_S, f"took {elapsed:.1f} s"
        grown = _peak_bytes() - peak
        assert grown < LIMIT_BYTES, f"peak memory grew by {grown / 2**20:.0f} MiB"


@pytest.fixture
def probe(capsys) -> Probe:
    return Probe(capsys)
