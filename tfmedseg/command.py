"""What every command line of tfmedseg shares: user errors as one line and exit code 2, a stop
as one line and the shell's exit code (Ctrl-C: 130 = 128 + SIGINT, SIGTERM: 143 = 128 + SIGTERM);
never a traceback for either.

The stop handling covers a command from its first import to its exit: a Ctrl-C or SIGTERM while
``python -m tfmedseg.<module>`` or an installed ``tfmedseg*`` script is still loading (TensorFlow,
before ``main()`` runs; :func:`guard_command_loading`, installed by ``tfmedseg/__init__.py``) prints
one line and exits 130 / 143, and while a stop unwinds (cleanup, the closing line) further Ctrl-C /
SIGTERM are ignored, so a second Ctrl-C cannot cut the cleanup short nor print a traceback.

Library modules raise :mod:`tfmedseg.errors` exceptions and log; only command-line modules (a
package's ``__main__``, ``experiments/``, ``apps/``, ``predict_cli``) print, through this module
for their errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
from typing import Any, Callable

from tfmedseg.errors import TfMedSegError

__all__ = ["report_user_errors", "one_line", "sigterm_as_keyboard_interrupt", "interruptible", "guard_command_loading", "SignalStop",
           "raise_pending_stop", "stop_exit_code", "INTERRUPTED_EXIT", "TERMINATED_EXIT", "NOTHING_LEFT", "CONSOLE_SCRIPTS"]

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
    half-written) instead of the process dying on the spot; a second SIGTERM while that stop
    unwinds is ignored. The previous handler is restored after. Outside the main thread (where
    Python cannot set handlers) the block runs unchanged.
    """
    with _stop_handlers((signal.SIGTERM,)):
        yield


#: Nesting depth of the blocks with our stop handlers, whether one of them raised a stop, the signal
#: of a stop raised but not yet reported (:func:`raise_pending_stop`; 0: none), and whether a
#: command's :func:`report_user_errors` has run (the command is no longer loading).
_stop_state = {"depth": 0, "raised": False, "pending": 0, "command_ran": False}


def _stop_exception(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else SignalStop(signum)


def _raise_stop(signum, frame):
    """Signal handler of :func:`_stop_handlers`: the first Ctrl-C / SIGTERM raises the stop (and
    keeps it pending until a command line reports it); more signals while it unwinds through the
    blocks (cleanup, the closing line) are ignored."""
    if _stop_state["raised"]:
        return
    _stop_state["raised"] = True
    _stop_state["pending"] = int(signum)
    raise _stop_exception(signum)


def raise_pending_stop() -> None:
    """Raise again a stop whose exception never arrived; a no-op when none is pending (or outside
    the main thread).

    CPython runs a signal handler inside whatever C call is under way, and some C code replaces
    the handler's ``KeyboardInterrupt`` with its own error, which the caller then handles: measured
    on Python 3.11 and 3.12, ``int("FileMetaInformationVersion", 16)`` inside ``try/except
    ValueError`` (pydicom does this for every keyword lookup) drops about 2 % of the Ctrl-C's that
    land in it. The stop would be lost, and since further signals are ignored while a stop unwinds,
    the command could then not be stopped at all. Loops a user waits for call this at each step
    (:class:`tfmedseg.progress.Progress`), and :func:`report_user_errors` after the command's work,
    so a dropped stop still stops the command at the next step.

    Raises:
        KeyboardInterrupt: The pending stop (:class:`SignalStop` for SIGTERM).
    """
    signum = _stop_state["pending"]
    if signum and threading.current_thread() is threading.main_thread():
        raise _stop_exception(signum)


@contextlib.contextmanager
def _stop_handlers(signums: tuple[int, ...]):
    """:func:`_raise_stop` for ``signums`` within the block (a SIGINT ignored by the parent, e.g. a
    background job, stays ignored); the previous handlers are restored after, and the stop state
    is cleared when the outermost block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in signums:
        if signum == signal.SIGINT and signal.getsignal(signum) is signal.SIG_IGN:
            continue
        previous[signum] = signal.signal(signum, _raise_stop)
    _stop_state["depth"] += 1
    try:
        yield
    finally:
        for signum, handler in previous.items():  # first: no signal can reach _raise_stop after the reset
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        _stop_state["depth"] -= 1
        if _stop_state["depth"] == 0:
            _stop_state["raised"] = False
            _stop_state["pending"] = 0


#: The installed command lines (pyproject.toml ``[project.scripts]``).
CONSOLE_SCRIPTS = ("tfmedseg", "tfmedseg-predict", "tfmedseg-export", "tfmedseg-phantoms", "tfmedseg-liver-lesions",
                   "tfmedseg-viewer")


def _loading_a_command() -> bool:
    """True while this process is starting a tfmedseg command line: ``python -m tfmedseg[.<module>]``
    still locating its module (``sys.argv[0]`` is ``"-m"`` until then), or an installed script."""
    argv = sys.argv or [""]
    if argv[0] == "-m":
        orig = list(getattr(sys, "orig_argv", ()))
        module = orig[orig.index("-m") + 1] if "-m" in orig[:-1] else ""
        return module == "tfmedseg" or module.startswith("tfmedseg.")
    return os.path.basename(argv[0]) in CONSOLE_SCRIPTS


def _stop_while_loading(signum, frame):
    how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    for s in (signal.SIGINT, signal.SIGTERM):  # a second signal would cut this exit short
        signal.signal(s, signal.SIG_IGN)
    if _stop_state["command_ran"]:  # the command is ending (its own line, if any, is printed): exit quietly
        raise SystemExit(128 + signum)
    print(f"interrupted (stopped by {how}): stopped while loading; nothing was started: rerun the same command",
          file=sys.stderr)
    raise SystemExit(128 + signum)


def guard_command_loading() -> bool:
    """While a tfmedseg command line loads (``python -m tfmedseg.<module>`` or an installed
    ``tfmedseg*`` script importing TensorFlow before its ``main()`` runs), a Ctrl-C or SIGTERM prints
    one line and exits 130 / 143 instead of a traceback from the import machinery; nothing has been
    written then. ``main()``'s :func:`report_user_errors` takes over and puts this handler back
    after. Does nothing in any other process (a script or notebook importing tfmedseg keeps its
    handlers) and outside the main thread.

    Returns:
        True when the handlers were installed.
    """
    if not _loading_a_command() or threading.current_thread() is not threading.main_thread():
        return False
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop_while_loading)
    return True


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


def one_line(text: str) -> str:
    """``text`` with its line breaks (and the blanks around them) turned into one space: a cause quoted from a
    third-party library may span lines, an error line may not."""
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


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
    _stop_state["command_ran"] = True
    with _stop_handlers((signal.SIGINT, signal.SIGTERM)):  # a second signal while the stop unwinds is ignored
        try:
            fn()
            raise_pending_stop()  # a stop that C code dropped after the work's last loop step
        except TfMedSegError as exc:
            print("error: " + one_line(str(exc)), file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            _stop_state["pending"] = 0  # reported here
            note = interrupted() if callable(interrupted) else interrupted
            print(f"interrupted ({str(exc) or 'stopped by Ctrl-C'}): {note}", file=sys.stderr)
            return stop_exit_code(exc)
    return 0
