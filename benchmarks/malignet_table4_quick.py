"""Seed 001 Table 4 rows on the bone-scan phantoms, lesion stage only, same run and same data.

Trains each requested row on the reference chest crops of the training patients (``+ unlabeled``
rows mix the unlabeled patients' crops into every batch), then scores the validation crops
(mask IoU >= 0.5, score >= 0.7, class-weighted F1 as Table 4) and times inference per view on the
same machine. Prints the per-epoch denoising cost and unlabeled views consumed (from the Keras
history) and the MaligNet / Mask R-CNN inference-time ratio.

    PYTHONPATH=. nice -n 10 python benchmarks/malignet_table4_quick.py --epochs 30 --out /tmp/t4

Rows: ``mask_rcnn`` (ResNet + FPN), ``global`` (+ global features), ``lfpn`` (+ LFPN),
``malignet`` (both), ``malignet_unlabeled`` (both + unlabeled views, 2 per batch of 4),
``self_training`` (Table 8: the previous row is the teacher; its predictions on the unlabeled crops
at confidence >= 0.7, image-level filter > ``--st-threshold``, become labeled samples; the student,
same variant, retrains from scratch on labeled + pseudo-labeled crops).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import yaml

import tfmedseg  # noqa: F401

ROWS = {
    "mask_rcnn": (False, False, 0),
    "global": (False, True, 0),
    "lfpn": (True, False, 0),
    "malignet": (True, True, 0),
    "malignet_unlabeled": (True, True, 2),
}


def _dataset(labeled, unlabeled, batch, u_per_batch, mcfg, seed):
    import tensorflow as tf

    from tfmedseg.data.detection import detection_dataset
    from tfmedseg.data.box_crops import aligned_crop

    ds = detection_dataset(labeled, unlabeled if u_per_batch else (), batch, u_per_batch,
                           max_instances=mcfg.max_gt_instances, seed=seed)
    m = mcfg.mini_mask_size

    def fn(b):
        masks = tf.cast(b["masks"], tf.float32)
        bs, n, s = tf.shape(masks)[0], tf.shape(masks)[1], masks.shape[-1]
        mini = aligned_crop(tf.reshape(masks, [-1, s, s, 1]), tf.reshape(b["boxes"], [-1, 4]), tf.range(bs * n), m)
        return {"images": b["image"], "boxes": b["boxes"], "classes": b["classes"],
                "masks": tf.reshape(mini, [bs, n, m, m]), "labeled": tf.cast(b["labeled"], tf.float32)}

    return ds.map(fn).prefetch(2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", type=int, default=36)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--rows", default="mask_rcnn,malignet,malignet_unlabeled")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--st-threshold", type=float, default=0.85)
    p.add_argument("--st-filter", default="image")
    args = p.parse_args()

    import keras
    import tensorflow as tf

    from tfmedseg.config import from_dict
    from tfmedseg.datasets import load_dataset
    from tfmedseg.datasets.case import LESION_CLASSES
    from tfmedseg.datasets.phantoms import ensure_phantoms
    from tfmedseg.data.views import crop_sample
    from tfmedseg.experiments import bone_malignet as bm
    from tfmedseg.metrics.confusion import format_confusion
    from tfmedseg.metrics.instances import compute_instance_metrics
    from tfmedseg.models.detection.malignet import MaligNetConfig, build_malignet
    from tfmedseg.training.self_training import (
        filter_pseudo_labels,
        pseudo_label_samples,
    )

    cfg_path = Path(bm.__file__).resolve().parents[1] / "configs" / "bone_malignet_quick.yaml"
    config = from_dict(bm.BoneMaligNetConfig, yaml.safe_load(cfg_path.read_text()))
    mcfg = config.mask_rcnn
    cache = Path(os.environ.get("TFMEDSEG_CACHE", "/tmp/tfmedseg_cache")) / f"bone_scan_{args.cases}"
    root = ensure_phantoms("bone_scan", cache, args.cases, 0)
    cases = load_dataset("bone_scan", root)
    train, val, unl = bm.split_patients(cases, config.validation_fraction, args.seed)
    tr_views, va_views = bm.collect_views(train, config), bm.collect_views(val, config)
    un_views = bm.collect_views(unl, config)
    # the unlabeled phantoms have no reference chest box: crop them at the training views' mean
    # relative chest box (the experiment uses the SSD's predicted boxes instead)
    rel = np.mean([np.asarray(v.chest_box) / np.tile(v.image.shape, 2) for v in tr_views], axis=0)
    for v in un_views:
        if v.chest_box is None:
            v.chest_box = tuple(float(x) for x in rel * np.tile(v.image.shape, 2))
    size = config.crop_size
    tr = [crop_sample(v, size, LESION_CLASSES)[0] for v in tr_views]
    va = [crop_sample(v, size, LESION_CLASSES)[0] for v in va_views]
    un = [crop_sample(v, size, LESION_CLASSES)[0] for v in un_views]
    print(f"{len(cases)} patients: {len(train)} train ({len(tr)} views), {len(val)} validation ({len(va)} views), "
          f"{len(unl)} unlabeled ({len(un)} views)", flush=True)
    refs = []
    for s in va:
        refs.append([{"class_name": LESION_CLASSES[int(c) - 1], "box": tuple(b), "mask": m.astype(bool)}
                     for b, c, m in zip(s.boxes, s.classes, s.masks)])
    x_va = np.stack([s.image for s in va]).astype(np.float32)
    results = {}
    args.out.mkdir(parents=True, exist_ok=True)
    teacher = None
    served = {}
    for row in args.rows.split(","):
        labeled = tr
        if row == "self_training":
            if teacher is None:
                raise SystemExit("self_training needs a trained row before it (the teacher)")
            t_row, t_model = teacher
            ladder, glob, u = ROWS[t_row]
            x_un = np.stack([s.image for s in un]).astype(np.float32)
            preds = []
            for i in range(len(x_un)):
                o = {k: v.numpy()[0] for k, v in t_model(x_un[i:i + 1], training=False).items()}
                n = int(o["num_detections"])
                preds.append({"scores": o["scores"][:n], "classes": o["classes"][:n], "boxes": o["boxes"][:n],
                              "masks": o["masks"][:n]})
            kept, counts = filter_pseudo_labels(preds, args.st_threshold, args.st_filter, mcfg.detection_min_confidence)
            labeled = tr + pseudo_label_samples(kept, un)
            print(f"self-training (teacher {t_row}): {sum(len(p['scores']) for p in preds)} predicted lesions on "
                  f"{len(un)} unlabeled crops; {args.st_filter}-level > {args.st_threshold} keeps {counts['images']} "
                  f"images, {counts['lesions']} lesions", flush=True)
        else:
            ladder, glob, u = ROWS[row]
        keras.utils.set_random_seed(args.seed)
        batch = 4
        ds = _dataset(labeled, un, batch, u, mcfg, args.seed)
        steps = max(1, len(labeled) // (batch - u))
        model = build_malignet(mcfg, MaligNetConfig(ladder_fpn=ladder, global_features=glob))
        model.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=5.0), jit_compile=False)  # Table 11
        t0 = time.perf_counter()
        hist = model.fit(ds, epochs=args.epochs, steps_per_epoch=steps, verbose=2).history
        train_s = time.perf_counter() - t0
        fn = tf.function(lambda x, m=model: m(x, training=False), reduce_retracing=True)
        fn(x_va[:1])
        fn(x_va[:1])
        t0 = time.perf_counter()
        outs = [{k: v.numpy() for k, v in fn(x_va[i:i + 1]).items()} for i in range(len(x_va))]
        infer_s = (time.perf_counter() - t0) / len(x_va)
        preds = []
        for o in outs:
            n = int(o["num_detections"][0])
            preds.append([{"class_name": LESION_CLASSES[int(o["classes"][0, k]) - 1], "box": tuple(o["boxes"][0, k]),
                           "mask": o["masks"][0, k].astype(bool), "score": float(o["scores"][0, k])} for k in range(n)])
        met = compute_instance_metrics(preds, refs, LESION_CLASSES, 0.5, config.score_threshold, "mask")
        results[row] = {
            "train_seconds": train_s, "inference_seconds_per_view": infer_s,
            "precision": met["weighted"]["precision"], "sensitivity": met["weighted"]["sensitivity"],
            "f1": met["weighted"]["f1"], "localization_f1": met["localization"]["f1"],
            "denoising_loss": hist.get("denoising_loss"), "unlabeled_views": hist.get("unlabeled_views"),
            "labeled_views": hist.get("labeled_views"), "loss": hist.get("loss"),
            "confusion": np.asarray(met["confusion"]).tolist(),
        }
        print(format_confusion(met["confusion"], LESION_CLASSES), flush=True)
        print(f"== {row}: F1 {met['weighted']['f1']:.3f} (P {met['weighted']['precision']:.3f}, S "
              f"{met['weighted']['sensitivity']:.3f}), localisation F1 {met['localization']['f1']:.3f}, "
              f"{infer_s * 1000:.1f} ms/view, train {train_s:.0f} s", flush=True)
        if hist.get("denoising_loss"):
            d = hist["denoising_loss"]
            print(f"   denoising cost epoch 1 {d[0]:.4f} -> last {d[-1]:.4f}; unlabeled views/epoch "
                  f"{hist['unlabeled_views'][0]:.0f}, labeled {hist['labeled_views'][0]:.0f}", flush=True)
        (args.out / "table4_quick.json").write_text(json.dumps(results, indent=2))
        teacher = (row, model)
        served[row] = fn
    # inference time of every row, interleaved (the shared machine's load changes over a run)
    per_row = {row: 0.0 for row in served}
    for _ in range(5):
        for row, fn in served.items():
            t0 = time.perf_counter()
            for i in range(len(x_va)):
                fn(x_va[i:i + 1])["boxes"].numpy()
            per_row[row] += (time.perf_counter() - t0) / (5 * len(x_va))
    for row, sec in per_row.items():
        results[row]["inference_seconds_per_view"] = sec
    (args.out / "table4_quick.json").write_text(json.dumps(results, indent=2))
    print("\n| Row | Mean P | Mean S | Mean F1 | loc F1 | ms/view |\n|---|---|---|---|---|---|")
    for row, r in results.items():
        print(f"| {row} | {r['precision']:.3f} | {r['sensitivity']:.3f} | {r['f1']:.3f} | {r['localization_f1']:.3f} | "
              f"{r['inference_seconds_per_view'] * 1000:.1f} |")
    if "mask_rcnn" in results:
        base = results["mask_rcnn"]["inference_seconds_per_view"]
        for row, r in results.items():
            print(f"inference time ratio {row} / mask_rcnn: {r['inference_seconds_per_view'] / base:.2f}")


if __name__ == "__main__":
    main()
