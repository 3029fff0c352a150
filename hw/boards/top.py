"""Board tops: the engine, its on-chip memory, the host link, a memory arbiter, the PLL.

::

     FTDI UART ──rx──► UARTLink ──csr──────────────► Engine ──irq──► LED
              ◄─tx───     │                             │
                          └──mem──► MemArbiter ◄──mem───┘
                                        │
                                  OnChipMemory (SPRAM / block RAM)

:class:`BoardCore` is everything but the clock and the pins; the Verilator
link test (:mod:`sim.link_top`) builds exactly it. :class:`BoardTop` adds the
PLL, the reset and the board's resources, for ``platform.build``.

The link is the UART (:class:`hw.link.UARTLink`) or, on a board with a ULPI PHY, USB
(:class:`hw.link.usb.UsbLink`, ``BoardSpec.link == "usb"``): :func:`board_link` makes the
one the spec names, and a board core takes any link with their members (``csr``, ``mem``,
``active``; ``rx``/``tx`` only for a link with pins).
"""


from amaranth.build import ResourceError, Subsignal
from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from hw.arbiter import MemArbiter
from hw.engine import Engine
from hw.isa import Ctrl, Reg
from hw.link import UARTLink

from . import BoardSpec
from .memory import OnChipMemory
from .pll import BoardClock

__all__ = ["BoardCore", "BoardTop", "LINK_MEMBERS", "board_link", "link_has_pins", "drive_board_pins"]


def board_link(spec: "BoardSpec", *, frame_timeout: int, divisor: int | None = None, write_pix: bool = False):
    """The host link ``spec.link`` names, for a board core: the UART at ``divisor`` clocks a bit (default the
    spec's), or USB on the board's ULPI PHY (INFO then reports 480 Mbit/s as its line rate)."""
    cfg = spec.engine
    bridge = dict(word_bytes=cfg.rows, addr_bits=cfg.mem_addr_bits, mem_words=spec.mem_words,
                  frame_timeout=frame_timeout, board=spec.board_id, clk_hz=spec.clk_hz, write_pix=write_pix)
    if spec.link == "usb":
        from hw.link.protocol import USB_HS_BAUD
        from hw.link.usb import UsbLink

        return UsbLink(baud=USB_HS_BAUD, **bridge)
    div = spec.divisor if divisor is None else divisor
    return UARTLink(divisor=div, baud=spec.baud if divisor is None else spec.clk_hz // div, **bridge)


#: What a board core uses of its host link; any other member of the link is a pin (the UART's ``rx``, ``tx``).
LINK_MEMBERS = ("csr", "mem", "active", "errors", "rx_byte")


def link_has_pins(link) -> bool:
    """The link has UART lines (``rx``, ``tx``) for the board's pins."""
    return "rx" in link.signature.members


class BoardCore(wiring.Component):
    """Engine + on-chip memory + UART link + arbiter, in one ``sync`` domain.

    Parameters
    ----------
    spec : BoardSpec
        The board (engine configuration, memory, clock, line rate).
    divisor : int or None
        Clock cycles per UART bit; default ``spec.clk_hz // spec.baud``. A
        simulation uses a small one so that a byte takes few cycles.
    frame_timeout : int or None
        Cycles of silence that end a frame in progress; default
        ``spec.frame_timeout_s`` at ``spec.clk_hz``.
    engine : wiring.Component or None
        The accelerator, default ``Engine(spec.engine)``. Tests put a stand-in
        with the same members here (``sim.fixtures.CopyEngine``).
    link : wiring.Component or None
        The host link, default :func:`board_link` of the spec (UART or USB). Any component with
        ``csr``, ``mem``, ``active`` (and ``rx``/``tx`` when it has pins) will do.

    Members
    -------
    rx : ``In(1)``, tx : ``Out(1)``
        The UART lines (host to board, board to host), idle high; only with a link that has them.
    irq : ``Out(1)``
        The engine's interrupt (``STATUS`` has DONE or ERROR).
    busy : ``Out(1)``
        The engine is running.
    link_active : ``Out(1)``
        A frame is being received or answered.
    """

    def __init__(self, spec: "BoardSpec", *, divisor: int | None = None, frame_timeout: int | None = None,
                 engine=None, link=None):
        self.spec = spec
        cfg = spec.engine
        self.divisor = spec.divisor if divisor is None else divisor
        self.frame_timeout = (max(16, round(spec.frame_timeout_s * spec.clk_hz)) if frame_timeout is None
                              else frame_timeout)
        self.engine = Engine(cfg) if engine is None else engine
        self.link = (board_link(spec, frame_timeout=self.frame_timeout, divisor=divisor) if link is None
                     else link)
        self.memory = OnChipMemory(word_bytes=cfg.rows, addr_bits=cfg.mem_addr_bits, mem_words=spec.mem_words,
                                   storage=spec.storage)
        pins = {"rx": In(1, init=1), "tx": Out(1, init=1)} if link_has_pins(self.link) else {}
        super().__init__({**pins, "irq": Out(1), "busy": Out(1), "link_active": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cfg = self.spec.engine
        m.submodules.engine = engine = self.engine
        m.submodules.link = link = self.link
        m.submodules.memory = memory = self.memory
        # Reads in flight are bounded by the memory's answer queue anyway; a few tags suffice.
        m.submodules.arbiter = arb = MemArbiter(n=2, word_bytes=cfg.rows, addr_bits=cfg.mem_addr_bits,
                                                max_reads=4)
        wiring.connect(m, engine.mem, arb.i0)
        wiring.connect(m, link.mem, arb.i1)
        wiring.connect(m, arb.o, memory.bus)
        wiring.connect(m, link.csr, engine.csr)
        drive_board_pins(m, self, link, engine)
        return m


def drive_board_pins(m: Module, core, link, engine, *, pins=None) -> None:
    """The link's ``pins`` (members of the link and the core alike; default every member beyond
    :data:`LINK_MEMBERS`: the UART's lines, none for a USB link, which requests its PHY itself), ``irq``,
    ``link_active`` and ``busy`` ports of a board core (``busy``, for an LED: a run in progress, from the
    START the link wrote to the end the engine signals)."""
    busy = Signal()
    with m.If(link.csr.w_stb & (link.csr.addr == Reg.CTRL) & link.csr.w_data[Ctrl.START.bit_length() - 1]):
        m.d.sync += busy.eq(1)
    with m.If(engine.irq):
        m.d.sync += busy.eq(0)
    if pins is None:
        pins = [name for name in link.signature.members if name not in LINK_MEMBERS]
    for name in pins:
        if link.signature.members[name].flow == In:
            m.d.comb += getattr(link, name).eq(getattr(core, name))
        else:
            m.d.comb += getattr(core, name).eq(getattr(link, name))
    m.d.comb += [core.irq.eq(engine.irq), core.busy.eq(busy), core.link_active.eq(link.active)]


class BoardTop(Elaboratable):
    """The bitstream's top: :class:`BoardCore` on the board's PLL clock, its link (UART pins, or the USB PHY
    the link requests) and LEDs.

    Parameters
    ----------
    spec : BoardSpec
    engine : wiring.Component or None
        Passed to :class:`BoardCore` (default: the engine); a stand-in
        measures what the rest of the top costs.

    LEDs (where the board has them): 0 the engine's ``irq``, 1 a run in
    progress, 2 link activity, 3 (a board with DRAM) the DRAM initialised.
    """

    def __init__(self, spec: BoardSpec, *, engine=None):
        self.spec = spec
        if spec.storage == "sdram":   # the program in the board's DRAM (issue 11)
            from .dram_board import DramBoardCore

            self.core = DramBoardCore(spec, engine=engine)
        else:
            self.core = BoardCore(spec, engine=engine)

    def elaborate(self, platform):
        m = Module()
        spec = self.spec
        f_in = platform.default_clk_frequency
        m.domains.sync = ClockDomain("sync")
        m.submodules.core = core = self.core
        if getattr(core, "owns_clock", False):
            # The DRAM core's CRG makes the clock from the oscillator and drives `sync` (hw.boards.dram_board).
            m.submodules.osc = osc = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
            m.d.comb += core.clk_in.eq(osc.i)
        elif spec.family == "ice40":
            pad = platform.request(platform.default_clk, dir="-")
            m.submodules.clock = clock = BoardClock(family="ice40", f_in=f_in, f_out=spec.clk_hz, clk_pad=pad)
        else:
            m.submodules.osc = osc = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
            m.submodules.clock = clock = BoardClock(family="ecp5", f_in=f_in, f_out=spec.clk_hz)
            m.d.comb += clock.clk_in.eq(osc.i)
        if not getattr(core, "owns_clock", False):
            m.d.comb += ClockSignal("sync").eq(clock.clk)
        if link_has_pins(core.link):   # a UART link (a USB link requests its PHY itself)
            self._uart(m, platform, core)
        leds = (core.irq, core.busy, core.link_active) + ((core.dram_ready,) if hasattr(core, "dram_ready") else ())
        for i, sig in enumerate(leds):
            try:
                pin = platform.request("led", i, dir="-")
            except ResourceError:   # fewer LEDs on this board
                break
            m.submodules[f"led_{i}"] = led = io.Buffer("o", pin)
            m.d.comb += led.o.eq(sig)
        return m

    @staticmethod
    def _uart(m, platform, core):
        # Every subsignal raw (some boards add rts/dtr to the FTDI UART); only rx and tx are used.
        subs = [sub.name for sub in platform.lookup("uart", 0).ios if isinstance(sub, Subsignal)]
        uart = platform.request("uart", 0, dir={name: "-" for name in subs})
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx.i), tx.o.eq(core.tx)]
