"""Imports flow one way (docs/architecture.md): checked on the source text, no TensorFlow needed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tfmedseg"


def _imports(path: Path) -> set[str]:
    """Every ``tfmedseg...`` module a file imports, at any depth (lazy imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfmedseg"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("tfmedseg"))
    return out


@pytest.mark.parametrize("package, forbidden", [
    ("inference", "tfmedseg.export"),
    ("metrics", "tfmedseg.datasets"),
    ("metrics", "tfmedseg.reports"),
    ("data", "tfmedseg.experiments"),
    ("reports", "tfmedseg.experiments"),
])
def test_no_upward_import(package, forbidden):
    bad = [f"{p.relative_to(PACKAGE)}: {m}" for p in sorted((PACKAGE / package).rglob("*.py"))
           for m in _imports(p) if m == forbidden or m.startswith(forbidden + ".")]
    assert not bad, bad


@pytest.mark.parametrize("a, b", [
    ("io/dicom.py", "tfmedseg.io.dicom_write"),
    ("models/blocks/common.py", "tfmedseg.models.blocks.separable3d"),
    ("models/blocks/depthwise3d.py", "tfmedseg.models.blocks.common"),
])
def test_former_import_loops_stay_broken(a, b):
    assert not {m for m in _imports(PACKAGE / a) if m == b or m.startswith(b + ".")}
