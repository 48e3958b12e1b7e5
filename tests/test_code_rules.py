"""Project rules checked on the source text (no TensorFlow needed): library modules log instead of
printing; nothing in the package unpickles (``np.load(..., allow_pickle=False)`` only)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tfmedseg"


def _is_command_line(relative: Path) -> bool:
    """Modules that may print: a package's ``__main__``, the experiments (their final tables and the
    run-directory listing), the apps, and the ``*_cli`` / ``command`` modules of the commands."""
    return (relative.name == "__main__.py" or relative.parts[0] in ("experiments", "apps")
            or relative.stem.endswith("_cli") or relative.name == "command.py")


def _calls(path: Path, name: str) -> list[int]:
    return [node.lineno for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name]


def test_library_modules_do_not_print():
    bad = [f"{p.relative_to(PACKAGE)}:{line}" for p in sorted(PACKAGE.rglob("*.py"))
           if not _is_command_line(p.relative_to(PACKAGE)) for line in _calls(p, "print")]
    assert not bad, f"print( in library modules (log through logging.getLogger(__name__)): {bad}"


def test_print_check_finds_a_print(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    print('x')\n")
    assert _calls(module, "print") == [2]


def _pickle_uses(path: Path) -> list[str]:
    """Every mention of pickle in ``path`` except ``np.load(..., allow_pickle=False)``."""
    tree = ast.parse(path.read_text())
    allowed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and isinstance(kw.value, ast.Constant) and kw.value.value is False:
                    allowed.add(id(kw))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [f"{path.name}:{node.lineno} import {n}" for n in names if "pickle" in n or n in ("dill", "joblib", "shelve")]
        elif isinstance(node, ast.keyword) and node.arg and "pickle" in node.arg and id(node) not in allowed:
            found.append(f"{path.name}:{node.value.lineno} {node.arg}=")
        elif isinstance(node, ast.Attribute) and "pickle" in node.attr.lower():
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.Name) and "pickle" in node.id.lower():
            found.append(f"{path.name}:{node.lineno} {node.id}")
    return found


def test_no_pickle_in_the_package_but_np_load_without_it():
    bad = [use for p in sorted(PACKAGE.rglob("*.py")) for use in _pickle_uses(p)]
    assert not bad, bad
    # and the text agrees: every line naming pickle is an np.load(..., allow_pickle=False)
    lines = [line.strip() for p in PACKAGE.rglob("*.py") for line in p.read_text().splitlines() if "pickle" in line]
    assert lines and all("np.load(" in line and "allow_pickle=False" in line for line in lines), lines


def test_pickle_check_finds_the_forbidden_uses(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import pickle\nimport numpy as np\nnp.load('a', allow_pickle=True)\nnp.load('b', allow_pickle=False)\n"
                      "pickle.loads(b'')\n")
    found = _pickle_uses(module)
    assert found == ["m.py:1 import pickle", "m.py:3 allow_pickle=", "m.py:5 pickle"], found
