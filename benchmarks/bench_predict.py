"""Whole-scan prediction: ``python -m tfmedseg.predict`` and the in-graph ``segment`` signature.

A 512 x 512 x D (default 200 slices) phantom abdominal CT (``make_abdomen`` at 0.78 x 0.78 x
2.5 mm) is written as NIfTI; a seed-002 cascade SavedModel (liver + tumour ``mobilenetv2_2d``,
variant ``top``, 9-slice 2.5D stacks at 256^2, the paper configuration of
``tfmedseg/configs/liver_ct_2d3d.yaml``) is exported with untrained weights (the time does not
depend on the weights). Then, each in its own process (so each peak resident set is its own):

- ``cli``: ``python -m tfmedseg.predict --model <savedmodel> --input ct.nii.gz --output out.nii.gz``
  (the whole command: start-up, TensorFlow import, model load, NIfTI read, cascade, NIfTI write);
- ``signature``: load the SavedModel and call ``segment(scan)`` on the array (timed call only,
  after one warm-up call on a 9-slice scan), i.e. the served path without file I/O.

Reported: wall seconds, seconds per slice, the process' peak RSS (``ru_maxrss`` of the child),
and the load average. Goals (issue 18): <= 0.1 s per slice at 512^2 on the 2-core CPU,
<= 3 GiB peak for the 200-slice scan.

Run: ``.venv/bin/python benchmarks/bench_predict.py [--slices 200] [--repeats 1] [--workdir DIR]``
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


def _prepare(workdir: Path, slices: int) -> tuple[Path, Path]:
    """Write the phantom NIfTI and export the cascade (once; reused when present)."""
    import numpy as np

    import tfmedseg  # noqa: F401
    from tfmedseg.datasets.phantoms._nifti import reference_volume
    from tfmedseg.datasets.phantoms.abdomen import make_abdomen
    from tfmedseg.export.savedmodel import export_cascade_savedmodel
    from tfmedseg.export.spec import IntensitySpec, ServingSpec
    from tfmedseg.io.nifti import write_nifti
    from tfmedseg.models import registry

    ct_path = workdir / f"ct_512x512x{slices}.nii.gz"
    model_dir = workdir / "cascade" / "1"
    if not ct_path.exists():
        phantom = make_abdomen(np.random.default_rng(0), 0, shape=(slices, 512, 512), spacing=(2.5, 0.78, 0.78))
        write_nifti(reference_volume(phantom.ct, phantom.spacing, phantom.origin_lps, "CT"), ct_path, dtype="int16")
    if not (model_dir / "saved_model.pb").exists():
        spec = ServingSpec(mode="2.5d", input_size=(256, 256), context_slices=9, output_slices=1,
                           labels=("background", "foreground"), batch_size=8,
                           intensity=IntensitySpec("clip_scale", -200.0, 200.0, 0.0, 1.0))
        liver = registry.build("mobilenetv2_2d", variant="top", input_shape=(256, 256, 9))
        tumour = registry.build("mobilenetv2_2d", variant="top", input_shape=(256, 256, 9))
        export_cascade_savedmodel(liver, tumour, model_dir, liver_spec=spec, tumour_spec=spec,
                                  model_name="cascade", overwrite=True)
    return ct_path, model_dir


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
                                  "labels": [int(v) for v in np.unique(labels)]}))


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
    parser.add_argument("--signature-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.signature_child:
        _signature_child(*args.signature_child)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # what `import tfmedseg` sets in each child anyway
    t0 = time.perf_counter()
    ct_path, model_dir = _prepare(workdir, args.slices)
    print(f"prepared {ct_path.name} and {model_dir} in {time.perf_counter() - t0:.0f} s; "
          f"uptime: {os.popen('uptime').read().strip()}")
    rows = []
    for _ in range(args.repeats):
        load = os.getloadavg()[0]
        out = workdir / "out.nii.gz"
        if out.exists():
            out.unlink()
        wall, peak, _ = _run([sys.executable, "-m", "tfmedseg.predict", "--model", str(model_dir), "--input",
                              str(ct_path), "--output", str(out)], env)
        rows.append(("cli", wall, None, peak, load))
        load = os.getloadavg()[0]
        _, peak, stdout = _run([sys.executable, __file__, "--signature-child", str(model_dir), str(ct_path)], env)
        res = json.loads(next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))[7:])
        rows.append(("signature", res["wall"], res["cpu"], peak, load))
    print(f"\n{'path':10s} {'wall s':>8s} {'s/slice':>8s} {'cpu s':>8s} {'peak GiB':>9s} {'load':>5s}   ({args.slices} slices 512^2)")
    for name, wall, cpu, peak, load in rows:
        print(f"{name:10s} {wall:8.1f} {wall / args.slices:8.3f} {cpu if cpu is not None else float('nan'):8.1f} "
              f"{peak if peak is not None else float('nan'):9.2f} {load:5.1f}")
    print("cli: the whole command (start-up, import, load, read, cascade, write); signature: the segment() call "
          "only (peak RSS of its whole process). Goals: <= 0.1 s/slice, <= 3 GiB.")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
