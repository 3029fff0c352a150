"""Test fixtures for the simulation harness. Not part of the accelerator.

:class:`CopyEngine` has the engine's three members (``csr``, ``mem``, ``irq``)
and the register map of :mod:`hw.isa`, but instead of running commands it
copies ``CMD_COUNT`` words from ``CMD_ADDR`` to ``PROF_ADDR`` through the
memory port. It lets the harness (:mod:`sim.memory`, :mod:`sim.top`, the
Verilator backend) be built and proven before the real engine exists, and
keeps doing so independently of it.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.bus import CsrSignature, MemPortSignature
from hw.isa import ENGINE_ID, VERSION, Ctrl, EngineConfig, ErrorCode, Reg, Status

__all__ = ["CopyEngine"]


class CopyEngine(wiring.Component):
    """A DMA copy engine with the engine's ports and register map (a harness fixture).

    Registers (:class:`hw.isa.Reg`)
        ``ID``, ``VERSION``, ``CONFIG0..2`` read as the real engine's would for
        ``config``. ``CTRL.START`` (ignored while busy) copies ``CMD_COUNT``
        words from ``CMD_ADDR`` to ``PROF_ADDR`` (both word addresses);
        ``CTRL.CLEAR`` clears ``DONE``, ``ERROR`` and the error code.
        ``STATUS`` has ``BUSY``, ``DONE``, ``ERROR`` and the error code (bits
        8..11: ``BAD_ADDRESS`` when either range passes ``2 ** mem_addr_bits``,
        checked at START). ``CMD_INDEX`` counts the words written so far,
        ``CYCLES`` the cycles since START (frozen when the run ends),
        ``ACTIVE`` the cycles in which a word was written. ``SCRATCH`` is a
        plain read/write register. Reads of other indices return 0.

    CSR timing
        As :mod:`hw.bus` specifies: writes take effect at the strobe's clock
        edge; a read strobe in cycle ``t`` presents the value on ``r_data`` in
        cycle ``t + 1`` (and holds it until the next read strobe).

    Memory traffic
        Reads are issued ahead into a ``buffer_words``-deep buffer, so up to
        ``buffer_words`` reads are in flight; the answer stream is always
        ready (space is reserved when a read is issued). Writes have priority
        over reads; on the single request port a steady copy therefore moves
        one word every two cycles. The request register is only reloaded
        when empty or accepted, so a presented request never changes.

    ``irq`` is high while ``STATUS.DONE`` or ``STATUS.ERROR`` is set.

    Parameters
    ----------
    config : hw.isa.EngineConfig
        Geometry: sets the memory port (``rows``-byte words,
        ``mem_addr_bits``) and the CONFIG registers.
    buffer_words : int
        Depth of the read-ahead buffer (most reads in flight), >= 1.
    """

    def __init__(self, config: EngineConfig, *, buffer_words: int = 16):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, got {config!r}")
        if not (isinstance(buffer_words, int) and buffer_words >= 1):
            raise ValueError(f"buffer_words must be an integer >= 1, got {buffer_words!r}")
        self._config = config
        self._buffer_words = buffer_words
        super().__init__({
            "csr": In(CsrSignature),
            "mem": Out(MemPortSignature(config.rows, config.mem_addr_bits)),
            "irq": Out(1),
        })

    @property
    def config(self) -> EngineConfig:
        return self._config

    @property
    def buffer_words(self) -> int:
        return self._buffer_words

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        ab = cfg.mem_addr_bits
        wbits = 8 * cfg.rows
        req, rsp = self.mem.req, self.mem.rsp

        busy = Signal()
        done = Signal()
        error = Signal()
        err_code = Signal(4)
        cmd_addr = Signal(32)
        cmd_count = Signal(32)
        prof_addr = Signal(32)
        cycles = Signal(32)
        active = Signal(32)
        scratch = Signal(32)

        rd_addr = Signal(ab)
        rd_left = Signal(33)
        wr_addr = Signal(ab)
        wr_left = Signal(33)
        written = Signal(32)

        m.submodules.buffer = buf = SyncFIFO(width=wbits, depth=self._buffer_words)
        in_flight = Signal(range(self._buffer_words + 1))

        # CSR bus ----------------------------------------------------------------------------
        start, clear = self._csr_bus(m, busy=busy, done=done, error=error, err_code=err_code, cmd_addr=cmd_addr,
                                     cmd_count=cmd_count, prof_addr=prof_addr, written=written, cycles=cycles,
                                     active=active, scratch=scratch)
        # Run control ------------------------------------------------------------------------
        limit = 1 << ab
        bad_range = (cmd_addr + cmd_count > limit) | (prof_addr + cmd_count > limit)
        with m.If(clear):
            m.d.sync += [done.eq(0), error.eq(0), err_code.eq(0)]
        with m.If(start & ~busy):
            with m.If(bad_range):
                m.d.sync += [error.eq(1), done.eq(0), err_code.eq(ErrorCode.BAD_ADDRESS.value)]
            with m.Else():
                m.d.sync += [
                    busy.eq(1), done.eq(0), error.eq(0), err_code.eq(0),
                    cycles.eq(0), active.eq(0), written.eq(0),
                    rd_addr.eq(cmd_addr), rd_left.eq(cmd_count),
                    wr_addr.eq(prof_addr), wr_left.eq(cmd_count),
                ]
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)

        # DMA ------------------------------------------------------------------------------
        # Space in the buffer is reserved when a read is issued (`in_flight`), so
        # the answer stream can always be ready.
        m.d.comb += [
            rsp.ready.eq(1),
            buf.w_en.eq(rsp.valid),
            buf.w_data.eq(rsp.payload),
        ]
        req_free = ~req.valid | req.ready  # the request register can take a new request
        issue_wr = Signal()
        issue_rd = Signal()
        m.d.comb += [
            issue_wr.eq(busy & req_free & buf.r_rdy & (wr_left != 0)),
            issue_rd.eq(busy & req_free & ~issue_wr & (rd_left != 0)
                        & (buf.level + in_flight < self._buffer_words)),
            buf.r_en.eq(issue_wr),
        ]
        with m.If(issue_wr):
            m.d.sync += [
                req.valid.eq(1),
                req.payload.write.eq(1),
                req.payload.addr.eq(wr_addr),
                req.payload.data.eq(buf.r_data),
                wr_addr.eq(wr_addr + 1),
                wr_left.eq(wr_left - 1),
            ]
        with m.Elif(issue_rd):
            m.d.sync += [
                req.valid.eq(1),
                req.payload.write.eq(0),
                req.payload.addr.eq(rd_addr),
                rd_addr.eq(rd_addr + 1),
                rd_left.eq(rd_left - 1),
            ]
        with m.Elif(req.ready):
            m.d.sync += req.valid.eq(0)

        with m.If(issue_rd & ~rsp.valid):
            m.d.sync += in_flight.eq(in_flight + 1)
        with m.Elif(~issue_rd & rsp.valid):
            m.d.sync += in_flight.eq(in_flight - 1)

        with m.If(req.valid & req.ready & req.payload.write):
            m.d.sync += [written.eq(written + 1), active.eq(active + 1)]
        # The run ends when the last write has been accepted by the memory: once
        # every write is issued, a pending request can only be the last one.
        with m.If(busy & (wr_left == 0) & (~req.valid | req.ready)):
            m.d.sync += [busy.eq(0), done.eq(1)]

        return m

    def _csr_bus(self, m: Module, *, busy, done, error, err_code, cmd_addr, cmd_count, prof_addr, written,
                 cycles, active, scratch):
        """The registers on the CSR bus (reads answered the next cycle) and ``irq``; the ``CTRL`` strobes
        ``(start, clear)``."""
        csr = self.csr
        m.d.comb += self.irq.eq(done | error)
        status = Signal(32)
        m.d.comb += status.eq(Mux(busy, Status.BUSY, 0) | Mux(done, Status.DONE, 0)
                              | Mux(error, Status.ERROR, 0) | (err_code << 8))
        c0, c1, c2 = self._config.config_words()
        read_map = {
            Reg.ID: ENGINE_ID,
            Reg.VERSION: VERSION[0] << 16 | VERSION[1],
            Reg.CONFIG0: c0,
            Reg.CONFIG1: c1,
            Reg.CONFIG2: c2,
            Reg.STATUS: status,
            Reg.CMD_ADDR: cmd_addr,
            Reg.CMD_COUNT: cmd_count,
            Reg.CMD_INDEX: written,
            Reg.PROF_ADDR: prof_addr,
            Reg.CYCLES: cycles,
            Reg.ACTIVE: active,
            Reg.SCRATCH: scratch,
        }
        with m.If(csr.r_stb), m.Switch(csr.addr):
            for reg, value in read_map.items():
                with m.Case(reg):
                    m.d.sync += csr.r_data.eq(value)
            with m.Default():
                m.d.sync += csr.r_data.eq(0)

        start = Signal()
        clear = Signal()
        m.d.comb += [
            start.eq(csr.w_stb & (csr.addr == Reg.CTRL) & ((csr.w_data & Ctrl.START) != 0)),
            clear.eq(csr.w_stb & (csr.addr == Reg.CTRL) & ((csr.w_data & Ctrl.CLEAR) != 0)),
        ]
        with m.If(csr.w_stb), m.Switch(csr.addr):
            with m.Case(Reg.CMD_ADDR):
                m.d.sync += cmd_addr.eq(csr.w_data)
            with m.Case(Reg.CMD_COUNT):
                m.d.sync += cmd_count.eq(csr.w_data)
            with m.Case(Reg.PROF_ADDR):
                m.d.sync += prof_addr.eq(csr.w_data)
            with m.Case(Reg.SCRATCH):
                m.d.sync += scratch.eq(csr.w_data)
        return start, clear
