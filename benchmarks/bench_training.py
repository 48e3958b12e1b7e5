"""Training throughput of a 2D and a 3D U-Net, as a fraction of the matmul peak measured in the same run.

Each configuration runs in its own subprocess, because ``TF_ENABLE_ONEDNN_OPTS`` only acts
before TensorFlow is imported:

- ``base``: oneDNN on (the tfmedseg default), float32, no XLA;
- ``onednn0``: oneDNN off (TensorFlow 2.21's default on AMD/AVX2 CPUs);
- ``xla``: ``jit_compile=True``;
- ``bf16``: ``mixed_bfloat16`` policy.

Models (perf-baselines section 3): the 2D U-Net has 4 encoder levels (16, 32, 64, 128) and a
256 bottleneck, each level 2 x [Conv3x3 (no bias) - BN - ReLU], MaxPool, Conv2DTranspose(2, s2)
+ concat, a 1x1 head: 1,945,233 parameters, batch 4 of 256x256x1. The 3D U-Net has the same
structure with levels (8, 16, 32) and a 64 bottleneck on 64^3 patches, batch 1.
FLOPs are analytic: ``2 * k^d * c_in * c_out * output voxels`` per convolution (input voxels for
a transposed convolution), a training step counted as 3x the forward pass. The peak is the best
of a float32 4096^2 TensorFlow matmul in the oneDNN-on child and numpy's matmul in the parent.

Run: ``.venv/bin/python benchmarks/bench_training.py [--steps 3] [--models 2d,3d] [--configs base,onednn0,xla,bf16]``
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


def _unet(keras, rank: int, size: int, filters):
    conv = keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D
    up = keras.layers.Conv2DTranspose if rank == 2 else keras.layers.Conv3DTranspose
    pool = keras.layers.MaxPooling2D if rank == 2 else keras.layers.MaxPooling3D

    def block(x, f):
        for _ in range(2):
            x = conv(f, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization()(x)
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


def child(model_name: str, config_name: str, steps: int) -> dict:
    """Time ``steps`` training steps (after 1 warm-up) in this process; return the figures."""
    import tfmedseg  # noqa: F401  (sets the oneDNN default before TensorFlow)
    import keras
    import numpy as np
    import tensorflow as tf

    cfg, spec = CONFIGS[config_name], MODELS[model_name]
    n = 4096
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    mm = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
    mm().numpy()
    mm_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        mm().numpy()
        mm_times.append(time.perf_counter() - t0)
    matmul_gflops = 2 * n**3 / min(mm_times) / 1e9

    if cfg["bf16"]:
        keras.config.set_dtype_policy("mixed_bfloat16")
    model = _unet(keras, spec["rank"], spec["size"], spec["filters"])
    keras.config.set_dtype_policy("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True), jit_compile=cfg["xla"])
    shape = (spec["batch"],) + (spec["size"],) * spec["rank"] + (1,)
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    y = (x > 0.5).astype("float32")
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()

    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.t0)

    t0 = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[Timer()])
    total = time.perf_counter() - t0
    timed = times[1:]
    step = float(np.median(timed))
    flops = 3 * _forward_flops(keras, model) * spec["batch"]
    return {
        "model": model_name,
        "config": config_name,
        "params": int(model.count_params()),
        "first_step_s": times[0],
        "step_s_median": step,
        "step_s_min": float(min(timed)),
        "images_per_s": spec["batch"] / step,
        "gflop_per_step": flops / 1e9,
        "gflops": flops / step / 1e9,
        "tf_matmul_gflops": matmul_gflops,
        "wall_s": total,
    }


def _numpy_matmul_gflops(n: int = 4096) -> float:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = min(_time(lambda: a @ a) for _ in range(3))
    return 2 * n**3 / best / 1e9


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (after 1 warm-up)")
    parser.add_argument("--models", default="2d,3d")
    parser.add_argument("--configs", default="base,onednn0,xla,bf16")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child[0], args.child[1], args.steps)))
        return

    np_peak = _numpy_matmul_gflops()
    print(f"numpy matmul 4096^2 float32: {np_peak:.1f} GFLOP/s")
    results = []
    for model_name in args.models.split(","):
        for config_name in args.configs.split(","):
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=CONFIGS[config_name]["onednn"], TF_CPP_MIN_LOG_LEVEL="2")
            proc = subprocess.run(
                [sys.executable, __file__, "--child", model_name, config_name, "--steps", str(args.steps)],
                env=env,
                capture_output=True,
                text=True,
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{model_name}/{config_name}: failed\n{proc.stderr[-2000:]}")
                continue
            res = json.loads(line[7:])
            results.append(res)
            print(f"{model_name}/{config_name}: {res['step_s_median']:.3f} s/step, {res['images_per_s']:.2f} img/s, {res['gflops']:.1f} GFLOP/s", flush=True)

    peak = max([np_peak] + [r["tf_matmul_gflops"] for r in results if r["config"] == "base"])
    print(f"\npeak (best matmul measured in this run): {peak:.1f} GFLOP/s")
    header = f"{'model':5} {'config':8} {'params':>9} {'GF/step':>8} {'1st step s':>10} {'s/step med':>10} {'s/step min':>10} {'img/s':>7} {'GFLOP/s':>8} {'% peak':>7} {'vs base':>8}"
    print(header)
    for r in results:
        base = next((b for b in results if b["model"] == r["model"] and b["config"] == "base"), r)
        print(
            f"{r['model']:5} {r['config']:8} {r['params']:9d} {r['gflop_per_step']:8.1f} {r['first_step_s']:10.2f} {r['step_s_median']:10.3f} "
            f"{r['step_s_min']:10.3f} {r['images_per_s']:7.2f} {r['gflops']:8.1f} {100 * r['gflops'] / peak:6.1f}% "
            f"{r['step_s_median'] / base['step_s_median']:7.2f}x"
        )
    print("(vs base: step-time ratio to oneDNN-on float32 without XLA; > 1 is slower)")


if __name__ == "__main__":
    main()
