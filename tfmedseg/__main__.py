"""``tfmedseg <command> [options]`` (also ``python -m tfmedseg``): one entry point for every command line.

Commands: ``predict``, ``export``, ``phantoms`` and one per experiment module in
``tfmedseg/experiments/`` (``liver_ct_2d3d``, ``bone_malignet``, ...; ``-`` works as well as ``_``).
Each command takes the options of its own module (``tfmedseg liver_ct_2d3d --help`` is
``python -m tfmedseg.experiments.liver_ct_2d3d --help``). The same commands are installed as
``tfmedseg-predict``, ``tfmedseg-export``, ``tfmedseg-phantoms``, ``tfmedseg-viewer``; ``python -m <module>`` works too.

Listing the commands imports nothing heavy: experiment modules are found on disk and described by
their docstring's first line, read without importing them (no TensorFlow).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

from tfmedseg.command import report_user_errors

__all__ = ["main", "commands"]

#: Commands that are not experiments: ``name -> (module, description)``.
TOOLS = {
    "predict": ("tfmedseg.predict", "segment your own scan (NIfTI or DICOM) with a trained model"),
    "export": ("tfmedseg.export.__main__", "export a run to a SavedModel and/or TFLite"),
    "phantoms": ("tfmedseg.datasets.phantoms.__main__", "generate synthetic phantom cases in a dataset's layout"),
    "liver-lesions": ("tfmedseg.apps.liver_lesions", "seed 003 app: a CT DICOM series -> liver and lesion overlay, DICOM-SEG, report"),
    "viewer": ("tfmedseg.viewer.__main__", "local web viewer: open, segment, look at, measure and download scans"),
}


def _first_docstring_line(path: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError, ValueError):
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _is_command_module(path: Path) -> bool:
    """True when the module ends in an ``if __name__ == "__main__":`` guard (an experiment command)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return False
    for node in tree.body:
        test = getattr(node, "test", None) if isinstance(node, ast.If) else None
        if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
                and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)):
            return True
    return False


def experiment_names() -> list[str]:
    """The experiment modules in ``tfmedseg/experiments/`` (found without importing them): those that
    run as a command (``python -m tfmedseg.experiments.<name>``); the runner, the command-line pieces
    and the sweep machinery beside them are library modules, not experiments."""
    import tfmedseg.experiments as pkg

    root = Path(pkg.__path__[0])
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                  if not m.ispkg and not m.name.startswith("_") and _is_command_module(root / f"{m.name}.py"))


def commands() -> dict[str, tuple[str, str]]:
    """``{command: (module, one-line description)}`` for every command."""
    import tfmedseg.experiments as pkg

    out = dict(TOOLS)
    root = Path(pkg.__path__[0])
    for name in experiment_names():
        out[name] = (f"tfmedseg.experiments.{name}", _first_docstring_line(root / f"{name}.py"))
    return out


def _usage(cmds: dict[str, tuple[str, str]]) -> str:
    width = max(len(n) for n in cmds)
    lines = ["usage: tfmedseg <command> [options]   (tfmedseg <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in cmds.items() if name in TOOLS]
    lines += ["", "experiments (python -m tfmedseg.experiments.<name>):"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in cmds.items() if name not in TOOLS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its command's ``main(argv[1:])``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cmds = commands()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(cmds))
        return 0 if argv else 2
    if argv[0] == "--version":
        from tfmedseg import __version__

        print(f"tfmedseg {__version__}")
        return 0
    name = argv[0] if argv[0] in cmds else argv[0].replace("-", "_")
    if name not in cmds:
        print(f"error: unknown command {argv[0]!r}; commands: {', '.join(cmds)}", file=sys.stderr)
        return 2
    loaded: list = []  # Ctrl-C while TensorFlow loads: one line, no traceback
    code = report_user_errors(lambda: loaded.append(importlib.import_module(cmds[name][0])),
                              "stopped while loading; nothing was started: rerun the same command")
    if not loaded:
        return code
    return int(loaded[0].main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
