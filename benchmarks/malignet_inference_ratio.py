"""MaligNet / Mask R-CNN inference time per chest crop at the quick config's sizes, interleaved.

Builds the quick config's Mask R-CNN, MaligNet (ladder FPN + global features, the head computing the
C6 term once per image) and the same MaligNet run through the seed's tiled concatenation
(``GlobalFeatureBoxHead.tiled_call``, identical outputs), untrained (the architecture's cost: the
number of detections of trained models also moves the mask pasting time), and times each on the
same crops, batch 1, warm, in interleaved rounds (:func:`tfmedseg.inference.detection.interleaved_seconds_per_item`);
prints the median per crop and the ratios to Mask R-CNN. The experiment's own table times the trained
rows of a run the same way.

    PYTHONPATH=. nice -n 10 python benchmarks/malignet_inference_ratio.py [--rounds 15] [--crops 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import tfmedseg  # noqa: F401  (oneDNN on before TensorFlow loads)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--crops", type=int, default=10)
    args = parser.parse_args()

    import keras

    from tfmedseg.config import load_config
    from tfmedseg.experiments import bone_malignet as bm
    from tfmedseg.inference.detection import instance_model_predictor, interleaved_seconds_per_item
    from tfmedseg.models.detection.global_features import GlobalFeatureBoxHead

    config = load_config(bm.BoneMaligNetConfig, Path(bm.__file__).resolve().parents[1] / "configs" / "bone_malignet_quick.yaml")
    keras.utils.set_random_seed(0)
    models = {"mask_rcnn": bm.build_lesion_model(config, None), "malignet": bm.build_lesion_model(config, config.malignet)}
    tiled = bm.build_lesion_model(config, config.malignet)
    size = config.mask_rcnn.image_size
    crops = list(np.random.default_rng(0).random((args.crops, size, size, 1)).astype(np.float32))
    for m in (*models.values(), tiled):
        m(crops[0][None], training=False)
    tiled.set_weights(models["malignet"].get_weights())
    assert isinstance(tiled.box_head, GlobalFeatureBoxHead)
    tiled.box_head.call = lambda rois, context=None, training=False, h=tiled.box_head: h.tiled_call(rois, context, training)
    models["malignet_tiled_head"] = tiled
    timed = interleaved_seconds_per_item({k: instance_model_predictor(m) for k, m in models.items()}, crops, args.rounds)
    base = timed["mask_rcnn"]["median"]
    print(f"quick config, {size}x{size} crops, batch 1, {args.rounds} interleaved rounds of {args.crops} crops (untrained)")
    print("| model | median ms/crop | min ms/crop | ratio to Mask R-CNN (median) |\n|---|---|---|---|")
    for name, t in timed.items():
        print(f"| {name} | {t['median'] * 1e3:.1f} | {t['min'] * 1e3:.1f} | {t['median'] / base:.2f} |")


if __name__ == "__main__":
    main()
