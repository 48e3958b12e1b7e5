"""The options every ``python -m tfmedseg.experiments.<name>`` command shares, and config names.

``--config NAME|FILE`` resolves a name (``quick``: ``<experiment>_quick.yaml``; ``paper``:
``<experiment>.yaml``; ``<x>``: ``<experiment>_<x>.yaml``), a file under ``tfmedseg/configs/`` or a
path. The YAML configs ship inside the package (package data), so names resolve the same from a
source checkout, an editable install or an installed wheel. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tfmedseg.errors import ConfigError
from tfmedseg.experiments.rundir import RERUN_HELP
from tfmedseg.logs import add_verbosity_options

__all__ = ["CONFIG_DIR", "experiment_name", "available_configs", "build_parser", "resolve_config_path",
           "check_options", "prepare_dir"]

#: The YAML configs shipped with the package (``experiments/`` in a source checkout links here).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def experiment_name(prog: str) -> str:
    """``tfmedseg.experiments.liver_ct_2d3d`` -> ``liver_ct_2d3d``."""
    return prog.rsplit(".", 1)[-1]


def available_configs(experiment: str, config_dir: Path | None = None) -> dict[str, Path]:
    """The config names of ``experiment``, sorted: ``paper`` -> ``<experiment>.yaml``, ``quick`` ->
    ``<experiment>_quick.yaml``, ``<x>`` -> ``<experiment>_<x>.yaml`` (files in ``tfmedseg/configs/``)."""
    config_dir = CONFIG_DIR if config_dir is None else config_dir
    found: dict[str, Path] = {}
    if not config_dir.is_dir():
        return found
    for path in sorted(config_dir.glob(f"{experiment}*.yaml")):
        if path.stem == experiment:
            found["paper"] = path
        elif path.stem.startswith(experiment + "_"):
            found[path.stem[len(experiment) + 1:]] = path
    return dict(sorted(found.items()))


def _config_display_name(experiment: str, config: str | os.PathLike | None) -> str:
    """The name under which ``config`` (a name or a file name) appears in ``--help``."""
    if config is None:
        return "the config defaults"
    for name, path in available_configs(experiment).items():
        if str(config) in (name, path.name):
            return name
    return str(config)


def _configs_epilog(experiment: str) -> str:
    names = available_configs(experiment)
    if not names:
        return RERUN_HELP
    width = max(len(n) for n in names)
    lines = [f"  {name:<{width}}  {path.name}" for name, path in names.items()]
    return ("configs (--config NAME; also any file under tfmedseg/configs/, or a path):\n" + "\n".join(lines)
            + "\n\n" + RERUN_HELP)


def build_parser(prog: str, description: str, default_config: str | os.PathLike | None) -> argparse.ArgumentParser:
    """The shared argument parser; experiments may add their own options to it."""
    experiment = experiment_name(prog)
    shown = prog if " " in prog else f"python -m {prog}"  # as the other commands' usage lines: the command to type
    parser = argparse.ArgumentParser(prog=shown, description=description, epilog=_configs_epilog(experiment),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, metavar="NAME|FILE",
                        help=f"config name (listed below) or YAML file "
                             f"(default: {_config_display_name(experiment, default_config)})")
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
    add_verbosity_options(parser)
    return parser


def resolve_config_path(config: str | os.PathLike | None, experiment: str | None = None) -> Path | None:
    """The YAML file ``--config`` names: an existing path; else a config name of ``experiment``
    (:func:`available_configs`: ``quick``, ``paper``, ...); else a file under ``tfmedseg/configs/``
    (``liver_ct_2d3d_quick.yaml`` or ``liver_ct_2d3d_quick``).

    Raises:
        ConfigError: Nothing found (the message lists the experiment's config names), or the path
            is not a file.
    """
    if config is None:
        return None
    path = Path(config)
    if path.is_file():
        return path
    text = str(config)
    names = available_configs(experiment) if experiment else {}
    if text in names:
        return names[text]
    if path.name == text:  # a bare name: look it up among the shipped configs
        for candidate in (CONFIG_DIR / text, CONFIG_DIR / f"{text}.yaml"):
            if candidate.is_file():
                return candidate
    if path.exists():
        raise ConfigError("config is not a file", path=path)
    hint = f" (config names: {', '.join(names)})" if names else ""
    raise ConfigError(f"config file does not exist and is not a config name{hint}", path=path)


def check_options(args: argparse.Namespace) -> None:
    """The shared options' values (ConfigError naming the option)."""
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"must lie in [0, 2**32), got {args.seed}", path="--seed")
    if args.phantom_cases is not None and not 1 <= args.phantom_cases <= 10000:
        raise ConfigError(f"must lie in [1, 10000], got {args.phantom_cases}", path="--phantom-cases")
    for option, value in (("--output-dir", args.output_dir), ("--cache-dir", args.cache_dir)):
        if value is not None and value.exists() and not value.is_dir():
            raise ConfigError(f"{value} is a file, not a directory", path=option)
    if args.data_dir is not None and args.output_dir is not None:
        from tfmedseg.io._atomic import check_output_not_input
        from tfmedseg.errors import InvalidInputError

        try:
            check_output_not_input(args.output_dir, [args.data_dir], key="--output-dir")
        except InvalidInputError as exc:
            raise ConfigError(exc.reason, path="--output-dir") from exc


def prepare_dir(path: Path, option: str) -> None:
    """Create a directory named by ``option`` (ConfigError when it cannot be created or written)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(f"cannot create {path}: a file is in the way", path=option) from exc
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror or exc}", path=option) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{path} is not writable", path=option)
