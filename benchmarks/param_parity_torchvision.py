"""Reference parameter counts of the seed-003 segmentation networks in torchvision (no TensorFlow).

Run in a torch environment (the ``bench`` extra; its python in ``TFMEDSEG_TORCH_PYTHON``)::

    "$TFMEDSEG_TORCH_PYTHON" benchmarks/param_parity_torchvision.py

Each network is what the seed's author built (``StanciulescuAndrei/LicentaUPB``,
``ModelBuilder/*_DeepLab.py``): the torchvision classifier's convolutional part with the first
convolution replaced by a same-kernel 1-channel convolution, and ``DeepLabHead(C, 1)`` on its last
feature map (ResNet152 / ResNeXt101-32x8d: ``replace_stride_with_dilation=[False, True, True]``;
DenseNet201: ``features``; InceptionV3: everything up to ``Mixed_7c``, no auxiliary head). The ASPP
rates do not change the count. The printed counts are recorded in
``tests/models/test_deeplab_os8.py`` (``TORCHVISION_PARAMS``) and ``docs/liver_lesions.md``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models
from torchvision.models.segmentation.deeplabv3 import DeepLabHead


def _count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _resnet(builder) -> int:
    net = builder(weights=None, replace_stride_with_dilation=[False, True, True])
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    body = nn.Sequential(net.conv1, net.bn1, net.layer1, net.layer2, net.layer3, net.layer4)
    return _count(body, DeepLabHead(2048, 1))


def _densenet() -> int:
    net = models.densenet201(weights=None)
    net.features.conv0 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return _count(net.features, DeepLabHead(1920, 1))


def _inception() -> int:
    net = models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    net.Conv2d_1a_3x3.conv = nn.Conv2d(1, 32, 3, 2, bias=False)
    body = [m for n, m in net.named_children() if n not in ("AuxLogits", "fc", "avgpool", "dropout")]
    return _count(*body, DeepLabHead(2048, 1))


def reference_counts() -> dict[str, int]:
    """``{"resnet152": n, "resnext101_32x8d": n, "densenet201": n, "inception_v3": n}``."""
    return {
        "resnet152": _resnet(models.resnet152),
        "resnext101_32x8d": _resnet(models.resnext101_32x8d),
        "densenet201": _densenet(),
        "inception_v3": _inception(),
    }


def main() -> None:
    print(f"torch {torch.__version__}")
    print(f"{'network':<20} {'parameters (1-ch stem + DeepLabHead(C, 1))':>44}")
    for name, n in reference_counts().items():
        print(f"{name:<20} {n:>44,d}")


if __name__ == "__main__":
    main()
