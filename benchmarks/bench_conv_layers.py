"""Per-layer convolution speed: TensorFlow (oneDNN) vs torch on VGG-16 / U-Net layers, interleaved in one run.

The measurement behind ``docs/performance.md`` ("Why SSD stayed at ~1.9x, and the fix"; "Training
step": the kernel gradient as matmuls). For each 3x3 "same" convolution of ``--net`` (``vgg16``: the
VGG-16 body of SSD512, 1 image; ``unet2d`` / ``unet3d``: the U-Nets of ``bench_training.py``, whose
decoder convolutions of ``[upsampled, skip]`` have the shapes of the encoder's second convolution per
level once split by ``concat_conv``) it times, on one batch of random data,

- ``TF fwd``: ``relu(bias_add(conv(x, k)))`` - the plain ``Conv2D`` / ``Conv3D`` graph op (oneDNN runs
  a 2D one as ``x64:gemm:jit``, im2col + SGEMM, for a 1-image batch on an AVX2 CPU);
- ``TF fwd bwd-in`` (2D): the same forward computed as ``Conv2DBackpropInput`` of the flipped,
  transposed kernel (``brg_conv_bwd``), i.e. what :class:`tfmedseg.models.blocks.onednn_conv.OneDNNConv2D` runs;
- ``TF dW`` / ``TF dX``: ``Conv*BackpropFilter`` / ``Conv*BackpropInput`` for a given output gradient
  (no ``dX`` for a first layer, whose input is the image);
- ``TF dW taps`` / ``TF dW im2col``: the kernel gradient as matmuls
  (:func:`tfmedseg.models.blocks.matmul_grad_conv.kernel_grad_as_matmuls`): one per tap, or in column
  chunks of at most ``--im2col-mib`` (the ``dW`` ratio uses the fastest TF kernel gradient);
- ``TF dW planes`` (3D): the kernel gradient as one 2D kernel gradient per depth tap over the planes
  (:func:`tfmedseg.models.blocks.matmul_grad_conv.kernel_grad_by_planes`, oneDNN's direct 2D kernel);
- the same three for torch: ``relu(conv(x, w, b, padding=1))`` and ``aten.convolution_backward``
  with only the kernel / only the input gradient requested.

TF runs in this process; torch runs in a persistent worker process in a torch environment without
TensorFlow (``--torch-python``, default: the environment variable
``TFMEDSEG_TORCH_PYTHON``; without either the script stops with exit status 2), driven over a pipe as in
``bench_detection.py``: each round the parent times one TF call, then asks the worker for one torch
call of the same kind and reads back the worker's own wall and CPU seconds, so both see the same
load. Both use 2 threads; torch with ``OMP_WAIT_POLICY=PASSIVE``. Each call is warmed up once; the
table gives the **minimum** wall milliseconds over ``--rounds`` calls and the ratios TF / torch
(``fwd`` uses the faster TF forward). ``maxerr`` is the largest absolute difference between the two
TF forwards (2D) and ``dWerr`` the largest difference of the matmul kernel gradients from ``TF dW``,
relative to its largest value.

Run: ``python benchmarks/bench_conv_layers.py [--net vgg16|unet2d|unet3d] [--rounds 3] [--image-size N]
[--batch N] [--layers name,...]`` (``--worker`` is the torch side; it imports no TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from torch_worker import (TorchWorker, add_torch_worker_options, require_torch_python, serve_timed_calls,
                          tensorflow_with_threads)

THREADS = 2
#: VGG-16 3x3 convolutions: name -> (level, input channels, output channels); the feature map of
#: level ``l`` is ``image_size / 2**l`` on a side (VGG block ``l + 1``).
VGG16_CONVS = {
    "block1_conv1": (0, 3, 64), "block1_conv2": (0, 64, 64),
    "block2_conv1": (1, 64, 128), "block2_conv2": (1, 128, 128),
    "block3_conv1": (2, 128, 256), "block3_conv2": (2, 256, 256), "block3_conv3": (2, 256, 256),
    "block4_conv1": (3, 256, 512), "block4_conv2": (3, 512, 512), "block4_conv3": (3, 512, 512),
    "block5_conv1": (4, 512, 512), "block5_conv2": (4, 512, 512), "block5_conv3": (4, 512, 512),
}


def _unet_convs(filters) -> dict:
    """The 3x3 convolutions of ``bench_training``'s U-Net with ``filters`` (the decoder's are the encoder's ``conv2``)."""
    convs, cin = {}, 1
    for level, f in enumerate(filters):
        name = f"level{level}" if level < len(filters) - 1 else "bottleneck"
        convs[f"{name}_conv1"] = (level, cin, f)
        convs[f"{name}_conv2"] = (level, f, f)
        cin = f
    return convs


#: net -> (rank, image size, batch, convolutions, default layers)
NETS = {
    "vgg16": (2, 512, 1, VGG16_CONVS, "block1_conv1,block1_conv2,block2_conv2,block3_conv2,block4_conv2"),
    "unet2d": (2, 256, 4, _unet_convs((16, 32, 64, 128, 256)), None),
    "unet3d": (3, 64, 1, _unet_convs((8, 16, 32, 64)), None),
}
OPS = ("fwd", "dW", "dX")


# ----------------------------------------------------------------------------- torch worker
def worker() -> None:
    """torch side: one call per request line ``{"layer": spec, "op": op}``, reply with timings."""
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)

    def build(layer, op):
        n, r, h, c, f = layer["batch"], layer["rank"], layer["size"], layer["cin"], layer["cout"]
        x, dy = torch.randn(n, c, *(h,) * r), torch.randn(n, f, *(h,) * r)
        w, b = torch.randn(f, c, *(3,) * r) * 0.05, torch.randn(f)
        conv = torch.nn.functional.conv2d if r == 2 else torch.nn.functional.conv3d
        backward = torch.ops.aten.convolution_backward
        mask = {"dW": [False, True, False], "dX": [True, False, False]}.get(op)

        def run():
            with torch.no_grad():
                if op == "fwd":
                    return torch.relu(conv(x, w, b, padding=1))
                return backward(dy, x, w, [f], [1] * r, [1] * r, [1] * r, False, [0] * r, 1, mask)

        return run

    serve_timed_calls(lambda line: build(**json.loads(line)), {"torch": torch.__version__})


# ----------------------------------------------------------------------------- TensorFlow
def _tf_calls(spec: dict, im2col_bytes: int, seed: int = 0) -> tuple[dict, float, float]:
    """TF calls for one layer (names as in the module doc), the forwards' max |difference| and dWerr."""
    import numpy as np
    import tensorflow as tf  # tfmedseg was imported first in main()

    from tfmedseg.models.blocks.matmul_grad_conv import kernel_grad_as_matmuls, kernel_grad_by_planes
    from tfmedseg.models.blocks.onednn_conv import _same_conv_as_backprop_input

    rng = np.random.default_rng(seed)
    n, r, h, c, f = spec["batch"], spec["rank"], spec["size"], spec["cin"], spec["cout"]
    x = tf.constant(rng.normal(size=(n, *(h,) * r, c)).astype(np.float32))
    dy = tf.constant(rng.normal(size=(n, *(h,) * r, f)).astype(np.float32))
    k = tf.Variable(rng.normal(size=(*(3,) * r, c, f)).astype(np.float32) * 0.05)
    b = tf.Variable(rng.normal(size=f).astype(np.float32))
    strides = [1] * (r + 2)
    backprop_filter = tf.raw_ops.Conv2DBackpropFilter if r == 2 else tf.raw_ops.Conv3DBackpropFilterV2
    backprop_input = tf.raw_ops.Conv2DBackpropInput if r == 2 else tf.raw_ops.Conv3DBackpropInputV2

    fwd = tf.function(lambda x: tf.nn.relu(tf.nn.bias_add(tf.nn.convolution(x, k, 1, "SAME"), b)))
    d_w = tf.function(lambda x, dy: backprop_filter(
        input=x, filter_sizes=tf.shape(k), out_backprop=dy, strides=strides, padding="SAME"))
    d_w_taps = tf.function(lambda x, dy: kernel_grad_as_matmuls(x, dy, (3,) * r))
    d_w_cols = tf.function(lambda x, dy: kernel_grad_as_matmuls(x, dy, (3,) * r, im2col_bytes=im2col_bytes))
    d_x = tf.function(lambda x, dy: backprop_input(
        input_sizes=tf.shape(x), filter=k, out_backprop=dy, strides=strides, padding="SAME"))
    calls = {
        "fwd": lambda: fwd(x).numpy(),
        "dW": lambda: d_w(x, dy).numpy(),
        "dW taps": lambda: d_w_taps(x, dy).numpy(),
        "dW im2col": lambda: d_w_cols(x, dy).numpy(),
        "dX": lambda: d_x(x, dy).numpy(),
    }
    if r == 3:
        d_w_planes = tf.function(lambda x, dy: kernel_grad_by_planes(x, dy, (3,) * r))
        calls["dW planes"] = lambda: d_w_planes(x, dy).numpy()
    maxerr = 0.0
    if r == 2:
        fwd_bwd_in = tf.function(lambda x: tf.nn.relu(tf.nn.bias_add(_same_conv_as_backprop_input(x, k), b)))
        calls["fwd bwd-in"] = lambda: fwd_bwd_in(x).numpy()
        maxerr = float(np.max(np.abs(calls["fwd"]() - calls["fwd bwd-in"]())))
    ref = calls["dW"]()
    dw_err = max(float(np.max(np.abs(calls[name]() - ref))) for name in ("dW taps", "dW im2col", "dW planes")
                 if name in calls) / float(np.max(np.abs(ref)))
    return calls, maxerr, dw_err


TF_NAMES = {"fwd": ("fwd", "fwd bwd-in"), "dW": ("dW", "dW taps", "dW im2col", "dW planes")}


def _ratio(best: dict, op: str) -> str:
    """TF / torch minimum wall for ``op`` (``fwd`` / ``dW``: the fastest TF form), or ``-``."""
    if f"torch {op}" not in best:
        return "-"
    tf_best = min(best[f"TF {name}"] for name in TF_NAMES.get(op, (op,)) if f"TF {name}" in best)
    return f"{tf_best / best[f'torch {op}']:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="vgg16", choices=sorted(NETS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-size", type=int, help="input side (default: vgg16 512 as SSD512, unet2d 256, unet3d 64); "
                        "level l's feature map is image_size / 2**l")
    parser.add_argument("--batch", type=int, help="default: vgg16 1, unet2d 4, unet3d 1 (bench_training's)")
    parser.add_argument("--layers", help="comma-separated layer names of --net (default: a selection for vgg16, all for U-Nets)")
    parser.add_argument("--im2col-mib", type=float, default=8.0, help="column chunk bound of 'TF dW im2col' in MiB")
    add_torch_worker_options(parser)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    torch_python = require_torch_python(args.torch_python, parser.prog)
    rank, image_size, batch, convs, default_layers = NETS[args.net]
    image_size, batch = args.image_size or image_size, args.batch or batch
    layers = (args.layers or default_layers or ",".join(convs)).split(",")
    unknown = [name for name in layers if name not in convs]
    if unknown:
        parser.error(f"unknown --layers {unknown}; choose from {', '.join(convs)}")

    tensorflow_with_threads(THREADS)
    torch_worker = TorchWorker(torch_python, __file__, THREADS)
    print(f"uptime: {os.popen('uptime').read().strip()}; torch {torch_worker.hello['torch']}")

    def ask(spec, op):
        return torch_worker.ask(json.dumps({"layer": spec, "op": op}, sort_keys=True))

    def timed(call):
        w0 = time.perf_counter()
        call()
        return time.perf_counter() - w0

    cols = ("TF fwd", "TF fwd bwd-in", "torch fwd", "TF dW", "TF dW taps", "TF dW im2col", "TF dW planes", "torch dW",
            "TF dX", "torch dX")
    print(f"{'layer (size, Cin->Cout)':32s} " + " ".join(f"{c:>13s}" for c in cols)
          + f" {'fwd':>6s} {'dW':>6s} {'dX':>6s} {'maxerr':>8s} {'dWerr':>8s}  load  "
          f"(min ms per call, {args.net}, batch {batch}, im2col chunks <= {args.im2col_mib:g} MiB)", flush=True)
    for name in layers:
        level, cin, cout = convs[name]
        size = max(1, image_size // 2 ** level)
        spec = {"batch": batch, "rank": rank, "size": size, "cin": cin, "cout": cout}
        ours, maxerr, dw_err = _tf_calls(spec, int(args.im2col_mib * 2**20))
        ops = [op for op in OPS if not (op == "dX" and level == 0 and cin <= 3)]  # the image needs no input gradient
        for call in ours.values():
            call()  # trace / warm-up
        for op in ops:
            ask(spec, op)  # torch builds and warms up
        load0 = os.getloadavg()[0]
        best = {}
        for _ in range(args.rounds):
            for op in ops:
                for tf_name in TF_NAMES.get(op, (op,)):
                    if tf_name in ours:
                        best[f"TF {tf_name}"] = min(best.get(f"TF {tf_name}", float("inf")), timed(ours[tf_name]))
                best[f"torch {op}"] = min(best.get(f"torch {op}", float("inf")), ask(spec, op)["wall"])

        label = f"{name} ({size}^{rank}, {cin}->{cout})"
        cells = " ".join(f"{best[c] * 1e3:13.1f}" if c in best else f"{'-':>13s}" for c in cols)
        print(f"{label:32s} {cells} {_ratio(best, 'fwd'):>6s} {_ratio(best, 'dW'):>6s} {_ratio(best, 'dX'):>6s} "
              f"{maxerr:8.1e} {dw_err:8.1e}  {load0:.1f}->{os.getloadavg()[0]:.1f}", flush=True)
    torch_worker.close()
    print("ratio = TF / torch (min wall; fwd / dW: the fastest TF form). 2 threads each.\n"
          f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
