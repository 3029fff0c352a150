"""SqueezeNet 1.0 (Iandola et al., 2016, the paper's network; seed document 002), seeded weights.

torchvision's ``squeezenet1_0`` layout: conv1 7x7/2 with 96 filters and ReLU, max pool 3x3/2 (ceil),
fire2..fire4, max pool, fire5..fire8, max pool, fire9, then dropout, conv10 1x1 + ReLU and a global
average. No trained weights are at hand: :func:`squeezenet10` draws them from a seed (PyTorch's
default initialisation), which is all an exactness and performance test needs.
"""

from __future__ import annotations

import torch
from torch import nn

from .squeezenet import Fire

__all__ = ["SqueezeNet10", "squeezenet10", "FIRES_10"]

#: (in_channels, squeeze, expand1x1, expand3x3) of fire2 .. fire9, with their index in ``features``.
FIRES_10 = {
    3: (96, 16, 64, 64), 4: (128, 16, 64, 64), 5: (128, 32, 128, 128),
    7: (256, 32, 128, 128), 8: (256, 48, 192, 192), 9: (384, 48, 192, 192), 10: (384, 64, 256, 256),
    12: (512, 64, 256, 256),
}


class SqueezeNet10(nn.Module):
    """SqueezeNet 1.0: ``(N, 3, S, S)`` float -> ``(N, num_classes)``; ``width`` scales every channel count
    (1.0 is the paper's network; a smaller width keeps simulations short)."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0):
        super().__init__()

        def ch(n):
            return max(8, int(round(n * width / 8)) * 8)

        layers: list[nn.Module] = [nn.Conv2d(3, ch(96), kernel_size=7, stride=2), nn.ReLU(inplace=True)]
        for i in range(2, 13):
            if i in FIRES_10:
                cin, s, e1, e3 = FIRES_10[i]
                layers.append(Fire(ch(cin), ch(s), ch(e1), ch(e3)))
            elif i in (2, 6, 11):
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=0.5), nn.Conv2d(ch(512), num_classes, kernel_size=1),
                                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def squeezenet10(seed: int = 0, num_classes: int = 1000, width: float = 1.0) -> SqueezeNet10:
    """:class:`SqueezeNet10` initialised after ``torch.manual_seed(seed)``, in eval mode."""
    torch.manual_seed(seed)
    return SqueezeNet10(num_classes, width).eval()
