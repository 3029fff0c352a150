"""SqueezeNext (Gholami et al., 2018; seed document 002), seeded weights.

The 23-block network (1.0-SqNxt-23): a 7x7/2 stem with 64 filters, max pool 3x3/2, four stages of
6, 6, 8 and 1 SqueezeNext blocks with 32, 64, 128 and 256 output channels (strides 1, 2, 2, 2), a 1x1
convolution to 128 channels, then the classifier (a 1x1 convolution and a global average). A block is
``1x1 -> 1x1 -> 3x1 -> 1x3 -> 1x1`` (each followed by BatchNorm; ReLU after all but the last), plus a
shortcut, then ReLU. The first 1x1 reduces the input to half (a quarter when the block narrows, the
whole width when it strides), the second halves it again, the separable 3x1 and 1x3 restore it and
the last 1x1 expands to the block's output. The shortcut is the identity, or a 1x1 convolution with
BatchNorm (no ReLU) when the block strides or changes width (the reference implementation's rule).

On the engine the add is one dual convolution: the last 1x1 and the shortcut's identity (or its
projection's output through an identity) summed in one accumulator (``quant.graph`` writes the
identity operand as a convolution). No trained weights are at hand: :func:`squeezenext` initialises
from a seed and gives the BatchNorm layers non-trivial statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SqueezeNextBlock", "SqueezeNext", "squeezenext", "SQNXT23_BLOCKS", "seeded_batchnorm"]

#: Blocks per stage of 1.0-SqNxt-23.
SQNXT23_BLOCKS = (6, 6, 8, 1)


def _conv_bn(cin: int, cout: int, kernel, stride=1, padding=0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
                         nn.BatchNorm2d(cout))


class SqueezeNextBlock(nn.Module):
    """``relu(conv5(relu(conv4(relu(conv3(relu(conv2(relu(conv1(x)))))))))) + shortcut(x))``."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        reduction = 1.0 if stride == 2 else (0.25 if cin > cout else 0.5)
        mid = max(8, int(cin * reduction))
        self.conv1 = _conv_bn(cin, mid, 1, stride)
        self.conv2 = _conv_bn(mid, max(8, mid // 2), 1)
        self.conv3 = _conv_bn(max(8, mid // 2), mid, (3, 1), padding=(1, 0))
        self.conv4 = _conv_bn(mid, mid, (1, 3), padding=(0, 1))
        self.conv5 = _conv_bn(mid, cout, 1)
        self.shortcut = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        y = F.relu(self.conv3(y))
        y = F.relu(self.conv4(y))
        y = self.conv5(y)
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class SqueezeNext(nn.Module):
    """SqueezeNext for ``(N, 3, S, S)`` inputs; ``width`` scales the channel counts (1.0: the paper's)."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0, blocks=SQNXT23_BLOCKS):
        super().__init__()

        def ch(n):
            return max(8, int(round(n * width / 8)) * 8)

        self.stem = nn.Sequential(nn.Conv2d(3, ch(64), 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(ch(64)),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True))
        layers, cin = [], ch(64)
        for count, cout, stride in zip(blocks, (32, 64, 128, 256), (1, 2, 2, 2), strict=True):
            for i in range(count):
                layers.append(SqueezeNextBlock(cin, ch(cout), stride if i == 0 else 1))
                cin = ch(cout)
        self.stages = nn.Sequential(*layers)
        self.conv2 = nn.Sequential(nn.Conv2d(cin, ch(128), 1, bias=False), nn.BatchNorm2d(ch(128)),
                                   nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(ch(128), num_classes, 1)

    def forward(self, x):
        x = self.conv2(self.stages(self.stem(x)))
        return torch.flatten(F.adaptive_avg_pool2d(self.classifier(x), 1), 1)


def squeezenext(seed: int = 0, num_classes: int = 1000, width: float = 1.0, blocks=SQNXT23_BLOCKS) -> SqueezeNext:
    """:class:`SqueezeNext` initialised after ``torch.manual_seed(seed)``, BatchNorm statistics drawn from
    the same seed (so that folding them changes the weights), in eval mode."""
    torch.manual_seed(seed)
    return seeded_batchnorm(SqueezeNext(num_classes, width, blocks))


def seeded_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, every BatchNorm's statistics and scale drawn from torch's current seed (so
    that folding them changes the weights, as trained statistics would)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
    return model.eval()
