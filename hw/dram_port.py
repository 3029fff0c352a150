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

Clock domain: the adapter is synchronous to the clock of the core's ``user_clk`` (the DRAM's sys clock,
50 MHz on the ULX3S). The simplest integration runs the engine in that domain too (the ULX3S engine
closes at 57 MHz, docs/BOARDS.md); a slower engine clock would need an asynchronous FIFO pair on
``req``/``rsp`` (``amaranth.lib.fifo.AsyncFIFO``), not provided here.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.bus import MemPortSignature

__all__ = ["NativePortSignature", "DramPort"]


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
