"""The quantizer: captured float graph + calibration ranges -> integer graph (:class:`QGraph`).

Every convolution becomes int8 weights (symmetric, one scale per output
channel, in [-127, 127]), an int32 bias at the accumulator scale and a
per-channel requantization ``(m0, shift)`` (:mod:`quant.arith`). The
convolution's accumulator scale of output channel ``c`` is

    ``S[c] = max_terms(s_in * max|W[c]|) / 127``

(for a plain convolution ``S[c] = s_in * s_w[c]`` with ``s_w[c] = max|W[c]| / 127``),
``w = round(W * s_in / S[c])``, ``bias = round(b / S[c])`` and the multiplier
``S[c] / s_out`` must be below one because the requantizer shifts right only.
When it is not, the output tensor's scale (and that of every tensor sharing
it) is widened to ``max(S) / MAX_MULTIPLIER`` and the scales are solved
again; SqueezeNet 1.1 never needs it (see docs/QUANT.md).

An :class:`~quant.graph.Add` of two convolution outputs ``relu(convA(a) + convB(b))``
becomes one :class:`QDualConv`: both weight sets are quantized against a common
accumulator scale ``S[c]`` (the "terms" above are A over ``a`` and B over
``b``), the biases add, and a single requantization follows; the hardware runs
it as one convolution over the channel concatenation ``[a; b]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .arith import (
    INT8_MAX,
    INT8_MIN,
    WEIGHT_MAX,
    fold_zero_point,
    quantize_multiplier,
    relu_bounds,
    wrap_int32,
)
from .calibrate import QParams, calibrate, device_tensors, qparam_groups, qparams_from_range, round_half_away
from .graph import Add, Concat, Conv, Flatten, GlobalAvgPool, Graph, HostOp, Input, MaxPool, MaxPoolWindow, capture

__all__ = [
    "MAX_MULTIPLIER", "BIAS_LIMIT", "QTensor", "QNode", "QInput", "QConv", "QDualConv", "QMaxPool",
    "QGlobalAvgPool", "QConcat", "QFlatten", "FireMatch", "QGraph", "quantize", "quantize_model",
]

#: Largest requantization multiplier the quantizer emits. Strictly below one with a margin:
#: quantize_multiplier rounds a multiplier in [1 - 2**-32, 1) up to 1 and returns shift = -1.
MAX_MULTIPLIER = 1.0 - 2.0 ** -20
#: Largest |bias| the quantizer emits; a channel whose bias would exceed it gets a coarser accumulator scale.
BIAS_LIMIT = (1 << 31) - (1 << 16)


@dataclass(frozen=True)
class QTensor:
    """An int8 tensor of the integer graph: name, shape without batch dimension, quantization parameters."""

    name: str
    shape: tuple[int, ...]
    qparams: QParams

    @property
    def scale(self) -> float:
        return self.qparams.scale

    @property
    def zero_point(self) -> int:
        return self.qparams.zero_point


@dataclass(kw_only=True, eq=False)
class QNode:
    """Base of the integer graph's nodes: ``name`` (= output tensor), ``inputs`` (tensor names), ``shape``."""

    op: ClassVar[str] = "node"
    name: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]


@dataclass(kw_only=True, eq=False)
class QInput(QNode):
    """The network input (quantize it with :func:`quant.golden.quantize_input`)."""

    op: ClassVar[str] = "input"


@dataclass(kw_only=True, eq=False)
class QConv(QNode):
    """Integer convolution ``(Cin, H, W) int8 -> (Cout, Ho, Wo) int8``.

    ``out = clamp(zp_out + rdbpot(srdhm(acc, m0[c]), shift[c]), act_min, act_max)`` with
    ``acc = wrap_int32(sum((x - zp_in) * weight) + bias)``, padding fed with ``zp_in``.

    Attributes
    ----------
    weight : numpy.ndarray
        int8 ``(Cout, Cin, kh, kw)``, values in [-127, 127].
    bias : numpy.ndarray
        int32 ``(Cout,)`` at the accumulator scale, *without* the input zero
        point folded in (see :attr:`effective_bias`).
    m0, shift : numpy.ndarray
        int32 ``(Cout,)``: requantization multiplier in ``[2**30, 2**31)`` (or
        0) and right shift in ``[0, 31]``.
    zp_in, zp_out : int
        Input and output zero points.
    act_min, act_max : int
        Output clamp; a fused ReLU is ``act_min = zp_out``.
    stride, dilation : (int, int)
    padding : (int, int, int, int)
        ``(top, left, bottom, right)``.
    relu : bool
    in_shape : (int, int, int)
    acc_scale : numpy.ndarray
        float64 ``(Cout,)``: real value of one accumulator LSB, ``s_in * s_w[c]``.
    s_in, s_out : float
        Input and output scales.
    """

    op: ClassVar[str] = "conv"
    weight: np.ndarray
    bias: np.ndarray
    m0: np.ndarray
    shift: np.ndarray
    zp_in: int
    zp_out: int
    act_min: int
    act_max: int
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    relu: bool
    in_shape: tuple[int, ...]
    acc_scale: np.ndarray
    s_in: float
    s_out: float
    groups: ClassVar[int] = 1
    #: A depthwise convolution stored dense: ``weight[c, k]`` is zero for ``k != c`` (the golden arithmetic is
    #: the dense convolution's, exactly); the compiler gives each output tile only its own input channels.
    depthwise: bool = False

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def kernel_size(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def weight_scale(self) -> np.ndarray:
        """Per-channel weight scale ``s_w[c] = acc_scale[c] / s_in``."""
        return self.acc_scale / self.s_in

    @property
    def multiplier(self) -> np.ndarray:
        """The real requantization multipliers ``acc_scale / s_out`` that ``(m0, shift)`` encode."""
        return self.acc_scale / self.s_out

    @property
    def effective_bias(self) -> np.ndarray:
        """int32 ``bias - zp_in * sum(weight[c])``: what the engine adds to ``sum(x * w)`` (``hw.layout``)."""
        return fold_zero_point(self.bias, self.weight, self.zp_in)


@dataclass(kw_only=True, eq=False)
class QDualConv(QNode):
    """``relu?(convA(a) + convB(b))`` as one integer convolution over the concatenation ``[a; b]``.

    ``acc = wrap_int32(sum((a - zp_a) * weight_a) + sum((b - zp_b) * weight_b) + bias)``,
    then requantized once like :class:`QConv`. ``inputs = (a, b)``; both
    halves share stride, padding and dilation. ``parts`` names the two float
    convolutions that were merged.
    """

    op: ClassVar[str] = "dualconv"
    weight_a: np.ndarray
    weight_b: np.ndarray
    bias: np.ndarray
    m0: np.ndarray
    shift: np.ndarray
    zp_a: int
    zp_b: int
    zp_out: int
    act_min: int
    act_max: int
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    relu: bool
    in_shapes: tuple[tuple[int, ...], tuple[int, ...]]
    acc_scale: np.ndarray
    s_out: float
    parts: tuple[str, str]

    @property
    def weight(self) -> np.ndarray:
        """int8 ``(Cout, Ca + Cb, kh, kw)``: the weights over the concatenated input ``[a; b]``."""
        return np.concatenate([self.weight_a, self.weight_b], axis=1)

    @property
    def out_channels(self) -> int:
        return int(self.weight_a.shape[0])

    @property
    def kernel_size(self) -> tuple[int, int]:
        return int(self.weight_a.shape[2]), int(self.weight_a.shape[3])

    @property
    def effective_bias(self) -> np.ndarray:
        """int32 ``bias - zp_a * sum(weight_a[c]) - zp_b * sum(weight_b[c])``.

        Valid for the raw concatenated input only where no padded tap is read
        with mixed zero points: with padding, the engine must pad the ``a`` lanes
        with ``zp_a`` and the ``b`` lanes with ``zp_b``.
        """
        return wrap_int32(fold_zero_point(fold_zero_point(self.bias, self.weight_a, self.zp_a),
                                          self.weight_b, self.zp_b))


@dataclass(kw_only=True, eq=False)
class QMaxPool(QNode, MaxPoolWindow):
    """Max pool on int8 over a :class:`~quant.graph.MaxPoolWindow` (output shares the input's scale and zero point)."""

    op: ClassVar[str] = "maxpool"


@dataclass(kw_only=True, eq=False)
class QGlobalAvgPool(QNode):
    """``out[c] = clamp(zp_out + rdbpot(srdhm(sum(x[c] - zp_in), m0), shift), act_min, act_max)``.

    ``(m0, shift)`` encodes ``s_in / (count * s_out)``; ``count = H * W``.
    """

    op: ClassVar[str] = "gap"
    m0: int
    shift: int
    zp_in: int
    zp_out: int
    act_min: int
    act_max: int
    count: int
    in_shape: tuple[int, ...]


@dataclass(kw_only=True, eq=False)
class QConcat(QNode):
    """Channel concatenation; input ``i`` occupies channels ``offsets[i] ..`` (all inputs share qparams)."""

    op: ClassVar[str] = "concat"
    offsets: tuple[int, ...]


@dataclass(kw_only=True, eq=False)
class QFlatten(QNode):
    """``(C, H, W) -> (C*H*W,)``, channel-major: no work when ``H = W = 1`` (see ``graph.Flatten``)."""

    op: ClassVar[str] = "flatten"


@dataclass(frozen=True)
class FireMatch:
    """A Fire module in a :class:`QGraph`: squeeze -> (expand1x1, expand3x3) -> concat, by node name."""

    squeeze: str
    expand1x1: str
    expand3x3: str
    concat: str


@dataclass(eq=False)
class QGraph:
    """The integer network.

    Attributes
    ----------
    nodes : list
        :class:`QNode` subclasses in topological order, plus float
        :class:`~quant.graph.HostOp` nodes (layout ops and softmax at the end of
        the network; they read int8 tensors and feed only other host ops or
        the outputs, but may be interleaved with integer nodes in the order).
    tensors : dict
        Name -> :class:`QTensor` for every int8 tensor.
    inputs, outputs : list of str
        Graph input and output tensor names.
    """

    nodes: list
    tensors: dict[str, QTensor]
    inputs: list[str]
    outputs: list[str]

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}

    def __getitem__(self, name: str):
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no node named {name!r} in the quantized graph") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def get(self, name: str, default=None):
        """The node named ``name``, or ``default``."""
        return self._by_name.get(name, default)

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def qparams(self, name: str) -> QParams:
        """Scale and zero point of tensor ``name``."""
        return self.tensors[name].qparams

    def consumers(self, name: str) -> list:
        return [n for n in self.nodes if name in n.inputs]

    def convs(self) -> list[QConv]:
        return [n for n in self.nodes if isinstance(n, QConv)]

    def fire_modules(self) -> list[FireMatch]:
        """Every squeeze -> (1x1, 3x3) -> concat pattern that the engine's FIRE command can run.

        The squeeze output must be read only by the two expand convolutions,
        each expand output only by the concat, whose inputs are exactly
        ``[expand1x1, expand3x3]``.
        """
        out = []
        for c in self.nodes:
            if not (isinstance(c, QConcat) and len(c.inputs) == 2):
                continue
            e1, e3 = (self._by_name[i] for i in c.inputs)
            if not (isinstance(e1, QConv) and isinstance(e3, QConv) and e1.inputs == e3.inputs):
                continue
            sq = self._by_name[e1.inputs[0]]
            if not (isinstance(sq, QConv) and e1.kernel_size == (1, 1) and e3.kernel_size == (3, 3)):
                continue
            if ({n.name for n in self.consumers(sq.name)} != {e1.name, e3.name}
                    or self.consumers(e1.name) != [c] or self.consumers(e3.name) != [c]):
                continue
            out.append(FireMatch(sq.name, e1.name, e3.name, c.name))
        return out

    def summary(self) -> str:
        """One line per node: name, op, shape, output scale and zero point, and conv parameters."""
        lines = [f"{'node':28s} {'op':8s} {'shape':16s} {'scale':>11s} {'zp':>4s}  details"]
        for n in self.nodes:
            t = self.tensors.get(n.name)
            sc, zp = (f"{t.scale:11.4g}", f"{t.zero_point:4d}") if t else (f"{'-':>11s}", f"{'-':>4s}")
            extra = ""
            if isinstance(n, (QConv, QDualConv)):
                mult = n.acc_scale / n.s_out
                extra = (f"k{n.kernel_size} s{n.stride} p{n.padding} "
                         f"mult [{mult.min():.3g}, {mult.max():.3g}]{' relu' if n.relu else ''}")
            elif isinstance(n, QGlobalAvgPool):
                extra = f"m0={n.m0} shift={n.shift} count={n.count}"
            lines.append(f"{n.name:28s} {n.op:8s} {str(n.shape):16s} {sc} {zp}  {extra}")
        return "\n".join(lines)


# --- the quantizer -----------------------------------------------------------------------------


def _acc_scale(terms: list[tuple[np.ndarray, float]], bias: np.ndarray) -> np.ndarray:
    """Per-channel accumulator scale: every term's int8 weights fit [-127, 127] and the bias fits int32."""
    s = np.zeros(terms[0][0].shape[0])
    for w, s_in in terms:
        s = np.maximum(s, s_in * np.abs(w).reshape(w.shape[0], -1).max(axis=1) / WEIGHT_MAX)
    s = np.maximum(s, np.abs(bias) / BIAS_LIMIT)
    # An all-zero channel (weights and bias): any scale represents it; take a plain one.
    return np.where(s > 0, s, min(s_in for _, s_in in terms) / WEIGHT_MAX)


def _int_weights(w: np.ndarray, s_in: float, acc: np.ndarray) -> np.ndarray:
    q = round_half_away(w * (s_in / acc).reshape((-1,) + (1,) * (w.ndim - 1)))
    return np.clip(q, -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)


def _requant_params(mult: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    enc = [quantize_multiplier(float(m)) for m in mult]
    m0 = np.array([e[0] for e in enc], dtype=np.int64)
    shift = np.array([e[1] for e in enc], dtype=np.int64)
    if (shift < 0).any():  # cannot happen below MAX_MULTIPLIER; guards the contract
        raise AssertionError(f"{where}: multiplier encoded with a left shift: {mult[shift < 0]}")
    return m0.astype(np.int32), shift.astype(np.int32)


def _conv_items(graph: Graph):
    """(output, [(float weight, input tensor)], float bias, source nodes) of every integer convolution."""
    fused = {i for n in graph if isinstance(n, Add) for i in n.inputs}
    for node in graph:
        if isinstance(node, Conv) and node.name not in fused:
            yield node.name, [(node.weight, node.inputs[0])], node.bias, (node,)
        elif isinstance(node, Add):
            a, b = (graph[i] for i in node.inputs)
            yield node.name, [(a.weight, a.inputs[0]), (b.weight, b.inputs[0])], a.bias + b.bias, (a, b)


def _solve_qparams(graph: Graph, ranges: dict[str, tuple[float, float]],
                   max_iterations: int) -> dict[str, QParams]:
    groups = qparam_groups(graph)
    group_of = {t: gi for gi, g in enumerate(groups) for t in g}
    missing = [t for t in group_of if t not in ranges]
    if missing:
        raise KeyError(f"no calibration range for tensors {missing}")
    bounds = [(min(ranges[t][0] for t in g), max(ranges[t][1] for t in g)) for g in groups]
    min_scale = [0.0] * len(groups)
    items = list(_conv_items(graph))
    for _ in range(max_iterations):
        qp = [qparams_from_range(lo, hi, ms) for (lo, hi), ms in zip(bounds, min_scale, strict=True)]
        changed = False
        for out, terms, bias, _src in items:
            acc = _acc_scale([(w, qp[group_of[t]].scale) for w, t in terms], bias)
            need = float(acc.max()) / MAX_MULTIPLIER * (1.0 + 2.0 ** -40)  # margin for the float division
            g = group_of[out]
            if qp[g].scale < need:
                # Output finer than one accumulator LSB: widen the output (and its whole group).
                min_scale[g] = max(min_scale[g], need)
                changed = True
        if not changed:
            return {t: qp[group_of[t]] for t in group_of}
    raise ValueError(f"could not choose scales that keep every requantization multiplier below one in "
                     f"{max_iterations} rounds (a tensor group feeds a convolution that writes back into it "
                     f"with weights above 127 * scale?): groups "
                     f"{[groups[g] for g, m in enumerate(min_scale) if m]}")


def quantize(graph: Graph, ranges: dict[str, tuple[float, float]], *, max_iterations: int = 16) -> QGraph:
    """Quantize a captured float graph with calibration ranges.

    Parameters
    ----------
    graph : Graph
        From :func:`quant.graph.capture`.
    ranges : dict
        Tensor name -> observed ``(min, max)``, from :func:`quant.calibrate.calibrate`.
    max_iterations : int
        Rounds of output-scale widening before giving up (one suffices unless
        a widened tensor feeds back into its own group).

    Returns
    -------
    QGraph

    Raises
    ------
    KeyError
        When a device tensor has no range.
    ValueError
        When no scales keep every multiplier below one.
    """
    qp = _solve_qparams(graph, ranges, max_iterations)
    tensors = {t: QTensor(t, tuple(graph[t].shape), q) for t, q in qp.items()}
    conv_items = {out: (terms, bias, src) for out, terms, bias, src in _conv_items(graph)}
    nodes: list = []
    for node in graph:
        name = node.name
        if isinstance(node, Input):
            nodes.append(QInput(name=name, inputs=(), shape=node.shape))
        elif name in conv_items:
            terms, bias_f, src = conv_items[name]
            s_ins = [qp[t].scale for _, t in terms]
            acc = _acc_scale([(w, s) for (w, _), s in zip(terms, s_ins, strict=True)], bias_f)
            ws = [_int_weights(w, s, acc) for (w, _), s in zip(terms, s_ins, strict=True)]
            bias = round_half_away(bias_f / acc).astype(np.int32)
            s_out, zp_out = qp[name].scale, qp[name].zero_point
            m0, shift = _requant_params(acc / s_out, name)
            lo, hi = relu_bounds(zp_out, node.relu)
            if getattr(node, "relu6", False):   # 6 quantized as TFLite does: zp + round(6 / s)
                hi = int(min(INT8_MAX, zp_out + round_half_away(np.float64(6.0 / s_out))))
            geo = src[0]
            common = dict(name=name, shape=node.shape, bias=bias, m0=m0, shift=shift, zp_out=zp_out,
                          act_min=lo, act_max=hi, stride=geo.stride, padding=geo.padding,
                          dilation=geo.dilation, relu=node.relu, acc_scale=acc, s_out=s_out)
            if isinstance(node, Conv):
                t_in = terms[0][1]
                nodes.append(QConv(inputs=(t_in,), weight=ws[0], zp_in=qp[t_in].zero_point,
                                   in_shape=geo.in_shape, s_in=s_ins[0], depthwise=geo.depthwise, **common))
            else:
                ta, tb = terms[0][1], terms[1][1]
                nodes.append(QDualConv(inputs=(ta, tb), weight_a=ws[0], weight_b=ws[1],
                                       zp_a=qp[ta].zero_point, zp_b=qp[tb].zero_point,
                                       in_shapes=(src[0].in_shape, src[1].in_shape),
                                       parts=(src[0].name, src[1].name), **common))
        elif isinstance(node, Conv):
            continue  # an operand of a dual convolution
        elif isinstance(node, MaxPool):
            nodes.append(QMaxPool(name=name, inputs=node.inputs, shape=node.shape, **node.window()))
        elif isinstance(node, GlobalAvgPool):
            nodes.append(_quantize_gap(node, qp[node.inputs[0]], qp[name]))
        elif isinstance(node, Concat):
            sizes = [graph[i].shape[0] for i in node.inputs]
            offsets = tuple(int(v) for v in np.cumsum([0] + sizes[:-1]))
            nodes.append(QConcat(name=name, inputs=node.inputs, shape=node.shape, offsets=offsets))
        elif isinstance(node, Flatten):
            nodes.append(QFlatten(name=name, inputs=node.inputs, shape=node.shape))
        elif isinstance(node, HostOp):
            nodes.append(node)
        else:  # pragma: no cover - every IR node type is handled above
            raise TypeError(f"{name}: cannot quantize {type(node).__name__}")
    missing = set(device_tensors(graph)) - set(tensors)
    if missing:  # pragma: no cover - device_tensors and qparam_groups agree by construction
        raise AssertionError(f"tensors without qparams: {missing}")
    return QGraph(nodes, tensors, list(graph.inputs), list(graph.outputs))


def _quantize_gap(node: GlobalAvgPool, q_in: QParams, q_out: QParams) -> QGlobalAvgPool:
    count = int(np.prod(node.in_shape[1:]))
    mult = q_in.scale / (count * q_out.scale)
    if mult > MAX_MULTIPLIER:
        if count == 1 and q_in == q_out:
            # Averaging one pixel is the identity; srdhm(acc, 2**31 - 1) == acc for |acc| < 2**30.
            m0, shift = (1 << 31) - 1, 0
        else:
            raise ValueError(f"{node.name}: average-pool multiplier {mult} >= 1 (output scale {q_out.scale} "
                             f"finer than input scale {q_in.scale} / {count})")
    else:
        m0, shift = quantize_multiplier(mult)
    return QGlobalAvgPool(name=node.name, inputs=node.inputs, shape=node.shape, m0=int(m0), shift=int(shift),
                          zp_in=q_in.zero_point, zp_out=q_out.zero_point, act_min=INT8_MIN, act_max=INT8_MAX,
                          count=count, in_shape=node.in_shape)


def quantize_model(model: torch.nn.Module, calibration: torch.Tensor | Iterable[torch.Tensor],
                   input_shape: tuple[int, ...] | None = None) -> QGraph:
    """Capture, calibrate and quantize a float model in one call.

    Parameters
    ----------
    model : torch.nn.Module
        Float model in eval mode.
    calibration : torch.Tensor or iterable of torch.Tensor
        One batch ``(N, *input_shape)`` or an iterable of batches.
    input_shape : tuple of int, optional
        Input shape without batch; defaults to that of the first batch.
    """
    batches = [calibration] if isinstance(calibration, torch.Tensor) else list(calibration)
    if not batches:
        raise ValueError("calibration needs at least one batch")
    graph = capture(model, tuple(input_shape or batches[0].shape[1:]))
    return quantize(graph, calibrate(graph, batches))
