"""What every command line of tfmedseg shares: user errors as one line and exit code 2, a stop
(Ctrl-C, SIGTERM) as one line and exit code 130; never a traceback for either.

Library modules raise :mod:`tfmedseg.errors` exceptions and log; only command-line modules (a
package's ``__main__``, ``experiments/``, ``apps/``, ``predict_cli``) print, through this module
for their errors.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Callable

from tfmedseg.errors import TfMedSegError

__all__ = ["report_user_errors", "sigterm_as_keyboard_interrupt", "INTERRUPTED_EXIT", "NOTHING_LEFT"]

#: Exit code of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT, what shells report for Ctrl-C).
INTERRUPTED_EXIT = 130
#: What a stopped command that writes its outputs atomically says after ``interrupted``.
NOTHING_LEFT = "nothing partial was left (outputs appear only when complete); rerun the same command to start again"


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt():
    """Within the block, SIGTERM (a cluster scheduler's stop, ``kill``) raises ``KeyboardInterrupt``
    like Ctrl-C, so that cleanup runs (staging files removed, nothing half-written) instead of the
    process dying on the spot; the previous handler is restored after. Outside the main thread
    (where Python cannot set handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def report_user_errors(fn: Callable[[], Any], interrupted: str | Callable[[], str] = NOTHING_LEFT) -> int:
    """Run ``fn`` for a command line: 0 on success; a user error prints one line and gives 2; a stop
    (Ctrl-C, or SIGTERM while ``fn`` runs) prints one line and gives :data:`INTERRUPTED_EXIT`.

    A :class:`TfMedSegError` becomes ``error: <file>: <cause>`` on stderr with exit code 2 (no
    traceback). A ``KeyboardInterrupt`` becomes ``interrupted (<how>): <interrupted>`` on stderr
    with exit code 130, after the cleanup of the code it stopped has run (staging removed).
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
            return INTERRUPTED_EXIT
    return 0
