"""The systolic array: partial sums of every column equal a @ w, with the weight buffers switching per vector."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.array import SystolicArray


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 3), (4, 4), (3, 8)])
def test_array_matches_matrix_product(rows, cols):
    rng = np.random.default_rng(rows * 10 + cols)
    dut = SystolicArray(rows=rows, cols=cols, psum_bits=16 + max(1, rows.bit_length()) + 1)
    w = rng.integers(-128, 128, (2, rows, cols))
    n = 40
    a = rng.integers(-128, 128, (n, rows))
    a[0] = -128  # the extreme product, -128 * -128, in every row
    w[0, :, 0] = -128
    sel = rng.integers(0, 2, n)
    got = []

    async def bench(ctx):
        for b in range(2):
            for c in range(cols):
                ctx.set(dut.w_we, 1)
                ctx.set(dut.w_col, c)
                ctx.set(dut.w_buf, b)
                for r in range(rows):
                    ctx.set(dut.w_data[r], int(w[b, r, c]))
                await ctx.tick()
        ctx.set(dut.w_we, 0)
        for t in range(n + dut.latency):
            for r in range(rows):
                ctx.set(dut.a[r], int(a[t, r]) if t < n else 0)
            ctx.set(dut.wsel, int(sel[t]) if t < n else 0)
            if t >= dut.latency:
                got.append([ctx.get(dut.psum[c]) for c in range(cols)])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expect = [list(a[t] @ w[sel[t]]) for t in range(n)]
    bad = [(t, got[t], expect[t]) for t in range(n) if got[t] != expect[t]]
    assert not bad, f"first mismatches (vector, got, expected): {bad[:3]}"
