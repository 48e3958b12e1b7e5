"""Seed 001 TFLite: SSD chest detector (float32, int8) latency and box drift; Mask R-CNN / MaligNet conversion.

The SSD converts as its head network (``SSD.network``: image -> class logits and box deltas);
box decoding and NMS (``SSD.detect``) run after the interpreter, as in TFLite's own SSD pipelines.
Box drift = largest coordinate difference (pixels of the detector input) of the top chest box
between Keras and TFLite, over the phantom views. For Mask R-CNN and MaligNet the whole inference
graph is tried with TFLite builtins only and then with Select TF ops; the blocking ops are printed.

    PYTHONPATH=. nice -n 10 python benchmarks/seed001_tflite.py [--ssd-weights run/ssd/best.weights.h5]
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import numpy as np
import yaml

import tfmedseg  # noqa: F401


def _latency(fn, x, repeats: int = 20) -> float:
    fn(x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - t0) / repeats


def _try_convert(model, shape, select_ops: bool) -> str:
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([1, *shape], tf.float32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + ([tf.lite.OpsSet.SELECT_TF_OPS] if select_ops else [])
    try:
        flat = conv.convert()
    except Exception as exc:  # noqa: BLE001 - report the converter's message
        ops = sorted(set(re.findall(r"tf\.([A-Za-z0-9_]+)", str(exc))))
        return f"FAILS ({type(exc).__name__}); ops not supported: {', '.join(ops) or str(exc)[:300]}"
    return f"converts ({len(flat) / 1e6:.1f} MB)"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ssd-weights", default=None)
    p.add_argument("--views", type=int, default=16)
    p.add_argument("--train-epochs", type=int, default=0, help="train the SSD on the phantom views first (drift of an untrained detector's top box is meaningless)")
    args = p.parse_args()

    import tensorflow as tf

    from tfmedseg.config import from_dict
    from tfmedseg.datasets import load_dataset
    from tfmedseg.datasets.phantoms import ensure_phantoms
    from tfmedseg.experiments import bone_malignet as bm
    from tfmedseg.export.tflite import convert_to_tflite
    from tfmedseg.models.detection.malignet import MaligNetConfig, build_malignet
    from tfmedseg.models.detection.ssd import build_ssd
    from tfmedseg.preprocessing.resample import resize_array

    cfg_path = Path(bm.__file__).resolve().parents[1] / "configs" / "bone_malignet_quick.yaml"
    config = from_dict(bm.BoneMaligNetConfig, yaml.safe_load(cfg_path.read_text()))
    root = ensure_phantoms("bone_scan", Path(os.environ.get("TFMEDSEG_CACHE", "/tmp/tfmedseg_cache")) / "bone_scan_8", 8, 0)
    views = [v for v in bm.collect_views(load_dataset("bone_scan", root), config) if v.chest_box is not None][: args.views]
    s = config.ssd.image_size
    x = np.stack([resize_array(v.image, (s, s), "linear") for v in views])[..., None].astype(np.float32)
    ssd = build_ssd(config.ssd)
    if args.ssd_weights:
        ssd.load_weights(args.ssd_weights)
    if args.train_epochs:
        import keras

        boxes = np.stack([np.asarray(v.chest_box, np.float32) * np.tile([s / v.image.shape[0], s / v.image.shape[1]], 2)
                          for v in views])[:, None]
        ssd.compile(optimizer=keras.optimizers.Adam(1e-3))  # Table 10
        ssd.fit(x, {"boxes": boxes, "classes": np.ones((len(x), 1), np.int32)}, batch_size=8, epochs=args.train_epochs, verbose=0)
        det = ssd(x)
        from tfmedseg.metrics.instances import compute_box_jaccard

        jac = compute_box_jaccard([tuple(b) for b in det["boxes"].numpy()[:, 0]], [tuple(b) for b in boxes[:, 0]])
        print(f"SSD trained {args.train_epochs} epochs on the {len(x)} views: top-box Jaccard mean {jac['mean']:.3f}")
    trained = args.ssd_weights or (f"trained {args.train_epochs} epochs" if args.train_epochs else "untrained weights")
    print(f"SSD {s} px ({trained}), {len(x)} phantom views", flush=True)
    raw = ssd.network(x)
    keras_det = ssd.detect(raw["class_logits"], raw["box_deltas"])
    keras_top = keras_det["boxes"].numpy()[:, 0]
    keras_lat = _latency(tf.function(lambda a: ssd(a, training=False)), x[:1])
    print("| variant | size MB | latency ms/view (1 thread) | max top-box drift px | mean drift px |\n|---|---|---|---|---|")
    print(f"| Keras (tf.function, with NMS, all threads) | - | {keras_lat * 1000:.1f} | 0 | 0 |")
    for q in ("float32", "int8"):
        rep = (lambda: (x[i:i + 1] for i in range(len(x)))) if q == "int8" else None
        flat = convert_to_tflite(ssd.network, q, rep)
        interp = tf.lite.Interpreter(model_content=flat, num_threads=1)
        interp.allocate_tensors()
        inp, outs_d = interp.get_input_details()[0], interp.get_output_details()

        def run(a, interp=interp, inp=inp, outs_d=outs_d):
            interp.set_tensor(inp["index"], a)
            interp.invoke()
            return [interp.get_tensor(o["index"]) for o in outs_d]

        outs = [run(x[i:i + 1]) for i in range(len(x))]
        logits = np.concatenate([next(a for a in o if a.shape[-1] != 4) for o in outs])  # box deltas end in 4
        deltas = np.concatenate([next(a for a in o if a.shape[-1] == 4) for o in outs])
        top = ssd.detect(tf.constant(logits), tf.constant(deltas))["boxes"].numpy()[:, 0]
        drift = np.abs(top - keras_top).max(axis=1)
        lat = _latency(run, x[:1])
        print(f"| TFLite {q} | {len(flat) / 1e6:.2f} | {lat * 1000:.1f} | {drift.max():.2f} | {drift.mean():.2f} |")
    size = config.mask_rcnn.image_size
    for name, mcfg in (("Mask R-CNN", MaligNetConfig(ladder_fpn=False, global_features=False)), ("MaligNet", MaligNetConfig())):
        model = build_malignet(config.mask_rcnn, mcfg)
        for select in (False, True):
            print(f"{name} whole inference graph, {'builtins + Select TF ops' if select else 'TFLite builtins only'}: "
                  f"{_try_convert(model, (size, size, 1), select)}")


if __name__ == "__main__":
    main()
