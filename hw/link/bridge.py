"""The link bridge: request frames in, CSR and memory accesses, answer frames out.

See :mod:`hw.link.protocol` for the frame format; every constant comes from there.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.bus import CsrSignature, MemPortSignature
from hw.isa import Reg, Status

from . import protocol as P

__all__ = ["LinkBridge", "ByteReceiver", "RequestChecker", "op_flags_layout"]


def _log2(n):
    return n.bit_length() - 1

# What an answer's payload is: none, the INFO record, the request's length, or one register.
_LEN_NONE, _LEN_INFO, _LEN_REQ, _LEN_REG = range(4)


class ByteReceiver(wiring.Component):
    """Request bytes into a one-byte register (``i.ready`` is a flip-flop, not the consumer's state
    logic), offered on ``o``; ``cut`` says the frame in progress stops: ``frame_timeout`` cycles
    without a byte, or a line break (``abort``). Both flags are registered."""

    def __init__(self, frame_timeout: int):
        self._frame_timeout = frame_timeout
        super().__init__({"i": In(stream.Signature(8)), "abort": In(1), "o": Out(stream.Signature(8)),
                          "cut": Out(1)})

    def elaborate(self, platform):
        m = Module()
        full = Signal()
        m.d.comb += [self.i.ready.eq(~full), self.o.valid.eq(full)]
        with m.If(self.i.valid & ~full):
            m.d.sync += [self.o.payload.eq(self.i.payload), full.eq(1)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)
        idle = Signal(range(self._frame_timeout + 1))
        timed_out = Signal()
        aborted = Signal()
        m.d.sync += aborted.eq(self.abort)
        with m.If(self.i.valid | full):   # a byte waiting (for a memory write to finish) is not a gap
            m.d.sync += [idle.eq(0), timed_out.eq(0)]
        with m.Elif(~timed_out):
            m.d.sync += [idle.eq(idle + 1), timed_out.eq(idle == self._frame_timeout - 1)]
        m.d.comb += self.cut.eq(timed_out | aborted)
        return m


def op_flags_layout() -> data.StructLayout:
    """One flag per request operation (:class:`hw.link.protocol.Op`)."""
    return data.StructLayout({o.name.lower(): 1 for o in P.Op})


class RequestChecker(wiring.Component):
    """The header checks of :func:`hw.link.protocol.check_request` on ``header``: on ``sample`` the
    op is decoded into ``op`` and every check registered (``crc_ok`` from ``crc_match``); ``status``
    is the outcome from those registered flags (the priority among them takes the next cycle).
    ``write_pix``: ``WRITE_PIX`` is accepted (else it is ``BAD_OP``, and its op flag never rises)."""

    def __init__(self, *, word_bytes: int, mem_words: int, write_pix: bool = False):
        self._wb, self._mem_words, self._write_pix = word_bytes, mem_words, write_pix
        super().__init__({"header": In(P.Header), "crc_match": In(1), "sample": In(1),
                          "op": Out(op_flags_layout()), "crc_ok": Out(1), "status": Out(P.LinkStatus)})

    def elaborate(self, platform):
        m = Module()
        length, a, op = self.header.length, self.header.addr, self.header.op
        op_is = {o: (op == o.value) if o != P.Op.WRITE_PIX or self._write_pix else Const(0, 1) for o in P.Op}
        flags = {name: Signal(name=f"chk_{name}") for name in (
            "bad_op", "reg_len", "reg_addr", "wreg_len", "wreg_addr", "mem_len", "mem_addr", "pix_len", "pix_addr")}
        checks = {
            "bad_op": ~op_is[P.Op.INFO] & ~op_is[P.Op.READ_REG] & ~op_is[P.Op.WRITE_REG] & ~op_is[P.Op.READ_MEM]
            & ~op_is[P.Op.WRITE_MEM] & ~op_is[P.Op.WAIT] & ~op_is[P.Op.WRITE_PIX],
            "reg_len": (length[:2] != 0) | (length < 4) | (length > 4 * P.MAX_READ_REGS),
            "reg_addr": a + (length >> 2) > P.CSR_REGS,
            "wreg_len": length != 4,
            "wreg_addr": a >= P.CSR_REGS,
            "mem_len": ((length & (self._wb - 1)) != 0) | (length == 0) | (length > P.MAX_PAYLOAD),
            "mem_addr": a + (length >> _log2(self._wb)) > self._mem_words,
            "pix_len": Const(0, 1), "pix_addr": Const(0, 1),
        }
        if self._write_pix:
            # length % 3 without a divider: 4 = 1 (mod 3), so the sum of the base-4 digits has the same residue.
            assert P.PIXEL_BYTES == 3, "the residue below is written for 3-byte pixels"
            digits = Signal(range(3 * 8 + 1))
            m.d.comb += digits.eq(sum(length[2 * i:2 * i + 2] for i in range(8)))
            checks["pix_len"] = (digits % 3 != 0) | (length == 0) | (length > P.MAX_PAYLOAD)
            # addr + length / 3 > mem_words, for a whole number of pixels: 3 * addr + length > 3 * mem_words.
            checks["pix_addr"] = a * P.PIXEL_BYTES + length > P.PIXEL_BYTES * self._mem_words
        with m.If(self.sample):
            m.d.sync += [flags[k].eq(v) for k, v in checks.items()]
            m.d.sync += self.crc_ok.eq(self.crc_match)
            m.d.sync += [self.op[o.name.lower()].eq(op_is[o]) for o in P.Op]
        st, is_op = self.status, self.op
        m.d.comb += st.eq(P.LinkStatus.OK)
        with m.If(flags["bad_op"]):
            m.d.comb += st.eq(P.LinkStatus.BAD_OP)
        with m.Elif(is_op.read_reg):
            with m.If(flags["reg_len"]):
                m.d.comb += st.eq(P.LinkStatus.BAD_LENGTH)
            with m.Elif(flags["reg_addr"]):
                m.d.comb += st.eq(P.LinkStatus.BAD_ADDRESS)
        with m.Elif(is_op.write_reg):
            with m.If(flags["wreg_len"]):
                m.d.comb += st.eq(P.LinkStatus.BAD_LENGTH)
            with m.Elif(flags["wreg_addr"]):
                m.d.comb += st.eq(P.LinkStatus.BAD_ADDRESS)
        with m.Elif(is_op.read_mem | is_op.write_mem):
            with m.If(flags["mem_len"]):
                m.d.comb += st.eq(P.LinkStatus.BAD_LENGTH)
            with m.Elif(flags["mem_addr"]):
                m.d.comb += st.eq(P.LinkStatus.BAD_ADDRESS)
        with m.Elif(is_op.write_pix):
            with m.If(flags["pix_len"]):
                m.d.comb += st.eq(P.LinkStatus.BAD_LENGTH)
            with m.Elif(flags["pix_addr"]):
                m.d.comb += st.eq(P.LinkStatus.BAD_ADDRESS)
        return m


class _Frame:
    """The bridge's registers shared by its receiving and answering states."""

    def __init__(self, **signals):
        self.__dict__.update(signals)


class LinkBridge(wiring.Component):
    """Parse request frames, execute them on the CSR bus and the memory port, answer every one.

    Parameters
    ----------
    word_bytes : int
        Memory word width in bytes (a power of two, 2..64).
    addr_bits : int
        Width of a word address on the memory port.
    mem_words : int
        Words of memory behind the port (``READ_MEM``/``WRITE_MEM`` beyond it are refused).
    frame_timeout : int
        Cycles without a byte after which a frame in progress is dropped
        (answered ``TRUNCATED``). Set it to a few byte times more than the
        longest gap the host's serial adapter leaves inside a frame.
    board, clk_hz, baud : int
        Reported by ``INFO`` (:data:`hw.link.protocol.BOARD_IDS`, clock, line rate).
    write_pix : bool
        Execute ``WRITE_PIX`` (pictures at :data:`~hw.link.protocol.PIXEL_BYTES` bytes a pixel, each
        pixel one memory word, its other lanes zero); ``word_bytes`` must be at least 4. Without it
        the op is answered ``BAD_OP`` (and costs no logic).

    Members
    -------
    i : ``In(stream.Signature(8))``
        Request bytes (from the UART receiver, through a FIFO).
    abort : ``In(1)``
        A line break or framing error: the frame in progress is dropped.
    o : ``Out(stream.Signature(8))``
        Answer bytes (to the UART transmitter).
    csr : ``Out(CsrSignature)``
        Register accesses (the bridge is the initiator).
    mem : ``Out(MemPortSignature(word_bytes, addr_bits))``
        Memory accesses: one read in flight at a time; writes as each word of a payload completes.
    active : ``Out(1)``
        High while a frame is being received or answered (for an LED).

    Behaviour
    ---------
    Memory writes are issued as the payload arrives, after the header's CRC
    has been checked (so the address is trusted), and the payload's CRC is
    checked at its end: a bad payload may have left some words written,
    which the host's resend overwrites. A register write is executed only
    after its payload's CRC has been checked, and not again when its
    sequence number repeats the last executed frame's (the answer then has
    :data:`~hw.link.protocol.DUPLICATE` set). ``WRITE_PIX`` writes a word as
    each pixel's last byte arrives, like ``WRITE_MEM``. ``WAIT`` reads ``STATUS``
    every other cycle until ``BUSY`` is clear or ``addr`` cycles have passed.

    Timing
    ------
    At most one request byte every other cycle (``i.ready`` is a register)
    and one answer byte every other cycle (``o`` is driven from a register):
    far above a UART's byte every ``10 * divisor`` cycles. The header's
    checks take two cycles after its last byte; the answer starts then.
    """

    def __init__(self, *, word_bytes: int, addr_bits: int, mem_words: int, frame_timeout: int,
                 board: int = 0, clk_hz: int = 0, baud: int = 0, write_pix: bool = False):
        if not (isinstance(word_bytes, int) and 2 <= word_bytes <= 64 and word_bytes & (word_bytes - 1) == 0):
            raise ValueError(f"word_bytes must be a power of two in [2, 64], got {word_bytes!r}")
        if not (isinstance(mem_words, int) and 0 < mem_words <= 1 << addr_bits):
            raise ValueError(f"mem_words must be in [1, 2**addr_bits = {1 << addr_bits}], got {mem_words!r}")
        if not (isinstance(frame_timeout, int) and frame_timeout >= 16):
            raise ValueError(f"frame_timeout must be an integer >= 16 cycles, got {frame_timeout!r}")
        if write_pix and word_bytes <= P.PIXEL_BYTES:
            raise ValueError(f"WRITE_PIX needs words wider than a pixel ({P.PIXEL_BYTES} bytes), got "
                             f"word_bytes={word_bytes!r}")
        if board not in P.BOARD_IDS.values():
            raise ValueError(f"board must be one of {P.BOARD_IDS}, got {board!r}")
        self._wb = word_bytes
        self._addr_bits = addr_bits
        self._mem_words = mem_words
        self._frame_timeout = frame_timeout
        self._write_pix = bool(write_pix)
        self._info = dict(board=board, word_bytes=word_bytes, mem_words=mem_words, clk_hz=clk_hz, baud=baud)
        super().__init__({
            "i": In(stream.Signature(8)),
            "abort": In(1),
            "o": Out(stream.Signature(8)),
            "csr": Out(CsrSignature),
            "mem": Out(MemPortSignature(word_bytes, addr_bits)),
            "active": Out(1),
        })

    @property
    def frame_timeout(self) -> int:
        return self._frame_timeout

    @property
    def write_pix(self) -> bool:
        """The bridge executes ``WRITE_PIX``."""
        return self._write_pix

    def elaborate(self, platform):
        m = Module()
        W = 8 * self._wb
        m.submodules.rx_crc = rx_crc = P.CRC(data_width=8).create()
        m.submodules.tx_crc = tx_crc = P.CRC(data_width=8).create()
        m.submodules.receiver = receiver = ByteReceiver(self._frame_timeout)
        m.submodules.checker = checker = RequestChecker(word_bytes=self._wb, mem_words=self._mem_words,
                                                          write_pix=self._write_pix)
        wiring.connect(m, wiring.flipped(self.i), receiver.i)
        m.d.comb += receiver.abort.eq(self.abort)

        f = _Frame(
            hdr=Signal(P.Header),       # the request's header, as received
            cnt=Signal(16),             # bytes of the request's current section (header, payload)
            pbyte=Signal(2),            # WRITE_PIX: byte of the current pixel (0..PIXEL_BYTES-1)
            tcnt=Signal(16),            # bytes of the answer's current section
            tleft=Signal(16),           # answer payload bytes still to load
            tdone=Signal(),             # ... none (registered: no wide comparison in the state logic)
            status=Signal(8),           # the answer's status (LinkStatus | DUPLICATE)
            ans_len=Signal(16),         # the answer's payload length
            addr=Signal(32),            # running word (or register) address of the transfer
            wbuf=Signal(W),             # memory word being assembled (writes) or sent (reads)
            wpend=Signal(),             # wbuf holds a write not yet accepted by the memory port
            reg=Signal(32),             # register value being assembled / read / STATUS of a WAIT
            waited=Signal(32),          # cycles a WAIT has left
            last=Signal(16),            # index of the last payload byte
            obyte=Signal(8),            # the answer byte on its way out
            ovalid=Signal(),
            ocrc=Signal(),              # obyte goes into the answer's CRC as it leaves
            last_seq=Signal(8),
            last_ok=Signal(),
            len_kind=Signal(2),         # what the answer's payload is: _LEN_NONE, _LEN_INFO, _LEN_REQ, _LEN_REG
            rx_crc=rx_crc, tx_crc=tx_crc, receiver=receiver, checker=checker, is_op=checker.op,
        )
        m.d.comb += [checker.header.eq(f.hdr), checker.crc_match.eq(rx_crc.match_detected)]
        m.d.comb += [self.o.payload.eq(f.obyte), self.o.valid.eq(f.ovalid),
                     tx_crc.data.eq(f.obyte), tx_crc.valid.eq(f.ovalid & self.o.ready & f.ocrc)]
        with m.If(self.o.ready):
            m.d.sync += f.ovalid.eq(0)

        # Memory port: writes from wbuf, reads into wbuf.
        m.d.comb += [self.mem.req.payload.addr.eq(f.addr), self.mem.req.payload.data.eq(f.wbuf)]
        with m.If(f.wpend):
            m.d.comb += [self.mem.req.valid.eq(1), self.mem.req.payload.write.eq(1)]
            with m.If(self.mem.req.ready):
                m.d.sync += [f.wpend.eq(0), f.addr.eq(f.addr + 1)]
        m.d.comb += self.csr.addr.eq(Mux(f.is_op.wait, int(Reg.STATUS), f.addr))

        self._answer_sources(m, f)
        with m.FSM(name="link"):
            self._receive(m, f)
            self._answer(m, f)
        return m

    def _answer_with(self, m, f, code, length=0):
        """Leave for the answer with status ``code`` and a payload of kind ``length`` (``_LEN_*``)."""
        m.d.sync += [f.status.eq(code), f.len_kind.eq(length)]
        m.next = "T_SYNC"

    def _receive(self, m, f):
        """The states that take a request in: hunt, header, checks, payload, the payload's CRC, commit."""
        R = self._wb
        log2R = _log2(R)
        byte = f.receiver.o
        rx_byte, byte_in, cut = byte.payload, byte.valid & byte.ready, f.receiver.cut
        rx_crc, is_op, hdr_raw = f.rx_crc, f.is_op, f.hdr.as_value()
        with m.State("HUNT"):
            m.d.comb += byte.ready.eq(1)
            with m.If(byte_in & (rx_byte == P.SYNC)):
                m.d.sync += [hdr_raw.eq(0), f.cnt.eq(0)]
                m.d.comb += rx_crc.start.eq(1)
                m.next = "HEADER"
        with m.State("HEADER"):
            # Header and its CRC go through the CRC: an intact header leaves the residue.
            m.d.comb += [byte.ready.eq(1), self.active.eq(1), rx_crc.valid.eq(byte_in), rx_crc.data.eq(rx_byte)]
            with m.If(cut):
                m.next = "CUT"
            with m.Elif(byte_in):
                with m.If(f.cnt < P.HEADER_BYTES):
                    m.d.sync += hdr_raw.word_select(f.cnt[:4], 8).eq(rx_byte)
                m.d.sync += f.cnt.eq(f.cnt + 1)
                with m.If(f.cnt == P.HEADER_BYTES + P.CRC_BYTES - 1):
                    m.next = "CHECK"
        with m.State("CHECK"):
            m.d.comb += [self.active.eq(1), f.checker.sample.eq(1)]
            m.d.sync += [f.addr.eq(f.hdr.addr), f.cnt.eq(0), f.last.eq(f.hdr.length - 1), f.waited.eq(f.hdr.addr),
                         f.pbyte.eq(0)]
            m.next = "DECIDE"
        with m.State("DECIDE"):
            m.d.comb += self.active.eq(1)
            with m.If(~f.checker.crc_ok):
                self._answer_with(m, f, P.LinkStatus.HEADER_CRC)
            with m.Elif(f.checker.status != P.LinkStatus.OK):
                self._answer_with(m, f, f.checker.status)
            with m.Elif(is_op.write_mem | is_op.write_reg | is_op.write_pix):
                m.d.comb += rx_crc.start.eq(1)
                m.next = "PAYLOAD"
            with m.Elif(is_op.wait):
                m.next = "WAIT_READ"
            with m.Elif(is_op.info):
                self._answer_with(m, f, P.LinkStatus.OK, _LEN_INFO)
            with m.Else():   # READ_REG, READ_MEM
                self._answer_with(m, f, P.LinkStatus.OK, _LEN_REQ)
        with m.State("PAYLOAD"):
            # A memory word is written as soon as it is complete; the next byte waits for it.
            m.d.comb += [byte.ready.eq(~f.wpend), self.active.eq(1), rx_crc.valid.eq(byte_in),
                         rx_crc.data.eq(rx_byte)]
            with m.If(cut):
                m.next = "CUT"
            with m.Elif(byte_in):
                m.d.sync += f.cnt.eq(f.cnt + 1)
                with m.If(is_op.write_reg):
                    m.d.sync += f.reg.word_select(f.cnt[:2], 8).eq(rx_byte)
                with m.Elif(is_op.write_pix):
                    # A pixel's first byte clears the word (lanes PIXEL_BYTES.. stay zero), its last sends it.
                    with m.If(f.pbyte == 0):
                        m.d.sync += f.wbuf.eq(rx_byte)
                    with m.Else():
                        m.d.sync += f.wbuf.word_select(f.pbyte, 8).eq(rx_byte)
                    m.d.sync += f.pbyte.eq(f.pbyte + 1)
                    with m.If(f.pbyte == P.PIXEL_BYTES - 1):
                        m.d.sync += [f.pbyte.eq(0), f.wpend.eq(1)]
                with m.Else():
                    m.d.sync += f.wbuf.word_select(f.cnt[:log2R], 8).eq(rx_byte)
                    with m.If(f.cnt[:log2R] == R - 1):
                        m.d.sync += f.wpend.eq(1)
                with m.If(f.cnt == f.last):
                    m.d.sync += f.cnt.eq(0)
                    m.next = "PAYLOAD_CRC"
        with m.State("PAYLOAD_CRC"):
            m.d.comb += [byte.ready.eq(1), self.active.eq(1), rx_crc.valid.eq(byte_in), rx_crc.data.eq(rx_byte)]
            with m.If(cut):
                m.next = "CUT"
            with m.Elif(byte_in):
                m.d.sync += f.cnt.eq(f.cnt + 1)
                with m.If(f.cnt == P.CRC_BYTES - 1):
                    m.next = "COMMIT"
        with m.State("CUT"):
            m.d.comb += self.active.eq(1)
            self._answer_with(m, f, P.LinkStatus.TRUNCATED)
        with m.State("COMMIT"):
            m.d.comb += self.active.eq(1)
            with m.If(~rx_crc.match_detected):
                self._answer_with(m, f, P.LinkStatus.PAYLOAD_CRC)
            with m.Elif(is_op.write_reg & f.last_ok & (f.hdr.seq == f.last_seq)):
                self._answer_with(m, f, P.LinkStatus.OK.value | P.DUPLICATE)
            with m.Else():
                with m.If(is_op.write_reg):
                    m.d.comb += [self.csr.w_stb.eq(1), self.csr.w_data.eq(f.reg)]
                self._answer_with(m, f, P.LinkStatus.OK)
        # `waited` counts the cycles left down to zero (no wide comparison on the way).
        with m.State("WAIT_READ"):
            m.d.comb += [self.csr.r_stb.eq(1), self.active.eq(1)]
            m.d.sync += f.waited.eq(f.waited - (f.waited != 0))
            m.next = "WAIT_CHECK"
        with m.State("WAIT_CHECK"):
            m.d.comb += self.active.eq(1)
            m.d.sync += [f.waited.eq(f.waited - (f.waited != 0)), f.reg.eq(self.csr.r_data)]
            with m.If(~self.csr.r_data[Status.BUSY.bit_length() - 1] | (f.waited == 0)):
                self._answer_with(m, f, P.LinkStatus.OK, _LEN_REG)
            with m.Else():
                m.next = "WAIT_READ"

    def _answer(self, m, f):
        """The states that send the answer.

        The answer's bytes go out through a register (obyte), and into the CRC from it as they leave:
        no byte multiplexer sits in front of the UART or the CRC. A state loads the next byte once the
        register is free; the CRC of what has left is ready in the cycle the register frees.
        """
        log2R = _log2(self._wb)
        is_op, tcnt = f.is_op, f.tcnt
        for name, state in self._answer_byte_states(m, f).items():
            with m.State(name):
                m.d.comb += self.active.eq(1)
                state()
        with m.State("T_NEXT"):
            m.d.comb += self.active.eq(1)
            in_word = Mux(is_op.read_mem, tcnt[:log2R], tcnt[:2])   # byte index in the word / register
            with m.If(f.tdone):
                m.d.sync += tcnt.eq(0)
                m.next = "T_PAYLOAD_CRC"
            with m.Elif((in_word == 0) & is_op.read_mem):
                m.next = "T_MEM_READ"
            with m.Elif((in_word == 0) & is_op.read_reg):
                m.d.comb += self.csr.r_stb.eq(1)
                m.next = "T_REG_READ"
            with m.Else():
                m.next = "T_BYTE"
        with m.State("T_MEM_READ"):
            m.d.comb += [self.mem.req.valid.eq(1), self.mem.req.payload.write.eq(0), self.active.eq(1)]
            with m.If(self.mem.req.ready):
                m.d.sync += f.addr.eq(f.addr + 1)
                m.next = "T_MEM_WAIT"
        with m.State("T_MEM_WAIT"):
            m.d.comb += [self.mem.rsp.ready.eq(1), self.active.eq(1)]
            with m.If(self.mem.rsp.valid):
                m.d.sync += f.wbuf.eq(self.mem.rsp.payload)
                m.next = "T_BYTE"
        with m.State("T_REG_READ"):
            m.d.comb += self.active.eq(1)
            m.d.sync += [f.reg.eq(self.csr.r_data), f.addr.eq(f.addr + 1)]
            m.next = "T_BYTE"

    def _answer_sources(self, m, f):
        """Where the answer's bytes come from: its header (``f.answer_header``) and its payload
        (``f.payload_byte``: the memory word, the INFO record, or the register)."""
        log2R = _log2(self._wb)
        is_op, tcnt, hdr = f.is_op, f.tcnt, f.hdr
        # The INFO record: constant fields, plus the last executed sequence number.
        info = Signal(P.Info)
        m.d.comb += [
            info.eq(P.Info.const({
                "magic": P.LINK_MAGIC, "version_major": P.PROTOCOL_VERSION[0],
                "version_minor": P.PROTOCOL_VERSION[1], "max_payload": P.MAX_PAYLOAD,
                "max_read_regs": P.MAX_READ_REGS, **self._info})),
            info.last_seq.eq(f.last_seq),
        ]
        # The answer's header: the request's op, seq and addr echoed.
        ans = Signal(P.Header)
        m.d.comb += [ans.op.eq(hdr.op), ans.seq.eq(hdr.seq), ans.status.eq(f.status), ans.addr.eq(hdr.addr),
                     ans.length.eq(f.ans_len)]
        out_byte = Signal(8)
        with m.If(is_op.read_mem):
            m.d.comb += out_byte.eq(f.wbuf.word_select(tcnt[:log2R], 8))
        with m.Elif(is_op.info):
            m.d.comb += out_byte.eq(info.as_value().word_select(tcnt[:5], 8))
        with m.Else():   # READ_REG, WAIT
            m.d.comb += out_byte.eq(f.reg.word_select(tcnt[:2], 8))
        f.answer_header, f.payload_byte = ans, out_byte

    def _answer_byte_states(self, m, f):
        """The answer states that load the output register: ``{state name: body}``."""
        tx_crc, tcnt, hdr = f.tx_crc, f.tcnt, f.hdr
        crc_byte = Mux(tcnt[0], tx_crc.crc[:8], tx_crc.crc[8:])

        def send(byte, into_crc):
            return [f.obyte.eq(byte), f.ovalid.eq(1), f.ocrc.eq(into_crc), tcnt.eq(tcnt + 1)]

        def sync_byte():
            # A memory write of a cut-off frame still completes first (a request stays valid until taken).
            with m.If(~f.ovalid & ~f.wpend):
                m.d.comb += tx_crc.start.eq(1)
                m.d.sync += [*send(P.SYNC, 0), tcnt.eq(0)]
                with m.Switch(f.len_kind):
                    for kind, n in ((_LEN_NONE, 0), (_LEN_INFO, P.INFO_BYTES), (_LEN_REQ, hdr.length),
                                    (_LEN_REG, 4)):
                        with m.Case(kind):
                            m.d.sync += [f.ans_len.eq(n), f.tleft.eq(n)]
                m.d.sync += f.tdone.eq(0)
                with m.If(f.status == P.LinkStatus.OK.value):
                    m.d.sync += [f.last_seq.eq(hdr.seq), f.last_ok.eq(1)]
                m.next = "T_HEADER"

        def header_byte():
            with m.If(~f.ovalid):
                m.d.sync += send(f.answer_header.as_value().word_select(tcnt[:4], 8), 1)
                with m.If(tcnt == P.HEADER_BYTES - 1):
                    m.d.sync += tcnt.eq(0)
                    m.next = "T_HEADER_CRC"

        def header_crc_byte():
            with m.If(~f.ovalid):
                m.d.sync += send(crc_byte, 0)
                with m.If(tcnt[0]):
                    m.d.sync += tcnt.eq(0)
                    with m.If(f.ans_len == 0):
                        m.next = "HUNT"
                    with m.Else():
                        m.d.comb += tx_crc.start.eq(1)
                        m.next = "T_NEXT"

        def payload_byte():
            with m.If(~f.ovalid):
                m.d.sync += [*send(f.payload_byte, 1), f.tleft.eq(f.tleft - 1), f.tdone.eq(f.tleft == 1)]
                m.next = "T_NEXT"

        def payload_crc_byte():
            with m.If(~f.ovalid):
                m.d.sync += send(crc_byte, 0)
                with m.If(tcnt[0]):
                    m.next = "HUNT"

        return {"T_SYNC": sync_byte, "T_HEADER": header_byte, "T_HEADER_CRC": header_crc_byte,
                "T_BYTE": payload_byte, "T_PAYLOAD_CRC": payload_crc_byte}
