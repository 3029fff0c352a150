"""The golden model against independent implementations.

* exact: naive Python loops (big-int accumulation, explicit zero-point padding,
  the gemmlowp references of ``test_arith``), over hand-picked and
  hypothesis-generated geometries;
* approximate: float convolution of the dequantized operands;
* max pool: PyTorch's float max pool and a loop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quant import golden
from quant.calibrate import QParams
from quant.quantize import QConv

from .test_arith import ref_requantize, ref_wrap

# --- naive references --------------------------------------------------------------------------


def naive_conv(x, w, bias, m0, shift, zp_in, zp_out, lo, hi, stride, padding, dilation, acc_only=False):
    """Direct loops: pad with zp_in, sum (x - zp_in) * w in Python ints, wrap, requantize per channel."""
    cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    sy, sx = stride
    dy, dx = dilation
    t, left, b, r = padding
    xp = np.full((cin, h + t + b, wd + left + r), zp_in, dtype=np.int64)
    xp[:, t:t + h, left:left + wd] = x
    ho = (h + t + b - dy * (kh - 1) - 1) // sy + 1
    wo = (wd + left + r - dx * (kw - 1) - 1) // sx + 1
    out = np.zeros((cout, ho, wo), dtype=np.int64)
    xl, wl = xp.tolist(), np.asarray(w).tolist()
    for co in range(cout):
        for oy in range(ho):
            for ox in range(wo):
                acc = int(bias[co])
                for ci in range(cin):
                    for ky in range(kh):
                        row = xl[ci][oy * sy + ky * dy]
                        for kx in range(kw):
                            acc += (row[ox * sx + kx * dx] - zp_in) * wl[co][ci][ky][kx]
                acc = ref_wrap(acc)
                out[co, oy, ox] = (acc if acc_only
                                   else ref_requantize(acc, int(m0[co]), int(shift[co]), zp_out, lo, hi))
    return out


def naive_maxpool(x, k, s, p, ceil_mode):
    c, h, w = x.shape

    def size(n):
        span = n + 2 * p - k
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= n + p:
            o -= 1
        return o

    ho, wo = size(h), size(w)
    out = np.zeros((c, ho, wo), dtype=np.int64)
    for ch in range(c):
        for oy in range(ho):
            for ox in range(wo):
                vals = [x[ch, y, xx] for y in range(oy * s - p, oy * s - p + k)
                        for xx in range(ox * s - p, ox * s - p + k) if 0 <= y < h and 0 <= xx < w]
                out[ch, oy, ox] = max(vals)
    return out


def random_conv_params(rng, cin, cout, kh, kw, *, wide=False):
    x = rng.integers(-128, 128, (cin, 7, 9))
    w = rng.integers(-127, 128, (cout, cin, kh, kw))
    bias = rng.integers(-(2 ** 14), 2 ** 14, cout)
    m0 = rng.integers(2 ** 30, 2 ** 31, cout)
    shift = rng.integers(4, 10, cout) if not wide else rng.integers(0, 32, cout)
    return x, w, bias, m0, shift


# --- convolution -------------------------------------------------------------------------------

GEOMETRIES = [
    # kh, kw, stride, padding (t, l, b, r), dilation
    (1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    (3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (3, 3, (2, 2), (0, 0, 0, 0), (1, 1)),
    (3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
    (3, 3, (1, 2), (1, 0, 2, 1), (1, 1)),
    (1, 3, (1, 1), (0, 1, 0, 1), (1, 1)),
    (3, 1, (2, 1), (1, 0, 1, 0), (3, 1)),
    (7, 7, (2, 2), (3, 3, 3, 3), (1, 1)),
    (7, 7, (4, 4), (2, 3, 3, 2), (1, 1)),
    (5, 5, (3, 3), (0, 2, 1, 2), (1, 1)),
    (1, 7, (1, 4), (0, 3, 0, 3), (1, 1)),
    (6, 4, (3, 1), (5, 0, 2, 3), (1, 2)),
]


@pytest.mark.parametrize("kh,kw,stride,padding,dilation", GEOMETRIES)
def test_conv_matches_naive(rng, kh, kw, stride, padding, dilation):
    x, w, bias, m0, shift = random_conv_params(rng, 5, 6, kh, kw)
    zp_in, zp_out = 17, -9
    got = golden.conv2d(x, w, bias, m0, shift, zp_in, zp_out, -128, 127, stride=stride, padding=padding,
                        dilation=dilation)
    want = naive_conv(x, w, bias, m0, shift, zp_in, zp_out, -128, 127, stride, padding, dilation)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)


def test_conv_relu_clamp_and_wide_shifts(rng):
    x, w, bias, m0, shift = random_conv_params(rng, 4, 8, 3, 3, wide=True)
    got = golden.conv2d(x, w, bias, m0, shift, -128, 3, 3, 127, padding=1)
    want = naive_conv(x, w, bias, m0, shift, -128, 3, 3, 127, (1, 1), (1, 1, 1, 1), (1, 1))
    np.testing.assert_array_equal(got, want)
    assert got.min() == 3  # the ReLU clamp is reached: the test exercises it


def test_conv_accumulator_wraps_like_int32(rng):
    # Bias near INT32_MAX plus positive products must wrap to negative values, as 32-bit adders do.
    x = np.full((4, 3, 3), 127)
    w = np.full((2, 4, 1, 1), 127)
    bias = np.array([2 ** 31 - 1000, -(2 ** 31) + 5])
    acc = golden.conv_accumulate(x, w, bias, -128)
    exact = 4 * 255 * 127 + bias  # python ints, no wrap
    assert acc[0, 0, 0] == exact[0] - 2 ** 32 < 0
    assert acc[1, 0, 0] == exact[1]
    want = naive_conv(x, w, bias, [2 ** 30] * 2, [0, 0], -128, 0, -128, 127, (1, 1), (0, 0, 0, 0), (1, 1),
                      acc_only=True)
    np.testing.assert_array_equal(acc, want)


def test_conv_float64_accumulation_is_exact_at_the_extremes():
    # Largest products (|x - zp| = 255, |w| = 128) over 512 * 9 taps: exact integer sum expected.
    x = np.full((512, 5, 5), -128)
    w = np.full((3, 512, 3, 3), -128)
    acc = golden.conv_accumulate(x, w, np.zeros(3, np.int64), 127)
    assert acc[0, 0, 0] == ref_wrap(512 * 9 * 255 * 128)


def test_conv_folded_bias_equivalent(rng):
    # The engine's form: raw x times w plus the effective bias, padding fed with zp_in.
    from quant.arith import fold_zero_point

    x, w, bias, m0, shift = random_conv_params(rng, 6, 5, 3, 3)
    zp_in = -77
    a = golden.conv2d(x, w, bias, m0, shift, zp_in, 4, padding=1, stride=2)
    b = golden.conv2d(x, w, fold_zero_point(bias, w, zp_in), m0, shift, zp_in, 4, padding=1, stride=2,
                      bias_folded=True)
    np.testing.assert_array_equal(a, b)


def test_conv_close_to_float_reference(rng):
    # Real-valued check: dequantized golden output vs a float convolution of the dequantized operands.
    s_in, zp_in, s_out, zp_out = 0.05, -20, 0.2, 10
    cin, cout = 16, 12
    x = rng.integers(-128, 128, (cin, 11, 11))
    w = rng.integers(-127, 128, (cout, cin, 3, 3))
    s_w = rng.uniform(0.001, 0.01, cout)
    bias = rng.integers(-3000, 3000, cout)
    from quant.arith import quantize_multiplier

    enc = [quantize_multiplier(s_in * s / s_out) for s in s_w]
    m0, shift = np.array([e[0] for e in enc]), np.array([e[1] for e in enc])
    got = golden.conv2d(x, w, bias, m0, shift, zp_in, zp_out, padding=1)
    xr = torch.tensor(s_in * (x - zp_in), dtype=torch.float64)[None]
    wr = torch.tensor(w * s_w[:, None, None, None], dtype=torch.float64)
    br = torch.tensor(bias * s_in * s_w, dtype=torch.float64)
    real = F.conv2d(xr, wr, br, padding=1)[0].numpy()
    want = np.clip(np.round(real / s_out) + zp_out, -128, 127)
    diff = np.abs(got.astype(np.int64) - want)
    # Fixed-point requantization double-rounds (srdhm then rdbpot): at most one LSB from the float rounding.
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.95


@pytest.mark.parametrize("bad,match", [
    (dict(x=np.full((2, 4, 4), 128)), "x values"),
    (dict(shift=np.array([32, 0])), "shift"),
    (dict(m0=np.array([-1, 2 ** 30])), "m0"),
    (dict(m0=np.array([2 ** 31, 2 ** 30])), "m0"),
    (dict(zp_in=200), "zp_in"),
    (dict(x=np.zeros((3, 4, 4), np.int64)), "channels"),
    (dict(bias=np.zeros(3, np.int64)), "bias"),
    (dict(x=np.zeros((2, 4, 4))), "integer"),
    (dict(act_min=10, act_max=5), "act_min"),
    (dict(padding=(1, 1, 1)), "padding"),
])
def test_conv_rejects_bad_arguments(bad, match):
    args = dict(x=np.zeros((2, 4, 4), np.int64), w=np.ones((2, 2, 3, 3), np.int64),
                bias=np.zeros(2, np.int64),
                m0=np.array([2 ** 30, 2 ** 30]), shift=np.array([1, 1]), zp_in=0, zp_out=0, act_min=-128,
                act_max=127, padding=1)
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        golden.conv2d(args.pop("x"), args.pop("w"), args.pop("bias"), args.pop("m0"), args.pop("shift"),
                      args.pop("zp_in"), args.pop("zp_out"), args.pop("act_min"), args.pop("act_max"), **args)


def test_conv_rejects_kernel_larger_than_input():
    with pytest.raises(ValueError, match="does not fit"):
        golden.conv2d(np.zeros((1, 2, 2), np.int64), np.zeros((1, 1, 3, 3), np.int64), [0], [2 ** 30], [0],
                      0, 0)


@st.composite
def conv_cases(draw):
    kh = draw(st.integers(1, 7))
    kw = draw(st.integers(1, 7))
    sy, sx = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dy, dx = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    pad = tuple(draw(st.integers(0, 4)) for _ in range(4))
    cin, cout = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    h = draw(st.integers(max(3, dy * (kh - 1) + 1 - pad[0] - pad[2]), 14))
    w = draw(st.integers(max(3, dx * (kw - 1) + 1 - pad[1] - pad[3]), 14))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    zp_in, zp_out = draw(st.integers(-128, 127)), draw(st.integers(-128, 127))
    relu = draw(st.booleans())
    return kh, kw, (sy, sx), (dy, dx), pad, cin, cout, h, w, seed, zp_in, zp_out, relu


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases())
def test_conv_property_matches_naive(case):
    kh, kw, stride, dilation, pad, cin, cout, h, w, seed, zp_in, zp_out, relu = case
    r = np.random.default_rng(seed)
    x = r.integers(-128, 128, (cin, h, w))
    wt = r.integers(-127, 128, (cout, cin, kh, kw))
    bias = r.integers(-(2 ** 20), 2 ** 20, cout)
    m0 = r.integers(2 ** 30, 2 ** 31, cout)
    shift = r.integers(0, 14, cout)
    lo = zp_out if relu else -128
    got = golden.conv2d(x, wt, bias, m0, shift, zp_in, zp_out, lo, 127, stride=stride, padding=pad,
                        dilation=dilation)
    want = naive_conv(x, wt, bias, m0, shift, zp_in, zp_out, lo, 127, stride, pad, dilation)
    np.testing.assert_array_equal(got, want, err_msg=f"case {case}")


# --- dual convolution, fire, concat -----------------------------------------------------------


def test_dual_conv_is_sum_of_accumulators(rng):
    a = rng.integers(-128, 128, (5, 6, 6))
    b = rng.integers(-128, 128, (3, 6, 6))
    wa = rng.integers(-127, 128, (4, 5, 1, 1))
    wb = rng.integers(-127, 128, (4, 3, 1, 1))
    bias = rng.integers(-5000, 5000, 4)
    m0, shift = rng.integers(2 ** 30, 2 ** 31, 4), rng.integers(3, 9, 4)
    got = golden.dual_conv(a, b, wa, wb, bias, m0, shift, 11, -50, -128, -128, 127)
    acc = (naive_conv(a, wa, bias, m0, shift, 11, 0, 0, 0, (1, 1), (0,) * 4, (1, 1), acc_only=True)
           + naive_conv(b, wb, [0] * 4, m0, shift, -50, 0, 0, 0, (1, 1), (0,) * 4, (1, 1), acc_only=True))
    want = np.vectorize(lambda v, c: ref_requantize(ref_wrap(int(v)), int(m0[c]), int(shift[c]), -128))(
        acc, np.arange(4)[:, None, None])
    np.testing.assert_array_equal(got, want)


def test_dual_conv_equals_one_conv_over_concatenation_when_zero_points_match(rng):
    a = rng.integers(-128, 128, (5, 6, 7))
    b = rng.integers(-128, 128, (3, 6, 7))
    wa = rng.integers(-127, 128, (4, 5, 3, 3))
    wb = rng.integers(-127, 128, (4, 3, 3, 3))
    bias = rng.integers(-5000, 5000, 4)
    m0, shift = rng.integers(2 ** 30, 2 ** 31, 4), rng.integers(6, 12, 4)
    dual = golden.dual_conv(a, b, wa, wb, bias, m0, shift, 9, 9, 0, padding=1, stride=2)
    one = golden.conv2d(np.concatenate([a, b]), np.concatenate([wa, wb], axis=1), bias, m0, shift, 9, 0,
                        padding=1, stride=2)
    np.testing.assert_array_equal(dual, one)


def _qconv(rng, cin, cout, k, zp_in, zp_out, relu=True):
    pad = (k // 2,) * 4
    return QConv(name=f"c{cout}k{k}", inputs=("in",), shape=(),
                 weight=rng.integers(-127, 128, (cout, cin, k, k)), bias=rng.integers(-2000, 2000, cout),
                 m0=rng.integers(2 ** 30, 2 ** 31, cout), shift=rng.integers(6, 10, cout), zp_in=zp_in,
                 zp_out=zp_out, act_min=zp_out if relu else -128, act_max=127, stride=(1, 1), padding=pad,
                 dilation=(1, 1), relu=relu, in_shape=(),
                 acc_scale=np.ones(cout), s_in=1.0, s_out=1.0)


def test_fire_is_concat_of_expands(rng):
    x = rng.integers(-128, 128, (8, 5, 5))
    sq = _qconv(rng, 8, 4, 1, zp_in=3, zp_out=-128)
    e1 = _qconv(rng, 4, 6, 1, zp_in=-128, zp_out=-128)
    e3 = _qconv(rng, 4, 5, 3, zp_in=-128, zp_out=-128)
    got = golden.fire(x, sq, e1, e3)
    s = naive_conv(x, sq.weight, sq.bias, sq.m0, sq.shift, 3, -128, -128, 127, (1, 1), (0,) * 4, (1, 1))
    y1 = naive_conv(s, e1.weight, e1.bias, e1.m0, e1.shift, -128, -128, -128, 127, (1, 1), (0,) * 4, (1, 1))
    y3 = naive_conv(s, e3.weight, e3.bias, e3.m0, e3.shift, -128, -128, -128, 127, (1, 1), (1,) * 4, (1, 1))
    np.testing.assert_array_equal(got, np.concatenate([y1, y3]))
    e3_bad = _qconv(rng, 4, 5, 3, zp_in=-128, zp_out=-100)
    with pytest.raises(ValueError, match="zero points differ"):
        golden.fire(x, sq, e1, e3_bad)


# --- pooling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(13, 13), (14, 15), (55, 55), (8, 6), (7, 7)])
@pytest.mark.parametrize("k,s,p", [(3, 2, 0), (2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 1), (2, 2, 1),
                                   (3, 3, 1)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_maxpool_matches_torch(rng, size, k, s, p, ceil_mode):
    x = rng.integers(-128, 128, (3, *size))
    got = golden.maxpool2d(x, k, s, p, ceil_mode)
    want = F.max_pool2d(torch.tensor(x, dtype=torch.float64)[None], k, s, p, ceil_mode=ceil_mode)[0]
    np.testing.assert_array_equal(got, want.numpy().astype(np.int64))


def test_maxpool_matches_loop_and_ceil_differs_from_floor(rng):
    x = rng.integers(-128, 128, (2, 14, 14))
    floor, ceil = golden.maxpool2d(x, 3, 2, 0, False), golden.maxpool2d(x, 3, 2, 0, True)
    assert floor.shape == (2, 6, 6) and ceil.shape == (2, 7, 7)  # (14 - 3) / 2 + 1 = 6.5
    np.testing.assert_array_equal(floor, naive_maxpool(x, 3, 2, 0, False))
    np.testing.assert_array_equal(ceil, naive_maxpool(x, 3, 2, 0, True))


def test_maxpool_padding_never_wins():
    x = np.full((1, 5, 5), -128)
    assert (golden.maxpool2d(x, 3, 2, 1, True) == -128).all()


def test_global_avgpool(rng):
    x = rng.integers(-128, 128, (6, 13, 13))
    zp_in, zp_out = -100, -100
    from quant.arith import quantize_multiplier

    m0, shift = quantize_multiplier(1 / 169)
    got = golden.global_avgpool(x, m0, shift, zp_in, zp_out)
    assert got.shape == (6, 1, 1)
    sums = [int((x[c] - zp_in).sum()) for c in range(6)]
    np.testing.assert_array_equal(got[:, 0, 0], [ref_requantize(v, m0, shift, zp_out) for v in sums])
    # And it is the mean, rounded to the nearest (up to the multiplier's rounding).
    mean = (x - zp_in).reshape(6, -1).mean(axis=1)
    # srdhm rounds first at 2**-shift (shift 7 here), so the bound is 0.5 + 2**-8 rather than 0.5.
    assert np.abs(got[:, 0, 0] - zp_out - mean).max() <= 0.5 + 2.0 ** -8


# --- input/output conversion ------------------------------------------------------------------


def test_quantize_input_rounding_and_clamp():
    qp = QParams(0.5, 3)
    x = torch.tensor([[0.25, -0.25, 0.75, -0.75, 1000.0, -1000.0, 0.0]])
    got = golden.quantize_input(x[None, None, 0], qp)
    # x / 0.5 = 0.5, -0.5, 1.5, -1.5 round away from zero to 1, -1, 2, -2; then + 3 and clamp.
    np.testing.assert_array_equal(got.reshape(-1), [4, 2, 5, 1, 127, -128, 3])
    np.testing.assert_allclose(golden.dequantize(got, qp).reshape(-1)[:4], [0.5, -0.5, 1.0, -1.0])
