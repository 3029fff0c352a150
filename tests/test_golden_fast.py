"""The golden model's fast kernels (quant.kernels) against the previous kernels and the integer arithmetic.

* the float64 requantizer against :func:`quant.arith.requantize` on random and
  boundary accumulators, every shift, extreme multipliers, ReLU and not;
* the float32 convolution at the edge of its ``2**24`` bound, past it (channel
  groups) and far past it (float64), against an int64 loop;
* ``golden.conv2d``/``dual_conv``/``maxpool2d`` against the same functions under
  ``golden.reference_kernels()`` (hypothesis);
* whole networks: every tensor of SqueezeNet 1.1, RFSong-779 and both parts of
  SqueezeNet + Faster R-CNN equal under both kernel sets, and the golden
  backend's ISA interpreter, layer by layer, equal to both.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quant import golden
from quant.arith import requantize
from quant.kernels import F32_EXACT, ConvWeights, Requantizer, conv_sum, maxpool_int8, to_float_input

from .reference import conv_acc_reference

# --- requantization ----------------------------------------------------------------------------


def _check_requant(rng, m0, shift, bias, zp_out, lo, hi, bound, n=4000):
    c = len(m0)
    rq = Requantizer(bias, m0, shift, zp_out, lo, hi)
    sums = rng.integers(-bound, bound + 1, (c, 8, n // 8))
    # Every channel's own thresholds (and their neighbours) are where a float error would show.
    for edge in (rq.a_lo, rq.a_hi):
        near = np.clip(edge - np.asarray(bias) + rng.integers(-2, 3, (4, c)), -bound, bound).T
        sums[:, 0, :4] = near
    want = requantize(sums + np.asarray(bias)[:, None, None], np.asarray(m0)[:, None, None],
                      np.asarray(shift)[:, None, None], zp_out, lo, hi)
    dtype = np.float32 if bound < F32_EXACT else np.float64
    assert rq.plan_exact(bound) is not None, "the float path must be the one under test"
    got = rq(sums.astype(dtype), bound)
    bad = np.argwhere(got != want)
    assert not len(bad), [(tuple(b), int(sums[tuple(b)]), int(got[tuple(b)]), int(want[tuple(b)]))
                          for b in bad[:8]]
    return rq


@pytest.mark.parametrize("shift", [0, 1, 2, 7, 12, 14])
@pytest.mark.parametrize("relu", [False, True])
def test_requantizer_matches_integer_arithmetic(rng, shift, relu):
    c = 12
    m0 = np.concatenate([[1 << 30, (1 << 31) - 1, 0, 1], rng.integers(1 << 30, 1 << 31, c - 4)])
    zp_out = int(rng.integers(-128, 100))
    bias = rng.integers(-(1 << 20), 1 << 20, c)
    _check_requant(rng, m0, np.full(c, shift), bias, zp_out, zp_out if relu else -128, 127, bound=1 << 22)


def test_requantizer_ties_of_both_roundings(rng):
    # Accumulators that land exactly on srdhm's and rdbpot's half-way points, positive and negative.
    m0, shift = np.array([1 << 30] * 3), np.array([0, 1, 3])  # srdhm(a, 2**30) = round(a / 2)
    rq = Requantizer(np.zeros(3, np.int64), m0, shift, 0, -128, 127)
    a = np.arange(-40, 41)
    sums = np.broadcast_to(a, (3, 1, len(a))).astype(np.float32)
    want = requantize(np.broadcast_to(a, (3, 1, len(a))), m0[:, None, None], shift[:, None, None], 0)
    np.testing.assert_array_equal(rq(sums, 40), want)


def test_requantizer_falls_back_to_integers_when_the_sum_may_wrap(rng):
    # bound + |bias| reaches 2**31: the int32 wrap matters, the integer path must run and wrap.
    bias = np.array([(1 << 31) - 10, -(1 << 31) + 3])
    rq = Requantizer(bias, [1 << 30, 1 << 30], [20, 20], 0, -128, 127)
    assert rq.plan_exact(1 << 20) is None
    sums = np.array([[[100.0]], [[-100.0]]])
    acc = ((np.array([[[100]], [[-100]]]) + bias[:, None, None] + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    np.testing.assert_array_equal(rq(sums, 1 << 20), requantize(acc, 1 << 30, 20, 0))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 31), st.integers(-128, 127), st.booleans(),
       st.sampled_from([200, 1 << 16, F32_EXACT - 1, 1 << 28]))
def test_requantizer_property(seed, shift, zp_out, relu, bound):
    rng = np.random.default_rng(seed)
    c = 5
    m0 = rng.integers(0, 1 << 31, c)
    bias = rng.integers(-(1 << 24), 1 << 24, c)
    rq = Requantizer(bias, m0, np.full(c, shift), zp_out, zp_out if relu else -128, 127)
    sums = rng.integers(-bound, bound + 1, (c, 4, 50))
    want = requantize(sums + bias[:, None, None], m0[:, None, None], shift, zp_out, zp_out if relu else -128, 127)
    np.testing.assert_array_equal(rq(sums.astype(np.float64), bound), want)


# --- convolution sums --------------------------------------------------------------------------


def _sums_vs_loop(x, w, *, padding=0):
    """conv_sum on raw x (zero padding) against the int64 loop reference; returns the bound used."""
    xf, amp = to_float_input(x, 0)
    weights = ConvWeights.from_int(w)
    got, bound = conv_sum(xf, amp, weights, padding=(padding, padding))
    ho = x.shape[1] + 2 * padding - w.shape[2] + 1
    wo = x.shape[2] + 2 * padding - w.shape[3] + 1
    want = conv_acc_reference(x, w, np.zeros(w.shape[0], np.int64), zp_in=0, pad=(padding, padding),
                              out_hw=(ho, wo))
    got = got.numpy()
    assert np.all(got == np.rint(got))
    np.testing.assert_array_equal(got.astype(np.int64), want)
    return bound, got.dtype


def test_float32_sums_exact_just_below_two_to_the_24(rng):
    # 1031 taps * 128 * 127 = 16,759,936 < 2**24: output channel 0 sums to exactly that at every pixel.
    cin = 1031
    x = np.where(rng.random((cin, 3, 3)) < 0.5, -128, 127).astype(np.int8)
    w = np.where(rng.random((2, cin, 1, 1)) < 0.5, -127, 127).astype(np.int8)
    x[:, :, :] = x[:, :1, :1]
    w[0, :, 0, 0] = np.where(x[:, 0, 0] < 0, -127, 127)
    bound, dtype = _sums_vs_loop(x, w)
    assert F32_EXACT - 1 >= bound > F32_EXACT - 20000 and dtype == np.float32


def test_sums_past_two_to_the_24_split_over_channels(rng):
    x = np.full((1500, 4, 4), -128, np.int8)
    w = np.full((2, 1500, 1, 1), -127, np.int8)  # 1500 * 128 * 127 = 24,384,000 = 1.45 * 2**24
    w[1, ::3] = 127
    bound, dtype = _sums_vs_loop(x, w)
    assert bound >= F32_EXACT and dtype == np.float64


def test_sums_with_one_channel_past_two_to_the_24_use_float64(rng):
    x = rng.integers(-128, 128, (1, 34, 34)).astype(np.int8)
    x[0, :33, :33] = -128
    w = np.full((1, 1, 33, 33), -127, np.int8)  # 1089 * 127 * 128 > 2**24 from a single input channel
    bound, dtype = _sums_vs_loop(x, w, padding=1)
    assert bound >= F32_EXACT and dtype == np.float64


def test_conv_sum_refuses_a_bound_past_two_to_the_53():
    weights = ConvWeights(w32=torch.zeros(1, 1, 1, 1), abs_rows=np.array([1 << 50]), abs_per_cin=np.zeros((1, 1)))
    with pytest.raises(ValueError, match="2\\*\\*53"):
        conv_sum(torch.zeros(1, 1, 1, 1), 128, weights)


# --- golden functions, fast against reference kernels --------------------------------------------


@st.composite
def conv_cases(draw):
    kh, kw = draw(st.sampled_from([1, 2, 3, 5])), draw(st.sampled_from([1, 3]))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(4))
    cin, cout = draw(st.integers(1, 40)), draw(st.integers(1, 20))
    h = draw(st.integers(dil[0] * (kh - 1) + 1, 14))
    w = draw(st.integers(dil[1] * (kw - 1) + 1, 14))
    return (kh, kw, stride, dil, pad, cin, cout, h, w, draw(st.integers(0, 2 ** 32 - 1)),
            draw(st.integers(-128, 127)), draw(st.integers(-128, 127)), draw(st.booleans()), draw(st.booleans()))


def _both(fn, *args, **kw):
    fast = fn(*args, **kw)
    with golden.reference_kernels():
        ref = fn(*args, **kw)
    return fast, ref


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases())
def test_conv2d_fast_equals_reference(case):
    kh, kw, stride, dil, pad, cin, cout, h, w, seed, zp_in, zp_out, relu, folded = case
    r = np.random.default_rng(seed)
    x = r.integers(-128, 128, (cin, h, w)).astype(np.int8)
    wt = r.integers(-128, 128, (cout, cin, kh, kw)).astype(np.int8)
    bias = r.integers(-(2 ** 31), 2 ** 31, cout) if seed % 7 == 0 else r.integers(-(2 ** 20), 2 ** 20, cout)
    m0, shift = r.integers(0, 2 ** 31, cout), r.integers(0, 32 if seed % 3 == 0 else 14, cout)
    args = (x, wt, bias, m0, shift, zp_in, zp_out, zp_out if relu else -128, 127)
    fast, ref = _both(golden.conv2d, *args, stride=stride, padding=pad, dilation=dil, bias_folded=folded)
    np.testing.assert_array_equal(fast, ref, err_msg=f"case {case}")
    acc_fast, acc_ref = _both(golden.conv_accumulate, x, wt, bias, zp_in, stride=stride, padding=pad,
                              dilation=dil, bias_folded=folded)
    np.testing.assert_array_equal(acc_fast, acc_ref)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(0, 2 ** 32 - 1), st.booleans())
def test_dual_conv_fast_equals_reference(seed, relu):
    r = np.random.default_rng(seed)
    a, b = r.integers(-128, 128, (6, 9, 8)), r.integers(-128, 128, (4, 9, 8))
    wa, wb = r.integers(-127, 128, (5, 6, 3, 3)), r.integers(-127, 128, (5, 4, 3, 3))
    bias, m0, shift = r.integers(-5000, 5000, 5), r.integers(2 ** 30, 2 ** 31, 5), r.integers(5, 12, 5)
    zp_a, zp_b, zp_out = (int(v) for v in r.integers(-128, 128, 3))
    fast, ref = _both(golden.dual_conv, a, b, wa, wb, bias, m0, shift, zp_a, zp_b, zp_out,
                      zp_out if relu else -128, 127, padding=(int(seed % 3),) * 4, dilation=1 + seed % 2)
    np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("k,s,p,ceil_mode", [(3, 2, 0, True), (3, 2, 1, False), (2, 2, 0, True), (3, 1, 1, True),
                                             (2, 1, 1, False), (3, 3, 1, True)])
@pytest.mark.parametrize("size", [(13, 13), (14, 15), (55, 55), (7, 8)])
def test_maxpool_fast_equals_reference(rng, k, s, p, ceil_mode, size):
    x = rng.integers(-128, 128, (5, *size)).astype(np.int8)
    fast, ref = _both(golden.maxpool2d, x, k, s, p, ceil_mode)
    np.testing.assert_array_equal(fast, ref)
    assert golden.maxpool2d(x.astype(np.int64), k, s, p, ceil_mode).dtype == np.int8
    # A channels-last input (as the ISA interpreter's bands are) gives a channels-last result.
    view = np.ascontiguousarray(x.transpose(1, 2, 0)).transpose(2, 0, 1)
    got = maxpool_int8(view, k, k, s, s, p, p, *fast.shape[1:])
    np.testing.assert_array_equal(got, ref)
    assert got.transpose(1, 2, 0).flags.c_contiguous


# --- whole networks ----------------------------------------------------------------------------


def _assert_same_tensors(fast: dict, ref: dict, what: str):
    assert fast.keys() == ref.keys()
    bad = [k for k in ref if not np.array_equal(fast[k], ref[k])]
    assert not bad, f"{what}: tensors differ from the reference kernels' {bad[:5]}"


def _network_input(network, shared):
    from sw.preprocess import ssd_preprocess
    from sw.shared import imagenet_preprocess

    if network == "squeezenet":
        return imagenet_preprocess(shared / "images/coco_cat.jpg")
    return ssd_preprocess(shared / "images/people_2.jpg")[0]


@pytest.mark.shared
@pytest.mark.parametrize("network", ["squeezenet", "rfsong"])
def test_network_every_layer_fast_equals_reference(shared, network):
    """golden.run and the golden backend (ISA interpreter, per-layer check) under both kernel sets."""
    from hw.isa import EngineConfig
    from sw.networks import Runner, quantized

    qg = quantized(network)
    x = _network_input(network, shared)
    x_q = golden.quantize_input(x, qg.qparams(qg.inputs[0]))
    fast, ref = _both(golden.run, qg, x_q)
    _assert_same_tensors(fast, ref, f"{network} golden.run")
    with Runner(network, "golden", EngineConfig(), progress=False, qgraph=qg) as r:
        res_fast = r.run_float(x)              # ISA interpreter (fast) checked against golden.run (fast)
        with golden.reference_kernels():
            res_ref = r.run_float(x)           # both on the reference kernels
    for res in (res_fast, res_ref):
        assert res.run.exact and all(res.run.exact.values()), res.run.first_mismatch
        assert len(res.run.exact) == len(r.program.layer_order)
    _assert_same_tensors(res_fast.run.tensors, res_ref.run.tensors, f"{network} golden backend")


@pytest.mark.shared
def test_faster_rcnn_both_parts_fast_equal_reference(shared):
    from sw.frcnn import _preprocess, quantized_parts, run_faster_rcnn

    x, _ = _preprocess(shared / "images/coco_dog.jpg")
    q1, q2 = quantized_parts(tuple(x.shape[2:]))
    x_q = golden.quantize_input(x, q1.qparams(q1.inputs[0]))
    fast1, ref1 = _both(golden.run, q1, x_q)
    _assert_same_tensors(fast1, ref1, "Faster R-CNN part 1")
    feat = fast1[q1.outputs[0]]
    pooled = np.stack([feat[:, :7, :7], feat[:, -7:, -7:]]).astype(np.int8)  # two ROI-sized crops of fire9
    for k in range(len(pooled)):
        fast2, ref2 = _both(golden.run, q2, pooled[k])
        _assert_same_tensors(fast2, ref2, f"Faster R-CNN part 2, crop {k}")
    out = run_faster_rcnn(shared / "images/coco_dog.jpg", "golden", progress=False, proposals=3)
    assert out.bit_exact is True, out.summary()
    with golden.reference_kernels():
        out_ref = run_faster_rcnn(shared / "images/coco_dog.jpg", "golden", progress=False, proposals=3)
    np.testing.assert_array_equal(np.asarray(out.proposals), np.asarray(out_ref.proposals))
    assert [(d.x1, d.y1, d.x2, d.y2, d.score) for d in out.detections] == \
        [(d.x1, d.y1, d.x2, d.y2, d.score) for d in out_ref.detections]
