"""Session fixtures: small phantom sets generated once per test session (seed 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfmedseg.datasets.phantoms import ensure_phantoms

#: Cases per phantom set: LiTS needs 3 for the three size groups, bone scans 6 for all classes.
CASES = {"lits": 3, "ircadb": 2, "hecktor": 2, "maa_spect": 2, "bone_scan": 6}
SEED = 0


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """Parent folder of the session's phantom sets."""
    return tmp_path_factory.mktemp("phantoms")


def _make(root: Path, name: str) -> Path:
    return ensure_phantoms(name, root / name, CASES[name], SEED)


@pytest.fixture(scope="session")
def lits_root(phantom_root) -> Path:
    return _make(phantom_root, "lits")


@pytest.fixture(scope="session")
def ircadb_root(phantom_root) -> Path:
    return _make(phantom_root, "ircadb")


@pytest.fixture(scope="session")
def hecktor_root(phantom_root) -> Path:
    return _make(phantom_root, "hecktor")


@pytest.fixture(scope="session")
def maa_root(phantom_root) -> Path:
    return _make(phantom_root, "maa_spect")


@pytest.fixture(scope="session")
def bone_root(phantom_root) -> Path:
    return _make(phantom_root, "bone_scan")
