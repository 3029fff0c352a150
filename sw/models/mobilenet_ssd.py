"""MobileNetV1 + SSD 300 (seed document 003) with seeded weights, depthwise-separable throughout.

The backbone is MobileNetV1 (Howard et al., 2017): a 3x3/2 convolution, then thirteen depthwise-separable
blocks (depthwise 3x3 + BatchNorm + ReLU, pointwise 1x1 + BatchNorm + ReLU), width ``alpha``. SSD heads
(Liu et al., 2016) read the 19x19 map of block 11 and the 10x10 map of block 13; four extra layers
(1x1 reduce, depthwise 3x3/2, 1x1 expand: the depthwise-separable form of SSD's extras) give 5x5, 3x3,
2x2 and 1x1 maps. Each map has a location head (``4 * anchors`` channels) and a class head
(``classes * anchors``), each a depthwise 3x3 and a 1x1. The twelve head maps are the network's outputs
(the engine writes them); :func:`decode_detections` turns them into boxes on the host (priors, decoding,
softmax, non-maximum suppression: ``sw.detect``). No trained weights are at hand: :func:`mobilenet_ssd`
initialises from a seed and gives the BatchNorm layers non-trivial statistics.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MobileNetSSD", "mobilenet_ssd", "ssd_priors", "decode_detections", "MOBILENET_BLOCKS"]

#: (output channels, stride) of MobileNetV1's thirteen depthwise-separable blocks, at width 1.
MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                    (512, 1), (512, 1), (1024, 2), (1024, 1))
#: (reduce, expand) channels of the four extra layers, at width 1.
EXTRAS = ((256, 512), (128, 256), (128, 256), (64, 128))
ANCHORS = (3, 6, 6, 6, 6, 6)


def _bn_relu(conv: nn.Conv2d) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU(inplace=True))


def _separable(cin: int, cout: int, stride: int, *, relu: bool = True) -> nn.Sequential:
    """Depthwise 3x3 (stride) + BN + ReLU, then pointwise 1x1 + BN (+ ReLU)."""
    dw = _bn_relu(nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False))
    pw = nn.Conv2d(cin, cout, 1, bias=not relu)
    return nn.Sequential(dw, _bn_relu(pw) if relu else pw)


class MobileNetSSD(nn.Module):
    """MobileNetV1-SSD: ``(N, 3, S, S)`` -> twelve head maps ``[loc0, conf0, ..., loc5, conf5]`` (NCHW)."""

    def __init__(self, classes: int = 21, alpha: float = 1.0):
        super().__init__()
        self.classes = classes

        def ch(n):
            return max(8, int(round(n * alpha / 8)) * 8)

        self.stem = _bn_relu(nn.Conv2d(3, ch(32), 3, stride=2, padding=1, bias=False))
        blocks, cin = [], ch(32)
        for cout, stride in MOBILENET_BLOCKS:
            blocks.append(_separable(cin, ch(cout), stride))
            cin = ch(cout)
        self.blocks = nn.ModuleList(blocks)
        extras, sources = [], [ch(512), ch(1024)]
        for reduce, expand in EXTRAS:
            extras.append(nn.Sequential(_bn_relu(nn.Conv2d(cin, ch(reduce), 1, bias=False)),
                                        _separable(ch(reduce), ch(expand), 2)))
            cin = ch(expand)
            sources.append(cin)
        self.extras = nn.ModuleList(extras)
        self.loc = nn.ModuleList(_separable(c, 4 * a, 1, relu=False) for c, a in zip(sources, ANCHORS, strict=True))
        self.conf = nn.ModuleList(_separable(c, classes * a, 1, relu=False)
                                  for c, a in zip(sources, ANCHORS, strict=True))

    def forward(self, x):
        x = self.stem(x)
        maps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in (10, 12):
                maps.append(x)
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        out = []
        for m, loc, conf in zip(maps, self.loc, self.conf, strict=True):
            out += [loc(m), conf(m)]
        return tuple(out)


def mobilenet_ssd(seed: int = 0, classes: int = 21, alpha: float = 1.0) -> MobileNetSSD:
    """:class:`MobileNetSSD` initialised after ``torch.manual_seed(seed)``, BatchNorm statistics from the same
    seed, in eval mode."""
    from .squeezenext import seeded_batchnorm

    torch.manual_seed(seed)
    return seeded_batchnorm(MobileNetSSD(classes, alpha))


def ssd_priors(maps: tuple[int, ...], image_size: int):
    """SSD's priors for the given map sides: sizes from 0.2 to 0.95 of the picture, aspect ratios
    1, 2, 1/2 (and 3, 1/3 on every map but the first)."""
    import numpy as np

    from sw.detect import PriorConfig, prior_boxes

    n = len(maps)
    scales = [0.2 + (0.95 - 0.2) * k / (n - 1) for k in range(n)] + [1.05]
    sizes = [int(round(s * image_size)) for s in scales]
    ratios = tuple((1.0, 2.0, 0.5) if a == 3 else (1.0, 2.0, 0.5, 3.0, 1 / 3) for a in ANCHORS[:n])
    cfg = PriorConfig(image_size=image_size, feature_maps=tuple(maps),
                      steps=tuple(max(1, int(np.ceil(image_size / f))) for f in maps),
                      min_sizes=tuple(sizes[:n]), max_sizes=tuple(sizes[1:n + 1]), max_ratios=(1.0,) * n,
                      aspect_ratios=tuple(r[:a - 1] for r, a in zip(ratios, ANCHORS, strict=True)))
    return prior_boxes(cfg)


def decode_detections(heads, input_side: int, image_size: tuple[int, int], classes: int = 21, label: int = 1,
                      **kw):
    """Host post-processing: the twelve head maps (NCHW) of an ``input_side`` square input -> detections of
    ``label`` in the pixels of a picture of ``image_size`` (width, height)."""
    import numpy as np

    from sw.detect import ssd_postprocess
    from sw.models.rfsong import flatten_heads

    heads = [np.asarray(h) for h in heads]
    loc, conf = flatten_heads(heads, num_classes=classes)
    priors = ssd_priors(tuple(h.shape[-1] for h in heads[::2]), input_side)
    return ssd_postprocess(loc, conf, image_size, priors=priors, label=label, **kw)
