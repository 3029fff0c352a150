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


def test_qnnpack_rejects_asymmetric_padding(rng):
    from quant.quantize import QConv

    node = QConv(name="asym", inputs=("in",), shape=(), weight=np.ones((1, 1, 3, 3), np.int8),
                 bias=np.zeros(1, np.int64), m0=np.array([2 ** 30]), shift=np.array([0]), zp_in=0, zp_out=0,
                 act_min=-128, act_max=127, stride=(1, 1), padding=(1, 0, 1, 1), dilation=(1, 1), relu=False,
                 in_shape=(), acc_scale=np.ones(1), s_in=1.0, s_out=2.0)
    with pytest.raises(ValueError, match="symmetric"):
        qnnpack_conv(np.zeros((1, 4, 4), np.int64), node)


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
