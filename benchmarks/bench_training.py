"""Training throughput of a 2D and a 3D U-Net vs PyTorch and the matmul peak, measured in one run.

Each configuration runs in its own subprocess, because ``TF_ENABLE_ONEDNN_OPTS`` only acts
before TensorFlow is imported (the child records the value TensorFlow saw):

- ``base``: oneDNN on (the tfmedseg default), float32, no XLA. The child times, interleaved one
  call each per round (so every contender sees the same machine load): ``ours``, the U-Net built
  from the package's pieces as a builder would (``normalization.batch_norm``, the fused BN;
  ``matmul_grad_conv.conv``, the kernel gradient as matmuls, or for 3D as 2D kernel gradients over
  the planes, where it pays; ``concat_conv`` for the
  decoder's ``[upsampled, skip]`` convolution; ``get_optimizer("adam")``, the fused Adam);
  ``ours_opgrad``, the same with ``matmul_grad=False`` (TensorFlow's kernel-gradient op everywhere: what
  ``matmul_grad_conv`` saves); ``keras_bn``, the same network from plain Keras layers (``BatchNormalization``,
  ``Concatenate`` + ``Conv``, ``keras.optimizers.Adam``); the PyTorch peer (same architecture,
  NCHW/NCDHW, Adam, BCE with logits) at 2 threads (``torch``) and 1 thread (``torch_1thread``);
  and a 4096^2 float32 matmul in TensorFlow and in torch (the peak);
- ``onednn0``: oneDNN off (TensorFlow 2.21's default on AMD CPUs);
- ``xla``: ``jit_compile=True``;
- ``bf16``: ``mixed_bfloat16`` policy;
- ``inter1``: ``tf.config.threading.set_inter_op_parallelism_threads(1)`` (one kernel at a time).

torch runs in a persistent worker process (``--torch-python``, default: the environment variable
``TFMEDSEG_TORCH_PYTHON``; the python of an environment with torch and without TensorFlow; without
either, or with ``--torch-python ''``, the torch contenders are skipped with one line saying so;
``--worker`` is that side): for each torch contender the child asks the worker for one call and reads back the worker's own wall and CPU
seconds. The worker counts its network's FLOPs with forward hooks the same way as ours (a warning
is printed if they differ) and reports its parameter count.

Models (perf-baselines section 3): the 2D U-Net has 4 encoder levels (16, 32, 64, 128) and a
256 bottleneck, each level 2 x [Conv3x3 (no bias) - BN - ReLU], MaxPool, Conv2DTranspose(2, s2)
+ concat, a 1x1 head: 1,945,233 parameters (1,942,289 in torch, which keeps no BN moving
statistics as parameters), batch 4 of 256x256x1. The 3D U-Net has the same structure with levels
(8, 16, 32) and a 64 bottleneck on 64^3 patches, batch 1. FLOPs are analytic:
``2 * k^d * c_in * c_out * output voxels`` per convolution (input voxels for a transposed
convolution), a training step counted as 3x the forward pass (forward, input gradient, weight
gradient; the first layer's unneeded input gradient, BN, ReLU, pooling and the optimizer are not
counted). The peak is the best (min-time) of the matmuls timed in the same child (TensorFlow's
and torch's), interleaved with the training steps.

torch runs with ``OMP_WAIT_POLICY=PASSIVE`` unless ``--omp-active``: on a machine shared with
other processes, OpenMP's busy-waiting barriers made a torch step 3-5x slower in CPU seconds
(measured 2026-11 on the 2-vCPU machine at load 7). ``torch_1thread`` (the same network and
optimizer with one thread) bounds what torch would do with two perfectly used cores: half its
time. No numpy matmul in the child: OpenBLAS' spinning threads would steal cores from the next step.

Each step is timed on the wall clock and in process CPU seconds; ``GFLOP/s cpu`` is
``FLOPs / (cpu seconds / threads)``, which is steadier than the wall clock when other processes
share the cores.

``--builders NAME,...`` instead times the package's registered builders (and ``resnet50``, the
backbone of seeds 001/003) twice each, interleaved step by step in one child, with a package switch
off and on (``--compare``, :data:`COMPARISONS`): ``bn`` builds them with Keras'
``BatchNormalization`` and with tfmedseg's ``FusedBatchNormalization`` (``normalization.FUSED_DEFAULT``),
``matmul_grad`` with Keras' convolutions and with ``matmul_grad_conv``'s
(``matmul_grad_conv.MATMUL_GRAD_DEFAULT``), ``planes`` with ``matmul_grad_conv``'s 3D kernel gradient over
the planes off and on (``PLANES_MIN_PIXELS``; the switch holds while each model is built and traced);
trained with ``train_on_batch`` on the shapes of
:data:`BUILDER_INPUTS`; it prints the on / off step-time ratios (median, min, CPU, paired median).

``--profile 2d|3d`` traces ``ours`` with ``tf.profiler`` and prints the kernel time per op kind
(convolution forward / input gradient / weight gradient, BN, ReLU, pooling, concat, loss,
optimizer, host); ``BENCH_MATMUL_GRAD=0`` profiles it without the matmul kernel gradient,
``BENCH_PROFILE_OPS=N`` also lists the N slowest single ops.

Run: ``python benchmarks/bench_training.py [--steps 10] [--models 2d,3d] [--configs base,onednn0,xla,bf16,inter1]``,
``python benchmarks/bench_training.py --builders all [--compare bn|matmul_grad] [--steps 10]`` or ``... --profile 2d``
(with the repository on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

from torch_worker import TorchWorker, add_torch_worker_options, torch_python_problem

CONFIGS = {
    "base": {"onednn": "1", "xla": False, "bf16": False},
    "onednn0": {"onednn": "0", "xla": False, "bf16": False},
    "xla": {"onednn": "1", "xla": True, "bf16": False},
    "bf16": {"onednn": "1", "xla": False, "bf16": True},
    "inter1": {"onednn": "1", "xla": False, "bf16": False, "inter_op": 1},
}
MODELS = {
    "2d": {"rank": 2, "size": 256, "batch": 4, "filters": (16, 32, 64, 128, 256)},
    "3d": {"rank": 3, "size": 64, "batch": 1, "filters": (8, 16, 32, 64)},
}
THREADS = 2
MATMUL_N = 4096
BUILDER_INPUTS = {  # builder name -> (build kwargs, batch size)
    "mobilenetv2_2d": ({"input_shape": (128, 128, 5)}, 8),
    "mobilenetv3_2d": ({"input_shape": (128, 128, 5)}, 8),
    "shufflenetv2_2d": ({"input_shape": (128, 128, 5)}, 8),
    "mobilenetv2_3d": ({"input_shape": (8, 128, 128, 1)}, 2),
    "mobilenetv3_3d": ({"input_shape": (8, 128, 128, 1)}, 2),
    "shufflenetv2_3d": ({"input_shape": (8, 128, 128, 1)}, 2),
    "dsts_3d": ({"input_shape": (8, 128, 128, 1)}, 2),
    "resnet50": ({"input_shape": (160, 160, 1)}, 2),
    "unet": ({"input_shape": (128, 128, 3), "classes": 2, "activation": "softmax"}, 4),  # seed 000, ResNet-34
    "se_unet": ({"input_shape": (32, 64, 64, 2)}, 1),  # seed 004
    "basic_unet": ({"input_shape": (32, 64, 64, 2)}, 1),  # seed 004
}


def _unet(keras, rank: int, size: int, filters, bn=None, concat_conv: bool = False, matmul_grad: bool | None = None):
    """The reference U-Net (module doc); ``bn`` a batch-norm factory, ``concat_conv`` the package's decoder conv.

    ``concat_conv=True`` convolves ``[upsampled, skip]`` with :mod:`tfmedseg.models.blocks.concat_conv`
    (one kernel, the same parameters and function as ``Concatenate`` + ``Conv``). ``matmul_grad``
    (True / False) builds the 3x3 convolutions with the package's factory
    :func:`tfmedseg.models.blocks.matmul_grad_conv.conv` (kernel gradient as matmuls, or not) and the
    upsampling with :func:`tfmedseg.models.blocks.matmul_grad_conv_transpose.conv_transpose` (both
    gradients as matmuls, or not); None: Keras' layers.
    """
    if matmul_grad is None:
        conv = keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D
    else:
        from tfmedseg.models.blocks.matmul_grad_conv import conv as package_conv

        def conv(*args, **kwargs):
            return package_conv(rank, *args, matmul_grad=matmul_grad, **kwargs)
    if matmul_grad is None:
        up = keras.layers.Conv2DTranspose if rank == 2 else keras.layers.Conv3DTranspose
    else:
        from tfmedseg.models.blocks.matmul_grad_conv_transpose import conv_transpose

        def up(*args, **kwargs):
            return conv_transpose(rank, *args, matmul_grad=matmul_grad, **kwargs)
    pool = keras.layers.MaxPooling2D if rank == 2 else keras.layers.MaxPooling3D
    bn = bn or keras.layers.BatchNormalization

    def block(x, f, skip=None):
        for i in range(2):
            if i == 0 and skip is not None and concat_conv:
                from tfmedseg.models.blocks.concat_conv import concat_conv as cc

                x = cc(rank, f, 3, padding="same", use_bias=False, matmul_grad=matmul_grad is not False)([x, skip])
            else:
                if i == 0 and skip is not None:
                    x = keras.layers.Concatenate()([x, skip])
                x = conv(f, 3, padding="same", use_bias=False)(x)
            x = bn()(x)
            x = keras.layers.ReLU()(x)
        return x

    inp = keras.Input((size,) * rank + (1,))
    x, skips = inp, []
    for f in filters[:-1]:
        x = block(x, f)
        skips.append(x)
        x = pool(2)(x)
    x = block(x, filters[-1])
    for f, skip in zip(reversed(filters[:-1]), reversed(skips)):
        x = up(f, 2, strides=2)(x)
        x = block(x, f, skip)
    head = keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D
    out = keras.layers.Activation("linear", dtype="float32")(head(1, 1)(x))
    return keras.Model(inp, out)


def _torch_unet(torch, rank: int, filters, in_ch: int = 1):
    """The same U-Net in PyTorch (NCHW / NCDHW; BN eps 1e-3 and momentum 0.01 as Keras' 0.99)."""
    nn = torch.nn
    conv, bn, convt = ((nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d) if rank == 2
                       else (nn.Conv3d, nn.BatchNorm3d, nn.ConvTranspose3d))

    def block(cin, f):
        layers = []
        for c in (cin, f):
            layers += [conv(c, f, 3, padding=1, bias=False), bn(f, eps=1e-3, momentum=0.01), nn.ReLU()]
        return nn.Sequential(*layers)

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            c = in_ch
            self.down = nn.ModuleList()
            for f in filters[:-1]:
                self.down.append(block(c, f))
                c = f
            self.bottom = block(c, filters[-1])
            c = filters[-1]
            self.ups, self.dec = nn.ModuleList(), nn.ModuleList()
            for f in reversed(filters[:-1]):
                self.ups.append(convt(c, f, 2, stride=2))
                self.dec.append(block(2 * f, f))
                c = f
            self.head = conv(c, 1, 1)
            self.pool = (nn.MaxPool2d if rank == 2 else nn.MaxPool3d)(2)

        def forward(self, x):
            skips = []
            for blk in self.down:
                x = blk(x)
                skips.append(x)
                x = self.pool(x)
            x = self.bottom(x)
            for up, dec, skip in zip(self.ups, self.dec, reversed(skips)):
                x = dec(torch.cat([up(x), skip], 1))
            return self.head(x)

    return UNet()


def _torch_forward_flops(torch, net, x) -> float:
    """Forward FLOPs of the convolutions of ``net`` on batch ``x``, counted as :func:`_forward_flops` does."""
    nn, total = torch.nn, [0.0]

    def hook(module, inputs, output):
        k = 1
        for s in module.kernel_size:
            k *= s
        vox = (inputs[0] if isinstance(module, nn.ConvTranspose2d | nn.ConvTranspose3d) else output)[0, 0].numel()
        total[0] += 2.0 * k * module.in_channels * module.out_channels / module.groups * vox * x.shape[0]

    kinds = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        net.eval()(x)
    net.train()
    for h in handles:
        h.remove()
    return total[0]


def _data(spec):
    """The same input and target arrays on both sides: ``[B, *spatial, 1]`` float32."""
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (spec["batch"],) + (spec["size"],) * spec["rank"] + (1,)
    x = rng.normal(size=shape).astype("float32")
    return x, (x > 0.5).astype("float32")


def worker() -> None:
    """torch side (imports no TensorFlow): build on the first request, then one timed call per request line.

    Requests: ``build <model>`` -> ``{params, gflop, first_step_s, torch}``; ``torch`` / ``torch_1thread`` /
    ``matmul_torch`` -> ``{wall, cpu}`` of one call in this process; an empty line ends it.
    """
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    calls = {}
    for line in sys.stdin:
        req = line.strip()
        if not req:
            break
        if req.startswith("build "):
            spec = MODELS[req.split()[1]]
            torch.manual_seed(0)
            net = _torch_unet(torch, spec["rank"], spec["filters"]).train()
            opt = torch.optim.Adam(net.parameters(), 1e-3)
            loss_fn = torch.nn.BCEWithLogitsLoss()
            x, y = _data(spec)
            tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
            ty = torch.from_numpy(np.moveaxis(y, -1, 1).copy())
            ta, tb = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
            gflop = 3 * _torch_forward_flops(torch, net, tx) / 1e9

            def step(net=net, opt=opt, loss_fn=loss_fn, tx=tx, ty=ty):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(tx), ty)
                loss.backward()
                opt.step()
                return float(loss)

            def step_1thread(step=step):
                torch.set_num_threads(1)
                try:
                    return step()
                finally:
                    torch.set_num_threads(THREADS)

            t0 = time.perf_counter()
            step()
            first = time.perf_counter() - t0
            calls = {"torch": step, "torch_1thread": step_1thread, "matmul_torch": lambda a=ta, b=tb: float((a @ b)[0, 0])}
            print(json.dumps({"params": sum(p.numel() for p in net.parameters()), "gflop": gflop,
                              "first_step_s": first, "torch": torch.__version__}), flush=True)
            continue
        w0, c0 = time.perf_counter(), time.process_time()
        calls[req]()
        print(json.dumps({"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}), flush=True)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _forward_flops(keras, model) -> float:
    """Analytic forward FLOPs per sample of the convolutions (``2 k^d C_in C_out`` per output voxel)."""
    total = 0.0
    for layer in model.layers:
        transposed = isinstance(layer, keras.layers.Conv2DTranspose | keras.layers.Conv3DTranspose)
        if not (transposed or isinstance(layer, keras.layers.Conv2D | keras.layers.Conv3D)):
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]  # ConcatConv: several inputs
        c_in = sum(t.shape[-1] for t in inputs)
        spatial = (inputs[0] if transposed else layer.output).shape[1:-1]  # transposed: per input voxel
        total += 2.0 * _prod(layer.kernel_size) * c_in * layer.filters * _prod(spatial)
    return total


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def child(model_name: str, config_name: str, steps: int, peer: bool, torch_python: str | None,
          omp_active: bool) -> dict:
    """Time ``steps`` rounds (after 2 warm-up rounds) of every contender, interleaved; return the figures."""
    onednn_env = os.environ.get("TF_ENABLE_ONEDNN_OPTS")  # what TensorFlow will see at import
    import tfmedseg  # noqa: F401  (sets the oneDNN default before TensorFlow)
    import keras
    import numpy as np
    import tensorflow as tf

    from tfmedseg.models.blocks.normalization import batch_norm
    from tfmedseg.training.optimizers import get_optimizer

    cfg, spec = CONFIGS[config_name], MODELS[model_name]
    if cfg.get("inter_op"):
        tf.config.threading.set_inter_op_parallelism_threads(cfg["inter_op"])
    keras.utils.set_random_seed(0)
    x, y = _data(spec)
    xt_, yt_ = tf.constant(x), tf.constant(y)

    n = MATMUL_N
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    mm = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
    contenders = {"matmul_tf": lambda: mm().numpy()}
    flops = {"matmul_tf": 2.0 * n**3}
    params = {}
    first = {}

    def keras_contender(name, package: bool, matmul_grad: bool = True):
        if cfg["bf16"]:
            keras.config.set_dtype_policy("mixed_bfloat16")
        model = _unet(keras, spec["rank"], spec["size"], spec["filters"], bn=batch_norm if package else None,
                      concat_conv=package, matmul_grad=matmul_grad if package else None)
        keras.config.set_dtype_policy("float32")
        optimizer = get_optimizer("adam", learning_rate=1e-3) if package else keras.optimizers.Adam(1e-3)
        model.compile(optimizer=optimizer, loss=keras.losses.BinaryCrossentropy(from_logits=True),
                      jit_compile=cfg["xla"])
        t0 = time.perf_counter()
        model.train_on_batch(xt_, yt_)  # traces and compiles
        first[name] = time.perf_counter() - t0
        contenders[name] = lambda: model.train_on_batch(xt_, yt_)
        flops[name] = 3 * _forward_flops(keras, model) * spec["batch"]
        params[name] = int(model.count_params())

    keras_contender("ours", package=True)
    if peer:
        keras_contender("ours_opgrad", package=True, matmul_grad=False)
        keras_contender("keras_bn", package=False)
    worker, torch_version = None, None
    if peer and torch_python:
        worker = TorchWorker(torch_python, __file__, THREADS, omp_active=omp_active, hello=False)
        built = worker.ask(f"build {model_name}")
        torch_version = built["torch"]
        first["torch"] = built["first_step_s"]
        params["torch"] = built["params"]
        for k in ("torch", "torch_1thread", "matmul_torch"):
            contenders[k] = (lambda k=k: worker.ask(k))
        flops["torch"] = flops["torch_1thread"] = built["gflop"] * 1e9
        flops["matmul_torch"] = 2.0 * n**3

    remote = {"torch", "torch_1thread", "matmul_torch"} if worker is not None else set()

    def timed(k):
        """(wall s, CPU s) of one call; a torch call is timed inside the worker (its own process CPU time)."""
        if k in remote:
            got = contenders[k]()
            return got["wall"], got["cpu"]
        return _timed(contenders[k])

    for _ in range(2):  # warm-up rounds
        for k in contenders:
            timed(k)
    wall = {k: [] for k in contenders}
    cpu = {k: [] for k in contenders}
    load = [os.getloadavg()[0]]
    for _ in range(steps):
        for k in contenders:
            w, c = timed(k)
            wall[k].append(w)
            cpu[k].append(c)
    load.append(os.getloadavg()[0])
    if worker is not None:
        worker.close()
    out = {"model": model_name, "config": config_name, "batch": spec["batch"], "params": params,
           "first_step_s": first, "load_avg": load, "threads": THREADS, "contenders": {},
           "tf_enable_onednn_opts": onednn_env, "torch": torch_version,
           "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
           "intra_op": tf.config.threading.get_intra_op_parallelism_threads()}
    for k in contenders:
        w, c = np.array(wall[k]), np.array(cpu[k])
        out["contenders"][k] = {
            "wall_min": float(w.min()), "wall_med": float(np.median(w)), "cpu_med": float(np.median(c)),
            "gflop": flops[k] / 1e9,
        }
    return out


#: ``--compare`` -> (module attribute switched, label when off, label when on, what is counted)
COMPARISONS = {
    "bn": ("tfmedseg.models.blocks.normalization.FUSED_DEFAULT", "keras", "fused", "BN"),
    "matmul_grad": ("tfmedseg.models.blocks.matmul_grad_conv.MATMUL_GRAD_DEFAULT", "opgrad", "matmul", "mmconv"),
    "planes": ("tfmedseg.models.blocks.matmul_grad_conv.PLANES_MIN_PIXELS", "noplanes", "planes", "planes"),
}
#: Attribute values for off / on where they are not False / True (``None``: the module's own value)
SWITCH_VALUES = {"planes": (10**9, None)}


def _counted_layers(model, compare: str) -> int:
    """Layers the comparison acts on: fused BNs, or convolutions taking the matmul / planes kernel gradient."""
    from tfmedseg.models.blocks import matmul_grad_conv
    from tfmedseg.models.blocks.normalization import FusedBatchNormalization

    if compare == "bn":
        return sum(isinstance(l, FusedBatchNormalization) for l in model._flatten_layers())
    forms = ("planes",) if compare == "planes" else ("planes", "matmuls")
    count = 0
    for layer in model._flatten_layers():
        if isinstance(layer, matmul_grad_conv.MatmulGradConv2D | matmul_grad_conv.MatmulGradConv3D) and layer.matmul_grad:
            try:
                inputs = layer.input if isinstance(layer.input, list) else [layer.input]
            except (AttributeError, ValueError):  # a layer called inside another layer (no functional input)
                continue
            count += any(matmul_grad_conv.kernel_grad_form(layer, tuple(t.shape)) in forms for t in inputs)
    return count


@contextlib.contextmanager
def _switched(compare: str, on: bool):
    """The ``compare`` switch set off or on while building and tracing (forms are picked when traced)."""
    import importlib

    module_name, attr = COMPARISONS[compare][0].rsplit(".", 1)
    module = importlib.import_module(module_name)
    default = getattr(module, attr)
    value = SWITCH_VALUES.get(compare, (False, True))[int(on)]
    setattr(module, attr, default if value is None else value)
    try:
        yield
    finally:
        setattr(module, attr, default)


def _build_for_bench(name: str):
    """Build ``name`` (under the caller's :func:`_switched`); returns (model, batch, input array, target array)."""
    import keras
    import numpy as np

    from tfmedseg.models import registry

    kwargs, batch = BUILDER_INPUTS.get(name, ({}, 2))
    keras.utils.set_random_seed(0)
    if name == "resnet50":
        from tfmedseg.models.backbones.resnet import build_resnet_backbone

        backbone = build_resnet_backbone(**kwargs)
        pooled = keras.layers.GlobalAveragePooling2D()(backbone.output["C5"])
        model = keras.Model(backbone.inputs, keras.layers.Dense(2, activation="softmax")(pooled))
    else:
        model = registry.build(name, **kwargs)
    rng = np.random.default_rng(0)
    x = rng.random((batch, *model.inputs[0].shape[1:])).astype("float32")
    out = model.outputs[0]
    labels = rng.integers(0, out.shape[-1], size=(batch, *out.shape[1:-1]))
    y = np.eye(out.shape[-1], dtype="float32")[labels]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.CategoricalCrossentropy())
    return model, batch, x, y


def builders_child(names: list[str], steps: int, compare: str = "bn") -> dict:
    """Time each builder with the ``compare`` switch off and on, interleaved step by step; return the figures."""
    import tfmedseg  # noqa: F401
    import numpy as np
    import tensorflow as tf

    _, off, on, _ = COMPARISONS[compare]
    contenders, info = {}, {}
    for name in names:
        for flag in (False, True):
            with _switched(compare, flag):
                model, batch, x, y = _build_for_bench(name)
                xt, yt = tf.constant(x), tf.constant(y)
                model.train_on_batch(xt, yt)  # trace
                key = f"{name}/{on if flag else off}"
                info[key] = {"batch": batch, "layers": _counted_layers(model, compare), "params": int(model.count_params())}
            contenders[key] = (lambda m=model, a=xt, b=yt: m.train_on_batch(a, b))
    for fn in contenders.values():
        fn()
    wall = {k: [] for k in contenders}
    cpu = {k: [] for k in contenders}
    load = [os.getloadavg()[0]]
    for _ in range(steps):
        for name in names:  # off and on of one builder back to back, alternating which goes first
            pair = [f"{name}/{off}", f"{name}/{on}"]
            for k in (pair if _ % 2 == 0 else pair[::-1]):
                w, c = _timed(contenders[k])
                wall[k].append(w)
                cpu[k].append(c)
    load.append(os.getloadavg()[0])
    out = {"load_avg": load, "compare": compare, "contenders": {}}
    for k in contenders:
        w, c = np.array(wall[k]), np.array(cpu[k])
        out["contenders"][k] = {**info[k], "wall_min": float(w.min()), "wall_med": float(np.median(w)),
                                "cpu_med": float(np.median(c))}
    for name in names:
        a, b = np.array(wall[f"{name}/{off}"]), np.array(wall[f"{name}/{on}"])
        out["contenders"][f"{name}/{on}"]["paired_ratio_med"] = float(np.median(b / a))
    return out


def _print_builders(res: dict) -> None:
    c = res["contenders"]
    _, off, on, counted = COMPARISONS[res["compare"]]
    print(f"load avg {res['load_avg'][0]:.2f} -> {res['load_avg'][1]:.2f}")
    print(f"{'builder':18s} {'batch':>5s} {counted:>6s} {off + ' s med':>11s} {on + ' s med':>11s} {'med':>6s} "
          f"{'min':>6s} {'cpu':>6s} {'paired':>6s}  ({on} / {off} step time)")
    for key in c:
        if not key.endswith(f"/{off}"):
            continue
        name = key[: -len(off) - 1]
        k, f = c[key], c[f"{name}/{on}"]
        print(f"{name:18s} {k['batch']:5d} {f['layers']:6d} {k['wall_med']:11.3f} {f['wall_med']:11.3f} "
              f"{f['wall_med'] / k['wall_med']:5.2f}x {f['wall_min'] / k['wall_min']:5.2f}x "
              f"{f['cpu_med'] / k['cpu_med']:5.2f}x {f['paired_ratio_med']:5.2f}x")


def bn_layer_bench(rounds: int) -> None:
    """Conv (no bias) -> batch norm -> ReLU, forward + backward in training mode, Keras BN vs fused, interleaved."""
    import tfmedseg  # noqa: F401
    import keras
    import numpy as np
    import tensorflow as tf

    from tfmedseg.models.blocks.normalization import batch_norm

    cases = {"2d [8,128,128,32]": (8, 128, 128, 32), "3d [2,32,64,64,16]": (2, 32, 64, 64, 16)}
    fns = {}
    for label, shape in cases.items():
        x = tf.constant(np.random.default_rng(0).normal(size=shape).astype("float32"))
        conv_cls = keras.layers.Conv2D if len(shape) == 4 else keras.layers.Conv3D
        for fused in (False, True):
            conv, bn = conv_cls(shape[-1], 3, padding="same", use_bias=False), batch_norm(fused=fused)

            @tf.function
            def step(x=x, conv=conv, bn=bn):
                with tf.GradientTape() as tape:
                    y = tf.nn.relu(bn(conv(x), training=True))
                    loss = tf.reduce_sum(y * y)
                return tape.gradient(loss, conv.trainable_weights + bn.trainable_weights)

            step()
            fns[f"{label} {'fused' if fused else 'keras'}"] = step
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    load0 = os.getloadavg()[0]
    for i in range(rounds):
        for k in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
            w, c = _timed(lambda f=fns[k]: [g.numpy() for g in f()])
            wall[k].append(w)
            cpu[k].append(c)
    print(f"conv3x3 (no bias) + BN + ReLU, forward + backward, {rounds} interleaved rounds; "
          f"load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    for label in cases:
        k, f = f"{label} keras", f"{label} fused"
        print(f"{label:20s} keras med {np.median(wall[k]) * 1e3:7.1f} ms (cpu {np.median(cpu[k]) * 1e3:6.1f})  "
              f"fused med {np.median(wall[f]) * 1e3:7.1f} ms (cpu {np.median(cpu[f]) * 1e3:6.1f})  fused/keras: "
              f"median {np.median(wall[f]) / np.median(wall[k]):.2f}x, min {min(wall[f]) / min(wall[k]):.2f}x, "
              f"cpu {np.median(cpu[f]) / np.median(cpu[k]):.2f}x")


def _op_kind(name: str, op_type: str) -> str:
    """Kind of one traced TensorFlow op (``name`` is its graph name, ``op_type`` its kernel)."""
    grad = "gradient_tape" in name
    if "BackpropFilter" in op_type:
        return "conv weight gradient (Conv*BackpropFilter)"
    if "MatMul" in op_type or op_type in ("Pack", "Pad", "PadV2", "Slice"):  # only matmul_grad_conv's gradient has these
        return "conv weight gradient as matmuls (+ pads, slices)"
    if "conv_transpose" in name and not grad:
        return "transposed conv forward"
    if "BackpropInput" in op_type or (grad and "Conv" in op_type):
        return "conv input gradient (Conv*BackpropInput)"
    if "Conv" in op_type:
        return "conv forward"
    if "BatchNorm" in op_type:
        return f"fused BN {'backward' if grad or 'Grad' in op_type else 'forward'}"
    if "Relu" in op_type:
        return "ReLU forward / backward"
    if "MaxPool" in op_type:
        return "max pool forward / backward"
    if op_type in ("ConcatV2", "Slice") or "concatenate" in name:
        return "concat forward / backward (slices)"
    if "BiasAdd" in op_type:
        return "bias add (head, transposed convs) fwd / bwd"
    if "loss" in name or "crossentropy" in name:
        return "loss forward / backward"
    if "adam" in name.lower() or "optimizer" in name or op_type.startswith(("ResourceApply", "Assign")):
        return "optimizer update"
    if op_type in ("Cast", "Transpose", "Reshape"):
        return "casts / transposes / reshapes"
    return "other ops"


def profile(model_name: str, steps: int) -> None:
    """``tf.profiler`` trace of ``steps`` training steps of ``ours`` (the package's BN and Adam); print op time by kind.

    Times are the kernels' own durations from the trace summed over TensorFlow's inter-op threads
    (two kernels may run at once, each on the intra-op pool), so the column sums to more than the
    wall time; "host / idle" is the step's wall time times the inter-op thread count minus that sum.
    """
    import glob
    import tempfile
    from collections import Counter

    import tfmedseg  # noqa: F401
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from tfmedseg.models.blocks.normalization import batch_norm
    from tfmedseg.training.optimizers import get_optimizer

    spec = MODELS[model_name]
    keras.utils.set_random_seed(0)
    x, y = (tf.constant(v) for v in _data(spec))
    model = _unet(keras, spec["rank"], spec["size"], spec["filters"], bn=batch_norm, concat_conv=True,
                  matmul_grad=os.environ.get("BENCH_MATMUL_GRAD", "1") == "1")
    model.compile(optimizer=get_optimizer("adam", learning_rate=1e-3),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    for _ in range(3):
        model.train_on_batch(x, y)
    walls = []
    for _ in range(steps):
        walls.append(_timed(lambda: model.train_on_batch(x, y))[0])
    logdir = tempfile.mkdtemp(prefix="bench_training_profile_")
    tf.profiler.experimental.start(logdir)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    traced = (time.perf_counter() - t0) / steps
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    kinds, calls, others, per_op = Counter(), Counter(), Counter(), Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for ev in line.events:
                name = plane.event_metadata[ev.metadata_id].name
                if ":" not in name or "::" in name or " " in name.rsplit(":", 1)[1]:
                    continue  # the executor's own spans (ExecutorState::Process, ...), not kernels
                op_name, op_type = name.rsplit(":", 1)
                kind = _op_kind(op_name, op_type)
                kinds[kind] += ev.duration_ps / 1e12 / steps
                per_op[f"{op_type} {op_name}"] += ev.duration_ps / 1e12 / steps
                if kind == "other ops":
                    others[op_type] += ev.duration_ps / 1e12 / steps
                calls[kind] += 1
    inter = tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count()
    total = sum(kinds.values())
    kinds["host / idle (wall x inter-op threads - kernels)"] = max(0.0, traced * inter - total)
    gflop = 3 * _forward_flops(keras, model) * spec["batch"] / 1e9
    print(f"{model_name} U-Net, {gflop:.1f} GFLOP per step; untraced step wall median {np.median(walls):.3f} s, "
          f"traced {traced:.3f} s; {inter} inter-op threads; kernels summed {total:.3f} s per step")
    grand = sum(kinds.values())
    print(f"{'op kind':50s} {'ms/step':>8s} {'share':>6s} {'calls':>6s}")
    if os.environ.get("BENCH_PROFILE_OPS"):  # the slowest single ops (kernel ms per step)
        for op, sec in per_op.most_common(int(os.environ["BENCH_PROFILE_OPS"])):
            print(f"  {sec * 1e3:7.2f} ms  {op}")
    if os.environ.get("BENCH_PROFILE_OTHERS"):
        print(others.most_common(30))
    for kind, sec in kinds.most_common():
        print(f"{kind:50s} {sec * 1e3:8.1f} {100 * sec / grand:5.1f}% {calls[kind] // steps:6d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed rounds per configuration (after 2 warm-up rounds)")
    parser.add_argument("--models", default="2d,3d")
    parser.add_argument("--configs", default="base,onednn0,xla,bf16")
    parser.add_argument("--no-peer", action="store_true", help="skip torch and the Keras-BN variant in 'base'")
    add_torch_worker_options(parser, "; '' skips torch")
    parser.add_argument("--omp-active", action="store_true",
                        help="leave OpenMP's busy-wait default for torch (PASSIVE is set otherwise: see docstring)")
    parser.add_argument("--builders", help="comma-separated builder names (or 'all'): each built with the --compare "
                        "switch off and on")
    parser.add_argument("--compare", default="bn", choices=sorted(COMPARISONS),
                        help="--builders: 'bn' Keras vs fused batch norm, 'matmul_grad' the kernel-gradient op vs matmuls, "
                        "'planes' the 3D kernel gradient over the planes off vs on")
    parser.add_argument("--bn-layer", action="store_true",
                        help="only conv + BN + ReLU fwd+bwd, Keras BN vs the fused BN (a quick check)")
    parser.add_argument("--profile", metavar="MODEL", help="tf.profiler trace of 'ours' on MODEL: time per op kind")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    if args.bn_layer:
        print(f"uptime: {os.popen('uptime').read().strip()}")
        bn_layer_bench(args.steps)
        return
    if args.profile:
        print(f"uptime: {os.popen('uptime').read().strip()}")
        profile(args.profile, args.steps)
        print(f"uptime: {os.popen('uptime').read().strip()}")
        return
    if args.builders:
        names = list(BUILDER_INPUTS) if args.builders == "all" else args.builders.split(",")
        print(f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}; "
              f"{args.steps} interleaved rounds after 1 warm-up")
        res = builders_child(names, args.steps, args.compare)
        _print_builders(res)
        print("RESULT " + json.dumps(res))
        return
    torch_problem = torch_python_problem(args.torch_python)
    torch_python = None if torch_problem else args.torch_python
    if args.child:
        peer = args.child[1] == "base" and not args.no_peer
        res = child(args.child[0], args.child[1], args.steps, peer, torch_python, args.omp_active)
        print("RESULT " + json.dumps(res))
        return

    print(f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}, {THREADS} threads per framework; "
          f"torch: {torch_python or 'skipped (no torch contenders): ' + torch_problem}")
    results = []
    for model_name in args.models.split(","):
        for config_name in args.configs.split(","):
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=CONFIGS[config_name]["onednn"], TF_CPP_MIN_LOG_LEVEL="2",
                       OMP_NUM_THREADS=str(THREADS))
            cmd = [sys.executable, __file__, "--child", model_name, config_name, "--steps", str(args.steps),
                   "--torch-python", torch_python or ""]
            cmd += (["--no-peer"] if args.no_peer else []) + (["--omp-active"] if args.omp_active else [])
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{model_name}/{config_name}: failed\n{proc.stderr[-3000:]}")
                continue
            res = json.loads(line[7:])
            results.append(res)
            _print_child(res)
    _print_summary(results)
    print(f"uptime at the end: {os.popen('uptime').read().strip()}")


def _print_child(res: dict) -> None:
    c = res["contenders"]
    peak = max(v["gflop"] / v["wall_min"] for k, v in c.items() if k.startswith("matmul"))
    peak_cpu = max(v["gflop"] / (v["cpu_med"] / THREADS) for k, v in c.items() if k.startswith("matmul"))
    print(f"\n{res['model']}/{res['config']}  (load avg {res['load_avg'][0]:.2f} -> {res['load_avg'][1]:.2f}; "
          f"TF_ENABLE_ONEDNN_OPTS={res['tf_enable_onednn_opts']}, inter/intra-op threads "
          f"{res['inter_op']}/{res['intra_op']}; torch {res['torch']}; params {res['params']}; first step s "
          f"{', '.join(f'{k} {v:.1f}' for k, v in res['first_step_s'].items())})")
    print(f"{'contender':14s} {'GF/call':>8s} {'s min':>7s} {'s med':>7s} {'cpu s med':>9s} {'GF/s min':>8s} "
          f"{'GF/s med':>8s} {'GF/s cpu':>8s} {'%peak min':>9s} {'%peak cpu':>9s} {'img/s':>6s}")
    for k, v in c.items():
        threads = 1 if k.endswith("1thread") else THREADS
        g_min, g_med, g_cpu = v["gflop"] / v["wall_min"], v["gflop"] / v["wall_med"], v["gflop"] / (v["cpu_med"] / threads)
        img = f"{res['batch'] / v['wall_med']:6.2f}" if not k.startswith("matmul") else ""
        print(f"{k:14s} {v['gflop']:8.1f} {v['wall_min']:7.3f} {v['wall_med']:7.3f} {v['cpu_med']:9.3f} {g_min:8.1f} "
              f"{g_med:8.1f} {g_cpu:8.1f} {100 * g_min / peak:8.1f}% {100 * g_cpu / peak_cpu:8.1f}% {img}")
    print(f"peak (best matmul, min time; threads={THREADS}) {peak:.1f} GFLOP/s; cpu-time based {peak_cpu:.1f} GFLOP/s")
    if "torch" in c:
        t, t1 = c["torch"], c["torch_1thread"]
        if abs(t["gflop"] / c["ours"]["gflop"] - 1) > 1e-6:
            print(f"WARNING: torch network {t['gflop']:.3f} GFLOP per step, ours {c['ours']['gflop']:.3f}")
        for k in ("ours", "ours_opgrad", "keras_bn"):
            if k in c:
                o = c[k]
                print(f"{k} / torch (2 threads) step time: median {o['wall_med'] / t['wall_med']:.2f}x, "
                      f"min {o['wall_min'] / t['wall_min']:.2f}x, cpu {o['cpu_med'] / t['cpu_med']:.2f}x  (goal <= 0.7x)")
                print(f"{k} / torch ideal 2-thread (1-thread time / 2): median "
                      f"{o['wall_med'] / (t1['wall_med'] / 2):.2f}x, min {o['wall_min'] / (t1['wall_min'] / 2):.2f}x, "
                      f"cpu {o['cpu_med'] / t1['cpu_med']:.2f}x  (goal <= 1.0x; torch on an idle machine)")


def _print_summary(results: list) -> None:
    if not results:
        return
    print("\nSummary (step time median, ratio to oneDNN-on float32 'ours' of the same model)")
    for r in results:
        base = next((b for b in results if b["model"] == r["model"] and b["config"] == "base"), r)
        bk = base["contenders"]["ours"]["wall_med"]
        bc = base["contenders"]["ours"]["cpu_med"]
        for k, v in r["contenders"].items():
            if k.startswith("matmul"):
                continue
            print(f"{r['model']:3s} {r['config']:8s} {k:14s} {v['wall_med']:7.3f} s  {v['wall_med'] / bk:5.2f}x  "
                  f"cpu {v['cpu_med']:7.3f} s  {v['cpu_med'] / bc:5.2f}x")


if __name__ == "__main__":
    main()
