"""quant.arith against independent big-integer references of gemmlowp's fixed-point primitives.

The references below are written from gemmlowp's C++ source
(``fixedpoint.h``: SaturatingRoundingDoublingHighMul, RoundingDivideByPOT) with
Python's unbounded integers and C's truncating division, and are cross-checked
against closed forms with :class:`fractions.Fraction`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from quant import arith

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1


# --- references --------------------------------------------------------------------------------


def c_div(n: int, d: int) -> int:
    """C integer division (truncates toward zero) on Python ints."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def ref_srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul, transcribed."""
    overflow = a == b and a == I32_MIN
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else (1 - (1 << 30))
    high = c_div(ab + nudge, 1 << 31)
    return I32_MAX if overflow else high


def ref_rdbpot(x: int, e: int) -> int:
    """gemmlowp RoundingDivideByPOT: x / 2**e rounded to nearest, ties away from zero (closed form)."""
    q = Fraction(x, 2 ** e)
    return math.floor(q + Fraction(1, 2)) if x >= 0 else math.ceil(q - Fraction(1, 2))


def ref_wrap(v: int) -> int:
    """int32 two's complement wrap via numpy's modular int64 -> int32 cast."""
    return int(np.array([v % 2 ** 64], dtype=np.uint64).astype(np.int64).astype(np.int32)[0])


def ref_requantize(acc: int, m0: int, shift: int, zp: int, lo: int = -128, hi: int = 127) -> int:
    return min(max(zp + ref_rdbpot(ref_srdhm(acc, m0), shift), lo), hi)


EDGE_I32 = [I32_MIN, I32_MIN + 1, -(2 ** 30) - 1, -(2 ** 30), -3, -2, -1, 0, 1, 2, 3, 2 ** 30, 2 ** 30 + 1,
            I32_MAX - 1, I32_MAX]


# --- srdhm -------------------------------------------------------------------------------------


def test_srdhm_reference_matches_closed_form(rng):
    # The transcription is floor(a*b / 2**31 + 1/2) (round half up) apart from the saturating corner.
    vals = EDGE_I32 + [int(v) for v in rng.integers(I32_MIN, I32_MAX, 200, endpoint=True)]
    for a in vals:
        for b in vals[:40]:
            if a == b == I32_MIN:
                continue
            assert ref_srdhm(a, b) == math.floor(Fraction(a * b, 2 ** 31) + Fraction(1, 2)), (a, b)


def test_srdhm_scalar_edges():
    for a in EDGE_I32:
        for b in EDGE_I32:
            assert arith.srdhm(a, b) == ref_srdhm(a, b), (a, b)
    assert arith.srdhm(I32_MIN, I32_MIN) == I32_MAX


def test_srdhm_ties():
    # b = 2**30 is one half: a * 1/2 is a tie for every odd a, positive and negative.
    for a in [1, 3, 5, -1, -3, -5, 2 ** 31 - 1, -(2 ** 31) + 1]:
        assert arith.srdhm(a, 2 ** 30) == ref_srdhm(a, 2 ** 30), a
    assert arith.srdhm(1, 2 ** 30) == 1      # +0.5 -> 1
    assert arith.srdhm(-1, 2 ** 30) == 0     # -0.5 -> 0 (nudge 1 - 2**30, then truncation)
    assert arith.srdhm(-3, 2 ** 30) == -1    # -1.5 -> -1


def test_srdhm_array_matches_reference(rng):
    a = np.concatenate([np.array(EDGE_I32), rng.integers(I32_MIN, I32_MAX, 5000, endpoint=True)])
    b = np.concatenate([np.array(EDGE_I32[::-1]), rng.integers(I32_MIN, I32_MAX, 5000, endpoint=True)])
    got = arith.srdhm(a, b)
    assert got.dtype == np.int64
    for x, y, g in zip(a.tolist(), b.tolist(), got.tolist(), strict=True):
        assert g == ref_srdhm(x, y), (x, y)


# --- rdbpot ------------------------------------------------------------------------------------


@pytest.mark.parametrize("e", list(range(0, 32)))
def test_rdbpot_ties_and_neighbours(e):
    xs = []
    for k in (-3, -2, -1, 0, 1, 2, 3):
        base = k * 2 ** e
        half = 2 ** (e - 1) if e > 0 else 0
        xs += [base, base + half - 1, base + half, base + half + 1]
        xs += [base - half - 1, base - half, base - half + 1]
    xs = [x for x in xs if I32_MIN <= x <= I32_MAX] + [I32_MIN, I32_MAX]
    for x in xs:
        assert arith.rdbpot(x, e) == ref_rdbpot(x, e), (x, e)
    got = arith.rdbpot(np.array(xs, dtype=np.int64), e)
    assert got.tolist() == [ref_rdbpot(x, e) for x in xs]


def test_rdbpot_known_values():
    # Hand-computed: ties round away from zero.
    assert [arith.rdbpot(v, 1) for v in (3, -3, 1, -1, 2, -2)] == [2, -2, 1, -1, 1, -1]
    assert [arith.rdbpot(v, 2) for v in (5, 6, -5, -6, 7, -7)] == [1, 2, -1, -2, 2, -2]


def test_rdbpot_array_random(rng):
    x = rng.integers(I32_MIN, I32_MAX, 4000, endpoint=True)
    e = rng.integers(0, 32, 4000)
    got = arith.rdbpot(x, e)
    assert got.tolist() == [ref_rdbpot(int(a), int(b)) for a, b in zip(x, e, strict=True)]


# --- requantize, wrap, zero-point folding -----------------------------------------------------


def test_requantize_matches_reference(rng):
    acc = rng.integers(I32_MIN, I32_MAX, 3000, endpoint=True)
    m0 = rng.integers(2 ** 30, 2 ** 31, 3000)
    shift = rng.integers(0, 32, 3000)
    zp = -7
    got = arith.requantize(acc, m0, shift, zp, -100, 120)
    want = [ref_requantize(int(a), int(m), int(s), zp, -100, 120)
            for a, m, s in zip(acc, m0, shift, strict=True)]
    assert got.tolist() == want
    for a, m, s in list(zip(acc.tolist(), m0.tolist(), shift.tolist(), strict=True))[:200]:
        assert arith.requantize(a, m, s, zp, -100, 120) == ref_requantize(a, m, s, zp, -100, 120)


def test_wrap_int32(rng):
    vals = [0, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 32, 2 ** 40 + 5, -(2 ** 45) - 3]
    vals += [int(v) for v in rng.integers(-(2 ** 62), 2 ** 62, 500)]
    for v in vals:
        assert arith.wrap_int32(v) == ref_wrap(v), v
    assert arith.wrap_int32(np.array(vals, dtype=np.int64)).tolist() == [ref_wrap(v) for v in vals]


def test_fold_zero_point_identity(rng):
    x = rng.integers(-128, 128, (40, 16))
    w = rng.integers(-127, 128, (8, 16))
    bias = rng.integers(-(2 ** 31), 2 ** 31, 8)
    zp = 93
    direct = ((x[:, None, :] - zp) * w[None]).sum(-1) + bias
    folded = (x[:, None, :] * w[None]).sum(-1) + arith.fold_zero_point(bias, w, zp)
    assert np.array_equal(arith.wrap_int32(direct), arith.wrap_int32(folded))


def test_relu_bounds():
    assert arith.relu_bounds(-128, True) == (-128, 127)
    assert arith.relu_bounds(5, True) == (5, 127)
    assert arith.relu_bounds(5, False) == (-128, 127)


# --- quantize_multiplier ----------------------------------------------------------------------


def test_quantize_multiplier_round_trip(rng):
    reals = np.concatenate([10.0 ** rng.uniform(-9, 0, 3000), [0.5, 0.75, 2.0 ** -31, 0.999999]])
    reals = reals[reals < 1.0]
    for r in reals:
        m0, shift = arith.quantize_multiplier(float(r))
        assert 2 ** 30 <= m0 < 2 ** 31 and 0 <= shift <= arith.MAX_SHIFT, (r, m0, shift)
        # m0 carries 31 significant bits: relative error at most 2**-31.
        assert abs(arith.multiplier_to_float(m0, shift) - r) <= r * 2.0 ** -31, r
        assert Fraction(m0, 2 ** (31 + shift)) == Fraction(arith.multiplier_to_float(m0, shift))


def test_quantize_multiplier_tiny_and_zero():
    assert arith.quantize_multiplier(0.0) == (0, 0)
    m0, shift = arith.quantize_multiplier(2.0 ** -40)
    assert shift == arith.MAX_SHIFT and m0 == 2 ** 22  # 2**-40 = 2**22 * 2**-31 * 2**-31
    # Below the reach of a 31-bit shift every int32 accumulator requantizes to 0 anyway.
    m0, shift = arith.quantize_multiplier(2.0 ** -70)
    assert (m0, shift) == (0, 0)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), float("inf")])
def test_quantize_multiplier_rejects(bad):
    with pytest.raises(ValueError, match="multiplier"):
        arith.quantize_multiplier(bad)


def test_quantize_multiplier_just_below_one():
    """A multiplier that rounds up to 1.0 at 31 bits becomes the largest one that exists, never a left shift."""
    m0, shift = arith.quantize_multiplier(1.0 - 2.0 ** -40)
    assert (m0, shift) == (2 ** 31 - 1, 0)
