"""The convolution unit alone, in Amaranth's simulator, against an integer reference.

The activation buffer, the weight memory and the output path are Python
models around the unit; the unit's accumulator vectors are checked exactly
(requantization has its own test) for every output channel and pixel.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.conv import ConvUnit
from hw.isa import EngineConfig
from hw.layout import cdiv, pack_activation, pack_conv_blob

from ..reference import conv_acc_reference
from .models import stalling_memory


def _run_conv(cfg, x, w, bias, *, stride=(1, 1), pad_t=0, pad_l=0, pad_b=None, pad_r=None, dil=1, out_hw=None,
              zp_in=0, stall_seed=None):
    R = cfg.rows
    cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    sy, sx = stride
    if out_hw is None:
        pad_b = pad_t if pad_b is None else pad_b
        pad_r = pad_l if pad_r is None else pad_r
        out_h = (h + pad_t + pad_b - dil * (kh - 1) - 1) // sy + 1
        out_w = (wd + pad_l + pad_r - dil * (kw - 1) - 1) // sx + 1
    else:
        out_h, out_w = out_hw
    ibuf = pack_activation(x, R, fill=7)  # junk in padding lanes: their weights are zero
    ib_words = [int.from_bytes(wd_.tobytes(), "little") for wd_ in ibuf]
    m0 = np.full(cout, 1 << 30)
    sh = np.zeros(cout, int)
    blob = pack_conv_blob(w, bias, m0, sh, cfg)
    wbase = 1000
    mem = {wbase + i: int.from_bytes(b.tobytes(), "little") for i, b in enumerate(blob)}
    ocb = cdiv(cout, R)
    dut = ConvUnit(cfg)
    rng = np.random.default_rng(stall_seed or 0)
    got = {}
    state = {"done": False}

    async def ibuf_model(ctx):
        async for _, _, ren, raddr in ctx.tick().sample(dut.ib_ren, dut.ib_raddr):
            if ren:
                assert raddr < len(ib_words), f"read beyond the tensor: {raddr}"
                ctx.set(dut.ib_rdata, ib_words[raddr])

    mem_model = stalling_memory(dut.wmem, mem, None if stall_seed is None else rng, p_ready=0.6, p_answer=0.7)

    async def out_model(ctx):
        ready = False
        async for _, _, valid, addr, *acc in ctx.tick().sample(
                dut.rq.valid, dut.rq.payload.addr, *[dut.rq.payload.acc[k] for k in range(R)]):
            if valid:
                assert ready, "output presented without credit"
                assert addr not in got, f"address {addr} written twice"
                got[addr] = list(acc)
            ready = stall_seed is None or rng.random() < 0.8
            ctx.set(dut.rq.ready, ready)

    async def bench(ctx):
        ctx.set(dut.op, {
            "in_base": 0, "in_h": h, "in_w": wd, "in_cb": cdiv(cin, R),
            "kh": kh, "kw": kw, "sy": sy, "sx": sx, "dil": dil, "pad_t": pad_t, "pad_l": pad_l,
            "out_h": out_h, "out_w": out_w, "cout": cout,
            "zp_in": zp_in, "zp_out": 0, "act_min": -128, "act_max": 127,
            "wblob": wbase, "dst": 5000, "dst_ibuf": 0, "dst_pix": ocb,
            "row_words": wd * cdiv(cin, R), "n_pix": out_h * out_w,
        })
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(200000):
            await ctx.tick()
            if not ctx.get(dut.busy):
                break
        else:
            raise AssertionError("convolution unit never finished")
        await ctx.tick().repeat(8)
        state["done"] = True

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(ibuf_model)
    sim.add_process(mem_model)
    sim.add_process(out_model)
    sim.add_testbench(bench)
    sim.run()
    assert state["done"]

    expect = conv_acc_reference(x, w, bias, zp_in=zp_in, stride=stride, pad=(pad_t, pad_l),
                                dil=dil, out_hw=(out_h, out_w))
    mismatches = []
    for oy in range(out_h):
        for ox in range(out_w):
            for g in range(ocb):
                addr = 5000 + (oy * out_w + ox) * ocb + g
                assert addr in got, f"output word for pixel ({oy},{ox}) block {g} never written"
                for k in range(R):
                    co = g * R + k
                    if co < cout and got[addr][k] != expect[co, oy, ox]:
                        mismatches.append((co, oy, ox, got[addr][k], int(expect[co, oy, ox])))
    assert not mismatches, f"{len(mismatches)} mismatches (co, oy, ox, got, expected), first: {mismatches[:8]}"
    assert len(got) == out_h * out_w * ocb


CASES = [
    # name, cfg, cin, h, w, cout, k, stride, pad, dil
    ("1x1", dict(rows=2, cols=4, acc_depth=16), 4, 3, 5, 8, 1, 1, 0, 1),
    ("3x3pad", dict(rows=2, cols=4, acc_depth=16), 3, 5, 4, 6, 3, 1, 1, 1),
    ("3x3s2", dict(rows=2, cols=2, acc_depth=16), 4, 7, 6, 2, 3, 2, 1, 1),
    ("3x3nopad", dict(rows=4, cols=4, acc_depth=16), 5, 5, 5, 3, 3, 1, 0, 1),
    ("dil2", dict(rows=2, cols=4, acc_depth=16), 2, 6, 6, 4, 3, 1, 2, 2),
    ("1pix", dict(rows=2, cols=2, acc_depth=16), 2, 1, 1, 3, 3, 1, 1, 1),
    ("manypass", dict(rows=2, cols=4, acc_depth=16), 2, 7, 9, 5, 3, 1, 1, 1),
    # name, cfg, cin, h, w, cout, (kh, kw), (sy, sx), (t, l, b, r), dil: the wider kernels and strides
    ("7x7s2", dict(rows=2, cols=4, acc_depth=16), 3, 11, 10, 5, (7, 7), (2, 2), (3, 3, 3, 3), 1),
    ("1x3", dict(rows=2, cols=4, acc_depth=16), 3, 4, 6, 4, (1, 3), (1, 1), (0, 1, 0, 1), 1),
    ("3x1", dict(rows=4, cols=4, acc_depth=16), 5, 6, 4, 4, (3, 1), (1, 1), (1, 0, 1, 0), 1),
    ("5x5s3asym", dict(rows=2, cols=2, acc_depth=16), 2, 10, 9, 3, (5, 5), (3, 3), (1, 2, 2, 0), 1),
    ("5x4s4", dict(rows=2, cols=4, acc_depth=16), 2, 13, 12, 4, (5, 4), (4, 3), (2, 1, 0, 2), 1),
]


@pytest.mark.parametrize("stalls", [None, 3], ids=["nostall", "stalls"])
@pytest.mark.parametrize("name,cfgkw,cin,h,w,cout,k,s,pad,dil", CASES, ids=[c[0] for c in CASES])
def test_conv_unit(name, cfgkw, cin, h, w, cout, k, s, pad, dil, stalls):
    cfg = EngineConfig(ibuf_depth=1024, **cfgkw)
    rng = np.random.default_rng(hash(name) % 2**32)
    x = rng.integers(-128, 128, (cin, h, w))
    kh, kw = (k, k) if isinstance(k, int) else k
    stride = (s, s) if isinstance(s, int) else s
    t, left, b, r = (pad,) * 4 if isinstance(pad, int) else pad
    wt = rng.integers(-127, 128, (cout, cin, kh, kw))
    bias = rng.integers(-5000, 5000, cout)
    _run_conv(cfg, x, wt, bias, stride=stride, pad_t=t, pad_l=left, pad_b=b, pad_r=r, dil=dil,
              zp_in=int(rng.integers(-128, 128)), stall_seed=stalls)
