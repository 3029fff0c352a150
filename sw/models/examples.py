"""Example models for ``kindling run`` (docs/USAGE.md): PyTorch factories ``sw.models.examples:NAME``.

Seeded weights (no training): they show what the engine runs, not what a network recognises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TfStyleNet", "tf_style_net"]


class TfStyleNet(nn.Module):
    """A small classifier written as a TensorFlow export would be: explicit ``nn.ZeroPad2d`` / ``F.pad``
    (TF-SAME padding, more after than before) in front of unpadded convolutions, a 7x7/2 stem, 1x3 and
    3x1 convolutions, a 5x5/2, and a global average over ``classes`` channels. Input ``(3, H, W)``."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.pad = nn.ZeroPad2d((2, 3, 2, 3))
        self.stem = nn.Conv2d(3, 32, 7, stride=2)
        self.row = nn.Conv2d(32, 32, (1, 3))
        self.col = nn.Conv2d(32, 48, (3, 1))
        self.down = nn.Conv2d(48, 64, 5, stride=2)
        self.head = nn.Conv2d(64, classes, 1)

    def forward(self, x):
        x = F.relu(self.stem(self.pad(x)))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = F.relu(self.row(F.pad(x, (1, 1, 0, 0))))
        x = F.relu(self.col(F.pad(x, (0, 0, 1, 1))))
        x = F.relu(self.down(F.pad(x, (1, 2, 1, 2))))
        return torch.flatten(F.adaptive_avg_pool2d(self.head(x), 1), 1)


def tf_style_net(seed: int = 0, classes: int = 10) -> TfStyleNet:
    """:class:`TfStyleNet` initialised after ``torch.manual_seed(seed)`` (PyTorch's default init), in eval mode."""
    torch.manual_seed(seed)
    return TfStyleNet(classes).eval()
