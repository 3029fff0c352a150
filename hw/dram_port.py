"""The engine's memory port on a LiteDRAM native user port (width adaptation, in-order answers).

LiteDRAM's native port (``user_port_native_0_*`` of the core that ``hw/boards/dram/gen.py``
generates) has three streams: ``cmd`` (``we``, ``addr`` in native words), ``wdata`` (``data``,
byte-enable ``we``), one beat per write command, in command order, and ``rdata``, one beat per read
command, in command order. On the ULX3S's 16-bit SDR SDRAM a native word is 16 bits.

:class:`DramPort` turns one engine request (a word of ``word_bytes`` bytes, :class:`hw.bus.MemPortSignature`)
into ``ratio = 8 * word_bytes / native_data_width`` native commands at addresses ``base + addr * ratio + i``,
lane ``i`` being bits ``[i * native_data_width, (i + 1) * native_data_width)`` of the engine word
(little-endian, as the host lays out bytes). Write beats carry all byte enables. A write request is
complete once its commands are accepted: its data waits in a FIFO of ``write_buffer`` engine words
(LiteDRAM asks for write data only when its bank machine issues the write, cycles after it accepted the
command; the FIFO keeps the beats in command order). Read beats are assembled into one engine word
and answered in request order. The next request is taken in the cycle the current one's last command is
accepted, so a stream of reads keeps the native command stream busy. ``rdata_ready`` is low only while an
assembled answer waits for ``rsp.ready``: LiteDRAM holds the data back, nothing is lost.

Ordering: a write is complete for the engine when its request is accepted. Its native commands enter
LiteDRAM before those of any later request, and LiteDRAM keeps one port's commands to the same bank in
order, so a later read of the same word returns the written data.

:class:`WideDramPort` is the other way round, for a native word wider than an engine word (the ECPIX-5's
DDR3 core: 128 bits, four engine words): one native command per request, the engine word a lane of the
native word, writes with only that lane's byte enables (LiteDRAM writes only the enabled bytes: no
read-modify-write), reads answered in order from the lane recorded at the request. :func:`dram_port`
picks the adapter for a width.

Clock domain: the adapter is synchronous to the clock of the core's ``user_clk`` (the DRAM's sys clock,
50 MHz on the ULX3S). The simplest integration runs the engine in that domain too (the ULX3S engine
closes at 57 MHz, docs/BOARDS.md); a slower engine clock would need an asynchronous FIFO pair on
``req``/``rsp`` (``amaranth.lib.fifo.AsyncFIFO``), not provided here.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.bus import MemPortSignature, mem_request_layout

__all__ = ["NativePortSignature", "DramPort", "OutputStage", "WideDramPort", "dram_port"]


class NativePortSignature(wiring.Signature):
    """A LiteDRAM native user port, from the initiator's side (names as in the core, without the prefix)."""

    def __init__(self, data_width: int, addr_bits: int):
        self.data_width = data_width
        self.addr_bits = addr_bits
        super().__init__({
            "cmd_valid": Out(1), "cmd_ready": In(1), "cmd_we": Out(1), "cmd_addr": Out(addr_bits),
            "wdata_valid": Out(1), "wdata_ready": In(1), "wdata_we": Out(data_width // 8),
            "wdata_data": Out(data_width),
            "rdata_valid": In(1), "rdata_ready": Out(1), "rdata_data": In(data_width),
        })


class DramPort(wiring.Component):
    """Engine memory port (``mem``, the engine initiates) onto a LiteDRAM native port (``native``).

    Parameters
    ----------
    word_bytes, addr_bits : int
        The engine's memory port (:class:`hw.bus.MemPortSignature`).
    native_data_width, native_addr_bits : int
        The core's native port (16 and 24 on the ULX3S: 32 MB of 16-bit words).
    base : int
        Native word address of engine word 0.
    write_buffer : int
        Engine words of write data that may wait for LiteDRAM to take them.

    Raises
    ------
    ValueError
        If an engine word is not a whole number of native words, or the engine's address space
        (from ``base``) does not fit the native one.
    """

    def __init__(self, *, word_bytes: int, addr_bits: int, native_data_width: int = 16, native_addr_bits: int = 24,
                 base: int = 0, write_buffer: int = 4):
        if native_data_width % 8 or (8 * word_bytes) % native_data_width:
            raise ValueError(f"an engine word of {8 * word_bytes} bits is not a whole number of "
                             f"{native_data_width}-bit native words")
        self.ratio = 8 * word_bytes // native_data_width
        if base < 0 or base + (self.ratio << addr_bits) > 1 << native_addr_bits:
            raise ValueError(f"engine words 0..2**{addr_bits} x {self.ratio} native words from {base} do not fit "
                             f"a {native_addr_bits}-bit native address space")
        self.word_bytes, self.addr_bits, self.write_buffer = word_bytes, addr_bits, write_buffer
        self.native_data_width, self.native_addr_bits, self.base = native_data_width, native_addr_bits, base
        super().__init__({
            "mem": In(MemPortSignature(word_bytes, addr_bits)),
            "native": Out(NativePortSignature(native_data_width, native_addr_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        req, rsp, nat = self.mem.req, self.mem.rsp, self.native
        k, width = self.ratio, self.native_data_width
        lane_bits = max(1, (k - 1).bit_length())

        busy = Signal()
        write = Signal()
        addr = Signal(self.native_addr_bits)      # native address of lane 0
        cmd_i = Signal(range(k + 1))              # commands of the current request accepted so far

        # Write data waits in a FIFO of engine words, so that a write request is complete (and the next
        # one taken) once its commands are accepted: LiteDRAM asks for the data only when its bank
        # machine issues the write, and the FIFO keeps the beats in command order.
        m.submodules.wdata = wfifo = SyncFIFOBuffered(width=8 * self.word_bytes, depth=self.write_buffer)
        wlane = Signal(lane_bits)

        cmd_fire = nat.cmd_valid & nat.cmd_ready
        wd_fire = nat.wdata_valid & nat.wdata_ready
        cmd_done = (cmd_i == k) | ((cmd_i == k - 1) & cmd_fire)
        finishing = busy & cmd_done

        m.d.comb += [
            req.ready.eq((~busy | finishing) & wfifo.w_rdy),
            wfifo.w_en.eq(req.valid & req.ready & req.payload.write),
            wfifo.w_data.eq(req.payload.data),
            nat.cmd_valid.eq(busy & (cmd_i < k)),
            nat.cmd_we.eq(write),
            nat.cmd_addr.eq(addr + cmd_i),
            nat.wdata_valid.eq(wfifo.r_rdy),
            nat.wdata_we.eq(-1),
            nat.wdata_data.eq(wfifo.r_data.word_select(wlane, width) if k > 1 else wfifo.r_data),
            wfifo.r_en.eq(wd_fire & (wlane == k - 1)),
        ]
        with m.If(cmd_fire):
            m.d.sync += cmd_i.eq(cmd_i + 1)
        with m.If(wd_fire):
            m.d.sync += wlane.eq(Mux(wlane == k - 1, 0, wlane + 1))
        with m.If(finishing):
            m.d.sync += busy.eq(0)
        with m.If(req.valid & req.ready):
            m.d.sync += [
                busy.eq(1), write.eq(req.payload.write),
                addr.eq(self.base + req.payload.addr * k), cmd_i.eq(0),
            ]

        # Answers: k read beats shift into one engine word; rdata waits only while a full word waits.
        beats = Signal(range(k + 1))
        word = Signal(8 * self.word_bytes)
        full = beats == k
        rsp_fire = rsp.valid & rsp.ready
        rd_fire = nat.rdata_valid & nat.rdata_ready
        m.d.comb += [
            rsp.valid.eq(full),
            rsp.payload.eq(word),
            nat.rdata_ready.eq(~full | rsp.ready),
        ]
        shifted = Cat(word[width:], nat.rdata_data) if k > 1 else nat.rdata_data
        with m.If(rd_fire):
            m.d.sync += word.eq(shifted)
            with m.If(rsp_fire):
                m.d.sync += beats.eq(1)
            with m.Else():
                m.d.sync += beats.eq(beats + 1)
        with m.Elif(rsp_fire):
            m.d.sync += beats.eq(0)
        return m


class OutputStage(wiring.Component):
    """A two-register queue whose output ``ready`` loads three flip-flops and nothing else.

    LiteDRAM's ``cmd_ready`` and ``wdata_ready`` come late in the cycle from its bank machines and
    crossbar (the ECPIX-5 build of 2026-12 failed timing on ``wdata_ready`` -> the write FIFO's read
    port). Here ``o.ready`` only moves the read pointer and clears one valid bit; ``o.payload`` is a
    mux of two registers by that pointer; the freed register is refilled from ``i`` the next cycle
    (``i.ready`` depends on registers only). Throughput one word a cycle, latency one cycle.

    Members
    -------
    i : ``In(stream.Signature(width))``
    o : ``Out(stream.Signature(width))``
    """

    def __init__(self, width: int):
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        self.width = width
        super().__init__({"i": In(stream.Signature(width)), "o": Out(stream.Signature(width))})

    @property
    def latency(self) -> int:
        """Cycles from ``i`` accepted to ``o.valid``."""
        return 1

    def elaborate(self, platform):
        m = Module()
        data = [Signal(self.width, name=f"data{k}") for k in range(2)]
        valid = Signal(2)
        rd, wr = Signal(), Signal()
        m.d.comb += [self.o.valid.eq(valid.bit_select(rd, 1)), self.o.payload.eq(Mux(rd, data[1], data[0])),
                     self.i.ready.eq(~valid.bit_select(wr, 1))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += rd.eq(~rd)
            with m.If(rd):
                m.d.sync += valid[1].eq(0)
            with m.Else():
                m.d.sync += valid[0].eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += wr.eq(~wr)
            with m.If(wr):
                m.d.sync += [data[1].eq(self.i.payload), valid[1].eq(1)]
            with m.Else():
                m.d.sync += [data[0].eq(self.i.payload), valid[0].eq(1)]
        return m


class WideDramPort(wiring.Component):
    """Engine memory port (``mem``) onto a LiteDRAM native port wider than an engine word (``native``).

    Engine word ``a`` is lane ``a % lanes`` (bits ``[lane * 8 * word_bytes, ...)``) of native word
    ``base + a // lanes``. A request is one native command. Writes carry the engine word in every lane
    and the byte enables of its lane only. Reads record their lane in a queue; each read beat is cut to
    its lane and queued for ``rsp`` in request order. ``rdata_ready`` is always high: a read is accepted
    only while fewer than ``max_reads`` answers are owed, and the answer queue holds ``max_reads``.

    The request enters and the command and the write data leave through :class:`OutputStage` s, so
    LiteDRAM's ``cmd_ready`` and ``wdata_ready`` load a few flip-flops each and ``mem.req.ready`` is a
    register's (the arbiter's grant does not chain into this block).

    Timing: a request accepted in cycle t has its command valid from cycle t + 3 (the input stage, the
    queue, the output stage); throughput one request a cycle.

    Parameters
    ----------
    word_bytes, addr_bits : int
        The engine's memory port.
    native_data_width, native_addr_bits : int
        The core's native port (128 and 25 on the ECPIX-5: 512 MB of 128-bit words).
    base : int
        Native word address of engine word 0.
    write_buffer : int
        Writes whose data may wait for LiteDRAM to take it.
    max_reads : int
        Reads in flight (accepted, not yet answered).

    Raises
    ------
    ValueError
        If the native word is not a power-of-two number (at least 2) of engine words, or the engine's
        address space does not fit the native one.
    """

    def __init__(self, *, word_bytes: int, addr_bits: int, native_data_width: int = 128, native_addr_bits: int = 25,
                 base: int = 0, write_buffer: int = 8, max_reads: int = 16):
        lanes, rest = divmod(native_data_width, 8 * word_bytes)
        if rest or lanes < 2 or lanes & (lanes - 1):
            raise ValueError(f"a {native_data_width}-bit native word is not a power-of-two number (>= 2) of "
                             f"{8 * word_bytes}-bit engine words")
        self.lanes, self.lane_bits = lanes, (lanes - 1).bit_length()
        if base < 0 or base + ((1 << addr_bits) >> self.lane_bits) > 1 << native_addr_bits:
            raise ValueError(f"engine words 0..2**{addr_bits} / {lanes} native words from {base} do not fit a "
                             f"{native_addr_bits}-bit native address space")
        if write_buffer < 1 or max_reads < 1:
            raise ValueError(f"write_buffer and max_reads must be at least 1, got {write_buffer}, {max_reads}")
        self.word_bytes, self.addr_bits, self.base = word_bytes, addr_bits, base
        self.native_data_width, self.native_addr_bits = native_data_width, native_addr_bits
        self.write_buffer, self.max_reads = write_buffer, max_reads
        super().__init__({
            "mem": In(MemPortSignature(word_bytes, addr_bits)),
            "native": Out(NativePortSignature(native_data_width, native_addr_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        req, rsp, nat = self.mem.req, self.mem.rsp, self.native
        wbits, lb, na = 8 * self.word_bytes, self.lane_bits, self.native_addr_bits
        m.submodules.cmd_q = cmd_q = SyncFIFOBuffered(width=1 + na, depth=4)
        m.submodules.cmd_out = cmd_out = OutputStage(1 + na)
        m.submodules.wr_q = wr_q = SyncFIFOBuffered(width=wbits + lb, depth=self.write_buffer)
        m.submodules.wr_out = wr_out = OutputStage(wbits + lb)
        m.submodules.lane_q = lane_q = SyncFIFOBuffered(width=lb, depth=self.max_reads)
        m.submodules.answers = answers = SyncFIFOBuffered(width=wbits, depth=self.max_reads)

        # The request enters through an OutputStage too: mem.req.ready is a register's, so the arbiter's
        # grant logic does not chain into this block's queue levels (the ECPIX-5 build with seed 2 failed
        # at 71.5 MHz on engine request -> arbiter -> port ready -> link bridge).
        layout = mem_request_layout(self.word_bytes, self.addr_bits)
        m.submodules.req_in = req_in = OutputStage(layout.size)
        m.d.comb += [req_in.i.valid.eq(req.valid), req_in.i.payload.eq(req.payload), req.ready.eq(req_in.i.ready)]
        head = data.View(layout, req_in.o.payload)
        head_addr, head_write, head_data = head.addr, head.write, head.data

        owed = Signal(range(self.max_reads + 1))     # reads accepted, answers not yet taken by rsp
        lane = head_addr[:lb]
        write = head_write
        take = req_in.o.valid & req_in.o.ready
        m.d.comb += [
            req_in.o.ready.eq(cmd_q.w_rdy & wr_q.w_rdy & lane_q.w_rdy & (owed < self.max_reads)),
            cmd_q.w_en.eq(take),
            cmd_q.w_data.eq(Cat(write, (self.base + (head_addr >> lb))[:na])),
            wr_q.w_en.eq(take & write),
            wr_q.w_data.eq(Cat(head_data, lane)),
            lane_q.w_en.eq(take & ~write),
            lane_q.w_data.eq(lane),
            # The queues into the output stages, the stages onto the native port.
            cmd_out.i.valid.eq(cmd_q.r_rdy), cmd_out.i.payload.eq(cmd_q.r_data), cmd_q.r_en.eq(cmd_out.i.ready),
            wr_out.i.valid.eq(wr_q.r_rdy), wr_out.i.payload.eq(wr_q.r_data), wr_q.r_en.eq(wr_out.i.ready),
            nat.cmd_valid.eq(cmd_out.o.valid), cmd_out.o.ready.eq(nat.cmd_ready),
            nat.cmd_we.eq(cmd_out.o.payload[0]), nat.cmd_addr.eq(cmd_out.o.payload[1:]),
            nat.wdata_valid.eq(wr_out.o.valid), wr_out.o.ready.eq(nat.wdata_ready),
            nat.wdata_data.eq(Cat(*[wr_out.o.payload[:wbits]] * self.lanes)),
            nat.wdata_we.eq(Const((1 << self.word_bytes) - 1, self.word_bytes * self.lanes)
                            << (wr_out.o.payload[wbits:] * self.word_bytes)),
            # Answers: every beat is owed (rdata_ready high), its lane at the head of lane_q.
            nat.rdata_ready.eq(1),
            lane_q.r_en.eq(nat.rdata_valid),
            answers.w_en.eq(nat.rdata_valid),
            answers.w_data.eq(nat.rdata_data.word_select(lane_q.r_data, wbits)),
            rsp.valid.eq(answers.r_rdy), rsp.payload.eq(answers.r_data), answers.r_en.eq(rsp.ready),
        ]
        m.d.sync += owed.eq(owed + (take & ~write) - (rsp.valid & rsp.ready))
        return m


def dram_port(*, word_bytes: int, addr_bits: int, native_data_width: int, native_addr_bits: int, **kw):
    """:class:`DramPort` when an engine word is one or more native words, else :class:`WideDramPort`."""
    if native_data_width <= 8 * word_bytes:
        return DramPort(word_bytes=word_bytes, addr_bits=addr_bits, native_data_width=native_data_width,
                        native_addr_bits=native_addr_bits, **kw)
    return WideDramPort(word_bytes=word_bytes, addr_bits=addr_bits, native_data_width=native_data_width,
                        native_addr_bits=native_addr_bits, **kw)
