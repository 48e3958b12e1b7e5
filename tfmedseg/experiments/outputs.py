"""The last lines of an experiment command: where its results went (run directory, main files, exports)."""

from __future__ import annotations

from pathlib import Path

from tfmedseg.experiments.rundir import LOG_NAME

__all__ = ["MAIN_FILES", "describe_outputs", "print_outputs"]

#: Top-level files of a run directory named in the final output, in this order when present.
MAIN_FILES = ("summary.md", "summary.json", "per_case.csv", "montage.png", "config.yaml", LOG_NAME)


def describe_outputs(ctx) -> list[str]:
    """The lines of :func:`print_outputs`: the run directory, its main files and folders, the exports."""
    out = Path(ctx.output_dir)
    lines = [f"results in {out}/"]
    if out.is_dir():
        entries = sorted(out.iterdir(), key=lambda p: (p.is_dir(), MAIN_FILES.index(p.name) if p.name in MAIN_FILES else 99, p.name))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                n = sum(1 for f in entry.rglob("*") if f.is_file())
                lines.append(f"  {entry.name}/ ({n} files)")
            else:
                lines.append(f"  {entry.name}")
    for path in ctx.exports:
        lines.append(f"exported {path}")
    return lines


def print_outputs(ctx) -> None:
    """The command line's last lines: where the results went (see :func:`describe_outputs`)."""
    print("\n" + "\n".join(describe_outputs(ctx)))
