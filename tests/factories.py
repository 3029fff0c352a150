"""PyTorch factories the CLI tests load as ``tests.factories:NAME`` (``kindling run`` refusals)."""

from torch import nn


def with_sigmoid() -> nn.Module:
    """A convolution, a Sigmoid the engine cannot run, another convolution."""
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sigmoid(), nn.Conv2d(8, 8, 3)).eval()


def with_grouped_conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2)).eval()
