"""hw.dram_port.DramPort and WideDramPort in the Amaranth simulator, against a behavioural LiteDRAM native port.

The native-port model accepts commands, write beats and gives read beats with random stalls and random
read latencies, in command order, and orders a read after every earlier write (as LiteDRAM does for
one port). The engine side issues random reads and writes with random gaps and stalls ``rsp.ready``.
:class:`WideDramPort` (a 128-bit native word of four engine words) writes one lane by byte enables: the
model applies them and the test checks the other lanes kept their bytes. Every answer is compared
exactly with a Python dictionary of engine words; the tests also assert that
each kind of stall really happened, and measure read throughput without stalls.
"""

from __future__ import annotations

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from hw.dram_port import DramPort, WideDramPort


class NativeModel:
    """Behavioural LiteDRAM native port: memory of native words, in-order reads with random latency."""

    def __init__(self, rng, *, stall: float, max_latency: int, full_writes: bool = True):
        self.rng, self.stall, self.max_latency = rng, stall, max_latency
        self.full_writes = full_writes
        self.mem: dict[int, int] = {}
        self.stalls = {"cmd": 0, "wdata": 0, "rdata_held": 0}
        self.native_cmds = 0
        self.writes_waiting = 0

    async def run(self, ctx, nat, width: int):
        rng = self.rng
        writes_waiting: list[int] = []          # addresses of accepted write commands without data yet
        # [address, earliest cycle, writes that must land first, value read (None until they have)]
        reads: list[list] = []
        writes_landed = 0
        writes_accepted = 0
        cycle = 0
        def capture():
            # A read sees the memory after exactly the writes commanded before it (not later ones).
            for read in reads:
                if read[3] is None and read[2] <= writes_landed:
                    read[3] = self.mem.get(read[0], 0)

        while True:
            capture()
            self.writes_waiting = len(writes_waiting)
            ctx.set(nat.cmd_ready, rng.random() >= self.stall)
            ctx.set(nat.wdata_ready, bool(writes_waiting) and rng.random() >= self.stall)
            head_ok = bool(reads) and reads[0][1] <= cycle and reads[0][3] is not None
            offer = head_ok and rng.random() >= self.stall
            ctx.set(nat.rdata_valid, offer)
            if offer:
                ctx.set(nat.rdata_data, reads[0][3])
            (_, _, cmd_valid, cmd_ready, cmd_we, cmd_addr, wd_valid, wd_ready, wd_we, wd_data,
             rd_ready) = await ctx.tick().sample(nat.cmd_valid, nat.cmd_ready, nat.cmd_we, nat.cmd_addr,
                                                 nat.wdata_valid, nat.wdata_ready, nat.wdata_we, nat.wdata_data,
                                                 nat.rdata_ready)
            cycle += 1
            self.stalls["cmd"] += cmd_valid and not cmd_ready
            self.stalls["wdata"] += wd_valid and not wd_ready
            self.stalls["rdata_held"] += offer and not rd_ready
            if offer and rd_ready:
                reads.pop(0)
            if wd_valid and wd_ready:
                addr = writes_waiting.pop(0)
                assert not self.full_writes or wd_we == (1 << width // 8) - 1, f"write beat with byte enables {wd_we:b}"
                assert wd_we, "a write beat without byte enables"
                capture()
                mask = sum(0xFF << 8 * b for b in range(width // 8) if wd_we >> b & 1)
                self.mem[addr] = self.mem.get(addr, 0) & ~mask | wd_data & mask
                writes_landed += 1
            if cmd_valid and cmd_ready:
                self.native_cmds += 1
                if cmd_we:
                    writes_waiting.append(cmd_addr)
                    writes_accepted += 1
                else:
                    reads.append([cmd_addr, cycle + rng.randint(2, self.max_latency), writes_accepted, None])


async def engine_traffic(ctx, dut, rng, ops, *, gap: float, rsp_stall: float, max_cycles: int):
    """Issue ``ops`` ((write, addr, data)) on ``dut.mem``; return (answers in order, cycles)."""
    req, rsp = dut.mem.req, dut.mem.rsp
    answers, i, cycle = [], 0, 0
    reads_expected = sum(1 for w, _, _ in ops if not w)
    while len(answers) < reads_expected:
        assert cycle < max_cycles, (f"no progress: {i}/{len(ops)} requests, {len(answers)}/{reads_expected} "
                                    f"answers after {max_cycles} cycles")
        offer = i < len(ops) and rng.random() >= gap
        ctx.set(req.valid, offer)
        if offer:
            write, addr, data = ops[i]
            ctx.set(req.payload, {"addr": addr, "write": write, "data": data})
        ctx.set(rsp.ready, rng.random() >= rsp_stall)
        _, _, req_ready, rsp_valid, rsp_ready, rsp_data = await ctx.tick().sample(
            req.ready, rsp.valid, rsp.ready, rsp.payload)
        cycle += 1
        if offer and req_ready:
            i += 1
        if rsp_valid and rsp_ready:
            answers.append(rsp_data)
    ctx.set(req.valid, 0)
    return answers, cycle


def random_ops(rng, n, addr_bits, word_bytes, span=64):
    """Random reads and writes over ``span`` words (reads of written and unwritten words, rewrites)."""
    addrs = rng.sample(range(1 << addr_bits), span)
    return [(rng.random() < 0.5, rng.choice(addrs), rng.getrandbits(8 * word_bytes)) for _ in range(n)]


def expected_answers(ops):
    mem, out = {}, []
    for write, addr, data in ops:
        if write:
            mem[addr] = data
        else:
            out.append(mem.get(addr, 0))
    return out


@pytest.mark.parametrize("word_bytes,stall,gap,rsp_stall", [
    (4, 0.3, 0.3, 0.3),
    (4, 0.6, 0.1, 0.6),
    (8, 0.3, 0.2, 0.4),
    (2, 0.3, 0.2, 0.4),
])
def test_dram_port_random_traffic(word_bytes, stall, gap, rsp_stall):
    rng = random.Random(word_bytes * 1000 + int(stall * 100))
    addr_bits = 12
    dut = DramPort(word_bytes=word_bytes, addr_bits=addr_bits, native_data_width=16, native_addr_bits=24, base=1000)
    model = NativeModel(rng, stall=stall, max_latency=12)
    ops = random_ops(rng, 600, addr_bits, word_bytes)
    result = {}

    async def native(ctx):
        await model.run(ctx, dut.native, 16)

    async def engine(ctx):
        result["answers"], result["cycles"] = await engine_traffic(ctx, dut, rng, ops, gap=gap, rsp_stall=rsp_stall,
                                                                   max_cycles=50_000)
        # Write data may still wait in the adapter after the last answer: let it land (bounded).
        for _ in range(2000):
            await ctx.tick()
            if model.writes_waiting == 0 and model.native_cmds == 8 * word_bytes // 16 * len(ops):
                break
        else:
            raise AssertionError(f"{model.writes_waiting} write beats never delivered")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(native)
    sim.add_testbench(engine)
    sim.run()
    want = expected_answers(ops)
    got = result["answers"]
    assert len(got) == len(want)
    bad = [(n, g, w) for n, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, "first mismatches (answer, got, want): " + ", ".join(
        f"#{n}: 0x{g:x} != 0x{w:x}" for n, g, w in bad[:8])
    ratio = 8 * word_bytes // 16
    # Every engine word became `ratio` native commands at base + addr * ratio + lane.
    assert model.native_cmds == ratio * len(ops)
    final = {}
    for write, addr, data in ops:
        if write:
            final[addr] = data
    for addr, data in final.items():
        lanes = [model.mem[1000 + addr * ratio + i] for i in range(ratio)]
        assert sum(v << 16 * i for i, v in enumerate(lanes)) == data, f"native layout of word {addr}"
    # The stalls the test claims to exercise happened.
    assert all(v > 0 for v in model.stalls.values()), model.stalls


def test_dram_port_read_throughput_without_stalls():
    """Back-to-back reads with a native port that never stalls: one native command per cycle."""
    rng = random.Random(5)
    dut = DramPort(word_bytes=4, addr_bits=10)
    model = NativeModel(rng, stall=0.0, max_latency=2)
    ops = [(False, a, 0) for a in range(256)]
    result = {}

    async def native(ctx):
        await model.run(ctx, dut.native, 16)

    async def engine(ctx):
        result["answers"], result["cycles"] = await engine_traffic(ctx, dut, rng, ops, gap=0, rsp_stall=0,
                                                                   max_cycles=5000)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(native)
    sim.add_testbench(engine)
    sim.run()
    cycles = result["cycles"]
    print(f"\n256 engine reads (512 native words) in {cycles} cycles: {512 / cycles:.3f} native words/cycle")
    assert result["answers"] == [0] * 256
    assert cycles <= 512 + 16, cycles


@pytest.mark.parametrize("kwargs,match", [
    ({"word_bytes": 3, "addr_bits": 10}, "whole number"),
    ({"word_bytes": 4, "addr_bits": 24}, "do not fit"),
    ({"word_bytes": 4, "addr_bits": 10, "base": -1}, "do not fit"),
])
def test_dram_port_rejects_bad_geometry(kwargs, match):
    with warnings.catch_warnings():
        # The rejected constructor leaves an elaboratable that is never used; collect it here.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            DramPort(**kwargs)
        gc.collect()


def _run_wide(ops, *, seed: int, stall: float, gap: float, rsp_stall: float, max_latency: int = 12,
              max_reads: int = 8):
    rng = random.Random(seed)
    dut = WideDramPort(word_bytes=4, addr_bits=12, native_data_width=128, native_addr_bits=12, base=100,
                       max_reads=max_reads)
    model = NativeModel(rng, stall=stall, max_latency=max_latency, full_writes=False)
    result = {}

    async def native(ctx):
        await model.run(ctx, dut.native, 128)

    async def engine(ctx):
        result["answers"], result["cycles"] = await engine_traffic(ctx, dut, rng, ops, gap=gap, rsp_stall=rsp_stall,
                                                                   max_cycles=50_000)
        for _ in range(2000):
            await ctx.tick()
            if model.writes_waiting == 0 and model.native_cmds == len(ops):
                break
        else:
            raise AssertionError(f"{model.writes_waiting} write beats never delivered")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(native)
    sim.add_testbench(engine)
    sim.run()
    return model, result


@pytest.mark.parametrize("stall,gap,rsp_stall", [(0.3, 0.3, 0.3), (0.6, 0.1, 0.6), (0.1, 0.0, 0.1)])
def test_wide_dram_port_random_traffic(stall, gap, rsp_stall):
    """Engine words as lanes of 128-bit native words: byte-enabled writes leave the other lanes alone."""
    rng = random.Random(int(stall * 100) + int(gap * 10))
    # Addresses clustered so that neighbouring lanes of one native word are written and read.
    addrs = [a for base in rng.sample(range(1 << 10), 12) for a in range(4 * base, 4 * base + 4)]
    ops = [(rng.random() < 0.5, rng.choice(addrs), rng.getrandbits(32)) for _ in range(800)]
    model, result = _run_wide(ops, seed=7, stall=stall, gap=gap, rsp_stall=rsp_stall)
    want, got = expected_answers(ops), result["answers"]
    assert len(got) == len(want)
    bad = [(n, g, w) for n, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, "first mismatches (answer, got, want): " + ", ".join(
        f"#{n}: 0x{g:x} != 0x{w:x}" for n, g, w in bad[:8])
    assert model.native_cmds == len(ops)
    final = {}
    for write, addr, data in ops:
        if write:
            final[addr] = data
    for addr, data in final.items():
        lane = model.mem[100 + addr // 4] >> 32 * (addr % 4) & 0xFFFFFFFF
        assert lane == data, f"native layout of word {addr}: lane {addr % 4} holds 0x{lane:x}, want 0x{data:x}"
    if stall:
        assert all(v > 0 for k, v in model.stalls.items() if k != "rdata_held"), model.stalls
    assert model.stalls["rdata_held"] == 0, "rdata_ready went low: the answer queue was full"


def test_wide_dram_port_throughput_without_stalls():
    """Back-to-back reads on a port that never stalls: one native command a cycle (16 reads in flight cover
    the round trip: queue, output stage, the model's latency, the answer queue)."""
    ops = [(False, a, 0) for a in range(256)]
    _, result = _run_wide(ops, seed=5, stall=0.0, gap=0.0, rsp_stall=0.0, max_latency=2, max_reads=16)
    cycles = result["cycles"]
    print(f"\n256 engine reads in {cycles} cycles: {256 / cycles:.3f} native commands/cycle")
    assert result["answers"] == [0] * 256
    assert cycles <= 256 + 12, cycles


@pytest.mark.parametrize("kwargs,match", [
    ({"word_bytes": 4, "addr_bits": 10, "native_data_width": 96}, "power-of-two"),
    ({"word_bytes": 4, "addr_bits": 28, "native_addr_bits": 25}, "do not fit"),
    ({"word_bytes": 4, "addr_bits": 10, "max_reads": 0}, "at least 1"),
])
def test_wide_dram_port_rejects_bad_geometry(kwargs, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            WideDramPort(**kwargs)
        gc.collect()
