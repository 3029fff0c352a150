"""MemArbiter (hw/arbiter.py) in Amaranth's simulator: every request reaches memory, every answer its initiator.

Each initiator runs its own random program of reads and writes over its own address range (so the
reference is a per-initiator Python dict), presenting requests at random; the memory withholds
``req.ready`` and delays answers at random. A saturating write test checks the round-robin bound.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.arbiter import MemArbiter

from .models import stalling_memory

WORD_BYTES, ADDR_BITS = 4, 12
SPAN = 64            # addresses per initiator
DEADLINE = 40_000    # cycles for a whole test


def _initiator(dut, k: int, program: list, rng, p_present: float, answers: list, done: dict):
    """A testbench: issues ``program`` ``[(write, addr, data)]`` on initiator ``k``; answers appended in order."""
    port = dut.initiator(k)

    async def bench(ctx):
        ctx.set(port.rsp.ready, 1)      # initiators take their answers whenever they have reads outstanding
        for write, addr, data in program:
            for _ in range(DEADLINE):
                present = rng.random() < p_present
                ctx.set(port.req.valid, present)
                if present:
                    ctx.set(port.req.payload, {"addr": addr, "write": write, "data": data})
                _, _, taken, answer_valid, answer = await ctx.tick().sample(
                    port.req.ready, port.rsp.valid, port.rsp.payload)
                if answer_valid:
                    answers.append(answer)
                if present and taken:
                    break
            else:
                raise AssertionError(f"initiator {k}: request {(write, addr, data)} not granted in {DEADLINE} cycles")
        ctx.set(port.req.valid, 0)
        reads = sum(1 for w, _, _ in program if not w)
        for _ in range(DEADLINE):
            if len(answers) == reads:
                break
            _, _, answer_valid, answer = await ctx.tick().sample(port.rsp.valid, port.rsp.payload)
            if answer_valid:
                answers.append(answer)
        done[k] = True

    return bench


def _program(rng, k: int, n: int) -> tuple[list, list, dict]:
    """Random reads and writes in initiator ``k``'s range, the answers its reads must get, its initial memory."""
    model = {k * SPAN + a: int(rng.integers(0, 1 << 32)) for a in range(SPAN)}
    initial = dict(model)
    program, expected = [], []
    for _ in range(n):
        addr = k * SPAN + int(rng.integers(0, SPAN))
        if rng.random() < 0.4:
            data = int(rng.integers(0, 1 << 32))
            program.append((1, addr, data))
            model[addr] = data
        else:
            program.append((0, addr, 0))
            expected.append(model[addr])
    return program, expected, initial


@pytest.mark.parametrize("n, max_reads, p_present, p_ready, p_answer", [
    (1, 4, 1.0, 1.0, 1.0), (2, 4, 0.8, 0.5, 0.5), (3, 32, 0.6, 0.7, 0.3), (4, 2, 1.0, 0.3, 0.8), (3, 1, 0.9, 0.9, 0.2),
])
def test_every_answer_reaches_its_initiator(n, max_reads, p_present, p_ready, p_answer):
    rng = np.random.default_rng(n * 100 + max_reads)
    dut = MemArbiter(n=n, word_bytes=WORD_BYTES, addr_bits=ADDR_BITS, max_reads=max_reads)
    mem, done = {}, {}
    programs, expected, answers = [], [], [[] for _ in range(n)]
    for k in range(n):
        prog, exp, initial = _program(rng, k, 80)
        programs.append(prog)
        expected.append(exp)
        mem.update(initial)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(stalling_memory(dut.o, mem, rng, p_ready=p_ready, p_answer=p_answer))
    for k in range(n):
        sim.add_testbench(_initiator(dut, k, programs[k], np.random.default_rng(k), p_present, answers[k], done))
    sim.run()
    assert sorted(done) == list(range(n)), f"initiators that finished: {sorted(done)}"
    for k in range(n):
        bad = [(i, g, e) for i, (g, e) in enumerate(zip(answers[k], expected[k], strict=False)) if g != e]
        assert len(answers[k]) == len(expected[k]) and not bad, (
            f"initiator {k}: {len(answers[k])} answers, {len(expected[k])} expected; first mismatches "
            f"(read index, got, expected): {bad[:3]}")
    final = {}
    for k in range(n):
        for write, addr, data in programs[k]:
            if write:
                final[addr] = data
    wrong = {a: (mem[a], d) for a, d in final.items() if mem[a] != d}
    assert not wrong, f"memory after the run differs at (addr: got, expected) {dict(list(wrong.items())[:3])}"


@pytest.mark.parametrize("n", [2, 3, 5])
def test_round_robin_grants_each_waiting_initiator_within_n_grants(n):
    """All initiators always writing: between two grants to one initiator, at most n - 1 grants to others."""
    rng = np.random.default_rng(n)
    dut = MemArbiter(n=n, word_bytes=WORD_BYTES, addr_bits=ADDR_BITS)
    grants = []

    async def bench(ctx):
        for k in range(n):
            ctx.set(dut.initiator(k).req.valid, 1)
            ctx.set(dut.initiator(k).req.payload, {"addr": k, "write": 1, "data": k})
        for _ in range(400):
            ready = rng.random() < 0.6
            ctx.set(dut.o.req.ready, ready)
            _, _, valid, addr = await ctx.tick().sample(dut.o.req.valid, dut.o.req.payload.addr)
            if valid and ready:
                grants.append(addr)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(grants) > 100, f"only {len(grants)} grants in 400 cycles"
    for k in range(n):
        at = [i for i, g in enumerate(grants) if g == k]
        gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
        assert at and at[0] < n and set(gaps) == {n}, f"initiator {k}: granted at {at[:8]}..., gaps {sorted(set(gaps))}"
