"""PyTorch factories the CLI tests load as ``tests.factories:NAME`` (``kindling run`` refusals)."""

from torch import nn


def with_sigmoid() -> nn.Module:
    """A convolution, a Sigmoid the engine cannot run, another convolution."""
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sigmoid(), nn.Conv2d(8, 8, 3)).eval()


def with_grouped_conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2)).eval()


class _TwoRefusals(nn.Module):
    """Two branches, each with a layer the pipeline refuses; the concat reading them is not a refusal of its own."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3)
        self.b = nn.Conv2d(4, 8, 3, groups=2)
        self.c = nn.Conv2d(4, 8, 3)

    def forward(self, x):
        import torch

        return torch.cat([torch.sigmoid(self.a(x)), self.b(x), torch.relu(self.c(x))], 1)


def with_two_refusals() -> nn.Module:
    return _TwoRefusals().eval()
