"""Seed-004 speed: SE U-Net training step and whole-cube sliding-window inference on this CPU.

``PYTHONPATH=. python benchmarks/bench_hecktor.py [--size 144] [--filters 24] [--steps 2] [--no-train] [--no-infer]``
``PYTHONPATH=. python benchmarks/bench_hecktor.py --first-step --size 48 --filters 8``

Measures, for a ``size``^3 x 2 input at batch 1:

* training step time (Adam, soft Dice on GTVt; first step = tracing, reported apart) of the SE U-Net
  and, as the baseline in the same run, of the basic U-Net (``iantsen/hecktor``'s ``BaselineUNet``);
  the SE / basic ratio is printed;
* sliding-window inference of one whole cube (window = the cube: one window, as the seed trains on
  whole 144^3 cubes; and with 48^3 windows at overlap 0.5 for comparison);
* peak resident memory of the process after each part (``ru_maxrss``; the process keeps its peak, so
  each figure includes the parts before it: run ``--no-train`` for the inference-only peak).

Training uses the package's optimizer path (``get_optimizer("adam")``: the fused Adam, slots built
before the first step as the trainer does). ``--first-step`` instead times the first training step
(tracing + graph optimisation) and the next one of the SE U-Net three ways in one run: Keras' Adam
with Keras' lazy slot creation (what ``model.compile(optimizer="adam")`` gives), the fused Adam with
lazy slots, and the fused Adam with slots built before the first step (the trainer's path).

Figures go to docs/performance.md with the machine's load (``uptime``).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

import tfmedseg  # noqa: F401


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def train_steps(name: str, size: int, filters: int, steps: int, optimizer: str = "fused_eager") -> tuple[float, float]:
    """``(first step s, mean later step s)``; optimizer ``keras`` (Keras' Adam, lazy slots),
    ``fused`` (fused Adam, lazy slots) or ``fused_eager`` (fused Adam, slots built first)."""
    import keras
    import tensorflow as tf

    from tfmedseg.losses.segmentation import DiceLoss
    from tfmedseg.models import registry

    from tfmedseg.training.optimizers import get_optimizer
    from tfmedseg.training.trainer import build_optimizer_now

    keras.utils.set_random_seed(0)
    net = registry.build(name, input_shape=(size, size, size, 2), base_filters=filters)
    fused, eager = optimizer != "keras", optimizer == "fused_eager"
    net.compile(optimizer=get_optimizer("adam") if fused else keras.optimizers.Adam(),
                loss=DiceLoss(from_logits=False, include_background=False))
    if eager:
        build_optimizer_now(net)
    x = tf.random.normal((1, size, size, size, 2))
    y = tf.cast(tf.random.uniform((1, size, size, size, 1)) > 0.9, tf.int32)
    t0 = time.perf_counter()
    net.train_on_batch(x, y)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        net.train_on_batch(x, y)
    return first, (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=144)
    parser.add_argument("--filters", type=int, default=24)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--no-infer", action="store_true")
    parser.add_argument("--first-step", action="store_true", help="only the first-step comparison (module doc)")
    parser.add_argument("--models", default="basic_unet,se_unet", help="training: comma-separated builders")
    args = parser.parse_args()
    import keras

    from tfmedseg.inference.petct import predict_cube
    from tfmedseg.models import registry

    s = args.size
    print(f"input {s}^3 x 2, batch 1, {args.filters} filters")
    if args.first_step:
        base = None
        for optimizer in ("keras", "fused", "fused_eager"):
            first, step = train_steps("se_unet", s, args.filters, args.steps, optimizer)
            base = base or first
            print(f"se_unet first step, {optimizer:11s}: {first:8.1f} s ({base / first:4.2f}x faster than keras), "
                  f"later step {step:7.2f} s")
        return
    if not args.no_train:
        results = {}
        for name in args.models.split(","):
            first, step = train_steps(name, s, args.filters, args.steps)
            results[name] = step
            print(f"train {name:10s}: first step (tracing) {first:8.1f} s, step {step:7.2f} s, "
                  f"peak RSS so far {peak_gib():5.1f} GiB")
        if {"se_unet", "basic_unet"} <= set(results):
            print(f"SE U-Net / basic U-Net step time: {results['se_unet'] / results['basic_unet']:.2f}x")
    if args.no_infer:
        return
    keras.utils.set_random_seed(0)
    cube = np.random.default_rng(0).normal(size=(s, s, s, 2)).astype(np.float32)
    for window, overlap in ((s, 0.0), (48, 0.5)):
        net = registry.build("se_unet", input_shape=(window, window, window, 2), base_filters=args.filters)
        predict_cube(net, cube[:window, :window, :window], (window,) * 3, overlap=0.0)  # trace
        t0 = time.perf_counter()
        predict_cube(net, cube, (window,) * 3, overlap=overlap)
        print(f"sliding window {window}^3 overlap {overlap}: whole {s}^3 cube {time.perf_counter() - t0:7.2f} s, "
              f"peak RSS so far {peak_gib():5.1f} GiB")


if __name__ == "__main__":
    main()
