"""Planning: the quantized graph as engine operations (convolutions, Fire modules, pools), and what the engine
refuses."""

from __future__ import annotations

import dataclasses

import numpy as np

from hw.isa import MAX_DILATION, MAX_KERNEL, MAX_PAD, MAX_STRIDE, EngineConfig
from hw.layout import cdiv
from quant.graph import HostOp
from quant.quantize import QConcat, QConv, QDualConv, QFlatten, QGlobalAvgPool, QInput, QMaxPool

from .program import MAX_DIM, CompileError


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


def _never_padded(w: np.ndarray, node) -> bool:
    """Every nonzero weight of ``w`` sits at a tap that never reads padding (the tap reading the output
    pixel's own input pixel, stride 1): then the value padding feeds those lanes does not matter."""
    (pt, pl, pb, pr), (dy, dx) = node.padding, node.dilation
    taps = np.argwhere(np.abs(w).sum(axis=(0, 1)) != 0)
    return node.stride == (1, 1) and (pt, pl) == (pb, pr) and all(ky * dy == pt and kx * dx == pl for ky, kx in taps)


def dual_pad_zero_point(node) -> int | None:
    """The zero point a dual convolution's padded taps read on every lane (the engine pads with one), or None
    when neither works: ``zp_a`` if the ``b`` weights never read padding (an identity shortcut), ``zp_b`` if the
    ``a`` weights never do."""
    if not any(node.padding) or node.zp_a == node.zp_b or _never_padded(node.weight_b, node):
        return node.zp_a
    if _never_padded(node.weight_a, node):
        return node.zp_b
    return None


def _check_conv(node, cfg: EngineConfig):
    kh, kw = node.kernel_size
    name = node.name
    if getattr(node, "groups", 1) != 1:
        raise CompileError(name, "grouped convolutions are not supported by the engine")
    if not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL):
        raise CompileError(name, f"{kh}x{kw} kernel: the engine runs kernels up to {MAX_KERNEL}x{MAX_KERNEL}")
    if not (1 <= node.stride[0] <= MAX_STRIDE and 1 <= node.stride[1] <= MAX_STRIDE):
        raise CompileError(name, f"stride {node.stride}: the engine runs strides 1 to {MAX_STRIDE}")
    if node.dilation[0] != node.dilation[1] or not 1 <= node.dilation[0] <= MAX_DILATION:
        raise CompileError(name, f"dilation {node.dilation}: the engine runs equal dilations 1..{MAX_DILATION}")
    if max(node.padding) > MAX_PAD:
        raise CompileError(name, f"padding {node.padding}: at most {MAX_PAD} on a side")
    if node.out_channels > MAX_DIM:
        raise CompileError(name, f"{node.out_channels} output channels: at most {MAX_DIM}")
    c, h, w = node.shape
    if h > MAX_DIM or w > MAX_DIM:
        raise CompileError(name, f"output {h}x{w}: at most {MAX_DIM} pixels a side")


class _Planning:
    """Graph -> operations (a part of :class:`~sw.compiler.compile._Compiler`)."""

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
                    and r0.in_channels <= cfg.rows // 2 and r0.dilation == (1, 1)
                    and not r0.depthwise):
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
                if dual_pad_zero_point(node) is None:
                    raise CompileError(node.name, "a padded residual add whose two inputs have different zero "
                                                  "points (the engine pads with one zero point)")
                ops.append(_Op("conv", node.name, node, src=f"{node.name}:in", out=node.name))
            elif isinstance(node, QMaxPool):
                why = _pool_fusable(node, cfg)
                readers = g.consumers(node.name)
                reader = readers[0] if len(readers) == 1 else None
                # Fusable into the load of its only reader: a plain convolution or a Fire squeeze.
                fuse = (why is None and node.name not in g.outputs and isinstance(reader, QConv)
                        and not reader.depthwise and (reader.name not in fire_members or reader.name in squeezes))
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
