"""The ULX3S's LiteDRAM SDRAM core (with LiteDRAM's SDRAMPHYModel inside) in Verilator, at its native port.

The core comes from ``hw/boards/dram/ulx3s_sdram.yml`` through :func:`hw.boards.dram.gen.generate`
(``litedram_gen --sim`` in a subprocess) and is built by :func:`sim.build.build` inside a small
clock-generating wrapper. The cocotb bench (:func:`litedram_bench`, run in the simulator) plays the
BIOS's ``sdram_init()`` over the core's ``wb_ctrl`` bus, waits for ``init_done`` with an absolute
cycle deadline, then:

* writes random 16-bit words (random byte masks included) at random distinct addresses, reads them
  back in a different random order and compares every word exactly with a Python model;
* measures the read latency (cycles from the accepted read command to its data, one read at a time);
* measures sustained sequential write and read bandwidth (words per cycle, refresh included).

A second run skips the initialisation and checks that waiting for ``init_done`` fails with a
clear message at its deadline instead of hanging. A third build puts :class:`hw.dram_port.DramPort`
in front of the core (an Amaranth top with the core as an ``Instance``) and checks random 32-bit
engine traffic in order through it, exactly, with its sequential read and write throughput.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.verilator

#: Simulated cycles the bench allows the initialisation sequence plus ``init_done``.
INIT_DEADLINE = 60_000
#: Per-phase absolute deadline (cycles) of the traffic phases.
PHASE_DEADLINE = 200_000
WRAPPER = "litedram_tb"
ENV_RESULT = "KINDLING_DRAM_RESULT"
ENV_SKIP_INIT = "KINDLING_DRAM_SKIP_INIT"
ENV_WORDS = "KINDLING_DRAM_WORDS"


def wrapper_verilog(core) -> str:
    """A test-bench module around ``core`` that toggles its ``clk`` every 5 ns (100 MHz simulated).

    Every other port becomes a VPI-visible ``reg`` (input) or ``wire`` (output) of the wrapper.
    """
    lines = ["`timescale 1ns / 1ps", f"module {WRAPPER};"]
    for port in core.ports.values():
        kind = "reg" if port.direction == "input" else "wire"
        width = f"[{port.width - 1}:0] " if port.width > 1 else ""
        lines.append(f"  {kind} {width}{port.name} /*verilator public_flat_rw*/;")
    lines += ["  initial clk = 1'b0;", "  always #5 clk = ~clk;",
              f"  {core.name} core (" + ", ".join(f".{p}({p})" for p in core.ports) + ");", "endmodule"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def dram_build():
    if shutil.which("litedram_gen") is None and not (Path(sys.executable).parent / "litedram_gen").exists():
        pytest.skip("litedram_gen not installed (pip install -e '.[dram]')")
    from hw.boards.dram.gen import generate
    from sim.build import TIMING_ARGS, build

    t0 = time.monotonic()
    core = generate(sim=True)
    text = core.verilog.read_text() + wrapper_verilog(core)
    built = build(text, name=WRAPPER, internal_clock=False, extra_args=[*TIMING_ARGS, "-Wno-lint", "-Wno-style"],
                  metadata={"core": str(core.verilog)})
    print(f"\nLiteDRAM core {core.verilog} ({core.native_data_width}-bit native port, "
          f"{core.native_address_width}-bit address, {core.size_bytes >> 20} MB); Verilator build "
          f"{'cached' if built.cached else 'built'}; generation and build {time.monotonic() - t0:.1f} s")
    return core, built


def run_bench(dram_build, tmp_path, testcase: str = "litedram_bench", toplevel: str = WRAPPER, **env) -> dict:
    """Run :func:`litedram_bench` on the built core; return the figures it wrote."""
    from cocotb_tools.runner import get_results

    from sim.build import verilator_runner

    core, built = dram_build
    result = tmp_path / "result.json"
    runner = verilator_runner(False)
    runner.log.setLevel(logging.WARNING)
    t0 = time.monotonic()
    xml = runner.test(test_module="tests.test_litedram_sim", testcase=testcase, hdl_toplevel=toplevel,
                      hdl_toplevel_lang="verilog",
                      build_dir=built.directory, test_dir=tmp_path, log_file=tmp_path / "sim.log",
                      extra_env={ENV_RESULT: str(result), "COCOTB_LOG_LEVEL": "WARNING",
                                 "KINDLING_DRAM_CSRS": json.dumps(core.csrs),
                                 "KINDLING_DRAM_INIT": json.dumps(core.init_writes), **env})
    wall = time.monotonic() - t0
    tests, failed = get_results(xml)
    if not result.exists():
        log = (tmp_path / "sim.log").read_text(errors="replace") if (tmp_path / "sim.log").exists() else ""
        pytest.fail(f"the bench wrote no result ({tests} tests, {failed} failed):\n{log[-3000:]}")
    figures = json.loads(result.read_text())
    figures["wall_seconds"] = wall
    return figures


def test_litedram_native_port_random_traffic_and_bandwidth(dram_build, tmp_path):
    words = int(os.environ.get(ENV_WORDS, "3000"))
    fig = run_bench(dram_build, tmp_path, **{ENV_WORDS: str(words)})
    assert fig.get("error") is None, fig["error"]
    print(f"init_done after {fig['init_cycles']} cycles; {fig['words']} random words written and read back "
          f"in random order: {fig['mismatches']} mismatches")
    print(f"read latency (accepted cmd -> rdata valid, one read at a time): min {fig['lat_min']}, "
          f"mean {fig['lat_mean']:.2f}, max {fig['lat_max']} cycles over {fig['lat_n']} reads")
    print(f"sequential write: {fig['seq_words']} words in {fig['seq_write_cycles']} cycles = "
          f"{fig['seq_words'] / fig['seq_write_cycles']:.3f} words/cycle")
    print(f"sequential read:  {fig['seq_words']} words in {fig['seq_read_cycles']} cycles = "
          f"{fig['seq_words'] / fig['seq_read_cycles']:.3f} words/cycle")
    print(f"random write {fig['rand_write_cycles']} cycles, random read {fig['rand_read_cycles']} cycles for "
          f"{fig['words']} words; simulated {fig['total_cycles']} cycles in {fig['wall_seconds']:.1f} s")
    assert fig["words"] == words and fig["checked"] == words
    assert fig["mismatches"] == 0, fig["first_mismatches"]
    # Sanity of the measurements themselves: a read cannot be answered in the cycle it is accepted,
    # and a 1:1 SDR controller moves at most one word per cycle.
    assert 1 <= fig["lat_min"] <= fig["lat_max"]
    assert 0 < fig["seq_words"] / fig["seq_read_cycles"] <= 1
    assert 0 < fig["seq_words"] / fig["seq_write_cycles"] <= 1


def test_litedram_without_init_fails_at_deadline(dram_build, tmp_path):
    fig = run_bench(dram_build, tmp_path, **{ENV_SKIP_INIT: "1"})
    print(fig.get("error"))
    assert fig.get("error") == f"DRAM init_done still low after {INIT_DEADLINE} cycles (init_error=0)"
    # The user port is blocked while init_done is low: a command offered during the wait was never accepted.
    assert fig["cmd_accepted_before_init"] is False


# --------------------------------------------------------------------------------------------------
# The cocotb side (runs inside the simulator).

try:
    import cocotb
    from cocotb.triggers import FallingEdge, ReadOnly, Timer
except ImportError:  # pragma: no cover - cocotb is a test dependency
    cocotb = None


class DeadlineError(AssertionError):
    """A phase of the bench did not finish within its absolute cycle deadline."""


class NativePortBench:
    """Drives the core's native port one cycle at a time (inputs at the falling edge, sampling settled)."""

    def __init__(self, dut):
        self.dut = dut
        self.cycle = 0
        self.mem: dict[int, int] = {}

    def port(self, name):
        return getattr(self.dut, f"user_port_native_0_{name}")

    async def tick(self):
        await FallingEdge(self.dut.clk)
        self.cycle += 1

    async def wb_write(self, byte_addr: int, value: int):
        dut = self.dut
        await self.tick()
        dut.wb_ctrl_adr.value = byte_addr >> 2
        dut.wb_ctrl_dat_w.value = value
        dut.wb_ctrl_sel.value = 0xF
        dut.wb_ctrl_we.value = 1
        dut.wb_ctrl_cyc.value = 1
        dut.wb_ctrl_stb.value = 1
        for _ in range(64):
            await ReadOnly()
            acked = int(dut.wb_ctrl_ack.value)
            await self.tick()
            if acked:
                break
        else:
            raise DeadlineError(f"wb_ctrl write to 0x{byte_addr:x} not acknowledged in 64 cycles")
        dut.wb_ctrl_cyc.value = 0
        dut.wb_ctrl_stb.value = 0
        dut.wb_ctrl_we.value = 0

    async def wait_init(self, csrs, init_writes, skip_init: bool) -> int:
        """Play the init writes (unless ``skip_init``), then wait for init_done; return the cycle it rose."""
        dut = self.dut
        self.port("cmd_valid").value = 1  # offered all along: must not be accepted before init_done
        self.port("cmd_we").value = 0
        self.port("cmd_addr").value = 0
        self.cmd_accepted_before_init = False
        if not skip_init:
            for reg, value, wait in init_writes:
                await self.wb_write(csrs[reg], value)
                if wait:
                    await Timer(10 * wait, unit="ns")
                    self.cycle += wait
        while True:
            await ReadOnly()
            if int(self.port("cmd_ready").value):
                self.cmd_accepted_before_init = not int(dut.init_done.value)
            if int(dut.init_done.value):
                break
            if self.cycle >= INIT_DEADLINE:
                raise DeadlineError(f"DRAM init_done still low after {INIT_DEADLINE} cycles "
                                    f"(init_error={int(dut.init_error.value)})")
            await self.tick()
        done = self.cycle
        # The probe read may be accepted on the edge after init_done rose: drain its answer.
        await self.tick()
        self.port("cmd_valid").value = 0
        self.port("rdata_ready").value = 1
        for _ in range(64):
            await self.tick()
        return done

    async def traffic(self, cmds, *, one_at_a_time: bool = False, name: str = "traffic"):
        """Issue ``cmds`` ((we, addr, data, mask) tuples) back to back; return (cycles, reads, latencies).

        Write data follows its accepted command in order; read data is collected in order and applied
        nowhere. With ``one_at_a_time``, a command is issued only when the port is idle.
        """
        p = self.port
        p("rdata_ready").value = 1
        start = self.cycle
        deadline = start + PHASE_DEADLINE
        issued = 0
        pending_w: list = []
        pending_r: list = []
        reads: list = []
        latencies: list = []
        first_accept = last_done = None
        while issued < len(cmds) or pending_w or pending_r:
            if self.cycle >= deadline:
                raise DeadlineError(f"{name}: {issued}/{len(cmds)} commands issued, {len(pending_w)} writes and "
                                    f"{len(pending_r)} reads outstanding after {PHASE_DEADLINE} cycles")
            idle = not pending_w and not pending_r
            offer = issued < len(cmds) and (idle or not one_at_a_time)
            if offer:
                we, addr, _, _ = cmds[issued]
                p("cmd_valid").value = 1
                p("cmd_we").value = we
                p("cmd_addr").value = addr
            else:
                p("cmd_valid").value = 0
            if pending_w:
                _, addr, data, mask = pending_w[0]
                p("wdata_valid").value = 1
                p("wdata_data").value = data
                p("wdata_we").value = mask
            else:
                p("wdata_valid").value = 0
            await ReadOnly()
            if int(p("rdata_valid").value):
                if not pending_r:
                    raise AssertionError(f"{name}: rdata_valid with no read outstanding at cycle {self.cycle}")
                addr, t_cmd = pending_r.pop(0)
                reads.append((addr, int(p("rdata_data").value)))
                latencies.append(self.cycle - t_cmd)
                last_done = self.cycle
            if pending_w and int(p("wdata_ready").value):
                _, addr, data, mask = pending_w.pop(0)
                old = self.mem.get(addr, 0)
                for lane in range(2):
                    if mask >> lane & 1:
                        old = old & ~(0xFF << 8 * lane) | data & (0xFF << 8 * lane)
                self.mem[addr] = old
                last_done = self.cycle
            if offer and int(p("cmd_ready").value):
                cmd = cmds[issued]
                issued += 1
                first_accept = self.cycle if first_accept is None else first_accept
                (pending_w if cmd[0] else pending_r).append(cmd if cmd[0] else (cmd[1], self.cycle))
            await self.tick()
        p("cmd_valid").value = 0
        p("wdata_valid").value = 0
        return last_done - first_accept + 1, reads, latencies


if cocotb is not None:

    @cocotb.test()
    async def litedram_bench(dut):
        """Init, random traffic checked exactly, latency and bandwidth; figures to $KINDLING_DRAM_RESULT."""
        out = Path(os.environ[ENV_RESULT])
        csrs = json.loads(os.environ["KINDLING_DRAM_CSRS"])
        init_writes = json.loads(os.environ["KINDLING_DRAM_INIT"])
        skip_init = os.environ.get(ENV_SKIP_INIT, "0") == "1"
        n = int(os.environ.get(ENV_WORDS, "3000"))
        for name in ("wb_ctrl_cyc", "wb_ctrl_stb", "wb_ctrl_we", "wb_ctrl_adr", "wb_ctrl_dat_w", "wb_ctrl_sel",
                     "wb_ctrl_cti", "wb_ctrl_bte", "sim_trace", "user_port_native_0_cmd_valid",
                     "user_port_native_0_wdata_valid", "user_port_native_0_rdata_ready"):
            getattr(dut, name).value = 0
        bench = NativePortBench(dut)
        fig: dict = {}
        try:
            fig["init_cycles"] = await bench.wait_init(csrs, init_writes, skip_init)
        except DeadlineError as exc:
            fig.update(error=str(exc), cmd_accepted_before_init=bench.cmd_accepted_before_init)
            out.write_text(json.dumps(fig))
            return
        fig["cmd_accepted_before_init"] = bench.cmd_accepted_before_init
        rng = random.Random(11)
        size = 1 << len(dut.user_port_native_0_cmd_addr)
        addrs = rng.sample(range(size), n)
        writes = [(1, a, rng.getrandbits(16), rng.choice((3, 3, 3, 1, 2))) for a in addrs]
        fig["rand_write_cycles"], _, _ = await bench.traffic(writes, name="random writes")
        order = addrs[:]
        rng.shuffle(order)
        fig["rand_read_cycles"], reads, _ = await bench.traffic([(0, a, 0, 0) for a in order], name="random reads")
        mism = [(a, got, bench.mem.get(a, 0)) for a, got in reads if got != bench.mem.get(a, 0)]
        fig.update(words=n, checked=len(reads), mismatches=len(mism),
                   first_mismatches=[f"addr 0x{a:06x}: got 0x{g:04x} want 0x{w:04x}" for a, g, w in mism[:8]])
        # Latency: one read at a time at random addresses (row misses and hits both occur).
        _, reads, lat = await bench.traffic([(0, a, 0, 0) for a in rng.sample(addrs, 200)], one_at_a_time=True,
                                            name="latency reads")
        fig.update(lat_n=len(lat), lat_min=min(lat), lat_max=max(lat), lat_mean=sum(lat) / len(lat))
        # Sequential bandwidth over a region long enough to include refreshes (tREFI ~ 390 cycles at 50 MHz).
        seq = 4096
        base = rng.randrange(0, size - seq)
        fig["seq_words"] = seq
        fig["seq_write_cycles"], _, _ = await bench.traffic(
            [(1, base + i, rng.getrandbits(16), 3) for i in range(seq)], name="sequential writes")
        fig["seq_read_cycles"], reads, _ = await bench.traffic([(0, base + i, 0, 0) for i in range(seq)],
                                                               name="sequential reads")
        bad = [(a, g) for a, g in reads if g != bench.mem[a]]
        fig["mismatches"] += len(bad)
        fig["first_mismatches"] += [f"seq addr 0x{a:06x}: got 0x{g:04x} want 0x{bench.mem[a]:04x}" for a, g in bad[:8]]
        fig["total_cycles"] = bench.cycle
        out.write_text(json.dumps(fig))


# --------------------------------------------------------------------------------------------------
# hw.dram_port.DramPort in front of the real core: the engine's memory port on LiteDRAM in Verilator.

ENGINE_WORD_BYTES = 4
ENGINE_ADDR_BITS = 20


def engine_top(core):
    """An Amaranth top: flat engine-port pins -> DramPort -> the LiteDRAM core (an ``Instance``)."""
    from amaranth import ClockSignal, Instance, Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from hw.dram_port import DramPort

    class DramEngineTop(wiring.Component):
        def __init__(self):
            super().__init__({
                "req_valid": In(1), "req_ready": Out(1), "req_write": In(1), "req_addr": In(ENGINE_ADDR_BITS),
                "req_data": In(8 * ENGINE_WORD_BYTES), "rsp_valid": Out(1), "rsp_ready": In(1),
                "rsp_data": Out(8 * ENGINE_WORD_BYTES), "init_done": Out(1), "init_error": Out(1),
                "wb_ctrl_adr": In(30), "wb_ctrl_dat_w": In(32), "wb_ctrl_dat_r": Out(32), "wb_ctrl_sel": In(4),
                "wb_ctrl_cyc": In(1), "wb_ctrl_stb": In(1), "wb_ctrl_we": In(1), "wb_ctrl_ack": Out(1),
            })

        def elaborate(self, platform):
            m = Module()
            m.submodules.port = port = DramPort(word_bytes=ENGINE_WORD_BYTES, addr_bits=ENGINE_ADDR_BITS,
                                                native_data_width=core.native_data_width,
                                                native_addr_bits=core.native_address_width)
            req, rsp, nat = port.mem.req, port.mem.rsp, port.native
            m.d.comb += [
                req.valid.eq(self.req_valid), self.req_ready.eq(req.ready), req.payload.write.eq(self.req_write),
                req.payload.addr.eq(self.req_addr), req.payload.data.eq(self.req_data),
                self.rsp_valid.eq(rsp.valid), rsp.ready.eq(self.rsp_ready), self.rsp_data.eq(rsp.payload),
            ]
            ports = {"i_clk": ClockSignal(), "i_sim_trace": 0,
                     "o_user_clk": Signal(), "o_user_rst": Signal(), "o_wb_ctrl_err": Signal(),
                     "i_wb_ctrl_cti": 0, "i_wb_ctrl_bte": 0,
                     "o_init_done": self.init_done, "o_init_error": self.init_error}
            for name in ("adr", "dat_w", "sel", "cyc", "stb", "we"):
                ports[f"i_wb_ctrl_{name}"] = getattr(self, f"wb_ctrl_{name}")
            for name in ("dat_r", "ack"):
                ports[f"o_wb_ctrl_{name}"] = getattr(self, f"wb_ctrl_{name}")
            for name, pin in core.ports.items():
                if name.startswith("user_port_native_0_"):
                    member = getattr(nat, name[len("user_port_native_0_"):])
                    ports[f"{'i' if pin.direction == 'input' else 'o'}_{name}"] = member
            missing = set(core.ports) - {key[2:] for key in ports}
            assert not missing, f"core ports not bound: {sorted(missing)}"
            m.submodules.core = Instance(core.name, **ports)
            return m

    return DramEngineTop()


@pytest.fixture(scope="module")
def engine_build():
    if shutil.which("litedram_gen") is None and not (Path(sys.executable).parent / "litedram_gen").exists():
        pytest.skip("litedram_gen not installed (pip install -e '.[dram]')")
    from hw.boards.dram.gen import generate
    from sim.build import build, to_verilog

    core = generate(sim=True)
    # One time scale for everything: the Amaranth parts and the clock wrapper have none.
    lite = "\n".join(line for line in core.verilog.read_text().splitlines() if not line.startswith("`timescale"))
    built = build(lite + "\n" + to_verilog(engine_top(core), name="top"), name="top",
                  extra_args=["-Wno-lint", "-Wno-style"], metadata={"core": str(core.verilog)})
    return core, built


def test_dram_port_on_litedram(engine_build, tmp_path):
    """The engine's 32-bit memory port through DramPort on the real core: random traffic exact, read throughput."""
    fig = run_bench(engine_build, tmp_path, testcase="dram_engine_bench", toplevel=engine_build[1].toplevel)
    assert fig.get("error") is None, fig["error"]
    print(f"\nDramPort on LiteDRAM: {fig['ops']} random engine requests ({fig['reads']} reads) in "
          f"{fig['rand_cycles']} cycles, {fig['mismatches']} mismatches; {fig['seq']} sequential 32-bit reads in "
          f"{fig['seq_read_cycles']} cycles = {fig['seq'] / fig['seq_read_cycles']:.3f} engine words/cycle; "
          f"{fig['seq']} sequential writes in {fig['seq_write_cycles']} cycles "
          f"({fig['wall_seconds']:.1f} s)")
    assert fig["reads"] > 0 and fig["checked"] == fig["reads"]
    assert fig["mismatches"] == 0, fig["first_mismatches"]


if cocotb is not None:

    @cocotb.test()
    async def dram_engine_bench(dut):
        """DramPort + LiteDRAM: init, random engine traffic checked in order, sequential throughput."""
        out = Path(os.environ[ENV_RESULT])
        csrs = json.loads(os.environ["KINDLING_DRAM_CSRS"])
        init_writes = json.loads(os.environ["KINDLING_DRAM_INIT"])
        for name in ("rst", "req_valid", "rsp_ready", "wb_ctrl_cyc", "wb_ctrl_stb", "wb_ctrl_we", "wb_ctrl_adr",
                     "wb_ctrl_dat_w", "wb_ctrl_sel"):
            getattr(dut, name).value = 0
        bench = NativePortBench(dut)
        fig: dict = {}
        for reg, value, wait in init_writes:
            await bench.wb_write(csrs[reg], value)
            if wait:
                await Timer(10 * wait, unit="ns")
                bench.cycle += wait
        while not int(dut.init_done.value):
            if bench.cycle >= INIT_DEADLINE:
                fig["error"] = f"DRAM init_done still low after {INIT_DEADLINE} cycles"
                out.write_text(json.dumps(fig))
                return
            await bench.tick()
        rng = random.Random(12)
        span = rng.sample(range(1 << ENGINE_ADDR_BITS), 256)
        ops = [(rng.random() < 0.5, rng.choice(span), rng.getrandbits(32)) for _ in range(1500)]

        async def engine(ops, name):
            answers, i, start = [], 0, bench.cycle
            n_reads = sum(1 for w, _, _ in ops if not w)
            dut.rsp_ready.value = 1
            while i < len(ops) or len(answers) < n_reads:
                if bench.cycle - start > PHASE_DEADLINE:
                    raise DeadlineError(f"{name}: {i}/{len(ops)} requests, {len(answers)}/{n_reads} answers "
                                        f"after {PHASE_DEADLINE} cycles")
                offer = i < len(ops)
                dut.req_valid.value = offer
                if offer:
                    dut.req_write.value, dut.req_addr.value, dut.req_data.value = ops[i]
                await ReadOnly()
                if offer and int(dut.req_ready.value):
                    i += 1
                if int(dut.rsp_valid.value):
                    answers.append(int(dut.rsp_data.value))
                await bench.tick()
            dut.req_valid.value = 0
            return answers, bench.cycle - start

        try:
            answers, fig["rand_cycles"] = await engine(ops, "random traffic")
            mem, want = {}, []
            for write, addr, data in ops:
                if write:
                    mem[addr] = data
                else:
                    want.append(mem.get(addr, 0))
            bad = [(n, g, w) for n, (g, w) in enumerate(zip(answers, want, strict=True)) if g != w]
            fig.update(ops=len(ops), reads=len(want), checked=len(answers), mismatches=len(bad),
                       first_mismatches=[f"answer {n}: got 0x{g:08x} want 0x{w:08x}" for n, g, w in bad[:8]])
            seq = 2048
            fig["seq"] = seq
            _, fig["seq_write_cycles"] = await engine([(1, a, a * 2654435761 % 2**32) for a in range(seq)],
                                                      "seq writes")
            got, fig["seq_read_cycles"] = await engine([(0, a, 0) for a in range(seq)], "seq reads")
            seq_bad = [a for a in range(seq) if got[a] != a * 2654435761 % 2**32]
            fig["mismatches"] += len(seq_bad)
            fig["first_mismatches"] += [f"seq word {a}: got 0x{got[a]:08x}" for a in seq_bad[:8]]
        except DeadlineError as exc:
            fig["error"] = str(exc)
        out.write_text(json.dumps(fig))
