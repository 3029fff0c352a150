"""The scheduler: a quantized network (:class:`quant.quantize.QGraph`) -> memory plan and command list.

What runs on the engine
    every convolution (1x1..3x3, stride 1/2, padding, dilation up to 7), the
    Fire module as one command per band (squeeze kept on chip), max pools
    (fused into the next layer's load when that layer is their only reader,
    standalone otherwise), global average pools, concats (a placement: every
    part is written straight into its slot), and the RFB residual add (a
    :class:`~quant.quantize.QDualConv`: one convolution over the two inputs,
    placed side by side in memory). The host keeps only what follows the
    integer graph (layout ops, softmax, decoding).

How a layer is tiled
    over space, in bands of output rows sized so that the band's input (and,
    for a Fire module, its squeeze output) fits the activation buffer; over
    channels, inside the engine (output tiles of ``cols`` channels, pixel runs
    of ``acc_depth``). Bands are as equal as possible; a row of halo is loaded
    (and squeezed) again at each band edge. Buffer sizes come from the
    :class:`~hw.isa.EngineConfig`, so the schedule follows the configuration.

Memory
    every stored tensor is a *root* with its own region, or a part of one
    (a concat member, a half of a residual add's input) at a word offset with
    the root's pixel stride. Regions are reused once their last reader has
    run. Weight blobs (:func:`hw.layout.pack_conv_blob`, input channels
    remapped to the physical lanes of the tensor they read) come first.

Anything the engine cannot run is refused here, before any command exists,
with a :class:`CompileError` naming the layer and the reason.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from hw.isa import (
    CB_BITS,
    CMD_BYTES,
    DIM_BITS,
    EngineConfig,
    ErrorCode,
    Opcode,
    check_command,
    pack_command,
)
from hw.layout import cdiv, pack_activation, pack_conv_blob
from quant.graph import HostOp
from quant.quantize import (
    QConcat,
    QConv,
    QDualConv,
    QFlatten,
    QGlobalAvgPool,
    QGraph,
    QInput,
    QMaxPool,
)

__all__ = ["CompileError", "Program", "Step", "TensorView", "compile_graph"]

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
        words = np.asarray(read_words(v.addr(), n), dtype=np.int8).reshape(-1, R)
        idx = (np.arange(v.h * v.w)[:, None] * v.pix + np.arange(cb)[None, :]).reshape(-1)
        lanes = words[idx].reshape(v.h, v.w, cb * R).transpose(2, 0, 1)
        if name in self.packed_inputs:
            c, h, w = self.qgraph.tensors[name].shape
            wide = np.empty((c, h, 2 * v.w), dtype=np.int8)
            wide[:, :, 0::2] = lanes[:c]
            wide[:, :, 1::2] = lanes[R // 2:R // 2 + c]
            return wide[:, :, :w].copy()
        return lanes[v.lanes].copy()

    def summary(self) -> str:
        lines = [f"{len(self.steps)} commands, {len(self.blobs)} weight blobs, memory {self.mem_words} words "
                 f"({self.mem_words * self.config.rows / 2**20:.1f} MiB)"]
        for layer, idx in self.layer_steps().items():
            s = self.steps[idx[0]]
            macs = sum(self.steps[i].macs for i in idx)
            lines.append(f"  {layer:32s} {s.kind:5s} {len(idx):3d} band(s)  {macs:>12,d} MACs  {s.detail}")
        return "\n".join(lines)


# ---- planning -------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Op:
    kind: str            # conv, fire, pool, gap
    name: str            # layer name (output tensor / concat)
    node: object         # QConv/QDualConv, FireMatch, QMaxPool, QGlobalAvgPool
    src: str             # tensor read from memory (pre-pool when a pool is fused)
    pool: QMaxPool | None = None
    out: str = ""


def _pool_fusable(p: QMaxPool, cfg: EngineConfig) -> str | None:
    """Why this max pool cannot run on the engine's load path (None when it can)."""
    if p.kernel[0] != p.kernel[1] or p.kernel[0] not in (2, 3):
        return f"max pool kernel {p.kernel} (the engine pools 2x2 or 3x3)"
    if p.stride != (2, 2):
        return f"max pool stride {p.stride} (the engine pools with stride 2)"
    if max(p.padding) > 1:
        return f"max pool padding {p.padding} (at most 1)"
    return None


def _check_conv(node, cfg: EngineConfig):
    kh, kw = node.kernel_size
    name = node.name
    if getattr(node, "groups", 1) != 1:
        raise CompileError(name, "grouped convolutions are not supported by the engine")
    if not (1 <= kh <= 3 and 1 <= kw <= 3):
        raise CompileError(name, f"{kh}x{kw} kernel: the engine runs kernels up to 3x3")
    if node.stride[0] not in (1, 2) or node.stride[1] not in (1, 2):
        raise CompileError(name, f"stride {node.stride}: the engine runs strides 1 and 2")
    if node.dilation[0] != node.dilation[1] or not 1 <= node.dilation[0] <= 7:
        raise CompileError(name, f"dilation {node.dilation}: the engine runs equal dilations 1..7")
    t, l, b, r = node.padding
    if t > 7 or l > 7 or b > 7 or r > 7:
        raise CompileError(name, f"padding {node.padding}: at most 7 on a side")
    if node.out_channels > MAX_DIM:
        raise CompileError(name, f"{node.out_channels} output channels: at most {MAX_DIM}")
    c, h, w = node.shape
    if h > MAX_DIM or w > MAX_DIM:
        raise CompileError(name, f"output {h}x{w}: at most {MAX_DIM} pixels a side")


class _Compiler:
    def __init__(self, qgraph: QGraph, cfg: EngineConfig, *, mem_words: int | None, reuse: bool = True):
        self.reuse = reuse
        self.g = qgraph
        self.cfg = cfg
        self.R = cfg.rows
        self.mem_words = mem_words
        self.parent: dict[str, tuple[str, int]] = {}   # tensor -> (container tensor, lane offset)
        self.roots: dict[str, Root] = {}
        self.views: dict[str, TensorView] = {}
        self._virtual: dict[str, tuple[int, int, int]] = {}   # residual-add inputs: name -> shape
        self.fused_pools: dict[str, QMaxPool] = {}

    # -- graph -> ops ---------------------------------------------------------------------------
    def plan(self) -> list[_Op]:
        g, cfg = self.g, self.cfg
        # Fire modules whose smallest band (3 rows of input and squeeze output) fits the buffer run as one
        # command per band; the others run as three convolutions through memory.
        fires = {f.concat: f for f in g.fire_modules() if self._fire_fits(f)}
        self.unfused_fires = [f.concat for f in g.fire_modules() if f.concat not in fires]
        fire_members = {n for f in fires.values() for n in (f.squeeze, f.expand1x1, f.expand3x3)}
        squeezes = {f.squeeze for f in fires.values()}
        for node in g.nodes:
            if isinstance(node, HostOp):
                continue
            for i in node.inputs:
                if i in g and isinstance(g[i], HostOp):
                    raise CompileError(node.name, f"reads {i!r}, a host operation, in the middle of the network "
                                                  f"(the engine cannot hand data to the host and back)")
        ops: list[_Op] = []
        # A first convolution with few input channels and stride 2 across reads its input packed two
        # pixels to a word (the host lays the image out so): it then uses twice the array rows.
        self.packed_inputs = {}
        for inp in g.inputs:
            readers = g.consumers(inp)
            r0 = readers[0] if len(readers) == 1 else None
            if (isinstance(r0, QConv) and r0.name not in fire_members and r0.stride[1] == 2
                    and r0.in_channels <= cfg.rows // 2 and r0.padding[1] <= 1 and r0.dilation == (1, 1)):
                self.packed_inputs[inp] = r0.in_channels
        ops = []
        for node in g.nodes:
            if isinstance(node, (QInput, HostOp, QFlatten, QConcat)):
                if isinstance(node, QFlatten):
                    c_in = g.tensors[node.inputs[0]].shape
                    if len(c_in) == 3 and c_in[1] * c_in[2] != 1:
                        raise CompileError(node.name, f"flatten of a {c_in} map: only (C, 1, 1) maps flatten "
                                                      "for free in the engine's pixel-major layout")
                if isinstance(node, QConcat) and node.name in fires:
                    f = fires[node.name]
                    ops.append(self._op_for_input(_Op("fire", node.name, f, src=g[f.squeeze].inputs[0],
                                                      out=node.name)))
                continue
            if node.name in fire_members:
                _check_conv(node, cfg)
                continue
            if isinstance(node, QConv):
                _check_conv(node, cfg)
                ops.append(self._op_for_input(_Op("conv", node.name, node, src=node.inputs[0], out=node.name)))
            elif isinstance(node, QDualConv):
                _check_conv(node, cfg)
                if any(node.padding) and node.zp_a != node.zp_b:
                    raise CompileError(node.name, "a padded residual add whose two inputs have different zero "
                                                  "points (the engine pads with one zero point)")
                ops.append(_Op("conv", node.name, node, src=f"{node.name}:in", out=node.name))
            elif isinstance(node, QMaxPool):
                why = _pool_fusable(node, cfg)
                readers = g.consumers(node.name)
                reader = readers[0] if len(readers) == 1 else None
                # Fusable into the load of its only reader: a plain convolution or a Fire squeeze.
                fuse = (why is None and node.name not in g.outputs and isinstance(reader, QConv)
                        and (reader.name not in fire_members or reader.name in squeezes))
                if fuse:
                    self.fused_pools[node.name] = node
                    continue
                if why is not None:
                    raise CompileError(node.name, why)
                ops.append(_Op("pool", node.name, node, src=node.inputs[0], out=node.name))
            elif isinstance(node, QGlobalAvgPool):
                ops.append(_Op("gap", node.name, node, src=node.inputs[0], out=node.name))
            else:
                raise CompileError(node.name, f"operation {type(node).__name__} is not supported by the engine")
        return ops

    def _fire_fits(self, f) -> bool:
        g, R = self.g, self.R
        sq = g[f.squeeze]
        cin, h, w = sq.in_shape
        words_per_row = w * (cdiv(cin, R) + cdiv(sq.out_channels, R))
        return min(3, h) * words_per_row <= self.cfg.ibuf_depth and g[f.expand1x1].out_channels % R == 0

    def _op_for_input(self, op: _Op) -> _Op:
        """Fuse a max pool that only this op reads into its load."""
        src_node = self.g.get(op.src)
        if isinstance(src_node, QMaxPool) and src_node.name in self.fused_pools:
            op.pool = src_node
            op.src = src_node.inputs[0]
        return op

    # -- placement ------------------------------------------------------------------------------
    def place(self, ops: list[_Op]):
        g, R = self.g, self.R
        # Containers: concats (non-fire concats, and fire concats for their two halves) and residual inputs.
        for node in g.nodes:
            if isinstance(node, QConcat):
                off = 0
                for i in node.inputs:
                    self._attach(i, node.name, off, node.name)
                    off += cdiv(g.tensors[i].shape[0], R) * R
            if isinstance(node, QDualConv):
                a, b = node.inputs
                name = f"{node.name}:in"
                ca = cdiv(g.tensors[a].shape[0], R) * R
                self._attach(a, name, 0, node.name)
                self._attach(b, name, ca, node.name)
                self._virtual[name] = (ca + cdiv(g.tensors[b].shape[0], R) * R,) + tuple(g.tensors[a].shape[1:])
        stored = {g.inputs[0]} if g.inputs else set()
        for op in ops:
            stored.add(op.out)
            stored.add(op.src)
        for out in self._engine_outputs():
            stored.add(out)
        for name in stored:
            self._view(name)

    def _attach(self, child: str, container: str, lane_offset: int, layer: str):
        if child in self.parent and self.parent[child][0] != container:
            raise CompileError(layer, f"tensor {child!r} would have to sit in two places "
                                      f"({self.parent[child][0]!r} and {container!r})")
        self.parent[child] = (container, lane_offset)

    def _shape(self, name):
        if name in self._virtual:
            return self._virtual[name]
        return tuple(self.g.tensors[name].shape)

    def _view(self, name: str) -> TensorView:
        if name in self.views:
            return self.views[name]
        R = self.R
        if name in self.fused_pools:
            raise AssertionError(f"fused pool output {name} has no storage")
        c, h, w = self._shape(name)
        if name in self.packed_inputs:
            root = Root(name, h, cdiv(w, 2))
            self.roots[name] = root
            view = TensorView(name, R, h, cdiv(w, 2), root, 0, np.arange(R))
            self.views[name] = view
            return view
        if name in self.parent:
            cont, lane_off = self.parent[name]
            pv = self._view(cont)
            base_lane = lane_off + pv.offset * R
            view = TensorView(name, c, h, w, pv.root, base_lane // R, np.arange(c) + base_lane % R)
            if (pv.h, pv.w) != (h, w):
                raise CompileError(name, f"placed in {cont!r} of another size")
        else:
            root = Root(name, h, w)
            self.roots[name] = root
            view = TensorView(name, c, h, w, root, 0, np.arange(c))
        self.views[name] = view
        return view

    def _engine_outputs(self) -> list[str]:
        """Integer tensors the host reads: graph outputs and the inputs of host ops."""
        g = self.g
        outs = []
        for n in g.nodes:
            if isinstance(n, HostOp):
                for a in _tensor_refs(n):
                    if a in g.tensors and not isinstance(g.get(a), HostOp) and a not in outs:
                        outs.append(a)
        for o in g.outputs:
            if o in g.tensors and o not in outs:
                outs.append(self._unflatten(o))
        return [self._unflatten(o) for o in outs]

    def _unflatten(self, name):
        node = self.g.get(name)
        while isinstance(node, QFlatten):
            name = node.inputs[0]
            node = self.g[name]
        return name

    # -- allocation -----------------------------------------------------------------------------
    def allocate(self, ops: list[_Op], blob_words: int) -> int:
        R = self.R
        for root in self.roots.values():
            root.pix = 0
        for v in self.views.values():
            v.root.pix = max(v.root.pix, v.offset + v.cb(R))
        # Lifetimes in op indices.
        first = {}
        last = {}
        for i, op in enumerate(ops):
            for t in (op.out,):
                r = self.views[t].root.name
                first.setdefault(r, i)
                last[r] = max(last.get(r, i), i)
            r = self.views[op.src].root.name
            last[r] = max(last.get(r, i), i)
            first.setdefault(r, i)
        pinned = {self.views[t].root.name for t in self._engine_outputs()} | \
                 {self.views[t].root.name for t in self.g.inputs if t in self.views}
        base = blob_words
        free: list[tuple[int, int]] = []  # (addr, words), sorted by addr
        live: list[tuple[int, Root]] = []
        order = sorted(self.roots.values(), key=lambda r: (first.get(r.name, -1), r.name))
        top = base
        for root in order:
            root.pinned = root.name in pinned or not self.reuse
            root.first = first.get(root.name, -1)
            root.last = len(ops) if root.pinned else last.get(root.name, root.first)
            # free the regions whose last reader ran before this one's first writer
            still = []
            for end, r in live:
                if end < root.first and not r.pinned:
                    free.append((r.addr, r.words))
                else:
                    still.append((end, r))
            live = still
            free = _merge_free(free)
            need = root.words
            for k, (a, n) in enumerate(free):
                if n >= need:
                    root.addr = a
                    free[k] = (a + need, n - need)
                    break
            else:
                root.addr = top
                top += need
            live.append((root.last, root))
        return top

    # -- emission -------------------------------------------------------------------------------
    def emit(self, ops: list[_Op], blob_base: int) -> tuple[list[Step], list[tuple[int, np.ndarray]]]:
        self._blob_top = blob_base
        self._blobs = []
        steps = []
        emit = {"conv": self._emit_conv, "fire": self._emit_fire, "pool": self._emit_pool, "gap": self._emit_gap}
        for op in ops:
            new = emit[op.kind](op)
            for st in new:
                st.source, st.output = op.src, op.out
            steps += new
        return steps, self._blobs

    def _blob(self, w_logical: np.ndarray, bias_eff, m0, shift, in_view: TensorView) -> int:
        """Place a weight blob whose input channels follow ``in_view``'s lanes; return its address."""
        R = self.R
        cout, cin, kh, kw = w_logical.shape
        wp = np.zeros((cout, in_view.cb(R) * R, kh, kw), dtype=np.int8)
        wp[:, in_view.lanes] = w_logical
        words = pack_conv_blob(wp, bias_eff, m0, shift, self.cfg)
        addr = self._blob_top
        self._blobs.append((addr, words))
        self._blob_top += len(words)
        return addr

    def _blob_size(self, cout, cin_lanes, kh, kw):
        cfg = self.cfg
        return cdiv(cout, cfg.cols) * (cfg.param_words + kh * kw * cdiv(cin_lanes, cfg.rows) * cfg.tile_words)

    def _load_spec(self, src: TensorView, r_lo: int, r_hi: int, pool: QMaxPool | None, ibuf: int = 0):
        """The LoadSpec for conv-input rows [r_lo, r_hi) of a layer reading ``src`` (through ``pool``)."""
        R = self.R
        if pool is None:
            p_lo, p_hi, extra = r_lo, r_hi, {}
        else:
            k, (ppt, ppl) = pool.kernel[0], pool.padding
            start = r_lo * 2 - ppt
            p_lo = max(start, 0)
            p_hi = min((r_hi - 1) * 2 - ppt + k, src.h)
            extra = dict(pool=1, pool_k=k, pool_pad_t=p_lo - start, pool_pad_l=ppl)
        cb = src.cb(R)
        spec = dict(src=src.addr(p_lo), src_rows=p_hi - p_lo, src_w=src.w, cb=cb,
                    src_pix=0 if src.pix == cb else src.pix, ibuf=ibuf, **extra)
        return spec, (p_hi - p_lo) * src.w * cb

    @staticmethod
    def _load_span(load: dict) -> tuple[int, int]:
        pix = load.get("src_pix") or load["cb"]
        return load["src"], (load["src_rows"] * load["src_w"] - 1) * pix + load["cb"]

    def _blob_span(self, addr: int) -> tuple[int, int]:
        for a, words in self._blobs:
            if a == addr:
                return a, len(words)
        raise AssertionError(addr)

    def _bands(self, layer: str, out_h: int, rows_for, budget_words: int, words_per_row: int, what: str):
        """Largest equal bands of output rows whose input fits ``budget_words``."""
        best = 0
        for n in range(1, out_h + 1):
            if rows_for(n) * words_per_row <= budget_words and rows_for(n) <= MAX_DIM:
                best = n
            else:
                break
        if best == 0:
            raise CompileError(layer, f"{what}: one output row needs {rows_for(1) * words_per_row} buffer words, "
                                      f"the engine has {budget_words} (ibuf_depth={self.cfg.ibuf_depth})")
        nb = cdiv(out_h, best)
        size = cdiv(out_h, nb)
        bands = []
        y = 0
        while y < out_h:
            n = min(size, out_h - y)
            bands.append((y, n))
            y += n
        return bands

    def _conv_input_rows(self, oy0, n, sy, pad_t, kh, dil, h_in):
        r_lo = max(oy0 * sy - pad_t, 0)
        r_hi = min((oy0 + n - 1) * sy - pad_t + (kh - 1) * dil + 1, h_in)
        return r_lo, r_hi

    def _emit_conv(self, op: _Op) -> list[Step]:
        cfg, R = self.cfg, self.R
        node = op.node
        src = self.views[op.src]
        pool = op.pool
        if isinstance(node, QDualConv):
            in_view = src
            w_log = node.weight
            zp_pad = node.zp_a
        else:
            in_view = src
            w_log = node.weight
            zp_pad = node.zp_in
        cin_cb = in_view.cb(R)
        if cin_cb > MAX_CB:
            raise CompileError(node.name, f"input of {cin_cb} channel blocks: at most {MAX_CB}")
        if pool is not None and cin_cb > cfg.pool_max_cb:
            raise CompileError(pool.name, f"{cin_cb} channel blocks to pool on the way in: the engine's pool "
                                          f"holds {cfg.pool_max_cb}")
        out = self.views[op.out]
        cout, _, kh, kw = w_log.shape
        _, h_out, w_out = node.shape
        if pool is not None:
            _, h_in, w_in = pool.shape
        else:
            h_in, w_in = in_view.h, in_view.w
        sy, sx = node.stride
        pt, pl = node.padding[0], node.padding[1]
        dil = node.dilation[0]
        packed = op.src in self.packed_inputs
        sx_eff, pl_eff = sx, pl
        if packed:
            w_log, pl_eff = pair_packed_conv(w_log, pl, R)
            kw, sx_eff, w_in = w_log.shape[3], 1, in_view.w
            in_view = TensorView(in_view.name, R, in_view.h, in_view.w, in_view.root, 0, np.arange(R))
        wblob = self._blob(w_log, node.effective_bias, node.m0, node.shift, in_view)
        blob_w = self._blob_size(cout, cin_cb * R, kh, kw)

        def rows_for(n):  # input rows of a band of n output rows that is not clipped by the image edges
            return min((n - 1) * sy + (kh - 1) * dil + 1, h_in)

        bands = self._bands(node.name, h_out, rows_for, cfg.ibuf_depth, w_in * cin_cb, "convolution band")
        steps = []
        macs_row = w_out * cout * node.weight.shape[1] * node.kernel_size[0] * node.kernel_size[1]
        for bi, (oy0, n) in enumerate(bands):
            r_lo, r_hi = self._conv_input_rows(oy0, n, sy, pt, kh, dil, h_in)
            load, read_words = self._load_spec(src if pool is None else self.views[op.src], r_lo, r_hi, pool)
            cmd = pack_command(
                Opcode.CONV, load=load, in_h=r_hi - r_lo, in_w=w_in, kh=kh, kw=kw, sy=sy, sx=sx_eff, dil=dil,
                pad_t=r_lo - (oy0 * sy - pt), pad_l=pl_eff, out_h=n, out_w=w_out, cout=cout,
                quant=dict(zp_in=zp_pad, zp_out=node.zp_out, act_min=node.act_min, act_max=node.act_max),
                wblob=wblob, dst=out.addr(oy0), dst_pix=out.pix)
            passes = cdiv(n * w_out, cfg.acc_depth)
            steps.append(Step(
                layer=node.name, kind="conv", command=cmd, macs=n * macs_row,
                read_bytes=R * (read_words + passes * blob_w) + CMD_BYTES,
                write_bytes=R * n * w_out * cdiv(cout, R), band=(bi, len(bands)),
                reads=[self._load_span(load), self._blob_span(wblob)],
                writes=[(out.addr(oy0), (n * w_out - 1) * out.pix + cdiv(cout, R))],
                detail=f"{node.kernel_size[0]}x{node.kernel_size[1]}/{sy} {node.weight.shape[1]}->{cout} "
                       f"{h_out}x{w_out}"
                       + (f" +pool{pool.kernel[0]}x{pool.kernel[1]}" if pool is not None else "")
                       + (" packed" if packed else "")))
        return steps

    def _emit_fire(self, op: _Op) -> list[Step]:
        cfg, R, g = self.cfg, self.R, self.g
        f = op.node
        sq, e1, e3 = g[f.squeeze], g[f.expand1x1], g[f.expand3x3]
        src = self.views[op.src]
        pool = op.pool
        cin_cb = src.cb(R)
        if e1.out_channels % R:
            raise CompileError(f.concat, f"expand1x1 has {e1.out_channels} channels: the FIRE command needs a "
                                         f"multiple of {R} to place expand3x3 after it")
        if pool is not None and cin_cb > cfg.pool_max_cb:
            raise CompileError(pool.name, f"{cin_cb} channel blocks to pool: the engine holds {cfg.pool_max_cb}")
        if sq.stride != (1, 1) or sq.kernel_size != (1, 1) or any(sq.padding) \
                or e1.stride != (1, 1) or any(e1.padding) or e3.stride != (1, 1) \
                or e3.padding != (1, 1, 1, 1) or e3.dilation != (1, 1) or e1.zp_in != e3.zp_in:
            raise CompileError(f.concat, "not the Fire shape the engine runs (squeeze 1x1, expand 1x1 and "
                                         "3x3/1 padding 1)")
        out = self.views[op.out]
        if out.offset != 0 or out.pix != cdiv(e1.out_channels, R) + cdiv(e3.out_channels, R):
            raise CompileError(f.concat, "a Fire output placed inside another tensor is not supported")
        _, h, w = e1.shape
        sq_cb = cdiv(sq.out_channels, R)
        w_sq = self._blob(sq.weight, sq.effective_bias, sq.m0, sq.shift, src)
        sq_view = TensorView("sq", sq.out_channels, h, w, Root("sq", h, w, sq_cb), 0, np.arange(sq.out_channels))
        w_e1 = self._blob(e1.weight, e1.effective_bias, e1.m0, e1.shift, sq_view)
        w_e3 = self._blob(e3.weight, e3.effective_bias, e3.m0, e3.shift, sq_view)
        blob_w = [self._blob_size(c.out_channels, cb * R, *c.kernel_size)
                  for c, cb in ((sq, cin_cb), (e1, sq_cb), (e3, sq_cb))]

        def rows_for(n):
            return min(n + 2, h)

        bands = self._bands(f.concat, h, rows_for, cfg.ibuf_depth, w * (cin_cb + sq_cb), "Fire band")
        steps = []
        macs_row = w * (sq.out_channels * sq.in_channels + e1.out_channels * e1.in_channels
                        + e3.out_channels * e3.in_channels * 9)
        for bi, (oy0, n) in enumerate(bands):
            s_lo, s_hi = max(oy0 - 1, 0), min(oy0 + n + 1, h)
            load, read_words = self._load_spec(src, s_lo, s_hi, pool)
            in_h = s_hi - s_lo
            sq_ibuf = in_h * w * cin_cb
            cmd = pack_command(
                Opcode.FIRE, load=load, in_h=in_h, in_w=w, halo_top=int(oy0 > 0), out_h=n,
                squeeze=sq.out_channels, expand1=e1.out_channels, expand3=e3.out_channels, sq_ibuf=sq_ibuf,
                zp_in=sq.zp_in, zp_sq=sq.zp_out, zp_out=e1.zp_out, sq_min=sq.act_min, sq_max=sq.act_max,
                out_min=e1.act_min, out_max=e1.act_max, w_sq=w_sq, w_e1=w_e1, w_e3=w_e3, dst=out.addr(oy0))
            passes_sq = cdiv(in_h * w, cfg.acc_depth)
            passes = cdiv(n * w, cfg.acc_depth)
            steps.append(Step(
                layer=f.concat, kind="fire", command=cmd, macs=n * macs_row,
                read_bytes=R * (read_words + passes_sq * blob_w[0] + passes * (blob_w[1] + blob_w[2])) + CMD_BYTES,
                write_bytes=R * n * w * out.pix, band=(bi, len(bands)),
                reads=[self._load_span(load), *(self._blob_span(a) for a in (w_sq, w_e1, w_e3))],
                writes=[(out.addr(oy0), n * w * out.pix)],
                detail=f"{sq.in_channels}->{sq.out_channels}->{e1.out_channels}+{e3.out_channels} {h}x{w}"
                       + (f" +pool{pool.kernel[0]}x{pool.kernel[1]}" if pool is not None else "")))
        if e1.zp_out != e3.zp_out or e1.act_min != e3.act_min or e1.act_max != e3.act_max:
            raise CompileError(f.concat, "expand1x1 and expand3x3 must share the output quantization (concat)")
        return steps

    def _emit_pool(self, op: _Op) -> list[Step]:
        cfg, R = self.cfg, self.R
        node = op.node
        src = self.views[op.src]
        out = self.views[op.out]
        cb = src.cb(R)
        if cb > cfg.pool_max_cb:
            raise CompileError(node.name, f"{cb} channel blocks: the engine's pool holds {cfg.pool_max_cb}")
        _, h_out, w_out = node.shape
        bands = self._bands(node.name, h_out, lambda n: n, cfg.ibuf_depth, w_out * cb, "pool band")
        steps = []
        for bi, (oy0, n) in enumerate(bands):
            load, read_words = self._load_spec(src, oy0, oy0 + n, node)
            cmd = pack_command(Opcode.POOL, load=load, out_h=n, out_w=w_out, dst=out.addr(oy0), dst_pix=out.pix)
            steps.append(Step(layer=node.name, kind="pool", command=cmd, macs=0,
                              read_bytes=R * read_words + CMD_BYTES, write_bytes=R * n * w_out * cb,
                              band=(bi, len(bands)), detail=f"maxpool {node.kernel[0]}x{node.kernel[1]}/2",
                              reads=[self._load_span(load)],
                              writes=[(out.addr(oy0), (n * w_out - 1) * out.pix + cb)]))
        return steps

    def _emit_gap(self, op: _Op) -> list[Step]:
        cfg, R = self.cfg, self.R
        node = op.node
        src = self.views[op.src]
        out = self.views[op.out]
        cb = src.cb(R)
        if not np.array_equal(src.lanes, np.arange(src.channels)) or out.offset != 0:
            raise CompileError(node.name, "averaging a tensor stored with gaps between its channels")
        per = cfg.ibuf_depth // (src.h * src.w)
        if per == 0:
            raise CompileError(node.name, f"a {src.h}x{src.w} map does not fit the buffer for averaging")
        steps = []
        chunks = [(c0, min(per, cb - c0)) for c0 in range(0, cb, per)]
        for bi, (c0, n) in enumerate(chunks):
            load = dict(src=src.addr() + c0, src_rows=src.h, src_w=src.w, cb=n,
                        src_pix=0 if src.pix == n else src.pix, ibuf=0)
            cmd = pack_command(Opcode.GAP, load=load, m0=int(node.m0), shift=int(node.shift), zp_in=node.zp_in,
                               zp_out=node.zp_out, dst=out.addr() + c0)
            steps.append(Step(layer=node.name, kind="gap", command=cmd, macs=0,
                              read_bytes=R * src.h * src.w * n + CMD_BYTES, write_bytes=R * n,
                              band=(bi, len(chunks)), detail=f"global average {src.h}x{src.w}",
                              reads=[self._load_span(load)], writes=[(out.addr() + c0, n)]))
        if node.act_min != -128 or node.act_max != 127:
            raise CompileError(node.name, "a clamped global average pool (the engine's is unclamped)")
        return steps


def _merge_free(free):
    free = sorted(f for f in free if f[1] > 0)
    out = []
    for a, n in free:
        if out and out[-1][0] + out[-1][1] == a:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((a, n))
    return out


def pack_pixel_pairs(x: np.ndarray, rows: int, fill: int) -> np.ndarray:
    """``(C, H, W)`` with ``C <= rows/2`` -> ``(rows, H, ceil(W/2))``: two pixels per word.

    Lane ``c + j * rows/2`` of packed column ``X`` holds channel ``c`` of pixel
    ``2X + j``; a pixel past the right edge reads ``fill`` (the zero point,
    as padding would).
    """
    c, h, w = x.shape
    half = rows // 2
    w2 = cdiv(w, 2)
    out = np.zeros((rows, h, w2), dtype=np.int8)
    wide = np.full((c, h, 2 * w2), fill, dtype=np.int8)
    wide[:, :, :w] = x
    out[:c] = wide[:, :, 0::2]
    out[half:half + c] = wide[:, :, 1::2]
    return out


def pair_packed_conv(w: np.ndarray, pad_l: int, rows: int) -> tuple[np.ndarray, int]:
    """Weights of a stride-2-in-x convolution rewritten for a pixel-pair-packed input.

    Output column ``ox`` reads input column ``2*ox - pad_l + kx`` = pixel ``j``
    of packed column ``ox + floor((kx - pad_l) / 2)``: the same convolution as
    one with stride 1 in x over the packed tensor, kernel width ``kw'`` and
    left padding ``pad_l'``, whose lane ``c + j*rows/2`` carries tap ``kx``.
    Returns ``(w' (cout, rows, kh, kw'), pad_l')``.
    """
    cout, cin, kh, kw = w.shape
    half = rows // 2
    pad2 = (pad_l + 1) // 2
    kw2 = (kw - 1 - pad_l) // 2 + pad2 + 1
    out = np.zeros((cout, rows, kh, kw2), dtype=np.int8)
    for kx in range(kw):
        t = kx - pad_l
        out[:, (t % 2) * half:(t % 2) * half + cin, :, t // 2 + pad2] = w[:, :, :, kx]
    return out, pad2


def _tensor_refs(node: HostOp):
    from quant.graph import TensorRef
    found = []

    def walk(a):
        if isinstance(a, TensorRef):
            found.append(a.name)
        elif isinstance(a, (list, tuple)):
            for v in a:
                walk(v)
        elif isinstance(a, dict):
            for v in a.values():
                walk(v)
    walk(node.args)
    walk(node.kwargs)
    return found


def compile_graph(qgraph: QGraph, config: EngineConfig | None = None, *, mem_words: int | None = None,
                  reuse_memory: bool = True) -> Program:
    """Schedule a quantized network onto an engine configuration.

    Parameters
    ----------
    qgraph : QGraph
    config : EngineConfig
        Buffer sizes and array geometry the schedule must fit.
    mem_words : int, optional
        Memory available to the engine; :class:`CompileError` if the plan needs more.
    reuse_memory : bool
        Let a tensor take the region of one whose readers have all run (default). Without it every
        tensor keeps its own region, so that all of them can be read after a run.

    Raises
    ------
    CompileError
        A layer the engine cannot run (named, with the reason), or a plan that does not fit.
    """
    config = config or EngineConfig()
    c = _Compiler(qgraph, config, mem_words=mem_words, reuse=reuse_memory)
    ops = c.plan()
    c.place(ops)
    # Weight blobs first (their size does not depend on placement), then activations.
    blob_words = _blob_words_needed(c, ops)
    top = c.allocate(ops, blob_words)
    steps, blobs = c.emit(ops, 0)
    assert c._blob_top == blob_words, (c._blob_top, blob_words)
    cmd_addr = top
    prof_addr = cmd_addr + len(steps) * config.cmd_words
    mem_needed = prof_addr + len(steps) * config.profile_words
    if mem_words is not None and mem_needed > mem_words:
        raise CompileError(qgraph.outputs[0] if qgraph.outputs else "network",
                           f"the program needs {mem_needed} memory words, the engine has {mem_words}")
    for i, s in enumerate(steps):
        code = check_command(config, s.command)
        if code != ErrorCode.NONE:  # pragma: no cover - a scheduler bug, never the user's
            raise AssertionError(f"step {i} ({s.layer}) would be refused: {code.name}")
    outputs = c._engine_outputs()
    return Program(config=config, qgraph=qgraph, steps=steps, blobs=blobs, views=c.views,
                   inputs=list(qgraph.inputs), outputs=outputs, cmd_addr=cmd_addr, prof_addr=prof_addr,
                   mem_words=mem_needed, layer_order=list(dict.fromkeys(s.layer for s in steps)),
                   packed_inputs=dict(c.packed_inputs))


def _blob_words_needed(c: _Compiler, ops: list[_Op]) -> int:
    R = c.R
    total = 0
    for op in ops:
        if op.kind == "conv":
            w = op.node.weight
            if op.src in c.packed_inputs:
                w = pair_packed_conv(w, op.node.padding[1], R)[0]
            total += c._blob_size(w.shape[0], c.views[op.src].cb(R) * R, w.shape[2], w.shape[3])
        elif op.kind == "fire":
            g = c.g
            sq, e1, e3 = g[op.node.squeeze], g[op.node.expand1x1], g[op.node.expand3x3]
            sq_cb = cdiv(sq.out_channels, R)
            total += c._blob_size(sq.out_channels, c.views[op.src].cb(R) * R, 1, 1)
            total += c._blob_size(e1.out_channels, sq_cb * R, 1, 1)
            total += c._blob_size(e3.out_channels, sq_cb * R, 3, 3)
    return total
