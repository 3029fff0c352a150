"""RFSong-779: the 0.99 MB RFB-lite SSD person detector, as a float PyTorch model.

Written from the structure in ``../shared/DATA.md`` and the seed document
``004_*.txt``; module names follow the published state_dict
(``base.conv1_1.conv.weight``, ``base.conv4_3.branch2.3.bn.running_var``,
``loc.5.bias``...) so that ``epoches_114.pth`` loads with ``strict=True``.

Split between engine and host
-----------------------------
The FPGA engine computes everything up to the twelve head convolutions:
:meth:`RFSong779.head_outputs` returns them, NCHW, ordered ``loc0, conf0,
loc1, conf1, ..., loc5, conf5``; :meth:`RFSong779.engine_module` wraps that
in a module whose ``forward`` is the engine's part (for ``torch.fx`` capture
and quantization; it shares the model's parameters and names). The host then
permutes and flattens them with :func:`flatten_heads` and post-processes with
:func:`sw.detect.ssd_postprocess`. :meth:`RFSong779.forward` is both steps,
``(loc (1, 7759, 4), conf (1, 7759, 2))``.

Every ``forward`` here is free of data-dependent control flow, so
``torch.fx.symbolic_trace`` captures both the full model and the engine part.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "NUM_CLASSES", "INPUT_SIZE", "ANCHORS_PER_CELL", "FEATURE_MAPS", "NUM_PRIORS", "WEIGHTS_RELPATH",
    "BasicConv", "BasicRFB", "Backbone", "RFSong779", "RFSong779Engine",
    "flatten_heads", "load_rfsong779", "default_weights_path",
]

#: Background and person.
NUM_CLASSES = 2
#: Side of the square input picture.
INPUT_SIZE = 300
#: Priors per feature-map cell on f1..f6 (``1 + len(aspect_ratios)``, see :mod:`sw.detect`).
ANCHORS_PER_CELL = (4, 4, 4, 4, 4, 3)
#: Sides of the feature maps f1..f6 for a 300 x 300 input.
FEATURE_MAPS = (38, 19, 10, 5, 3, 1)
#: Total number of priors (and of rows of ``loc`` / ``conf``).
NUM_PRIORS = sum(f * f * a for f, a in zip(FEATURE_MAPS, ANCHORS_PER_CELL, strict=True))
#: Where the pretrained state_dict lives inside the shared data folder.
WEIGHTS_RELPATH = Path("models") / "rfsong779" / "epoches_114.pth"


class BasicConv(nn.Module):
    """Conv2d without bias, BatchNorm2d (eps 1e-5), optional ReLU.

    Parameters
    ----------
    in_planes, out_planes : int
        Input and output channels.
    kernel_size : int
        Square kernel side.
    stride, padding, dilation : int, optional
        As for :class:`torch.nn.Conv2d`.
    relu : bool, optional
        Follow the batch norm with a ReLU.
    """

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, *, stride: int = 1,
                 padding: int = 0, dilation: int = 1, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5)
        # An attribute known when tracing, not data-dependent: torch.fx keeps or drops the node.
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if self.relu is not None:
            x = self.relu(x)
        return x


class BasicRFB(nn.Module):
    """The receptive-field block of RFSong-779 (``conv4_3``).

    Three branches of a 1x1 reduce (no ReLU), 3x3 convolutions and a final
    dilated 3x3 (no ReLU) with dilation ``vision + 1``, ``vision + 2`` and
    ``vision + 4``; branch 2 has an extra 3x3 (``inter -> 3 inter / 2 ->
    2 inter``). ``out = relu(ConvLinear(cat(b0, b1, b2)) * scale +
    shortcut(x))``, with 1x1 ``ConvLinear`` and ``shortcut`` (no ReLU).

    Parameters
    ----------
    in_planes, out_planes : int
        Input and output channels (128 and 128 in RFSong-779).
    scale : float, optional
        Weight of the ConvLinear path (1.0 in RFSong-779).
    map_reduce : int, optional
        ``inter = in_planes // map_reduce`` channels in the branches.
    vision : int, optional
        Base dilation offset.
    """

    def __init__(self, in_planes: int, out_planes: int, *, scale: float = 1.0, map_reduce: int = 8,
                 vision: int = 1):
        super().__init__()
        if in_planes % map_reduce:
            raise ValueError(f"in_planes ({in_planes}) must be a multiple of map_reduce ({map_reduce})")
        self.scale = scale
        inter = in_planes // map_reduce
        self.branch0 = nn.Sequential(
            BasicConv(in_planes, inter, 1, relu=False),
            BasicConv(inter, 2 * inter, 3, padding=1),
            BasicConv(2 * inter, 2 * inter, 3, padding=vision + 1, dilation=vision + 1, relu=False),
        )
        self.branch1 = nn.Sequential(
            BasicConv(in_planes, inter, 1, relu=False),
            BasicConv(inter, 2 * inter, 3, padding=1),
            BasicConv(2 * inter, 2 * inter, 3, padding=vision + 2, dilation=vision + 2, relu=False),
        )
        self.branch2 = nn.Sequential(
            BasicConv(in_planes, inter, 1, relu=False),
            BasicConv(inter, (inter // 2) * 3, 3, padding=1),
            BasicConv((inter // 2) * 3, 2 * inter, 3, padding=1),
            BasicConv(2 * inter, 2 * inter, 3, padding=vision + 4, dilation=vision + 4, relu=False),
        )
        self.ConvLinear = BasicConv(6 * inter, out_planes, 1, relu=False)
        self.shortcut = BasicConv(in_planes, out_planes, 1, relu=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)
        return self.relu(self.ConvLinear(out) * self.scale + self.shortcut(x))


class Backbone(nn.Module):
    """RFSong-779's backbone: conv1_1 ... conv9_2, returning the feature maps f1..f6."""

    def __init__(self):
        super().__init__()
        self.conv1_1 = BasicConv(3, 32, 3, padding=1)
        self.conv1_2 = BasicConv(32, 32, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2_1 = BasicConv(32, 64, 3, padding=1)
        self.conv2_2 = BasicConv(64, 64, 3, padding=1)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.conv3_1 = BasicConv(64, 128, 1)
        self.conv3_2 = BasicConv(128, 128, 3, padding=1)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)  # 75 -> 38
        self.conv4_1 = BasicConv(128, 128, 1)
        self.conv4_2 = BasicConv(128, 128, 3, padding=1)
        self.conv4_3 = BasicRFB(128, 128, scale=1.0)
        self.pool4 = nn.MaxPool2d(2, 2)
        self.conv5_1 = BasicConv(128, 64, 1, relu=False)
        self.conv5_2 = BasicConv(64, 128, 3, padding=1)
        self.conv6_1 = BasicConv(128, 64, 1, relu=False)
        self.conv6_2 = BasicConv(64, 128, 3, stride=2, padding=1)
        self.conv7_1 = BasicConv(128, 64, 1, relu=False)
        self.conv7_2 = BasicConv(64, 128, 3, stride=2, padding=1)
        self.conv8_1 = BasicConv(128, 64, 1, relu=False)
        self.conv8_2 = BasicConv(64, 128, 3)
        self.conv9_1 = BasicConv(128, 64, 1, relu=False)
        self.conv9_2 = BasicConv(64, 64, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.pool1(self.conv1_2(self.conv1_1(x)))
        x = self.pool2(self.conv2_2(self.conv2_1(x)))
        x = self.pool3(self.conv3_2(self.conv3_1(x)))
        f1 = self.conv4_3(self.conv4_2(self.conv4_1(x)))          # 38 x 38, stride 8
        f2 = self.conv5_2(self.conv5_1(self.pool4(f1)))           # 19 x 19
        f3 = self.conv6_2(self.conv6_1(f2))                       # 10 x 10
        f4 = self.conv7_2(self.conv7_1(f3))                       # 5 x 5
        f5 = self.conv8_2(self.conv8_1(f4))                       # 3 x 3
        f6 = self.conv9_2(self.conv9_1(f5))                       # 1 x 1
        return f1, f2, f3, f4, f5, f6


_HEAD_IN_CHANNELS = (128, 128, 128, 128, 128, 64)


class RFSong779(nn.Module):
    """RFSong-779 (RFB-lite SSD, 300 x 300, classes background and person).

    Attributes
    ----------
    base : Backbone
        conv1_1 ... conv9_2.
    loc, conf : torch.nn.ModuleList
        The six 3x3 (padding 1, with bias) location and class heads on f1..f6.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.num_classes = num_classes
        self.base = Backbone()
        pairs = list(zip(_HEAD_IN_CHANNELS, ANCHORS_PER_CELL, strict=True))
        self.loc = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1) for c, a in pairs)
        self.conf = nn.ModuleList(nn.Conv2d(c, a * num_classes, 3, padding=1) for c, a in pairs)

    def head_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The engine's part: the twelve raw head convolutions.

        Parameters
        ----------
        x : torch.Tensor
            Preprocessed input ``(N, 3, 300, 300)`` (:func:`sw.preprocess.ssd_preprocess`).

        Returns
        -------
        list of torch.Tensor
            NCHW tensors ``[loc0, conf0, loc1, conf1, ..., loc5, conf5]``;
            ``loc_k`` has ``4 * A_k`` channels and ``conf_k`` ``num_classes * A_k``.
        """
        return _run_heads(self.base, self.loc, self.conf, x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full float model: ``(loc (N, P, 4), conf (N, P, num_classes))``, logits before softmax."""
        outs = self.head_outputs(x)
        return _flatten_torch(outs[0::2], 4), _flatten_torch(outs[1::2], self.num_classes)

    def engine_module(self) -> RFSong779Engine:
        """A module whose ``forward`` is :meth:`head_outputs` (sharing this model's parameters)."""
        return RFSong779Engine(self)


class RFSong779Engine(nn.Module):
    """The part of RFSong-779 the engine runs: input -> the twelve head outputs.

    It holds the very same ``base``, ``loc`` and ``conf`` submodules as the
    model it is built from (no copy), so its parameter names equal the
    state_dict's and ``torch.fx.symbolic_trace(RFSong779Engine(model))``
    yields a graph whose outputs are the tuple ``(loc0, conf0, ..., conf5)``.

    Parameters
    ----------
    model : RFSong779
        The model to share.
    """

    def __init__(self, model: RFSong779):
        super().__init__()
        self.base = model.base
        self.loc = model.loc
        self.conf = model.conf

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(_run_heads(self.base, self.loc, self.conf, x))


def _run_heads(base: Backbone, locs: nn.ModuleList, confs: nn.ModuleList,
               x: torch.Tensor) -> list[torch.Tensor]:
    """Backbone, then the heads: ``[loc0, conf0, ..., loc5, conf5]`` (a fixed-length loop that fx unrolls)."""
    outs = []
    for f, loc, conf in zip(base(x), locs, confs, strict=True):
        outs.append(loc(f))
        outs.append(conf(f))
    return outs


def _flatten_torch(maps: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """NCHW head maps -> ``(N, sum(H*W*A), width)``, NHWC order (cells row-major, anchors inner)."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, width) for m in maps], 1)


def flatten_heads(outputs: Sequence, num_classes: int = NUM_CLASSES):
    """Host step: permute the twelve head outputs to NHWC and flatten them.

    Parameters
    ----------
    outputs : sequence of 12 torch.Tensor or numpy.ndarray
        ``[loc0, conf0, ..., loc5, conf5]`` in NCHW, as returned by
        :meth:`RFSong779.head_outputs` or read back from the engine.
    num_classes : int, optional
        Classes of the conf head.

    Returns
    -------
    loc, conf : torch.Tensor or numpy.ndarray
        ``(N, P, 4)`` and ``(N, P, num_classes)``, the same type as the inputs;
        row ``p`` is prior ``p`` of :func:`sw.detect.prior_boxes`.

    Raises
    ------
    ValueError
        If there is an odd number of outputs or a channel count does not
        divide into whole anchors.
    """
    if len(outputs) % 2:
        raise ValueError(f"expected loc/conf pairs, got {len(outputs)} outputs")
    for i, t in enumerate(outputs):
        width = 4 if i % 2 == 0 else num_classes
        if t.ndim != 4 or t.shape[1] % width:
            raise ValueError(f"output {i} has shape {tuple(t.shape)}: expected NCHW with a multiple of "
                             f"{width} channels")
    if isinstance(outputs[0], torch.Tensor):
        return _flatten_torch(outputs[0::2], 4), _flatten_torch(outputs[1::2], num_classes)

    def flat(maps, width):
        return np.concatenate(
            [np.asarray(m).transpose(0, 2, 3, 1).reshape(m.shape[0], -1, width) for m in maps], axis=1)

    return flat(outputs[0::2], 4), flat(outputs[1::2], num_classes)


def default_weights_path() -> Path:
    """Path of ``epoches_114.pth`` in the shared data folder (which may not exist)."""
    from sw.shared import shared_dir

    return Path(shared_dir()) / WEIGHTS_RELPATH


def load_rfsong779(path: str | os.PathLike | None = None) -> RFSong779:
    """Build RFSong-779 and load the pretrained state_dict (strict).

    Parameters
    ----------
    path : str or os.PathLike, optional
        The ``.pth`` state_dict; :func:`default_weights_path` by default. A
        ``module.`` prefix on the keys (from ``nn.DataParallel``) is removed.

    Returns
    -------
    RFSong779
        The model in eval mode, on the CPU.

    Raises
    ------
    FileNotFoundError
        If the weights file does not exist.
    RuntimeError
        If the keys or shapes do not match the model exactly.
    """
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"RFSong-779 weights not found at {path}: put the shared data beside the repository "
            f"(../shared) or set KINDLING_SHARED")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = RFSong779()
    model.load_state_dict(state, strict=True)
    return model.eval()
