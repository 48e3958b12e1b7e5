"""The run-directory convention of the experiments: what a rerun into the same ``--output-dir`` does.

A killed run resumes from its last checkpoint (each stage's ``backup/``); a finished run
(:data:`RUN_COMPLETE` there, written last) with the same config, seed and data says so and exits 0;
a finished run with other settings is refused; a first run refused or stopped before any stage wrote
leaves no run folder behind (:func:`remove_unstarted`). :data:`LOG_NAME` is the run's log file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tfmedseg.errors import ConfigError

__all__ = ["RUN_COMPLETE", "RERUN_HELP", "LOG_NAME", "RunComplete", "run_key", "finished", "mark_complete"]

#: Written into the run directory when a run finished; a rerun with the same settings stops early.
RUN_COMPLETE = "run_complete.json"

RERUN_HELP = (
    "rerunning into the same --output-dir: a killed run resumes from its last checkpoint (backup/ of each stage);\n"
    f"a finished run ({RUN_COMPLETE} there) with the same config, seed and data says so and exits 0 (its results\n"
    "are there); a finished run with other settings is refused: choose a new --output-dir for a new run."
)

#: The run's log file in the run directory (INFO and up, appended by every run).
LOG_NAME = "log.txt"


class RunComplete(Exception):
    """Raised by :func:`parse_experiment_args` when ``--output-dir`` holds a finished run of these settings."""

    def __init__(self, output_dir: Path):
        super().__init__(str(output_dir))
        self.output_dir = output_dir
        try:
            self.info = json.loads((output_dir / RUN_COMPLETE).read_text())
        except (OSError, ValueError):
            self.info = {}


def run_key(config: Any, args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs the same: config, seed, data (phantom cases or --data-dir)."""
    from tfmedseg.config import config_hash

    data = str(Path(args.data_dir).resolve()) if args.data_dir is not None else f"phantoms:{args.phantom_cases}"
    return {"config_hash": config_hash(config), "seed": int(args.seed), "data": data}


#: How a user knows the parts of :func:`run_key` (the config by its resolved values, not its hash).
_SETTING_NAMES = {"config_hash": "config (--config / --set)", "seed": "--seed", "data": "data (--data-dir / --phantom-cases)"}


def finished(output_dir: Path, key: dict[str, Any]) -> bool:
    """Whether ``output_dir`` holds a finished run of ``key`` (ConfigError: one of other settings)."""
    marker = output_dir / RUN_COMPLETE
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
        previous = {k: info[k] for k in key}
    except (OSError, ValueError, KeyError, TypeError):
        return False  # a damaged marker: run (resuming) again
    if previous != key:
        differs = ", ".join(_SETTING_NAMES.get(k, k) for k in key if previous[k] != key[k])
        raise ConfigError(f"holds a finished run with other settings (another {differs}); choose a new --output-dir for a "
                          "new run", path=output_dir)
    return True


def mark_complete(ctx) -> None:
    """Write :data:`RUN_COMPLETE` (the run key and the time) atomically: the run is finished."""
    import datetime

    from tfmedseg.io._atomic import atomic_file

    info = {**(ctx.run_key or {}), "completed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with atomic_file(ctx.output_dir / RUN_COMPLETE, ".json") as tmp:
        Path(tmp).write_text(json.dumps(info, indent=1) + "\n")


#: What a run folder holds before its experiment has written anything of its own.
_STARTED_ONLY = {"config.yaml", LOG_NAME}


def remove_unstarted(folder: Path) -> None:
    """Remove ``folder``, a run folder this command made, while it holds nothing but the resolved config
    and the log (or nothing): a first run refused (bad data, a bad value) or stopped before any stage
    wrote leaves no partial output. A folder with anything else in it, or a link, stays."""
    if folder.is_symlink() or not folder.is_dir():
        return
    entries = list(folder.iterdir())
    if all(p.name in _STARTED_ONLY and p.is_file() and not p.is_symlink() for p in entries):
        for p in entries:
            p.unlink()
        folder.rmdir()
