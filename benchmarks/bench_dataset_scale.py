"""Real-dataset scale: peak memory of building the cache and training one epoch, 10 vs 131 LiTS cases.

Issue 18 (Deliver 6): the real LiTS (131 volumes, tens of GB) must train in 24 GiB, so the loader
reads headers only (:func:`tfmedseg.io.lazy.read_nifti_lazy`), the cache is built case by case
(:meth:`tfmedseg.preprocessing.cache.CaseCache.ensure`, one case in memory) and the tf.data pipeline
reads the slices of each sample from the cache (:class:`~tfmedseg.preprocessing.cache.CachedArray`).
Goal: the peak resident memory over 131 cases is within 1.5x of the peak over 10 cases.

Each measurement is a child process (its own peak RSS, ``wait4``'s ``ru_maxrss``) running the
seed-002 experiment's own steps on LiTS-layout phantoms (``ensure_phantoms("lits", ..., N)``,
48 x 128 x 128 CT at 3 x 2.5 x 2.5 mm): ``runner.load_cases`` -> ``lits_cascade.split_cases`` ->
``runner.prepare_cases`` into a fresh cache (the experiment's ``case_arrays``: HU window, in-plane
resize, tumour input) -> the liver stage (``runner.segmentation_stage``, the quick config's
``mobilenetv2_2d``, 2.5D 9-slice stacks, Table 3.1 augmentation) for exactly one epoch over every
training slice, with validation. Mode ``stream`` is the package as it is; mode ``eager`` holds
every case's voxels and every preprocessed array in memory (what the loaders and
``prepare_cases`` did before), as the reference showing what the streaming saves.

Run (through the team's CPU queue):
``/work/bin/heavy env PYTHONPATH=. .venv/bin/python benchmarks/bench_dataset_scale.py --workdir DIR``
Options: ``--sizes 10 131``, ``--modes stream eager``, ``--inplane 64`` (network in-plane size).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_gib() -> float:
    """Peak RSS of this process so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _current_rss_gib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _child(root: str, workdir: str, mode: str, inplane: int) -> None:
    """One measurement: cache + one epoch; prints a RESULT line."""
    import numpy as np

    import tfmedseg  # noqa: F401
    from tfmedseg.config import load_config
    from tfmedseg.data.source import CaseArrays
    from tfmedseg.experiments import lits_cascade as lc
    from tfmedseg.experiments import runner
    from tfmedseg.experiments.liver_ct_2d3d import LiverCT2D3DConfig
    from tfmedseg.preprocessing.cache import CaseCache

    config = load_config(LiverCT2D3DConfig, REPO / "tfmedseg" / "configs" / "liver_ct_2d3d_quick.yaml",
                         [f"inplane_size={inplane}", "liver.train.epochs=1", "liver.train.early_stopping_patience=0",
                          "liver.train.image_every_epochs=0"])
    t0 = time.perf_counter()
    base = _current_rss_gib()
    cases = runner.load_cases(config.dataset, root)
    if mode == "eager":  # the loaders before: every voxel read up front
        for case in cases:
            _ = [v.array for v in case.volumes]
    train_cases, val_cases = lc.split_cases(cases, config.validation_ids, config.validation_fraction, 0)
    prep = {"hu_window": list(config.hu_window), "inplane_size": config.inplane_size,
            "combination": config.cascade.combination, "tumour_slice_margin": config.tumour_slice_margin, "version": 1}
    cache = CaseCache(Path(workdir) / "cache", prep)
    prepared = runner.prepare_cases(cases, cache, lambda c: lc.case_arrays(c, config))
    if mode == "eager":  # prepare_cases before: every preprocessed array held in memory
        prepared = {k: {n: np.asarray(a) for n, a in v.items()} for k, v in prepared.items()}
    cache_seconds, cache_peak = time.perf_counter() - t0, _rss_gib()

    def arrays(subset):
        return [CaseArrays(c.case_id, prepared[c.case_id]["image"], prepared[c.case_id]["liver"]) for c in subset]

    t1 = time.perf_counter()
    result = runner.segmentation_stage("liver", config.liver, config.liver.geometry, arrays(train_cases), arrays(val_cases),
                                       output_dir=Path(workdir) / "run", seed=0, inplane_size=config.inplane_size)
    print("RESULT " + json.dumps({
        "cases": len(cases), "train_cases": len(train_cases), "val_cases": len(val_cases),
        "train_slices": sum(c.images["ct"].shape[0] for c in train_cases), "epochs": len(result.history.get("loss", [])),
        "cache_seconds": cache_seconds, "train_seconds": time.perf_counter() - t1, "rss_at_start": base,
        "peak_after_cache": cache_peak, "peak_after_epoch": _rss_gib()}), flush=True)


def _run(cmd: list[str], env: dict) -> tuple[float, str]:
    """Run ``cmd``; its own peak RSS in GiB and its stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read()[-4000:]}")
        return usage.ru_maxrss / 2**20, out.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 131])
    parser.add_argument("--modes", nargs="+", default=["stream", "eager"], choices=["stream", "eager"])
    parser.add_argument("--inplane", type=int, default=64, help="network in-plane size (the quick config: 128)")
    parser.add_argument("--workdir", type=Path, default=None, help="phantoms (kept) and per-run caches (removed)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")
    from tfmedseg.datasets.phantoms import ensure_phantoms

    t0 = time.perf_counter()
    roots = {n: ensure_phantoms("lits", workdir / f"lits{n}", n, 0) for n in args.sizes}
    print(f"phantoms ready in {time.perf_counter() - t0:.0f} s; uptime: {os.popen('uptime').read().strip()}", flush=True)
    rows = []
    for mode in args.modes:
        for n in args.sizes:
            run_dir = workdir / f"run-{mode}-{n}"
            shutil.rmtree(run_dir, ignore_errors=True)  # a fresh cache: building it is measured
            load = os.getloadavg()[0]
            t = time.perf_counter()
            peak, stdout = _run([sys.executable, __file__, "--child", str(roots[n]), str(run_dir), mode, str(args.inplane)], env)
            res = json.loads(next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))[7:])
            rows.append((mode, n, peak, res, time.perf_counter() - t, load))
            print(f"{mode} {n}: peak {peak:.2f} GiB, {json.dumps(res)}", flush=True)
            shutil.rmtree(run_dir, ignore_errors=True)
    print(f"\n{'mode':7s} {'cases':>5s} {'train slices':>12s} {'peak RSS GiB':>12s} {'after cache':>11s} "
          f"{'cache s':>8s} {'epoch s':>8s} {'wall s':>7s} {'load':>5s}")
    for mode, n, peak, res, wall, load in rows:
        print(f"{mode:7s} {n:5d} {res['train_slices']:12d} {peak:12.2f} {res['peak_after_cache']:11.2f} "
              f"{res['cache_seconds']:8.1f} {res['train_seconds']:8.1f} {wall:7.0f} {load:5.1f}")
    sizes = sorted(args.sizes)
    for mode in args.modes:
        peaks = {n: p for m, n, p, *_ in rows if m == mode}
        if len(sizes) >= 2:
            ratio = peaks[sizes[-1]] / peaks[sizes[0]]
            print(f"{mode}: peak({sizes[-1]}) / peak({sizes[0]}) = {ratio:.2f}x  (goal <= 1.5x: "
                  f"{'met' if ratio <= 1.5 else 'not met'})")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
