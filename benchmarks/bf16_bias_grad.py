"""Bias gradient of Keras' own layers under ``mixed_bfloat16``, against the exact sum, by the number of summed elements.

A layer's bias gradient is the upstream gradient summed over every position but the channel: Keras 3 adds the bias
with ``ops.add`` (broadcast), so TensorFlow's gradient is a ``Sum`` (``reduce_sum`` over the broadcast axes) of the
upstream gradient -- in the compute dtype, bfloat16 under ``mixed_bfloat16``. This script feeds a fixed upstream
gradient ``dy`` ([N elements per channel] = batch x pixels) through Keras ``Conv2D`` / ``Conv3D`` / ``Dense`` with a
bias (``loss = sum(float32(y) * dy)``, so the exact bias gradient is ``sum(dy)`` per channel, independent of the
forward pass) and prints the relative error of

- ``bf16 layer``: the ``mixed_bfloat16`` layer's bias gradient;
- ``f32 layer``: the same layer in float32;
- ``bf16 input``: the exact (float64) sum of ``dy`` rounded to bfloat16 -- the part of the error that only the
  rounding of ``dy`` explains (what a float32 accumulator would give);
- ``Sum bf16`` / ``Sum bf16->f32``: ``tf.reduce_sum`` of the bfloat16 ``dy`` in bfloat16, and cast to float32 first;
- ``BiasAddGrad``: ``tf.raw_ops.BiasAddGrad`` on the bfloat16 ``dy`` (what ``tf.nn.bias_add`` would give).

Two upstream gradients: ``mean`` (every element 1/N, the gradient of a mean loss) and ``normal`` (N(1, 1) / N).
The error is ``max |g - exact| / max |exact|`` over the channels. Run:
``PYTHONPATH=. python benchmarks/bf16_bias_grad.py [--channels 8] [--batch 2]``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def _rel(g, exact) -> float:
    return float(np.max(np.abs(np.asarray(g, np.float64) - exact)) / np.max(np.abs(exact)))


def measure(kind: str, side: int, batch: int, channels: int, upstream: str, seed: int = 0) -> dict:
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    if kind == "conv2d":
        x_shape, y_shape = (batch, side, side, 2), (batch, side, side, channels)
        make = lambda dtype: keras.layers.Conv2D(channels, 3, padding="same", dtype=dtype)  # noqa: E731
    elif kind == "conv3d":
        x_shape, y_shape = (batch, side, side, side, 2), (batch, side, side, side, channels)
        make = lambda dtype: keras.layers.Conv3D(channels, 3, padding="same", dtype=dtype)  # noqa: E731
    else:
        x_shape, y_shape = (batch * side * side, 4), (batch * side * side, channels)
        make = lambda dtype: keras.layers.Dense(channels, dtype=dtype)  # noqa: E731
    n = int(np.prod(y_shape[:-1]))
    x = rng.standard_normal(x_shape).astype(np.float32)
    dy = (np.full(y_shape, 1.0) if upstream == "mean" else rng.normal(1.0, 1.0, y_shape)) / n
    dy = dy.astype(np.float32)
    exact = dy.astype(np.float64).reshape(-1, channels).sum(0)
    dy_bf16 = tf.cast(tf.constant(dy), tf.bfloat16)
    bf16_input = tf.cast(dy_bf16, tf.float64).numpy().reshape(-1, channels).sum(0)

    def bias_grad(dtype):
        layer = make(dtype)
        layer.build(x_shape)
        with tf.GradientTape() as tape:
            y = layer(tf.constant(x))
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
        return tape.gradient(loss, layer.bias).numpy()

    axes = list(range(len(y_shape) - 1))
    return {
        "kind": kind, "side": side, "n": n, "upstream": upstream,
        "bf16 layer": _rel(bias_grad("mixed_bfloat16"), exact),
        "f32 layer": _rel(bias_grad("float32"), exact),
        "bf16 input": _rel(bf16_input, exact),
        "Sum bf16": _rel(tf.cast(tf.reduce_sum(dy_bf16, axes), tf.float32).numpy(), exact),
        "Sum bf16->f32": _rel(tf.reduce_sum(tf.cast(dy_bf16, tf.float32), axes).numpy(), exact),
        "BiasAddGrad": _rel(tf.cast(tf.raw_ops.BiasAddGrad(out_backprop=dy_bf16), tf.float32).numpy(), exact),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--sides2d", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--sides3d", type=int, nargs="+", default=[8, 16, 32, 48])
    args = parser.parse_args()
    import tfmedseg  # noqa: F401  (oneDNN as the package sets it, before TensorFlow)
    import tensorflow as tf

    print(f"TF {tf.__version__}, TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}; "
          f"batch {args.batch}, {args.channels} channels; relative error max|g - exact| / max|exact|")
    cols = ("bf16 layer", "f32 layer", "bf16 input", "Sum bf16", "Sum bf16->f32", "BiasAddGrad")
    print(f"{'layer':7s} {'size':>9s} {'N summed':>9s} {'dy':>6s} " + " ".join(f"{c:>13s}" for c in cols))
    runs = [("conv2d", s) for s in args.sides2d] + [("dense", s) for s in args.sides2d] + \
        [("conv3d", s) for s in args.sides3d]
    for kind, side in runs:
        for upstream in ("mean", "normal"):
            r = measure(kind, side, args.batch, args.channels, upstream)
            size = f"{side}^{3 if kind == 'conv3d' else 2}"
            print(f"{kind:7s} {size:>9s} {r['n']:9d} {upstream:>6s} " + " ".join(f"{r[c]:13.2e}" for c in cols),
                  flush=True)


if __name__ == "__main__":
    main()
