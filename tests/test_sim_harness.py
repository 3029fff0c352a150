"""The simulation harness: SimMemory and CopyEngine in the Python simulator, and the Verilator path.

The Python-simulator tests check the memory's timing contract (latency,
throughput, in-order answers, stream rules, outstanding limit), its stall
generator bit-exactly against :func:`sim.memory.xorshift32`, and the fixture
DMA. The Verilator tests (``-m verilator``) run the whole path the driver will
use: a multi-megabyte image through the VPI backdoor, a copy through the
gateware with stalls off and on, the read-back compared exactly, timeouts and
build caching.
"""

from __future__ import annotations

import gc
import random
import time

import numpy as np
import pytest
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.bus import CsrSignature
from hw.isa import ENGINE_ID, VERSION, Ctrl, EngineConfig, ErrorCode, Reg, Status
from sim.fixtures import CopyEngine
from sim.memory import SimMemory, xorshift32
from sim.top import SimTop
from sw.transport import EngineTimeout, Transport, TransportError

CLOCK = 1e-8

# Constructors that reject their arguments leave an elaboratable that is never used.
rejects = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def simulate(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(CLOCK)
    sim.add_testbench(testbench)
    sim.run()


def first_mismatches(got: bytes, want: bytes, word_bytes: int, base: int = 0, show: int = 8) -> str:
    """Describe where two word images differ (empty string when equal)."""
    if got == want:
        return ""
    if len(got) != len(want):
        return f"lengths differ: got {len(got)} bytes, expected {len(want)}"
    g = np.frombuffer(got, np.uint8).reshape(-1, word_bytes)
    w = np.frombuffer(want, np.uint8).reshape(-1, word_bytes)
    bad = np.flatnonzero((g != w).any(axis=1))
    lines = [f"{len(bad)} of {len(g)} words differ; first ones:"]
    for i in bad[:show]:
        lines.append(f"  word {base + i:#x}: got {g[i].tobytes()[::-1].hex()} "
                     f"expected {w[i].tobytes()[::-1].hex()}")
    return "\n".join(lines)


# --- SimMemory in the Python simulator --------------------------------------------------------

class MemTB:
    """Drives a SimMemory cycle by cycle, checking every answer against a Python model.

    Reads see every write accepted before them; answers must come back in
    order; an answer shown with ``ready`` low must stay, unchanged.
    """

    def __init__(self, mem: SimMemory, *, seed: int, gap: float = 0.0, backpressure: float = 0.0,
                 init: bytes = b""):
        self.mem = mem
        self.rng = random.Random(seed)
        self.gap = gap
        self.backpressure = backpressure
        self.image = bytearray(mem.mem_words * mem.word_bytes)
        self.image[:len(init)] = init
        self.latencies = []
        self.ready_trace = []
        self.cycles = 0

    def word(self, addr: int) -> int:
        wb = self.mem.word_bytes
        return int.from_bytes(self.image[addr * wb:(addr + 1) * wb], "little")

    async def run(self, ctx, ops, *, max_cycles: int = 20000):
        bus = self.mem.bus
        pending = []  # (expected data, cycle accepted)
        shown = None  # payload shown last cycle and not taken
        i = 0
        while i < len(ops) or pending:
            assert self.cycles < max_cycles, f"stuck: {len(ops) - i} ops left, {len(pending)} answers due"
            offer = i < len(ops) and self.rng.random() >= self.gap
            if offer:
                op = ops[i]
                ctx.set(bus.req.valid, 1)
                ctx.set(bus.req.payload.addr, op[1])
                ctx.set(bus.req.payload.write, op[0] == "w")
                ctx.set(bus.req.payload.data, op[2] if op[0] == "w" else 0)
            else:
                ctx.set(bus.req.valid, 0)
            ready = self.rng.random() >= self.backpressure
            ctx.set(bus.rsp.ready, ready)
            self.ready_trace.append(ctx.get(bus.req.ready))
            if ctx.get(bus.rsp.valid):
                payload = ctx.get(bus.rsp.payload)
                if shown is not None:
                    assert payload == shown, (f"cycle {self.cycles}: answer changed from {shown:#x} "
                                              f"to {payload:#x}")
                assert pending, f"cycle {self.cycles}: answer {payload:#x} with no read outstanding"
                if ready:
                    want, since = pending.pop(0)
                    assert payload == want, (f"cycle {self.cycles}: read answered {payload:#x}, "
                                             f"expected {want:#x} (answers out of order or wrong data)")
                    self.latencies.append(self.cycles - since)
                    shown = None
                else:
                    shown = payload
            else:
                assert shown is None, f"cycle {self.cycles}: answer {shown:#x} withdrawn before it was taken"
            if offer and ctx.get(bus.req.ready):
                op = ops[i]
                wb = self.mem.word_bytes
                if op[0] == "w":
                    if op[1] < self.mem.mem_words:
                        self.image[op[1] * wb:(op[1] + 1) * wb] = op[2].to_bytes(wb, "little")
                else:
                    pending.append((self.word(op[1]) if op[1] < self.mem.mem_words else 0, self.cycles))
                i += 1
            await ctx.tick()
            self.cycles += 1
        ctx.set(bus.req.valid, 0)


def random_ops(rng: random.Random, n: int, mem: SimMemory, span: int | None = None):
    span = span or mem.mem_words
    ops = []
    for _ in range(n):
        addr = rng.randrange(span)
        if rng.random() < 0.4:
            ops.append(("w", addr, rng.getrandbits(8 * mem.word_bytes)))
        else:
            ops.append(("r", addr))
    return ops


@pytest.mark.parametrize("latency", [2, 3, 6])
def test_memory_latency_and_throughput(latency):
    """Without stalls a read is answered exactly `latency` cycles after acceptance, one word per cycle."""
    init = bytes(range(256)) * 8
    mem = SimMemory(word_bytes=8, addr_bits=12, mem_words=256, latency=latency, init=init)
    tb = MemTB(mem, seed=1, init=init)
    n = 32

    async def bench(ctx):
        await tb.run(ctx, [("r", a) for a in range(n)])

    simulate(mem, bench)
    assert tb.latencies == [latency] * n, f"latencies {tb.latencies}, expected {latency} each"
    assert tb.cycles == n + latency, f"{n} back-to-back reads took {tb.cycles} cycles, expected {n + latency}"


@pytest.mark.parametrize("word_bytes", [2, 8, 32, 64])
@pytest.mark.parametrize("stalls", [(0, 0), (64, 64), (200, 30), (30, 200)])
def test_memory_random_traffic(word_bytes, stalls):
    """Random reads and writes with gaps, backpressure and stalls: exact data, in order, stream rules kept."""
    mem = SimMemory(word_bytes=word_bytes, addr_bits=10, mem_words=128, latency=3, max_outstanding=4,
                    seed=0x1234 + word_bytes)
    rng = random.Random(word_bytes * 1000 + stalls[0])
    tb = MemTB(mem, seed=rng.randrange(1 << 30), gap=0.3, backpressure=0.3)
    ops = random_ops(rng, 300, mem, span=48)  # a small span: plenty of read-after-write hazards

    async def bench(ctx):
        ctx.set(mem.stall.req, stalls[0])
        ctx.set(mem.stall.rsp, stalls[1])
        await tb.run(ctx, ops)
        assert not ctx.get(mem.info.fault), "no access was out of range"
        assert ctx.get(mem.info.reads) == sum(op[0] == "r" for op in ops)
        assert ctx.get(mem.info.writes) == sum(op[0] == "w" for op in ops)
        stalled = ctx.get(mem.info.stalled)
        assert (stalled > 0) == (stalls != (0, 0)), f"stalls {stalls}: {stalled} stalled cycles counted"
        assert mem.sim_read(ctx, 0, mem.mem_words) == bytes(tb.image), "memory contents differ from the model"

    simulate(mem, bench)
    assert min(tb.latencies) >= mem.latency


@pytest.mark.parametrize("p", [0, 1, 77, 200, 255])
def test_memory_stall_generator_is_exact(p):
    """req.ready follows xorshift32 from the seed: withheld when the low byte is below stall.req."""
    seed, reseed = 0xC0FFEE, 12345
    mem = SimMemory(word_bytes=8, addr_bits=8, mem_words=64, seed=seed)
    n = 600
    trace = []

    async def bench(ctx):
        ctx.set(mem.stall.req, p)
        for _ in range(n):
            trace.append(ctx.get(mem.bus.req.ready))
            await ctx.tick()
        # Reseeding: the generator holds the new seed in the cycle after `load`.
        ctx.set(mem.stall.seed, reseed)
        ctx.set(mem.stall.load, 1)
        await ctx.tick()
        ctx.set(mem.stall.load, 0)
        trace.append(ctx.get(mem.bus.req.ready))

    simulate(mem, bench)
    want, x = [], seed
    for _ in range(n):
        want.append(int((x & 0xFF) >= p))
        x = xorshift32(x)
    want.append(int((reseed & 0xFF) >= p))
    if trace != want:
        first = next(i for i, (a, b) in enumerate(zip(trace, want, strict=True)) if a != b)
        raise AssertionError(f"req.ready differs from the xorshift32 model first at cycle {first}")
    if 0 < p < 255:
        frac = 1 - sum(trace[:n]) / n
        assert abs(frac - p / 256) < 0.06, f"ready withheld {frac:.3f} of cycles, expected {p / 256:.3f}"


def test_memory_stalls_are_deterministic():
    """The same seed and traffic give the same cycle-by-cycle behaviour; another seed does not."""
    def run(seed):
        mem = SimMemory(word_bytes=8, addr_bits=10, mem_words=128, latency=4, seed=seed)
        tb = MemTB(mem, seed=7, gap=0.2, backpressure=0.2)
        ops = random_ops(random.Random(3), 150, mem)

        async def bench(ctx):
            ctx.set(mem.stall.req, 100)
            ctx.set(mem.stall.rsp, 100)
            await tb.run(ctx, ops)

        simulate(mem, bench)
        return tb.cycles, tb.ready_trace, tb.latencies

    a, b, c = run(99), run(99), run(100)
    assert a == b
    assert a != c


@pytest.mark.parametrize("max_outstanding", [1, 3, 8])
def test_memory_outstanding_limit(max_outstanding):
    """With answers refused, exactly max_outstanding reads are accepted; they then drain in order."""
    mem = SimMemory(word_bytes=8, addr_bits=8, mem_words=64, latency=2, max_outstanding=max_outstanding,
                    init=b"".join(i.to_bytes(8, "little") for i in range(64)))

    async def bench(ctx):
        bus = mem.bus
        accepted = 0
        ctx.set(bus.rsp.ready, 0)
        ctx.set(bus.req.valid, 1)
        for _ in range(30):
            ctx.set(bus.req.payload.addr, accepted)
            if ctx.get(bus.req.ready):
                accepted += 1
            await ctx.tick()
        ctx.set(bus.req.valid, 0)
        assert accepted == max_outstanding, f"{accepted} reads accepted, the limit is {max_outstanding}"
        got = []
        ctx.set(bus.rsp.ready, 1)
        for _ in range(20):
            if ctx.get(bus.rsp.valid):
                got.append(ctx.get(bus.rsp.payload))
            await ctx.tick()
        assert got == list(range(max_outstanding))

    simulate(mem, bench)


def test_memory_faults_and_lanes():
    """Out-of-range accesses set the sticky fault; writes touch only their lane; backdoor and port agree."""
    mem = SimMemory(word_bytes=8, addr_bits=10, mem_words=64, latency=2)
    rng = random.Random(5)
    blob = bytes(rng.randrange(256) for _ in range(8 * 13))

    async def bench(ctx):
        mem.sim_write(ctx, 3, blob)  # unaligned: rows are 4 words
        assert mem.sim_read(ctx, 3, 13) == blob
        assert mem.sim_read(ctx, 0, 3) == bytes(24), "words before the write were touched"
        tb = MemTB(mem, seed=1)
        tb.image[3 * 8:16 * 8] = blob
        ops = [("w", 9, 0x1122334455667788), ("r", 8), ("r", 9), ("r", 10), ("r", 5),
               ("r", 64), ("w", 100, 0xFFFF), ("w", 65, 1), ("r", 63)]
        await tb.run(ctx, ops)
        assert ctx.get(mem.info.fault) == 1
        assert ctx.get(mem.info.fault_addr) == 64, "the first faulting address is kept"
        assert mem.sim_read(ctx, 8, 3) == blob[5 * 8:6 * 8] + (0x1122334455667788).to_bytes(8, "little") \
            + blob[7 * 8:8 * 8], "a word write changed its neighbours"

    simulate(mem, bench)


def test_memory_block_hangs_until_released():
    mem = SimMemory(word_bytes=8, addr_bits=8, mem_words=64, latency=2)

    async def bench(ctx):
        bus = mem.bus
        ctx.set(mem.stall.block, 1)
        ctx.set(bus.req.valid, 1)
        ctx.set(bus.rsp.ready, 1)
        for _ in range(50):
            assert not ctx.get(bus.req.ready) and not ctx.get(bus.rsp.valid)
            await ctx.tick()
        ctx.set(mem.stall.block, 0)
        assert ctx.get(bus.req.ready)

    simulate(mem, bench)


@pytest.mark.parametrize("kwargs, match", [
    (dict(word_bytes=3), "word_bytes"),
    (dict(mem_words=6), "multiple of 4"),
    (dict(mem_words=1 << 9), "at most"),
    (dict(latency=1), "latency"),
    (dict(max_outstanding=0), "max_outstanding"),
    (dict(seed=0), "seed"),
    (dict(storage="sram"), "storage"),
    (dict(storage="verilog", init=b"\1" * 8), "init"),
    (dict(init=bytes(8 * 65)), "init"),
])
@rejects
def test_memory_rejects_bad_parameters(kwargs, match):
    args = dict(word_bytes=8, addr_bits=8, mem_words=64)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SimMemory(**args)
    gc.collect()  # while the warning filter is on


def test_memory_verilog_storage_source():
    from sim.build import clock_wrapper, to_verilog

    top = SimTop(CopyEngine(EngineConfig(rows=8, mem_addr_bits=16)), mem_words=1 << 14, storage="verilog")
    assert top.memory_path == ("mem", "dram", "rows")
    text = to_verilog(top)
    assert f"module {top.memory.verilog_module}(" in text
    assert "reg [255:0] rows [4095:0] /*verilator public_flat_rw*/;" in text
    assert "initial begin" not in text.split(f"module {top.memory.verilog_module}(")[1]
    wrapper = clock_wrapper(text)
    assert "always #5000 clk = ~clk;" in wrapper and ".csr__r_data(csr__r_data)" in wrapper
    with pytest.raises(TypeError, match="storage='amaranth'"):
        top.memory.sim_read(None, 0, 1)


# --- CopyEngine in the Python simulator -------------------------------------------------------

class CopyTB:
    """CSR helpers for a SimTop in the Python simulator."""

    def __init__(self, top: SimTop):
        self.top = top

    async def write(self, ctx, reg, value):
        csr = self.top.csr
        ctx.set(csr.addr, reg)
        ctx.set(csr.w_data, value)
        ctx.set(csr.w_stb, 1)
        await ctx.tick()
        ctx.set(csr.w_stb, 0)

    async def read(self, ctx, reg) -> int:
        csr = self.top.csr
        ctx.set(csr.addr, reg)
        ctx.set(csr.r_stb, 1)
        await ctx.tick()
        ctx.set(csr.r_stb, 0)
        return ctx.get(csr.r_data)

    async def wait_irq(self, ctx, max_cycles: int) -> int:
        for n in range(max_cycles):
            if ctx.get(self.top.irq):
                return n
            await ctx.tick()
        raise AssertionError(f"no irq within {max_cycles} cycles")


CFG = EngineConfig(rows=8, cols=16, mem_addr_bits=16)


def test_copy_engine_registers():
    top = SimTop(CopyEngine(CFG), mem_words=256)
    tb = CopyTB(top)

    async def bench(ctx):
        assert await tb.read(ctx, Reg.ID) == ENGINE_ID
        assert await tb.read(ctx, Reg.VERSION) == VERSION[0] << 16 | VERSION[1]
        got = tuple([await tb.read(ctx, r) for r in (Reg.CONFIG0, Reg.CONFIG1, Reg.CONFIG2)])
        assert got == CFG.config_words()
        assert EngineConfig.from_config_words(*got) == CFG
        for value in (0xDEADBEEF, 0):
            await tb.write(ctx, Reg.SCRATCH, value)
            assert await tb.read(ctx, Reg.SCRATCH) == value
        assert await tb.read(ctx, Reg.STATUS) == 0
        assert await tb.read(ctx, 63) == 0
        assert not ctx.get(top.irq)

    simulate(top, bench)


@pytest.mark.parametrize("count", [0, 1, 37, 300])
@pytest.mark.parametrize("stalls, latency", [((0, 0), 2), ((0, 0), 7), ((128, 128), 3), ((230, 60), 5)])
def test_copy_engine_copies(count, stalls, latency):
    top = SimTop(CopyEngine(CFG, buffer_words=8), mem_words=1024, latency=latency, seed=0xACE1 + count)
    tb = CopyTB(top)
    rng = random.Random(count)
    src = bytes(rng.randrange(256) for _ in range(8 * count))
    sentinel = bytes([0xA5]) * 8

    async def bench(ctx):
        top.memory.sim_write(ctx, 100, src)
        top.memory.sim_write(ctx, 600 + count, sentinel)
        ctx.set(top.stall.req, stalls[0])
        ctx.set(top.stall.rsp, stalls[1])
        await tb.write(ctx, Reg.CMD_ADDR, 100)
        await tb.write(ctx, Reg.CMD_COUNT, count)
        await tb.write(ctx, Reg.PROF_ADDR, 600)
        await tb.write(ctx, Reg.CTRL, Ctrl.START)
        assert await tb.read(ctx, Reg.STATUS) & Status.BUSY
        await tb.wait_irq(ctx, 40 * count + 100)
        status = await tb.read(ctx, Reg.STATUS)
        assert status == Status.DONE, f"STATUS {status:#x}"
        assert await tb.read(ctx, Reg.CMD_INDEX) == count
        cycles = await tb.read(ctx, Reg.CYCLES)
        if stalls == (0, 0):
            # Reads stay in flight: about two cycles per word (one read, one write on
            # the single port), where one read per round trip would take `latency` + 3.
            assert cycles <= 2.2 * count + 8 * latency, f"{count} words took {cycles} cycles"
        got = top.memory.sim_read(ctx, 600, count)
        assert got == src, first_mismatches(got, src, 8, 600)
        assert top.memory.sim_read(ctx, 600 + count, 1) == sentinel, "wrote past the end"
        assert ctx.get(top.mem_info.reads) == count and ctx.get(top.mem_info.writes) == count
        await tb.write(ctx, Reg.CTRL, Ctrl.CLEAR)
        assert await tb.read(ctx, Reg.STATUS) == 0
        assert not ctx.get(top.irq)

    simulate(top, bench)


def test_copy_engine_bad_address_and_busy():
    top = SimTop(CopyEngine(CFG), mem_words=1024, latency=4)
    tb = CopyTB(top)

    async def bench(ctx):
        await tb.write(ctx, Reg.CMD_ADDR, (1 << CFG.mem_addr_bits) - 4)
        await tb.write(ctx, Reg.CMD_COUNT, 5)
        await tb.write(ctx, Reg.PROF_ADDR, 0)
        await tb.write(ctx, Reg.CTRL, Ctrl.START)
        status = await tb.read(ctx, Reg.STATUS)
        assert status & Status.ERROR and not status & Status.BUSY
        assert Status.error_code(status) == ErrorCode.BAD_ADDRESS
        assert ctx.get(top.irq)
        await tb.write(ctx, Reg.CTRL, Ctrl.CLEAR)
        assert await tb.read(ctx, Reg.STATUS) == 0
        # A START while busy is ignored: the run keeps its parameters.
        await tb.write(ctx, Reg.CMD_ADDR, 0)
        await tb.write(ctx, Reg.CMD_COUNT, 50)
        await tb.write(ctx, Reg.PROF_ADDR, 500)
        await tb.write(ctx, Reg.CTRL, Ctrl.START)
        await tb.write(ctx, Reg.CMD_COUNT, 3)
        await tb.write(ctx, Reg.CTRL, Ctrl.START)
        await tb.wait_irq(ctx, 1000)
        assert await tb.read(ctx, Reg.CMD_INDEX) == 50
        assert not ctx.get(top.mem_info.fault)

    simulate(top, bench)


@rejects
def test_sim_top_rejects_a_dut_without_the_engine_members():
    class NoMem(wiring.Component):
        def __init__(self):
            super().__init__({"csr": In(CsrSignature), "irq": Out(1)})

        def elaborate(self, platform):
            raise AssertionError("not elaborated")

    with pytest.raises(TypeError, match=r"mem: Out\(MemPortSignature"):
        SimTop(NoMem(), mem_words=64)
    with pytest.raises(TypeError, match="wiring.Component"):
        SimTop(lambda: object(), mem_words=64)
    gc.collect()  # while the warning filter is on


# --- Transport --------------------------------------------------------------------------------

class FakeTransport(Transport):
    word_bytes = 8

    def __init__(self, busy_reads: int):
        self.busy_reads = busy_reads
        self.closed = False

    def write_mem(self, addr_words, data):
        raise NotImplementedError

    def read_mem(self, addr_words, n_words):
        raise NotImplementedError

    def write_reg(self, reg, value):
        raise NotImplementedError

    def read_reg(self, reg):
        assert reg == Reg.STATUS
        self.busy_reads -= 1
        return Status.BUSY if self.busy_reads >= 0 else Status.DONE

    def close(self):
        self.closed = True


def test_transport_default_wait_done_and_context_manager():
    with FakeTransport(busy_reads=3) as t:
        assert t.wait_done(timeout=5) == Status.DONE
        assert t.cycles() is None
    assert t.closed
    slow = FakeTransport(busy_reads=10 ** 9)
    t0 = time.monotonic()
    with pytest.raises(EngineTimeout, match="still busy") as info:
        slow.wait_done(timeout=0.05)
    assert info.value.status == Status.BUSY
    assert time.monotonic() - t0 < 2
    assert issubclass(EngineTimeout, TransportError)


# --- the Verilator path -----------------------------------------------------------------------

VCFG = EngineConfig(rows=8, cols=16, mem_addr_bits=24)
VMEM_WORDS = 1 << 20  # 8 MB
VLATENCY = 4


@pytest.fixture(scope="module")
def backend():
    from sim.build import BuildError, setup_verilator_env

    try:
        setup_verilator_env()
    except BuildError as exc:
        pytest.skip(f"Verilator is not installed: {exc}")
    from sw.backends import open_backend

    with open_backend("verilator", top_factory=CopyEngine, config=VCFG, mem_words=VMEM_WORDS, latency=VLATENCY) as be:
        yield be
        print(be.report())


@pytest.fixture
def be(backend):
    """The shared backend, out of reset, without stalls."""
    backend.set_stalls(0.0, 0.0, block=False)
    backend.reset()
    return backend


def start_copy(be, src: int, count: int, dst: int):
    be.write_reg(Reg.CMD_ADDR, src)
    be.write_reg(Reg.CMD_COUNT, count)
    be.write_reg(Reg.PROF_ADDR, dst)
    be.write_reg(Reg.CTRL, Ctrl.START)


@pytest.mark.verilator
def test_verilator_registers(be):
    assert be.read_reg(Reg.ID) == ENGINE_ID
    assert be.read_reg(Reg.VERSION) == VERSION[0] << 16 | VERSION[1]
    got = tuple(be.read_reg(r) for r in (Reg.CONFIG0, Reg.CONFIG1, Reg.CONFIG2))
    assert EngineConfig.from_config_words(*got) == VCFG
    be.write_reg(Reg.SCRATCH, 0x1234ABCD)
    assert be.read_reg(Reg.SCRATCH) == 0x1234ABCD
    c0 = be.cycles()
    assert be.run(1000) - c0 == 1000
    assert be.word_bytes == 8


@pytest.mark.verilator
def test_verilator_backdoor(be):
    """Unaligned writes and reads through the VPI backdoor, checked against a Python image."""
    rng = np.random.default_rng(11)
    base, n = 12345, 3000
    image = bytearray(rng.integers(0, 256, 8 * n, dtype=np.uint8).tobytes())
    be.write_mem(base, bytes(image))
    for _ in range(20):
        a = int(rng.integers(0, n - 40))
        k = int(rng.integers(1, 40))
        data = rng.integers(0, 256, 8 * k, dtype=np.uint8).tobytes()
        be.write_mem(base + a, data)
        image[8 * a:8 * (a + k)] = data
        r = int(rng.integers(0, n - 50))
        m = int(rng.integers(1, 50))
        got, want = be.read_mem(base + r, m), bytes(image[8 * r:8 * (r + m)])
        assert got == want, first_mismatches(got, want, 8, base + r)
    got = be.read_mem(base, n)
    assert got == bytes(image), first_mismatches(got, bytes(image), 8, base)
    with pytest.raises(TransportError, match="outside"):
        be.read_mem(VMEM_WORDS - 2, 3)
    with pytest.raises(TransportError, match="whole number"):
        be.write_mem(0, b"\1\2\3")


@pytest.mark.verilator
@pytest.mark.parametrize("stalls", [(0.0, 0.0), (0.3, 0.3), (0.7, 0.2)])
def test_verilator_copy_image(be, stalls):
    """A 4 MB image loaded through the backdoor, 1.5 MB of it copied by the gateware, compared exactly."""
    rng = np.random.default_rng(int(stalls[0] * 100))
    image = rng.integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    assert be.read_reg(Reg.STATUS) == 0  # the backdoor also works right after a register read
    t0 = time.monotonic()
    be.write_mem(0, image)
    load_s = time.monotonic() - t0
    src, count, dst = 1000, (3 << 20) // 16, VMEM_WORDS - (3 << 20) // 16 - 7
    be.set_stalls(*stalls)
    stalled_before = be.mem_info()["stalled"]
    start_copy(be, src, count, dst)
    status = be.wait_done(timeout=120, max_cycles=40 * count)
    assert status == Status.DONE, f"STATUS {status:#x}"
    cycles = be.read_reg(Reg.CYCLES)
    got = be.read_mem(dst, count)
    want = image[8 * src:8 * (src + count)]
    assert got == want, first_mismatches(got, want, 8, dst)
    info = be.mem_info()
    assert info["fault"] == 0 and info["reads"] == count and info["writes"] == count, info
    stalled = info["stalled"] - stalled_before
    if stalls == (0.0, 0.0):
        assert cycles <= 2 * count + 20, f"{count} words in {cycles} cycles without stalls"
        assert stalled == 0, f"{stalled} stalled cycles without stalls"
    else:
        assert cycles > 2 * count * (1 + stalls[0] / 2), f"stalls {stalls} barely slowed the copy ({cycles})"
        assert stalled > count * stalls[0], f"stalls {stalls}: only {stalled} stalled cycles for {count} words"
    print(f"stalls {stalls}: 4 MB backdoor load {load_s:.2f} s, {count} words copied in {cycles} cycles "
          f"({stalled} memory cycles stalled); "
          f"{be.report()}")


@pytest.mark.verilator
def test_verilator_timeout_then_recovery(be):
    """A run that cannot finish gives EngineTimeout (cycle or wall limit), not a hang; it can then finish."""
    data = bytes(range(256)) * 8
    be.write_mem(500, data)
    be.set_stalls(0.0, block=True)
    start_copy(be, 500, len(data) // 8, 9000)
    t0 = time.monotonic()
    with pytest.raises(EngineTimeout, match="gave up after 20000 cycles") as info:
        be.wait_done(timeout=60, max_cycles=20000)
    assert info.value.cycles >= 20000 and info.value.status & Status.BUSY
    with pytest.raises(EngineTimeout, match="wall time"):
        be.wait_done(timeout=0.3)
    assert time.monotonic() - t0 < 15, "timeouts took too long"
    be.set_stalls(0.0, block=False)
    assert be.wait_done(timeout=30, max_cycles=100000) == Status.DONE
    assert be.read_mem(9000, len(data) // 8) == data


@pytest.mark.verilator
def test_verilator_memory_fault(be):
    """A copy that runs off the end of the simulated memory raises the memory's fault flag."""
    start_copy(be, 0, 16, VMEM_WORDS - 4)
    assert be.wait_done(timeout=30, max_cycles=10000) == Status.DONE
    info = be.mem_info()
    assert info["fault"] == 1 and info["fault_addr"] == VMEM_WORDS, info


@pytest.mark.verilator
def test_verilator_build_is_cached(backend):
    """Building the same design again reuses the model: no Verilator, no compiler."""
    from sim.build import build

    exe = backend.build.directory / backend.build.toplevel
    mtime = exe.stat().st_mtime_ns
    top = SimTop(CopyEngine(VCFG), mem_words=VMEM_WORDS, latency=VLATENCY, storage="verilog")
    again = build(top)
    assert again.cached and again.directory == backend.build.directory
    assert again.seconds < 10, f"a cache hit took {again.seconds:.1f} s"
    assert exe.stat().st_mtime_ns == mtime
