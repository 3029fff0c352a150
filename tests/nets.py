"""Small quantized networks for the link and staging tests (seeded: the same graph every run)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from quant import golden
from quant.quantize import quantize_model
from sw.models.squeezenet import Fire


def fire_network(*, cin: int = 16, squeeze: int = 8, expand: int = 16, hw: int = 10, stem: bool = True,
                 seed: int = 0):
    """A reduced SqueezeNet 1.1 block: (a 3x3 stride-2 stem and a max pool, then) one Fire module.

    Returns ``(qgraph, x_q)``: the quantized graph (calibrated on seeded noise) and a seeded int8 input.
    """
    gen = torch.Generator().manual_seed(seed)
    layers = []
    if stem:
        layers += [nn.Conv2d(3, cin, 3, stride=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True)]
    layers.append(Fire(cin, squeeze, expand, expand))
    model = nn.Sequential(*layers).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / max(1, p[0].numel()) ** 0.5))
    in_ch = 3 if stem else cin
    size = 4 * hw + 3 if stem else hw
    calib = torch.rand((4, in_ch, size, size), generator=gen)
    qgraph = quantize_model(model, calib)
    x = torch.rand((1, in_ch, size, size), generator=gen)
    x_q = golden.quantize_input(x, qgraph.qparams(qgraph.inputs[0]))
    return qgraph, np.asarray(x_q)


class _Branches(nn.Module):
    """Two convolutions concatenated (each writes part of every pixel), then a wide 1x1 convolution."""

    def __init__(self, cin: int, a: int, b: int, out: int):
        super().__init__()
        self.a = nn.Conv2d(cin, a, 1)
        self.b = nn.Conv2d(cin, b, 3, padding=1)
        self.head = nn.Conv2d(a + b, out, 1)

    def forward(self, x):
        return torch.relu(self.head(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)))


def branch_network(*, cin: int = 12, a: int = 24, b: int = 20, out: int = 64, hw: int = 9, seed: int = 0):
    """A concat of two convolutions (strided writes) feeding a convolution with many output channels.

    Returns ``(qgraph, x_q)``.
    """
    gen = torch.Generator().manual_seed(seed)
    model = _Branches(cin, a, b, out).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / max(1, p[0].numel()) ** 0.5))
    calib = torch.rand((4, cin, hw, hw), generator=gen)
    qgraph = quantize_model(model, calib)
    x = torch.rand((1, cin, hw, hw), generator=gen)
    return qgraph, np.asarray(golden.quantize_input(x, qgraph.qparams(qgraph.inputs[0])))
