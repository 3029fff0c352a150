"""The seed documents' networks with seeded weights, quantized and ready for :class:`sw.networks.Runner`.

``SEED_NETWORKS[name](reduced)`` gives ``(float model, input shape)``: the paper's network at 224x224,
or a reduced variant (half the channels, a smaller picture, fewer SqueezeNext blocks) that simulates in
seconds. :func:`quantized_seed` calibrates on seeded noise pictures (no trained weights: real pictures
would not make the activations any more meaningful).
"""

from __future__ import annotations

import torch

from .mobilenet_ssd import mobilenet_ssd
from .squeezenet10 import squeezenet10
from .squeezenext import squeezenext

__all__ = ["SEED_NETWORKS", "seed_model", "quantized_seed", "seed_input"]

SEED_NETWORKS = {
    "squeezenet10": "SqueezeNet 1.0 (seed 002): 7x7/2 conv1 with 96 filters, eight Fire modules, conv10",
    "squeezenext": "SqueezeNext-23 (seed 002): 7x7/2 stem, 21 blocks 1x1-1x1-3x1-1x3-1x1 with shortcuts",
    "mobilenet_ssd": "MobileNetV1 + SSD 300 (seed 003): depthwise-separable backbone, extras and heads",
}


def seed_model(name: str, reduced: bool = False) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """``(model in eval mode, input shape)`` of a seed network."""
    if name == "squeezenet10":
        return (squeezenet10(width=0.5, num_classes=16), (3, 67, 67)) if reduced else \
            (squeezenet10(), (3, 224, 224))
    if name == "squeezenext":
        return (squeezenext(width=0.5, num_classes=16, blocks=(2, 2, 2, 1)), (3, 64, 64)) if reduced else \
            (squeezenext(), (3, 224, 224))
    if name == "mobilenet_ssd":
        return (mobilenet_ssd(alpha=0.25), (3, 64, 64)) if reduced else (mobilenet_ssd(), (3, 300, 300))
    raise ValueError(f"unknown seed network {name!r}; choose from {list(SEED_NETWORKS)}")


def seed_input(shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """A seeded normal-noise picture ``(1, C, H, W)`` (the scale of ImageNet-normalised pixels)."""
    return torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed))


def quantized_seed(name: str, reduced: bool = False):
    """``(QGraph, input shape)``: the seed network quantized on four seeded noise pictures (seeds 100..103)."""
    from quant.quantize import quantize_model

    model, shape = seed_model(name, reduced)
    calib = torch.cat([seed_input(shape, 100 + i) for i in range(4)])
    return quantize_model(model, calib, shape), shape
