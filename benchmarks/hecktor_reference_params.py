"""Parameter counts of the iantsen/hecktor reference networks (PyTorch), for seed 004.

Run with the torch environment (no TensorFlow there)::

    "$TFMEDSEG_TORCH_PYTHON" benchmarks/hecktor_reference_params.py

The classes below transcribe ``src/layers.py`` and ``src/models.py`` of the GitHub repository
``iantsen/hecktor`` (Iantsen et al., HECKTOR 2020 winner; the code base of seed 004): the paper's
model ``FastSmoothSENormDeepUNet_supervision_skip_no_drop`` (our ``se_unet``) and ``BaselineUNet``
(our ``basic_unet``), with ``in_channels=2, n_cls=2`` (the reference then predicts one sigmoid
channel) and ``n_filters=24``. The printed counts are the constants asserted in
``tests/models/test_se_unet.py`` (``REFERENCE_PARAMS``) and tabled in ``docs/experiments.md``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicConv3d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, bias=False, **kw)
        self.norm = nn.InstanceNorm3d(cout, affine=True)

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


class SEWeights(nn.Module):
    def __init__(self, c, r=2):
        super().__init__()
        self.conv1 = nn.Conv3d(c, c // r, 1, bias=True)
        self.conv2 = nn.Conv3d(c // r, c, 1, bias=True)

    def forward(self, x):
        b, c = x.shape[:2]
        out = x.view(b, c, -1).mean(-1).view(b, c, 1, 1, 1)
        return self.conv2(F.relu(self.conv1(out)))


class FastSmoothSENorm(nn.Module):
    def __init__(self, c, r=2):
        super().__init__()
        self.norm = nn.InstanceNorm3d(c, affine=False)
        self.gamma = SEWeights(c, r)
        self.beta = SEWeights(c, r)

    def forward(self, x):
        return torch.sigmoid(self.gamma(x)) * self.norm(x) + torch.tanh(self.beta(x))


class FastSmoothSeNormConv3d(nn.Module):
    def __init__(self, cin, cout, r=2, **kw):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, bias=True, **kw)
        self.norm = FastSmoothSENorm(cout, r)

    def forward(self, x):
        return self.norm(F.relu(self.conv(x)))


class RESseNormConv3d(nn.Module):
    def __init__(self, cin, cout, r=2, **kw):
        super().__init__()
        self.conv1 = FastSmoothSeNormConv3d(cin, cout, r, **kw)
        self.res_conv = FastSmoothSeNormConv3d(cin, cout, r, kernel_size=1) if cin != cout else None

    def forward(self, x):
        residual = self.res_conv(x) if self.res_conv else x
        return self.conv1(x) + residual


class UpConv(nn.Module):
    def __init__(self, cin, cout, r=2, scale=2):
        super().__init__()
        self.scale = scale
        self.conv = FastSmoothSeNormConv3d(cin, cout, r, kernel_size=1)

    def forward(self, x):
        return F.interpolate(self.conv(x), scale_factor=self.scale, mode="trilinear", align_corners=False)


def _up(cin, cout):
    return nn.ConvTranspose3d(cin, cout, kernel_size=3, stride=2, padding=1, output_padding=1)


class SEUNet(nn.Module):
    """``FastSmoothSENormDeepUNet_supervision_skip_no_drop`` (the paper's model)."""

    def __init__(self, cin=2, n_cls=2, f=24, r=2):
        super().__init__()
        n_out = 1 if n_cls == 2 else n_cls
        k3 = {"kernel_size": 3, "stride": 1, "padding": 1}
        w = [f, 2 * f, 4 * f, 8 * f, 16 * f]
        self.left = nn.ModuleList([nn.Sequential(RESseNormConv3d(cin, f, r, kernel_size=7, stride=1, padding=3),
                                                 RESseNormConv3d(f, f, r, **k3))])
        for lvl in range(1, 5):
            self.left.append(nn.Sequential(RESseNormConv3d(w[lvl - 1], w[lvl], r, **k3),
                                           RESseNormConv3d(w[lvl], w[lvl], r, **k3),
                                           RESseNormConv3d(w[lvl], w[lvl], r, **k3)))
        self.upconv = nn.ModuleList([_up(w[lvl + 1], w[lvl]) for lvl in range(4)])
        self.right1 = nn.ModuleList([FastSmoothSeNormConv3d(2 * w[lvl], w[lvl], r, **k3) for lvl in range(4)])
        self.right2 = nn.ModuleList([FastSmoothSeNormConv3d(w[lvl], w[lvl], r, **k3) for lvl in range(4)])
        self.vision = nn.ModuleList([UpConv(w[lvl], f, r, scale=2 ** lvl) for lvl in range(1, 4)])
        self.conv1x1 = nn.Conv3d(f, n_out, kernel_size=1)

    def forward(self, x):
        skips = []
        for lvl, block in enumerate(self.left):
            x = block(F.max_pool3d(x, 2) if lvl else x)
            skips.append(x)
        x = skips.pop()
        side = []
        for lvl in (3, 2, 1):
            x = self.right2[lvl](self.right1[lvl](torch.cat([self.upconv[lvl](x), skips[lvl]], 1)))
            side.append(self.vision[lvl - 1](x))
        x = self.right1[0](torch.cat([self.upconv[0](x), skips[0]], 1))
        x = self.right2[0](x + sum(side))
        return torch.sigmoid(self.conv1x1(x))


class BaselineUNet(nn.Module):
    def __init__(self, cin=2, n_cls=2, f=24):
        super().__init__()
        n_out = 1 if n_cls == 2 else n_cls
        k3 = {"kernel_size": 3, "stride": 1, "padding": 1}
        w = [f, 2 * f, 4 * f, 8 * f]
        self.left = nn.ModuleList([nn.Sequential(BasicConv3d(cin if lvl == 0 else w[lvl - 1], w[lvl], **k3),
                                                 BasicConv3d(w[lvl], w[lvl], **k3)) for lvl in range(4)])
        self.upconv = nn.ModuleList([_up(w[lvl + 1], w[lvl]) for lvl in range(3)])
        self.right = nn.ModuleList([nn.Sequential(BasicConv3d(2 * w[lvl], w[lvl], **k3),
                                                  BasicConv3d(w[lvl], w[lvl], **k3)) for lvl in range(3)])
        self.conv1x1 = nn.Conv3d(f, n_out, kernel_size=1)

    def forward(self, x):
        skips = []
        for lvl, block in enumerate(self.left):
            x = block(F.max_pool3d(x, 2) if lvl else x)
            skips.append(x)
        x = skips.pop()
        for lvl in (2, 1, 0):
            x = self.right[lvl](torch.cat([self.upconv[lvl](x), skips[lvl]], 1))
        return torch.sigmoid(self.conv1x1(x))


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    torch.manual_seed(0)
    for name, model in (("se_unet", SEUNet()), ("basic_unet", BaselineUNet())):
        with torch.no_grad():
            out = model(torch.randn(1, 2, 32, 32, 32))
        print(f"{name}: {count(model)} parameters (iantsen/hecktor, in_channels=2, n_cls=2 -> 1 sigmoid "
              f"channel, n_filters=24; forward {tuple(out.shape)})")


if __name__ == "__main__":
    main()
