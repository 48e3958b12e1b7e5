"""Per-layer speed of the U-Nets' upsampling ``Conv*Transpose(f, 2, strides=2)``: Keras' layer vs the matmul-gradient one.

The measurement behind ``docs/performance.md`` ("fifth session", item 1). For each transposed
convolution of ``bench_training.py``'s U-Nets (2D: batch 4, 256^2 input; 3D: batch 1, 64^3) it
times, interleaved call by call on one batch of random data, the forward alone (``fwd``) and the
forward with the gradients of the input, kernel and bias for a given output gradient (``fwd+grad``)
of ``keras.layers.Conv2DTranspose`` / ``Conv3DTranspose`` (TensorFlow's ``Conv*BackpropInput``
forward, ``Conv*BackpropFilter`` kernel gradient and a strided ``Conv*`` input gradient under oneDNN)
and of :class:`tfmedseg.models.blocks.matmul_grad_conv_transpose.MatmulGradConv2DTranspose` / ``3D``
(the same forward, both gradients as one matmul each). The table gives the **minimum** wall
milliseconds over ``--rounds`` calls, the ratio ours / Keras and the largest difference of the
gradients relative to their largest value. 2 intra- and inter-op threads, as ``bench_training.py``.
The 3D rows force the matmul gradients on (``matmul_grad_conv_transpose.RANKS``, 2D only by default:
these rows are the measurement behind that choice).

Run: ``python benchmarks/bench_conv_transpose.py [--rounds 9]`` (with the repository on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import os
import time

from torch_worker import tensorflow_with_threads

THREADS = 2
#: (rank, batch, input side, input channels, output channels): the U-Nets' upsampling layers
LAYERS = [
    (2, 4, 16, 256, 128), (2, 4, 32, 128, 64), (2, 4, 64, 64, 32), (2, 4, 128, 32, 16),
    (3, 1, 8, 64, 32), (3, 1, 16, 32, 16), (3, 1, 32, 16, 8),
]


def _calls(rank: int, batch: int, side: int, cin: int, cout: int):
    """``{name: call}`` for Keras' and our layer (same weights) and the gradients' largest relative difference."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tfmedseg.models.blocks.matmul_grad_conv_transpose import conv_transpose

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch,) + (side,) * rank + (cin,)).astype(np.float32))
    dy = tf.constant(rng.normal(size=(batch,) + (2 * side,) * rank + (cout,)).astype(np.float32))
    layers = {"keras": conv_transpose(rank, cout, 2, strides=2, matmul_grad=False),
              "ours": conv_transpose(rank, cout, 2, strides=2, matmul_grad=True)}
    for layer in layers.values():
        layer.build(x.shape)
    layers["ours"].set_weights(layers["keras"].get_weights())

    def forward_and_grads(layer: keras.layers.Layer):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x) * dy)
            return tape.gradient(loss, [x, *layer.trainable_weights])

        return run

    calls = {}
    for name, layer in layers.items():
        calls[f"{name} fwd"] = tf.function(lambda layer=layer: layer(x))
        calls[f"{name} fwd+grad"] = forward_and_grads(layer)
    want, got = calls["keras fwd+grad"](), calls["ours fwd+grad"]()
    err = max(float(np.max(np.abs(g.numpy() - w.numpy())) / np.max(np.abs(w.numpy()))) for g, w in zip(got, want))
    return calls, err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    tensorflow_with_threads(THREADS)
    import tensorflow as tf

    from tfmedseg.models.blocks import matmul_grad_conv_transpose

    matmul_grad_conv_transpose.RANKS = (2, 3)  # time the 3D form too (module doc)

    print(f"uptime: {os.popen('uptime').read().strip()}")
    names = ("keras fwd", "ours fwd", "keras fwd+grad", "ours fwd+grad")
    print(f"{'layer':28s} " + " ".join(f"{n:>15s}" for n in names) + f" {'fwd':>6s} {'f+g':>6s} {'err':>8s}  load"
          "  (min ms per call)", flush=True)
    for rank, batch, side, cin, cout in LAYERS:
        calls, err = _calls(rank, batch, side, cin, cout)
        for call in calls.values():
            tf.nest.map_structure(lambda t: t.numpy(), call())  # trace / warm up
        load0 = os.getloadavg()[0]
        best = dict.fromkeys(names, float("inf"))
        for i in range(args.rounds):
            for name in (names if i % 2 == 0 else names[::-1]):
                t0 = time.perf_counter()
                tf.nest.map_structure(lambda t: t.numpy(), calls[name]())
                best[name] = min(best[name], time.perf_counter() - t0)
        label = f"{rank}D {side}^{rank} {cin}->{cout} (batch {batch})"
        print(f"{label:28s} " + " ".join(f"{best[n] * 1e3:15.2f}" for n in names)
              + f" {best['ours fwd'] / best['keras fwd']:5.2f}x {best['ours fwd+grad'] / best['keras fwd+grad']:5.2f}x"
              f" {err:8.1e}  {load0:.1f}->{os.getloadavg()[0]:.1f}", flush=True)
    print(f"ratio = ours / Keras (min wall). uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
