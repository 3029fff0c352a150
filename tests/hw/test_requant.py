"""The requantizer gateware against quant.arith.requantize, bit for bit (Amaranth simulator)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.requant import Requantizer
from quant.arith import requantize


def _vectors(rng, n, lanes):
    out = []
    for i in range(n):
        # realistic accumulators every fourth vector, else the whole int32 range
        acc = rng.integers(-5000, 5000, lanes) if i % 4 == 0 else rng.integers(-2**31, 2**31, lanes)
        m0 = rng.integers(2**30, 2**31, lanes)
        if i % 7 == 3:
            m0 = rng.integers(-2**31, 2**31, lanes)  # any int32 multiplier, negative ones included
        if i == 5:
            acc[:] = -2**31
            m0[:] = -2**31  # srdhm's one saturating case
        shift = rng.integers(0, 32, lanes)
        if i % 5 == 1:
            shift[:] = 0
        zp = int(rng.integers(-128, 128))
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        out.append((acc, m0, shift, zp, lo, hi))
    # Rounding ties: with m0 = 2**30 (one half) srdhm(acc) = acc / 2 exactly for even acc, so
    # acc = (2m + 1) * 2**e makes rdbpot(., e) land half way between two integers, on both signs.
    for e in (1, 3, 7):
        acc = np.array([3 << e, -(3 << e), 5 << e, -(5 << e)])
        out.append((np.resize(acc, lanes), np.full(lanes, 1 << 30), np.full(lanes, e), 0, -128, 127))
    return out


@pytest.mark.parametrize("lanes", [1, 4])
def test_requantizer_matches_arith(lanes):
    rng = np.random.default_rng(lanes)
    vecs = _vectors(rng, 250, lanes)
    dut = Requantizer(lanes=lanes, user=16)
    got = []

    async def bench(ctx):
        for i in range(len(vecs) + dut.latency + 1):
            if i < len(vecs):
                acc, m0, sh, zp, lo, hi = vecs[i]
                for k in range(lanes):
                    ctx.set(dut.acc[k], int(acc[k]))
                    ctx.set(dut.m0[k], int(m0[k]))
                    ctx.set(dut.shift[k], int(sh[k]))
                ctx.set(dut.zp_out, zp)
                ctx.set(dut.act_min, lo)
                ctx.set(dut.act_max, hi)
                ctx.set(dut.i_user, i)
            ctx.set(dut.i_valid, i < len(vecs))
            await ctx.tick()
            if ctx.get(dut.o_valid):
                got.append((ctx.get(dut.o_user), [ctx.get(dut.o_data[k]) for k in range(lanes)], i))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [u for u, _, _ in got] == list(range(len(vecs))), "vectors lost, duplicated or reordered"
    assert all(i - u == dut.latency - 1 for u, _, i in got), "latency differs from Requantizer.latency"
    bad = []
    for u, out, _ in got:
        acc, m0, sh, zp, lo, hi = vecs[u]
        exp = [requantize(int(acc[k]), int(m0[k]), int(sh[k]), zp, lo, hi) for k in range(lanes)]
        if out != exp:
            bad.append((u, [(int(acc[k]), int(m0[k]), int(sh[k])) for k in range(lanes)], zp, lo, hi, out, exp))
    assert not bad, f"{len(bad)} vectors differ; first (index, (acc, m0, shift) per lane, zp, lo, hi, got, exp): " \
                    f"{bad[:3]}"
