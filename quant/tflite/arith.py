"""TensorFlow Lite's integer arithmetic, written from its reference sources, exact on numpy int64 arrays.

Sources (tflite-micro, tensorflow/lite/kernels/internal/): ``quantization_util.cc``
(QuantizeMultiplier, PreprocessSoftmaxScaling, CalculateInputRadius), ``common.cc``/``common.h``
(the double-rounding MultiplyByQuantizedMultiplier that tflite-micro builds by default,
``TFLITE_SINGLE_ROUNDING`` unset; GetReciprocal), ``kernel_util.cc`` (Quantize,
CalculateActivationRangeQuantized) and gemmlowp's ``fixedpoint/fixedpoint.h``
(exp_on_negative_values, one_over_one_plus_x_for_x_in_0_1, Rescale) for the int8 softmax.

The gemmlowp primitives SaturatingRoundingDoublingHighMul and RoundingDivideByPOT are the
project's own (:func:`quant.arith.srdhm`, :func:`quant.arith.rdbpot`): they are gemmlowp's.
:func:`quantize_multiplier` here differs from :func:`quant.arith.quantize_multiplier` in three
ways that matter for exactness with TFLite: it rounds ties away from zero (``std::round``, not
Python's ties-to-even), it accepts multipliers of one and more (a left shift, as softmax and
some rescalings need) and it flushes multipliers below ``2**-32`` to zero instead of keeping
fewer mantissa bits.

Every function takes Python ints or numpy integer arrays holding int32 values (as int64) and
returns int64 arrays (or ints); where C++ would wrap an int32 the result is wrapped
(:func:`quant.arith.wrap_int32`).
"""

from __future__ import annotations

import math

import numpy as np

from ..arith import rdbpot, srdhm, wrap_int32

__all__ = [
    "INT32_MIN", "INT32_MAX", "tflite_round", "quantize_multiplier", "multiply_by_quantized_multiplier",
    "quantize_value", "activation_range", "softmax_int8_params", "softmax_int8",
]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

#: TFLite's fused activation codes (schema ActivationFunctionType) that map to a clamp.
ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3


def tflite_round(x: float) -> int:
    """``std::round``: to nearest, ties away from zero (Python's ``round`` ties to even)."""
    r = math.floor(abs(x) + 0.5)
    return int(r if x >= 0 else -r)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier(double, int32* q, int* shift)``.

    Returns ``(q, exponent)`` with ``real ~= q * 2**(exponent - 31)``, ``q`` in
    ``[2**30, 2**31)`` (or 0); ``exponent > 0`` is a left shift. Multipliers below
    ``2**-32`` (exponent < -31) are flushed to ``(0, 0)``, as TFLite does.
    """
    real = float(real)
    if not math.isfinite(real):
        raise ValueError(f"requantization multiplier must be finite, got {real!r}")
    if real == 0.0:
        return 0, 0
    mant, exponent = math.frexp(real)
    q = tflite_round(mant * (1 << 31))  # exact: mant * 2**31 is a double with the same mantissa
    if q == (1 << 31):
        q //= 2
        exponent += 1
    if exponent < -31:
        return 0, 0
    return q, exponent


def multiply_by_quantized_multiplier(x, q, shift):
    """TFLite ``MultiplyByQuantizedMultiplier(int32 x, int32 q, int shift)`` (double rounding).

    ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2**left, q), right)`` with
    ``left = max(shift, 0)``, ``right = max(-shift, 0)``; ``x * 2**left`` wraps as an int32.
    ``q`` and ``shift`` may be arrays broadcasting against ``x`` (per channel, last axis).
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return rdbpot(srdhm(wrap_int32(x << left), np.asarray(q, dtype=np.int64)), right)


def quantize_value(real: float, scale: float, zero_point: int) -> int:
    """TFLite's ``Quantize(context, scale, zero_point, f, q)``: ``zp + round(float32(f / scale))``."""
    tmp = np.float32(real) / np.float32(scale)
    return int(zero_point) + tflite_round(float(tmp))


def activation_range(activation: int, scale: float, zero_point: int, qmin: int = -128,
                     qmax: int = 127) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized``: the int clamp of a fused NONE/RELU/RELU_N1_TO_1/RELU6."""
    if activation == ACT_NONE:
        return qmin, qmax
    if activation == ACT_RELU:
        return max(qmin, quantize_value(0.0, scale, zero_point)), qmax
    if activation == ACT_RELU6:
        return (max(qmin, quantize_value(0.0, scale, zero_point)),
                min(qmax, quantize_value(6.0, scale, zero_point)))
    if activation == ACT_RELU_N1_TO_1:
        return (max(qmin, quantize_value(-1.0, scale, zero_point)),
                min(qmax, quantize_value(1.0, scale, zero_point)))
    raise ValueError(f"fused activation {activation} is not a clamp")


# --- gemmlowp fixed point (int32 raw values held in int64 arrays) -------------------------------


def _add(a, b):
    return wrap_int32(np.asarray(a, dtype=np.int64) + b)


def _sub(a, b):
    return wrap_int32(np.asarray(a, dtype=np.int64) - b)


def _mul(a, b):
    """FixedPoint ``operator*``: SaturatingRoundingDoublingHighMul on the raw values."""
    return srdhm(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))


def _mul_pot(x, exponent: int):
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<exponent>``: saturating left or rounding right shift."""
    x = np.asarray(x, dtype=np.int64)
    if exponent == 0:
        return x
    if exponent < 0:
        return rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def _rounding_half_sum(a, b):
    """gemmlowp ``RoundingHalfSum`` for int32: ``(a + b + sign) / 2`` with C truncation."""
    s = np.asarray(a, dtype=np.int64) + b
    t = s + np.where(s >= 0, 1, -1)
    return np.where(t >= 0, t // 2, -((-t) // 2))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor expansion around -1/8)."""
    constant_term, one_third = 1895147668, 715827883
    x = _add(a, 1 << 28)
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    x4_over_4 = _mul_pot(x4, -2)
    poly = _mul_pot(_add(_mul(_add(x4_over_4, x3), one_third), x2), -1)
    return _add(constant_term, _mul(constant_term, _add(x, poly)))


#: gemmlowp's barrel shifter of exp_on_negative_values: (exponent, Q0.31 of exp(-2**exponent)).
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
               (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits: int):
    """gemmlowp ``exp_on_negative_values``: ``a`` in Q(integer_bits).(31-integer_bits), result Q0.31."""
    a = np.asarray(a, dtype=np.int64)
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    a_mod_quarter_minus_one_quarter = _sub(a & (one_quarter - 1), one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _mul_pot(a_mod_quarter_minus_one_quarter, integer_bits))  # Rescale<0>
    remainder = _sub(a_mod_quarter_minus_one_quarter, a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (frac_bits + exponent)
            result = np.where((remainder & bit) != 0, _mul(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp ``one_over_one_plus_x_for_x_in_0_1``: 1/(1+a), Q0.31 in and out (Newton-Raphson)."""
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    one_f2 = 1 << 29  # F2::One()
    x = _add(1515870810, _mul(half_denominator, -1010580540))  # 48/17 - 32/17 * d, in Q2.29
    for _ in range(3):
        half_denominator_times_x = _mul(half_denominator, x)
        one_minus = _sub(one_f2, half_denominator_times_x)
        x = _add(x, _mul_pot(_mul(x, one_minus), 2))  # Rescale<2> of an F4 product
    return _mul_pot(x, 1)  # Rescale<0>(ExactMulByPot<-1>(x))


def get_reciprocal(x, x_integer_digits: int):
    """TFLite ``GetReciprocal``: ``(shifted_scale Q0.31, num_bits_over_unit)`` for positive int32 ``x``."""
    x = np.asarray(x, dtype=np.int64)
    ux = x & 0xFFFF_FFFF
    headroom_plus_one = 32 - np.frexp(ux.astype(np.float64))[1].astype(np.int64)  # clz32 (uint32 exact in float64)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted_sum_minus_one = wrap_int32(((ux << headroom_plus_one) & 0xFFFF_FFFF) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


#: Integer bits of the scaled input differences (Q5.26) and of the sum of exponentials (Q12.19).
SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12


def softmax_int8_params(beta: float, input_scale: float) -> tuple[int, int, int]:
    """``(input_multiplier, input_left_shift, diff_min)`` as tflite-micro's CalculateSoftmaxParams.

    ``PreprocessSoftmaxScaling(beta, input_scale, 5)`` (double rounding build: cap ``2**31 - 1``)
    and ``diff_min = -CalculateInputRadius(5, input_left_shift, 31)``. Raises ``ValueError`` where
    TFLite's ``QuantizeMultiplierGreaterThanOne`` check would fail (a multiplier not above one).
    """
    real = min(float(beta) * float(input_scale) * float(1 << (31 - SCALED_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
    if not real > 1.0:
        raise ValueError(f"softmax input multiplier {real!r} is not above one (beta {beta}, "
                         f"input scale {input_scale})")
    q, left_shift = quantize_multiplier(real)
    radius = math.floor(1.0 * ((1 << SCALED_DIFF_INTEGER_BITS) - 1) * (1 << (31 - SCALED_DIFF_INTEGER_BITS))
                        / (1 << left_shift))
    return q, left_shift, -radius


def softmax_int8(x, input_multiplier: int, input_left_shift: int, diff_min: int) -> np.ndarray:
    """tflite-micro's int8 -> int8 softmax over the last axis (``reference_ops::Softmax``).

    Output zero point -128, scale 1/256 (the importer checks both).
    """
    x = np.asarray(x, dtype=np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    inside = diff >= diff_min
    # MultiplyByQuantizedMultiplierGreaterThanOne: srdhm(diff * 2**left_shift, multiplier).
    scaled = _mul(wrap_int32(diff << input_left_shift), input_multiplier)
    exps = exp_on_negative_values(scaled, SCALED_DIFF_INTEGER_BITS)
    rescaled = _mul_pot(exps, -ACCUMULATION_INTEGER_BITS)  # Rescale<12> of a Q0.31
    sum_of_exps = wrap_int32(np.where(inside, rescaled, 0).sum(axis=-1, keepdims=True))
    shifted_scale, num_bits_over_unit = get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS)
    exponent = num_bits_over_unit + 31 - 8
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError("softmax: reciprocal exponent outside [0, 31] (TFLite's TFLITE_CHECK fails)")
    unsat = rdbpot(_mul(shifted_scale, exps), exponent)
    out = np.clip(unsat - 128, -128, 127)
    return np.where(inside, out, -128).astype(np.int64)
