"""Shared pieces of the experiment tests: the rerun of a killed run, the directory of a quick run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def rerun_killed(capsys):
    """``rerun_killed(main, argv, out, export_roots) -> text``: stand for a run killed after training
    (``out/run_complete.json`` removed), run ``main(argv)`` again and check that it resumed (``resumed
    from``) and exported nothing again (``exported already``; each of ``export_roots`` still holds
    version ``1`` only). Returns the rerun's output, lowercased."""

    def rerun(main, argv, out: Path, export_roots) -> str:
        (Path(out) / "run_complete.json").unlink()
        capsys.readouterr()
        assert main(argv) == 0
        captured = capsys.readouterr()
        text = (captured.out + captured.err).lower()
        assert "resumed from" in text and "exported already" in text
        for root in export_roots:
            assert sorted(p.name for p in Path(root).iterdir()) == ["1"], root
        return text

    return rerun


@pytest.fixture
def quick_run_dir(tmp_path):
    """``quick_run_dir(variable) -> Path``: where a slow quick-config test runs (``run/``, ``cache/``,
    ``saved_models/`` below it): the directory named by the environment variable ``variable`` when it
    is set, else the test's ``tmp_path``. The test's command then finds the run made there before
    (e.g. by the same command in resumable pieces of under 30 minutes, docs/experiments.md): a
    finished one says so, a killed one resumes; the test checks the figures of that run."""

    def base(variable: str) -> Path:
        return Path(os.environ.get(variable) or tmp_path)

    return base
