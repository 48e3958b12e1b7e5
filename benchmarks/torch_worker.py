"""The persistent torch worker the peer benchmarks share (torch is never imported beside TensorFlow).

A benchmark script runs itself a second time with ``--worker`` under the torch interpreter
(``--torch-python``) and talks to it over a pipe, one JSON line per request, so ours and torch's
calls can be interleaved one by one and see the same machine load:

- :class:`TorchWorker` (TensorFlow side) starts the worker and sends requests;
- :func:`serve_timed_calls` (torch side) builds each requested call once, warms it up, and answers
  every request with the wall and CPU seconds of one call;
- :func:`tensorflow_with_threads` imports TensorFlow after ``tfmedseg`` (oneDNN on) with the given
  intra/inter-op threads and prints how it is set up;
- :func:`add_torch_worker_options` adds a peer benchmark's ``--torch-python`` (default: the environment
  variable ``TFMEDSEG_TORCH_PYTHON``, the python of an environment with torch and without TensorFlow;
  :func:`default_torch_python`) and its hidden ``--worker`` switch; :func:`require_torch_python` stops a
  torch-only comparison with one line when there is none.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Callable

#: Environment variable naming the python of a torch environment (torch, no TensorFlow): ``--torch-python``'s default.
TORCH_PYTHON_VARIABLE = "TFMEDSEG_TORCH_PYTHON"
#: ``--help`` text of ``--torch-python`` (the same in every peer benchmark).
TORCH_PYTHON_HELP = (f"python of an environment with torch and without TensorFlow, e.g. <torch-env>/bin/python "
                     f"(default: the environment variable {TORCH_PYTHON_VARIABLE})")


def default_torch_python() -> str | None:
    """``$TFMEDSEG_TORCH_PYTHON``, or ``None`` when it is unset or empty."""
    return os.environ.get(TORCH_PYTHON_VARIABLE) or None


def add_torch_worker_options(parser: argparse.ArgumentParser, help_note: str = "") -> None:
    """Add ``--torch-python`` (default :func:`default_torch_python`, help :data:`TORCH_PYTHON_HELP` + ``help_note``)
    and the hidden ``--worker`` (this script as the torch side, run by :class:`TorchWorker`) to ``parser``."""
    parser.add_argument("--torch-python", default=default_torch_python(), help=TORCH_PYTHON_HELP + help_note)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)


def torch_python_problem(python: str | None) -> str | None:
    """Why ``python`` cannot run the torch peer (one line), or ``None`` when it is an existing file."""
    if not python:
        return (f"no torch environment: pass --torch-python <torch-env>/bin/python or set {TORCH_PYTHON_VARIABLE}")
    if not os.path.isfile(python):
        return f"--torch-python / {TORCH_PYTHON_VARIABLE}: {python} does not exist"
    return None


def require_torch_python(python: str | None, prog: str) -> str:
    """``python`` if it can run the torch peer; otherwise a one-line error on stderr and exit status 2."""
    problem = torch_python_problem(python)
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    return python


class TorchWorker:
    """``script --worker`` run by ``python`` (the torch environment), driven over a pipe."""

    def __init__(self, python: str, script: str, threads: int, omp_active: bool = False, hello: bool = True):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        if not omp_active:
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen([python, script, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.hello = self._reply("start") if hello else {}

    def _reply(self, request: str) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"torch worker ended on request {request!r} (exit {self.proc.wait()})")
        return json.loads(line)

    def ask(self, request: str) -> dict:
        """Send one request line, return the worker's JSON answer."""
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        return self._reply(request)

    def close(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait()


def serve_timed_calls(build: Callable[[str], Callable[[], object]], hello: dict) -> None:
    """Worker loop: print ``hello``, then per request line ``{wall, cpu}`` of one ``build(line)()`` call.

    Each distinct request is built once and called once untimed (warm-up); an empty line ends it.
    """
    print(json.dumps({"ready": True, **hello}), flush=True)
    calls = {}
    for line in sys.stdin:
        request = line.strip()
        if not request:
            break
        if request not in calls:
            calls[request] = build(request)
            calls[request]()  # warm-up
        w0, c0 = time.perf_counter(), time.process_time()
        calls[request]()
        print(json.dumps({"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}), flush=True)


def tensorflow_with_threads(threads: int):
    """TensorFlow imported after ``tfmedseg`` (oneDNN on), ``threads`` intra- and inter-op threads."""
    import tfmedseg  # noqa: F401  (oneDNN before TensorFlow)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    print(f"TF {tf.__version__}: TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')} (set before TF import), "
          f"intra/inter-op threads {threads}/{threads}")
    return tf
