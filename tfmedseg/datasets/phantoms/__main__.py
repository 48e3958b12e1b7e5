"""Command line: ``python -m tfmedseg.datasets.phantoms <dataset> <out_dir> --cases N --seed S``.

Writes ``N`` phantom cases of ``<dataset>`` (one of
:data:`tfmedseg.datasets.phantoms.PHANTOM_DATASETS`) into ``<out_dir>`` in the dataset's real
on-disk layout. ``out_dir`` must not exist or be empty; with ``--reuse`` an existing completed
set with the same arguments is kept (:func:`~tfmedseg.datasets.phantoms.ensure_phantoms`; a set made
with or without ``--reuse``), and so is one from the same command again.
"""

from __future__ import annotations

import argparse
import sys

from tfmedseg.datasets.phantoms import MANIFEST_NAME, PHANTOM_DATASETS, ensure_phantoms, generate, manifest_matches
from tfmedseg.command import report_user_errors
from tfmedseg.errors import ConfigError
from tfmedseg.logs import add_verbosity_options, configure_logging

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m tfmedseg.datasets.phantoms",
        description="Generate synthetic phantom cases in a dataset's real on-disk layout.",
    )
    parser.add_argument("dataset", choices=PHANTOM_DATASETS, help="dataset layout to write")
    parser.add_argument("out_dir", help="output directory (must not exist or be empty; one holding the set of these "
                        "arguments is left as it is)")
    parser.add_argument("--cases", type=int, default=4, help="number of cases (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep an existing completed phantom set with the same arguments")
    add_verbosity_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 2 bad arguments or output directory, 130 / 143 stopped by
    Ctrl-C / SIGTERM: nothing partial is left)."""
    args = build_parser().parse_args(argv)
    configure_logging(args)

    def go() -> None:
        if args.cases < 1:  # the options' names, before the library's own check (which names its arguments)
            raise ConfigError(f"must be a positive integer, got {args.cases}", path="--cases")
        if args.seed < 0:
            raise ConfigError(f"must be a non-negative integer, got {args.seed}", path="--seed")
        if manifest_matches(args.out_dir, args.dataset, args.cases, args.seed):  # a rerun, with or without --reuse
            print(f"{args.out_dir} holds the {args.dataset} phantom set of these arguments already ({MANIFEST_NAME}); "
                  "nothing to do")
            return
        if args.reuse:
            root = ensure_phantoms(args.dataset, args.out_dir, args.cases, args.seed)
        else:
            root = generate(args.dataset, args.out_dir, cases=args.cases, seed=args.seed)
        print(f"wrote {args.cases} {args.dataset} phantom case(s) to {root}")

    return report_user_errors(go)


if __name__ == "__main__":
    sys.exit(main())
