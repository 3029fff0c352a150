"""Fast kernels for the golden model that stay exact: float convolutions with checked bounds, float requantization.

The golden model's arithmetic is integer (:mod:`quant.arith`); these kernels
compute the same integers with floating-point hardware, and each one checks,
at run time and from cheap quantities, the bound that makes it exact.

Convolution sums (:func:`conv_sum`)
    Every product ``x * w`` is an integer and every partial sum of one output
    is bounded by ``B = amp * max_c sum_taps |w[c]|``, where ``amp`` bounds
    ``|x|`` (read off the input's minimum and maximum) and the weight sum is
    taken over the output channel's taps. A binary float adds two integers
    exactly while the result stays below ``2**24`` (float32) or ``2**53``
    (float64) in magnitude, whatever order the kernel sums in, so:

    * ``B < 2**24``: one float32 convolution (``torch.nn.functional.conv2d``
      on a batch of one: oneDNN's direct convolution or im2col + GEMM, which
      only multiply and add; PyTorch picks NNPACK, whose Winograd/FFT kernels
      would not be exact, only for batches of 16 or more, and
      :func:`_conv` asserts the batch of one) -- checked in :func:`conv_sum`;
    * otherwise the input channels are split into groups whose own bound is
      below ``2**24``, each group a float32 convolution, the groups added in
      float64 (exact: ``B < 2**53`` is required);
    * a group of one channel still over ``2**24``: one float64 convolution.

    ``B >= 2**53`` (about ``2.7e11`` taps) is refused.

Requantization (:class:`Requantizer`)
    ``out = clamp(zp + rdbpot(srdhm(acc, m0), e), lo, hi)`` with
    ``acc = wrap_int32(sum + bias)`` is, for ``m0 >= 0``, a non-decreasing step
    function of ``acc`` (steps of at most one). With ``srdhm(a, m0) =
    floor((a*m0 + 2**30) / 2**31)`` (gemmlowp's nudge and truncation, written
    as one floor) and ``rdbpot(x, e) = floor((x + h - [x < 0 and e > 0]) / 2**e)``
    (``h = 2**(e-1)``, or 0 for ``e = 0``) the two floors nest into one:

    ``out = clamp(floor((a*m0 + 2**30 + (h - n)*2**31 + zp*2**(31+e)) / 2**(31+e)), lo, hi)``

    with ``n = 1`` only when ``e > 0`` and ``a*m0 + 2**30 < 0``. The kernel first
    clips ``a`` to ``[A_lo, A_hi]``, the last accumulator that gives ``lo`` and
    the first that gives ``hi`` (found once per layer by bisection with the
    integer :func:`quant.arith.requantize`, so the clip never changes the
    result); then every intermediate is an integer times ``2**-(31+e)`` below
    ``2**53`` times that unit, and float64 computes it exactly -- checked in
    :meth:`Requantizer.plan_exact`. When the input may wrap modulo ``2**32``
    (``B + |bias| >= 2**31``) or the float64 bound does not hold, the integer
    path of :mod:`quant.arith` is used instead.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
import torch.nn.functional as F

from .arith import requantize, wrap_int32

__all__ = ["F32_EXACT", "F64_EXACT", "ConvWeights", "Requantizer", "conv_sum", "hwc_tensor", "maxpool_int8",
           "to_float_input"]

#: Integers of magnitude below these are exact in float32 / float64, and so is every sum that stays below.
F32_EXACT = 1 << 24
F64_EXACT = 1 << 53
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1


@dataclasses.dataclass
class ConvWeights:
    """Integer weights ``(Cout, Cin, kh, kw)`` ready for :func:`conv_sum`: float copies and the bounds' sums."""

    w32: torch.Tensor            # float32 copy
    abs_rows: np.ndarray         # (Cout,) sum over all taps of |w|
    abs_per_cin: np.ndarray      # (Cout, Cin) sum over the kernel window of |w|
    _w64: torch.Tensor | None = None

    @classmethod
    def from_int(cls, w: np.ndarray) -> ConvWeights:
        """From int8 weights ``(Cout, Cin, kh, kw)`` (the float32 copy channels-last, as oneDNN reads it)."""
        w = np.asarray(w)
        a = np.abs(w.astype(np.int64))
        w32 = torch.from_numpy(w.astype(np.float32)).contiguous(memory_format=torch.channels_last)
        return cls(w32=w32, abs_rows=a.reshape(a.shape[0], -1).sum(axis=1), abs_per_cin=a.sum(axis=(2, 3)))

    @property
    def w64(self) -> torch.Tensor:
        """float64 copy, made on first use (only the float64 fallback needs it)."""
        if self._w64 is None:
            self._w64 = self.w32.double()
        return self._w64

    @functools.cached_property
    def max_abs_row(self) -> int:
        """``max_c sum_taps |w[c]|``: with the input's ``amp``, the bound on every partial sum."""
        return int(self.abs_rows.max(initial=0))


def to_float_input(x: np.ndarray, offset: int, tight_bound: bool = False) -> tuple[torch.Tensor, int]:
    """``x - offset`` as a float32 ``(1, C, H, W)`` channels-last tensor and a bound ``amp >= |x - offset|``.

    ``amp`` comes from the int8 range (``tight_bound=False``) or from the data's
    minimum and maximum. Channels-last is the layout oneDNN's convolutions are
    fastest on (several times on a 3-channel input); the values are the same.
    """
    x = np.asarray(x)  # any layout: a channels-last view converts without a transpose
    if tight_bound or x.dtype != np.int8:
        amp = max(abs(int(x.min(initial=0)) - offset), abs(int(x.max(initial=0)) - offset)) if x.size else 0
    else:
        amp = max(abs(-128 - offset), abs(127 - offset))
    hwc = np.ascontiguousarray(x.transpose(1, 2, 0), dtype=np.float32)
    if offset:
        hwc -= np.float32(offset)
    return hwc_tensor(hwc), amp


def hwc_tensor(hwc: np.ndarray) -> torch.Tensor:
    """A float32 ``(H, W, C)`` array as the channels-last ``(1, C, H, W)`` tensor over the same memory."""
    return torch.from_numpy(hwc).permute(2, 0, 1)[None]


def _conv(xf: torch.Tensor, w: torch.Tensor, stride, dilation, padding) -> torch.Tensor:
    """``conv2d`` of one picture (never NNPACK: PyTorch uses it for batches of 16 and more only)."""
    assert xf.shape[0] == 1, "one picture at a time keeps NNPACK's inexact transforms out"
    return F.conv2d(xf, w, stride=stride, dilation=dilation, padding=padding)


def _channel_groups(abs_per_cin: np.ndarray, amp: int) -> list[tuple[int, int]] | None:
    """Consecutive input-channel ranges whose per-output bound stays below ``2**24`` (None: one channel is over)."""
    groups, start, acc = [], 0, np.zeros(abs_per_cin.shape[0], np.int64)
    for ci in range(abs_per_cin.shape[1]):
        col = abs_per_cin[:, ci] * amp
        if col.max(initial=0) >= F32_EXACT:
            return None
        if (acc + col).max(initial=0) >= F32_EXACT:
            groups.append((start, ci))
            start, acc = ci, np.zeros_like(acc)
        acc += col
    groups.append((start, abs_per_cin.shape[1]))
    return groups


def conv_sum(xf: torch.Tensor, amp: int, weights: ConvWeights, *, stride=(1, 1), dilation=(1, 1),
             padding=(0, 0)) -> tuple[torch.Tensor, int]:
    """Exact integer convolution sums ``sum(x * w)`` of a float input holding integers.

    ``xf`` is ``(1, Cin, H, W)`` float32 with ``|x| <= amp``; ``padding`` is
    symmetric ``(py, px)`` and feeds zeros. Returns ``(sums, bound)``: sums
    ``(Cout, Ho, Wo)``, a float32 (``bound < 2**24``) or float64 tensor (in
    any memory layout), every value an exact integer, and ``bound`` the proven
    bound on every partial sum.

    Raises
    ------
    ValueError
        When the bound reaches ``2**53`` (no float format would be exact).
    """
    bound = amp * weights.max_abs_row
    if bound >= F64_EXACT:
        raise ValueError(f"convolution sums may reach {bound} >= 2**53: float64 accumulation would not be exact")
    if bound < F32_EXACT:  # one float32 convolution: every partial sum below 2**24
        return _conv(xf, weights.w32, stride, dilation, padding)[0], bound
    groups = _channel_groups(weights.abs_per_cin, amp)
    if groups is None:  # a single channel's window reaches 2**24: float64 throughout (bound < 2**53)
        return _conv(xf.double(), weights.w64, stride, dilation, padding)[0], bound
    total = None
    for a, b in groups:  # each group's partial sums stay below 2**24; their sum below 2**53 in float64
        part = _conv(xf[:, a:b], weights.w32[:, a:b], stride, dilation, padding)[0].double()
        total = part if total is None else total.add_(part)
    return total, bound


class Requantizer:
    """Per-channel requantization of exact float sums to int8, one layer's constants prepared once.

    Parameters
    ----------
    bias, m0, shift : array_like of int, shape ``(C,)``
        int32 bias added to the sums, multiplier in ``[0, 2**31)``, shift in ``[0, 31]``.
    zp_out, lo, hi : int
        Output zero point and clamp.
    """

    def __init__(self, bias, m0, shift, zp_out: int, lo: int, hi: int):
        self.bias = np.asarray(bias, dtype=np.int64).reshape(-1)
        self.m0 = np.asarray(m0, dtype=np.int64).reshape(-1)
        self.shift = np.asarray(shift, dtype=np.int64).reshape(-1)
        self.zp_out, self.lo, self.hi = int(zp_out), int(lo), int(hi)
        c = len(self.bias)
        self.a_lo = self._bisect(lambda a: requantize(a, self.m0, self.shift, zp_out, lo, hi) <= lo, c)
        self.a_hi = self._bisect(lambda a: requantize(a, self.m0, self.shift, zp_out, lo, hi) < hi, c) + 1
        self.max_abs_bias = int(np.abs(self.bias).max(initial=0))
        self._plans: dict[int, tuple | None] = {}

    @staticmethod
    def _bisect(pred, c: int) -> np.ndarray:
        """Per channel, the largest int32 ``a`` with ``pred(a)`` true (``pred`` monotone: true then false).

        ``INT32_MIN - 1`` when it is false everywhere, ``INT32_MAX`` when true everywhere.
        """
        lo = np.full(c, _I32_MIN - 1, np.int64)  # pred(lo) true by convention
        hi = np.full(c, _I32_MAX + 1, np.int64)  # pred(hi) false by convention
        while True:
            open_ = hi - lo > 1
            if not open_.any():
                return lo
            mid = (lo + hi) // 2
            ok = pred(np.where(open_, mid, 0))
            lo = np.where(open_ & ok, mid, lo)
            hi = np.where(open_ & ~ok, mid, hi)

    def plan_exact(self, bound: int) -> tuple | None:
        """The float64 constants for sums bounded by ``bound``, or None when float64 would not be exact.

        Checks: ``bound + |bias| < 2**31`` (no int32 wrap), and after clipping to
        ``[A_lo, A_hi]``, ``|a*m0| + |bias*m0 + 2**30 + (h+1)*2**31 + |zp|*2**(31+e)| < 2**53``.
        """
        if bound in self._plans:
            return self._plans[bound]
        plan = None
        if bound + self.max_abs_bias < 1 << 31:
            # Clip bounds on the sum (before the bias), limited to what the sums can reach.
            lo_s = np.clip(self.a_lo - self.bias, -bound, bound)
            hi_s = np.clip(self.a_hi - self.bias, -bound, bound)
            e = self.shift
            half = np.where(e > 0, np.left_shift(1, np.maximum(e - 1, 0)), 0)
            # The integer constants, in Python ints (no overflow): see the module docstring's formula.
            d0 = [int(b) * int(m) + (1 << 30) for b, m in zip(self.bias, self.m0, strict=True)]
            ek = [int(h) * (1 << 31) + (self.zp_out << (31 + int(ee))) for h, ee in zip(half, e, strict=True)]
            worst = max((max(abs(int(lo)), abs(int(hi))) * int(m) + abs(d) + abs(x) + (1 << 31)
                         for m, lo, hi, d, x in zip(self.m0, lo_s, hi_s, d0, ek, strict=True)), default=0)
            if worst < F64_EXACT:
                scale = np.ldexp(1.0, -(31 + e).astype(np.int32))          # 2**-(31+e), exact
                col = [torch.from_numpy(np.asarray(v, np.float64).reshape(-1, 1, 1)) for v in (
                    lo_s, hi_s,
                    self.m0 * scale,                                  # m0 * 2**-(31+e), exact
                    np.array(d0, np.float64) * scale,
                    np.array(ek, np.float64) * scale,
                    np.array([d + x for d, x in zip(d0, ek, strict=True)], np.float64) * scale,
                    np.where(e > 0, 2.0 ** 31, 0.0) * scale)]
                # The clip bounds in each sums format: exact in float32 too, as |bounds| <= bound < 2**24 there.
                clip = {torch.float64: (col[0], col[1]), torch.float32: (col[0].float(), col[1].float())}
                plan = (clip, *col[2:])
        self._plans[bound] = plan
        return plan

    def __call__(self, sums, bound: int, *, channels_last: bool = False) -> np.ndarray:
        """int8 ``(C, H, W)`` from exact sums ``(C, H, W)`` whose partial sums stay below ``bound``.

        ``sums`` is a float tensor or array in any memory layout. The result is
        C-contiguous, or with ``channels_last`` a ``(C, H, W)`` view of
        contiguous ``(H, W, C)`` memory.
        """
        sums = torch.as_tensor(sums)
        plan = self.plan_exact(bound) if sums.is_floating_point() else None
        if plan is None:
            acc = wrap_int32(np.rint(sums.numpy()).astype(np.int64) + self.bias[:, None, None])
            out = requantize(acc, self.m0[:, None, None], self.shift[:, None, None], self.zp_out, self.lo, self.hi)
            if channels_last:
                return np.ascontiguousarray(out.transpose(1, 2, 0), dtype=np.int8).transpose(2, 0, 1)
            return np.ascontiguousarray(out, dtype=np.int8)
        clip, mk, d0k, ek, d0ek, nk = plan
        # Exact: the clip bounds are integers below ``bound`` (so exact in the sums' format), and every value
        # after it is an integer times 2**-(31+e) of magnitude below 2**53 units (plan_exact).
        if sums.dtype not in clip or (sums.dtype == torch.float32 and bound >= F32_EXACT):
            raise ValueError(f"{sums.dtype} sums with bound {bound}: not an exact integer representation")
        lo_s, hi_s = clip[sums.dtype]
        v = torch.clamp(sums, lo_s, hi_s).double()
        v.mul_(mk)
        if self.lo < self.zp_out:
            # rdbpot's negative branch (a*m0 + 2**30 < 0); with lo >= zp those outputs clamp to lo anyway.
            v.add_(d0k)
            v.sub_((v < 0) * nk)
            v.add_(ek)
        else:
            v.add_(d0ek)  # exact: an integer multiple of the unit below 2**53 units
        v.floor_().clamp_(self.lo, self.hi)
        q = v.to(torch.int8)
        if channels_last:
            return np.ascontiguousarray(q.permute(1, 2, 0).numpy()).transpose(2, 0, 1)
        return np.ascontiguousarray(q.numpy())


def maxpool_int8(x: np.ndarray, kh: int, kw: int, sy: int, sx: int, pad_t: int, pad_l: int, out_h: int,
                 out_w: int) -> np.ndarray:
    """Max pool of int8 ``(C, H, W)`` with explicit output size; padding and overhang are never the maximum.

    The result keeps the input's memory layout (a channels-last input gives a
    channels-last ``(C, Ho, Wo)`` view).

    Raises
    ------
    ValueError
        When a window holds no input element.
    """
    c, h, w = x.shape
    need_h, need_w = (out_h - 1) * sy + kh, (out_w - 1) * sx + kw
    channels_last = x.strides[0] < x.strides[2]
    if pad_t == pad_l == 0 and need_h <= h and need_w <= w:
        src, empty = x, None
    else:
        empty = np.iinfo(np.int16).min
        shape = (c, max(need_h, pad_t + h), max(need_w, pad_l + w))
        src = (np.full(shape[1:] + shape[:1], empty, np.int16).transpose(2, 0, 1) if channels_last
               else np.full(shape, empty, np.int16))
        src[:, pad_t:pad_t + h, pad_l:pad_l + w] = x
    out = None
    for ky in range(kh):
        for kx in range(kw):
            win = src[:, ky:ky + sy * (out_h - 1) + 1:sy, kx:kx + sx * (out_w - 1) + 1:sx]
            out = win.copy(order="K") if out is None else np.maximum(out, win, out=out)
    if empty is not None:
        if (out == empty).any():
            raise ValueError("a pooling window holds no input element")
        out = out.astype(np.int8, order="K")
    return out
