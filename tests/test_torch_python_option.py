"""The peer benchmarks' ``--torch-python`` defaults to ``$TFMEDSEG_TORCH_PYTHON``, never to a developer's path.

Without the option and the variable, the torch-only comparisons (``bench_detection.py``, ``bench_conv_layers.py``)
stop with one line naming both and exit status 2 before importing TensorFlow; ``bench_training.py`` skips torch.
Nothing here imports torch or starts a worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import torch_worker  # noqa: E402


def test_default_comes_from_the_variable(monkeypatch):
    monkeypatch.delenv("TFMEDSEG_TORCH_PYTHON", raising=False)
    assert torch_worker.default_torch_python() is None
    monkeypatch.setenv("TFMEDSEG_TORCH_PYTHON", "")
    assert torch_worker.default_torch_python() is None
    monkeypatch.setenv("TFMEDSEG_TORCH_PYTHON", sys.executable)
    assert torch_worker.default_torch_python() == sys.executable
    assert torch_worker.torch_python_problem(sys.executable) is None


def test_problem_names_the_option_and_the_variable(tmp_path):
    none = torch_worker.torch_python_problem(None)
    assert "--torch-python" in none and "TFMEDSEG_TORCH_PYTHON" in none
    missing = torch_worker.torch_python_problem(str(tmp_path / "python"))
    assert str(tmp_path / "python") in missing and "does not exist" in missing


@pytest.mark.parametrize("script", ["bench_detection.py", "bench_conv_layers.py"])
def test_torch_only_benchmarks_exit_2_without_torch(script):
    env = {k: v for k, v in os.environ.items() if k != "TFMEDSEG_TORCH_PYTHON"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--torch-python" in lines[0] and "TFMEDSEG_TORCH_PYTHON" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("script", ["bench_training.py", "bench_detection.py", "bench_conv_layers.py"])
def test_help_names_the_variable(script):
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    assert "TFMEDSEG_TORCH_PYTHON" in " ".join(proc.stdout.split())


def test_no_benchmark_defaults_to_a_developer_path():
    for path in BENCHMARKS.glob("*.py"):
        assert "venv-torch" not in path.read_text(), path.name


def test_the_shared_options_of_a_peer_benchmark(monkeypatch):
    """``add_torch_worker_options``: ``--torch-python`` from the variable (read when the parser is built), the hidden
    ``--worker``; the three peer benchmarks take both from it."""
    import argparse

    monkeypatch.setenv("TFMEDSEG_TORCH_PYTHON", "/opt/torch-env/bin/python")
    parser = argparse.ArgumentParser()
    torch_worker.add_torch_worker_options(parser, "; note")
    args = parser.parse_args([])
    assert args.torch_python == "/opt/torch-env/bin/python" and args.worker is False
    assert parser.parse_args(["--worker", "--torch-python", ""]).worker is True
    help_text = " ".join(parser.format_help().split())
    assert "--worker" not in help_text and "TFMEDSEG_TORCH_PYTHON); note" in help_text
    for script in ("bench_training.py", "bench_detection.py", "bench_conv_layers.py"):
        source = (BENCHMARKS / script).read_text()
        assert "add_torch_worker_options(parser" in source and 'add_argument("--torch-python"' not in source, script
