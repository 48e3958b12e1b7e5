"""Training throughput of a 2D and a 3D U-Net vs PyTorch and the matmul peak, measured in one run.

Each configuration runs in its own subprocess, because ``TF_ENABLE_ONEDNN_OPTS`` only acts
before TensorFlow is imported:

- ``base``: oneDNN on (the tfmedseg default), float32, no XLA. For the 2D model this child also
  times, interleaved step by step with ours (so every contender sees the same machine load):
  the PyTorch peer (same architecture, NCHW, ``torch.set_num_threads(2)``, Adam, BCE with
  logits), our network with a fused batch norm (``FusedBatchNormV3`` kernels, variant
  ``fusedbn``), and a 4096^2 float32 matmul in TensorFlow and torch (the peak);
- ``onednn0``: oneDNN off (TensorFlow 2.21's default on AMD CPUs);
- ``xla``: ``jit_compile=True``;
- ``bf16``: ``mixed_bfloat16`` policy.

Models (perf-baselines section 3): the 2D U-Net has 4 encoder levels (16, 32, 64, 128) and a
256 bottleneck, each level 2 x [Conv3x3 (no bias) - BN - ReLU], MaxPool, Conv2DTranspose(2, s2)
+ concat, a 1x1 head: 1,945,233 parameters (1,942,289 in torch, which keeps no BN moving
statistics as parameters), batch 4 of 256x256x1. The 3D U-Net has the same structure with levels
(8, 16, 32) and a 64 bottleneck on 64^3 patches, batch 1. FLOPs are analytic:
``2 * k^d * c_in * c_out * output voxels`` per convolution (input voxels for a transposed
convolution), a training step counted as 3x the forward pass. The peak is the best (min-time) of
the matmuls timed in the same child, interleaved with the training steps.

torch runs with ``OMP_WAIT_POLICY=PASSIVE`` unless ``--omp-active``: on a machine shared with
other processes, OpenMP's busy-waiting barriers made a torch step 3-5x slower in CPU seconds
(measured 2026-11 on the 2-vCPU machine at load 7). ``torch_1thread`` (the same network and
optimizer with one thread) bounds what torch would do with two perfectly used cores: half its
time. No numpy matmul in the child: OpenBLAS' spinning threads would steal cores from the next step.

Each step is timed on the wall clock and in process CPU seconds; ``GFLOP/s cpu`` is
``FLOPs / (cpu seconds / threads)``, which is steadier than the wall clock when other processes
share the cores.

``--builders NAME,...`` instead times the package's registered builders (and ``resnet50``, the
backbone of seeds 001/003) twice each, interleaved step by step in one child: built with Keras'
``BatchNormalization`` and with tfmedseg's ``FusedBatchNormalization`` (``batch_norm(fused=...)``
via ``normalization.FUSED_DEFAULT``), trained with ``train_on_batch`` on the shapes of
:data:`BUILDER_INPUTS`; it prints the fused / Keras step-time ratios (median, min, CPU).

Run: ``.venv/bin/python benchmarks/bench_training.py [--steps 10] [--models 2d,3d] [--configs base,onednn0,xla,bf16]``
or ``.venv/bin/python benchmarks/bench_training.py --builders all [--steps 10]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = {
    "base": {"onednn": "1", "xla": False, "bf16": False},
    "onednn0": {"onednn": "0", "xla": False, "bf16": False},
    "xla": {"onednn": "1", "xla": True, "bf16": False},
    "bf16": {"onednn": "1", "xla": False, "bf16": True},
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
}


def _fused_bn_class(keras, tf):
    """A batch norm on ``tf.compat.v1.nn.fused_batch_norm`` (one kernel forward, one backward)."""

    class FusedBatchNorm(keras.layers.Layer):
        def __init__(self, momentum=0.99, epsilon=1e-3, **kw):
            super().__init__(**kw)
            self.momentum, self.epsilon = momentum, epsilon

        def build(self, shape):
            c = shape[-1]
            self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
            self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", trainable=False, name="moving_mean")
            self.moving_variance = self.add_weight(shape=(c,), initializer="ones", trainable=False, name="moving_variance")

        def call(self, x, training=False):
            fmt = "NHWC" if len(x.shape) == 4 else "NDHWC"
            if training:
                y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                    x, self.gamma, self.beta, epsilon=self.epsilon, data_format=fmt, is_training=True)
                m = self.momentum
                self.moving_mean.assign(self.moving_mean * m + mean * (1 - m))
                self.moving_variance.assign(self.moving_variance * m + var * (1 - m))
                return y
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, data_format=fmt, is_training=False)
            return y

    return FusedBatchNorm


def _unet(keras, rank: int, size: int, filters, bn=None):
    conv = keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D
    up = keras.layers.Conv2DTranspose if rank == 2 else keras.layers.Conv3DTranspose
    pool = keras.layers.MaxPooling2D if rank == 2 else keras.layers.MaxPooling3D
    bn = bn or keras.layers.BatchNormalization

    def block(x, f):
        for _ in range(2):
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
        x = keras.layers.Concatenate()([x, skip])
        x = block(x, f)
    out = keras.layers.Activation("linear", dtype="float32")(conv(1, 1)(x))
    return keras.Model(inp, out)


def _torch_unet(torch, filters, in_ch: int = 1):
    """The same 2D U-Net in PyTorch (NCHW; BN eps 1e-3 and momentum 0.01 as Keras' 0.99)."""
    nn = torch.nn

    def block(cin, f):
        layers = []
        for c in (cin, f):
            layers += [nn.Conv2d(c, f, 3, padding=1, bias=False), nn.BatchNorm2d(f, eps=1e-3, momentum=0.01), nn.ReLU()]
        return nn.Sequential(*layers)

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            chans, c = [], in_ch
            self.down = nn.ModuleList()
            for f in filters[:-1]:
                self.down.append(block(c, f))
                chans.append(f)
                c = f
            self.bottom = block(c, filters[-1])
            c = filters[-1]
            self.ups, self.dec = nn.ModuleList(), nn.ModuleList()
            for f in reversed(filters[:-1]):
                self.ups.append(nn.ConvTranspose2d(c, f, 2, stride=2))
                self.dec.append(block(2 * f, f))
                c = f
            self.head = nn.Conv2d(c, 1, 1)
            self.pool = nn.MaxPool2d(2)

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


def _forward_flops(keras, model) -> float:
    """Analytic forward FLOPs per sample of the convolutions."""
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose | keras.layers.Conv3DTranspose):
            spatial = layer.input.shape[1:-1]
        elif isinstance(layer, keras.layers.Conv2D | keras.layers.Conv3D):
            spatial = layer.output.shape[1:-1]
        else:
            continue
        k = 1
        for s in layer.kernel_size:
            k *= s
        vox = 1
        for s in spatial:
            vox *= s
        total += 2.0 * k * layer.input.shape[-1] * layer.filters * vox
    return total


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def child(model_name: str, config_name: str, steps: int, peer: bool) -> dict:
    """Time ``steps`` rounds (after 2 warm-up rounds) of every contender, interleaved; return the figures."""
    import tfmedseg  # noqa: F401  (sets the oneDNN default before TensorFlow)
    import keras
    import numpy as np
    import tensorflow as tf

    cfg, spec = CONFIGS[config_name], MODELS[model_name]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    shape = (spec["batch"],) + (spec["size"],) * spec["rank"] + (1,)
    x = rng.normal(size=shape).astype("float32")
    y = (x > 0.5).astype("float32")
    xt_, yt_ = tf.constant(x), tf.constant(y)

    n = MATMUL_N
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    mm = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
    contenders = {"matmul_tf": lambda: mm().numpy()}
    flops = {"matmul_tf": 2.0 * n**3}
    params = {}
    first = {}

    def keras_contender(name, bn=None):
        if cfg["bf16"]:
            keras.config.set_dtype_policy("mixed_bfloat16")
        model = _unet(keras, spec["rank"], spec["size"], spec["filters"], bn=bn)
        keras.config.set_dtype_policy("float32")
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                      jit_compile=cfg["xla"])
        t0 = time.perf_counter()
        model.train_on_batch(xt_, yt_)  # traces and compiles
        first[name] = time.perf_counter() - t0
        contenders[name] = lambda: model.train_on_batch(xt_, yt_)
        flops[name] = 3 * _forward_flops(keras, model) * spec["batch"]
        params[name] = int(model.count_params())

    keras_contender("keras")
    if peer:
        keras_contender("keras_fusedbn", bn=_fused_bn_class(keras, tf))
    if peer and spec["rank"] == 2:
        import torch

        torch.set_num_threads(THREADS)
        torch.manual_seed(0)
        net = _torch_unet(torch, spec["filters"]).train()
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
        ty = torch.from_numpy(np.moveaxis(y, -1, 1).copy())
        ta, tb = torch.randn(n, n), torch.randn(n, n)

        def torch_step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(tx), ty)
            loss.backward()
            opt.step()
            return float(loss)

        t0 = time.perf_counter()
        torch_step()
        first["torch"] = time.perf_counter() - t0
        def torch_step_1thread():
            torch.set_num_threads(1)
            try:
                return torch_step()
            finally:
                torch.set_num_threads(THREADS)

        contenders["torch"] = torch_step
        contenders["torch_1thread"] = torch_step_1thread
        contenders["matmul_torch"] = lambda: float((ta @ tb)[0, 0])
        flops["torch"] = flops["torch_1thread"] = flops["keras"]
        flops["matmul_torch"] = 2.0 * n**3
        params["torch"] = sum(p.numel() for p in net.parameters())

    for _ in range(2):  # warm-up rounds
        for fn in contenders.values():
            fn()
    wall = {k: [] for k in contenders}
    cpu = {k: [] for k in contenders}
    load = [os.getloadavg()[0]]
    for _ in range(steps):
        for k, fn in contenders.items():
            w, c = _timed(fn)
            wall[k].append(w)
            cpu[k].append(c)
    load.append(os.getloadavg()[0])
    out = {"model": model_name, "config": config_name, "batch": spec["batch"], "params": params,
           "first_step_s": first, "load_avg": load, "threads": THREADS, "contenders": {}}
    for k in contenders:
        w, c = np.array(wall[k]), np.array(cpu[k])
        out["contenders"][k] = {
            "wall_min": float(w.min()), "wall_med": float(np.median(w)), "cpu_med": float(np.median(c)),
            "gflop": flops[k] / 1e9,
        }
    return out


def _build_for_bench(name: str, fused: bool):
    """Build ``name`` with the fused or Keras batch norm; returns (model, batch, input array, target array)."""
    import keras
    import numpy as np

    from tfmedseg.models import registry
    from tfmedseg.models.blocks import normalization

    kwargs, batch = BUILDER_INPUTS.get(name, ({}, 2))
    normalization.FUSED_DEFAULT = fused
    keras.utils.set_random_seed(0)
    try:
        if name == "resnet50":
            from tfmedseg.models.backbones.resnet import build_resnet_backbone

            backbone = build_resnet_backbone(**kwargs)
            pooled = keras.layers.GlobalAveragePooling2D()(backbone.output["C5"])
            model = keras.Model(backbone.inputs, keras.layers.Dense(2, activation="softmax")(pooled))
        else:
            model = registry.build(name, **kwargs)
    finally:
        normalization.FUSED_DEFAULT = True
    rng = np.random.default_rng(0)
    x = rng.random((batch, *model.inputs[0].shape[1:])).astype("float32")
    out = model.outputs[0]
    labels = rng.integers(0, out.shape[-1], size=(batch, *out.shape[1:-1]))
    y = np.eye(out.shape[-1], dtype="float32")[labels]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.CategoricalCrossentropy())
    return model, batch, x, y


def builders_child(names: list[str], steps: int) -> dict:
    """Time each builder with Keras' BN and with the fused BN, interleaved; return the figures."""
    import tfmedseg  # noqa: F401
    import keras
    import numpy as np
    import tensorflow as tf

    from tfmedseg.models.blocks.normalization import FusedBatchNormalization

    contenders, info = {}, {}
    for name in names:
        for fused in (False, True):
            model, batch, x, y = _build_for_bench(name, fused)
            n_fused = sum(isinstance(l, FusedBatchNormalization) for l in model._flatten_layers())
            n_bn = sum(isinstance(l, keras.layers.BatchNormalization) for l in model._flatten_layers())
            xt, yt = tf.constant(x), tf.constant(y)
            model.train_on_batch(xt, yt)  # trace
            key = f"{name}/{'fused' if fused else 'keras'}"
            contenders[key] = (lambda m=model, a=xt, b=yt: m.train_on_batch(a, b))
            info[key] = {"batch": batch, "bn_layers": n_bn, "fused_layers": n_fused, "params": int(model.count_params())}
    for fn in contenders.values():
        fn()
    wall = {k: [] for k in contenders}
    cpu = {k: [] for k in contenders}
    load = [os.getloadavg()[0]]
    for _ in range(steps):
        for name in names:  # keras and fused of one builder back to back, alternating which goes first
            pair = [f"{name}/keras", f"{name}/fused"]
            for k in (pair if _ % 2 == 0 else pair[::-1]):
                w, c = _timed(contenders[k])
                wall[k].append(w)
                cpu[k].append(c)
    load.append(os.getloadavg()[0])
    out = {"load_avg": load, "contenders": {}}
    for k in contenders:
        w, c = np.array(wall[k]), np.array(cpu[k])
        out["contenders"][k] = {**info[k], "wall_min": float(w.min()), "wall_med": float(np.median(w)),
                                "cpu_med": float(np.median(c)),
                                "ratio_samples": []}
    for name in names:
        kw, fu = np.array(wall[f"{name}/keras"]), np.array(wall[f"{name}/fused"])
        out["contenders"][f"{name}/fused"]["paired_ratio_med"] = float(np.median(fu / kw))
    return out


def _print_builders(res: dict) -> None:
    c = res["contenders"]
    print(f"load avg {res['load_avg'][0]:.2f} -> {res['load_avg'][1]:.2f}")
    print(f"{'builder':18s} {'batch':>5s} {'BN':>4s} {'keras s med':>11s} {'fused s med':>11s} {'med':>6s} {'min':>6s} "
          f"{'cpu':>6s} {'paired':>6s}  (fused / keras step time)")
    for key in c:
        if not key.endswith("/keras"):
            continue
        name = key[:-6]
        k, f = c[key], c[f"{name}/fused"]
        print(f"{name:18s} {k['batch']:5d} {f['fused_layers']:4d} {k['wall_med']:11.3f} {f['wall_med']:11.3f} "
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed rounds per configuration (after 2 warm-up rounds)")
    parser.add_argument("--models", default="2d,3d")
    parser.add_argument("--configs", default="base,onednn0,xla,bf16")
    parser.add_argument("--no-peer", action="store_true", help="skip torch and the fused-BN variant in 'base'")
    parser.add_argument("--omp-active", action="store_true",
                        help="leave OpenMP's busy-wait default for torch (PASSIVE is set otherwise: see docstring)")
    parser.add_argument("--builders", help="comma-separated builder names (or 'all'): fused vs Keras batch norm")
    parser.add_argument("--bn-layer", action="store_true",
                        help="only conv + BN + ReLU fwd+bwd, Keras BN vs the fused BN (a quick check)")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bn_layer:
        print(f"uptime: {os.popen('uptime').read().strip()}")
        bn_layer_bench(args.steps)
        return
    if args.builders:
        names = list(BUILDER_INPUTS) if args.builders == "all" else args.builders.split(",")
        print(f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}; "
              f"{args.steps} interleaved rounds after 1 warm-up")
        res = builders_child(names, args.steps)
        _print_builders(res)
        print("RESULT " + json.dumps(res))
        return
    if args.child:
        peer = args.child[1] == "base" and not args.no_peer
        print("RESULT " + json.dumps(child(args.child[0], args.child[1], args.steps, peer)))
        return

    print(f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}, {THREADS} threads per framework")
    results = []
    for model_name in args.models.split(","):
        for config_name in args.configs.split(","):
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=CONFIGS[config_name]["onednn"], TF_CPP_MIN_LOG_LEVEL="2",
                       OMP_NUM_THREADS=str(THREADS))
            if not args.omp_active:
                env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            cmd = [sys.executable, __file__, "--child", model_name, config_name, "--steps", str(args.steps)]
            proc = subprocess.run(cmd + (["--no-peer"] if args.no_peer else []), env=env, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{model_name}/{config_name}: failed\n{proc.stderr[-3000:]}")
                continue
            res = json.loads(line[7:])
            results.append(res)
            _print_child(res)
    _print_summary(results)


def _print_child(res: dict) -> None:
    c = res["contenders"]
    peak = max(v["gflop"] / v["wall_min"] for k, v in c.items() if k.startswith("matmul"))
    peak_cpu = max(v["gflop"] / (v["cpu_med"] / THREADS) for k, v in c.items() if k.startswith("matmul"))
    print(f"\n{res['model']}/{res['config']}  (load avg {res['load_avg'][0]:.2f} -> {res['load_avg'][1]:.2f}; "
          f"params {res['params']}; first step s {', '.join(f'{k} {v:.1f}' for k, v in res['first_step_s'].items())})")
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
        for k in ("keras", "keras_fusedbn"):
            if k in c:
                o = c[k]
                print(f"{k} / torch (2 threads) step time: median {o['wall_med'] / t['wall_med']:.2f}x, "
                      f"min {o['wall_min'] / t['wall_min']:.2f}x, cpu {o['cpu_med'] / t['cpu_med']:.2f}x  (goal <= 0.9x)")
                print(f"{k} / torch ideal 2-thread (1-thread time / 2): min {o['wall_min'] / (t1['wall_min'] / 2):.2f}x, "
                      f"cpu-time {o['cpu_med'] / t1['cpu_med']:.2f}x  (a lower bound for torch on an idle machine)")


def _print_summary(results: list) -> None:
    if not results:
        return
    print("\nSummary (step time median, ratio to oneDNN-on float32 'keras' of the same model)")
    for r in results:
        base = next((b for b in results if b["model"] == r["model"] and b["config"] == "base"), r)
        bk = base["contenders"]["keras"]["wall_med"]
        for k, v in r["contenders"].items():
            if k.startswith("matmul"):
                continue
            print(f"{r['model']:3s} {r['config']:8s} {k:14s} {v['wall_med']:7.3f} s  {v['wall_med'] / bk:5.2f}x")


if __name__ == "__main__":
    main()
