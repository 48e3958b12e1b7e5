"""Per-layer convolution speed: TensorFlow (oneDNN) vs torch on VGG-16 layers, interleaved in one run.

The measurement behind ``docs/performance.md`` ("Why SSD stayed at ~1.9x, and the fix"): for each
VGG-16 3x3 "same" convolution (as in SSD512's body) it times, on one batch of random data,

- ``TF fwd gemm``: ``relu(bias_add(conv2d(x, k)))`` - the plain ``Conv2D`` graph op, which oneDNN
  runs as ``x64:gemm:jit`` (im2col + SGEMM) for a 1-image batch on an AVX2 CPU;
- ``TF fwd bwd-in``: the same forward computed as ``Conv2DBackpropInput`` of the flipped, transposed
  kernel (``brg_conv_bwd``), i.e. what :class:`tfmedseg.models.blocks.onednn_conv.OneDNNConv2D` runs;
- ``TF dW`` / ``TF dX``: ``Conv2DBackpropFilter`` / ``Conv2DBackpropInput`` for a given output gradient
  (no ``dX`` for the first layer, whose input is the image);
- ``TF dW mm``: the kernel gradient as shifted matmuls (``onednn_conv._kernel_grad_shifted``), what
  ``OneDNNConv2D`` runs when ``min(Cin, Cout) >= 64`` (the ``dW`` ratio uses the faster TF dW);
- the same three for torch: ``relu(conv2d(x, w, b, padding=1))`` and
  ``aten.convolution_backward`` with only the kernel / only the input gradient requested.

TF runs in this process; torch runs in a persistent worker process in a torch environment without
TensorFlow (``--torch-python``, default ``/work/venv-torch/bin/python``), driven over a pipe as in
``bench_detection.py``: each round the parent times one TF call, then asks the worker for one torch
call of the same kind and reads back the worker's own wall and CPU seconds, so both see the same
load. Both use 2 threads; torch with ``OMP_WAIT_POLICY=PASSIVE``. Each call is warmed up once; the
table gives the **minimum** wall milliseconds over ``--rounds`` calls and the ratios TF / torch
(``fwd`` uses the faster TF forward). ``maxerr`` is the largest absolute difference between the two
TF forwards.

Run: ``python benchmarks/bench_conv_layers.py [--rounds 3] [--image-size 512] [--batch 1]
[--layers block1_conv1,block1_conv2,block2_conv2,block3_conv2,block4_conv2]``
(``--worker`` is the torch side; it imports no TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from torch_worker import TorchWorker, serve_timed_calls, tensorflow_with_threads

THREADS = 2
#: VGG-16 3x3 convolutions: name -> (block, input channels, output channels); the feature map of
#: block ``b`` is ``image_size / 2**(b - 1)`` on a side.
VGG16_CONVS = {
    "block1_conv1": (1, 3, 64), "block1_conv2": (1, 64, 64),
    "block2_conv1": (2, 64, 128), "block2_conv2": (2, 128, 128),
    "block3_conv1": (3, 128, 256), "block3_conv2": (3, 256, 256), "block3_conv3": (3, 256, 256),
    "block4_conv1": (4, 256, 512), "block4_conv2": (4, 512, 512), "block4_conv3": (4, 512, 512),
    "block5_conv1": (5, 512, 512), "block5_conv2": (5, 512, 512), "block5_conv3": (5, 512, 512),
}
DEFAULT_LAYERS = "block1_conv1,block1_conv2,block2_conv2,block3_conv2,block4_conv2"
OPS = ("fwd", "dW", "dX")


def _shapes(spec: dict) -> tuple[int, int, int, int]:
    return spec["batch"], spec["size"], spec["cin"], spec["cout"]


# ----------------------------------------------------------------------------- torch worker
def worker() -> None:
    """torch side: one call per request line ``{"layer": spec, "op": op}``, reply with timings."""
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)

    def build(layer, op):
        n, h, c, f = _shapes(layer)
        x, dy = torch.randn(n, c, h, h), torch.randn(n, f, h, h)
        w, b = torch.randn(f, c, 3, 3) * 0.05, torch.randn(f)
        conv = torch.nn.functional.conv2d
        backward = torch.ops.aten.convolution_backward
        mask = {"dW": [False, True, False], "dX": [True, False, False]}.get(op)

        def run():
            with torch.no_grad():
                if op == "fwd":
                    return torch.relu(conv(x, w, b, padding=1))
                return backward(dy, x, w, [f], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

        return run

    serve_timed_calls(lambda line: build(**json.loads(line)), {"torch": torch.__version__})


# ----------------------------------------------------------------------------- TensorFlow
def _tf_calls(spec: dict, seed: int = 0) -> tuple[dict, float]:
    """TF calls ``{"fwd gemm", "fwd bwd-in", "dW", "dX"}`` for one layer, and the forwards' max |difference|."""
    import numpy as np
    import tensorflow as tf  # tfmedseg was imported first in main()

    from tfmedseg.models.blocks.onednn_conv import _kernel_grad_shifted, _same_conv_as_backprop_input

    rng = np.random.default_rng(seed)
    n, h, c, f = _shapes(spec)
    x = tf.constant(rng.normal(size=(n, h, h, c)).astype(np.float32))
    dy = tf.constant(rng.normal(size=(n, h, h, f)).astype(np.float32))
    k = tf.Variable(rng.normal(size=(3, 3, c, f)).astype(np.float32) * 0.05)
    b = tf.Variable(rng.normal(size=f).astype(np.float32))
    strides = [1, 1, 1, 1]

    fwd_gemm = tf.function(lambda x: tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, k, 1, "SAME"), b)))
    fwd_bwd_in = tf.function(lambda x: tf.nn.relu(tf.nn.bias_add(_same_conv_as_backprop_input(x, k), b)))
    d_w = tf.function(lambda x, dy: tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.shape(k), out_backprop=dy, strides=strides, padding="SAME"))
    d_w_mm = tf.function(lambda x, dy: _kernel_grad_shifted(x, dy, 3, 3, c, f))
    d_x = tf.function(lambda x, dy: tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(x), filter=k, out_backprop=dy, strides=strides, padding="SAME"))
    calls = {
        "fwd gemm": lambda: fwd_gemm(x).numpy(),
        "fwd bwd-in": lambda: fwd_bwd_in(x).numpy(),
        "dW": lambda: d_w(x, dy).numpy(),
        "dW mm": lambda: d_w_mm(x, dy).numpy(),
        "dX": lambda: d_x(x, dy).numpy(),
    }
    maxerr = float(np.max(np.abs(calls["fwd gemm"]() - calls["fwd bwd-in"]())))
    return calls, maxerr


def _ratio(best: dict, op: str) -> str:
    """TF / torch minimum wall for ``op`` (``fwd``: the faster TF forward), or ``-``."""
    if f"torch {op}" not in best:
        return "-"
    faster = {"fwd": ("TF fwd gemm", "TF fwd bwd-in"), "dW": ("TF dW", "TF dW mm")}.get(op, (f"TF {op}",))
    tf_best = min(best[name] for name in faster)
    return f"{tf_best / best[f'torch {op}']:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=512,
                        help="SSD input side; block b's feature map is image_size / 2**(b-1)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layers", default=DEFAULT_LAYERS, help=f"comma-separated, of: {', '.join(VGG16_CONVS)}")
    parser.add_argument("--torch-python", default="/work/venv-torch/bin/python")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    layers = args.layers.split(",")
    unknown = [name for name in layers if name not in VGG16_CONVS]
    if unknown:
        parser.error(f"unknown --layers {unknown}; choose from {', '.join(VGG16_CONVS)}")

    tensorflow_with_threads(THREADS)
    torch_worker = TorchWorker(args.torch_python, __file__, THREADS)
    print(f"uptime: {os.popen('uptime').read().strip()}; torch {torch_worker.hello['torch']}")

    def ask(spec, op):
        return torch_worker.ask(json.dumps({"layer": spec, "op": op}, sort_keys=True))

    def timed(call):
        w0 = time.perf_counter()
        call()
        return time.perf_counter() - w0

    cols = ("TF fwd gemm", "TF fwd bwd-in", "torch fwd", "TF dW", "TF dW mm", "torch dW", "TF dX", "torch dX")
    print(f"{'layer (HxW, Cin->Cout)':32s} " + " ".join(f"{c:>13s}" for c in cols)
          + f" {'fwd':>6s} {'dW':>6s} {'dX':>6s} {'maxerr':>8s}  load  (min ms per call, batch {args.batch})",
          flush=True)
    for name in layers:
        block, cin, cout = VGG16_CONVS[name]
        size = max(1, args.image_size // 2 ** (block - 1))
        spec = {"batch": args.batch, "size": size, "cin": cin, "cout": cout}
        ours, maxerr = _tf_calls(spec)
        ops = [op for op in OPS if not (op == "dX" and cin == 3)]  # the image needs no input gradient
        for call in ours.values():
            call()  # trace / warm-up
        for op in ops:
            ask(spec, op)  # torch builds and warms up
        load0 = os.getloadavg()[0]
        best = {}
        for _ in range(args.rounds):
            for op in ops:
                tf_names = {"fwd": ("fwd gemm", "fwd bwd-in"), "dW": ("dW", "dW mm")}.get(op, (op,))
                for tf_name in tf_names:
                    best[f"TF {tf_name}"] = min(best.get(f"TF {tf_name}", float("inf")), timed(ours[tf_name]))
                best[f"torch {op}"] = min(best.get(f"torch {op}", float("inf")), ask(spec, op)["wall"])

        label = f"{name} ({size}^2, {cin}->{cout})"
        cells = " ".join(f"{best[c] * 1e3:13.1f}" if c in best else f"{'-':>13s}" for c in cols)
        print(f"{label:32s} {cells} {_ratio(best, 'fwd'):>6s} {_ratio(best, 'dW'):>6s} {_ratio(best, 'dX'):>6s} {maxerr:8.1e}  "
              f"{load0:.1f}->{os.getloadavg()[0]:.1f}", flush=True)
    torch_worker.close()
    print("ratio = TF / torch (min wall; fwd / dW: the faster TF forward / kernel gradient). 2 threads each.\n"
          f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
