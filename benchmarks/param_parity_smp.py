"""Parameter parity of tfmedseg's U-Net / UNet++ / MA-Net with segmentation_models_pytorch 0.6.

Two halves, because torch and TensorFlow never share a process here:

1. ``--smp`` (run in an environment with torch + segmentation-models-pytorch, e.g. the ``parity``
   extra; no TensorFlow needed): builds every smp model (3 input channels, 1 class,
   ``encoder_weights=None``), runs one forward pass at 64x64 with hooks on every module, and
   prints a JSON object ``{"arch/encoder": [total, forward]}`` -- ``total`` is
   ``sum(p.numel() for p in model.parameters())``, ``forward`` only the parameters of modules the
   forward pass calls (smp keeps EfficientNet's unused 1x1 head convolution and, for UNet++ on
   VGG, an unused centre block; a Keras model has neither).
2. default (the tfmedseg environment): reads that JSON (``--smp-json``, default
   ``benchmarks/smp_param_counts.json``), counts our models (encoder built once per encoder, the
   decoders counted on placeholder inputs) and prints the Markdown table of ``docs/models.md``.

Usage:
    "$TFMEDSEG_TORCH_PYTHON" benchmarks/param_parity_smp.py --smp > benchmarks/smp_param_counts.json
    PYTHONPATH=. python benchmarks/param_parity_smp.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ARCHS = ("unet", "unet_plus_plus", "manet")
ENCODERS = ("resnet34", "resnet101", "efficientnet-b0", "efficientnet-b3", "timm-efficientnet-b0",
            "timm-efficientnet-b3", "timm-efficientnet-b6", "mobilenet_v2", "vgg16", "xception")
_SMP_CLASS = {"unet": "Unet", "unet_plus_plus": "UnetPlusPlus", "manet": "MAnet"}
_DEFAULT_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smp_param_counts.json")


def smp_counts(archs=ARCHS, encoders=ENCODERS) -> dict:
    import segmentation_models_pytorch as smp
    import torch

    counts = {}
    for encoder in encoders:
        for arch in archs:
            model = getattr(smp, _SMP_CLASS[arch])(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=1).eval()
            called: set[int] = set()
            hooks = [m.register_forward_hook(lambda mod, i, o, seen=called: seen.add(id(mod))) for m in model.modules()]
            with torch.no_grad():
                model(torch.zeros(1, 3, 64, 64))
            for h in hooks:
                h.remove()
            total = sum(p.numel() for p in model.parameters())
            forward = sum(p.numel() for m in model.modules() if id(m) in called for p in m.parameters(recurse=False))
            counts[f"{arch}/{encoder}"] = [int(total), int(forward)]
            print(f"{arch}/{encoder}: {total} {forward}", file=sys.stderr)
    return counts


def ours(archs=ARCHS, encoders=ENCODERS) -> dict:
    import numpy as np

    import tfmedseg  # noqa: F401
    from tfmedseg.models.backbones.encoders import build_encoder
    from tfmedseg.models.segmentation.unet_family import decoder_parameter_count

    counts = {}
    for encoder in encoders:
        enc = build_encoder(encoder, (64, 64, 3))
        n_enc = int(sum(int(np.prod(w.shape)) for w in enc.trainable_weights))
        for arch in archs:
            counts[f"{arch}/{encoder}"] = n_enc + decoder_parameter_count(arch, encoder, classes=1)
        del enc
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smp", action="store_true", help="count smp's models (torch environment) and print JSON")
    parser.add_argument("--smp-json", default=_DEFAULT_JSON, help="smp counts written by --smp")
    args = parser.parse_args(argv)
    if args.smp:
        print(json.dumps(smp_counts(), indent=1))
        return 0
    with open(args.smp_json) as f:
        reference = json.load(f)
    mine = ours()
    print("| model | encoder | smp total (M) | smp forward (M) | tfmedseg (M) | diff vs forward |")
    print("|---|---|---:|---:|---:|---:|")
    for key, n in mine.items():
        arch, encoder = key.split("/")
        total, forward = reference[key]
        print(f"| {arch} | {encoder} | {total / 1e6:.3f} | {forward / 1e6:.3f} | {n / 1e6:.3f} | {100 * (n - forward) / forward:+.2f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
