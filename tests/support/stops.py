"""A stop whose KeyboardInterrupt gets dropped, as C code running a signal handler can drop it."""

from __future__ import annotations

import os
import signal


def drop_a_stop(signum: int = signal.SIGINT) -> None:
    """Send this process ``signum`` and swallow the exception its handler raises (CPython runs a signal
    handler inside whatever C call is under way; some C code replaces the handler's exception with its own
    error, e.g. ``int("Keyword", 16)`` under ``except ValueError``). The stop's handler must be installed."""
    try:
        os.kill(os.getpid(), signum)
        sum(range(1000))  # the handler runs here, and its exception ...
    except BaseException:  # noqa: BLE001 - ... is dropped, as such C code does
        pass
