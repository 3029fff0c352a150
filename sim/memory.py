"""The simulated external memory ("DRAM") behind the engine's memory port.

:class:`SimMemory` answers a :class:`hw.bus.MemPortSignature` port. It exists
only for simulation (Amaranth's Python simulator and Verilator); it is not
meant to be synthesised.

Storage
    An array of *rows* of ``row_bytes`` bytes (32, or one word if words are
    wider). Word ``a`` lives in row ``a // words_per_row``, lane
    ``a % words_per_row``, byte ``b`` of the word at byte
    ``(a % words_per_row) * word_bytes + b`` of the row (little-endian, like
    the rest of the project). Wide rows let a backdoor load a memory image
    with one VPI handle per 32 bytes instead of one per word. Writes are
    lane-granular: a word write touches only its own lane.

Timing (no stalls)
    One request is accepted per cycle. A read accepted in cycle ``t`` is
    presented on ``rsp`` from cycle ``t + latency``; a write accepted in cycle
    ``t`` is visible to a read accepted in cycle ``t + 1``. With
    ``max_outstanding >= latency + 1`` (the default) back-to-back reads run at
    one word per cycle. Answers come back in request order.

Randomized stalls
    A 32-bit xorshift generator (a linear-feedback generator, like an LFSR
    but with well-mixed successive states) in the gateware steps every cycle
    and gives two 8-bit numbers. ``req.ready`` is withheld in a cycle when the first is below
    ``stall.req``; a pending answer that is not yet on ``rsp`` is held back
    for the cycle when the second is below ``stall.rsp`` (an answer already
    presented stays valid until taken, as the stream rules require). So the
    probabilities are ``stall.req / 256`` and ``stall.rsp / 256``, settable at
    run time, and the stall pattern is a deterministic function of the seed
    (the ``seed`` constructor argument from reset, or ``stall.seed`` loaded
    with ``stall.load``) and of the cycle count, so a run is reproducible
    cycle for cycle. Python is never on the per-cycle path. ``stall.block``
    withholds ``req.ready`` and every answer not yet presented, for as long as
    it is high: a memory that hangs, to test timeouts.

Faults
    An access at or beyond ``mem_words`` sets the sticky ``info.fault`` flag
    and records the address in ``info.fault_addr`` (first fault only); such a
    write is dropped and such a read answers zero. ``info.reads`` and
    ``info.writes`` count accepted requests (wrapping at 2**32).
    ``info.stalled`` counts the cycles in which a stall (random or
    ``stall.block``) withheld a request the port offered or held back an
    answer that was ready: the proof that a stall test's stalls happened.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, MemoryData, Module, Mux, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.bus import MemPortSignature

__all__ = ["StallSignature", "MemInfoSignature", "SimMemory", "DEFAULT_ROW_BYTES", "xorshift32"]

#: Row width of the storage array, in bytes: one VPI handle per row.
DEFAULT_ROW_BYTES = 32

#: Controls of the stall generator, from the controller's (testbench's) side.
StallSignature = wiring.Signature({
    "req": Out(8),    # probability (/256) that req.ready is withheld in a cycle
    "rsp": Out(8),    # probability (/256) that a pending answer is held back in a cycle
    "seed": Out(32),  # loaded into the generator when `load` is high (0 is replaced by 1)
    "load": Out(1),
    "block": Out(1),  # hold req.ready low and present no answer: a memory that hangs
})


def MemInfoSignature(addr_bits: int) -> wiring.Signature:
    """Status outputs of :class:`SimMemory`, from the memory's side."""
    return wiring.Signature({
        "fault": Out(1),
        "fault_addr": Out(addr_bits),
        "reads": Out(32),
        "writes": Out(32),
        "stalled": Out(32),
    })


def xorshift32(x: int) -> int:
    """One step of Marsaglia's xorshift32, the same function the gateware computes."""
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    return x


def _read_only(name: str, doc: str) -> property:
    """A read-only property returning the constructor's checked parameter ``_<name>``."""
    return property(lambda self: getattr(self, "_" + name), doc=doc)


def _is_pow2(n: int) -> bool:
    return isinstance(n, int) and n > 0 and n & (n - 1) == 0


class SimMemory(wiring.Component):
    """Simulated external memory with a configurable latency and seeded random stalls.

    See the module documentation for the storage layout, the timing contract
    and the stall generator.

    Parameters
    ----------
    word_bytes : int
        Width of a memory word in bytes (``EngineConfig.rows``); a power of two.
    addr_bits : int
        Width of a word address on the port.
    mem_words : int
        Size of the memory in words; a multiple of :attr:`words_per_row` and at
        most ``2 ** addr_bits``.
    latency : int
        Cycles from the acceptance of a read to its answer, without stalls (>= 2).
    max_outstanding : int or None
        Most reads accepted but not yet answered (the depth of the answer
        queue; ``req.ready`` is withheld when it is full). Defaults to
        ``latency + 2``, enough for one word per cycle.
    seed : int
        Reset value of the stall generator (32 bits, non-zero).
    init : bytes or None
        Initial contents from word 0 (the rest is zero). Meant for small
        Python-simulator tests; for Verilator load through the backdoor
        instead (a large ``init`` makes a very large Verilog file).
    row_bytes : int
        Width of a storage row in bytes (a power of two, at least one word).
    storage : str
        ``"amaranth"``: a :class:`amaranth.lib.memory.Memory`, which works in
        every simulator (the Python-simulator backdoor is :meth:`sim_write` /
        :meth:`sim_read`), but whose Verilog carries an initial value for
        every row, so its conversion slows down past some ten thousand rows.
        ``"verilog"``: an instance of a small Verilog module
        (:meth:`verilog_source`, array ``rows``, no initial block) that only
        Verilator builds, at any size. :attr:`memory_path` names the array.

    Members
    -------
    bus : ``In(MemPortSignature(word_bytes, addr_bits))``
        The memory port.
    stall : ``In(StallSignature)``
        Stall probabilities and generator seeding.
    info : ``Out(MemInfoSignature(addr_bits))``
        Fault flag and address, access counters.

    Raises
    ------
    ValueError
        On a parameter out of range; the message quotes it.
    """

    def __init__(self, *, word_bytes: int, addr_bits: int, mem_words: int, latency: int = 2,
                 max_outstanding: int | None = None, seed: int = 0x2545F491,
                 init: bytes | None = None, row_bytes: int = DEFAULT_ROW_BYTES,
                 storage: str = "amaranth"):
        if not _is_pow2(word_bytes):
            raise ValueError(f"word_bytes must be a power of two, got {word_bytes!r}")
        if not (isinstance(addr_bits, int) and 1 <= addr_bits <= 32):
            raise ValueError(f"addr_bits must be in [1, 32], got {addr_bits!r}")
        if not _is_pow2(row_bytes):
            raise ValueError(f"row_bytes must be a power of two, got {row_bytes!r}")
        row_bytes = max(row_bytes, word_bytes)
        words_per_row = row_bytes // word_bytes
        if not (isinstance(mem_words, int) and 0 < mem_words <= 1 << addr_bits
                and mem_words % words_per_row == 0):
            raise ValueError(f"mem_words must be a positive multiple of {words_per_row} (words per "
                             f"{row_bytes}-byte row) and at most 2**{addr_bits}, got {mem_words!r}")
        if not (isinstance(latency, int) and latency >= 2):
            raise ValueError(f"latency must be an integer >= 2, got {latency!r}")
        if max_outstanding is None:
            max_outstanding = latency + 2
        if not (isinstance(max_outstanding, int) and max_outstanding >= 1):
            raise ValueError(f"max_outstanding must be an integer >= 1, got {max_outstanding!r}")
        if not (isinstance(seed, int) and 0 < seed < 1 << 32):
            raise ValueError(f"seed must be a non-zero 32-bit integer, got {seed!r}")
        if storage not in ("amaranth", "verilog"):
            raise ValueError(f"storage must be 'amaranth' or 'verilog', got {storage!r}")
        if init and storage != "amaranth":
            raise ValueError("init needs storage='amaranth'; load a 'verilog' storage through the backdoor")
        if init is not None and len(init) > mem_words * word_bytes:
            raise ValueError(f"init holds {len(init)} bytes, more than the memory's "
                             f"{mem_words * word_bytes}")

        self._word_bytes = word_bytes
        self._addr_bits = addr_bits
        self._mem_words = mem_words
        self._latency = latency
        self._max_outstanding = max_outstanding
        self._seed = seed
        self._row_bytes = row_bytes
        self._words_per_row = words_per_row
        self._storage = storage

        init_rows = []
        if init:
            padded = bytes(init) + bytes(-len(init) % row_bytes)
            init_rows = [int.from_bytes(padded[i:i + row_bytes], "little")
                         for i in range(0, len(padded), row_bytes)]
        #: The storage array (``n_rows`` rows of ``8 * row_bytes`` bits) when
        #: ``storage="amaranth"``, created here so that Python-simulator
        #: testbenches can reach it (``ctx.get``/``ctx.set``); else None.
        self.contents = None
        if storage == "amaranth":
            self.contents = MemoryData(shape=unsigned(8 * row_bytes), depth=self.n_rows, init=init_rows)

        super().__init__({
            "bus": In(MemPortSignature(word_bytes, addr_bits)),
            "stall": In(StallSignature),
            "info": Out(MemInfoSignature(addr_bits)),
        })

    # Read-only parameters -------------------------------------------------------------------

    word_bytes = _read_only("word_bytes", "Bytes of a memory word (the bus's width).")
    addr_bits = _read_only("addr_bits", "Width of the bus's word address.")
    mem_words = _read_only("mem_words", "Words of storage.")
    latency = _read_only("latency", "Cycles from a read's acceptance to its answer on ``rsp`` (no stalls).")
    max_outstanding = _read_only("max_outstanding", "Reads accepted and not yet answered, at most.")
    seed = _read_only("seed", "Seed of the stall generator after reset.")
    row_bytes = _read_only("row_bytes", "Bytes of a storage row (the backdoor's unit).")
    words_per_row = _read_only("words_per_row", "Words in a storage row.")
    storage = _read_only("storage", "``amaranth`` (a MemoryData) or ``verilog`` (a plain array, for Verilator).")

    @property
    def n_rows(self) -> int:
        return self._mem_words // self._words_per_row

    @property
    def memory_path(self) -> tuple[str, ...]:
        """Hierarchical path of the storage array in the Verilog, below this instance."""
        return ("dram",) if self._storage == "amaranth" else ("dram", "rows")

    @property
    def _row_addr_bits(self) -> int:
        return max(1, (self.n_rows - 1).bit_length())

    @property
    def verilog_module(self) -> str | None:
        """Name of the Verilog storage module (``storage="verilog"``), else None."""
        if self._storage != "verilog":
            return None
        return f"kindling_sim_dram_{self.n_rows}x{self._row_bytes}b_{self._words_per_row}l"

    def verilog_source(self) -> str:
        """Verilog of the storage module, to compile beside the design (``storage="verilog"``).

        Same behaviour as the Amaranth storage: a synchronous, non-transparent
        read port and a write port with one enable per word lane. The array is
        marked ``public_flat_rw`` for the VPI backdoor.
        """
        if self._storage != "verilog":
            return ""
        rb, wpr, ab = 8 * self._row_bytes, self._words_per_row, self._row_addr_bits
        lw = 8 * self._word_bytes
        lanes = "\n".join(f"    if (w_en[{i}]) rows[w_addr][{i * lw + lw - 1}:{i * lw}] <= "
                          f"w_data[{i * lw + lw - 1}:{i * lw}];" for i in range(wpr))
        return (f"// Storage of sim.memory.SimMemory (generated; simulation only).\n"
                f"module {self.verilog_module}(clk, r_en, r_addr, r_data, w_en, w_addr, w_data);\n"
                f"  input clk;\n  input r_en;\n  input [{ab - 1}:0] r_addr;\n"
                f"  output reg [{rb - 1}:0] r_data;\n  input [{wpr - 1}:0] w_en;\n"
                f"  input [{ab - 1}:0] w_addr;\n  input [{rb - 1}:0] w_data;\n"
                f"  reg [{rb - 1}:0] rows [{self.n_rows - 1}:0] /*verilator public_flat_rw*/;\n"
                f"  always @(posedge clk) begin\n"
                f"    if (r_en) r_data <= rows[r_addr];\n{lanes}\n  end\nendmodule\n")

    # Python-simulator backdoor ---------------------------------------------------------------

    def _check_range(self, addr: int, n_words: int):
        if self.contents is None:
            raise TypeError("the Python-simulator backdoor needs storage='amaranth'")
        if not (isinstance(addr, int) and isinstance(n_words, int) and addr >= 0 and n_words >= 0
                and addr + n_words <= self._mem_words):
            raise ValueError(f"words [{addr}, {addr}+{n_words}) are outside the memory "
                             f"(0..{self._mem_words - 1})")

    def sim_write(self, ctx, addr: int, data: bytes):
        """Write ``data`` at word ``addr`` from an ``amaranth.sim`` testbench (no time passes).

        Parameters
        ----------
        ctx : amaranth.sim.SimulatorContext
            The testbench's context.
        addr : int
            First word address.
        data : bytes
            A whole number of words.

        Raises
        ------
        ValueError
            If ``data`` is not whole words or falls outside the memory.
        """
        data = bytes(data)
        if len(data) % self._word_bytes:
            raise ValueError(f"{len(data)} bytes is not a whole number of {self._word_bytes}-byte words")
        self._check_range(addr, len(data) // self._word_bytes)
        rb = self._row_bytes
        start = addr * self._word_bytes
        end = start + len(data)
        for row in range(start // rb, -(-end // rb)):
            lo, hi = max(start, row * rb), min(end, (row + 1) * rb)
            value = bytearray(ctx.get(self.contents[row]).to_bytes(rb, "little"))
            value[lo - row * rb:hi - row * rb] = data[lo - start:hi - start]
            ctx.set(self.contents[row], int.from_bytes(value, "little"))

    def sim_read(self, ctx, addr: int, n_words: int) -> bytes:
        """Read ``n_words`` words from word ``addr`` in an ``amaranth.sim`` testbench."""
        self._check_range(addr, n_words)
        rb = self._row_bytes
        start = addr * self._word_bytes
        end = start + n_words * self._word_bytes
        out = bytearray()
        for row in range(start // rb, -(-end // rb)):
            out += ctx.get(self.contents[row]).to_bytes(rb, "little")
        skip = start - (start // rb) * rb
        return bytes(out[skip:skip + end - start])

    # Gateware --------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        wb, wpr = self._word_bytes, self._words_per_row
        lane_bits = (wpr - 1).bit_length()
        req, rsp = self.bus.req, self.bus.rsp

        hold_req, hold_rsp = self._stall_generator(m)

        # Request side.
        outstanding = Signal(range(self._max_outstanding + 1))
        accept = Signal()
        m.d.comb += [
            req.ready.eq(~hold_req & (outstanding < self._max_outstanding)),
            accept.eq(req.valid & req.ready),
        ]
        addr = req.payload.addr
        row = addr[lane_bits:] if lane_bits else addr
        lane = addr[:lane_bits] if lane_bits else Const(0, 1)
        in_range = Signal()
        m.d.comb += in_range.eq(addr < self._mem_words)
        is_read = Signal()
        is_write = Signal()
        m.d.comb += [
            is_read.eq(accept & ~req.payload.write),
            is_write.eq(accept & req.payload.write),
        ]

        # A synchronous read port: the array is read at the clock edge, so a value
        # deposited through the backdoor (VPI or ctx.set) is always seen. The
        # storage is named `dram`, which memory_path relies on.
        if self._storage == "amaranth":
            m.submodules.dram = storage = memory.Memory(data=self.contents)
            rd = storage.read_port(domain="sync")
            wr = storage.write_port(granularity=8 * wb)
            rd_addr, rd_en, rd_data = rd.addr, rd.en, rd.data
            wr_addr, wr_en, wr_data = wr.addr, wr.en, wr.data
        else:
            rd_addr = Signal(self._row_addr_bits)
            rd_en = Signal()
            rd_data = Signal(8 * self._row_bytes)
            wr_addr = Signal(self._row_addr_bits)
            wr_en = Signal(wpr)
            wr_data = Signal(8 * self._row_bytes)
            m.submodules.dram = Instance(
                self.verilog_module, i_clk=ClockSignal(),
                i_r_en=rd_en, i_r_addr=rd_addr, o_r_data=rd_data,
                i_w_en=wr_en, i_w_addr=wr_addr, i_w_data=wr_data)
        m.d.comb += [
            rd_addr.eq(row),
            rd_en.eq(is_read),
            wr_addr.eq(row),
            wr_data.eq(Cat(*([req.payload.data] * wpr))),
            wr_en.eq(Mux(is_write & in_range, (Const(1, wpr) << lane)[:wpr], 0)),
        ]
        rd_valid = Signal()
        rd_lane = Signal(max(lane_bits, 1))
        rd_in_range = Signal()
        m.d.sync += [rd_valid.eq(is_read), rd_lane.eq(lane), rd_in_range.eq(in_range)]
        word = Signal(8 * wb)
        m.d.comb += word.eq(Mux(rd_in_range, rd_data.word_select(rd_lane, 8 * wb), 0))

        # The read port gives one cycle, a delay line `latency - 2` more, and the
        # answer queue's write-to-read latency the last one.
        valid, data = rd_valid, word
        for i in range(self._latency - 2):
            v = Signal(name=f"dl{i}_valid")
            d = Signal(8 * wb, name=f"dl{i}_data")
            m.d.sync += [v.eq(valid), d.eq(data)]
            valid, data = v, d
        m.submodules.answers = answers = SyncFIFO(width=8 * wb, depth=self._max_outstanding)
        # The answer queue cannot overflow: `outstanding` counts every read in the
        # delay line or in the queue and is bounded by its depth.
        m.d.comb += [
            answers.w_en.eq(valid),
            answers.w_data.eq(data),
        ]

        # Answer side: `presenting` keeps an answer valid until taken once it has
        # been shown, so the random hold only delays the start of a transfer.
        presenting = Signal()
        m.d.comb += [
            rsp.valid.eq(answers.r_rdy & (presenting | ~hold_rsp)),
            rsp.payload.eq(answers.r_data),
            answers.r_en.eq(rsp.valid & rsp.ready),
        ]
        m.d.sync += presenting.eq(rsp.valid & ~rsp.ready)

        popped = rsp.valid & rsp.ready
        with m.If(is_read & ~popped):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~is_read & popped):
            m.d.sync += outstanding.eq(outstanding - 1)

        req_stalled = req.valid & hold_req & (outstanding < self._max_outstanding)
        rsp_stalled = answers.r_rdy & ~presenting & hold_rsp
        with m.If(req_stalled | rsp_stalled):
            m.d.sync += self.info.stalled.eq(self.info.stalled + 1)

        self._status(m, accept=accept, in_range=in_range, addr=addr, is_read=is_read, is_write=is_write)
        return m

    def _stall_generator(self, m: Module) -> tuple[Signal, Signal]:
        """xorshift32, one step per cycle: ``(hold_req, hold_rsp)`` for this cycle."""
        rng = Signal(32, init=self._seed)
        x1 = rng ^ (rng << 13)[:32]
        x2 = x1 ^ (x1 >> 17)
        x3 = x2 ^ (x2 << 5)[:32]
        with m.If(self.stall.load):
            m.d.sync += rng.eq(Mux(self.stall.seed == 0, 1, self.stall.seed))
        with m.Else():
            m.d.sync += rng.eq(x3[:32])
        hold_req = Signal()
        hold_rsp = Signal()
        m.d.comb += [
            hold_req.eq(self.stall.block | (rng[0:8] < self.stall.req)),
            hold_rsp.eq(self.stall.block | (rng[8:16] < self.stall.rsp)),
        ]
        return hold_req, hold_rsp

    def _status(self, m: Module, *, accept, in_range, addr, is_read, is_write) -> None:
        """The ``info`` port: the first out-of-range access, and the reads and writes counted."""
        with m.If(accept & ~in_range & ~self.info.fault):
            m.d.sync += [self.info.fault.eq(1), self.info.fault_addr.eq(addr)]
        with m.If(is_read):
            m.d.sync += self.info.reads.eq(self.info.reads + 1)
        with m.If(is_write):
            m.d.sync += self.info.writes.eq(self.info.writes + 1)
