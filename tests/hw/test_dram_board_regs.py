"""The DRAM board core's own blocks in the Amaranth simulator: the init sequencer, the register split and the
DDR3 read-delay setter.

:class:`DramInitSequencer` against a Wishbone slave model that acknowledges after random delays: every
write of the core's real init sequence arrives in order with its value, the waits between writes are at
least the sequence's, and ``status`` goes BUSY -> DONE when ``init_done`` rises, or BUSY -> TIMEOUT exactly
at the deadline when it never does (and on a write that is never acknowledged). :class:`DramRegisters`:
``DRAM_INIT`` carries the magic and the sequencer's bits, the hash registers keep what was written and
read 0 after reset, and every other register goes to (and comes back from) the engine's bus untouched.
:class:`ReadDelaySetter`: a ``DRAM_RDLY`` setting becomes exactly the BIOS's register writes (lane select,
delay reset and increments, bitslip reset and increments, deselect) for the selected lanes, under random
acknowledge delays; ``DRAM_RDLY`` reads back the setting with BUSY while they are played, ``NO_PHY`` on a
core without delay registers; ``DRAM_LEVEL`` keeps what the host wrote.
"""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from hw.boards.dram_board import (
    INIT_MAGIC,
    RDLY_CSRS,
    DramInitSequencer,
    DramReg,
    DramRegisters,
    InitBits,
    Rdly,
    ReadDelaySetter,
    init_status,
)
from hw.isa import Reg

#: A sequence shaped like the generated core's (tests/test_litedram_sim.py plays the real one on the real core).
WRITES = [(0x80C, 0, 0), (0x810, 0, 0), (0x800, 14, 40), (0x80C, 1024, 0), (0x804, 11, 0), (0x808, 1, 7),
          (0x800, 1, 0), (0x000, 1, 0)]


def _run_sequencer(writes, *, done_after: int | None, deadline: int, seed: int, never_ack: bool = False,
                   cycles: int = 2000):
    dut = DramInitSequencer(writes, deadline=deadline, ack_timeout=32)
    rng = random.Random(seed)
    log = {"writes": [], "status": []}

    async def slave(ctx):
        cycle, done_at = 0, None
        while cycle < cycles:
            cyc, stb = ctx.get(dut.wb.cyc), ctx.get(dut.wb.stb)
            ack = 0
            if cyc and stb and not never_ack and rng.random() < 0.4:
                ack = 1
                log["writes"].append((ctx.get(dut.wb.adr) << 2, ctx.get(dut.wb.dat_w), ctx.get(dut.wb.we),
                                      ctx.get(dut.wb.sel), cycle))
                if len(log["writes"]) == len(writes):
                    done_at = cycle
            ctx.set(dut.wb.ack, ack)
            if done_after is not None and done_at is not None and cycle >= done_at + done_after:
                ctx.set(dut.init_done, 1)
            log["status"].append((cycle, ctx.get(dut.status)))
            await ctx.tick()
            ctx.set(dut.wb.ack, 0)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(slave)
    sim.run()
    return dut, log


async def csr_read(ctx, csr, addr: int, *, settle: int) -> int:
    """A register read on the CSR bus: the strobe for one cycle, then ``settle`` more cycles, then ``r_data``."""
    ctx.set(csr.addr, addr)
    ctx.set(csr.r_stb, 1)
    await ctx.tick()
    ctx.set(csr.r_stb, 0)
    for _ in range(settle):
        await ctx.tick()
    return ctx.get(csr.r_data)



@pytest.mark.parametrize("seed", [1, 2, 3])

def test_sequencer_plays_every_write_in_order_then_done(seed):
    dut, log = _run_sequencer(WRITES, done_after=25, deadline=500, seed=seed)
    got = [(a, v) for a, v, _, _, _ in log["writes"]]
    assert got == [(a, v) for a, v, _ in WRITES], f"writes {got} != {[(a, v) for a, v, _ in WRITES]}"
    assert all(we == 1 and sel == 0xF for _, _, we, sel, _ in log["writes"])
    # The wait after each write is at least the sequence's (the chip's power-up and tRP/tRFC delays).
    times = [c for *_, c in log["writes"]]
    for i, (_, _, wait) in enumerate(WRITES[:-1]):
        assert times[i + 1] - times[i] > wait, f"write {i + 1} came {times[i + 1] - times[i]} cycles after " \
                                               f"write {i}, which needs {wait}"
    status = [s for _, s in log["status"]]
    assert status[0] == InitBits.BUSY
    assert status[-1] == InitBits.DONE, init_status(status[-1] | INIT_MAGIC << 16)


def test_sequencer_times_out_when_init_done_never_rises():
    deadline = 300
    dut, log = _run_sequencer(WRITES, done_after=None, deadline=deadline, seed=4)
    assert len(log["writes"]) == len(WRITES)
    end = log["writes"][-1][4]
    busy = [c for c, s in log["status"] if s & InitBits.BUSY]
    timeout = [c for c, s in log["status"] if s & InitBits.TIMEOUT]
    assert timeout, "TIMEOUT never set"
    assert log["status"][-1][1] == InitBits.TIMEOUT
    # BUSY until the deadline after the last write (its wait, the NEXT step, then `deadline` cycles), then TIMEOUT.
    assert deadline < timeout[0] - end <= deadline + WRITES[-1][2] + 4, (end, timeout[0])
    assert max(busy) < timeout[0]


def test_sequencer_times_out_on_a_write_never_acknowledged():
    dut, log = _run_sequencer(WRITES, done_after=None, deadline=300, seed=5, never_ack=True, cycles=200)
    assert log["writes"] == []
    first = next(c for c, s in log["status"] if s & InitBits.TIMEOUT)
    assert 32 <= first <= 34 and log["status"][-1][1] == InitBits.TIMEOUT


def test_registers_split_between_board_and_engine():
    dut = DramRegisters()
    seen = {"engine_writes": [], "engine_reads": []}

    async def engine(ctx):
        # A register file stand-in: r_data = 0x1000 + address, one cycle after r_stb.
        async for _clk, _rst, r_stb, w_stb, addr, w_data in ctx.tick().sample(
                dut.engine.r_stb, dut.engine.w_stb, dut.engine.addr, dut.engine.w_data):
            if r_stb:
                seen["engine_reads"].append(addr)
                ctx.set(dut.engine.r_data, 0x1000 + addr)
            if w_stb:
                seen["engine_writes"].append((addr, w_data))

    async def host(ctx):
        async def read(addr):
            return await csr_read(ctx, dut.csr, addr, settle=1)

        async def write(addr, value):
            ctx.set(dut.csr.addr, addr)
            ctx.set(dut.csr.w_data, value)
            ctx.set(dut.csr.w_stb, 1)
            await ctx.tick()
            ctx.set(dut.csr.w_stb, 0)

        ctx.set(dut.init_status, InitBits.DONE)
        assert await read(DramReg.DRAM_INIT) == INIT_MAGIC << 16 | InitBits.DONE
        assert await read(DramReg.PROG_HASH_LO) == 0 and await read(DramReg.PROG_HASH_HI) == 0
        await write(DramReg.PROG_HASH_LO, 0xDEADBEEF)
        await write(DramReg.PROG_HASH_HI, 0x01234567)
        assert await read(DramReg.PROG_HASH_LO) == 0xDEADBEEF
        assert await read(DramReg.PROG_HASH_HI) == 0x01234567
        for reg in (Reg.ID, Reg.STATUS, Reg.SCRATCH):
            assert await read(reg) == 0x1000 + reg
        await write(Reg.SCRATCH, 77)
        ctx.set(dut.init_status, InitBits.TIMEOUT)
        assert await read(DramReg.DRAM_INIT) == INIT_MAGIC << 16 | InitBits.TIMEOUT

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(engine)
    sim.add_testbench(host)
    sim.run_until(2e-4)
    assert seen["engine_writes"] == [(Reg.SCRATCH, 77)], seen
    assert seen["engine_reads"] == [Reg.ID, Reg.STATUS, Reg.SCRATCH], seen


def test_run_link_counters_count_during_a_run_only():
    """RUN_LINK_WORDS/BYTES: strobes counted while busy, cleared when a run starts, held after it."""
    dut = DramRegisters()
    rng = random.Random(11)
    plan = []    # (busy, word, byte) per cycle: idle traffic, a run with traffic, idle traffic, a second run
    for busy, n in ((0, 50), (1, 300), (0, 80), (1, 120), (0, 40)):
        plan += [(busy, rng.random() < 0.3, rng.random() < 0.6) for _ in range(n)]
    runs = [[0, 0], [0, 0]]
    k = -1
    for i, (busy, word, byte) in enumerate(plan):
        if busy and (i == 0 or not plan[i - 1][0]):
            k += 1
        if busy:
            runs[k][0] += word
            runs[k][1] += byte
    seen = []

    async def bench(ctx):
        async def read(addr):
            return await csr_read(ctx, dut.csr, addr, settle=0)

        for i, (busy, word, byte) in enumerate(plan):
            ctx.set(dut.busy, busy)
            ctx.set(dut.link_word, word)
            ctx.set(dut.link_byte, byte)
            await ctx.tick()
            if not busy and i + 1 < len(plan) and plan[i + 1][0] or i + 1 == len(plan):
                seen.append((await read(DramReg.RUN_LINK_WORDS), await read(DramReg.RUN_LINK_BYTES)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # Read before the second run (the first run's counts, held through idle traffic) and at the end.
    assert seen == [(0, 0), tuple(runs[0]), tuple(runs[1])], (seen, runs)


#: Byte addresses of the PHY's read-delay registers, as in the generated ECPIX-5 core's csr.csv (order of RDLY_CSRS).
RDLY_ADDRS = dict(zip(RDLY_CSRS, (0x1000, 0x1004, 0x1008, 0x100C, 0x1010), strict=True))


def bios_writes(delay: int, bitslip: int, modules: int) -> list[tuple[int, int]]:
    a = RDLY_ADDRS
    out = []
    for lane in range(Rdly.LANES):
        if modules >> lane & 1:
            out += [(a["ddrphy_dly_sel"], 1 << lane), (a["ddrphy_rdly_dq_rst"], 1)]
            out += [(a["ddrphy_rdly_dq_inc"], 1)] * delay + [(a["ddrphy_rdly_dq_bitslip_rst"], 1)]
            out += [(a["ddrphy_rdly_dq_bitslip"], 1)] * bitslip
    return out + [(a["ddrphy_dly_sel"], 0)]


@pytest.mark.parametrize("settings", [[(0, 0, 3)], [(7, 3, 3), (2, 1, 1), (5, 0, 2)]])
def test_read_delay_setter_plays_the_bios_writes(settings):
    dut = ReadDelaySetter(RDLY_ADDRS, ack_timeout=32)
    rng = random.Random(len(settings))
    got, busy_cycles = [], []

    async def bench(ctx):
        for delay, bitslip, modules in settings:
            ctx.set(dut.setting, Rdly.pack(delay, bitslip, modules))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            log, n = [], 0
            while True:
                assert n < 2000, "the setter never finished"
                cyc, stb, busy = ctx.get(dut.wb.cyc), ctx.get(dut.wb.stb), ctx.get(dut.busy)
                ack = bool(cyc and stb and rng.random() < 0.5)
                if ack:
                    log.append((ctx.get(dut.wb.adr) << 2, ctx.get(dut.wb.dat_w)))
                ctx.set(dut.wb.ack, ack)
                await ctx.tick()
                ctx.set(dut.wb.ack, 0)
                n += 1
                if not busy:
                    break
            got.append(log)
            busy_cycles.append(n)
            assert not ctx.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for (delay, bitslip, modules), log in zip(settings, got, strict=True):
        want = bios_writes(delay, bitslip, modules)
        assert log == want, f"setting {(delay, bitslip, modules)}: writes {log} != {want}"


def test_rdly_and_level_registers():
    for has_rdly in (True, False):
        dut = DramRegisters(has_rdly=has_rdly)
        seen = {}

        async def bench(ctx, dut=dut, has_rdly=has_rdly, seen=seen):
            async def read(addr):
                return await csr_read(ctx, dut.csr, addr, settle=0)

            assert await read(DramReg.DRAM_LEVEL) == 0
            ctx.set(dut.csr.addr, DramReg.DRAM_RDLY)
            ctx.set(dut.csr.w_data, Rdly.pack(5, 2, 3))
            ctx.set(dut.csr.w_stb, 1)
            await ctx.tick()
            ctx.set(dut.csr.w_stb, 0)
            seen["start"] = ctx.get(dut.rdly_start)
            ctx.set(dut.rdly_busy, 1)
            seen["busy"] = await read(DramReg.DRAM_RDLY)
            ctx.set(dut.rdly_busy, 0)
            seen["idle"] = await read(DramReg.DRAM_RDLY)
            ctx.set(dut.csr.addr, DramReg.DRAM_LEVEL)
            ctx.set(dut.csr.w_data, Rdly.LEVELED | 0x2513)
            ctx.set(dut.csr.w_stb, 1)
            await ctx.tick()
            ctx.set(dut.csr.w_stb, 0)
            seen["level"] = await read(DramReg.DRAM_LEVEL)

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        setting = Rdly.pack(5, 2, 3)
        no_phy = 0 if has_rdly else Rdly.NO_PHY
        assert seen == {"start": int(has_rdly), "busy": setting | Rdly.BUSY | no_phy, "idle": setting | no_phy,
                        "level": Rdly.LEVELED | 0x2513}, (has_rdly, seen)



def pinless_link(spec, *, without=()):
    """A link with the members the DRAM core uses and no pins (as a USB link, which requests its pins itself);
    it never sends anything: enough to elaborate the core around it."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import Out

    from hw.bus import CsrSignature, MemPortSignature

    members = {"csr": Out(CsrSignature), "mem": Out(MemPortSignature(spec.engine.rows, spec.engine.mem_addr_bits)),
               "active": Out(1), "errors": Out(1), "rx_byte": Out(1)}

    class Link(wiring.Component):
        def elaborate(self, platform):
            return Module()

    return Link({k: v for k, v in members.items() if k not in without})


@pytest.mark.parametrize("board", ["ulx3s-85f", "ecpix5-85f"])
def test_board_core_takes_a_link_without_pins(board):
    """``link=``: the core's members are the link's own pins (none here), and it elaborates; a link lacking a
    member the core needs is refused by name."""
    import gc
    import shutil
    import sys
    import warnings
    from pathlib import Path

    from amaranth.back import rtlil
    from amaranth.hdl import UnusedElaboratable

    from hw.boards import BOARDS
    from hw.boards.dram_board import DramBoardCore

    if shutil.which("litedram_gen") is None and not (Path(sys.executable).parent / "litedram_gen").exists():
        pytest.skip("litedram_gen not installed (pip install -e '.[dram]')")
    spec = BOARDS[board]
    core = DramBoardCore(spec, sim=True, link=pinless_link(spec))
    assert set(core.signature.members) == {"irq", "busy", "link_active", "dram_ready"}
    assert core.link_pins == [] and not core.owns_clock
    assert "litedram_core" in rtlil.convert(core, name="top")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=r"the link Link lacks the members \['rx_byte'\]"):
            DramBoardCore(spec, sim=True, link=pinless_link(spec, without=("rx_byte",)))
        gc.collect()
