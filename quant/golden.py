"""The golden model: the bit-exact integer specification of the engine.

Every function takes and returns integers (numpy int8 tensors in ``(C, H, W)``
layout, no batch dimension) and uses only the arithmetic of :mod:`quant.arith`.
The hardware, the host driver's simulator backend and the compiler are all
tested for exact equality against these functions.

Convolution accumulation
    ``acc = wrap_int32(sum((x - zp_in) * w) + bias)``. The sums are computed in
    floating point by :mod:`quant.kernels`, exactly: float32 where every partial
    sum provably stays below ``2**24`` (``max|x - zp_in| * max_c sum|w[c]|``,
    checked per call in :func:`quant.kernels.conv_sum`), split over input
    channels or in float64 otherwise (below ``2**53``, also checked). The exact
    sum is then wrapped to int32, which equals the hardware's modulo-2**32
    running sum, and requantized with float64 constants that
    :class:`quant.kernels.Requantizer` proves exact (integer path otherwise).

Memory layout
    Results are int8 ``(C, H, W)`` arrays; those of the fast kernels are views
    of channels-last ``(H, W, C)`` memory (the layout oneDNN convolves
    fastest and the engine stores), so one layer's output feeds the next
    without a transpose. Values are what matters: compare with ``==``, not
    by ``tobytes()`` of the raw buffer.

Reference kernels
    The previous implementation (one float64 ``conv2d`` per layer, the int64
    requantizer of :mod:`quant.arith`, a sliding-window max pool) stays
    reachable under ``with reference_kernels():`` as an independent oracle for
    the tests.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .arith import INT8_MAX, INT8_MIN, MAX_SHIFT, requantize, wrap_int32
from .calibrate import QParams, round_half_away
from .graph import HostOp, maxpool_out_size
from .kernels import F32_EXACT, ConvWeights, Requantizer, conv_sum, maxpool_int8, to_float_input
from .quantize import QConcat, QConv, QDualConv, QFlatten, QGlobalAvgPool, QGraph, QInput, QMaxPool

__all__ = [
    "conv_out_size", "conv_accumulate", "conv2d", "dual_conv", "maxpool2d", "global_avgpool", "concat",
    "fire", "run_conv", "run", "quantize_input", "dequantize", "infer", "reference_kernels",
    "using_reference_kernels", "prepare_conv",
]

_EXACT_LIMIT = 2 ** 53
_PRODUCT_MAX = 255 * 128  # |x - zp_in| <= 255, |w| <= 128
_use_reference = False


def using_reference_kernels() -> bool:
    """Whether :func:`reference_kernels` is in force."""
    return _use_reference


@contextlib.contextmanager
def reference_kernels():
    """Within the block, compute with the previous (slow, independent) kernels: the tests' oracle."""
    global _use_reference
    saved, _use_reference = _use_reference, True
    try:
        yield
    finally:
        _use_reference = saved


def _pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"{what} must be an int or a pair (y, x), got {v!r}")
    return v


def _padding4(p) -> tuple[int, int, int, int]:
    """int -> all sides; (py, px) -> symmetric; (top, left, bottom, right) as is."""
    if isinstance(p, (int, np.integer)):
        p = (int(p),) * 4
    p = tuple(int(a) for a in p)
    if len(p) == 2:
        p = (p[0], p[1], p[0], p[1])
    if len(p) != 4 or min(p) < 0:
        raise ValueError(f"padding must be an int, (py, px) or (top, left, bottom, right) >= 0, got {p!r}")
    return p


def _int_array(x, name: str, lo: int, hi: int, ndim: int | None = None, as_int64: bool = True) -> np.ndarray:
    """``x`` checked to be integers in ``[lo, hi]``, as int64, or arrays as they are (``as_int64=False``)."""
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if a.dtype == np.int8 and lo <= INT8_MIN and hi >= INT8_MAX and not as_int64:
        return a
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{name} values must lie in [{lo}, {hi}], got [{a.min()}, {a.max()}]")
    return a.astype(np.int64)


def _check_int8(v: int, name: str) -> int:
    if not (isinstance(v, (int, np.integer)) and INT8_MIN <= v <= INT8_MAX):
        raise ValueError(f"{name} must be an int8 value, got {v!r}")
    return int(v)


def conv_out_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int, dilation: int) -> int:
    """Output length along one axis: ``(size + pads - dilation * (kernel - 1) - 1) // stride + 1``."""
    span = size + pad_before + pad_after - dilation * (kernel - 1) - 1
    if span < 0:
        raise ValueError(f"kernel {kernel} (dilation {dilation}) does not fit an input of {size} "
                         f"with padding {pad_before}+{pad_after}")
    return span // stride + 1


def _conv_geometry(x, w, bias, zp_in, stride, padding, dilation):
    """Validated operands: ``(x, w, bias, zp_in, (sy, sx), (dy, dx), (t, l, b, r))``; int8 arrays stay int8."""
    x = _int_array(x, "x", INT8_MIN, INT8_MAX, 3, as_int64=False)
    w = _int_array(w, "w", INT8_MIN, INT8_MAX, 4, as_int64=False)
    zp_in = _check_int8(zp_in, "zp_in")
    bias = _int_array(bias, "bias", -(1 << 31), (1 << 31) - 1, 1)
    cout, cin, kh, kw = w.shape
    if x.shape[0] != cin:
        raise ValueError(f"input has {x.shape[0]} channels, weights expect {cin}")
    if bias.shape != (cout,):
        raise ValueError(f"bias has shape {bias.shape}, expected ({cout},)")
    sy, sx = _pair(stride, "stride")
    dy, dx = _pair(dilation, "dilation")
    if min(sy, sx, dy, dx) < 1:
        raise ValueError(f"stride {stride!r} and dilation {dilation!r} must be >= 1")
    t, l, b, r = _padding4(padding)
    conv_out_size(x.shape[1], kh, sy, t, b, dy)  # validates the geometry
    conv_out_size(x.shape[2], kw, sx, l, r, dx)
    taps = cin * kh * kw
    if taps * _PRODUCT_MAX + (1 << 31) >= _EXACT_LIMIT:
        raise ValueError(f"{taps} taps per output: float64 accumulation would not be exact")
    return x, w, bias, zp_in, (sy, sx), (dy, dx), (t, l, b, r)


def _reference_sums(x, w, zp_in, stride, dilation, pad4, bias_folded) -> np.ndarray:
    """The reference kernel: one float64 convolution (exact below 2**53), rounded to int64."""
    t, l, b, r = pad4
    xc = (x.astype(np.int64) if bias_folded else x.astype(np.int64) - zp_in).astype(np.float64)
    xt = F.pad(torch.from_numpy(xc)[None], (l, r, t, b), value=float(zp_in) if bias_folded else 0.0)
    acc = F.conv2d(xt, torch.from_numpy(w.astype(np.float64)), stride=stride, dilation=dilation)[0].numpy()
    return np.rint(acc).astype(np.int64)


def _fast_sums(x, weights: ConvWeights, zp_in, stride, dilation, pad4, bias_folded) -> tuple[torch.Tensor, int]:
    """Exact sums by :func:`quant.kernels.conv_sum`: centred input padded with 0, or raw input padded with zp_in."""
    t, l, b, r = pad4
    offset = 0 if bias_folded else zp_in
    xf, amp = to_float_input(x, offset)
    if amp * weights.max_abs_row >= F32_EXACT:  # the int8 range is too coarse a bound: take the data's
        xf, amp = to_float_input(x, offset, tight_bound=True)
    pad_value = zp_in if bias_folded else 0
    if pad_value == 0 and (t, l) == (b, r):
        return conv_sum(xf, amp, weights, stride=stride, dilation=dilation, padding=(t, l))
    if any(pad4):
        xf = F.pad(xf, (l, r, t, b), value=float(pad_value))
        amp = max(amp, abs(pad_value))
    return conv_sum(xf, amp, weights, stride=stride, dilation=dilation)


def conv_accumulate(x, w, bias, zp_in: int, *, stride=1, padding=0, dilation=1,
                    bias_folded: bool = False) -> np.ndarray:
    """The int32 accumulators of an integer convolution, before requantization.

    Parameters
    ----------
    x : array_like of int
        int8 input ``(Cin, H, W)``.
    w : array_like of int
        int8 weights ``(Cout, Cin, kh, kw)``.
    bias : array_like of int
        int32 ``(Cout,)``.
    zp_in : int
        Input zero point; padded taps read it.
    stride, dilation : int or (int, int)
    padding : int, (py, px) or (top, left, bottom, right)
    bias_folded : bool
        ``False`` (default): ``acc = sum((x - zp_in) * w) + bias``.
        ``True``: ``bias`` is the engine's effective bias
        (:func:`quant.arith.fold_zero_point`) and ``acc = sum(x * w) + bias``
        with padded taps reading ``zp_in``. Both give the same result for
        matching biases.

    Returns
    -------
    numpy.ndarray
        int64 ``(Cout, Ho, Wo)`` holding int32 values (wrapped modulo 2**32).
    """
    x, w, bias, zp_in, stride, dilation, pad4 = _conv_geometry(x, w, bias, zp_in, stride, padding, dilation)
    if _use_reference:
        sums = _reference_sums(x, w, zp_in, stride, dilation, pad4, bias_folded)
    else:
        sums, _ = _fast_sums(x, ConvWeights.from_int(w), zp_in, stride, dilation, pad4, bias_folded)
        sums = np.rint(sums.numpy()).astype(np.int64)
    return wrap_int32(sums + bias[:, None, None])


def _requant_params(cout: int, m0, shift, zp_out: int, act_min: int, act_max: int):
    """Validated requantization parameters, ``m0`` and ``shift`` broadcast to ``(cout,)`` int64."""
    m0 = _int_array(np.broadcast_to(np.asarray(m0), (cout,)), "m0", 0, (1 << 31) - 1, 1)
    shift = _int_array(np.broadcast_to(np.asarray(shift), (cout,)), "shift", 0, MAX_SHIFT, 1)
    zp_out = _check_int8(zp_out, "zp_out")
    act_min, act_max = _check_int8(act_min, "act_min"), _check_int8(act_max, "act_max")
    if act_min > act_max:
        raise ValueError(f"act_min {act_min} > act_max {act_max}")
    return m0, shift, zp_out, act_min, act_max


def _requant(acc: np.ndarray, m0, shift, zp_out: int, act_min: int, act_max: int) -> np.ndarray:
    """The integer requantizer of :mod:`quant.arith` on int32 accumulators ``(C, H, W)``."""
    m0, shift, zp_out, act_min, act_max = _requant_params(acc.shape[0], m0, shift, zp_out, act_min, act_max)
    out = requantize(acc, m0[:, None, None], shift[:, None, None], zp_out, act_min, act_max)
    return out.astype(np.int8)


def conv2d(x, w, bias, m0, shift, zp_in: int, zp_out: int, act_min: int = INT8_MIN,
           act_max: int = INT8_MAX, *, stride=1, padding=0, dilation=1,
           bias_folded: bool = False, _prepared=None) -> np.ndarray:
    """Integer 2-D convolution: int8 ``(Cin, H, W)`` -> int8 ``(Cout, Ho, Wo)``.

    ``out[c] = clamp(zp_out + rdbpot(srdhm(acc[c], m0[c]), shift[c]), act_min, act_max)``
    with ``acc`` from :func:`conv_accumulate` (``sum((x - zp_in) * w) + bias``,
    wrapped to int32, padding feeding ``zp_in``).

    Parameters
    ----------
    x, w, bias, zp_in, stride, padding, dilation, bias_folded
        As in :func:`conv_accumulate`.
    m0, shift : int or array_like of int
        Per output channel (or one value for all): multiplier in ``[0, 2**31)``
        and right shift in ``[0, 31]``.
    zp_out : int
        Output zero point.
    act_min, act_max : int
        Output clamp (ReLU: ``act_min = zp_out``).

    Raises
    ------
    ValueError, TypeError
        On out-of-range values, non-integer arrays or inconsistent shapes.
    """
    if _use_reference:
        acc = conv_accumulate(x, w, bias, zp_in, stride=stride, padding=padding, dilation=dilation,
                              bias_folded=bias_folded)
        return _requant(acc, m0, shift, zp_out, act_min, act_max)
    x, w, bias, zp_in, stride, dilation, pad4 = _conv_geometry(x, w, bias, zp_in, stride, padding, dilation)
    weights, requant = _prepared if _prepared is not None else prepare_conv(w, bias, m0, shift, zp_out, act_min,
                                                                            act_max)
    sums, bound = _fast_sums(x, weights, zp_in, stride, dilation, pad4, bias_folded)
    return requant(sums, bound, channels_last=True)


def prepare_conv(w, bias, m0, shift, zp_out: int, act_min: int, act_max: int) -> tuple[ConvWeights, Requantizer]:
    """A convolution's constants in the fast kernels' form (float weights, requantization bounds), validated."""
    w = _int_array(w, "w", INT8_MIN, INT8_MAX, 4, as_int64=False)
    bias = _int_array(bias, "bias", -(1 << 31), (1 << 31) - 1, 1)
    m0, shift, zp_out, act_min, act_max = _requant_params(w.shape[0], m0, shift, zp_out, act_min, act_max)
    return ConvWeights.from_int(w), Requantizer(bias, m0, shift, zp_out, act_min, act_max)


def dual_conv(a, b, wa, wb, bias, m0, shift, zp_a: int, zp_b: int, zp_out: int, act_min: int = INT8_MIN,
              act_max: int = INT8_MAX, *, stride=1, padding=0, dilation=1, _prepared=None) -> np.ndarray:
    """Two convolutions summed in one accumulator, requantized once (the RFB shortcut add).

    ``acc = wrap_int32(sum((a - zp_a) * wa) + sum((b - zp_b) * wb) + bias)``, then
    as :func:`conv2d`. Equivalent to one convolution over the channel
    concatenation ``[a; b]`` with weights ``[wa, wb]`` when each part is padded
    with its own zero point.
    """
    if _use_reference:
        acc_a = conv_accumulate(a, wa, np.zeros(np.shape(wa)[0], np.int64), zp_a, stride=stride, padding=padding,
                                dilation=dilation)
        acc_b = conv_accumulate(b, wb, bias, zp_b, stride=stride, padding=padding, dilation=dilation)
        if acc_a.shape != acc_b.shape:
            raise ValueError(f"the two convolutions give different output shapes {acc_a.shape} and {acc_b.shape}")
        return _requant(wrap_int32(acc_a + acc_b), m0, shift, zp_out, act_min, act_max)
    zeros = np.zeros(np.shape(wa)[0], np.int64)
    a, wa, _, zp_a, st, dil, pad4 = _conv_geometry(a, wa, zeros, zp_a, stride, padding, dilation)
    b, wb, bias, zp_b, _, _, _ = _conv_geometry(b, wb, bias, zp_b, stride, padding, dilation)
    if _prepared is None:
        _prepared = (ConvWeights.from_int(wa), *prepare_conv(wb, bias, m0, shift, zp_out, act_min, act_max))
    weights_a, weights_b, requant = _prepared
    sa, bound_a = _fast_sums(a, weights_a, zp_a, st, dil, pad4, False)
    sb, bound_b = _fast_sums(b, weights_b, zp_b, st, dil, pad4, False)
    if sa.shape != sb.shape:
        raise ValueError(f"the two convolutions give different output shapes {sa.shape} and {sb.shape}")
    bound = bound_a + bound_b
    # Exact: float32 while the sum of the two bounds stays below 2**24, float64 (below 2**53) otherwise.
    dtype = torch.float32 if bound < F32_EXACT else torch.float64
    return requant(sa.to(dtype) + sb.to(dtype), bound, channels_last=True)


def maxpool2d(x, kernel, stride=None, padding=0, ceil_mode: bool = False) -> np.ndarray:
    """Max pool on int8 ``(C, H, W)``, PyTorch semantics.

    Output size from :func:`quant.graph.maxpool_out_size` (floor, or ceil with
    the last window required to start inside the input or the left padding).
    Padding and the ceil-mode overhang are never taken as a maximum: every
    window holds at least one real pixel. ``padding`` is ``(py, px)`` on both
    sides and at most half the kernel.
    """
    x = _int_array(x, "x", INT8_MIN, INT8_MAX, 3, as_int64=_use_reference)
    kh, kw = _pair(kernel, "kernel")
    sy, sx = _pair(kernel if stride is None else stride, "stride")
    py, px = _pair(padding, "padding")
    if min(kh, kw, sy, sx) < 1 or py * 2 > kh or px * 2 > kw or min(py, px) < 0:
        raise ValueError(f"bad max pool kernel={kernel!r} stride={stride!r} padding={padding!r}")
    c, h, w = x.shape
    ho = maxpool_out_size(h, kh, sy, py, ceil_mode)
    wo = maxpool_out_size(w, kw, sx, px, ceil_mode)
    if not _use_reference:
        return maxpool_int8(x.astype(np.int8, copy=False), kh, kw, sy, sx, py, px, ho, wo)
    # Pad with a value below int8 on every side far enough for the last window.
    ext_h = (ho - 1) * sy + kh
    ext_w = (wo - 1) * sx + kw
    buf = np.full((c, max(ext_h, h + py), max(ext_w, w + px)), INT8_MIN - 1, dtype=np.int64)
    buf[:, py:py + h, px:px + w] = x
    win = np.lib.stride_tricks.sliding_window_view(buf, (kh, kw), axis=(1, 2))[:, ::sy, ::sx][:, :ho, :wo]
    out = win.max(axis=(3, 4))
    if out.min(initial=INT8_MIN) < INT8_MIN:  # pragma: no cover - excluded by the size rule
        raise AssertionError("a max-pool window held only padding")
    return out.astype(np.int8)


def global_avgpool(x, m0: int, shift: int, zp_in: int, zp_out: int, act_min: int = INT8_MIN,
                   act_max: int = INT8_MAX) -> np.ndarray:
    """Average every channel over all pixels: int8 ``(C, H, W)`` -> int8 ``(C, 1, 1)``.

    ``out[c] = clamp(zp_out + rdbpot(srdhm(wrap_int32(sum(x[c] - zp_in)), m0), shift), act_min, act_max)``,
    where ``(m0, shift)`` encodes ``s_in / (H * W * s_out)``.
    """
    x = _int_array(x, "x", INT8_MIN, INT8_MAX, 3, as_int64=False)
    zp_in = _check_int8(zp_in, "zp_in")
    acc = wrap_int32(x.sum(axis=(1, 2), dtype=np.int64) - zp_in * x.shape[1] * x.shape[2])[:, None, None]
    return _requant(acc, m0, shift, zp_out, act_min, act_max)


def concat(xs: Sequence[np.ndarray]) -> np.ndarray:
    """Channel concatenation of int8 tensors that share one scale and zero point (pure placement).

    The result is a ``(C, H, W)`` view of channels-last memory, the layout the fast kernels read.
    """
    hwc = [np.asarray(x, dtype=np.int8).transpose(1, 2, 0) for x in xs]
    return np.concatenate(hwc, axis=2).transpose(2, 0, 1)


#: Per graph node, its constants prepared for the fast kernels (dropped with the node).
_prepared_nodes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _node_prepared(node):
    """A graph node's :func:`prepare_conv` constants (both weight sets of a dual convolution), made once."""
    prep = _prepared_nodes.get(node)
    if prep is None:
        if isinstance(node, QDualConv):
            w_a = _int_array(node.weight_a, "w", INT8_MIN, INT8_MAX, 4, as_int64=False)
            prep = (ConvWeights.from_int(w_a), *prepare_conv(node.weight_b, node.bias, node.m0, node.shift,
                                                             node.zp_out, node.act_min, node.act_max))
        else:
            prep = prepare_conv(node.weight, node.bias, node.m0, node.shift, node.zp_out, node.act_min,
                                node.act_max)
        _prepared_nodes[node] = prep
    return prep


def run_conv(x, node: QConv) -> np.ndarray:
    """Run one :class:`~quant.quantize.QConv` node on int8 ``x``."""
    return conv2d(x, node.weight, node.bias, node.m0, node.shift, node.zp_in, node.zp_out, node.act_min,
                  node.act_max, stride=node.stride, padding=node.padding, dilation=node.dilation,
                  _prepared=None if _use_reference else _node_prepared(node))


def _run_dual(a, b, node: QDualConv) -> np.ndarray:
    return dual_conv(a, b, node.weight_a, node.weight_b, node.bias, node.m0, node.shift, node.zp_a, node.zp_b,
                     node.zp_out, node.act_min, node.act_max, stride=node.stride, padding=node.padding,
                     dilation=node.dilation, _prepared=None if _use_reference else _node_prepared(node))


def fire(x, squeeze: QConv, expand1x1: QConv, expand3x3: QConv) -> np.ndarray:
    """A Fire module: ``concat(expand1x1(s), expand3x3(s))`` with ``s = squeeze(x)``.

    The expand convolutions must share their output zero point (and, in the
    quantizer, scale): the concat is then a placement.

    Raises
    ------
    ValueError
        When the expand layers' output zero points differ or they do not read
        the squeeze output's zero point.
    """
    if expand1x1.zp_out != expand3x3.zp_out:
        raise ValueError(f"expand1x1 and expand3x3 output zero points differ ({expand1x1.zp_out} vs "
                         f"{expand3x3.zp_out}): their concat would need a rescale")
    if not (expand1x1.zp_in == expand3x3.zp_in == squeeze.zp_out):
        raise ValueError(f"expand layers read zero points {expand1x1.zp_in}/{expand3x3.zp_in}, the squeeze "
                         f"writes {squeeze.zp_out}")
    s = run_conv(x, squeeze)
    return concat([run_conv(s, expand1x1), run_conv(s, expand3x3)])


def run(qgraph: QGraph, x) -> dict[str, np.ndarray]:
    """Run a whole quantized network on an int8 input.

    Parameters
    ----------
    qgraph : QGraph
    x : array_like of int
        int8 input ``(C, H, W)`` (a leading batch dimension of 1 is accepted).

    Returns
    -------
    dict
        Tensor name -> int8 array for every integer tensor (input included),
        without batch dimension. Host ops (float) are not run; see :func:`infer`.
    """
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    vals: dict[str, np.ndarray] = {}
    for node in qgraph.nodes:
        ins = [vals[i] for i in node.inputs] if not isinstance(node, HostOp) else []
        if isinstance(node, QInput):
            y = _int_array(x, "input", INT8_MIN, INT8_MAX).astype(np.int8)
            if y.shape != tuple(node.shape):
                raise ValueError(f"input shape {y.shape} does not match the graph's {tuple(node.shape)}")
        elif isinstance(node, QConv):
            y = run_conv(ins[0], node)
        elif isinstance(node, QDualConv):
            y = _run_dual(ins[0], ins[1], node)
        elif isinstance(node, QMaxPool):
            y = maxpool2d(ins[0], node.kernel, node.stride, node.padding, node.ceil_mode)
        elif isinstance(node, QGlobalAvgPool):
            y = global_avgpool(ins[0], node.m0, node.shift, node.zp_in, node.zp_out, node.act_min,
                               node.act_max)
        elif isinstance(node, QConcat):
            y = concat(ins)
        elif isinstance(node, QFlatten):
            y = ins[0].reshape(-1)
        elif isinstance(node, HostOp):
            continue
        else:  # pragma: no cover
            raise TypeError(f"{node.name}: unknown node type {type(node).__name__}")
        if tuple(y.shape) != tuple(node.shape):  # pragma: no cover - shapes come from the float trace
            raise AssertionError(f"{node.name}: golden shape {y.shape} != traced shape {node.shape}")
        vals[node.name] = y
    return vals


def quantize_input(x, qparams: QParams) -> np.ndarray:
    """Float -> int8: ``clamp(round(x / scale) + zero_point, -128, 127)``, ties away from zero.

    ``x`` is a float tensor or array ``(C, H, W)`` or ``(1, C, H, W)``; the
    result has no batch dimension.
    """
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"the golden model runs one image at a time, got batch {a.shape[0]}")
        a = a[0]
    q = round_half_away(a.astype(np.float64) / qparams.scale) + qparams.zero_point
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize(q, qparams: QParams) -> np.ndarray:
    """int8 -> float32: ``scale * (q - zero_point)``."""
    return (qparams.scale * (np.asarray(q, dtype=np.float64) - qparams.zero_point)).astype(np.float32)


class _Dequantized(dict):
    """Tensor name -> batched float tensor, each integer tensor dequantized when first asked for."""

    def __init__(self, qgraph: QGraph, ints: dict[str, np.ndarray]):
        super().__init__()
        self.qgraph, self.ints = qgraph, ints

    def __missing__(self, name: str):
        value = self[name] = torch.from_numpy(dequantize(self.ints[name], self.qgraph.qparams(name)))[None]
        return value


def infer(qgraph: QGraph, x) -> list:
    """End to end on one image: quantize the float input, run the integer graph, dequantize, run host ops.

    Returns the graph outputs in order, as float32 torch tensors with a batch
    dimension of 1 (non-tensor host results as they are).
    """
    q_in = quantize_input(x, qgraph.qparams(qgraph.inputs[0]))
    vals = _Dequantized(qgraph, run(qgraph, q_in))
    for node in qgraph.nodes:
        if isinstance(node, HostOp):
            vals[node.name] = node.evaluate(vals)
    return [vals[o] for o in qgraph.outputs]
