"""Logging for command lines: ``-v/--verbose`` and ``-q/--quiet``, and TensorFlow's start-up noise.

Library modules log through ``logging.getLogger(__name__)`` and never print; a command line calls
:func:`add_verbosity_options` on its parser and :func:`configure_logging` with the parsed
arguments, then prints only its final tables.

Levels of the ``tfmedseg`` loggers:

==========  ===========  =================================================================
option      level        what the user sees
==========  ===========  =================================================================
``-q``      WARNING      warnings, errors and the command's final output
(none)      INFO         one line per step (cases found, epochs, exports), progress bars
``-v``      DEBUG        everything, plus TensorFlow's C++/absl start-up messages
==========  ===========  =================================================================

INFO and DEBUG lines go to stdout (with the command's final output, so ``> run.log`` keeps the whole
run), warnings and errors to stderr (a failing command's stderr is its one ``error:`` line).

TensorFlow 2.21 writes about seven lines to stderr when it is imported on a machine without a GPU
(absl's "All log messages before absl::InitializeLog()", "Could not find cuda drivers", the oneDNN
notice), before ``TF_CPP_MIN_LOG_LEVEL`` is read, and one more ("failed call to cuInit") when it
first probes CUDA. :func:`install_tensorflow_import_filter` (called by ``import tfmedseg``)
captures file descriptor 2 while ``tensorflow`` is imported, probes the GPUs inside that window
(``tf.config.list_physical_devices``; logical devices can still be configured afterwards), drops
the known lines when no GPU is found and writes every other line back (everything, on a machine
with a GPU); the dropped lines are kept and :func:`configure_logging` shows them with ``-v``. Set
``TFMEDSEG_TF_LOGS=1`` to leave TensorFlow's stderr alone.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "add_verbosity_options",
    "configure_logging",
    "verbosity_level",
    "install_tensorflow_import_filter",
    "tensorflow_import_messages",
    "add_file_log",
    "reset_logging",
    "native_stderr_captured",
]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
LOG_DATEFMT = "%H:%M:%S"
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: Lines TensorFlow writes while it is imported on a CPU-only machine (regular expressions).
TF_IMPORT_NOISE = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^[IW]\d{4} [\d:.]+\s+\d+ cudart_stub\.cc:\d+\] ",
    r"^[IW]\d{4} [\d:.]+\s+\d+ cuda_executor\.cc:\d+\] ",
    r"^[EW]\d{4} [\d:.]+\s+\d+ cuda_platform\.cc:\d+\] failed call to cuInit",
    r"^[IW]\d{4} [\d:.]+\s+\d+ cuda_(fft|dnn|blas)\.cc:\d+\] Unable to register",
    r"^[IW]\d{4} [\d:.]+\s+\d+ port\.cc:\d+\] oneDNN custom operations are on",
    r"^[IW]\d{4} [\d:.]+\s+\d+ cpu_feature_guard\.cc:\d+\] ",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$",
    r"^E\d{4} [\d:.]+\s+\d+ cuda_(fft|dnn|blas)\.cc:\d+\] Unable to register",
    r"^WARNING: All log messages before absl::InitializeLog\(\)",
)
_NOISE = tuple(re.compile(p) for p in TF_IMPORT_NOISE)
_dropped: list[str] = []


def verbosity_level(verbose: int = 0, quiet: bool = False) -> int:
    """The ``logging`` level for ``-v`` (count) and ``-q``: WARNING, INFO or DEBUG."""
    if quiet:
        return logging.WARNING
    return logging.DEBUG if verbose > 0 else logging.INFO


def add_verbosity_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``-v/--verbose`` (repeatable) and ``-q/--quiet`` to ``parser``; returns it."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="more output: debug messages and TensorFlow's own start-up logging")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="only warnings, errors and the final results (no progress bars)")
    return parser


def configure_logging(args: argparse.Namespace | None = None, *, verbose: int | None = None,
                      quiet: bool | None = None, stream: Any = None) -> int:
    """Configure the root logger for a command line; returns the level set on ``tfmedseg``.

    Args:
        args: Parsed arguments carrying ``verbose``/``quiet`` (from :func:`add_verbosity_options`).
        verbose: Overrides ``args.verbose``.
        quiet: Overrides ``args.quiet``.
        stream: Where every log line goes (default: INFO/DEBUG on ``sys.stdout``, warnings and
            errors on ``sys.stderr``).
    """
    verbose = int(verbose if verbose is not None else getattr(args, "verbose", 0) or 0)
    quiet = bool(quiet if quiet is not None else getattr(args, "quiet", False))
    level = verbosity_level(verbose, quiet)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tfmedseg_console", False):
            root.removeHandler(handler)
    handler = _ConsoleHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, logging.WARNING))
    logging.getLogger("tfmedseg").setLevel(level)
    # TensorFlow's and absl's Python loggers: warnings and up unless -v.
    for name in ("tensorflow", "absl", "h5py", "PIL"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.ERROR)
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        log = logging.getLogger("tfmedseg.tensorflow")
        for line in tensorflow_import_messages():
            log.debug("tensorflow import: %s", line)
    return level


class _ConsoleHandler(logging.StreamHandler):
    """Console output of a command line: INFO and DEBUG lines on stdout (with the command's other
    output; a redirected stdout keeps the run's log), warnings and errors on stderr. Resolves
    ``sys.stdout``/``sys.stderr`` at each record (tests and tools replace them); a fixed ``stream``
    takes every line."""

    _tfmedseg_console = True

    def __init__(self, stream: Any = None) -> None:
        self._fixed = stream
        self._now = stream
        super().__init__(stream if stream is not None else sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        if self._fixed is not None:
            return self._fixed
        return self._now if self._now is not None else sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if self._fixed is None:
            self._now = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        super().emit(record)


def reset_logging() -> None:
    """Undo :func:`configure_logging`: remove its console handler, leave the levels unset (tests)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tfmedseg_console", False):
            root.removeHandler(handler)
    for name in ("tfmedseg", "tensorflow", "absl", "h5py", "PIL"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def add_file_log(path: str | os.PathLike, level: int = logging.INFO) -> logging.Handler:
    """Also write log lines (``level`` and up) to ``path`` (appended); returns the handler to remove."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT, "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(level)
    logging.getLogger().addHandler(handler)
    tf_logger = logging.getLogger("tfmedseg")
    if tf_logger.level == logging.NOTSET or tf_logger.level > level:
        tf_logger.setLevel(level)
    return handler


@contextlib.contextmanager
def _stderr_fd_captured(crash_report: bool = False) -> Iterator[list[str] | None]:
    """Within the block, file descriptor 2 goes to a temporary file; the yielded list receives the
    captured text (one string) when the block ends, whether it succeeds or raises. Yields None (and
    captures nothing) where there is no real fd 2 (embedded interpreters). ``crash_report``: Python's
    ``faulthandler`` (when not enabled already) reports a fatal signal on the real stderr meanwhile.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2
        yield None
        return
    texts: list[str] = []
    crash_report = crash_report and not faulthandler.is_enabled()
    try:
        with tempfile.TemporaryFile(mode="w+b") as capture:
            os.dup2(capture.fileno(), 2)
            if crash_report:
                faulthandler.enable(file=saved)
            try:
                yield texts
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                if crash_report:
                    faulthandler.disable()
                capture.seek(0)
                texts.append(capture.read().decode("utf-8", "replace"))
    finally:
        os.close(saved)


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Within the block, file descriptor 2 (where C/C++ code such as TensorFlow Lite's converter and
    runtime writes) goes to a temporary file; the yielded list receives its lines when the block ends,
    whether it succeeds or raises. The caller decides what to show (see
    :func:`tfmedseg.export.tflite.convert_to_tflite`).

    A native crash inside the block cannot flush what was captured, so Python's ``faulthandler`` (when
    not enabled already) reports a fatal signal on the real stderr for the duration. Nothing is
    captured (an empty list) with ``TFMEDSEG_TF_LOGS`` set to a value other than ``0`` or where there
    is no real fd 2.
    """
    lines: list[str] = []
    if os.environ.get("TFMEDSEG_TF_LOGS", "0") not in ("", "0"):
        yield lines
        return
    texts = None
    try:
        with _stderr_fd_captured(crash_report=True) as texts:
            yield lines
    finally:
        if texts:
            lines.extend(line for line in texts[0].splitlines() if line.strip())


def tensorflow_import_messages() -> list[str]:
    """The start-up lines TensorFlow wrote while it was imported and the filter dropped."""
    return list(_dropped)


def _filter_stderr_lines(text: str) -> str:
    """Drop :data:`TF_IMPORT_NOISE` lines from ``text`` (remembered for ``-v``); returns the rest."""
    kept = []
    for line in text.splitlines(keepends=True):
        if any(p.search(line.rstrip("\n")) for p in _NOISE):
            _dropped.append(line.rstrip("\n"))
        else:
            kept.append(line)
    return "".join(kept)


class _QuietLoader(importlib.abc.Loader):
    """Wraps TensorFlow's loader: fd 2 goes to a temporary file while the package executes."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):  # noqa: D401 - importlib protocol
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        gpus = texts = None
        try:
            with _stderr_fd_captured() as texts:
                self._loader.exec_module(module)
                if texts is not None:  # fd 2 captured: the CUDA platform is probed here, not at the first op
                    try:
                        gpus = module.config.list_physical_devices("GPU")
                    except Exception:  # pragma: no cover - a broken CUDA install: TF reports it later
                        gpus = None
        finally:
            if texts:
                rest = texts[0] if gpus else _filter_stderr_lines(texts[0])  # a GPU machine keeps TF's lines
                if rest:
                    sys.stderr.write(rest)
                    sys.stderr.flush()


class _TensorFlowImportFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder that hands ``tensorflow`` a :class:`_QuietLoader` (once)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


def install_tensorflow_import_filter() -> bool:
    """Filter TensorFlow's import-time stderr noise (see the module docstring); True when installed.

    Does nothing when TensorFlow is already imported or ``TFMEDSEG_TF_LOGS`` is set to a
    non-empty value other than ``0``.
    """
    if "tensorflow" in sys.modules or os.environ.get("TFMEDSEG_TF_LOGS", "0") not in ("", "0"):
        return False
    if any(isinstance(f, _TensorFlowImportFinder) for f in sys.meta_path):
        return True
    sys.meta_path.insert(0, _TensorFlowImportFinder())
    return True
