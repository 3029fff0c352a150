"""SqueezeNet 1.1 (Iandola et al., 2016), float32, written out by hand.

The module layout and attribute names follow torchvision's ``squeezenet1_1``
(``features.N`` / ``classifier.N``, Fire modules with ``squeeze``,
``expand1x1``, ``expand3x3``), so the graph capture names every layer by the
same path as the reference implementation. The pretrained weights are the ONNX
model zoo's (``models/squeezenet1_1/weights`` in the shared data, files
``squeezenet0_conv{N}_{weight,bias}.npy``, N = 0..25 in network order).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["Fire", "FIRE_LAYERS", "SqueezeNet11", "WEIGHTS_DIR", "CALIBRATION_KINDS", "squeezenet11_conv_paths",
           "load_squeezenet11", "calibration_batch", "quantize_squeezenet11"]

#: Where the pretrained weights live, relative to the shared data directory.
WEIGHTS_DIR = "models/squeezenet1_1/weights"

# (in_channels, squeeze, expand1x1, expand3x3) of the eight Fire modules, with their index in `features`.
_FIRES = {
    3: (64, 16, 64, 64), 4: (128, 16, 64, 64),
    6: (128, 32, 128, 128), 7: (256, 32, 128, 128),
    9: (256, 48, 192, 192), 10: (384, 48, 192, 192),
    11: (384, 64, 256, 256), 12: (512, 64, 256, 256),
}

#: fire2 .. fire9 (the paper's names) -> the concat node that ends each module in the captured graph.
FIRE_LAYERS = {f"fire{n}": f"features.{i}.cat" for n, i in enumerate(sorted(_FIRES), start=2)}


class Fire(nn.Module):
    """Fire module: squeeze 1x1 + ReLU, then expand 1x1 + ReLU and expand 3x3 (pad 1) + ReLU, concatenated.

    Parameters
    ----------
    inplanes : int
        Input channels.
    squeeze_planes, expand1x1_planes, expand3x3_planes : int
        Output channels of the three convolutions; the module outputs
        ``expand1x1_planes + expand3x3_planes`` channels (expand 1x1 first).
    """

    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int):
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([
            self.expand1x1_activation(self.expand1x1(x)),
            self.expand3x3_activation(self.expand3x3(x)),
        ], 1)


class SqueezeNet11(nn.Module):
    """SqueezeNet 1.1 for ImageNet: ``(N, 3, 224, 224)`` float -> ``(N, num_classes)`` logits (after ReLU).

    ``features``: conv1 3x3/2 (no padding) + ReLU, max pool 3x3/2, Fire2, Fire3,
    max pool, Fire4, Fire5, max pool, Fire6..Fire9. ``classifier``: dropout,
    conv10 1x1 + ReLU, global average pool. The max pools use ``ceil_mode=True``
    as the original definition does (at 224x224 it gives the same sizes as
    floor: 111 -> 55 -> 27 -> 13).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = [
            nn.Conv2d(3, 64, kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
        ]
        for i in range(2, 13):
            if i in _FIRES:
                layers.append(Fire(*_FIRES[i]))
            elif i in (2, 5, 8):
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Conv2d(512, num_classes, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)


def squeezenet11_conv_paths() -> list[str]:
    """Module paths of the 26 convolutions in ONNX-zoo order (``squeezenet0_conv{N}`` is entry N)."""
    paths = ["features.0"]
    for i in sorted(_FIRES):
        paths += [f"features.{i}.squeeze", f"features.{i}.expand1x1", f"features.{i}.expand3x3"]
    paths.append("classifier.1")
    return paths


def load_squeezenet11(weights_dir: str | os.PathLike | None = None) -> SqueezeNet11:
    """SqueezeNet 1.1 with the pretrained ImageNet weights, in eval mode.

    Parameters
    ----------
    weights_dir : str or path-like, optional
        Directory of ``squeezenet0_conv{N}_{weight,bias}.npy``; defaults to
        :data:`WEIGHTS_DIR` in the shared data directory.

    Raises
    ------
    FileNotFoundError
        When the directory or one of the 52 files is missing.
    ValueError
        When a file's shape does not match the layer it is loaded into.
    """
    from sw.shared import require_shared

    root = Path(weights_dir) if weights_dir is not None else require_shared(WEIGHTS_DIR)
    model = SqueezeNet11()
    modules = dict(model.named_modules())
    with torch.no_grad():
        for n, path in enumerate(squeezenet11_conv_paths()):
            conv = modules[path]
            for kind, param in (("weight", conv.weight), ("bias", conv.bias)):
                f = root / f"squeezenet0_conv{n}_{kind}.npy"
                if not f.exists():
                    raise FileNotFoundError(f"SqueezeNet 1.1 weight file missing: {f}")
                arr = np.load(f)
                if tuple(arr.shape) != tuple(param.shape):
                    raise ValueError(f"{f.name}: shape {arr.shape} does not match {path}.{kind} "
                                     f"{tuple(param.shape)}")
                param.copy_(torch.from_numpy(arr.astype(np.float32)))
    return model.eval()


#: Calibration sets for :func:`calibration_batch`.
CALIBRATION_KINDS = ("imagenet", "noise255")


def calibration_batch(kind: str = "imagenet", *, seed: int = 0) -> torch.Tensor:
    """Calibration inputs for quantizing SqueezeNet 1.1, disjoint from the images the tests evaluate.

    Parameters
    ----------
    kind : {"imagenet", "noise255"}
        ``"imagenet"``: the four ``images/people_*.jpg`` with ImageNet
        preprocessing and their mirror images (8 inputs). The evaluation
        pictures (``coco_cat``, ``coco_dog``) are not among them.
        ``"noise255"``: 8 images of uniform noise in [0, 255) from
        ``numpy.random.default_rng(seed)``: the distribution of the ONNX test
        sets' ``input_0.npy`` (fed unnormalized), which need their own
        calibration because their range is a hundred times wider.
    seed : int
        Seed of the noise images.

    Returns
    -------
    torch.Tensor
        float32 ``(8, 3, 224, 224)``.
    """
    if kind == "imagenet":
        from sw.shared import imagenet_preprocess, require_shared

        x = torch.cat([imagenet_preprocess(require_shared(f"images/people_{i}.jpg")) for i in range(1, 5)])
        return torch.cat([x, x.flip(3)])
    if kind == "noise255":
        rng = np.random.default_rng(seed)
        return torch.from_numpy(rng.uniform(0.0, 255.0, size=(8, 3, 224, 224)).astype(np.float32))
    raise ValueError(f"calibration kind must be one of {CALIBRATION_KINDS}, got {kind!r}")


def quantize_squeezenet11(kind: str = "imagenet", model: SqueezeNet11 | None = None):
    """The pretrained SqueezeNet 1.1 quantized with ``calibration_batch(kind)``: a ``quant.QGraph``."""
    from quant import quantize_model

    model = load_squeezenet11() if model is None else model
    return quantize_model(model, calibration_batch(kind))
