"""What every command line of tfmedseg shares: user errors as one line and exit code 2.

Library modules raise :mod:`tfmedseg.errors` exceptions and log; only command-line modules (a
package's ``__main__``, ``experiments/``, ``apps/``, ``predict_cli``) print, through this module
for their errors.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from tfmedseg.errors import TfMedSegError

__all__ = ["report_user_errors"]


def report_user_errors(fn: Callable[[], Any]) -> int:
    """Run ``fn`` for a command line: 0 on success; a user error prints one line and gives 2.

    A :class:`TfMedSegError` becomes ``error: <file>: <cause>`` on stderr with exit code 2 (no
    traceback); any other exception is a bug and propagates with its traceback.
    """
    try:
        fn()
    except TfMedSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
