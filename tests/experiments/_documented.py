"""The ``python -m tfmedseg.predict|export`` command lines of the docs, for the tests that run each one
(issue 13: the documented commands work). Loaded by file path (tests are not a package)."""

from __future__ import annotations

DOCUMENTED = ["README.md", "docs/predict.md", "docs/export.md", "deploy/README.md", "tfmedseg/predict.py",
              "tfmedseg/export/__main__.py"]


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``python -m tfmedseg.predict|export`` line of the docs: (module, argv); ``a|b`` -> a, ``[...]`` dropped."""
    import re
    import shlex
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    found = []
    for name in DOCUMENTED:
        text = (repo / name).read_text().replace("\\\n", " ")
        for match in re.finditer(r"python -m tfmedseg\.(predict|export) (--[^`#\n]*)", text):
            line = re.sub(r"\[[^\]]*\]", "", match.group(2))
            argv = [token.split("|")[0] for token in shlex.split(line)]
            if "--model" in argv and (match.group(1), argv) not in found:  # prose mentions name no model
                found.append((match.group(1), argv))
    return found
