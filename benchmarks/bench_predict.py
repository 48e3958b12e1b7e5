"""Whole-scan prediction: ``python -m tfmedseg.predict`` and the in-graph ``segment`` signature.

A 512 x 512 x D (default 200 slices) phantom abdominal CT is written as NIfTI (``make_abdomen`` on a
4x coarser grid, repeated 4x per axis: seconds instead of the 11+ minutes of a full-size draw); a
seed-002 cascade SavedModel (liver + tumour ``--model``/``--variant``, default ``mobilenetv2_2d``
``top``, 9-slice 2.5D stacks at 256^2, the paper configuration of
``tfmedseg/configs/liver_ct_2d3d.yaml``) is exported with untrained weights, or with ``--weights``
the trained weights of a seed-002 run (e.g. the quick run's ``default`` networks: the networks are
fully convolutional, so 128^2-trained weights load into 256^2 networks). The network time does not
depend on the weights, but the post-processing does: untrained networks give noise masks, the
worst case for the in-graph connected components and no liver-free slices to skip; trained ones
give organ-like masks. Then, each in its own process (so each peak resident set is its own):

- ``cli``: ``python -m tfmedseg.predict --model <savedmodel> --input ct.nii.gz --output out.nii.gz``
  (the whole command: start-up, TensorFlow import, model load, NIfTI read, cascade, NIfTI write);
- ``signature``: load the SavedModel and call ``segment(scan)`` on the array (timed call only,
  after one warm-up call on a 9-slice scan), i.e. the served path without file I/O.

``--compare-code DIR`` exports a second cascade with another source tree (e.g. ``git archive`` of
the commit before a change) and measures both, interleaved, on the same scan: before/after in one run.

Reported: wall seconds, seconds per slice, CPU seconds, the process' peak RSS (``ru_maxrss`` of the
child), the load average, and the label voxel counts. Goals (issue 18): <= 0.1 s per slice at 512^2
on the 2-core CPU, <= 3 GiB peak for the 200-slice scan.

Run: ``.venv/bin/python benchmarks/bench_predict.py [--slices 200] [--repeats 1] [--workdir DIR]
[--weights RUN_DIR --variant default] [--spacing-xy 1.25] [--paths signature] [--compare-code DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _phantom_ct(slices: int, spacing_xy: float):
    """A 512 x 512 x ``slices`` abdominal CT (int16 HU) in seconds: ``make_abdomen`` on a 4x coarser grid
    (``slices / 4`` x 128 x 128 at 4x the spacing) repeated 4x along every axis (nearest neighbour).
    Generating it at full size took over 11 minutes on 2 busy cores."""
    import numpy as np

    from tfmedseg.datasets.phantoms.abdomen import make_abdomen

    coarse = -(-slices // 4)
    phantom = make_abdomen(np.random.default_rng(0), 0, shape=(coarse, 128, 128), spacing=(10.0, 4 * spacing_xy, 4 * spacing_xy))
    ct = phantom.ct
    for axis in range(3):
        ct = np.repeat(ct, 4, axis=axis)
    return ct[:slices], (2.5, spacing_xy, spacing_xy), phantom.origin_lps


def _prepare(workdir: Path, slices: int, model: str, variant: str, weights: str | None, spacing_xy: float) -> None:
    """Write the phantom NIfTI and export the cascade with the code on ``PYTHONPATH`` (once; reused)."""

    import tfmedseg  # noqa: F401
    from tfmedseg.datasets.phantoms._nifti import reference_volume
    from tfmedseg.export.savedmodel import export_cascade_savedmodel
    from tfmedseg.export.spec import IntensitySpec, ServingSpec
    from tfmedseg.io.nifti import write_nifti
    from tfmedseg.models import registry

    ct_path = workdir / f"ct_512x512x{slices}.nii.gz"
    model_dir = workdir / "cascade" / "1"
    if not ct_path.exists():
        ct, spacing, origin = _phantom_ct(slices, spacing_xy)
        write_nifti(reference_volume(ct, spacing, origin, "CT"), ct_path, dtype="int16")
    if not (model_dir / "saved_model.pb").exists():
        spec = ServingSpec(mode="2.5d", input_size=(256, 256), context_slices=9, output_slices=1,
                           labels=("background", "foreground"), batch_size=8,
                           intensity=IntensitySpec("clip_scale", -200.0, 200.0, 0.0, 1.0))
        import keras

        keras.utils.set_random_seed(0)  # the same untrained weights for every code tree compared
        nets = {}
        for stage in ("liver", "tumour"):
            nets[stage] = registry.build(model, variant=variant, input_shape=(256, 256, 9))
            if weights:  # trained weights of the same network at another in-plane size (fully convolutional)
                trained = keras.saving.load_model(Path(weights) / f"{stage}_model" / "model.keras", compile=False)
                nets[stage].set_weights(trained.get_weights())
        export_cascade_savedmodel(nets["liver"], nets["tumour"], model_dir, liver_spec=spec, tumour_spec=spec,
                                  model_name="cascade", overwrite=True)
    print("PREPARED", ct_path, model_dir)


def _signature_child(model_dir: str, ct_path: str) -> None:
    """Child: time ``segment`` on the loaded array; print a RESULT line."""
    import numpy as np

    import tfmedseg  # noqa: F401  (before TensorFlow: sets TF_ENABLE_ONEDNN_OPTS)
    from tfmedseg.io.nifti import read_nifti

    tf = __import__("tensorflow")

    scan = read_nifti(ct_path)
    array = np.asarray(scan.array, np.float32)
    fn = tf.saved_model.load(model_dir).signatures["segment"]
    fn(scan=tf.constant(array[:9]))  # warm-up: traces nothing (SavedModel), loads kernels
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(scan=tf.constant(array))
    labels = next(iter(out.values())).numpy()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print("RESULT " + json.dumps({"wall": wall, "cpu": cpu, "slices": int(array.shape[0]),
                                  "labels": [int(v) for v in np.unique(labels)],
                                  "voxels": [int((labels == v).sum()) for v in (1, 2)],
                                  "liver_slices": int((labels >= 1).any(axis=(1, 2)).sum())}))


def _phases_child(model_dir: str, ct_path: str) -> None:
    """Child: the steps of ``python -m tfmedseg.predict`` timed one by one (``--phases``)."""
    t0 = time.perf_counter()
    import tfmedseg.predict as predict
    from tfmedseg.io.nifti import write_nifti

    t1 = time.perf_counter()
    segmenter = predict.load_segmenter(model_dir)
    t2 = time.perf_counter()
    volume = predict.read_input(ct_path)
    t3 = time.perf_counter()
    labels = predict.segment_scan(segmenter, volume)
    t4 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_nifti(volume.with_array(labels.astype("uint8"), "SEG"), Path(tmp) / "labels.nii.gz", dtype="uint8")
    t5 = time.perf_counter()
    print("RESULT " + json.dumps({"import": t1 - t0, "load_segmenter": t2 - t1, "read": t3 - t2,
                                  "first_segment_call": t4 - t3, "write": t5 - t4}))


def _run(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Run ``cmd``; its wall seconds, its own peak RSS in GiB (``wait4``'s ``ru_maxrss``) and stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read()[-3000:]}")
        return wall, usage.ru_maxrss / 2**20, out.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of (cli, signature), interleaved")
    parser.add_argument("--workdir", type=Path, default=None, help="where the phantom and the SavedModel go")
    parser.add_argument("--model", default="mobilenetv2_2d")
    parser.add_argument("--variant", default="top")
    parser.add_argument("--weights", default=None,
                        help="a seed-002 run directory (liver_model/, tumour_model/) whose trained weights the "
                             "256^2 networks take (same model and variant); default: untrained weights")
    parser.add_argument("--spacing-xy", type=float, default=0.78, help="in-plane voxel size of the phantom CT (mm)")
    parser.add_argument("--paths", nargs="+", default=["cli", "signature"], choices=["cli", "signature"])
    parser.add_argument("--compare-code", type=Path, default=None,
                        help="another source tree (e.g. an export of main before a change): its exported cascade "
                             "is measured beside this one's, interleaved, on the same scan")
    parser.add_argument("--phases", action="store_true", help="also time the command's steps (import, load, read, "
                        "first segment call, write) in one child")
    parser.add_argument("--signature-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--phases-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--prepare-child", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.signature_child:
        _signature_child(*args.signature_child)
        return
    if args.phases_child:
        _phases_child(*args.phases_child)
        return
    if args.prepare_child:
        _prepare(Path(args.prepare_child[0]), args.slices, args.model, args.variant, args.weights, args.spacing_xy)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    workdir.mkdir(parents=True, exist_ok=True)
    codes = {"this": REPO}
    if args.compare_code:
        codes = {"before": args.compare_code.resolve(), "this": REPO}
    tag = f"{args.model}-{args.variant}-{'trained' if args.weights else 'untrained'}-{args.spacing_xy}"

    def env_for(code: Path) -> dict:
        env = dict(os.environ, PYTHONPATH=str(code), TF_CPP_MIN_LOG_LEVEL="2")
        env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # what `import tfmedseg` sets in each child anyway
        return env

    t0 = time.perf_counter()
    dirs = {}
    for name, code in codes.items():
        dirs[name] = workdir / f"{name}-{tag}"
        dirs[name].mkdir(parents=True, exist_ok=True)
        ct_shared = workdir / f"ct_512x512x{args.slices}-{args.spacing_xy}.nii.gz"
        ct_local = dirs[name] / f"ct_512x512x{args.slices}.nii.gz"
        if ct_shared.exists() and not ct_local.exists():
            os.link(ct_shared, ct_local)
        cmd = [sys.executable, __file__, "--prepare-child", str(dirs[name]), "--slices", str(args.slices), "--model", args.model,
               "--variant", args.variant, "--spacing-xy", str(args.spacing_xy)] + (["--weights", args.weights] if args.weights else [])
        _run(cmd, env_for(code))
        if not ct_shared.exists():
            os.link(ct_local, ct_shared)
    ct_path = workdir / f"ct_512x512x{args.slices}-{args.spacing_xy}.nii.gz"
    print(f"prepared {ct_path.name} and {len(dirs)} cascade(s) in {time.perf_counter() - t0:.0f} s; "
          f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    rows = []
    for _ in range(args.repeats):
        for name, code in codes.items():
            model_dir = dirs[name] / "cascade" / "1"
            env = env_for(code)
            if "cli" in args.paths:
                load = os.getloadavg()[0]
                out = dirs[name] / "out.nii.gz"
                if out.exists():
                    out.unlink()
                wall, peak, _ = _run([sys.executable, "-m", "tfmedseg.predict", "--model", str(model_dir), "--input",
                                      str(ct_path), "--output", str(out)], env)
                rows.append((name, "cli", wall, None, peak, load, None))
                print(rows[-1], flush=True)
            if "signature" in args.paths:
                load = os.getloadavg()[0]
                _, peak, stdout = _run([sys.executable, __file__, "--signature-child", str(model_dir), str(ct_path)], env)
                res = json.loads(next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))[7:])
                rows.append((name, "signature", res["wall"], res["cpu"], peak, load, res))
                print(rows[-1], flush=True)
            if args.phases:
                _, _, stdout = _run([sys.executable, __file__, "--phases-child", str(model_dir), str(ct_path)], env)
                phases = json.loads(next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))[7:])
                print(f"{name} phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
                      + f"; load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"\n{'code':7s} {'path':10s} {'wall s':>8s} {'s/slice':>8s} {'cpu s':>8s} {'cpu/slice':>9s} {'peak GiB':>9s} {'load':>5s}"
          f"   ({args.slices} slices 512^2, {tag})")
    for name, path, wall, cpu, peak, load, res in rows:
        cpu_s = cpu if cpu is not None else float("nan")
        print(f"{name:7s} {path:10s} {wall:8.1f} {wall / args.slices:8.3f} {cpu_s:8.1f} {cpu_s / args.slices:9.3f} "
              f"{peak:9.2f} {load:5.1f}" + (f"   labels {res['labels']} voxels {res.get('voxels')}" if res else ""))
    print("cli: the whole command (start-up, import, load, read, cascade, write); signature: the segment() call "
          "only (peak RSS of its whole process). Goals: <= 0.1 s/slice, <= 3 GiB.")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
