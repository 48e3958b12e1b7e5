"""Latency of exported segmentation models on constrained hardware (issue 9, Tables 4.4/4.5 style).

For each registry model: Keras ``tf.function`` float32 (the baseline), Keras with XLA
(``jit_compile=True``, for reference), the exported SavedModel's ``serving_default`` signature, and
TFLite float32 / float16 / full-integer int8 run with LiteRT (``ai-edge-litert``), at 1 and 2 CPU
threads. Latency is per 2D slice (batch 1; 2.5D input of 9 slices) or per 3D slab (batch 1; 8 slices
in, the middle 4 out). Each thread count runs in its own subprocess (TensorFlow fixes its thread
pools at start-up); the runtimes are timed round-robin in ``--rounds`` rounds of ``--reps`` runs
after warm-up, so a load burst on a shared machine hits all of them alike; the table gives the
mean and standard deviation of the round with the lowest mean ("min of means"), the median over
all runs, and ratios of min-of-means against Keras float32 measured in the same process.

Model preparation (SavedModel export, the three TFLite conversions) happens once per model in its
own subprocess; it also records the drift of each TFLite variant against Keras on windowed slices
of an abdominal CT phantom (the int8 representative dataset is 8 other phantom inputs): max and
mean ``|p_tflite - p_keras|`` and the Dice between the foreground (argmax > 0) masks. Weights are
untrained (seeded), so the Dice drift is indicative only: probabilities sit near 0.5 where a small
drift flips the argmax.

``--run DIR`` (repeatable) benchmarks a *trained* model instead: the run directory of an experiment
(``model.keras`` + ``representative.npz``, :func:`tfmedseg.export.run_dir.load_for_export`), e.g. the
seed-004 quick run's SE U-Net on 48^3 x 2 cubes. Its representative inputs (the run's validation
samples) are timed, calibrate int8 (as ``python -m tfmedseg.export`` does) and give the drift; with
the saved labels, each runtime's Dice against them ("Dice vs truth") is reported too. A PET/CT patch
model (2 channels) is exported with :func:`tfmedseg.export.petct.export_petct_savedmodel`, whose
``serving_default`` takes the z-scored cube as the generic one does.

Usage:
    python benchmarks/bench_export_latency.py                       # 3 2D models at 256, 1 3D at 128
    python benchmarks/bench_export_latency.py --models --run runs/hecktor_petct/model   # trained run only
    python benchmarks/bench_export_latency.py --models dsts_3d --size-3d 256 --reps 10
    python benchmarks/bench_export_latency.py --json latency.json   # also write the raw figures
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

DEFAULT_MODELS = ("mobilenetv2_2d", "mobilenetv3_2d", "shufflenetv2_2d", "mobilenetv3_3d")
RUNTIMES = ("keras_f32", "keras_xla", "savedmodel", "tflite_float32", "tflite_float16", "tflite_int8")
TFLITE = ("float32", "float16", "int8")
GOAL = 0.8  # issue 9: best TFLite variant <= 0.8x Keras float32 latency


def _input_shape(name: str, size: int, size_3d: int, slices_3d: int) -> tuple[int, ...]:
    return (size, size, 9) if name.endswith("_2d") else (slices_3d, size_3d, size_3d, 1)


def _phantom_inputs(shape: tuple[int, ...], count: int, offset: int):
    """``count`` model inputs cut from a windowed abdominal CT phantom ([-200, 200] HU -> [0, 1])."""
    import numpy as np

    from tfmedseg.datasets.phantoms import case_rng
    from tfmedseg.datasets.phantoms.abdomen import make_abdomen

    size = shape[0] if len(shape) == 3 else shape[1]
    depth = 9 if len(shape) == 3 else shape[0]
    phantom = make_abdomen(case_rng(0, 0), shape=(48, size, size), spacing=(3.0, 320.0 / size, 320.0 / size))
    ct = np.clip((phantom.ct.astype(np.float32) + 200.0) / 400.0, 0.0, 1.0)
    liver = np.flatnonzero((phantom.label > 0).any(axis=(1, 2)))
    liver = liver[(liver >= depth) & (liver < ct.shape[0] - depth)]
    centres = liver[np.linspace(0, len(liver) - 1, 12).astype(int)][offset:offset + count]
    if len(shape) == 3:
        samples = [ct[z - 4:z + 5].transpose(1, 2, 0) for z in centres]
    else:
        samples = [ct[z - depth // 2:z + depth - depth // 2, :, :, None] for z in centres]
    return np.ascontiguousarray(np.stack(samples), dtype=np.float32)


def _set_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"


def _build(name: str, shape: tuple[int, ...]):
    import keras

    from tfmedseg.models import registry

    keras.utils.set_random_seed(9)
    return registry.build(name, input_shape=shape, classes=2)


def _load_run(job: dict):
    """``(model, bundle)`` of a ``--run`` job (a trained run directory)."""
    from tfmedseg.export.run_dir import load_for_export

    bundle = load_for_export(job["run"])
    return bundle.model, bundle


def _dice(a, b) -> float:
    import numpy as np

    return 1.0 if a.sum() + b.sum() == 0 else float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def _prepare(job: dict) -> dict:
    """Build, save weights, export the SavedModel and the TFLite variants; measure their drift."""
    _set_threads(2)
    import tfmedseg  # noqa: F401  (oneDNN on before TF loads)
    import numpy as np

    from tfmedseg.export.savedmodel import export_savedmodel
    from tfmedseg.inference.spec import ServingSpec
    from tfmedseg.export.tflite import TFLiteRunner, convert_to_tflite

    name, shape, out = job["model"], tuple(job["shape"]), job["dir"]
    truth = None
    if job.get("run"):
        model, bundle = _load_run(job)
        spec = bundle.spec
        x = calibration = np.asarray(bundle.representative, np.float32)
        if bundle.representative_labels is not None:
            truth = np.asarray(bundle.representative_labels).reshape(x.shape[:-1]) > 0
    else:
        model = _build(name, shape)
        model.save_weights(os.path.join(out, "model.weights.h5"))
        if len(shape) == 3:
            spec = ServingSpec(mode="2.5d", input_size=shape[:2], context_slices=shape[-1])
        else:
            spec = ServingSpec(mode="3d_slab", input_size=shape[1:3], context_slices=shape[0], output_slices=shape[0] // 2)
        x = _phantom_inputs(shape, 4, 0)
        calibration = _phantom_inputs(shape, 8, 4)
    start = time.perf_counter()
    if len(shape) == 4 and shape[-1] > 1:  # a multi-channel 3D patch model (seed-004 PET/CT): its own export
        from tfmedseg.export.petct import export_petct_savedmodel

        export_petct_savedmodel(model, os.path.join(out, "savedmodel", "1"), cube_size=shape[0],
                                spacing_mm=float(spec.spacing_mm[0]), model_name=name)
    else:
        export_savedmodel(model, os.path.join(out, "savedmodel", "1"), spec=spec, model_name=name)
    info = {"params": int(model.count_params()), "export_s": {"savedmodel": time.perf_counter() - start},
            "size_mb": {}, "drift": {}}
    reference = model.predict(x, batch_size=1, verbose=0)
    if truth is not None:
        info["keras_dice_vs_truth"] = _dice(np.argmax(reference, -1) > 0, truth)
    for q in TFLITE:
        start = time.perf_counter()
        blob = convert_to_tflite(model, q, (lambda: (c[None] for c in calibration)) if q == "int8" else None)
        info["export_s"][f"tflite_{q}"] = time.perf_counter() - start
        path = os.path.join(out, f"{q}.tflite")
        with open(path, "wb") as f:
            f.write(blob)
        info["size_mb"][f"tflite_{q}"] = len(blob) / 1e6
        runner = TFLiteRunner(path, num_threads=2)
        predicted = runner(x)
        a, b = np.argmax(predicted, -1) > 0, np.argmax(reference, -1) > 0
        diff = np.abs(predicted - reference)
        info["drift"][f"tflite_{q}"] = {"max": float(diff.max()), "mean": float(diff.mean()), "dice": _dice(a, b),
                                        "delegate": runner.delegate}
        if truth is not None:
            info["drift"][f"tflite_{q}"]["dice_vs_truth"] = _dice(a, truth)
    weights = os.path.join(job["run"], "model.keras") if job.get("run") else os.path.join(out, "model.weights.h5")
    info["size_mb"]["keras_f32"] = os.path.getsize(weights) / 1e6
    info["margin"] = float(np.median(np.abs(reference[..., 1] - reference[..., 0])))
    return info


def _time_runtimes(job: dict) -> dict:
    """Time every runtime at ``job["threads"]`` threads, round-robin."""
    threads = int(job["threads"])
    _set_threads(threads)
    import tfmedseg  # noqa: F401  (oneDNN on before TF loads)
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tfmedseg.export.tflite import TFLiteRunner

    name, shape, out = job["model"], tuple(job["shape"]), job["dir"]
    if job.get("run"):
        model, bundle = _load_run(job)
        x = np.asarray(bundle.representative[:1], np.float32)
    else:
        model = _build(name, shape)
        model.load_weights(os.path.join(out, "model.weights.h5"))
        x = _phantom_inputs(shape, 1, 0)
    xt = tf.constant(x)
    keras_fn = tf.function(lambda t: model(t, training=False))
    xla_fn = tf.function(lambda t: model(t, training=False), jit_compile=True)
    serve = tf.saved_model.load(os.path.join(out, "savedmodel", "1")).signatures["serving_default"]
    runners = {q: TFLiteRunner(os.path.join(out, f"{q}.tflite"), num_threads=threads) for q in TFLITE}
    calls = {
        "keras_f32": lambda: keras_fn(xt).numpy(),
        **({} if job.get("no_xla") else {"keras_xla": lambda: xla_fn(xt).numpy()}),
        "savedmodel": lambda: serve(image=xt)["probabilities"].numpy(),
        **{f"tflite_{q}": (lambda r=r: r(x)) for q, r in runners.items()},
    }
    for call in calls.values():
        for _ in range(job["warmup"]):
            call()
    load_before = os.getloadavg()[0]
    rounds = {key: [] for key in calls}
    for _ in range(job["rounds"]):
        for key, call in calls.items():
            times = []
            for _ in range(job["reps"]):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            rounds[key].append(times)
    result = {}
    for key, per_round in rounds.items():
        best = min(per_round, key=lambda t: float(np.mean(t)))
        result[key] = {"mean_ms": 1e3 * float(np.mean(best)), "sd_ms": 1e3 * float(np.std(best)),
                       "median_ms": 1e3 * float(np.median(np.concatenate(per_round)))}
    return {"latency": result, "load": [load_before, os.getloadavg()[0]],
            "delegates": {q: r.delegate for q, r in runners.items()}}


def _run_name(run: str) -> str:
    """``<experiment>/<model dir>`` of a run directory, e.g. ``hecktor_petct/model``."""
    info = os.path.join(run, "export_info.json")
    model = "trained"
    if os.path.isfile(info):
        with open(info) as f:
            model = json.load(f).get("model", model)
    return f"{model} (trained, {os.path.basename(os.path.normpath(run))})"


def _run_input_shape(run: str) -> tuple[int, ...]:
    import numpy as np

    with np.load(os.path.join(run, "representative.npz"), allow_pickle=False) as data:
        return tuple(int(d) for d in data["inputs"].shape[1:])


def _subprocess(mode: str, job: dict) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        print(f"{job['model']} {mode} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT "):])


def _unit(shape: list[int], run: bool) -> str:
    if run:
        return "x".join(str(d) for d in shape[:-1]) + f" x {shape[-1]} cube" if len(shape) == 4 else "input"
    return "slice" if shape[-1] != 1 else f"{shape[0] // 2}-slice slab"


def _table(rows: list[dict], threads: list[int]) -> str:
    truth = any("keras_dice_vs_truth" in row["prep"] for row in rows)
    head = "| model | runtime | size MB | " + " | ".join(
        f"{t} thr ms mean ± sd (median) | x Keras" for t in threads) + " | max abs dp | Dice vs Keras |" + (
        " Dice vs truth |" if truth else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        unit = _unit(row["shape"], bool(row.get("run")))
        for key in RUNTIMES:
            if all(key not in lat["latency"] for lat in row["timing"].values() if lat):
                continue
            size = row["prep"]["size_mb"].get(key)
            cells = [f"{row['model']} ({unit})" if key == "keras_f32" else "", key, "" if size is None else f"{size:.2f}"]
            for t in threads:
                lat = row["timing"].get(t)
                if lat is None:
                    cells += ["failed", ""]
                    continue
                cur, base = lat["latency"][key], lat["latency"]["keras_f32"]["mean_ms"]
                cells += [f"{cur['mean_ms']:.1f} ± {cur['sd_ms']:.1f} ({cur['median_ms']:.1f})",
                          f"{cur['mean_ms'] / base:.2f}"]
            drift = row["prep"]["drift"].get(key)
            if drift:
                cells += [f"{drift['max']:.1e}", f"{drift['dice']:.3f}"]
            else:
                cells += ["0 (ref)", "1 (ref)"] if key == "keras_f32" else ["", ""]
            if truth:
                value = drift.get("dice_vs_truth") if drift else (row["prep"].get("keras_dice_vs_truth") if key == "keras_f32" else None)
                cells.append("" if value is None else f"{value:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdicts(rows: list[dict], threads: list[int]) -> list[str]:
    out = []
    for row in rows:
        parts = []
        for t in threads:
            lat = row["timing"].get(t)
            if lat is None:
                continue
            base = lat["latency"]["keras_f32"]["mean_ms"]
            best = min((f"tflite_{q}" for q in TFLITE), key=lambda k: lat["latency"][k]["mean_ms"])
            ratio = lat["latency"][best]["mean_ms"] / base
            xla = lat["latency"].get("keras_xla", {"mean_ms": float("nan")})["mean_ms"] / base
            parts.append(f"{t} thr: best {best} {ratio:.2f}x Keras ({'goal met' if ratio <= GOAL else 'goal NOT met'}; "
                         f"Keras XLA {xla:.2f}x; load {lat['load'][0]:.1f}->{lat['load'][1]:.1f})")
        out.append(f"{row['model']}: " + "; ".join(parts) + f"; int8 delegate {row['prep']['drift']['tflite_int8']['delegate']}"
                   f", median Keras margin |p1-p0| {row['prep']['margin']:.3f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--size", type=int, default=256, help="2D in-plane size (the paper's 256)")
    parser.add_argument("--size-3d", type=int, default=128, help="3D in-plane size (multiple of 128)")
    parser.add_argument("--slices-3d", type=int, default=8, help="3D slab depth (the middle half is output)")
    parser.add_argument("--reps", type=int, default=10, help="runs per round")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds (min of means is reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--run", action="append", default=[], metavar="DIR",
                        help="also benchmark the trained model of this run directory (model.keras + representative.npz)")
    parser.add_argument("--no-xla", action="store_true", help="skip Keras with jit_compile (slow to compile in 3D)")
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "JOB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, job = args.worker[0], json.loads(args.worker[1])
        result = _prepare(job) if mode == "prepare" else _time_runtimes(job)
        print("RESULT " + json.dumps(result))
        return
    rows = []
    started = time.time()
    load_start = os.getloadavg()[0]
    jobs = [(name, _input_shape(name, args.size, args.size_3d, args.slices_3d), None) for name in args.models]
    for run in args.run:
        jobs.append((_run_name(run), _run_input_shape(run), os.path.abspath(run)))
    for name, shape, run in jobs:
        with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
            job = {"model": name, "shape": list(shape), "dir": tmp, "run": run, "no_xla": args.no_xla}
            prep = _subprocess("prepare", job)
            if prep is None:
                continue
            timing = {}
            for threads in args.threads:
                result = _subprocess("time", {**job, "threads": threads, "reps": args.reps, "rounds": args.rounds,
                                              "warmup": args.warmup})
                if result is not None:
                    timing[threads] = result
            rows.append({"model": name, "shape": list(shape), "prep": prep, "timing": timing, "run": run})
            print(f"[{time.time() - started:.0f} s] {name} {shape} done", file=sys.stderr, flush=True)
    print(f"\nLatency per 2D slice (input {args.size}x{args.size}x9) / per 3D slab (input {args.slices_3d}x"
          f"{args.size_3d}x{args.size_3d}x1, {args.slices_3d // 2} slices out), batch 1; min-of-means over {args.rounds}"
          f" rounds x {args.reps} runs after {args.warmup} warm-up; ratio = time / Keras tf.function float32, same process;"
          f" {os.cpu_count()} CPUs, load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end"
          + ("; --run models: per input of the run's representative shape (e.g. a 3D cube)" if args.run else "") + "\n")
    print(_table(rows, args.threads))
    print()
    for line in _verdicts(rows, args.threads):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
