"""SerialMultiplier (hw/util.py) in Amaranth's simulator: exact products and the documented timing."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.util import SerialMultiplier


@pytest.mark.parametrize("a_bits, b_bits", [(1, 1), (8, 4), (24, 8), (32, 16)])
def test_serial_multiplier_products_and_timing(a_bits, b_bits):
    rng = np.random.default_rng(a_bits * 64 + b_bits)
    pairs = [(0, 0), ((1 << a_bits) - 1, (1 << b_bits) - 1), (1, (1 << b_bits) - 1), ((1 << a_bits) - 1, 1)]
    pairs += [(int(rng.integers(0, 1 << a_bits)), int(rng.integers(0, 1 << b_bits))) for _ in range(40)]
    dut = SerialMultiplier(a_bits, b_bits)
    bad, timing = [], []

    async def bench(ctx):
        for a, b in pairs:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.a, int(rng.integers(0, 1 << a_bits)))   # inputs need not be held after start
            ctx.set(dut.b, int(rng.integers(0, 1 << b_bits)))
            waited = 0
            while not ctx.get(dut.done):
                await ctx.tick()
                waited += 1
                assert waited <= 4 * b_bits + 4, f"{a} * {b}: no done after {waited} cycles"
            if waited != dut.cycles:
                timing.append((a, b, waited))
            if ctx.get(dut.p) != a * b:
                bad.append((a, b, ctx.get(dut.p), a * b))
            await ctx.tick().repeat(int(rng.integers(1, 4)))
            if ctx.get(dut.p) != a * b:
                bad.append((a, b, "not held", ctx.get(dut.p)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not timing, f"done after a number of cycles other than cycles={dut.cycles}: (a, b, cycles) {timing[:3]}"
    assert not bad, f"{len(bad)} products wrong; first (a, b, got, expected): {bad[:3]}"
