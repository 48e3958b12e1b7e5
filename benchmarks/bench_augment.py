"""Augmentation throughput: tfmedseg's one-pass layers vs albumentations 2.0 on the CPU, one run.

2D: 16 images 256x256x1 float32 + uint8 mask, affine (rotation +-15 deg, shear +-10 deg,
translation +-16 px, zoom 0.875-1.125) + elastic on 10 % of images + Gaussian noise, the setting
of ``perf-baselines.md`` section 5 (albumentations reached ~414 img/s median there).
3D: [2, 64, 64, 64, 1] + label, same affine ranges about all axes, elastic 10 %, against a
per-volume scipy reference (``scipy.ndimage.map_coordinates`` of the same pull-back map: an
affine grid plus, on 10 % of volumes, a cubic-B-spline-upsampled random displacement; order 1 for
the image, order 0 for the label, then Gaussian noise), the usual numpy/scipy way of writing it.

Every tfmedseg variant runs in a ``tf.function``: ``graph`` (plain TF ops), ``xla-core`` (the
layer's default: grid + resampling compiled with XLA inside the graph) and ``xla-all`` (the whole
function ``jit_compile=True``). Times are wall-clock per batch including the host sync; the
ratios compare images/s (median-based) with albumentations' per-sample loop measured in the same
run, on three readings: median wall, min wall, and median process CPU time (goal: >= 2x on each).
The reference model is the 2D U-Net of ``bench_training.py`` (1.95 M parameters, oneDNN on,
float32, Adam, BCE) trained with ``train_on_batch`` on the same batch of 16 x 256x256, timed every
``--train-every`` rounds among the pipelines; the pipeline's batches/s divided by its steps/s is
how many times over the pipeline could feed it (issue 4 goal: >= 2x).
Run: ``.venv/bin/python benchmarks/bench_augment.py [--batches 30] [--train-every 5]``.
"""

from __future__ import annotations

import argparse
import os
import time

import tfmedseg  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
import numpy as np
import tensorflow as tf

from tfmedseg.augment import AugmentationPipeline, RandomGaussianNoise, RandomGeometric


def _measure(fns: dict, batches: int, warmup: int = 2, every: dict | None = None) -> dict:
    """Wall and process-CPU seconds per call of every function, interleaved round-robin.

    Interleaving makes every variant see the same background load; CPU time (all threads of
    this process) is the steadier figure on a shared machine. ``every[name] = k`` runs that
    function only every k-th round (a slow training step among fast pipelines).
    """
    every = every or {}
    for name, fn in fns.items():
        for _ in range(1 if name in every else warmup):
            fn()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for i in range(batches):
        for name, fn in fns.items():
            if i % every.get(name, 1):
                continue
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {k: (np.array(wall[k]), np.array(cpu[k])) for k in fns}


def _train_step(imgs: np.ndarray, masks: np.ndarray):
    """One training step of bench_training.py's 2D U-Net (1.95 M parameters) or 3D U-Net on this batch."""
    import keras

    from bench_training import MODELS, _unet

    keras.utils.set_random_seed(0)
    rank = masks.ndim - 1
    model = _unet(keras, rank, imgs.shape[1], MODELS["2d" if rank == 2 else "3d"]["filters"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    x, y = tf.constant(imgs), tf.constant(masks[..., None].astype(np.float32))
    return lambda: model.train_on_batch(x, y)


def _albumentations(imgs: np.ndarray, masks: np.ndarray):
    try:
        import albumentations as A
    except ImportError:
        return None, None
    # Like for like with ours: one isotropic zoom per sample (``keep_ratio=True``; albumentations'
    # default draws x and y zooms apart), x and y shear and shift each uniform in the range (its
    # default, as ours), bilinear image / nearest mask, constant 0 outside; Gaussian noise of a
    # fixed standard deviation 0.1 on every sample (its default draws 0.2-0.44 of the maximum).
    # The elastic transform keeps albumentations' defaults (alpha 1, sigma 50: a full-resolution
    # Gaussian-blurred random field, the peer's usual way; its displacements are far smaller than
    # our 8-px B-spline field but its cost does not depend on alpha).
    aug = A.Compose([
        A.Affine(rotate=(-15, 15), shear=(-10, 10), translate_px=(-16, 16), scale=(0.875, 1.125), keep_ratio=True,
                 p=1.0),
        A.ElasticTransform(p=0.1),
        A.GaussNoise(std_range=(0.1, 0.1), p=1.0),
    ], seed=0)  # seeded like ours: every run draws the same elastic images, so runs compare

    def run():
        return [aug(image=imgs[i], mask=masks[i]) for i in range(len(imgs))]

    return run, A.__version__


def _scipy_3d(imgs: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Per-volume scipy reference: affine + (10 %) elastic pull-back, map_coordinates, noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = imgs.shape[1:4]
    centre = (np.array(shape, np.float64) - 1) / 2
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")).reshape(3, -1)
    grid -= centre.astype(np.float32)[:, None]

    def rotation(angles):
        m = np.eye(3)
        for (a, b), t in zip(((1, 2), (0, 2), (0, 1)), angles):
            r = np.eye(3)
            r[a, a] = r[b, b] = np.cos(t)
            r[a, b], r[b, a] = -np.sin(t), np.sin(t)
            m = m @ r
        return m

    def one(img, lab):
        f = rotation(np.radians(rng.uniform(-15, 15, 3)))
        shear = np.eye(3) + np.tan(np.radians(rng.uniform(-10, 10, (3, 3)))) * (1 - np.eye(3))
        f = f @ shear * rng.uniform(0.875, 1.125)
        t = rng.uniform(-8, 8, 3)
        q = (np.linalg.inv(f).astype(np.float32) @ (grid - t.astype(np.float32)[:, None])
             + centre.astype(np.float32)[:, None])
        if rng.random() < 0.1:
            ctrl = rng.uniform(-3, 3, (3, 4, 4, 4))
            field = np.stack([ndimage.zoom(c, np.array(shape) / 4, order=3) for c in ctrl]).reshape(3, -1)
            q = q + field.astype(np.float32)
        out = ndimage.map_coordinates(img[..., 0], q, order=1, cval=0.0).reshape(shape)
        lab_out = ndimage.map_coordinates(lab, q, order=0, cval=0).reshape(shape)
        out = out + rng.normal(0, 0.1, shape).astype(np.float32)
        return out[..., None], lab_out

    def run():
        return [one(imgs[i], labels[i]) for i in range(len(imgs))]

    return run


def _pipeline(ndim: int, jit_core: bool, seed: int = 0) -> AugmentationPipeline:
    return AugmentationPipeline([
        RandomGeometric(ndim=ndim, rotation=15.0, shear=10.0, translation=16.0 if ndim == 2 else 8.0,
                        scale=(0.875, 1.125), elastic_probability=0.1, elastic_magnitude=8.0 if ndim == 2 else 3.0,
                        jit_compile=jit_core, seed=seed),
        RandomGaussianNoise(stddev=0.1, seed=seed + 1),
    ])


def _ours(image: tf.Tensor, label: tf.Tensor, ndim: int, variant: str):
    pipe = _pipeline(ndim, jit_core=variant == "xla-core")

    @tf.function(jit_compile=variant == "xla-all")
    def step(x, y):
        out = pipe({"image": x, "label": y}, training=True)
        return out["image"], out["label"]

    def run():
        a, b = step(image, label)
        return a.numpy(), b.numpy()  # include the device -> host sync

    return run


def _row(name: str, times: tuple, items: int, ref: tuple | None) -> str:
    wall, cpu = times
    med, best, cmed = np.median(wall), wall.min(), np.median(cpu)
    ratio = (f"{ref[0] / med:7.2f}x {ref[1] / best:7.2f}x {ref[2] / cmed:7.2f}x" if ref else "")
    return (f"{name:34s} {best * 1e3:7.1f} {med * 1e3:7.1f} {cmed * 1e3:7.1f} "
            f"{items / med:8.0f} {items / best:8.0f} {items / cmed:8.0f}  {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="timed batches per variant")
    parser.add_argument("--variants", default="graph,xla-core,xla-all", help="tfmedseg variants to time")
    parser.add_argument("--train-every", type=int, default=5,
                        help="time one reference training step every N rounds (0: none)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    coarse = rng.random((16, 32, 32)) > 0.5
    masks = np.repeat(np.repeat(coarse, 8, 1), 8, 2).astype(np.uint8)  # [16, 256, 256]
    imgs = (masks * 0.6 + 0.2 + rng.normal(0, 0.05, masks.shape)).astype(np.float32)[..., None]

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    cols = f"{'min ms':>7s} {'med ms':>7s} {'cpu ms':>7s} {'/s med':>8s} {'/s min':>8s} {'/s cpu':>8s}"
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(f"{'2D: 16 x 256x256x1 + mask':34s} {cols}  speed vs reference (wall med, wall min, cpu med)")
    albu, version = _albumentations(imgs, masks)
    fns = {}
    if albu is None:
        print("albumentations not installed: pip install 'albumentations==2.0.*' (bench extra)")
    else:
        fns[f"albumentations {version} per sample"] = albu
    image, label = tf.constant(imgs), tf.constant(masks)  # uint8 labels, as albumentations' masks
    for variant in args.variants.split(","):
        fns[f"tfmedseg 2D tf.function {variant}"] = _ours(image, label, 2, variant)
    step_name = "reference U-Net train step (1 batch)"
    every = {}
    if args.train_every > 0:
        fns[step_name] = _train_step(imgs, masks)
        every[step_name] = args.train_every
    load0 = os.getloadavg()[0]
    results = _measure(fns, args.batches, every=every)
    print(f"(interleaved; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}; "
          f"{len(results[step_name][0]) if every else 0} training steps among {args.batches} rounds)")
    ref = None
    if albu is not None:
        wall, cpu = next(iter(results.values()))
        ref = (np.median(wall), wall.min(), np.median(cpu))
    for name, times in results.items():
        print(_row(name, times, 16, ref if name != step_name else None))
    if every:
        sw, sc = results[step_name]
        print("\nPipeline batches/s / reference training steps/s (same batch of 16 x 256x256; goal >= 2x):")
        print(f"{'pipeline':34s} {'wall med':>9s} {'wall min':>9s} {'cpu med':>8s}")
        for name, (w, c) in results.items():
            if name != step_name:
                print(f"{name:34s} {np.median(sw) / np.median(w):8.1f}x {sw.min() / w.min():8.1f}x "
                      f"{np.median(sc) / np.median(c):7.1f}x")

    vol = np.zeros((2, 64, 64, 64), np.int32)
    vol[:, 16:48, 20:44, 12:52] = 1
    img3 = (vol * 0.6 + 0.2 + rng.normal(0, 0.05, vol.shape)).astype(np.float32)[..., None]
    image3, label3 = tf.constant(img3), tf.constant(vol)
    print(f"\n{'3D: 2 x 64^3 x1 + label (volumes)':34s} {cols}")
    fns3 = {"scipy map_coordinates per volume": _scipy_3d(img3, vol)}
    fns3.update({f"tfmedseg 3D tf.function {v}": _ours(image3, label3, 3, v) for v in args.variants.split(",")})
    step3 = "reference 3D U-Net train step"
    every3 = {}
    if args.train_every > 0:
        fns3[step3] = _train_step(img3, vol)
        every3[step3] = args.train_every
    load0 = os.getloadavg()[0]
    results3 = _measure(fns3, max(5, args.batches // 2), every=every3)
    print(f"(interleaved; load average {load0:.1f} -> {os.getloadavg()[0]:.1f})")
    wall, cpu = results3["scipy map_coordinates per volume"]
    ref3 = (np.median(wall), wall.min(), np.median(cpu))
    for name, times in results3.items():
        print(_row(name, times, 2, ref3 if name != step3 else None))
    if every3:
        sw, sc = results3[step3]
        print("3D pipeline batches/s / 3D U-Net (bench_training, levels 8-64) steps/s on the same 2 volumes:")
        for name, (w, c) in results3.items():
            if name != step3:
                print(f"{name:34s} {np.median(sw) / np.median(w):8.1f}x {sw.min() / w.min():8.1f}x "
                      f"{np.median(sc) / np.median(c):7.1f}x")
    print("Goals (issue 18): tfmedseg 2D >= 2x albumentations and 3D >= 2x the scipy reference on median wall, "
          "min wall and CPU time; pipeline >= 2x the step rate.")


if __name__ == "__main__":
    main()
