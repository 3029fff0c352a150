"""The load unit alone (pysim): plain band copies and max-pool-on-load against a loop reference."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.isa import EngineConfig
from hw.layout import cdiv, pack_activation, unpack_activation
from hw.load import LoadUnit

from ..reference import maxpool_reference, pool_out_size
from .models import stalling_memory


def _run_load(cfg, x, *, pool=None, stall_seed=None, ibuf_base=3, src_pix=0):
    R = cfg.rows
    c, h, w = x.shape
    cb = cdiv(c, R)
    words = pack_activation(x, R)
    src = 100
    stride = src_pix or cb
    # Pixel p at src + p * stride; the gaps hold junk that must never be read.
    mem = {src + p * stride + k: 0x5A5A5A5A for p in range(h * w) for k in range(cb, stride)}
    mem.update({src + (i // cb) * stride + i % cb: int.from_bytes(wd.tobytes(), "little")
                for i, wd in enumerate(words)})
    if pool:
        k, pt, pl, ceil_mode = pool
        out_h, out_w = pool_out_size(h, k, 2, pt, ceil_mode), pool_out_size(w, k, 2, pl, ceil_mode)
    else:
        out_h, out_w = h, w
    ib = {}
    dut = LoadUnit(cfg)
    rng = np.random.default_rng(stall_seed or 0)

    async def ibuf_model(ctx):
        async for _, _, we, waddr, wdata, ren, raddr in ctx.tick().sample(
                dut.ib_we, dut.ib_waddr, dut.ib_wdata, dut.ib_ren, dut.ib_raddr):
            if ren:
                assert raddr in ib, f"merge-read of word {raddr} before it was written"
                ctx.set(dut.ib_rdata, ib[raddr])
            if we:
                ib[waddr] = wdata

    mem_model = stalling_memory(dut.mem, mem, None if stall_seed is None else rng, p_ready=0.5, p_answer=0.6)

    async def bench(ctx):
        op = {"src": src, "src_rows": h, "src_w": w, "cb": cb, "src_pix": src_pix, "ibuf": ibuf_base,
              "out_h": out_h, "out_w": out_w, "n_words": h * w * cb, "orw": out_w * cb}
        if pool:
            op.update(pool=1, pool_k=pool[0], pool_pad_t=pool[1], pool_pad_l=pool[2])
        ctx.set(dut.op, op)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(100000):
            await ctx.tick()
            if not ctx.get(dut.busy):
                return
        raise AssertionError("load unit never finished")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(ibuf_model)
    sim.add_process(mem_model)
    sim.add_testbench(bench)
    sim.run()

    n = out_h * out_w * cb
    missing = [a for a in range(ibuf_base, ibuf_base + n) if a not in ib]
    assert not missing, f"buffer words never written: {missing[:10]}"
    stray = [a for a in ib if not ibuf_base <= a < ibuf_base + n]
    assert not stray, f"writes outside the region: {stray[:10]}"
    got_words = np.array([np.frombuffer(ib[a].to_bytes(R, "little"), np.int8)
                          for a in range(ibuf_base, ibuf_base + n)])
    got = unpack_activation(got_words, c, out_h, out_w, R)
    expect = x if not pool else maxpool_reference(x, k=pool[0], stride=2, pad=(pool[1], pool[2]),
                                                 out_hw=(out_h, out_w))
    bad = np.argwhere(got != expect)
    assert not len(bad), (f"{len(bad)} mismatches; first (c, y, x): "
                          + ", ".join(f"{tuple(b)} got {got[tuple(b)]} expected {expect[tuple(b)]}" for b in bad[:6]))


POOLS = [
    # k, pad_t, pad_l, ceil
    (3, 0, 0, False), (3, 0, 0, True), (2, 0, 0, False), (2, 0, 0, True),
    (3, 1, 1, False), (3, 1, 1, True), (3, 1, 0, True),
]


@pytest.mark.parametrize("stalls", [None, 5], ids=["nostall", "stalls"])
@pytest.mark.parametrize("shape", [(3, 7, 7), (8, 6, 5), (2, 5, 8), (5, 4, 4)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("pool", [None, *POOLS], ids=lambda p: "copy" if p is None else
                         f"k{p[0]}p{p[1]}{p[2]}{'ceil' if p[3] else 'floor'}")
def test_load_unit(pool, shape, stalls):
    cfg = EngineConfig(rows=2, cols=2, ibuf_depth=256, acc_depth=16, pool_max_cb=8)
    rng = np.random.default_rng(sum(shape) + (0 if pool is None else 7 * pool[0] + pool[1]))
    x = rng.integers(-128, 128, shape)
    _run_load(cfg, x, pool=pool, stall_seed=stalls)


@pytest.mark.parametrize("pool", [None, (3, 0, 0, True)], ids=["copy", "pool"])
def test_load_unit_strided_source(pool):
    """A band that is one part of a concatenated tensor: pixels further apart than their blocks."""
    cfg = EngineConfig(rows=2, cols=2, ibuf_depth=256, acc_depth=16, pool_max_cb=8)
    x = np.random.default_rng(4).integers(-128, 128, (3, 5, 6))
    _run_load(cfg, x, pool=pool, stall_seed=2, src_pix=5)
