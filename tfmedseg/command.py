"""What every command line of tfmedseg shares: user errors as one line and exit code 2, a stop
as one line and the shell's exit code (Ctrl-C: 130 = 128 + SIGINT, SIGTERM: 143 = 128 + SIGTERM);
never a traceback for either.

Library modules raise :mod:`tfmedseg.errors` exceptions and log; only command-line modules (a
package's ``__main__``, ``experiments/``, ``apps/``, ``predict_cli``) print, through this module
for their errors.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from typing import Any, Callable

from tfmedseg.errors import TfMedSegError

__all__ = ["report_user_errors", "sigterm_as_keyboard_interrupt", "interruptible", "SignalStop", "stop_exit_code",
           "INTERRUPTED_EXIT", "TERMINATED_EXIT", "NOTHING_LEFT"]

#: Exit code of a command stopped by Ctrl-C (128 + SIGINT, what shells report for Ctrl-C).
INTERRUPTED_EXIT = 128 + signal.SIGINT
#: Exit code of a command stopped by SIGTERM (128 + SIGTERM, what shells report for ``kill``).
TERMINATED_EXIT = 128 + signal.SIGTERM
#: What a stopped command that writes its outputs atomically says after ``interrupted``.
NOTHING_LEFT = "nothing partial was left (outputs appear only when complete); rerun the same command to start again"


class SignalStop(KeyboardInterrupt):
    """The ``KeyboardInterrupt`` that :func:`sigterm_as_keyboard_interrupt` raises for a signal:
    cleanup runs as for Ctrl-C, and :attr:`signum` keeps which signal it was (for the exit code)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = int(signum)


def stop_exit_code(exc: BaseException) -> int:
    """The shell's exit code for a stop: 128 + the signal (:class:`SignalStop`), else 130 (Ctrl-C)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt():
    """Within the block, SIGTERM (a cluster scheduler's stop, ``kill``) raises :class:`SignalStop`,
    a ``KeyboardInterrupt`` like Ctrl-C's, so that cleanup runs (staging files removed, nothing
    half-written) instead of the process dying on the spot; the previous handler is restored
    after. Outside the main thread (where Python cannot set handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SignalStop(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def interruptible(log: logging.Logger, what: str, kept: str):
    """A library loop a user may stop (training): SIGTERM acts as Ctrl-C inside the block
    (:func:`sigterm_as_keyboard_interrupt`), and a stop logs one warning ``<what> interrupted
    (<how>); <kept>`` before the ``KeyboardInterrupt`` propagates to the command line (which prints
    its line and exits 130 / 143) or to the calling script.

    Args:
        log: The library module's logger.
        what: What was stopped (``"training"``).
        kept: Where the progress is kept, or that nothing partial is left, and what a rerun does.
    """
    try:
        with sigterm_as_keyboard_interrupt():
            yield
    except KeyboardInterrupt as exc:
        log.warning("%s interrupted (%s); %s", what, str(exc) or "Ctrl-C", kept)
        raise


def report_user_errors(fn: Callable[[], Any], interrupted: str | Callable[[], str] = NOTHING_LEFT) -> int:
    """Run ``fn`` for a command line: 0 on success; a user error prints one line and gives 2; a stop
    prints one line and gives :data:`INTERRUPTED_EXIT` (Ctrl-C) or :data:`TERMINATED_EXIT`
    (SIGTERM while ``fn`` runs).

    A :class:`TfMedSegError` becomes ``error: <file>: <cause>`` on stderr with exit code 2 (no
    traceback). A ``KeyboardInterrupt`` becomes ``interrupted (<how>): <interrupted>`` on stderr
    with exit code 130 (Ctrl-C) or 143 (SIGTERM, :func:`stop_exit_code`), after the cleanup of the
    code it stopped has run (staging removed).
    Any other exception is a bug and propagates with its traceback.

    Args:
        fn: The command's work.
        interrupted: What the user should know after a stop: where progress is kept and that
            rerunning resumes, or (default :data:`NOTHING_LEFT`) that nothing partial was left; a
            function is called at the stop (the text may depend on how far ``fn`` got).
    """
    with sigterm_as_keyboard_interrupt():
        try:
            fn()
        except TfMedSegError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            note = interrupted() if callable(interrupted) else interrupted
            print(f"interrupted ({str(exc) or 'stopped by Ctrl-C'}): {note}", file=sys.stderr)
            return stop_exit_code(exc)
    return 0
