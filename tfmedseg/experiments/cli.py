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

The command line is made of :mod:`~tfmedseg.experiments.arguments` (the options, config names),
:mod:`~tfmedseg.experiments.rundir` (what a rerun into the same ``--output-dir`` does) and
:mod:`~tfmedseg.experiments.outputs` (the final listing of the results); this module puts them
together and re-exports their public names.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tfmedseg.command import report_user_errors
from tfmedseg.config import load_config, save_config
from tfmedseg.errors import DatasetLayoutError
from tfmedseg.experiments.arguments import (
    CONFIG_DIR,
    available_configs,
    build_parser,
    check_options,
    experiment_name,
    prepare_dir,
    resolve_config_path,
)
from tfmedseg.experiments.outputs import describe_outputs, print_outputs
from tfmedseg.experiments.rundir import (LOG_NAME, RUN_COMPLETE, RunComplete, finished, mark_complete, remove_unstarted,
                                         run_key)
from tfmedseg.logs import add_file_log, configure_logging

__all__ = ["ExperimentContext", "parse_experiment_args", "experiment_main", "make_main", "default_cache_dir",
           "set_global_seed",
           # re-exported from the modules this command line is made of
           "build_parser", "available_configs", "resolve_config_path", "experiment_name", "CONFIG_DIR",  # arguments
           "RUN_COMPLETE", "RunComplete", "LOG_NAME",  # rundir
           "describe_outputs", "print_outputs"]  # outputs

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
        created_output_dir: True when this command made ``output_dir`` (it did not exist before).
    """

    config: Any
    data_dir: Path
    output_dir: Path
    seed: int
    used_phantoms: bool
    exports: list = dataclasses.field(default_factory=list)
    run_key: dict | None = None
    created_output_dir: bool = False

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
    check_options(args)
    output_dir = args.output_dir or Path("runs") / experiment_name(prog)
    key = run_key(config, args)
    if finished(output_dir, key):
        raise RunComplete(output_dir)
    if args.data_dir is not None and not args.data_dir.is_dir():  # before the output folder is made
        raise DatasetLayoutError("--data-dir is not a directory", path=args.data_dir)
    from tfmedseg.training.stages import check_stage_settings

    check_stage_settings(config)  # every stage's names and numbers now, not when that stage starts (hours later)
    created = not output_dir.exists()
    prepare_dir(output_dir, "--output-dir")  # before the (slow) phantoms: an unwritable folder fails now
    set_global_seed(args.seed)
    used_phantoms = args.data_dir is None
    if used_phantoms:
        if prepare_phantoms is None:
            from tfmedseg.datasets.phantoms import ensure_phantoms as prepare_phantoms
        cases = args.phantom_cases or default_phantom_cases
        cache = args.cache_dir or default_cache_dir()
        prepare_dir(cache, "--cache-dir")
        try:
            data_dir = prepare_phantoms(phantom_dataset, cache / "phantoms" / f"{phantom_dataset}-n{cases}-s{args.seed}", cases,
                                        args.seed)
        except BaseException:  # stopped or refused while generating: the run folder made above is still empty
            if created:
                remove_unstarted(output_dir)
            raise
    else:
        data_dir = args.data_dir
    save_config(config, output_dir / "config.yaml")
    return ExperimentContext(config, Path(data_dir), output_dir, args.seed, used_phantoms, run_key=key,
                             created_output_dir=created)


def experiment_main(argv: list[str] | None, run: Callable[[ExperimentContext], Any], **parse_kwargs: Any) -> int:
    """The whole ``main`` of an experiment module: parse the shared options, ``run``, exit code.

    Args:
        argv: Command-line arguments (``None``: ``sys.argv[1:]``).
        run: The experiment, called with the :class:`ExperimentContext`.
        **parse_kwargs: Keyword arguments of :func:`parse_experiment_args` (``prog``,
            ``description``, ``config_cls``, ``default_config``, ``phantom_dataset``,
            ``default_phantom_cases``).

    Returns:
        0; 2 after a one-line ``error: ...`` message for a user error (bad config, data, model);
        130 (Ctrl-C) or 143 (SIGTERM) after a one-line ``interrupted ...`` message, naming the run
        directory whose checkpoints a rerun of the same command resumes from.
    """
    handlers: list = []
    started: list[ExperimentContext] = []

    def go() -> None:
        try:
            ctx = parse_experiment_args(argv, **parse_kwargs)
        except RunComplete as done:
            print(f"{done.output_dir} holds a finished run (completed {done.info.get('completed', '?')}); nothing to do. "
                  f"Its results are there; choose a new --output-dir to train again.")
            return
        started.append(ctx)
        handlers.append(add_file_log(ctx.output_dir / LOG_NAME))
        run(ctx)
        print_outputs(ctx)
        mark_complete(ctx)  # last: a run killed before this line resumes

    def interrupted() -> str:
        if not started:
            return "stopped before training; nothing partial was left: rerun the same command to start"
        return (f"progress is kept in {started[0].output_dir} (each stage's backup/ checkpoints, {LOG_NAME}); "
                "rerun the same command to resume")

    try:
        code = report_user_errors(go, interrupted)
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
    if code == 2 and started and started[0].created_output_dir:
        remove_unstarted(started[0].output_dir)  # a user error before any stage wrote: no partial output
    return code



def make_main(run: Callable[[ExperimentContext], Any], prog: str | None = None, config_cls: type | None = None,
              description: str | None = None, *, default_config: str | os.PathLike | None = "quick",
              **parse_kwargs: Any) -> Callable[[list[str] | None], int]:
    """An experiment module's ``main(argv=None) -> exit code``: :func:`experiment_main` bound to its
    ``run`` and its :func:`parse_experiment_args` arguments (``prog``, ``config_cls``, ``description``,
    ``phantom_dataset``, ``default_phantom_cases``; ``default_config`` defaults to the ``quick`` config).
    Without ``prog`` / ``description``: the dotted name of ``run``'s module (also under ``python -m``)
    and the first line of its docstring.

    Example (the end of an experiment module)::

        main = make_main(run, config_cls=MyConfig, phantom_dataset="lits", default_phantom_cases=6)
    """
    module = getattr(run, "__globals__", {})  # the defining module's namespace, also under runpy / python -m
    spec = module.get("__spec__")
    prog = prog or (spec.name if spec is not None else run.__module__)
    description = description or ((module.get("__doc__") or "").strip().splitlines() or [None])[0]
    kwargs = dict(parse_kwargs, default_config=default_config)
    kwargs.update({k: v for k, v in (("prog", prog), ("config_cls", config_cls), ("description", description)) if v is not None})

    def main(argv: list[str] | None = None) -> int:
        """Command-line entry point; returns the exit code."""
        return experiment_main(argv, run, **kwargs)

    return main
