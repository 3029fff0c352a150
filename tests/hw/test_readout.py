"""StoreUnit and GapUnit (hw/readout.py) in Amaranth's simulator against numpy references, with random credit.

Both read the activation buffer (one cycle of latency) and feed the output path over a credit stream
(``ready`` is a credit: the store presents a word the cycle after it was granted one; the average pool
presents a vector only in a cycle with credit). The consumer withholds credit at random.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.isa import INT8_MAX, INT8_MIN, EngineConfig
from hw.readout import GapUnit, StoreUnit

from .models import synchronous_buffer

CFG = EngineConfig()
R = CFG.rows
DEADLINE = 20_000   # cycles: every run here needs a few hundred


def _words(rng, n: int) -> np.ndarray:
    """``n`` random buffer words as int8 lanes ``(n, R)``."""
    return rng.integers(-128, 128, (n, R), dtype=np.int64)


def _pack(lanes) -> int:
    return sum((int(v) & 0xFF) << (8 * k) for k, v in enumerate(lanes))


async def _run_op(ctx, dut, op: dict, what):
    """Start ``op``, wait (with a deadline) until the unit is idle, then 4 more cycles: nothing more may come out.

    ``what()`` says how far it got, for the deadline's message.
    """
    ctx.set(dut.op, op)
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    for _ in range(DEADLINE):
        await ctx.tick()
        if not ctx.get(dut.busy):
            break
    else:
        raise AssertionError(f"{type(dut).__name__} still busy after {DEADLINE} cycles ({what()})")
    await ctx.tick().repeat(4)


def _run(dut, buffer: dict, bench, consumer):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(synchronous_buffer(buffer, dut.ib_ren, dut.ib_raddr, dut.ib_rdata))
    sim.add_process(consumer)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("n_pix, cb, dst_pix, p_credit", [
    (1, 1, 1, 1.0), (7, 3, 3, 1.0), (9, 2, 5, 0.5), (16, 4, 7, 0.2), (5, 1, 1, 0.7),
])
def test_store_unit_copies_every_word_to_its_address(n_pix, cb, dst_pix, p_credit):
    rng = np.random.default_rng(n_pix * 131 + cb)
    src, dst = 37, 1000
    x = _words(rng, n_pix * cb)
    buffer = {src + i: _pack(w) for i, w in enumerate(x)}
    expected = [(dst + p * dst_pix + c, buffer[src + p * cb + c]) for p in range(n_pix) for c in range(cb)]
    dut = StoreUnit(CFG)
    got, late = [], []

    async def consumer(ctx):
        ready = False
        async for _, _, valid, addr, data in ctx.tick().sample(dut.raw.valid, dut.raw.payload.addr,
                                                               dut.raw.payload.data):
            if valid:       # a credit stream: every word presented is taken
                got.append((addr, data))
                if not prev_ready[0]:
                    late.append(len(got) - 1)
            prev_ready[0] = ready
            ready = rng.random() < p_credit
            ctx.set(dut.raw.ready, ready)

    prev_ready = [False]

    async def bench(ctx):
        await _run_op(ctx, dut, {"src": src, "n_pix": n_pix, "cb": cb, "dst": dst, "dst_pix": dst_pix},
                      lambda: f"{len(got)} of {len(expected)} words out")

    _run(dut, buffer, bench, consumer)
    assert not late, f"words presented without a credit the cycle before: indices {late[:5]}"
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e]
    assert len(got) == len(expected) and not bad, (
        f"{len(got)} words out, {len(expected)} expected; first mismatches (index, (addr, data) got, expected): "
        f"{bad[:3]}")


@pytest.mark.parametrize("n_pix, cb, zp_in, p_credit", [
    (1, 1, 0, 1.0), (4, 3, -7, 1.0), (49, 2, 12, 0.4), (169, 1, -128, 0.6), (13, 5, 127, 0.3),
])
def test_gap_unit_sums_each_channel_block(n_pix, cb, zp_in, p_credit):
    rng = np.random.default_rng(n_pix * 7 + cb)
    src, dst = 5, 4096
    m0, shift, zp_out = int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(0, 32)), int(rng.integers(-128, 128))
    x = _words(rng, n_pix * cb)               # pixel-major: word p * cb + c
    buffer = {src + i: _pack(w) for i, w in enumerate(x)}
    sums = (x.reshape(n_pix, cb, R) - zp_in).sum(axis=0)   # (cb, R), the numpy reference
    expected = [([int(v) for v in sums[c]], dst + c) for c in range(cb)]
    dut = GapUnit(CFG)
    got, no_credit = [], []

    async def consumer(ctx):
        ready = False
        req = dut.rq.payload
        async for _, _, valid, *fields in ctx.tick().sample(
                dut.rq.valid, req.addr, req.zp_out, req.act_min, req.act_max,
                *[req.acc[k] for k in range(R)], *[req.m0[k] for k in range(R)], *[req.shift[k] for k in range(R)]):
            if valid:
                if not ready:
                    no_credit.append(len(got))
                addr, zp, lo, hi = fields[:4]
                acc, m0s, shifts = fields[4:4 + R], fields[4 + R:4 + 2 * R], fields[4 + 2 * R:]
                assert set(m0s) == {m0} and set(shifts) == {shift}, f"multipliers {m0s}, shifts {shifts}"
                assert (zp, lo, hi) == (zp_out, INT8_MIN, INT8_MAX), f"zero point and clamp {(zp, lo, hi)}"
                got.append((list(acc), addr))
            ready = rng.random() < p_credit
            ctx.set(dut.rq.ready, ready)

    async def bench(ctx):
        await _run_op(ctx, dut, {"src": src, "n_pix": n_pix, "cb": cb, "dst": dst, "m0": m0, "shift": shift,
                                 "zp_in": zp_in, "zp_out": zp_out}, lambda: f"{len(got)} of {cb} vectors out")

    _run(dut, buffer, bench, consumer)
    assert not no_credit, f"vectors presented without credit: {no_credit[:5]}"
    bad = [(c, g, e) for c, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e]
    assert len(got) == cb and not bad, (
        f"{len(got)} vectors out, {cb} expected; first mismatches (block, (sums, addr) got, expected): {bad[:2]}")
