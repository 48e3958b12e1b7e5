"""Moved to :mod:`tfmedseg.inference.graph` (re-exported for older imports)."""

from tfmedseg.inference.graph import *  # noqa: F401,F403
from tfmedseg.inference.graph import __all__  # noqa: F401
