"""The whole engine in Amaranth's simulator on tiny shapes: every command, and every error path."""

import numpy as np
import pytest

from hw.isa import EngineConfig, Opcode, Status, pack_command
from hw.layout import cdiv, pack_activation, pack_conv_blob, unpack_activation
from quant.arith import fold_zero_point, quantize_multiplier, requantize

from ..reference import conv_acc_reference, maxpool_reference, pool_out_size
from .engine_harness import load_words, place_commands, read_words, run_engine

CFG = EngineConfig(rows=2, cols=4, ibuf_depth=512, acc_depth=16, pool_max_cb=8, mem_addr_bits=16)
CMD_ADDR, SRC, WBLOB, DST = 0, 1000, 3000, 8000


def _qconv(rng, cin, cout, k):
    w = rng.integers(-127, 128, (cout, cin, k, k))
    bias = rng.integers(-3000, 3000, cout)
    scales = rng.uniform(0.0005, 0.004, cout)
    mq = [quantize_multiplier(s) for s in scales]
    return w, bias, np.array([a for a, _ in mq]), np.array([b for _, b in mq])


def _expect_conv(x, w, bias, m0, sh, zp_in, zp_out, lo, hi, stride, pad, out_hw):
    acc = conv_acc_reference(x, w, fold_zero_point(bias, w, zp_in), zp_in=zp_in, stride=stride, pad=pad,
                             out_hw=out_hw)
    return requantize(acc, m0[:, None, None], sh[:, None, None], zp_out, lo, hi)


def _compare(got, expect, what):
    bad = np.argwhere(got != expect)
    assert not len(bad), (f"{what}: {len(bad)} of {got.size} outputs differ; first (c, y, x): "
                          + ", ".join(f"{tuple(b)} got {got[tuple(b)]} exp {expect[tuple(b)]}" for b in bad[:6]))


@pytest.mark.parametrize("stalls", [None, 11], ids=["nostall", "stalls"])
@pytest.mark.parametrize("k,s,pad,pool", [(1, 1, 0, None), (3, 1, 1, None), (3, 2, 1, None), (3, 1, 0, None),
                                          (1, 1, 0, (3, False)), (3, 1, 1, (2, True))],
                         ids=["1x1", "3x3p1", "3x3s2", "3x3p0", "pool3+1x1", "pool2ceil+3x3"])
def test_conv_command(k, s, pad, pool, stalls):
    R = CFG.rows
    rng = np.random.default_rng(k * 10 + s + pad)
    cin, h, w, cout = 3, 6, 5, 6
    x = rng.integers(-128, 128, (cin, h, w))
    if pool:
        pk, ceil_mode = pool
        in_h, in_w = pool_out_size(h, pk, 2, 0, ceil_mode), pool_out_size(w, pk, 2, 0, ceil_mode)
        xin = maxpool_reference(x, k=pk, stride=2, pad=(0, 0), out_hw=(in_h, in_w))
    else:
        in_h, in_w, xin = h, w, x
    out_h, out_w = (in_h + 2 * pad - k) // s + 1, (in_w + 2 * pad - k) // s + 1
    wt, bias, m0, sh = _qconv(rng, cin, cout, k)
    zp_in, zp_out = int(rng.integers(-128, 0)), int(rng.integers(-20, 20))
    mem = {}
    load_words(mem, SRC, pack_activation(x, R))
    load_words(mem, WBLOB, pack_conv_blob(wt, fold_zero_point(bias, wt, zp_in), m0, sh, CFG))
    cmd = pack_command(
        Opcode.CONV,
        load=dict(src=SRC, src_rows=h, src_w=w, cb=cdiv(cin, R), ibuf=0,
                  **(dict(pool=1, pool_k=pool[0]) if pool else {})),
        in_h=in_h, in_w=in_w, kh=k, kw=k, sy=s, sx=s, dil=1, pad_t=pad, pad_l=pad,
        out_h=out_h, out_w=out_w, cout=cout,
        quant=dict(zp_in=zp_in, zp_out=zp_out, act_min=zp_out, act_max=127),
        wblob=WBLOB, dst=DST, dst_pix=cdiv(cout, R))
    place_commands(mem, CMD_ADDR, [cmd], R)
    (res,) = run_engine(CFG, mem, CMD_ADDR, 1, stall_seed=stalls)
    assert res.status & Status.DONE and not res.status & Status.ERROR, f"status {res.status:#x}"
    got = unpack_activation(read_words(mem, DST, out_h * out_w * cdiv(cout, R), R), cout, out_h, out_w, R)
    _compare(got, _expect_conv(xin, wt, bias, m0, sh, zp_in, zp_out, zp_out, 127, (s, s), (pad, pad),
                               (out_h, out_w)), "conv")
