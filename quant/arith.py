"""The integer arithmetic of the engine: the one definition hw/, quant/ and sw/ all use.

Scheme (TFLite / CMSIS-NN integer-only inference, gemmlowp rounding):

* Activations are int8 with a per-tensor ``scale`` and ``zero_point``:
  ``real = scale * (q - zero_point)``.
* Weights are int8, symmetric (zero point 0) with one scale per output channel,
  in ``[-127, 127]``.
* Bias is int32 at scale ``s_in * s_w[c]``.
* A convolution accumulates ``sum((x - zp_in) * w) + bias`` in int32. The engine
  folds the input zero point into the bias (``bias - zp_in * sum(w)``), so the
  array multiplies raw int8 by int8; padding feeds ``zp_in`` so that a padded
  tap contributes exactly zero either way.
* Requantization: ``out = clamp(zp_out + rdbpot(srdhm(acc, m0), shift), lo, hi)``
  where ``m0`` is a 32-bit fixed-point multiplier in ``[2**30, 2**31)`` (or 0),
  ``shift`` a right shift in ``[0, MAX_SHIFT]``, ``srdhm`` gemmlowp's
  SaturatingRoundingDoublingHighMul and ``rdbpot`` its RoundingDivideByPOT.
  ReLU is the clamp ``[zp_out, 127]``.

Every function here works on Python ints and on numpy int64 arrays alike and is
exact. The hardware requantizer (``hw/requant.py``) is tested bit-exactly
against :func:`requantize`.
"""

from __future__ import annotations

import math

import numpy as np

# The engine's arithmetic constants are defined with the gateware (hw.isa), the lower layer.
from hw.isa import ACC_BITS, INT8_MAX, INT8_MIN, MAX_SHIFT, MULT_BITS, WEIGHT_MAX

__all__ = [
    "ACC_BITS", "INT8_MIN", "INT8_MAX", "MULT_BITS", "MAX_SHIFT", "WEIGHT_MAX",
    "wrap_int32", "srdhm", "rdbpot", "requantize", "quantize_multiplier",
    "multiplier_to_float", "relu_bounds", "fold_zero_point",
]

_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1


def wrap_int32(x):
    """Reduce ``x`` modulo 2**32 into the signed int32 range (two's complement wrap)."""
    if isinstance(x, np.ndarray):
        x = x.astype(np.int64)
        return ((x + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)
    return ((int(x) + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)


def _trunc_div_pow2(x, n):
    """C-style integer division by 2**n (rounds toward zero)."""
    if isinstance(x, np.ndarray):
        return np.where(x >= 0, x >> n, -((-x) >> n))
    return x >> n if x >= 0 else -((-x) >> n)


def srdhm(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul(a, b)`` on int32 operands.

    ``(a * b + nudge) / 2**31`` with C truncating division, where ``nudge`` is
    ``2**30`` for a non-negative product and ``1 - 2**30`` otherwise; the single
    overflowing case ``a == b == INT32_MIN`` saturates to ``INT32_MAX``.
    """
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        ab = a * b  # |a*b| <= 2**62: fits int64
        nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
        res = _trunc_div_pow2(ab + nudge, 31)
        return np.where((a == _I32_MIN) & (b == _I32_MIN), _I32_MAX, res).astype(np.int64)
    a, b = int(a), int(b)
    if a == _I32_MIN and b == _I32_MIN:
        return _I32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _trunc_div_pow2(ab + nudge, 31)


def rdbpot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT(x, exponent)``: round half away from zero."""
    if isinstance(x, np.ndarray) or isinstance(exponent, np.ndarray):
        x = np.asarray(x, dtype=np.int64)
        e = np.asarray(exponent, dtype=np.int64)
        mask = (np.int64(1) << e) - 1
        remainder = x & mask
        threshold = (mask >> 1) + (x < 0)
        return (x >> e) + (remainder > threshold)
    x, e = int(x), int(exponent)
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def requantize(acc, m0, shift, zp_out, lo=INT8_MIN, hi=INT8_MAX):
    """int32 accumulator -> int8: ``clamp(zp_out + rdbpot(srdhm(acc, m0), shift), lo, hi)``.

    ``m0`` and ``shift`` may be per-channel arrays broadcasting against ``acc``.
    """
    if isinstance(acc, np.ndarray) or isinstance(m0, np.ndarray) or isinstance(shift, np.ndarray):
        y = rdbpot(srdhm(np.asarray(acc, dtype=np.int64), np.asarray(m0, dtype=np.int64)), shift)
        return np.clip(y + zp_out, lo, hi).astype(np.int64)
    y = rdbpot(srdhm(acc, m0), shift) + int(zp_out)
    return min(max(y, lo), hi)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Encode a real multiplier in ``[0, 1)`` as ``(m0, shift)`` with ``real ~= m0 * 2**-31 * 2**-shift``.

    ``m0`` lies in ``[2**30, 2**31)`` unless the multiplier is below
    ``2**-32``, where it keeps fewer bits. Multipliers too small for the 5-bit shift
    are encoded as ``(0, 0)`` (the output is then the zero point, which is what
    they round to anyway). Raises ``ValueError`` for ``real >= 1`` or negative
    values: the requantizer shifts right only, and the quantizer must choose
    scales that keep every multiplier below one.
    """
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"requantization multiplier must be a finite non-negative number, got {real!r}")
    if real >= 1.0:
        raise ValueError(f"requantization multiplier {real!r} is >= 1: the engine only shifts right")
    if real == 0.0:
        return 0, 0
    mant, exp = math.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    m0 = round(mant * (1 << 31))
    if m0 == (1 << 31):  # rounding carried into the next power of two
        m0 //= 2
        exp += 1
    shift = -exp
    if shift < 0:
        # real rounded up to 1.0 at 31 bits: the largest representable multiplier is the closest.
        return (1 << 31) - 1, 0
    if shift > MAX_SHIFT:
        # Below 2**-32 the output rounds to zero for any int32 accumulator up to 2**31.
        # Push the extra shift into the mantissa while it still holds bits.
        extra = shift - MAX_SHIFT
        m0 = (m0 + (1 << (extra - 1))) >> extra if extra < 32 else 0
        shift = MAX_SHIFT if m0 else 0
    return int(m0), int(shift)


def multiplier_to_float(m0: int, shift: int) -> float:
    """The real number that ``(m0, shift)`` stands for."""
    return m0 * 2.0 ** (-MULT_BITS - shift)


def relu_bounds(zp_out: int, relu: bool) -> tuple[int, int]:
    """The int8 clamp that implements a fused ReLU (or none)."""
    return (max(zp_out, INT8_MIN) if relu else INT8_MIN), INT8_MAX


def fold_zero_point(bias, w, zp_in):
    """Effective bias ``bias - zp_in * sum(w)`` per output channel (int32 wrap).

    With it the engine multiplies raw int8 activations by int8 weights:
    ``sum((x - zp_in) * w) + bias == sum(x * w) + fold_zero_point(bias, w, zp_in)``,
    padded taps included because padding feeds ``zp_in``.
    """
    w = np.asarray(w, dtype=np.int64)
    return wrap_int32(np.asarray(bias, dtype=np.int64) - int(zp_in) * w.reshape(w.shape[0], -1).sum(axis=1))
