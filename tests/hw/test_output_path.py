"""OutputPath (hw/output.py) in Amaranth's simulator: every entry written once, in order, to the right place.

Requantized vectors are compared with :func:`quant.arith.requantize` lane by lane, raw words with
themselves; words for the buffer come out on ``ib_*``, the others as memory writes. The producers
present entries at random in cycles with credit (``ready``), the memory withholds ``req.ready`` at
random, and ``idle`` must be low whenever an entry taken has not been written.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.isa import EngineConfig
from hw.output import OutputPath
from quant.arith import requantize

from .models import stalling_memory

CFG = EngineConfig()
R = CFG.rows
DEADLINE = 50_000   # cycles for a whole test; each needs a few thousand at most


def _requests(rng, n: int, ibuf_share: float) -> list[dict]:
    out = []
    for i in range(n):
        acc = rng.integers(-5000, 5000, R) if i % 3 else rng.integers(-2**31, 2**31, R)
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        out.append({"acc": [int(v) for v in acc], "m0": [int(v) for v in rng.integers(1 << 30, 1 << 31, R)],
                    "shift": [int(v) for v in rng.integers(0, 32, R)], "zp_out": int(rng.integers(-128, 128)),
                    "act_min": lo, "act_max": hi, "addr": int(rng.integers(0, 1 << 14)),
                    "ibuf": int(rng.random() < ibuf_share)})
    return out


def _raw_words(rng, n: int, ibuf_share: float) -> list[dict]:
    return [{"addr": int(rng.integers(0, 1 << 14)), "ibuf": int(rng.random() < ibuf_share),
             "data": int(rng.integers(0, 1 << 63)) | int(rng.integers(0, 2)) << 63} for _ in range(n)]


def _word(request: dict) -> int:
    lanes = [requantize(request["acc"][k], request["m0"][k], request["shift"][k], request["zp_out"],
                        request["act_min"], request["act_max"]) for k in range(R)]
    return sum((int(v) & 0xFF) << (8 * k) for k, v in enumerate(lanes))


@pytest.mark.parametrize("p_present, p_mem, ibuf_share", [(1.0, 1.0, 0.5), (0.7, 0.3, 0.5), (0.9, 0.1, 0.2),
                                                          (0.3, 0.8, 1.0), (1.0, 0.5, 0.0)])
def test_output_path_writes_every_entry_once_in_order(p_present, p_mem, ibuf_share):
    rng = np.random.default_rng(int(p_present * 100 + p_mem * 10 + ibuf_share * 7))
    # Phases: the two producers take turns (never at once), each phase drained before the next.
    phases = [("rq", _requests(rng, 40, ibuf_share)), ("raw", _raw_words(rng, 40, ibuf_share)),
              ("rq", _requests(rng, 25, ibuf_share)), ("raw", _raw_words(rng, 9, ibuf_share))]
    expected = [(e["ibuf"], e["addr"], _word(e) if kind == "rq" else e["data"]) for kind, es in phases for e in es]
    dut = OutputPath(CFG)
    mem, log = {}, []
    written, counts, idle_wrong = [], {"taken": 0}, []

    async def monitor(ctx):
        async for _, _, we, ib_addr, ib_data, idle in ctx.tick().sample(dut.ib_we, dut.ib_addr, dut.ib_data,
                                                                         dut.idle):
            if idle and counts["taken"] != len(written) + len(log):
                idle_wrong.append((counts["taken"], len(written) + len(log)))
            if we:
                written.append((1, ib_addr, ib_data))

    async def bench(ctx):
        cycles = 0
        for kind, entries in phases:
            port = dut.rq if kind == "rq" else dut.raw
            for e in entries:
                while True:
                    present = ctx.get(port.ready) and rng.random() < p_present
                    if present:
                        ctx.set(port.payload, e)
                    ctx.set(port.valid, present)
                    await ctx.tick()
                    cycles += 1
                    assert cycles < DEADLINE, f"no credit for {DEADLINE} cycles"
                    if present:
                        counts["taken"] += 1
                        break
            ctx.set(port.valid, 0)
            while not ctx.get(dut.idle):
                await ctx.tick()
                cycles += 1
                assert cycles < DEADLINE, f"the output path never went idle after a {kind} phase"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(stalling_memory(dut.mem, mem, rng, p_ready=p_mem, log=log))
    sim.add_process(monitor)
    sim.add_testbench(bench)
    sim.run()

    assert all(w for _, w, _ in log), "the output path read memory"
    got_mem = [(0, a, d) for a, _, d in log]
    got_ib = written
    # Order is kept per destination (one queue feeds both); check each destination's sequence exactly.
    for dest, got in ((1, got_ib), (0, got_mem)):
        exp = [e for e in expected if e[0] == dest]
        bad = [(i, g, x) for i, (g, x) in enumerate(zip(got, exp, strict=False)) if g != x]
        assert len(got) == len(exp) and not bad, (
            f"{'buffer' if dest else 'memory'}: {len(got)} words, {len(exp)} expected; first mismatches "
            f"(index, (ibuf, addr, word) got, expected): {[(i, g, x) for i, g, x in bad[:3]]}")
    assert not idle_wrong, f"idle while entries were still in flight (taken, written): {idle_wrong[:3]}"
