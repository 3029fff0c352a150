"""The ULX3S board core with its SDRAM: the engine's memory port on LiteDRAM, the program kept on the board.

::

     FTDI UART ──rx──► UARTLink ──csr──► DramRegisters ──csr (other registers)──► Engine
              ◄─tx───     │                   │ INIT, PROG_HASH                      │
                          └──mem──► MemArbiter ◄────────────mem──────────────────────┘
                                        │
                                    DramPort (engine words -> 16-bit native words)
                                        │
                    DramInitSequencer ──wb_ctrl──► LiteDRAM core (GENSDRPHY) ──► SDRAM pins

:class:`DramBoardCore` is :class:`hw.boards.top.BoardCore` with the on-chip memory replaced by the
board's 32 MB SDR SDRAM behind a LiteDRAM core generated from ``hw/boards/dram/ulx3s_sdram.yml``
(:func:`hw.boards.dram.gen.generate`, an ``Instance``). The link and the engine share the memory
through the arbiter as before: the host writes the program (weights, commands) into the SDRAM once
and then only pictures and answers cross the link. The link has ``WRITE_PIX`` (:mod:`hw.link.protocol`):
a picture goes up at 3 bytes a pixel and the bridge writes it in the engine's 4-byte input words.

With ``cpu: None`` the core does not initialise the SDRAM itself: :class:`DramInitSequencer` plays the
LiteX BIOS's ``sdram_init()`` (:attr:`hw.boards.dram.gen.DramCore.init_writes`) over the core's
``wb_ctrl`` bus after reset, then waits for ``init_done`` within an absolute deadline. Its outcome
is the ``DRAM_INIT`` register (:class:`DramReg`, :class:`InitBits`); the LiteDRAM user port refuses
commands until ``init_done``, so the host reads ``DRAM_INIT`` before any memory access.

``PROG_HASH_LO``/``PROG_HASH_HI`` are two read-write registers, zero after reset, in which the host
records the hash of the program it uploaded (:mod:`sw.resident`): after a board reset they read 0
and the host uploads again. ``RUN_LINK_WORDS``/``RUN_LINK_BYTES`` count the memory words the link
wrote and the bytes it received during the last run: the host uploads the next picture into a second
input buffer while the engine runs, and these show it did.

Board pins (``platform`` given): the core's SDRAM pads are the raw pins of amaranth-boards'
``sdram`` resource (the core instantiates its own ``TRELLIS_IO`` buffers, ``dq`` bidirectional);
the SDRAM clock is the system clock inverted, from an ``ODDRX1F`` (the chip samples commands and
write data half a period after the FPGA launched them). Without a platform (Verilator) the core is
the ``--sim`` one, with LiteDRAM's SDRAM model inside.
"""


import enum

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from hw.arbiter import MemArbiter
from hw.boards.top import drive_board_pins
from hw.bus import CsrSignature
from hw.dram_port import DramPort
from hw.engine import Engine
from hw.link import UARTLink

__all__ = ["DramReg", "InitBits", "INIT_MAGIC", "WishboneSignature", "DramInitSequencer", "DramRegisters",
           "DramBoardCore", "init_status"]


class DramReg(enum.IntEnum):
    """Board registers on the CSR bus beside the engine's (:class:`hw.isa.Reg`, indices 0..13)."""

    DRAM_INIT = 48      # InitBits | INIT_MAGIC << 16 (R)
    PROG_HASH_LO = 49   # program hash, low word (RW, 0 after reset)
    PROG_HASH_HI = 50   # program hash, high word (RW, 0 after reset)
    RUN_LINK_WORDS = 51  # memory words the link wrote during the last run (R; cleared when a run starts)
    RUN_LINK_BYTES = 52  # request bytes the link received during the last run (R; cleared when a run starts)


class InitBits(enum.IntFlag):
    """The low half of ``DRAM_INIT``."""

    DONE = 1 << 0       # LiteDRAM's init_done: the user port is open
    ERROR = 1 << 1      # LiteDRAM's init_error
    TIMEOUT = 1 << 2    # init_done still low at the sequencer's deadline
    BUSY = 1 << 3       # the init sequence is being played or awaited


#: High half of ``DRAM_INIT``: a board with external DRAM (a board without reads 0 there).
INIT_MAGIC = 0xD7A3


def init_status(value: int) -> str:
    """``DRAM_INIT`` in words, for messages."""
    if value >> 16 != INIT_MAGIC:
        return f"{value:#010x} (no DRAM initialisation register: not a DRAM board)"
    flags = [f.name for f in InitBits if value & f]
    return f"{value:#010x} ({'|'.join(flags) or 'idle'})"


WishboneSignature = wiring.Signature({
    "adr": Out(30), "dat_w": Out(32), "sel": Out(4), "cyc": Out(1), "stb": Out(1), "we": Out(1),
    "ack": In(1), "dat_r": In(32),
})


class DramInitSequencer(wiring.Component):
    """Plays ``writes`` over ``wb`` after reset, then waits for ``init_done``.

    Parameters
    ----------
    writes : list of (byte address, value, wait cycles)
        The core's init sequence (:attr:`hw.boards.dram.gen.DramCore.init_writes` with each register
        name resolved to its ``wb_ctrl`` byte address); ``wait`` cycles pass after a write is acknowledged.
    deadline : int
        Cycles after the last write within which ``init_done`` must rise; then ``status.TIMEOUT``.
    ack_timeout : int
        Cycles a write may wait for its acknowledge; then ``status.TIMEOUT``.

    Members
    -------
    wb : ``Out(WishboneSignature)``
    init_done, init_error : ``In(1)``
        The core's outputs.
    status : ``Out(4)``
        :class:`InitBits`.
    """

    def __init__(self, writes, *, deadline: int = 100_000, ack_timeout: int = 256):
        if not writes:
            raise ValueError("the init sequence is empty")
        for addr, value, wait in writes:
            if addr % 4 or not 0 <= value < 1 << 32 or wait < 0:
                raise ValueError(f"bad init write (addr={addr:#x}, value={value:#x}, wait={wait})")
        self.writes = [tuple(w) for w in writes]
        self.deadline, self.ack_timeout = deadline, ack_timeout
        super().__init__({"wb": Out(WishboneSignature), "init_done": In(1), "init_error": In(1),
                          "status": Out(4)})

    @property
    def cycles(self) -> int:
        """Cycles the sequence takes when every write is acknowledged at once (waits included)."""
        return sum(3 + w for _, _, w in self.writes)

    def elaborate(self, platform):
        m = Module()
        n = len(self.writes)
        idx = Signal(range(n + 1))
        adr, val, wait = Signal(30), Signal(32), Signal(range(max(w for _, _, w in self.writes) + 2))
        with m.Switch(idx):
            for i, (a, v, w) in enumerate(self.writes):
                with m.Case(i):
                    m.d.comb += [adr.eq(a >> 2), val.eq(v), wait.eq(w)]
        count = Signal(range(max(self.deadline, self.ack_timeout, *(w for _, _, w in self.writes)) + 2))
        timeout = Signal()
        wb = self.wb
        m.d.comb += [wb.adr.eq(adr), wb.dat_w.eq(val), wb.sel.eq(0xF), wb.we.eq(1),
                     self.status.eq(Mux(self.init_done, InitBits.DONE, 0) | Mux(self.init_error, InitBits.ERROR, 0)
                                    | Mux(timeout, InitBits.TIMEOUT, 0))]
        with m.FSM(name="dram_init"):
            with m.State("WRITE"):
                m.d.comb += [wb.cyc.eq(1), wb.stb.eq(1), self.status[3].eq(1)]
                m.d.sync += count.eq(count + 1)
                with m.If(wb.ack):
                    m.d.sync += count.eq(0)
                    m.next = "WAIT"
                with m.Elif(count == self.ack_timeout):
                    m.d.sync += timeout.eq(1)
                    m.next = "IDLE"
            with m.State("WAIT"):
                m.d.comb += self.status[3].eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(count >= wait):
                    m.d.sync += [count.eq(0), idx.eq(idx + 1)]
                    m.next = "NEXT"
            with m.State("NEXT"):
                m.d.comb += self.status[3].eq(1)
                m.next = "WRITE"
                with m.If(idx == n):
                    m.next = "POLL"
            with m.State("POLL"):
                m.d.comb += self.status[3].eq(~self.init_done)
                m.d.sync += count.eq(count + 1)
                with m.If(self.init_done):
                    m.next = "IDLE"
                with m.Elif(count == self.deadline):
                    m.d.sync += timeout.eq(1)
                    m.next = "IDLE"
            with m.State("IDLE"):
                pass
        return m


class DramRegisters(wiring.Component):
    """The CSR bus split: :class:`DramReg` served here, every other register forwarded to ``engine``.

    Reads keep the bus's timing (``r_data`` the cycle after ``r_stb``): the forwarded read's data or
    this block's register, chosen by a flag registered with the strobe.

    ``RUN_LINK_WORDS`` and ``RUN_LINK_BYTES`` count the strobes ``link_word`` (a memory word the link
    wrote) and ``link_byte`` (a request byte received) while ``busy`` (a run in progress) is high; they
    are cleared in the cycle ``busy`` rises and hold their values after the run, until the next one:
    how much of the next picture crossed the link while the engine ran (the host's double buffering).
    """

    def __init__(self):
        super().__init__({"csr": In(CsrSignature), "engine": Out(CsrSignature), "init_status": In(4),
                          "busy": In(1), "link_word": In(1), "link_byte": In(1)})

    def elaborate(self, platform):
        m = Module()
        csr, eng = self.csr, self.engine
        mine = Signal()
        ours = csr.addr >= min(DramReg)
        hash_lo, hash_hi = Signal(32), Signal(32)
        value = Signal(32)
        m.d.comb += [eng.addr.eq(csr.addr), eng.w_data.eq(csr.w_data), eng.r_stb.eq(csr.r_stb & ~ours),
                     eng.w_stb.eq(csr.w_stb & ~ours), csr.r_data.eq(Mux(mine, value, eng.r_data))]
        run_words, run_bytes, was_busy = Signal(32), Signal(32), Signal()
        m.d.sync += was_busy.eq(self.busy)
        with m.If(self.busy & ~was_busy):
            m.d.sync += [run_words.eq(self.link_word), run_bytes.eq(self.link_byte)]
        with m.Elif(self.busy):
            m.d.sync += [run_words.eq(run_words + self.link_word), run_bytes.eq(run_bytes + self.link_byte)]
        with m.If(csr.r_stb):
            m.d.sync += [mine.eq(ours), value.eq(0)]
            with m.Switch(csr.addr):
                with m.Case(DramReg.DRAM_INIT):
                    m.d.sync += value.eq(self.init_status | (INIT_MAGIC << 16))
                with m.Case(DramReg.PROG_HASH_LO):
                    m.d.sync += value.eq(hash_lo)
                with m.Case(DramReg.PROG_HASH_HI):
                    m.d.sync += value.eq(hash_hi)
                with m.Case(DramReg.RUN_LINK_WORDS):
                    m.d.sync += value.eq(run_words)
                with m.Case(DramReg.RUN_LINK_BYTES):
                    m.d.sync += value.eq(run_bytes)
        with m.If(csr.w_stb), m.Switch(csr.addr):
            with m.Case(DramReg.PROG_HASH_LO):
                m.d.sync += hash_lo.eq(csr.w_data)
            with m.Case(DramReg.PROG_HASH_HI):
                m.d.sync += hash_hi.eq(csr.w_data)
        return m


#: The core's SDRAM pads -> amaranth-boards' ``sdram`` subsignals (raw pins: the core drives the _n levels).
SDRAM_PADS = {"sdram_a": "a", "sdram_ba": "ba", "sdram_cas_n": "cas", "sdram_cke": "clk_en", "sdram_cs_n": "cs",
              "sdram_dm": "dqm", "sdram_dq": "dq", "sdram_ras_n": "ras", "sdram_we_n": "we"}


class DramBoardCore(wiring.Component):
    """Engine + SDRAM (LiteDRAM) + UART link + arbiter + init sequencer, in one ``sync`` domain.

    Parameters
    ----------
    spec : BoardSpec
        A board with ``storage == "sdram"`` and a ``dram_config``.
    divisor, frame_timeout, engine
        As for :class:`hw.boards.top.BoardCore`.
    sim : bool
        Use the ``--sim`` core (LiteDRAM's SDRAM model inside, no pads): Verilator.
    init_writes : list or None
        Override of the init sequence (register name, value, wait) — a test drops its last write to
        get a DRAM that never finishes initialising.
    init_deadline : int
        Cycles after the sequence within which ``init_done`` must rise.

    Members
    -------
    rx, tx, irq, busy, link_active
        As :class:`hw.boards.top.BoardCore`.
    dram_ready : ``Out(1)``
        The SDRAM is initialised (for an LED).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    irq: Out(1)
    busy: Out(1)
    link_active: Out(1)
    dram_ready: Out(1)

    def __init__(self, spec, *, divisor: int | None = None, frame_timeout: int | None = None, engine=None,
                 sim: bool = False, init_writes=None, init_deadline: int = 100_000):
        from hw.boards.dram.gen import generate

        if spec.storage != "sdram" or not spec.dram_config:
            raise ValueError(f"board {spec.name} has no SDRAM (storage={spec.storage!r})")
        self.spec, self.sim = spec, sim
        cfg = spec.engine
        self.divisor = spec.divisor if divisor is None else divisor
        self.frame_timeout = (max(16, round(spec.frame_timeout_s * spec.clk_hz)) if frame_timeout is None
                              else frame_timeout)
        self.dram = generate(spec.dram_config_path, sim=sim)
        writes = self.dram.init_writes if init_writes is None else init_writes
        self.init_writes = [(self.dram.csrs[reg], value, wait) for reg, value, wait in writes]
        self.init_deadline = init_deadline
        self.engine = Engine(cfg) if engine is None else engine
        baud = spec.baud if divisor is None else spec.clk_hz // self.divisor
        self.link = UARTLink(divisor=self.divisor, word_bytes=cfg.rows, addr_bits=cfg.mem_addr_bits,
                             mem_words=spec.mem_words, frame_timeout=self.frame_timeout, board=spec.board_id,
                             clk_hz=spec.clk_hz, baud=baud, write_pix=True)
        self.port = DramPort(word_bytes=cfg.rows, addr_bits=cfg.mem_addr_bits,
                             native_data_width=self.dram.native_data_width,
                             native_addr_bits=self.dram.native_address_width)
        super().__init__()

    def _core(self, m, platform, nat, init: DramInitSequencer):
        """The LiteDRAM core as an ``Instance``; its pads to the board's pins when there is a platform."""
        dram = self.dram
        ports = {"i_clk": ClockSignal(), "o_user_clk": Signal(), "o_user_rst": Signal(),
                 "o_init_done": init.init_done, "o_init_error": init.init_error,
                 "i_wb_ctrl_cti": Const(0, 3), "i_wb_ctrl_bte": Const(0, 2), "o_wb_ctrl_err": Signal()}
        for name in ("adr", "dat_w", "sel", "cyc", "stb", "we"):
            ports[f"i_wb_ctrl_{name}"] = getattr(init.wb, name)
        ports["o_wb_ctrl_ack"] = init.wb.ack
        ports["o_wb_ctrl_dat_r"] = init.wb.dat_r
        if "rst" in dram.ports:
            ports["i_rst"] = ResetSignal()
        if "sim_trace" in dram.ports:
            ports["i_sim_trace"] = Const(0)
        for name, pin in dram.ports.items():
            if name.startswith("user_port_native_0_"):
                member = getattr(nat, name[len("user_port_native_0_"):])
                ports[f"{'i' if pin.direction == 'input' else 'o'}_{name}"] = member
        if not self.sim:
            if platform is None:
                raise ValueError("the hardware LiteDRAM core needs a platform (its SDRAM pins); use sim=True")
            pads = platform.request("sdram", 0, dir="-")
            for name, sub in SDRAM_PADS.items():
                ports[f"{'io' if name == 'sdram_dq' else 'o'}_{name}"] = getattr(pads, sub).io
            platform.add_file(f"{dram.name}.v", dram.verilog.read_text())
            # The SDRAM clock: the system clock inverted (ODDRX1F: low after the rising edge, high after the falling).
            m.submodules.sdram_clk = clk = io.DDRBuffer("o", pads.clk)
            m.d.comb += [clk.o[0].eq(0), clk.o[1].eq(1)]
        missing = set(dram.ports) - {key.split("_", 1)[1] for key in ports}
        if missing:
            raise ValueError(f"LiteDRAM core ports not bound: {sorted(missing)}")
        m.submodules.litedram = Instance(dram.name, **ports)

    def verilog_source(self) -> str:
        """The ``--sim`` core's Verilog for the simulation build (its ``timescale`` lines dropped)."""
        if not self.sim:
            return ""
        return "\n".join(line for line in self.dram.verilog.read_text().splitlines()
                         if not line.startswith("`timescale"))

    def elaborate(self, platform):
        m = Module()
        cfg = self.spec.engine
        m.submodules.engine = engine = self.engine
        m.submodules.link = link = self.link
        m.submodules.regs = regs = DramRegisters()
        m.submodules.port = port = self.port
        m.submodules.init = init = DramInitSequencer(self.init_writes, deadline=self.init_deadline)
        m.submodules.arbiter = arb = MemArbiter(n=2, word_bytes=cfg.rows, addr_bits=cfg.mem_addr_bits,
                                                max_reads=8)
        wiring.connect(m, engine.mem, arb.i0)
        wiring.connect(m, link.mem, arb.i1)
        wiring.connect(m, arb.o, port.mem)
        wiring.connect(m, link.csr, regs.csr)
        wiring.connect(m, regs.engine, engine.csr)
        self._core(m, platform, port.native, init)
        drive_board_pins(m, self, link, engine)
        m.d.comb += [regs.init_status.eq(init.status), regs.busy.eq(self.busy), regs.link_byte.eq(link.rx_byte),
                     regs.link_word.eq(link.mem.req.valid & link.mem.req.ready & link.mem.req.payload.write)]
        m.d.comb += self.dram_ready.eq(init.init_done)
        return m

