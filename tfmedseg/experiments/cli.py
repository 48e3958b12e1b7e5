"""The command line shared by every ``python -m tfmedseg.experiments.<name>`` module.

Each experiment module declares its config dataclass, its default config and its phantom
dataset, and calls :func:`experiment_main`. The user gets the same options everywhere:

``--config NAME|FILE`` the YAML config: a name (``quick``: the phantom config ``<experiment>_quick.yaml``;
                       ``paper``: the seed's settings ``<experiment>.yaml``; ``<x>``:
                       ``<experiment>_<x>.yaml``; ``--help`` lists them), a file name under
                       ``tfmedseg/configs/``, or a path (default: ``quick``)
``--set KEY=VALUE``    override one config field (repeatable), e.g. ``--set train.epochs=2``
``--data-dir DIR``     dataset root in the dataset's real on-disk layout; when absent, phantoms are
                       generated (once) into ``--cache-dir`` and used
``--output-dir DIR``   where logs, checkpoints, reports and the resolved config go
``--seed N``           global random seed (numpy, Python, TensorFlow)
``-v`` / ``-q``        more output (debug lines, TensorFlow's start-up logging) / less (warnings only)

The YAML configs ship inside the package (``tfmedseg/configs/``, package data), so names resolve
the same from a source checkout, an editable install or an installed wheel.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import json
import os
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tfmedseg.config import load_config, save_config
from tfmedseg.command import report_user_errors
from tfmedseg.errors import ConfigError, DatasetLayoutError
from tfmedseg.logs import add_file_log, add_verbosity_options, configure_logging

__all__ = ["ExperimentContext", "build_parser", "parse_experiment_args", "experiment_main", "make_main",
           "default_cache_dir", "set_global_seed", "available_configs", "resolve_config_path", "experiment_name",
           "describe_outputs", "print_outputs", "CONFIG_DIR"]

#: The YAML configs shipped with the package (``experiments/`` in a source checkout links here).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclasses.dataclass
class ExperimentContext:
    """Everything an experiment's ``run`` needs besides its code.

    Attributes:
        config: The resolved config dataclass (defaults <- YAML <- ``--set``).
        data_dir: Dataset root (real data or generated phantoms).
        output_dir: Run directory; ``config.yaml`` is already written there.
        seed: The global seed, already applied.
        used_phantoms: True when ``data_dir`` holds generated phantoms.
        exports: Models the run exported outside ``output_dir`` (SavedModel version directories);
            the experiment appends them and the command line names them at the end.
        run_key: Config hash, seed and data of this run (recorded in ``run_complete.json``).
    """

    config: Any
    data_dir: Path
    output_dir: Path
    seed: int
    used_phantoms: bool
    exports: list = dataclasses.field(default_factory=list)
    run_key: dict | None = None

    def exported(self, path, what: str = "") -> None:
        """Record an exported model (named at the end of the run) and log it."""
        self.exports.append(Path(path))
        logging.getLogger("tfmedseg.experiments").info("exported %s to %s", what or "a model", path)


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


#: Written into the run directory when a run finished; a rerun with the same settings stops early.
RUN_COMPLETE = "run_complete.json"

RERUN_HELP = (
    "rerunning into the same --output-dir: a killed run resumes from its last checkpoint (backup/ of each stage);\n"
    f"a finished run ({RUN_COMPLETE} there) with the same config, seed and data says so and exits 0 (its results\n"
    "are there); a finished run with other settings is refused: choose a new --output-dir for a new run."
)


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
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=_configs_epilog(experiment),
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
        default_config: Config used when ``--config`` is absent: a name (``"quick"``) or a file name
            under ``tfmedseg/configs/``.
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
    configure_logging(args)
    config_path = resolve_config_path(args.config if args.config is not None else default_config, experiment_name(prog))
    config = load_config(config_cls, config_path, args.overrides)
    _check_options(args)
    output_dir = args.output_dir or Path("runs") / experiment_name(prog)
    run_key = _run_key(config, args)
    if _finished(output_dir, run_key):
        raise RunComplete(output_dir)
    _prepare_dir(output_dir, "--output-dir")  # before the (slow) phantoms: an unwritable folder fails now
    set_global_seed(args.seed)
    used_phantoms = args.data_dir is None
    if used_phantoms:
        if prepare_phantoms is None:
            from tfmedseg.datasets.phantoms import ensure_phantoms as prepare_phantoms
        cases = args.phantom_cases or default_phantom_cases
        cache = args.cache_dir or default_cache_dir()
        _prepare_dir(cache, "--cache-dir")
        data_dir = prepare_phantoms(phantom_dataset, cache / "phantoms" / f"{phantom_dataset}-n{cases}-s{args.seed}", cases, args.seed)
    else:
        data_dir = args.data_dir
        if not data_dir.is_dir():
            raise DatasetLayoutError("--data-dir is not a directory", path=data_dir)
    save_config(config, output_dir / "config.yaml")
    return ExperimentContext(config, Path(data_dir), output_dir, args.seed, used_phantoms, run_key=run_key)


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
    handlers: list = []

    def go() -> None:
        try:
            ctx = parse_experiment_args(argv, **parse_kwargs)
        except RunComplete as done:
            print(f"{done.output_dir} holds a finished run (completed {done.info.get('completed', '?')}); nothing to do. "
                  f"Its results are there; choose a new --output-dir to train again.")
            return
        handlers.append(add_file_log(ctx.output_dir / LOG_NAME))
        run(ctx)
        print_outputs(ctx)
        _mark_complete(ctx)  # last: a run killed before this line resumes

    try:
        return report_user_errors(go)
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()


#: The run's log file in the run directory (INFO and up, appended by every run).
LOG_NAME = "log.txt"

#: Top-level files of a run directory named in the final output, in this order when present.
MAIN_FILES = ("summary.md", "summary.json", "per_case.csv", "montage.png", "config.yaml", LOG_NAME)


def describe_outputs(ctx: ExperimentContext) -> list[str]:
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


def print_outputs(ctx: ExperimentContext) -> None:
    """The command line's last lines: where the results went (see :func:`describe_outputs`)."""
    print("\n" + "\n".join(describe_outputs(ctx)))



def make_main(run: Callable[[ExperimentContext], Any], **parse_kwargs: Any) -> Callable[[list[str] | None], int]:
    """An experiment module's ``main(argv=None) -> exit code``: :func:`experiment_main` bound to its
    ``run`` and its :func:`parse_experiment_args` keywords (``prog``, ``description``, ``config_cls``,
    ``default_config``, ``phantom_dataset``, ``default_phantom_cases``)."""

    def main(argv: list[str] | None = None) -> int:
        """Command-line entry point; returns the exit code."""
        return experiment_main(argv, run, **parse_kwargs)

    return main


class RunComplete(Exception):
    """Raised by :func:`parse_experiment_args` when ``--output-dir`` holds a finished run of these settings."""

    def __init__(self, output_dir: Path):
        super().__init__(str(output_dir))
        self.output_dir = output_dir
        try:
            self.info = json.loads((output_dir / RUN_COMPLETE).read_text())
        except (OSError, ValueError):
            self.info = {}


def _run_key(config: Any, args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs the same: config, seed, data (phantom cases or --data-dir)."""
    from tfmedseg.config import config_hash

    data = str(Path(args.data_dir).resolve()) if args.data_dir is not None else f"phantoms:{args.phantom_cases}"
    return {"config_hash": config_hash(config), "seed": int(args.seed), "data": data}


def _finished(output_dir: Path, key: dict[str, Any]) -> bool:
    marker = output_dir / RUN_COMPLETE
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
        previous = {k: info[k] for k in key}
    except (OSError, ValueError, KeyError, TypeError):
        return False  # a damaged marker: run (resuming) again
    if previous != key:
        differs = ", ".join(k for k in key if previous[k] != key[k])
        raise ConfigError(f"holds a finished run with other settings ({differs} differ); choose a new --output-dir for a new run",
                          path=output_dir)
    return True


def _mark_complete(ctx: ExperimentContext) -> None:
    import datetime

    from tfmedseg.io._atomic import atomic_file

    info = {**(ctx.run_key or {}), "completed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with atomic_file(ctx.output_dir / RUN_COMPLETE, ".json") as tmp:
        Path(tmp).write_text(json.dumps(info, indent=1) + "\n")


def _check_options(args: argparse.Namespace) -> None:
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


def _prepare_dir(path: Path, option: str) -> None:
    """Create a directory named by ``option`` (ConfigError when it cannot be created or written)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(f"cannot create {path}: a file is in the way", path=option) from exc
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror or exc}", path=option) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{path} is not writable", path=option)
