"""What the compiler produces: the :class:`Program` (steps, memory views, blobs) and :class:`CompileError`."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from hw.isa import CB_BITS, DIM_BITS, EngineConfig
from hw.layout import pack_activation
from quant.quantize import QGraph

from .packing import pack_pixel_pairs

MAX_DIM = (1 << DIM_BITS) - 1
MAX_CB = (1 << CB_BITS) - 1


class CompileError(ValueError):
    """A network (or a layer of it) the engine cannot run.

    Attributes
    ----------
    layer : str
        Name of the offending node.
    reason : str
    """

    def __init__(self, layer: str, reason: str):
        super().__init__(f"layer {layer!r}: {reason}")
        self.layer = layer
        self.reason = reason


@dataclasses.dataclass
class Root:
    """A region of memory holding one tensor or a group of tensors placed side by side in each pixel."""

    name: str
    h: int
    w: int
    pix: int = 0          # words per pixel
    addr: int = -1
    first: int = 0        # index of the first step that writes it
    last: int = 0         # index of the last step that reads it
    pinned: bool = False  # network input/output: lives for the whole program

    @property
    def words(self) -> int:
        return self.h * self.w * self.pix


@dataclasses.dataclass
class TensorView:
    """Where a tensor lives: its root region, its first word within each pixel, its channels' lanes."""

    name: str
    channels: int
    h: int
    w: int
    root: Root
    offset: int           # words into each pixel
    lanes: np.ndarray     # physical lane (relative to offset * rows) of each logical channel

    def cb(self, rows: int) -> int:
        return int(self.lanes.max()) // rows + 1 if self.channels else 0

    @property
    def pix(self) -> int:
        return self.root.pix

    def addr(self, y: int = 0, x: int = 0) -> int:
        return self.root.addr + (y * self.w + x) * self.root.pix + self.offset


@dataclasses.dataclass
class Step:
    """One command of the program and what it stands for (for reports)."""

    layer: str            # the graph node (a Fire module is named after its concat)
    kind: str             # conv, fire, pool, gap
    command: bytes
    macs: int             # multiply-accumulates of the layer this command computes (halo recompute excluded)
    read_bytes: int       # external memory read by the command (input band, weights, the command itself)
    write_bytes: int
    band: tuple[int, int]  # (index, count)
    detail: str = ""
    #: External memory the command reads and writes, as (word address, words) ranges (a strided access is
    #: covered by its whole span). What a host must stage around the command on a board with little memory.
    reads: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    writes: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    #: The stored tensors the command reads (before any fused pool) and the one it writes.
    source: str = ""
    output: str = ""


@dataclasses.dataclass
class Program:
    """A compiled network: commands, memory image of the weights, tensor placement.

    Attributes
    ----------
    config : EngineConfig
    steps : list of Step
    blobs : list of (word address, int8 words)
        Weight blobs to write once.
    views : dict
        Tensor name -> :class:`TensorView` for every tensor stored in memory.
    inputs, outputs : list of str
        The integer graph's input tensors and the tensors the host reads back.
    cmd_addr, prof_addr, mem_words : int
    """

    config: EngineConfig
    qgraph: QGraph
    steps: list[Step]
    blobs: list[tuple[int, np.ndarray]]
    views: dict[str, TensorView]
    inputs: list[str]
    outputs: list[str]
    cmd_addr: int
    prof_addr: int
    mem_words: int
    layer_order: list[str]
    packed_inputs: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> channels per half-word

    @property
    def commands(self) -> list[bytes]:
        return [s.command for s in self.steps]

    def layer_steps(self) -> dict[str, list[int]]:
        """Layer name -> indices of its steps, in program order."""
        out = defaultdict(list)
        for i, s in enumerate(self.steps):
            out[s.layer].append(i)
        return dict(out)

    def pack_tensor(self, name: str, x: np.ndarray) -> tuple[int, np.ndarray, int]:
        """``(address, words, pixel stride)`` to place the int8 ``(C, H, W)`` tensor ``name`` in memory."""
        v = self.views[name]
        R = self.config.rows
        if name in self.packed_inputs:
            return v.addr(), pack_activation(pack_pixel_pairs(x, R, self.qgraph.qparams(name).zero_point), R), v.pix
        if x.shape != (v.channels, v.h, v.w):
            raise ValueError(f"tensor {name!r} is {(v.channels, v.h, v.w)}, got {x.shape}")
        cb = v.cb(R)
        lanes = np.zeros((cb * R, v.h, v.w), dtype=np.int8)
        lanes[v.lanes] = x
        return v.addr(), pack_activation(lanes, R), v.pix

    def unpack_tensor(self, name: str, read_words) -> np.ndarray:
        """Read tensor ``name`` with ``read_words(addr, n)`` and return it as int8 ``(C, H, W)``."""
        v = self.views[name]
        R = self.config.rows
        cb = v.cb(R)
        n = (v.h * v.w - 1) * v.pix + cb
        words = np.ascontiguousarray(read_words(v.addr(), n), dtype=np.int8).reshape(-1)
        # Pixel q's cb words start at word q * pix: a strided view (h*w, cb*R) of the bytes read, no gather.
        pixels = np.lib.stride_tricks.as_strided(words, shape=(v.h * v.w, cb * R), strides=(v.pix * R, 1),
                                                 writeable=False)
        if name in self.packed_inputs:
            c, h, w = self.qgraph.tensors[name].shape
            lanes = pixels.reshape(v.h, v.w, cb * R).transpose(2, 0, 1)
            wide = np.empty((c, h, 2 * v.w), dtype=np.int8)
            wide[:, :, 0::2] = lanes[:c]
            wide[:, :, 1::2] = lanes[R // 2:R // 2 + c]
            return wide[:, :, :w].copy()
        lanes = v.lanes
        if len(lanes) and lanes[0] == 0 and np.array_equal(lanes, np.arange(len(lanes))):
            hwc = pixels[:, :len(lanes)]          # the usual case: channel c in lane c
        else:
            hwc = pixels[:, lanes]
        return np.ascontiguousarray(hwc.reshape(v.h, v.w, -1).transpose(2, 0, 1))

    def summary(self) -> str:
        lines = [f"{len(self.steps)} commands, {len(self.blobs)} weight blobs, memory {self.mem_words} words "
                 f"({self.mem_words * self.config.rows / 2**20:.1f} MiB)"]
        for layer, idx in self.layer_steps().items():
            s = self.steps[idx[0]]
            macs = sum(self.steps[i].macs for i in idx)
            lines.append(f"  {layer:32s} {s.kind:5s} {len(idx):3d} band(s)  {macs:>12,d} MACs  {s.detail}")
        return "\n".join(lines)
