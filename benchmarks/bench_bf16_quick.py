"""The seed-002 quick run in float32 and in ``mixed_bfloat16``: Dice and time per slice side by side (issue 18, item 2).

Runs ``python -m tfmedseg.experiments.liver_ct_2d3d --config quick`` once per precision, each into its own
folder under ``--workdir`` (``<workdir>/<precision>/run`` and ``<workdir>/<precision>/saved_models``), with both
stages' ``train.mixed_precision`` set by ``--set``; same seed, same phantoms (one shared ``--cache-dir``), one
after the other in this process' environment. Then reads each run's ``summary.json`` and prints:

- the cascade's liver and tumour Dice per case, stage 2's tumour Dice on the reference liver, and the
  difference of each precision from the first one (goal: within 0.01 of float32); then, from ``per_case.csv``,
  the cascade's tumour Dice over the cases with tumour and the tumour-free cases given a false positive (such a
  case scores 0 instead of 1, which moves the per-case mean by 1 / cases: 0.17 with the quick run's six);
- time per output slice: a training iteration, a prediction batch (Tables 4.4/4.5 style, first step
  excluded), the whole fit, and the cascade's wall time per slice; and each run's own wall time.

A precision named again (``--precisions float32,mixed_bfloat16,float32``) runs again into
``<workdir>/<precision>-run<k>``: the same seed and data a second time, so the table shows how far two runs of
the same precision land apart on this machine (TensorFlow's CPU kernels are not bit-reproducible across runs).

A finished run is not run again (the experiment command says it is done and exits 0), so a second call
only prints the table; each run's wall time is the one this benchmark measured when the run finished
(``<workdir>/<label>/bench_wall.json``; "untimed" for a run finished outside it; a run resumed after a stop
counts only its last part). Whether this CPU computes
bfloat16 natively is printed first (``cpu_has_bf16``): without ``avx512_bf16`` / AMX, TensorFlow
emulates bfloat16 (Eigen; oneDNN logs "supports DT_BFLOAT16 only on platforms with AVX-512"), so the
bfloat16 times there say nothing about a bf16 CPU; the Dice comparison holds on any CPU.

Run (from the checkout): ``PYTHONPATH=. python benchmarks/bench_bf16_quick.py --workdir DIR [--precisions float32,mixed_bfloat16]
[--seed 0] [--data-dir LiTS]`` (about 20 + 40 minutes on the 2-core AVX2 box).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

EXPERIMENT = "tfmedseg.experiments.liver_ct_2d3d"
DICE_KEYS = (("liver Dice/case", "cascade liver Dice"), ("tumour Dice/case", "cascade tumour Dice"),
             ("stage 2 tumour Dice/case", "stage 2 tumour Dice"))
TIME_KEYS = (("iteration_seconds_per_slice", "train iteration s/slice"),
             ("predict_batch_seconds_per_slice", "predict batch s/slice"),
             ("train_seconds_per_slice", "fit wall s/slice"),
             ("predict_seconds_per_slice", "cascade wall s/slice"))


def cascade_tumour_readings(per_case_csv: Path) -> tuple[float, int, int]:
    """From a run's ``per_case.csv`` (cascade rows): the mean tumour Dice over the cases with tumour, and how
    many of the tumour-free cases got a false positive, of how many. A tumour-free case scores Dice 1 without
    a false positive and 0 with one, so one stray voxel moves the per-case mean by 1 / cases."""
    with open(per_case_csv, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["evaluation"] == "cascade"]
    with_tumour = [float(row["tumour_dice"]) for row in rows if float(row["tumour_ref"]) > 0]
    free = [row for row in rows if float(row["tumour_ref"]) == 0]
    false_positive = sum(float(row["tumour_pred"]) > 0 for row in free)
    return (sum(with_tumour) / len(with_tumour) if with_tumour else float("nan")), false_positive, len(free)


def dice_row(name: str, values: list[float]) -> str:
    """A table row: the Dice of each run, then each later run's difference from the first (goal: within 0.01)."""
    diffs = [f"{v - values[0]:+.4f}" + (" (within 0.01)" if abs(v - values[0]) <= 0.01 else "") for v in values[1:]]
    return f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + " | " + " | ".join(diffs) + " |"


def run_labels(precisions: list[str]) -> list[str]:
    """One folder name per run: the precision, ``<precision>-run<k>`` for its k-th run (k >= 2)."""
    labels = []
    for index, precision in enumerate(precisions):
        count = precisions[:index + 1].count(precision)
        labels.append(precision if count == 1 else f"{precision}-run{count}")
    return labels


def experiment_command(precision: str, workdir: Path, cache_dir: Path, seed: int, data_dir: Path | None,
                       label: str | None = None) -> list[str]:
    """The experiment's command line for one precision (both stages trained in ``precision``), into
    ``workdir / label`` (default: the precision's name)."""
    folder = workdir / (label or precision)
    command = [sys.executable, "-m", EXPERIMENT, "--config", "quick", "--seed", str(seed),
               "--output-dir", str(folder / "run"), "--cache-dir", str(cache_dir),
               "--set", f"export_dir={folder / 'saved_models'}",
               "--set", f"liver.train.mixed_precision={precision}",
               "--set", f"tumour.train.mixed_precision={precision}"]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return command


def run_once(precision: str, label: str, args: argparse.Namespace) -> float | None:
    """Run (or resume) one quick run; the wall seconds of the call that finished it (kept in
    ``<label>/bench_wall.json``), None where it finished before this benchmark timed it."""
    run_dir = args.workdir / label / "run"
    wall_file = args.workdir / label / "bench_wall.json"
    finished = (run_dir / "run_complete.json").is_file()
    command = experiment_command(precision, args.workdir, args.workdir / "cache", args.seed, args.data_dir, label)
    print(f"[{label}] {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    returncode = subprocess.call(command)
    if returncode != 0:
        sys.exit(f"bench_bf16_quick: the {label} run exited {returncode}; rerun this command to resume it")
    if finished:
        return json.loads(wall_file.read_text())["wall_seconds"] if wall_file.is_file() else None
    wall = time.perf_counter() - start
    wall_file.write_text(json.dumps({"wall_seconds": wall}))
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="folder for the runs (created; reruns resume)")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16",
                        help="comma-separated Keras policies; the first is the reference (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="a LiTS folder; default: the phantoms")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    labels = run_labels(precisions)

    from tfmedseg.training.strategy import cpu_has_bf16

    print(f"CPU computes bfloat16 natively (avx512_bf16/AMX): {cpu_has_bf16()}; "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(tfmedseg sets 1)')}", flush=True)
    walls = {}
    for precision, label in zip(precisions, labels):
        load = os.getloadavg()[0]
        walls[label] = run_once(precision, label, args)
        print(f"[{label}] done; load {load:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)

    summaries = {label: json.loads((args.workdir / label / "run" / "summary.json").read_text()) for label in labels}
    reference = labels[0]
    print("\n| reading | " + " | ".join(labels) + " | " +
          " | ".join(f"{label} - {reference}" for label in labels[1:]) + " |")
    print("|---" * (2 * len(labels)) + "|")
    for key, name in DICE_KEYS:
        print(dice_row(name, [summaries[label]["summary"][key] for label in labels]))
    readings = {label: cascade_tumour_readings(args.workdir / label / "run" / "per_case.csv") for label in labels}
    print(dice_row("cascade tumour Dice, cases with tumour", [readings[label][0] for label in labels]))
    print("| tumour-free cases with a false positive | "
          + " | ".join(f"{readings[label][1]} of {readings[label][2]}" for label in labels) + " |" + " |" * (len(labels) - 1))
    for stage in ("liver", "tumour"):
        for key, name in TIME_KEYS:
            values = [summaries[label]["timings"][stage][key] for label in labels]
            ratios = [f"{v / values[0]:.2f}x" for v in values[1:]]
            print(f"| {stage} {name} | " + " | ".join(f"{v:.4f}" for v in values) + " | " + " | ".join(ratios) + " |")
    print("| run wall s | " + " | ".join("untimed" if walls[label] is None else f"{walls[label]:.0f}" for label in labels)
          + " |" + " |" * (len(labels) - 1))


if __name__ == "__main__":
    main()
