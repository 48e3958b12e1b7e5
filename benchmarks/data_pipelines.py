"""Throughput of the tf.data samplers against a serial numpy loop doing the same extraction.

Run: ``python benchmarks/data_pipelines.py [--size 256] [--batches 40]``. Prints samples/s of each
pipeline and its ratio to the serial numpy baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import tfmedseg  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
import numpy as np

from tfmedseg.data import CaseArrays, extract, patch3d_dataset, slab3d_dataset, stack25d_dataset


def _cases(n: int, depth: int, size: int) -> list[CaseArrays]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        label = np.zeros((depth, size, size), np.int32)
        label[depth // 3 : depth // 2, size // 4 : size // 2, size // 4 : size // 2] = 1
        out.append(CaseArrays(f"c{i}", rng.random((depth, size, size), dtype=np.float32), label))
    return out


def _rate(ds, batches: int, batch_size: int) -> float:
    it = iter(ds)
    next(it)  # warm-up (graph tracing, first prefetch)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--depth", type=int, default=48)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    cases, bs = _cases(4, args.depth, args.size), args.batch_size

    rng = np.random.default_rng(0)
    n = args.batches * bs
    for k in range(bs):  # warm-up
        extract.stack_25d(cases[0].image, cases[0].label, k % args.depth)
    start = time.perf_counter()
    for _ in range(n):
        case = cases[rng.integers(len(cases))]
        extract.stack_25d(case.image, case.label, int(rng.integers(case.depth)))
    baseline = n / (time.perf_counter() - start)
    print(f"serial numpy 2.5D extraction: {baseline:8.1f} samples/s (baseline 1.00x)")
    pipelines = {
        "stack25d (9 x 256^2)": stack25d_dataset(cases, bs, seed=0),
        "slab3d (8 x 256^2)": slab3d_dataset(cases, bs, seed=0),
        "patch3d (32 x 128^2, fg 1/3)": patch3d_dataset(cases, bs, (32, 128, 128), samples_per_epoch=256, seed=0),
    }
    for name, ds in pipelines.items():
        rate = _rate(ds, args.batches, bs)
        print(f"{name:30s}: {rate:8.1f} samples/s ({rate / baseline:5.2f}x the serial 2.5D baseline)")


if __name__ == "__main__":
    main()
