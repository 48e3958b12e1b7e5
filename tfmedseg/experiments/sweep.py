"""Run many configurations of one experiment, one report row each, resumable per configuration.

A sweep is a list of :class:`SweepEntry` (a directory name and the JSON-able settings that make the
configuration what it is). :func:`run_sweep` runs each entry in ``<out_dir>/sweep/<name>/`` with
the experiment's ``run_one(entry, directory) -> row`` and, when it returns, writes the row to
``<directory>/row.json`` (atomically, with the entry's settings hash). Then:

* a **finished** configuration (``row.json`` with the same settings) is never run again: a rerun
  of a killed sweep reads its row and goes on with the next configuration;
* a **killed** configuration (no ``row.json``) is run again into the same directory, so its
  stages resume from their checkpoints (the trainer's ``backup/``, the rerun convention of every
  experiment);
* a ``row.json`` written with **other settings** is refused (:class:`~tfmedseg.errors.ConfigError`
  naming the file): choose a new ``--output-dir`` for a new sweep.

After every row (and once at the start, for the rows found) ``on_rows(rows, pending)`` is called
with the finished rows in entry order and the names still to run, so the experiment rewrites its
report as rows come in and a partial sweep is still useful.

Nothing here knows a dataset or a network: ``tfmedseg.experiments.liver_ct_2d3d`` sweeps seed 002's
21 encoder configurations with it (``--config sweep``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tfmedseg.errors import ConfigError

__all__ = ["SweepEntry", "ROW_FILE", "settings_hash", "read_row", "run_sweep"]

logger = logging.getLogger(__name__)

#: The file that marks a configuration as finished (its report row and settings hash).
ROW_FILE = "row.json"


@dataclasses.dataclass(frozen=True)
class SweepEntry:
    """One configuration of a sweep.

    Attributes:
        name: Directory name under ``<out_dir>/sweep/`` (letters, digits, ``-``, ``_``, ``.``).
        settings: What makes the configuration (JSON-able); its hash is stored with the row.
    """

    name: str
    settings: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name) or self.name.startswith("."):
            raise ConfigError(f"bad sweep entry name {self.name!r} (letters, digits, - _ . only)", path="sweep")


def settings_hash(settings: Mapping[str, Any]) -> str:
    """SHA-256 (16 hex digits) of the settings as sorted JSON."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_row(directory: Path, entry: SweepEntry) -> dict[str, Any] | None:
    """The finished row of ``entry`` in ``directory``, or None when it has not finished.

    Raises:
        ConfigError: ``row.json`` holds a row of other settings.
    """
    path = Path(directory) / ROW_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        key, row = saved["settings_hash"], saved["row"]
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("%s is damaged: configuration %s runs again (resuming)", path, entry.name)
        return None
    if key != settings_hash(entry.settings):
        raise ConfigError("holds a finished configuration with other settings; choose a new --output-dir "
                          "for a new sweep", path=path)
    return dict(row)


def _write_row(directory: Path, entry: SweepEntry, row: Mapping[str, Any]) -> Path:
    from tfmedseg.io._atomic import atomic_file

    path = Path(directory) / ROW_FILE
    payload = {"name": entry.name, "settings_hash": settings_hash(entry.settings), "settings": dict(entry.settings),
               "row": dict(row)}
    with atomic_file(path, ".json") as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path


def run_sweep(
    entries: Sequence[SweepEntry],
    run_one: Callable[[SweepEntry, Path], Mapping[str, Any]],
    out_dir,
    *,
    on_rows: Callable[[list[dict[str, Any]], list[str]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every entry not finished yet; returns all rows in entry order.

    Args:
        entries: The configurations (unique names).
        run_one: ``(entry, directory) -> row``: trains and evaluates one configuration in
            ``directory`` (resuming what a killed run left there) and returns its report row.
        out_dir: The sweep's run directory (entries go to ``out_dir/sweep/<name>``).
        on_rows: ``(finished rows, pending names)``, called at the start and after each row.
    """
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep entry names repeat: {names}", path="sweep")
    root = Path(out_dir) / "sweep"
    rows: dict[str, dict[str, Any]] = {}
    for entry in entries:
        row = read_row(root / entry.name, entry)
        if row is not None:
            rows[entry.name] = row
    if rows:
        logger.info("sweep: %d of %d configuration(s) finished already (%s): not run again", len(rows), len(entries),
                    ", ".join(rows))

    def report() -> None:
        if on_rows is not None:
            on_rows([rows[n] for n in names if n in rows], [n for n in names if n not in rows])

    report()
    for i, entry in enumerate(entries):
        if entry.name in rows:
            continue
        directory = root / entry.name
        directory.mkdir(parents=True, exist_ok=True)
        logger.info("sweep: configuration %d/%d: %s (%s)", i + 1, len(entries), entry.name, directory)
        row = dict(run_one(entry, directory))
        _write_row(directory, entry, row)
        rows[entry.name] = row
        report()
    return [rows[n] for n in names]
