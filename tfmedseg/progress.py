"""Progress for loops a user waits for: a bar on a terminal, periodic log lines otherwise.

Usage::

    from tfmedseg.progress import progress

    for case in progress(cases, desc="evaluating", unit="case"):
        ...

    with Progress(total=n_windows, desc="sliding window", unit="window") as bar:
        for ...:
            bar.update()

On a terminal (``sys.stderr.isatty()``) a ``tqdm`` bar is drawn on stderr and removed when the loop
ends, followed by one summary log line. When stderr is not a terminal (a file, a pipe, CI), nothing is
redrawn: one INFO log line every ``interval`` seconds (``desc: 30/120 cases (25 %), 41 s, ~2 min
left``) and one at the end. With ``-q`` (the ``tfmedseg`` logger above INFO) nothing is shown at all.
``TFMEDSEG_PROGRESS=bar|log|off`` forces one of the three.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator, Sequence, TypeVar

from tfmedseg.command import raise_pending_stop

__all__ = ["Progress", "progress", "ProgressSequence", "progress_mode", "format_seconds"]

T = TypeVar("T")
_log = logging.getLogger("tfmedseg.progress")

#: Seconds between two log lines when stderr is not a terminal.
DEFAULT_INTERVAL = 30.0


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def progress_mode(logger: logging.Logger | None = None) -> str:
    """``"bar"`` (stderr is a terminal), ``"log"`` (it is not) or ``"off"`` (INFO is not logged)."""
    forced = os.environ.get("TFMEDSEG_PROGRESS", "").strip().lower()
    if forced in ("bar", "log", "off"):
        return forced
    if not (logger or _log).isEnabledFor(logging.INFO):
        return "off"
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return "bar" if tty else "log"


class Progress:
    """A progress report over ``total`` steps (see the module docstring).

    Args:
        total: Number of steps, or None when unknown.
        desc: What is being done (``"generating phantoms"``).
        unit: Name of one step (``"case"``, ``"window"``).
        logger: Logger for the log lines (default ``tfmedseg.progress``).
        interval: Seconds between log lines when not on a terminal.
        mode: ``"bar"``, ``"log"`` or ``"off"``; default :func:`progress_mode`.
        summary_level: Level of the closing summary line (``logging.DEBUG`` for inner loops such as
            the windows of one volume, whose callers log their own summary).
    """

    def __init__(self, total: int | None = None, *, desc: str = "", unit: str = "it",
                 logger: logging.Logger | None = None, interval: float = DEFAULT_INTERVAL,
                 mode: str | None = None, summary_level: int = logging.INFO) -> None:
        self.total = None if total is None else int(total)
        self.desc = desc
        self.unit = unit
        self.logger = logger or _log
        self.interval = float(interval)
        self.mode = mode or progress_mode(self.logger)
        self.summary_level = summary_level
        self.n = 0
        self.start = time.perf_counter()
        self._last_log = self.start
        self._bar: Any = None
        self._closed = False
        if self.mode == "bar":
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - tqdm is a runtime dependency
                self.mode = "log"
            else:
                self._bar = tqdm(total=self.total, desc=desc, unit=f" {unit}", leave=False,
                                 file=sys.stderr, dynamic_ncols=True)

    def _units(self, n: int) -> str:
        return self.unit if n == 1 or self.unit.endswith("s") else f"{self.unit}s"

    def _line(self, final: bool) -> str:
        elapsed = time.perf_counter() - self.start
        if final:
            rate = f", {elapsed / self.n:.3g} s/{self.unit}" if self.n and elapsed / self.n >= 0.01 else ""
            return f"{self.desc}: {self.n} {self._units(self.n)} in {format_seconds(elapsed)}{rate}"
        if self.total:
            left = elapsed / max(self.n, 1) * (self.total - self.n)
            return (f"{self.desc}: {self.n}/{self.total} {self._units(self.total)} ({100 * self.n / self.total:.0f} %), "
                    f"{format_seconds(elapsed)}, ~{format_seconds(left)} left")
        return f"{self.desc}: {self.n} {self._units(self.n)}, {format_seconds(elapsed)}"

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps; a Ctrl-C / SIGTERM whose ``KeyboardInterrupt`` was dropped on the
        way (:func:`tfmedseg.command.raise_pending_stop`) is raised here.

        Raises:
            KeyboardInterrupt: A pending stop.
        """
        raise_pending_stop()
        self.n += n
        if self.mode == "bar" and self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log":
            now = time.perf_counter()
            if now - self._last_log >= self.interval and (self.total is None or self.n < self.total):
                self._last_log = now
                self.logger.info(self._line(final=False))

    def close(self) -> None:
        """Remove the bar and log the summary line (once)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        if self.mode != "off" and self.desc:
            self.logger.log(self.summary_level, self._line(final=True))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc and exc[0] is not None:
            if self._bar is not None:
                self._bar.close()
            self._closed = True
            return
        self.close()


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
             logger: logging.Logger | None = None, interval: float = DEFAULT_INTERVAL) -> Iterator[T]:
    """Iterate over ``iterable`` while showing progress (see :class:`Progress`).

    Args:
        iterable: The loop's items.
        total: Number of items (default ``len(iterable)`` when it has one).
        desc, unit, logger, interval: As for :class:`Progress`.

    Yields:
        The items of ``iterable``.
    """
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(total, desc=desc, unit=unit, logger=logger, interval=interval) as bar:
        for item in iterable:
            yield item
            bar.update()


class ProgressSequence(Sequence[T]):
    """A list that shows progress while it is iterated (for code that also takes ``len()`` or indexes).

    Args:
        items: The items.
        desc, unit, logger, interval: As for :class:`Progress`.
    """

    def __init__(self, items: Sequence[T], *, desc: str = "", unit: str = "it",
                 logger: logging.Logger | None = None, interval: float = DEFAULT_INTERVAL) -> None:
        self._items = list(items)
        self._kwargs = dict(desc=desc, unit=unit, logger=logger, interval=interval)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        return progress(self._items, total=len(self._items), **self._kwargs)
