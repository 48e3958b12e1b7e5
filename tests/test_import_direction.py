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


#: docs/architecture.md's layers, lowest first: a package imports only from its own layer and below
#: (plus the neutral modules: errors, config, validation, progress, logs, command, staging).
LAYERS = (("io",), ("datasets",), ("preprocessing",), ("data", "augment"), ("losses", "models"), ("training",),
          ("inference", "metrics"), ("export",), ("experiments",))


def test_each_layer_imports_only_from_itself_and_below():
    rank = {package: i for i, layer in enumerate(LAYERS) for package in layer}
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2 or parts[0] not in rank:
            continue
        for module in _imports(path):
            top = module.split(".")[1] if module.count(".") else ""
            if top in rank and rank[top] > rank[parts[0]]:
                bad.append(f"{path.relative_to(PACKAGE)}: {module}")
    assert not bad, bad


#: The base layer: modules every layer may import; they import only each other.
BASE = ("errors", "config", "validation", "logs", "progress", "command", "staging")


def test_base_modules_import_only_base_modules():
    """config.save_config writes atomically through ``staging`` (base), not ``io._atomic`` (io layer)."""
    bad = [f"{name}.py: {m}" for name in BASE for m in _imports(PACKAGE / f"{name}.py")
           if m != "tfmedseg" and m.split(".")[1] not in BASE]
    assert not bad, bad


def test_the_layer_check_sees_a_lazy_upward_import(tmp_path):
    """The AST walk finds imports inside functions too (data/views.py once imported models/detection lazily)."""
    module = tmp_path / "views.py"
    module.write_text("def crop(view):\n    from tfmedseg.models.detection.crop import crop_box\n    return crop_box\n")
    assert "tfmedseg.models.detection.crop" in _imports(module)
