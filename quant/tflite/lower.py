"""An imported TFLite graph lowered onto the engine: the operators the engine computes exactly as TFLite does,
as a :class:`~quant.quantize.QGraph`, and the rest as host operators after it.

Exactness is the rule: an operator is lowered only where the engine's arithmetic *is* TFLite's.

* CONV_2D (groups 1): ``acc = sum(w * (x - zp_in)) + bias`` wrapped to int32 is the engine's accumulator
  with the zero point folded into the bias; taps outside the image read ``zp_in`` in both. TFLite's
  ``MultiplyByQuantizedMultiplier(acc, q, e)`` with ``e <= 0`` is ``rdbpot(srdhm(acc, q), -e)``, the
  engine's requantizer with ``m0 = q``, ``shift = -e``. A left shift (``e > 0``) is not lowered.
* DEPTHWISE_CONV_2D: the same, as a dense convolution whose weights are zero except ``w[c, c // m]``
  (``m`` the depth multiplier); with ``m = 1`` a ``QConv.depthwise`` (the compiler gives each output tile
  only its own input channels), otherwise a plain dense convolution.
* AVERAGE_POOL_2D without padding: a depthwise convolution with every tap weighing 64, zero points 0 (TFLite
  averages the stored values), requantized by a ``(m0, shift)`` for which ``rdbpot(srdhm(64 * sum, m0),
  shift)`` equals TFLite's ``(sum +- n/2) / n`` for *every* possible sum of ``n`` int8 values (searched
  and checked exhaustively here). The engine's GAP cannot: with ``m0 < 2**31`` its first rounding is too
  coarse for ``n = 9`` (``2**shift`` would have to exceed ``n``).

The engine part is the longest prefix of the operators that lower (each reading the model input or an
earlier lowered output); every later operator runs on the host with TFLite's own kernel
(:mod:`quant.tflite.ops`). Engine tensors are ``(C, H, W)``; TFLite's are NHWC: :func:`to_nhwc`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..arith import requantize
from ..calibrate import QParams
from ..quantize import QConv, QGraph, QInput, QTensor
from .importer import TFLiteGraph
from .ops import AveragePool2D, Conv2D, DepthwiseConv2D, Operator

__all__ = ["Lowered", "lower", "to_nhwc", "to_chw", "average_multiplier", "AVG_TAP_WEIGHT"]


@dataclass(eq=False)
class Lowered:
    """``qgraph`` runs on the engine (its tensors are named as TFLite's), ``host`` runs after it."""

    graph: TFLiteGraph
    qgraph: QGraph
    host: list[Operator]
    #: Why the first host operator is not on the engine ("" when every operator is).
    stop_reason: str

    @property
    def engine_ops(self) -> list[Operator]:
        return [op for op in self.graph.operators if op not in self.host]

    def describe(self) -> str:
        lines = [f"{op.describe()}  [engine]" for op in self.engine_ops]
        lines += [f"{op.describe()}  [host]" for op in self.host]
        if self.stop_reason:
            lines.append(f"host from operator {self.host[0].index}: {self.stop_reason}")
        return "\n".join(lines)


def to_chw(x: np.ndarray) -> np.ndarray:
    """NHWC (batch 1) -> ``(C, H, W)``."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.reshape(x.shape[-3:]).transpose(2, 0, 1)) if x.ndim >= 3 else x


def to_nhwc(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``(C, H, W)`` -> TFLite's tensor ``shape`` (NHWC, or any shape with the same values in NHWC order)."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.transpose(1, 2, 0)).reshape(shape)


def _rounded_average(total: np.ndarray, n: int) -> np.ndarray:
    """TFLite's int8 average: ``(sum + n/2) / n`` for a positive sum, ``(sum - n/2) / n`` otherwise, C division."""
    half = n // 2
    return np.where(total > 0, (total + half) // n, -((-(total - half)) // n))


#: The weight of every tap of an average pool run as a depthwise convolution: a power of two, so that the
#: accumulator is the sum scaled exactly, and as large as int8 weights allow, so that the first rounding
#: of the requantizer (``srdhm``) is fine enough for the second (``rdbpot``) to round the sum as TFLite does.
AVG_TAP_WEIGHT = 64


@functools.cache
def average_multiplier(n: int) -> tuple[int, int] | None:
    """``(m0, shift)`` with ``rdbpot(srdhm(AVG_TAP_WEIGHT * s, m0), shift)`` equal to TFLite's average of ``n``
    for every sum ``s`` of ``n`` int8 values (checked exhaustively), or None. ``m0`` is tried next to
    ``2**(31 + shift) / (AVG_TAP_WEIGHT * n)``."""
    sums = np.arange(-128 * n, 127 * n + 1, dtype=np.int64)
    want = _rounded_average(sums, n)
    for shift in range(31, -1, -1):
        base = (1 << (31 + shift)) / (AVG_TAP_WEIGHT * n)
        for m0 in (int(np.floor(base)), int(np.ceil(base)), int(np.ceil(base)) + 1):
            if (1 << 30) <= m0 < (1 << 31) and np.array_equal(requantize(AVG_TAP_WEIGHT * sums, m0, shift, 0),
                                                                want):
                return m0, shift
    return None


def _qparams(graph: TFLiteGraph, name: str) -> QParams:
    t = graph.tensors[name]
    return QParams(float(t.per_tensor_scale), int(t.per_tensor_zero_point))


def _conv_node(graph: TFLiteGraph, op: Conv2D) -> tuple[QConv | None, str]:
    """The QConv of a CONV_2D / DEPTHWISE_CONV_2D, or ``(None, why not)``."""
    depthwise = isinstance(op, DepthwiseConv2D)
    if not depthwise and op.groups != 1:
        return None, f"grouped convolution ({op.groups} groups)"
    if op.in_shape[0] != 1 or tuple(graph.tensors[op.inputs[0]].shape) != tuple(op.in_shape):
        return None, "the input is viewed in another shape (FULLY_CONNECTED over a reshaped tensor)"
    if np.any(op.shift > 0):
        return None, "a requantization multiplier of one or more (a left shift; the engine shifts right only)"
    if np.any(op.shift < -31):
        return None, "a right shift beyond 31"
    _, h, w, cin = op.in_shape
    w_ohwi = op.weight
    if depthwise:  # output channel c reads input channel c // depth_multiplier
        cout = w_ohwi.shape[3]
        weight = np.zeros((cout, cin, *w_ohwi.shape[1:3]), np.int8)
        weight[np.arange(cout), np.arange(cout) // op.depth_multiplier] = w_ohwi[0].transpose(2, 0, 1)
        # With a depth multiplier the tiles do not line up with the input blocks: a dense convolution.
        depthwise = op.depth_multiplier == 1 and cin > 1
    else:
        weight = np.ascontiguousarray(w_ohwi.transpose(0, 3, 1, 2))
    s_in, s_out = _qparams(graph, op.inputs[0]).scale, _qparams(graph, op.output).scale
    m0 = np.asarray(op.multiplier, np.int64)
    shift = -np.asarray(op.shift, np.int64)
    acc_scale = m0 / 2.0 ** 31 / 2.0 ** shift * s_out
    _, ho, wo, cout = op.out_shape
    node = QConv(name=op.output, inputs=(op.inputs[0],), shape=(cout, ho, wo), weight=weight,
                 bias=np.asarray(op.bias, np.int64), m0=m0, shift=shift, zp_in=int(op.zp_in), zp_out=int(op.zp_out),
                 act_min=int(op.act_min), act_max=int(op.act_max), stride=tuple(op.stride),
                 padding=tuple(op.padding), dilation=tuple(op.dilation), relu=op.act_min > -128,
                 in_shape=(cin, h, w), acc_scale=acc_scale, s_in=s_in, s_out=s_out, depthwise=depthwise)
    return node, ""


def _avgpool_node(graph: TFLiteGraph, op: AveragePool2D) -> tuple[QConv | None, str]:
    """AVERAGE_POOL_2D without padding as a depthwise convolution whose taps all weigh ``AVG_TAP_WEIGHT``."""
    _, h, w, c = graph.tensors[op.inputs[0]].shape
    if any(op.padding):
        return None, "an average pool with padding (TFLite divides by the count of taps inside the image)"
    kh, kw = op.kernel
    found = average_multiplier(kh * kw)
    if found is None:
        return None, f"no engine multiplier reproduces TFLite's rounding of an average of {kh * kw}"
    m0, shift = found
    weight = np.zeros((c, c, kh, kw), np.int8)
    weight[np.arange(c), np.arange(c)] = AVG_TAP_WEIGHT
    qp = _qparams(graph, op.inputs[0])
    _, ho, wo, _ = op.out_shape
    # TFLite averages the stored values (zero point included) and writes them as they are: zero points 0.
    return QConv(name=op.output, inputs=(op.inputs[0],), shape=(c, ho, wo), weight=weight,
                 bias=np.zeros(c, np.int64), m0=np.full(c, m0, np.int64), shift=np.full(c, shift, np.int64),
                 zp_in=0, zp_out=0, act_min=int(op.act_min), act_max=int(op.act_max), stride=tuple(op.stride),
                 padding=(0, 0, 0, 0), dilation=(1, 1), relu=False, in_shape=(c, h, w),
                 acc_scale=np.full(c, qp.scale * 2.0 ** -31 * m0 / 2 ** shift), s_in=qp.scale, s_out=qp.scale,
                 depthwise=c > 1), ""


def lower(graph: TFLiteGraph) -> Lowered:
    """Lower the longest prefix of ``graph``'s operators that the engine computes exactly (see the module)."""
    if len(graph.inputs) != 1:
        raise ValueError(f"{graph.source}: {len(graph.inputs)} model inputs; the engine path takes one")
    (inp,) = graph.inputs
    shape = tuple(graph.tensors[inp].shape)
    if len(shape) != 4 or shape[0] != 1:
        raise ValueError(f"{graph.source}: input {inp!r} has shape {list(shape)}; the engine path takes one NHWC "
                         f"picture (1, H, W, C)")
    nodes: list = [QInput(name=inp, inputs=(), shape=(shape[3], shape[1], shape[2]))]
    tensors = {inp: QTensor(inp, nodes[0].shape, _qparams(graph, inp))}
    on_engine = {inp}
    host, why = [], ""
    for op in graph.operators:
        node = None
        if host:
            host.append(op)
            continue
        if op.inputs[0] not in on_engine:
            why = f"it reads {op.inputs[0]!r}, which the engine does not compute"
        elif isinstance(op, Conv2D):
            node, why = _conv_node(graph, op)
        elif isinstance(op, AveragePool2D):
            node, why = _avgpool_node(graph, op)
        else:
            why = f"{op.tflite_op} runs on the host"
        if node is None:
            why = f"operator {op.index} ({op.tflite_op}): {why}"
            host.append(op)
            continue
        nodes.append(node)
        tensors[node.name] = QTensor(node.name, node.shape, _qparams(graph, op.output))
        on_engine.add(op.output)
    outputs = [n.name for n in nodes[1:] if n.name in graph.outputs
               or any(n.name in h.inputs for h in host)] or [nodes[-1].name]
    qg = QGraph(nodes=nodes, tensors=tensors, inputs=[inp], outputs=outputs)
    return Lowered(graph=graph, qgraph=qg, host=host, stop_reason=why if host else "")
