"""The golden model against PyTorch's own quantized convolution (QNNPACK), an independent implementation.

Both sides get identical integer parameters. The fixed-point (golden) and
float32 (QNNPACK) requantizations may differ by one at rounding ties; applying
QNNPACK's float32 requantization to the golden accumulators must reproduce
QNNPACK exactly, which pins accumulation, zero points, padding and clamping.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quant import golden
from quant.torch_ref import Agreement, compare_conv, compare_fire_convs, format_table, qnnpack_conv
from sw.shared import imagenet_preprocess, shared_dir, skip_without_shared

from .test_quantize import TinyFireNet


def _total(rows: list[Agreement]) -> Agreement:
    total = Agreement("total", 0, 0, 0, 0)
    for r in rows:
        total = total + r
    return total


def test_qnnpack_agrees_on_synthetic_fire():
    model = TinyFireNet(torch.Generator().manual_seed(3)).eval()
    from quant.quantize import quantize_model

    calib = torch.randn(6, 3, 65, 65)
    q = quantize_model(model, calib)
    runs = [golden.run(q, golden.quantize_input(calib[i:i + 1], q.qparams("x"))) for i in range(3)]
    rows = compare_fire_convs(q, runs)
    print("\n" + format_table(rows))
    total = _total(rows)
    assert [r.name for r in rows] == ["fire.squeeze", "fire.expand1x1", "fire.expand3x3"]
    assert total.outputs == 3 * 16 * 16 * (4 + 8 + 8)  # 65 -> 32 (3x3/2) -> 16 (pool 3/2, ceil)
    assert total.max_diff <= 1 and total.within1_rate >= 0.999
    assert total.acc_match == total.outputs


def test_qnnpack_agrees_on_random_layer_without_relu(rng):
    # A stride-2 padded 3x3 with arbitrary zero points and no ReLU, straight from random integers.
    from quant.quantize import QConv

    cout, cin = 16, 24
    s_in, s_out = 0.03, 0.11
    acc_scale = s_in * rng.uniform(0.002, 0.02, cout)
    node = QConv(name="rand", inputs=("in",), shape=(cout, 8, 8),
                 weight=rng.integers(-127, 128, (cout, cin, 3, 3)), bias=rng.integers(-20000, 20000, cout),
                 m0=np.zeros(cout, np.int64), shift=np.zeros(cout, np.int64), zp_in=37, zp_out=-11,
                 act_min=-128, act_max=127, stride=(2, 2), padding=(1, 1, 1, 1), dilation=(1, 1), relu=False,
                 in_shape=(cin, 15, 15), acc_scale=acc_scale, s_in=s_in, s_out=s_out)
    from quant.arith import quantize_multiplier

    enc = [quantize_multiplier(m) for m in acc_scale / s_out]
    node.m0, node.shift = np.array([e[0] for e in enc]), np.array([e[1] for e in enc])
    x = rng.integers(-128, 128, (cin, 15, 15))
    a = compare_conv(x, node)
    assert a.outputs == cout * 8 * 8
    assert a.max_diff <= 1 and a.acc_match == a.outputs
    ref = qnnpack_conv(x, node)
    assert ref.min() == -128 or ref.max() == 127 or np.ptp(ref) > 50  # a real spread of outputs


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.sampled_from([3, 5]), stride=st.sampled_from([1, 2]), act=st.sampled_from(["none", "relu", "relu6"]),
       asym=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_qnnpack_property_depthwise(k, stride, act, asym, seed):
    """Depthwise 3x3 / 5x5, stride 1 / 2, no clamp, ReLU or ReLU6, symmetric or TF-SAME padding: the golden
    model's dense form against QNNPACK's grouped convolution, within one LSB and every accumulator equal."""
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 40))
    h, w = int(rng.integers(k, k + 9)), int(rng.integers(k, k + 9))
    p = k // 2
    pad = (p - 1, p - 1, p + 1, p + 1) if asym else (p,) * 4
    node = _random_qconv(rng, c, c, k, k, (stride, stride), pad, (h, w), act == "relu", depthwise=True,
                         relu6=act == "relu6")
    x = rng.integers(-128, 128, (c, h, w))
    a = compare_conv(x, node)
    assert a.outputs > 0 and a.max_diff <= 1 and a.acc_match == a.outputs, (a, k, stride, act, pad)


def test_depthwise_equals_a_loop_reference(rng):
    """The dense form of a depthwise convolution against per-channel loops (independent of the dense path)."""
    from quant import golden

    from .test_golden import naive_conv

    c, k = 11, 5
    node = _random_qconv(rng, c, c, k, k, (2, 2), (1, 2, 2, 1), (13, 12), False, depthwise=True, relu6=True)
    x = rng.integers(-128, 128, (c, 13, 12))
    got = golden.run_conv(x, node)
    for ch in range(c):
        want = naive_conv(x[ch:ch + 1], node.weight[ch:ch + 1, ch:ch + 1], node.bias[ch:ch + 1], node.m0[ch:ch + 1],
                          node.shift[ch:ch + 1], node.zp_in, node.zp_out, node.act_min, node.act_max, (2, 2),
                          (1, 2, 2, 1), (1, 1))
        np.testing.assert_array_equal(got[ch], want[0], err_msg=f"channel {ch}")


def _random_qconv(rng, cin, cout, kh, kw, stride, padding, in_hw, relu, dilation=(1, 1), depthwise=False,
                  relu6=False):
    """A QConv with random integer weights and zero points, its multipliers encoded from random scales."""
    from quant.arith import quantize_multiplier
    from quant.quantize import QConv

    s_in, s_out = float(rng.uniform(0.01, 0.05)), float(rng.uniform(0.05, 0.2))
    acc_scale = s_in * rng.uniform(0.002, 0.02, cout)
    zp_in, zp_out = int(rng.integers(-128, 128)), int(rng.integers(-40, 40))
    enc = [quantize_multiplier(m) for m in acc_scale / s_out]
    weight = rng.integers(-127, 128, (cout, cin, kh, kw))
    if depthwise:  # dense, zero off the diagonal
        weight = weight * np.eye(cout, cin, dtype=np.int64)[:, :, None, None]
    act_max = min(127, zp_out + int(round(6.0 / s_out))) if relu6 else 127
    return QConv(name="rand", inputs=("in",), shape=(), weight=weight,
                 bias=rng.integers(-20000, 20000, cout), m0=np.array([e[0] for e in enc]),
                 shift=np.array([e[1] for e in enc]), zp_in=zp_in, zp_out=zp_out,
                 act_min=zp_out if relu or relu6 else -128, act_max=act_max, stride=stride, padding=padding,
                 dilation=dilation, relu=relu or relu6, in_shape=(cin, *in_hw), acc_scale=acc_scale, s_in=s_in,
                 s_out=s_out, depthwise=depthwise)


@pytest.mark.parametrize("kh,kw,stride,padding", [
    (7, 7, (2, 2), (3, 3, 3, 3)),     # SqueezeNet 1.0 conv1
    (1, 3, (1, 1), (0, 1, 0, 1)),       # SqueezeNext
    (3, 1, (1, 1), (1, 0, 1, 0)),
    (5, 5, (4, 4), (1, 2, 2, 1)),       # asymmetric (TF SAME)
    (7, 7, (3, 3), (2, 3, 3, 2)),
    (3, 3, (2, 2), (0, 0, 1, 1)),       # TF SAME stride 2: all the padding after
])
def test_qnnpack_agrees_on_wide_kernels_and_asymmetric_padding(rng, kh, kw, stride, padding):
    node = _random_qconv(rng, 5, 12, kh, kw, stride, padding, (19, 17), relu=bool(kh % 2))
    x = rng.integers(-128, 128, (5, 19, 17))
    a = compare_conv(x, node)
    assert a.outputs > 0 and a.max_diff <= 1 and a.acc_match == a.outputs, a


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(kh=st.integers(1, 7), kw=st.integers(1, 7), sy=st.integers(1, 4), sx=st.integers(1, 4),
       pad=st.tuples(*[st.integers(0, 3)] * 4), relu=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_qnnpack_property_kernels_strides_padding(kh, kw, sy, sx, pad, relu, seed):
    """Any kernel 1..7 x 1..7, stride 1..4, padding 0..3 per side: within one LSB of QNNPACK, and QNNPACK's
    own float requantization of the golden accumulators equal to QNNPACK's outputs everywhere."""
    rng = np.random.default_rng(seed)
    h, w = max(kh, 4) + int(rng.integers(0, 8)), max(kw, 4) + int(rng.integers(0, 8))
    cin, cout = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    node = _random_qconv(rng, cin, cout, kh, kw, (sy, sx), pad, (h, w), relu)
    a = compare_conv(rng.integers(-128, 128, (cin, h, w)), node)
    assert a.max_diff <= 1 and a.acc_match == a.outputs, (a, kh, kw, sy, sx, pad)


@pytest.mark.shared
def test_qnnpack_agrees_on_squeezenet_fire_modules(q_squeezenet_imagenet):
    skip_without_shared("images/coco_cat.jpg")
    q = q_squeezenet_imagenet
    x = golden.quantize_input(imagenet_preprocess(shared_dir() / "images/coco_cat.jpg"), q.qparams(q.inputs[0]))
    rows = compare_fire_convs(q, [golden.run(q, x)])
    print("\n" + format_table(rows))
    total = _total(rows)
    assert len(rows) == 24
    assert total.within1_rate >= 0.999  # the target of docs/QUANT.md
    assert total.max_diff <= 1
    assert total.acc_match == total.outputs  # every accumulator identical
