"""The DRAM boards' core: the engine's memory port on LiteDRAM, the program kept on the board.

::

       host ──link pins──► link ──csr──► DramRegisters ──csr (other registers)──► Engine
                             │               │ INIT, PROG_HASH, RUN_LINK_*, RDLY, LEVEL  │
                             └──mem──► MemArbiter ◄────────────mem─────────────────────────┘
                                           │
                             DramPort / WideDramPort (engine words <-> native words)
                                           │
        DramInitSequencer, ReadDelaySetter ──wb_ctrl──► LiteDRAM core ──► DRAM pins

:class:`DramBoardCore` is :class:`hw.boards.top.BoardCore` with the on-chip memory replaced by the
board's DRAM behind a LiteDRAM core generated from the board's ``dram_config``
(:func:`hw.boards.dram.gen.generate`, an ``Instance``): the ULX3S's 32 MB SDR SDRAM (GENSDRPHY,
``ulx3s_sdram.yml``) and the ECPIX-5's 512 MB DDR3 (ECP5DDRPHY, ``ecpix5_ddr3.yml``). The link and the
engine share the memory through the arbiter: the host writes the program (weights, commands) into the
DRAM once and then only pictures and answers cross the link. The link is a constructor parameter
(default :class:`hw.link.UARTLink` with ``WRITE_PIX``, :mod:`hw.link.protocol`): any component with the
members ``csr``, ``mem``, ``active``, ``errors`` and ``rx_byte``; its other members (the UART's ``rx``
and ``tx``) become the core's own, for the board top to wire to pins (a link without such members
requests its pins itself).

With ``cpu: None`` the core does not initialise the DRAM itself: :class:`DramInitSequencer` plays the
LiteX BIOS's ``sdram_init()`` (:attr:`hw.boards.dram.gen.DramCore.init_writes`) over the core's
``wb_ctrl`` bus after reset, then waits for ``init_done`` within an absolute deadline. Its outcome
is the ``DRAM_INIT`` register (:class:`DramReg`, :class:`InitBits`); the LiteDRAM user port refuses
commands until ``init_done``, so the host reads ``DRAM_INIT`` before any memory access.

DDR3 also needs read leveling (the BIOS's ``sdram_leveling()``, which a ``cpu: None`` core does not
run): on the ECP5DDRPHY a read delay (8 steps of the DQS input delay) and a bitslip (4) per byte lane.
Here the host scans them (:mod:`sw.leveling`): a write of ``DRAM_RDLY`` (:class:`Rdly`) makes
:class:`ReadDelaySetter` play the PHY's ``dly_sel``/``rdly_dq_rst``/``rdly_dq_inc``/``rdly_dq_bitslip``
writes over ``wb_ctrl``; the host checks a test pattern through the normal memory path at each
setting and keeps the centre of the passing window. ``DRAM_LEVEL`` is a read-write register, zero
after reset, where the host records the settings it chose (bit 31 set): a board reset reads 0 there
and the host levels again. A core without PHY delay registers (the ULX3S's SDR PHY, any ``--sim``
core) reads ``Rdly.NO_PHY`` in ``DRAM_RDLY``: nothing to level, the host records that and moves on.

``PROG_HASH_LO``/``PROG_HASH_HI`` are two read-write registers, zero after reset, in which the host
records the hash of the program it uploaded (:mod:`sw.resident`): after a board reset they read 0
and the host uploads again. ``RUN_LINK_WORDS``/``RUN_LINK_BYTES`` count the memory words the link
wrote and the bytes it received during the last run: the host uploads the next picture into a second
input buffer while the engine runs, and these show it did.

Clocks. The ULX3S core (GENSDRPHY) runs on the ``sync`` clock the board top makes (its CRG has no PLL).
The ECPIX-5 core's CRG (LiteDRAMECP5DDRPHYCRG) takes the board's 100 MHz oscillator (``clk_in``) and
makes sys2x (150 MHz, the DDR I/O) and sys (75 MHz): the core then *drives* ``sync`` with its
``user_clk``/``user_rst`` (:attr:`DramBoardCore.owns_clock`), so the engine and the controller share
one domain, no clock crossing, and the board top makes no PLL of its own.

Board pins (``platform`` given): the core's pads are the raw pins of amaranth-boards' ``sdram`` or
``ddr3`` resource (:data:`PADS`; the core instantiates its own I/O buffers). The SDR SDRAM's clock is
the system clock inverted, from an ``ODDRX1F``; the DDR3's clock, DQS and DQ come from the
ECP5DDRPHY's own DDR primitives. The ECPIX-5 has no DDR3 ``cs_n`` or ``reset_n`` pin (tied on the
board): those core outputs stay unconnected. Without a platform (Verilator) the core is the ``--sim``
one, with LiteDRAM's DRAM model inside.
"""


import enum

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from hw.arbiter import MemArbiter
from hw.boards.top import LINK_MEMBERS, board_link, drive_board_pins
from hw.bus import CsrSignature
from hw.dram_port import dram_port
from hw.engine import Engine

__all__ = ["DramReg", "InitBits", "INIT_MAGIC", "Rdly", "WishboneSignature", "DramInitSequencer", "ReadDelaySetter",
           "DramRegisters", "PADS", "DramBoardCore", "init_status"]


class DramReg(enum.IntEnum):
    """Board registers on the CSR bus beside the engine's (:class:`hw.isa.Reg`, indices 0..13)."""

    DRAM_INIT = 48      # InitBits | INIT_MAGIC << 16 (R)
    PROG_HASH_LO = 49   # program hash, low word (RW, 0 after reset)
    PROG_HASH_HI = 50   # program hash, high word (RW, 0 after reset)
    RUN_LINK_WORDS = 51  # memory words the link wrote during the last run (R; cleared when a run starts)
    RUN_LINK_BYTES = 52  # request bytes the link received during the last run (R; cleared when a run starts)
    DRAM_RDLY = 53      # PHY read delay and bitslip (W: apply a setting, Rdly; R: the last one | BUSY | NO_PHY)
    DRAM_LEVEL = 54     # the read leveling the host chose (RW, 0 after reset; Rdly.LEVELED set by the host)


class InitBits(enum.IntFlag):
    """The low half of ``DRAM_INIT``."""

    DONE = 1 << 0       # LiteDRAM's init_done: the user port is open
    ERROR = 1 << 1      # LiteDRAM's init_error
    TIMEOUT = 1 << 2    # init_done still low at the sequencer's deadline
    BUSY = 1 << 3       # the init sequence is being played or awaited


class Rdly:
    """``DRAM_RDLY``: one read-delay setting of the ECP5DDRPHY for the byte lanes in ``MODULES``.

    Bits 0..2 the delay (``rdly_dq_inc`` steps after ``rdly_dq_rst``), 4..5 the bitslip, 8..9 the byte
    lanes (DDR3 modules) it applies to. Read: the last setting written, with ``BUSY`` while its writes
    are played and ``NO_PHY`` on a core without delay registers (SDR, ``--sim``). ``DRAM_LEVEL`` holds
    two settings (lane 0 in bits 0..7, lane 1 in 8..15) and ``LEVELED``.
    """

    DELAYS = 8
    BITSLIPS = 4
    LANES = 2
    DELAY_SHIFT, BITSLIP_SHIFT, MODULES_SHIFT = 0, 4, 8
    BUSY = 1 << 31
    NO_PHY = 1 << 30
    LEVELED = 1 << 31

    @staticmethod
    def pack(delay: int, bitslip: int, modules: int) -> int:
        if not (0 <= delay < Rdly.DELAYS and 0 <= bitslip < Rdly.BITSLIPS and 0 < modules < 1 << Rdly.LANES):
            raise ValueError(f"bad read delay setting (delay={delay}, bitslip={bitslip}, modules={modules:#x})")
        return delay << Rdly.DELAY_SHIFT | bitslip << Rdly.BITSLIP_SHIFT | modules << Rdly.MODULES_SHIFT


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


#: The ECP5DDRPHY's read-delay registers on ``wb_ctrl`` (csr.csv names).
RDLY_CSRS = ("ddrphy_dly_sel", "ddrphy_rdly_dq_rst", "ddrphy_rdly_dq_inc", "ddrphy_rdly_dq_bitslip_rst",
             "ddrphy_rdly_dq_bitslip")


class ReadDelaySetter(wiring.Component):
    """Applies one :class:`Rdly` setting: the writes of the BIOS's ``read_leveling`` helpers over ``wb``.

    For each selected lane ``i``: ``dly_sel = 1 << i``, ``rdly_dq_rst = 1``, ``delay`` x ``rdly_dq_inc = 1``,
    ``rdly_dq_bitslip_rst = 1``, ``bitslip`` x ``rdly_dq_bitslip = 1``; then ``dly_sel = 0``. At most
    2 x (4 + 7 + 3) + 1 = 29 writes, a few cycles each. A write not acknowledged within ``ack_timeout``
    cycles is abandoned (``error``), so ``busy`` always falls.

    Parameters
    ----------
    csrs : dict
        Byte addresses of :data:`RDLY_CSRS` on ``wb_ctrl``.

    Members
    -------
    wb : ``Out(WishboneSignature)``
    start : ``In(1)``
        A strobe: apply ``setting`` (ignored while ``busy``).
    setting : ``In(10)``
        :class:`Rdly` bits 0..9.
    busy, error : ``Out(1)``
    """

    def __init__(self, csrs: dict, *, ack_timeout: int = 256):
        missing = [name for name in RDLY_CSRS if name not in csrs]
        if missing:
            raise ValueError(f"the core has no read-delay registers {missing}")
        self.addr = {name: csrs[name] for name in RDLY_CSRS}
        self.ack_timeout = ack_timeout
        super().__init__({"wb": Out(WishboneSignature), "start": In(1), "setting": In(10), "busy": Out(1),
                          "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        wb, a = self.wb, self.addr
        delay, bitslip, modules = Signal(3), Signal(2), Signal(Rdly.LANES)
        lane = Signal(range(Rdly.LANES + 1))
        count = Signal(range(max(self.ack_timeout, Rdly.DELAYS) + 2))
        waited = Signal(range(self.ack_timeout + 2))
        adr, dat = Signal(30), Signal(32)
        m.d.comb += [wb.adr.eq(adr), wb.dat_w.eq(dat), wb.sel.eq(0xF), wb.we.eq(1)]

        def write(state, name, value, then):
            """State ``state``: write ``value`` to ``name``, then go to ``then`` (a state or a callable)."""
            with m.State(state):
                m.d.comb += [adr.eq(a[name] >> 2), dat.eq(value), wb.cyc.eq(1), wb.stb.eq(1), self.busy.eq(1)]
                m.d.sync += waited.eq(waited + 1)
                with m.If(wb.ack):
                    m.d.sync += waited.eq(0)
                    if callable(then):
                        then()
                    else:
                        m.next = then
                with m.Elif(waited == self.ack_timeout):
                    m.d.sync += [waited.eq(0), self.error.eq(1)]
                    m.next = "IDLE"

        def after_rst():
            m.next = "INC"
            with m.If(delay == 0):
                m.next = "BRST"

        def after_brst():
            m.next = "SLIP"
            with m.If(bitslip == 0):
                m.next = "NEXT"

        def after_inc():
            m.d.sync += count.eq(count + 1)
            with m.If(count + 1 >= delay):
                m.next = "BRST"

        def after_slip():
            m.d.sync += count.eq(count + 1)
            with m.If(count + 1 >= bitslip):
                m.next = "NEXT"

        with m.FSM(name="rdly"):
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [delay.eq(self.setting[0:3]), bitslip.eq(self.setting[4:6]),
                             modules.eq(self.setting[8:10]), lane.eq(0), self.error.eq(0)]
                m.next = "LANE"
            with m.State("LANE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += count.eq(0)
                with m.If(lane == Rdly.LANES):
                    m.next = "UNSEL"
                with m.Elif(modules.bit_select(lane, 1)):
                    m.next = "SEL"
                with m.Else():
                    m.d.sync += lane.eq(lane + 1)
            write("SEL", "ddrphy_dly_sel", Const(1, 32) << lane, "RST")
            write("RST", "ddrphy_rdly_dq_rst", 1, after_rst)
            write("INC", "ddrphy_rdly_dq_inc", 1, after_inc)
            with m.State("BRST"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += count.eq(0)
                m.next = "BRST_W"
            write("BRST_W", "ddrphy_rdly_dq_bitslip_rst", 1, after_brst)
            write("SLIP", "ddrphy_rdly_dq_bitslip", 1, after_slip)
            with m.State("NEXT"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += lane.eq(lane + 1)
                m.next = "LANE"
            write("UNSEL", "ddrphy_dly_sel", 0, "IDLE")
        return m


class DramRegisters(wiring.Component):
    """The CSR bus split: :class:`DramReg` served here, every other register forwarded to ``engine``.

    Reads keep the bus's timing (``r_data`` the cycle after ``r_stb``): the forwarded read's data or
    this block's register, chosen by a flag registered with the strobe.

    ``RUN_LINK_WORDS`` and ``RUN_LINK_BYTES`` count the strobes ``link_word`` (a memory word the link
    wrote) and ``link_byte`` (a request byte received) while ``busy`` (a run in progress) is high; they
    are cleared in the cycle ``busy`` rises and hold their values after the run, until the next one:
    how much of the next picture crossed the link while the engine ran (the host's double buffering).

    A write of ``DRAM_RDLY`` strobes ``rdly_start`` with the value on ``rdly_setting`` (held until the
    next write); a read gives the setting with ``Rdly.BUSY`` from ``rdly_busy`` and ``Rdly.NO_PHY`` when
    ``has_rdly`` is False. ``DRAM_LEVEL`` is a plain read-write register, 0 after reset.
    """

    def __init__(self, *, has_rdly: bool = False):
        self.has_rdly = has_rdly
        super().__init__({"csr": In(CsrSignature), "engine": Out(CsrSignature), "init_status": In(4),
                          "busy": In(1), "link_word": In(1), "link_byte": In(1),
                          "rdly_start": Out(1), "rdly_setting": Out(10), "rdly_busy": In(1)})

    def elaborate(self, platform):
        m = Module()
        csr, eng = self.csr, self.engine
        mine = Signal()
        ours = csr.addr >= min(DramReg)
        hash_lo, hash_hi, level = Signal(32), Signal(32), Signal(32)
        value = Signal(32)
        rdly = Cat(self.rdly_setting, Const(0, 20), Const(0 if self.has_rdly else 1, 1), self.rdly_busy)
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
            readable = {DramReg.DRAM_INIT: self.init_status | (INIT_MAGIC << 16), DramReg.PROG_HASH_LO: hash_lo,
                        DramReg.PROG_HASH_HI: hash_hi, DramReg.RUN_LINK_WORDS: run_words,
                        DramReg.RUN_LINK_BYTES: run_bytes, DramReg.DRAM_RDLY: rdly, DramReg.DRAM_LEVEL: level}
            with m.Switch(csr.addr):
                for reg, source in readable.items():
                    with m.Case(reg):
                        m.d.sync += value.eq(source)
        m.d.sync += self.rdly_start.eq(0)
        with m.If(csr.w_stb), m.Switch(csr.addr):
            with m.Case(DramReg.PROG_HASH_LO):
                m.d.sync += hash_lo.eq(csr.w_data)
            with m.Case(DramReg.PROG_HASH_HI):
                m.d.sync += hash_hi.eq(csr.w_data)
            with m.Case(DramReg.DRAM_RDLY):
                m.d.sync += [self.rdly_setting.eq(csr.w_data[:10]), self.rdly_start.eq(self.has_rdly)]
            with m.Case(DramReg.DRAM_LEVEL):
                m.d.sync += level.eq(csr.w_data)
        return m


#: Bidirectional pads (LiteX declares them ``input``; :func:`hw.boards.dram.gen.generate` fixes that).
INOUT_PADS = ("sdram_dq", "ddram_dq", "ddram_dqs_p")

#: The core's pads -> (amaranth-boards resource, subsignal, direction) per pad prefix (raw pins: the core
#: drives the _n levels and makes its own I/O buffers). ``.p``: the true side of a differential pair.
PADS = {
    "sdram": ("sdram", {"sdram_a": "a", "sdram_ba": "ba", "sdram_cas_n": "cas", "sdram_cke": "clk_en",
                        "sdram_cs_n": "cs", "sdram_dm": "dqm", "sdram_dq": "dq", "sdram_ras_n": "ras",
                        "sdram_we_n": "we"}),
    "ddram": ("ddr3", {"ddram_a": "a", "ddram_ba": "ba", "ddram_cas_n": "cas", "ddram_cke": "clk_en",
                       "ddram_ras_n": "ras", "ddram_we_n": "we", "ddram_dm": "dm", "ddram_dq": "dq",
                       "ddram_odt": "odt", "ddram_dqs_p": "dqs.p", "ddram_clk_p": "clk.p"}),
}


class DramBoardCore(wiring.Component):
    """Engine + DRAM (LiteDRAM) + link + arbiter + init sequencer (+ read-delay setter), in one ``sync`` domain.

    Parameters
    ----------
    spec : BoardSpec
        A board with ``storage == "sdram"`` and a ``dram_config``.
    divisor, frame_timeout, engine
        As for :class:`hw.boards.top.BoardCore` (``divisor`` and ``frame_timeout``: the default UART link).
    sim : bool
        Use the ``--sim`` core (LiteDRAM's DRAM model inside, no pads, clocked by ``sync``): Verilator.
    init_writes : list or None
        Override of the init sequence (register name, value, wait) — a test drops its last write to
        get a DRAM that never finishes initialising.
    init_deadline : int
        Cycles after the sequence within which ``init_done`` must rise.
    link : wiring.Component or None
        The host link (members ``csr``, ``mem``, ``active``, ``errors``, ``rx_byte``, :data:`LINK_MEMBERS`);
        default the spec's (:func:`hw.boards.top.board_link`: the UART, or USB) with ``WRITE_PIX``.

    Members
    -------
    irq, busy, link_active
        As :class:`hw.boards.top.BoardCore`.
    dram_ready : ``Out(1)``
        The DRAM is initialised (for an LED).
    rx, tx, ...
        The link's own other members (the UART's lines), passed through.
    clk_in : ``In(1)``
        Only when :attr:`owns_clock`: the board's oscillator, the core's CRG input.
    """

    def __init__(self, spec, *, divisor: int | None = None, frame_timeout: int | None = None, engine=None,
                 sim: bool = False, init_writes=None, init_deadline: int = 100_000, link=None):
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
        if link is None:    # the spec's link: the UART, or USB on the ULPI PHY (spec.with_link("usb"))
            link = board_link(spec, frame_timeout=self.frame_timeout, divisor=divisor, write_pix=True)
        missing = [name for name in LINK_MEMBERS if name not in link.signature.members]
        if missing:
            raise ValueError(f"the link {type(link).__name__} lacks the members {missing}")
        self.link = link
        self.port = dram_port(word_bytes=cfg.rows, addr_bits=cfg.mem_addr_bits,
                              native_data_width=self.dram.native_data_width,
                              native_addr_bits=self.dram.native_address_width)
        self.has_rdly = all(name in self.dram.csrs for name in RDLY_CSRS)
        members = {"irq": Out(1), "busy": Out(1), "link_active": Out(1), "dram_ready": Out(1)}
        for name, member in link.signature.members.items():
            if name not in LINK_MEMBERS:
                members[name] = member      # the same direction as on the link
        if self.owns_clock:
            members["clk_in"] = In(1)
        super().__init__(members)

    @property
    def owns_clock(self) -> bool:
        """The hardware core's CRG makes the clock (``pll_locked``: the ECP5 DDR3 CRG): ``sync`` is its
        ``user_clk``, ``clk_in`` the board's oscillator."""
        return not self.sim and "pll_locked" in self.dram.ports

    @property
    def link_pins(self) -> list[str]:
        """The link's members passed through to the core (the UART's ``rx``, ``tx``)."""
        return [name for name in self.link.signature.members if name not in LINK_MEMBERS]

    def _clock_ports(self, m) -> dict:
        """``clk``/``rst`` of the core; with :attr:`owns_clock` ``sync`` from its ``user_clk``/``user_rst``."""
        user_clk, user_rst = Signal(), Signal()
        ports = {"o_user_clk": user_clk, "o_user_rst": user_rst}
        if self.owns_clock:
            ports.update({"i_clk": self.clk_in, "i_rst": Const(0), "o_pll_locked": Signal()})
            m.d.comb += [ClockSignal("sync").eq(user_clk), ResetSignal("sync").eq(user_rst)]
        else:
            ports["i_clk"] = ClockSignal()
            if "rst" in self.dram.ports:
                ports["i_rst"] = ResetSignal()
        return ports

    def _pads(self, m, platform) -> dict:
        """The core's pads onto the board's DRAM resource (raw pins)."""
        dram = self.dram
        prefix = next((p for p in PADS if any(name.startswith(p + "_") for name in dram.ports)), None)
        if prefix is None:
            raise ValueError(f"the LiteDRAM core {dram.verilog} has no sdram_/ddram_ pads")
        resource, subsignals = PADS[prefix]
        pads = platform.request(resource, 0, dir="-")
        ports = {}
        for name, sub in subsignals.items():
            pin = pads
            for part in sub.split("."):
                pin = getattr(pin, part)
            ports[f"{'io' if name in INOUT_PADS else 'o'}_{name}"] = getattr(pin, "io", pin)
        for name, pin in dram.ports.items():       # pads the board has no pin for (cs_n, reset_n, the _n sides)
            if name.startswith(prefix + "_") and name not in subsignals:
                ports[f"{'o' if pin.direction == 'output' else 'i'}_{name}"] = (
                    Signal(pin.width, name=f"unused_{name}") if pin.direction == "output" else Const(0, pin.width))
        platform.add_file(f"{dram.name}.v", dram.verilog.read_text())
        if prefix == "sdram":
            # The SDRAM clock: the system clock inverted (ODDRX1F: low after the rising edge, high after the falling).
            m.submodules.sdram_clk = clk = io.DDRBuffer("o", pads.clk)
            m.d.comb += [clk.o[0].eq(0), clk.o[1].eq(1)]
        return ports

    def _core(self, m, platform, nat, wb: wiring.PureInterface, init_done, init_error):
        """The LiteDRAM core as an ``Instance``; its pads to the board's pins when there is a platform."""
        dram = self.dram
        ports = {**self._clock_ports(m), "o_init_done": init_done, "o_init_error": init_error,
                 "i_wb_ctrl_cti": Const(0, 3), "i_wb_ctrl_bte": Const(0, 2), "o_wb_ctrl_err": Signal()}
        for name in ("adr", "dat_w", "sel", "cyc", "stb", "we"):
            ports[f"i_wb_ctrl_{name}"] = getattr(wb, name)
        ports["o_wb_ctrl_ack"] = wb.ack
        ports["o_wb_ctrl_dat_r"] = wb.dat_r
        if "sim_trace" in dram.ports:
            ports["i_sim_trace"] = Const(0)
        for name, pin in dram.ports.items():
            if name.startswith("user_port_native_0_"):
                member = getattr(nat, name[len("user_port_native_0_"):])
                ports[f"{'i' if pin.direction == 'input' else 'o'}_{name}"] = member
        if not self.sim:
            if platform is None:
                raise ValueError("the hardware LiteDRAM core needs a platform (its DRAM pins); use sim=True")
            ports.update(self._pads(m, platform))
        missing = set(dram.ports) - {key.split("_", 1)[1] for key in ports}
        if missing:
            raise ValueError(f"LiteDRAM core ports not bound: {sorted(missing)}")
        m.submodules.litedram = Instance(dram.name, **ports)

    def _ctrl_bus(self, m, init: DramInitSequencer, regs: DramRegisters):
        """``wb_ctrl``: the init sequencer's, or the read-delay setter's while it plays a setting."""
        if not self.has_rdly:
            m.d.comb += regs.rdly_busy.eq(0)
            return init.wb
        m.submodules.rdly = rdly = ReadDelaySetter(self.dram.csrs)
        bus = wiring.PureInterface(WishboneSignature, path=("wb_ctrl",))
        m.d.comb += [rdly.start.eq(regs.rdly_start), rdly.setting.eq(regs.rdly_setting),
                     regs.rdly_busy.eq(rdly.busy | regs.rdly_start)]
        for name in ("adr", "dat_w", "sel", "cyc", "stb", "we"):
            m.d.comb += getattr(bus, name).eq(Mux(rdly.busy, getattr(rdly.wb, name), getattr(init.wb, name)))
        m.d.comb += [init.wb.ack.eq(bus.ack & ~rdly.busy), rdly.wb.ack.eq(bus.ack & rdly.busy),
                     init.wb.dat_r.eq(bus.dat_r), rdly.wb.dat_r.eq(bus.dat_r)]
        return bus

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
        m.submodules.regs = regs = DramRegisters(has_rdly=self.has_rdly)
        m.submodules.port = port = self.port
        m.submodules.init = init = DramInitSequencer(self.init_writes, deadline=self.init_deadline)
        m.submodules.arbiter = arb = MemArbiter(n=2, word_bytes=cfg.rows, addr_bits=cfg.mem_addr_bits,
                                                max_reads=8)
        wiring.connect(m, engine.mem, arb.i0)
        wiring.connect(m, link.mem, arb.i1)
        wiring.connect(m, arb.o, port.mem)
        wiring.connect(m, link.csr, regs.csr)
        wiring.connect(m, regs.engine, engine.csr)
        bus = self._ctrl_bus(m, init, regs)
        self._core(m, platform, port.native, bus, init.init_done, init.init_error)
        drive_board_pins(m, self, link, engine)
        m.d.comb += [regs.init_status.eq(init.status), regs.busy.eq(self.busy), regs.link_byte.eq(link.rx_byte),
                     regs.link_word.eq(link.mem.req.valid & link.mem.req.ready & link.mem.req.payload.write)]
        m.d.comb += self.dram_ready.eq(init.init_done)
        return m
