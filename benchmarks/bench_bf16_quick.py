"""The seed-002 quick run in float32 and in ``mixed_bfloat16``: Dice and time per slice side by side (issue 18, item 2).

Runs ``python -m tfmedseg.experiments.liver_ct_2d3d --config quick`` once per precision, each into its own
folder under ``--workdir`` (``<workdir>/<precision>/run`` and ``<workdir>/<precision>/saved_models``), with both
stages' ``train.mixed_precision`` set by ``--set``; same seed, same phantoms (one shared ``--cache-dir``), one
after the other in this process' environment. Then reads each run's ``summary.json`` and prints:

- the cascade's liver and tumour Dice per case, stage 2's tumour Dice on the reference liver, and the
  difference of each precision from the first one (goal: within 0.01 of float32);
- time per output slice: a training iteration, a prediction batch (Tables 4.4/4.5 style, first step
  excluded), the whole fit, and the cascade's wall time per slice; and each run's own wall time.

A finished run is not run again (the experiment command says it is done and exits 0), so a second call
only prints the table; the wall time of such a run then reads "resumed". Whether this CPU computes
bfloat16 natively is printed first (``cpu_has_bf16``): without ``avx512_bf16`` / AMX, TensorFlow
emulates bfloat16 (Eigen; oneDNN logs "supports DT_BFLOAT16 only on platforms with AVX-512"), so the
bfloat16 times there say nothing about a bf16 CPU; the Dice comparison holds on any CPU.

Run: ``PYTHONPATH=.. python bench_bf16_quick.py --workdir DIR [--precisions float32,mixed_bfloat16]
[--seed 0] [--data-dir LiTS]`` (about 20 + 40 minutes on the 2-core AVX2 box).
"""

from __future__ import annotations

import argparse
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


def experiment_command(precision: str, workdir: Path, cache_dir: Path, seed: int, data_dir: Path | None) -> list[str]:
    """The experiment's command line for one precision (both stages trained in ``precision``)."""
    folder = workdir / precision
    command = [sys.executable, "-m", EXPERIMENT, "--config", "quick", "--seed", str(seed),
               "--output-dir", str(folder / "run"), "--cache-dir", str(cache_dir),
               "--set", f"export_dir={folder / 'saved_models'}",
               "--set", f"liver.train.mixed_precision={precision}",
               "--set", f"tumour.train.mixed_precision={precision}"]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return command


def run_once(precision: str, args: argparse.Namespace) -> float | None:
    """Run (or resume) one precision's quick run; its wall seconds, None where it had finished already."""
    run_dir = args.workdir / precision / "run"
    finished = (run_dir / "run_complete.json").is_file()
    command = experiment_command(precision, args.workdir, args.workdir / "cache", args.seed, args.data_dir)
    print(f"[{precision}] {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    returncode = subprocess.call(command)
    if returncode != 0:
        sys.exit(f"bench_bf16_quick: the {precision} run exited {returncode}; rerun this command to resume it")
    return None if finished else time.perf_counter() - start


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

    from tfmedseg.training.strategy import cpu_has_bf16

    print(f"CPU computes bfloat16 natively (avx512_bf16/AMX): {cpu_has_bf16()}; "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(tfmedseg sets 1)')}", flush=True)
    walls = {}
    for precision in precisions:
        load = os.getloadavg()[0]
        walls[precision] = run_once(precision, args)
        print(f"[{precision}] done; load {load:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)

    summaries = {p: json.loads((args.workdir / p / "run" / "summary.json").read_text()) for p in precisions}
    reference = precisions[0]
    print("\n| reading | " + " | ".join(precisions) + " | " +
          " | ".join(f"{p} - {reference}" for p in precisions[1:]) + " |")
    print("|---" * (1 + 2 * len(precisions) - 1) + "|")
    for key, label in DICE_KEYS:
        values = [summaries[p]["summary"][key] for p in precisions]
        diffs = [f"{v - values[0]:+.4f}" + (" (within 0.01)" if abs(v - values[0]) <= 0.01 else "") for v in values[1:]]
        print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + " | " + " | ".join(diffs) + " |")
    for stage in ("liver", "tumour"):
        for key, label in TIME_KEYS:
            values = [summaries[p]["timings"][stage][key] for p in precisions]
            ratios = [f"{v / values[0]:.2f}x" for v in values[1:]]
            print(f"| {stage} {label} | " + " | ".join(f"{v:.4f}" for v in values) + " | " + " | ".join(ratios) + " |")
    print("| run wall s | " + " | ".join("resumed" if walls[p] is None else f"{walls[p]:.0f}" for p in precisions)
          + " |" + " |" * (len(precisions) - 1))


if __name__ == "__main__":
    main()
