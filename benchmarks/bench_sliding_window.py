"""Benchmark: 3D sliding-window inference per volume, ours vs MONAI and a numpy loop in the same run.

Setting (perf-baselines section 4): volume D,H,W = 64x128x128, window 64^3, overlap 0.5, Gaussian
blending, sw_batch_size 4 (9 windows), network = Keras replica of MONAI
``UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
num_res_units=2)`` (residual units of strided Conv3D + instance norm + PReLU, concatenated skips,
Conv3DTranspose up-sampling).

In the same run and interleaved round-robin (every implementation sees the same machine load):
our ``sliding_window_inference`` (dense and low-memory argmax), the plain numpy loop that
perf-baselines measured (windows batched through a tf.function, ``acc += y * G``, ``w += G``), one
Keras forward of a batch of ``sw_batch`` windows and, when torch and monai are importable (the
``bench`` extra: ``torch==2.13.0``, ``monai``), MONAI's ``sliding_window_inference`` with its UNet
(1,186,765 parameters, as the replica) and one MONAI UNet forward, torch at 2 threads with
``OMP_WAIT_POLICY=PASSIVE`` (OpenMP's busy-wait barriers collapse on a shared machine; see
bench_training.py). Without them the ratio is given against the MONAI figure recorded in
perf-baselines (0.720 s/volume on the reference machine, labelled "recorded").

Run: ``python benchmarks/bench_sliding_window.py [--repeats 7] [--size 64 128 128]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import tfmedseg  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow loads)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmedseg.inference import compute_importance_map, dense_window_starts, make_predictor  # noqa: E402
from tfmedseg.inference import sliding_window_inference  # noqa: E402

RECORDED_MONAI_S = 0.720
THREADS = 2


def _in(x, c):
    x = keras.layers.GroupNormalization(groups=c, center=False, scale=False, epsilon=1e-5)(x)
    return keras.layers.PReLU(shared_axes=[1, 2, 3, 4])(x)


def _residual_unit(x, c_in, c_out, strides, subunits, last_conv_only=False):
    y = x
    for su in range(subunits):
        y = keras.layers.Conv3D(c_out, 3, strides=strides if su == 0 else 1, padding="same")(y)
        if not (last_conv_only and su == subunits - 1):
            y = _in(y, c_out)
    if strides != 1 or c_in != c_out:
        x = keras.layers.Conv3D(c_out, 3 if strides != 1 else 1, strides=strides, padding="same")(x)
    return keras.layers.Add()([y, x])


def monai_unet_replica(channels=(16, 32, 64, 128), out_channels=2) -> keras.Model:
    """Keras copy of MONAI's 3D UNet with num_res_units=2 (see module docstring)."""
    inp = keras.Input((None, None, None, 1))

    def block(x, c_in, c_out, chans, is_top):
        c = chans[0]
        d = _residual_unit(x, c_in, c, 2, 2)
        if len(chans) > 2:
            s = block(d, c, c, chans[1:], False)
        else:
            s = _residual_unit(d, c, chans[1], 1, 2)  # bottom layer
        u = keras.layers.Concatenate()([d, s])
        u = keras.layers.Conv3DTranspose(c_out, 3, strides=2, padding="same")(u)
        u = _in(u, c_out)
        return _residual_unit(u, c_out, c_out, 1, 1, last_conv_only=is_top)

    return keras.Model(inp, block(inp, 1, out_channels, channels, True), name="monai_unet_replica")


def numpy_loop_baseline(x, roi, sw_batch_size, fn, overlap=0.5):
    """The perf-baselines reference loop: one image, windows batched, Gaussian blending on the host."""
    g = compute_importance_map(roi, "gaussian", 0.125)
    starts = dense_window_starts(x.shape[1:-1], roi, overlap)
    corners = list(itertools.product(*starts))
    acc, w = None, np.zeros(x.shape[1:-1], np.float32)
    for i in range(0, len(corners), sw_batch_size):
        chunk = corners[i : i + sw_batch_size]
        sls = [tuple(slice(c, c + r) for c, r in zip(cor, roi)) for cor in chunk]
        y = fn(np.stack([x[0][s] for s in sls])).numpy()
        if acc is None:
            acc = np.zeros(x.shape[1:-1] + (y.shape[-1],), np.float32)
        for s, yi in zip(sls, y):
            acc[s] += yi * g[..., None]
            w[s] += g
    return acc / w[..., None]


def _measure(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Wall seconds per call of every function, interleaved round-robin (same load for all)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return {k: (min(v), float(np.median(v))) for k, v in ts.items()}


def _monai(x, roi, sw_batch):
    """MONAI's sliding_window_inference with its UNet, or None when torch / monai are missing."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before libgomp loads: see bench_training.py
    try:
        import torch
        from monai.inferers import sliding_window_inference as monai_swi
        from monai.networks.nets import UNet
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
               num_res_units=2).eval()
    xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    wt = xt[:, :, : roi[0], : roi[1], : roi[2]].repeat(sw_batch, 1, 1, 1, 1)

    def run():
        with torch.inference_mode():
            return monai_swi(xt, roi, sw_batch, net, overlap=0.5, mode="gaussian")

    def forward():
        with torch.inference_mode():
            return net(wt)

    params = sum(p.numel() for p in net.parameters())
    return run, forward, params, f"MONAI {__import__('monai').__version__} / torch {torch.__version__}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, nargs=3, default=(64, 128, 128))
    ap.add_argument("--roi", type=int, default=64)
    args = ap.parse_args()
    keras.utils.set_random_seed(0)
    model = monai_unet_replica()
    roi = (args.roi,) * 3
    sw = 4
    x = np.random.default_rng(0).random((1, *args.size, 1), dtype=np.float32)
    pred = make_predictor(model)
    windows = int(np.prod([len(s) for s in dense_window_starts(args.size, roi, 0.5)]))
    print(f"TF {tf.__version__}, oneDNN env={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}, {os.cpu_count()} CPUs, "
          f"load avg {os.getloadavg()[0]:.2f}; model params {model.count_params():,}, volume {tuple(args.size)}, "
          f"roi {roi}, overlap 0.5, gaussian, sw_batch {sw}, {windows} windows")
    ours = sliding_window_inference(x, roi, sw, pred, overlap=0.5, mode="gaussian")
    base = numpy_loop_baseline(x, roi, sw, pred)
    print(f"max |ours - numpy-loop baseline| = {np.abs(ours - base).max():.2e}")
    wt = tf.constant(np.repeat(x[:, : roi[0], : roi[1], : roi[2]], sw, 0))
    fns = {
        "tfmedseg sliding_window_inference": lambda: sliding_window_inference(x, roi, sw, pred, overlap=0.5,
                                                                              mode="gaussian"),
        "tfmedseg low_memory argmax": lambda: sliding_window_inference(x, roi, sw, pred, overlap=0.5, argmax=True,
                                                                       low_memory=True),
        "numpy-loop baseline": lambda: numpy_loop_baseline(x, roi, sw, pred),
        f"keras forward [{sw},{args.roi}^3]": lambda: pred(wt).numpy(),
    }
    peer = _monai(x, roi, sw)
    if peer is not None:
        run, forward, params, version = peer
        print(f"{version}: UNet params {params:,}")
        fns["MONAI sliding_window_inference"] = run
        fns[f"MONAI UNet forward [{sw},{args.roi}^3]"] = forward
    load0 = os.getloadavg()[0]
    res = _measure(fns, args.repeats)
    print(f"{args.repeats} interleaved repeats, load avg {load0:.2f} -> {os.getloadavg()[0]:.2f}")
    ref_name = "MONAI sliding_window_inference" if peer is not None else "numpy-loop baseline"
    ref = res[ref_name]
    print(f"{'impl':40s} {'min s':>8s} {'median s':>9s} {'ratio (med)':>11s} {'ratio (min)':>11s}   (to {ref_name})")
    for name, t in res.items():
        r = res[f"MONAI UNet forward [{sw},{args.roi}^3]"] if "forward" in name and peer is not None else ref
        print(f"{name:40s} {t[0]:8.3f} {t[1]:9.3f} {t[1] / r[1]:11.2f} {t[0] / r[0]:11.2f}")
    ours_t = res["tfmedseg sliding_window_inference"]
    if peer is not None:
        print(f"ours / MONAI (same run): median {ours_t[1] / ref[1]:.2f}x, min {ours_t[0] / ref[0]:.2f}x  (goal <= 0.7x)")
    else:
        print("torch/monai not installed (pip install torch==2.13.0 monai): no same-run MONAI timing.")
        print(f"ours / RECORDED MONAI {RECORDED_MONAI_S:.3f} s (perf-baselines, other run): "
              f"{ours_t[1] / RECORDED_MONAI_S:.2f}x  (goal <= 0.7x; only comparable on the reference machine)")


if __name__ == "__main__":
    main()
