"""Seed 000 export check: latency per image and Dice drift of the MA-Net liver / tumour networks.

For a finished ``maa_spect_liver`` run, converts ``<run>/export/{liver,tumour}/model.keras`` to TFLite
float32 / float16 / int8 (:func:`tfmedseg.export.tflite.convert_to_tflite`, int8 calibrated on the
run's representative inputs) and, on the first test patient's slices that contain the target
(re-prepared from ``--data-dir`` exactly as the run did), prints per model and runtime: milliseconds
per image at batch 1 (median of ``--reps`` after warm-up, 1 thread), the Dice of the foreground
against the reference masks, and its drift from Keras -- beside the seed's Table 17 seconds per
image (GPU, whole test set).

Usage:
    PYTHONPATH=. python benchmarks/bench_maa_export.py --run runs/maa_spect_liver --data-dir <phantoms>
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import tfmedseg  # noqa: F401  (oneDNN before TensorFlow)


def _dice(a, b) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def _median_ms(fn, x, reps: int) -> float:
    for i in range(2):
        fn(x[i % len(x)][None])
    times = []
    for i in range(reps):
        start = time.perf_counter()
        fn(x[i % len(x)][None])
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args(argv)


    from tfmedseg.clinical.maa_tables import SEED_TABLE_17_SECONDS
    from tfmedseg.config import load_config
    from tfmedseg.data.folds import contiguous_fold
    from tfmedseg.datasets import load_dataset
    from tfmedseg.experiments.maa_spect_liver import MaaSpectConfig
    from tfmedseg.export.run_dir import load_for_export
    from tfmedseg.export.tflite import QUANTIZATIONS, TFLiteRunner, convert_to_tflite
    from tfmedseg.preprocessing.maa_inputs import prepare_maa_inputs

    cfg = load_config(MaaSpectConfig, args.run / "config.yaml")
    cases = load_dataset("maa_spect", args.data_dir)
    cases = cases[: cfg.max_cases] if cfg.max_cases else cases
    case = cases[contiguous_fold(len(cases), int(cfg.folds[-1]))[1][0]]
    inputs = prepare_maa_inputs(case.images["ct"].array, case.meta["display"], np.asarray(case.label.array), **cfg.input_kwargs())
    data = {"liver": (np.repeat(inputs.ct, cfg.ct_channels, -1), inputs.ct_masks[..., 0]),
            "tumour": (inputs.display, inputs.display_masks[..., 1])}
    print(f"patient {case.case_id} (fold {cfg.folds[-1]} test), {args.reps} runs per runtime, batch 1, 1 thread\n")
    print("| model | runtime | ms / image | Dice vs reference | drift vs Keras | seed Table 17 (s / image, GPU) |")
    print("|---|---|---:|---:|---:|---:|")
    results = {}
    for stage in ("liver", "tumour"):
        bundle = load_for_export(args.run / "export" / stage)
        model = bundle.model
        x, y = data[stage]
        keep = y.reshape(len(y), -1).any(1)
        x, y = x[keep].astype(np.float32), y[keep] > 0
        import tensorflow as tf

        graph = tf.function(lambda b, m=model: m(b, training=False), reduce_retracing=True)
        runtimes = {"keras": lambda b, g=graph: np.asarray(g(tf.constant(b)))}
        calib = bundle.representative if bundle.representative is not None else x[:8]
        for q in QUANTIZATIONS:
            feed = (lambda c=calib: (s[None] for s in c)) if q == "int8" else None
            runtimes[f"tflite {q}"] = TFLiteRunner(convert_to_tflite(model, q, feed), num_threads=1)
        keras_dice = None
        for name, fn in runtimes.items():
            probs = np.concatenate([np.asarray(fn(x[i:i + 1])) for i in range(len(x))])[..., 0] > 0.5
            dice = _dice(probs, y)
            keras_dice = dice if name == "keras" else keras_dice
            ms = _median_ms(fn, x, args.reps)
            results[f"{stage}/{name}"] = {"ms_per_image": ms, "dice": dice, "drift": keras_dice - dice}
            print(f"| {stage} | {name} | {ms:.2f} | {dice:.4f} | {keras_dice - dice:+.4f} | {SEED_TABLE_17_SECONDS[stage]:.4f} |")
    (args.run / "export" / "latency_dice_drift.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
