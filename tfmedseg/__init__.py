"""tfmedseg: five published medical-imaging segmentation and detection systems in TF 2 / Keras 3.

Importing ``tfmedseg`` before TensorFlow turns on oneDNN (``TF_ENABLE_ONEDNN_OPTS=1``) unless the
user has set that variable: TF 2.21 leaves oneDNN off on AMD CPUs, and with it on a 2D U-Net
training step was 1.36x-2.4x and 3D sliding-window inference 4x-18x faster on the CPUs we measured
(see ``docs/performance.md``). Set ``TF_ENABLE_ONEDNN_OPTS=0`` before importing to opt out. The variable
has no effect when TensorFlow was imported first.

Importing ``tfmedseg`` before TensorFlow also hides the lines TensorFlow writes to stderr while it
loads on a machine without a GPU (absl's pre-init warning, "Could not find cuda drivers", the oneDNN
notice); ``-v`` on a command line shows them, ``TFMEDSEG_TF_LOGS=1`` keeps them (see
:mod:`tfmedseg.logs`).
"""

from __future__ import annotations

import os as _os

_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfmedseg.command import guard_command_loading as _guard_command_loading
from tfmedseg.logs import install_tensorflow_import_filter as _install_tf_filter

_install_tf_filter()  # TensorFlow's CPU-only start-up lines go to the log (-v), not the terminal
_guard_command_loading()  # python -m tfmedseg.<module> / tfmedseg* scripts: Ctrl-C while loading is one line, no traceback

__version__ = "0.1.0"

__all__ = ["__version__"]
