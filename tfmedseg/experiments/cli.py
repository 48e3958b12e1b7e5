"""The command line shared by every ``python -m tfmedseg.experiments.<name>`` module.

Each experiment module declares its config dataclass, its default YAML config and its phantom
dataset, and calls :func:`parse_experiment_args`. The user gets the same options everywhere:

``--config FILE``      YAML file overriding the config defaults (default: the quick phantom config)
``--set KEY=VALUE``    override one config field (repeatable), e.g. ``--set train.epochs=2``
``--data-dir DIR``     dataset root in the dataset's real on-disk layout; when absent, phantoms are
                       generated (once) into ``--cache-dir`` and used
``--output-dir DIR``   where logs, checkpoints, reports and the resolved config go
``--seed N``           global random seed (numpy, Python, TensorFlow)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tfmedseg.config import load_config, save_config
from tfmedseg.errors import ConfigError, DatasetLayoutError, report_user_errors

__all__ = [
    "ExperimentContext",
    "build_parser",
    "parse_experiment_args",
    "experiment_main",
    "default_cache_dir",
    "set_global_seed",
]

#: Root of the repository's ``experiments/`` YAML configs (also looked up relative to the CWD).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "experiments"


@dataclasses.dataclass
class ExperimentContext:
    """Everything an experiment's ``run`` needs besides its code.

    Attributes:
        config: The resolved config dataclass (defaults <- YAML <- ``--set``).
        data_dir: Dataset root (real data or generated phantoms).
        output_dir: Run directory; ``config.yaml`` is already written there.
        seed: The global seed, already applied.
        used_phantoms: True when ``data_dir`` holds generated phantoms.
    """

    config: Any
    data_dir: Path
    output_dir: Path
    seed: int
    used_phantoms: bool


def default_cache_dir() -> Path:
    """``$TFMEDSEG_CACHE`` or ``~/.cache/tfmedseg``: where phantoms and preprocessed arrays go."""
    return Path(os.environ.get("TFMEDSEG_CACHE", Path.home() / ".cache" / "tfmedseg"))


def set_global_seed(seed: int) -> None:
    """Seed Python, numpy and (when imported) TensorFlow/Keras."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import keras

        keras.utils.set_random_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def build_parser(prog: str, description: str, default_config: str | os.PathLike | None) -> argparse.ArgumentParser:
    """The shared argument parser; experiments may add their own options to it."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, default=None,
                        help=f"YAML config file (default: {default_config})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, e.g. --set section.key=value (repeatable; see --config for the keys)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="dataset root in its real on-disk layout; default: generated phantoms")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="run directory (default: runs/<experiment>)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where phantoms are generated (default: $TFMEDSEG_CACHE or ~/.cache/tfmedseg)")
    parser.add_argument("--phantom-cases", type=int, default=None,
                        help="number of phantom cases to generate when --data-dir is absent")
    parser.add_argument("--seed", type=int, default=0, help="global random seed (default 0)")
    return parser


def resolve_config_path(path: str | os.PathLike | None) -> Path | None:
    """A config given by file name is looked up as given, then under the repo's ``experiments/``."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / path.name
    if candidate.is_file():
        return candidate
    raise ConfigError("config file does not exist", path=path)


def parse_experiment_args(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    config_cls: type,
    default_config: str | os.PathLike | None,
    phantom_dataset: str,
    default_phantom_cases: int,
    prepare_phantoms: Callable[[str, Path, int, int], Path] | None = None,
) -> ExperimentContext:
    """Parse the shared options, resolve the config, prepare the data and the output directory.

    Args:
        argv: Command-line arguments (``None``: ``sys.argv[1:]``).
        prog: Program name shown by ``--help``.
        description: One-paragraph description shown by ``--help``.
        config_cls: The experiment's config dataclass.
        default_config: YAML used when ``--config`` is absent (name under ``experiments/``).
        phantom_dataset: Phantom generator name (``"lits"``, ``"hecktor"``, ...).
        default_phantom_cases: Cases to generate when ``--data-dir`` is absent.
        prepare_phantoms: ``f(dataset, out_dir, cases, seed) -> root``; default
            :func:`tfmedseg.datasets.phantoms.ensure_phantoms`.

    Raises:
        ConfigError: Bad config file or override.
        DatasetLayoutError: ``--data-dir`` does not exist.
    """
    parser = build_parser(prog, description, default_config)
    args = parser.parse_args(argv)
    config_path = resolve_config_path(args.config if args.config is not None else default_config)
    config = load_config(config_cls, config_path, args.overrides)
    set_global_seed(args.seed)
    used_phantoms = args.data_dir is None
    if used_phantoms:
        if prepare_phantoms is None:
            from tfmedseg.datasets.phantoms import ensure_phantoms as prepare_phantoms
        cases = args.phantom_cases or default_phantom_cases
        cache = args.cache_dir or default_cache_dir()
        data_dir = prepare_phantoms(phantom_dataset, cache / "phantoms" / f"{phantom_dataset}-n{cases}-s{args.seed}", cases, args.seed)
    else:
        data_dir = args.data_dir
        if not data_dir.is_dir():
            raise DatasetLayoutError("--data-dir is not a directory", path=data_dir)
    output_dir = args.output_dir or Path("runs") / prog.rsplit(".", 1)[-1]
    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, output_dir / "config.yaml")
    return ExperimentContext(config, Path(data_dir), output_dir, args.seed, used_phantoms)


def experiment_main(argv: list[str] | None, run: Callable[[ExperimentContext], Any], **parse_kwargs: Any) -> int:
    """The whole ``main`` of an experiment module: parse the shared options, ``run``, exit code.

    Args:
        argv: Command-line arguments (``None``: ``sys.argv[1:]``).
        run: The experiment, called with the :class:`ExperimentContext`.
        **parse_kwargs: Keyword arguments of :func:`parse_experiment_args` (``prog``,
            ``description``, ``config_cls``, ``default_config``, ``phantom_dataset``,
            ``default_phantom_cases``).

    Returns:
        0, or 2 after a one-line ``error: ...`` message for a user error (bad config, data, model).
    """
    return report_user_errors(lambda: run(parse_experiment_args(argv, **parse_kwargs)))
