"""One log line per epoch, for training whose output is not a terminal.

Keras' progress bar redraws its line with carriage returns many times a second; redirected to a file
that turns a 12-minute run into hundreds of kB of redrawn lines. :class:`EpochLogger` replaces it
there (``Trainer`` picks it when ``TrainConfig.verbose`` is ``"auto"`` and stdout is not a
terminal): one INFO line on the ``tfmedseg.training`` logger per epoch::

    epoch 3/20 (12.4 s): loss 0.4120 - dice 0.8312 - val_loss 0.3904 - val_dice 0.8507 - lr 0.001
"""

from __future__ import annotations

import logging
import sys
import time

import keras

__all__ = ["EpochLogger", "fit_verbosity", "format_logs"]

_log = logging.getLogger("tfmedseg.training")


def format_logs(logs: dict | None) -> str:
    """``loss 0.4120 - val_loss 0.3904 - lr 0.001``: the epoch's logs, 4 significant decimals."""
    parts = []
    for key, value in (logs or {}).items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        text = f"{value:.3g}" if key in ("lr", "learning_rate") or (value and abs(value) < 1e-3) else f"{value:.4f}"
        parts.append(f"{key} {text}")
    return " - ".join(parts)


class EpochLogger(keras.callbacks.Callback):
    """Log ``epoch i/n (seconds): metrics`` at the end of every epoch (see the module docstring).

    Args:
        logger: Where the lines go (default ``tfmedseg.training``).
        prefix: Put before each line (``"liver: "``), e.g. the stage of a cascade.
    """

    def __init__(self, logger: logging.Logger | None = None, prefix: str = "") -> None:
        super().__init__()
        self.logger = logger or _log
        self.prefix = prefix
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        epochs = self.params.get("epochs") if self.params else None
        of = f"/{epochs}" if epochs else ""
        self.logger.info("%sepoch %d%s (%.1f s): %s", self.prefix, epoch + 1, of,
                         time.perf_counter() - self._start, format_logs(logs))


def fit_verbosity(verbose) -> int:
    """``model.fit``'s ``verbose`` for a ``TrainConfig.verbose`` of ``"auto"`` (an int is used as given).

    =============================================  ========================================
    situation                                      verbose
    =============================================  ========================================
    ``-q`` (``tfmedseg`` logger set above INFO)    0, nothing
    stdout is a terminal                           1, Keras' progress bar
    stdout is a file or a pipe, logging configured 0, with :class:`EpochLogger`'s line per epoch
    stdout is a file or a pipe, no logging set up  2, Keras' own line per epoch
    =============================================  ========================================
    """
    if verbose != "auto":
        return int(verbose)
    logger = logging.getLogger("tfmedseg")
    if logger.level != logging.NOTSET and logger.level > logging.INFO:
        return 0
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        return 1
    return 0 if logger.isEnabledFor(logging.INFO) else 2
