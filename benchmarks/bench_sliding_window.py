"""Benchmark: 3D sliding-window inference per volume, ours vs a plain numpy loop (and MONAI if present).

Setting (perf-baselines section 4): volume D,H,W = 64x128x128, window 64^3, overlap 0.5, Gaussian
blending, sw_batch_size 4 (9 windows), network = Keras replica of MONAI
``UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
num_res_units=2)`` (residual units of strided Conv3D + instance norm + PReLU, concatenated skips,
Conv3DTranspose up-sampling).

The baseline in the same run is the plain numpy loop that perf-baselines measured (windows batched
through a tf.function, ``acc += y * G``, ``w += G``). If torch and monai are importable, MONAI's
``sliding_window_inference`` with the torch UNet is timed too; otherwise the ratio is also given
against the MONAI figure recorded in perf-baselines (0.720 s/volume on the 2-vCPU reference machine,
labelled "recorded": a different run, machine load and possibly machine).

Run: ``python benchmarks/bench_sliding_window.py [--repeats 5] [--size 64 128 128]``.
"""

from __future__ import annotations

import argparse
import itertools
import time

import tfmedseg  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow loads)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmedseg.inference import compute_importance_map, dense_window_starts, make_predictor  # noqa: E402
from tfmedseg.inference import sliding_window_inference  # noqa: E402

RECORDED_MONAI_S = 0.720


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
            up_in = c * 2
        else:
            s = _residual_unit(d, c, chans[1], 1, 2)  # bottom layer
            up_in = c + chans[1]
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


def _time(fn, repeats):
    fn()  # warm-up (tracing)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), float(np.median(ts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, nargs=3, default=(64, 128, 128))
    ap.add_argument("--roi", type=int, default=64)
    args = ap.parse_args()
    keras.utils.set_random_seed(0)
    model = monai_unet_replica()
    roi = (args.roi,) * 3
    x = np.random.default_rng(0).random((1, *args.size, 1), dtype=np.float32)
    pred = make_predictor(model)
    print(f"TF {tf.__version__}, oneDNN env={__import__('os').environ.get('TF_ENABLE_ONEDNN_OPTS')}, "
          f"model params {model.count_params():,} (MONAI UNet: 1,186,765), volume {tuple(args.size)}, "
          f"roi {roi}, overlap 0.5, gaussian, sw_batch 4, "
          f"{np.prod([len(s) for s in dense_window_starts(args.size, roi, 0.5)])} windows")
    ours = sliding_window_inference(x, roi, 4, pred, overlap=0.5, mode="gaussian")
    base = numpy_loop_baseline(x, roi, 4, pred)
    print(f"max |ours - baseline| = {np.abs(ours - base).max():.2e}")
    t_ours = _time(lambda: sliding_window_inference(x, roi, 4, pred, overlap=0.5, mode="gaussian"), args.repeats)
    t_low = _time(lambda: sliding_window_inference(x, roi, 4, pred, overlap=0.5, argmax=True, low_memory=True),
                  args.repeats)
    t_base = _time(lambda: numpy_loop_baseline(x, roi, 4, pred), args.repeats)
    print(f"{'impl':40s} {'min s':>8s} {'median s':>9s} {'ratio to baseline':>18s}")
    for name, t in (("numpy-loop baseline (same run)", t_base), ("tfmedseg sliding_window_inference", t_ours),
                    ("tfmedseg low_memory argmax", t_low)):
        print(f"{name:40s} {t[0]:8.3f} {t[1]:9.3f} {t[1] / t_base[1]:18.2f}")
    try:
        import torch
        from monai.inferers import sliding_window_inference as monai_swi
        from monai.networks.nets import UNet

        torch.set_num_threads(max(1, torch.get_num_threads()))
        net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                   num_res_units=2).eval()
        xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy())

        def run_monai():
            with torch.inference_mode():
                monai_swi(xt, roi, 4, net, overlap=0.5, mode="gaussian")

        t_m = _time(run_monai, args.repeats)
        print(f"{'MONAI sliding_window_inference (same run)':40s} {t_m[0]:8.3f} {t_m[1]:9.3f}")
        print(f"ours / MONAI (same run, median): {t_ours[1] / t_m[1]:.2f}x  (goal <= 0.7x)")
    except ImportError:
        print("torch/monai not installed: no same-run MONAI timing.")
        print(f"ours / RECORDED MONAI {RECORDED_MONAI_S:.3f} s (perf-baselines, other run): "
              f"{t_ours[1] / RECORDED_MONAI_S:.2f}x  (goal <= 0.7x; only comparable on the reference machine)")


if __name__ == "__main__":
    main()
