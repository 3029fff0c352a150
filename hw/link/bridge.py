"""The link bridge: request frames in, CSR and memory accesses, answer frames out.

See :mod:`hw.link.protocol` for the frame format; every constant comes from there.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.bus import CsrSignature, MemPortSignature
from hw.isa import Reg, Status

from . import protocol as P

__all__ = ["LinkBridge"]


def _log2(n):
    return n.bit_length() - 1


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
    :data:`~hw.link.protocol.DUPLICATE` set). ``WAIT`` reads ``STATUS``
    every other cycle until ``BUSY`` is clear or ``addr`` cycles have passed.

    Timing
    ------
    At most one request byte every other cycle (``i.ready`` is a register)
    and one answer byte every other cycle (``o`` is driven from a register):
    far above a UART's byte every ``10 * divisor`` cycles. The header's
    checks take two cycles after its last byte; the answer starts then.
    """

    def __init__(self, *, word_bytes: int, addr_bits: int, mem_words: int, frame_timeout: int,
                 board: int = 0, clk_hz: int = 0, baud: int = 0):
        if not (isinstance(word_bytes, int) and 2 <= word_bytes <= 64 and word_bytes & (word_bytes - 1) == 0):
            raise ValueError(f"word_bytes must be a power of two in [2, 64], got {word_bytes!r}")
        if not (isinstance(mem_words, int) and 0 < mem_words <= 1 << addr_bits):
            raise ValueError(f"mem_words must be in [1, 2**addr_bits = {1 << addr_bits}], got {mem_words!r}")
        if not (isinstance(frame_timeout, int) and frame_timeout >= 16):
            raise ValueError(f"frame_timeout must be an integer >= 16 cycles, got {frame_timeout!r}")
        if board not in P.BOARD_IDS.values():
            raise ValueError(f"board must be one of {P.BOARD_IDS}, got {board!r}")
        self._wb = word_bytes
        self._addr_bits = addr_bits
        self._mem_words = mem_words
        self._frame_timeout = frame_timeout
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

    def elaborate(self, platform):
        m = Module()
        R = self._wb
        W = 8 * R
        log2R = _log2(R)

        m.submodules.rx_crc = rx_crc = P.CRC(data_width=8).create()
        m.submodules.tx_crc = tx_crc = P.CRC(data_width=8).create()

        hdr = Signal(P.Header)          # the request's header, as received
        hdr_raw = hdr.as_value()
        cnt = Signal(16)                # bytes of the request's current section (header, payload)
        tcnt = Signal(16)               # bytes of the answer's current section
        tleft = Signal(16)              # answer payload bytes still to load
        tdone = Signal()                # ... none (registered: no wide comparison in the state logic)
        idle = Signal(range(self._frame_timeout + 1))
        status = Signal(8)              # the answer's status (LinkStatus | DUPLICATE)
        ans_len = Signal(16)            # the answer's payload length
        addr = Signal(32)               # running word (or register) address of the transfer
        wbuf = Signal(W)                # memory word being assembled (writes) or sent (reads)
        wpend = Signal()                # wbuf holds a write not yet accepted by the memory port
        reg = Signal(32)                # register value being assembled / read / STATUS of a WAIT
        waited = Signal(32)             # cycles a WAIT has left
        last = Signal(16)               # index of the last payload byte
        obyte = Signal(8)               # the answer byte on its way out
        ovalid = Signal()
        ocrc = Signal()                 # obyte goes into the answer's CRC as it leaves
        last_seq = Signal(8)
        last_ok = Signal()

        op = hdr.op
        op_is = {o: op == o.value for o in P.Op}
        # The op, decoded once the header is in (CHECK): registered, for the decisions and the answer.
        is_op = {o: Signal(name=f"is_{o.name.lower()}") for o in P.Op}

        # The INFO record: constant fields, plus the last executed sequence number.
        info = Signal(P.Info)
        m.d.comb += [
            info.eq(P.Info.const({
                "magic": P.LINK_MAGIC, "version_major": P.PROTOCOL_VERSION[0],
                "version_minor": P.PROTOCOL_VERSION[1], "max_payload": P.MAX_PAYLOAD,
                "max_read_regs": P.MAX_READ_REGS, **self._info})),
            info.last_seq.eq(last_seq),
        ]

        # The answer's header: the request's op, seq and addr echoed.
        ans = Signal(P.Header)
        m.d.comb += [ans.op.eq(hdr.op), ans.seq.eq(hdr.seq), ans.status.eq(status), ans.addr.eq(hdr.addr),
                     ans.length.eq(ans_len)]

        m.d.comb += [self.o.payload.eq(obyte), self.o.valid.eq(ovalid),
                     tx_crc.data.eq(obyte), tx_crc.valid.eq(ovalid & self.o.ready & ocrc)]
        with m.If(self.o.ready):
            m.d.sync += ovalid.eq(0)

        # Memory port: writes from wbuf, reads into wbuf.
        m.d.comb += [self.mem.req.payload.addr.eq(addr), self.mem.req.payload.data.eq(wbuf)]
        with m.If(wpend):
            m.d.comb += [self.mem.req.valid.eq(1), self.mem.req.payload.write.eq(1)]
            with m.If(self.mem.req.ready):
                m.d.sync += [wpend.eq(0), addr.eq(addr + 1)]

        # Request bytes enter a one-byte register whenever it is empty: the input's ready is a flip-flop,
        # not the state logic (which would otherwise reach through the FIFO into itself).
        rx_byte = Signal(8)
        rx_full = Signal()
        accept = Signal()               # the state takes rx_byte in this cycle (when full)
        byte_in = rx_full & accept
        m.d.comb += self.i.ready.eq(~rx_full)
        with m.If(self.i.valid & ~rx_full):
            m.d.sync += [rx_byte.eq(self.i.payload), rx_full.eq(1)]
        with m.If(byte_in):
            m.d.sync += rx_full.eq(0)
        # The frame in progress stops after frame_timeout cycles without a byte, or at a line break. Both are
        # registered flags (a wide comparison in the state logic would set the clock).
        timed_out = Signal()
        aborted = Signal()
        m.d.sync += aborted.eq(self.abort)
        with m.If(self.i.valid | rx_full):   # a byte waiting (for a memory write to finish) is not a gap
            m.d.sync += [idle.eq(0), timed_out.eq(0)]
        with m.Elif(~timed_out):
            m.d.sync += [idle.eq(idle + 1), timed_out.eq(idle == self._frame_timeout - 1)]
        cut = timed_out | aborted

        # The header checks of protocol.check_request, each a registered flag (the sums and comparisons take
        # a cycle of their own; the priority among them the next one).
        length, a = hdr.length, hdr.addr
        flags = {name: Signal(name=f"chk_{name}") for name in (
            "crc_ok", "bad_op", "reg_len", "reg_addr", "wreg_len", "wreg_addr", "mem_len", "mem_addr")}
        checks = {
            "crc_ok": rx_crc.match_detected,
            "bad_op": ~op_is[P.Op.INFO] & ~op_is[P.Op.READ_REG] & ~op_is[P.Op.WRITE_REG] & ~op_is[P.Op.READ_MEM]
            & ~op_is[P.Op.WRITE_MEM] & ~op_is[P.Op.WAIT],
            "reg_len": (length[:2] != 0) | (length < 4) | (length > 4 * P.MAX_READ_REGS),
            "reg_addr": a + (length >> 2) > P.CSR_REGS,
            "wreg_len": length != 4,
            "wreg_addr": a >= P.CSR_REGS,
            "mem_len": ((length & (R - 1)) != 0) | (length == 0) | (length > P.MAX_PAYLOAD),
            "mem_addr": a + (length >> log2R) > self._mem_words,
        }

        def validate():
            """The status of a request with an intact header, from the registered flags."""
            st = Signal(P.LinkStatus, name="check_status")
            m.d.comb += st.eq(P.LinkStatus.OK)
            with m.If(flags["bad_op"]):
                m.d.comb += st.eq(P.LinkStatus.BAD_OP)
            with m.Elif(is_op[P.Op.READ_REG]):
                with m.If(flags["reg_len"]):
                    m.d.comb += st.eq(P.LinkStatus.BAD_LENGTH)
                with m.Elif(flags["reg_addr"]):
                    m.d.comb += st.eq(P.LinkStatus.BAD_ADDRESS)
            with m.Elif(is_op[P.Op.WRITE_REG]):
                with m.If(flags["wreg_len"]):
                    m.d.comb += st.eq(P.LinkStatus.BAD_LENGTH)
                with m.Elif(flags["wreg_addr"]):
                    m.d.comb += st.eq(P.LinkStatus.BAD_ADDRESS)
            with m.Elif(is_op[P.Op.READ_MEM] | is_op[P.Op.WRITE_MEM]):
                with m.If(flags["mem_len"]):
                    m.d.comb += st.eq(P.LinkStatus.BAD_LENGTH)
                with m.Elif(flags["mem_addr"]):
                    m.d.comb += st.eq(P.LinkStatus.BAD_ADDRESS)
            return st

        # What the answer's payload will be: none, INFO, the request's length, or one register.
        LEN_NONE, LEN_INFO, LEN_REQ, LEN_REG = range(4)
        len_kind = Signal(2)

        def answer(code, length=LEN_NONE):
            m.d.sync += [status.eq(code), len_kind.eq(length)]
            m.next = "T_SYNC"

        # Payload bytes of an answer: which word a byte comes from, and the byte.
        in_word = Mux(is_op[P.Op.READ_MEM], tcnt[:log2R], tcnt[:2])   # byte index in the word / register
        out_byte = Signal(8)
        with m.If(is_op[P.Op.READ_MEM]):
            m.d.comb += out_byte.eq(wbuf.word_select(tcnt[:log2R], 8))
        with m.Elif(is_op[P.Op.INFO]):
            m.d.comb += out_byte.eq(info.as_value().word_select(tcnt[:5], 8))
        with m.Else():   # READ_REG, WAIT
            m.d.comb += out_byte.eq(reg.word_select(tcnt[:2], 8))

        m.d.comb += self.csr.addr.eq(Mux(is_op[P.Op.WAIT], int(Reg.STATUS), addr))

        with m.FSM(name="link"):
            with m.State("HUNT"):
                m.d.comb += accept.eq(1)
                with m.If(byte_in & (rx_byte == P.SYNC)):
                    m.d.sync += [hdr_raw.eq(0), cnt.eq(0)]
                    m.d.comb += rx_crc.start.eq(1)
                    m.next = "HEADER"

            with m.State("HEADER"):
                # Header and its CRC go through the CRC: an intact header leaves the residue.
                m.d.comb += [accept.eq(1), self.active.eq(1), rx_crc.valid.eq(byte_in),
                             rx_crc.data.eq(rx_byte)]
                with m.If(cut):
                    m.next = "CUT"
                with m.Elif(byte_in):
                    with m.If(cnt < P.HEADER_BYTES):
                        m.d.sync += hdr_raw.word_select(cnt[:4], 8).eq(rx_byte)
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == P.HEADER_BYTES + P.CRC_BYTES - 1):
                        m.next = "CHECK"

            with m.State("CHECK"):
                m.d.comb += self.active.eq(1)
                m.d.sync += [flags[k].eq(v) for k, v in checks.items()]
                m.d.sync += [is_op[o].eq(op_is[o]) for o in P.Op]
                m.d.sync += [addr.eq(hdr.addr), cnt.eq(0), last.eq(hdr.length - 1), waited.eq(hdr.addr)]
                m.next = "DECIDE"

            with m.State("DECIDE"):
                m.d.comb += self.active.eq(1)
                st = validate()
                with m.If(~flags["crc_ok"]):
                    answer(P.LinkStatus.HEADER_CRC)
                with m.Elif(st != P.LinkStatus.OK):
                    answer(st)
                with m.Elif(is_op[P.Op.WRITE_MEM] | is_op[P.Op.WRITE_REG]):
                    m.d.comb += rx_crc.start.eq(1)
                    m.next = "PAYLOAD"
                with m.Elif(is_op[P.Op.WAIT]):
                    m.next = "WAIT_READ"
                with m.Elif(is_op[P.Op.INFO]):
                    answer(P.LinkStatus.OK, LEN_INFO)
                with m.Else():   # READ_REG, READ_MEM
                    answer(P.LinkStatus.OK, LEN_REQ)

            with m.State("PAYLOAD"):
                # A memory word is written as soon as it is complete; the next byte waits for it.
                m.d.comb += [accept.eq(~wpend), self.active.eq(1), rx_crc.valid.eq(byte_in),
                             rx_crc.data.eq(rx_byte)]
                with m.If(cut):
                    m.next = "CUT"
                with m.Elif(byte_in):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(is_op[P.Op.WRITE_REG]):
                        m.d.sync += reg.word_select(cnt[:2], 8).eq(rx_byte)
                    with m.Else():
                        m.d.sync += wbuf.word_select(cnt[:log2R], 8).eq(rx_byte)
                        with m.If(cnt[:log2R] == R - 1):
                            m.d.sync += wpend.eq(1)
                    with m.If(cnt == last):
                        m.d.sync += cnt.eq(0)
                        m.next = "PAYLOAD_CRC"

            with m.State("PAYLOAD_CRC"):
                m.d.comb += [accept.eq(1), self.active.eq(1), rx_crc.valid.eq(byte_in),
                             rx_crc.data.eq(rx_byte)]
                with m.If(cut):
                    m.next = "CUT"
                with m.Elif(byte_in):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == P.CRC_BYTES - 1):
                        m.next = "COMMIT"

            with m.State("CUT"):
                m.d.comb += self.active.eq(1)
                answer(P.LinkStatus.TRUNCATED)

            with m.State("COMMIT"):
                m.d.comb += self.active.eq(1)
                with m.If(~rx_crc.match_detected):
                    answer(P.LinkStatus.PAYLOAD_CRC)
                with m.Elif(is_op[P.Op.WRITE_REG] & last_ok & (hdr.seq == last_seq)):
                    answer(P.LinkStatus.OK.value | P.DUPLICATE)
                with m.Else():
                    with m.If(is_op[P.Op.WRITE_REG]):
                        m.d.comb += [self.csr.w_stb.eq(1), self.csr.w_data.eq(reg)]
                    answer(P.LinkStatus.OK)

            # `waited` counts the cycles left down to zero (no wide comparison on the way).
            with m.State("WAIT_READ"):
                m.d.comb += [self.csr.r_stb.eq(1), self.active.eq(1)]
                m.d.sync += waited.eq(waited - (waited != 0))
                m.next = "WAIT_CHECK"
            with m.State("WAIT_CHECK"):
                m.d.comb += self.active.eq(1)
                m.d.sync += [waited.eq(waited - (waited != 0)), reg.eq(self.csr.r_data)]
                with m.If(~self.csr.r_data[Status.BUSY.bit_length() - 1] | (waited == 0)):
                    answer(P.LinkStatus.OK, LEN_REG)
                with m.Else():
                    m.next = "WAIT_READ"

            # ---- the answer --------------------------------------------------------------------
            # The answer's bytes go out through a register (obyte), and into the CRC from it as they leave:
            # no byte multiplexer sits in front of the UART or the CRC. A state loads the next byte once the
            # register is free; the CRC of what has left is ready in the cycle the register frees.
            with m.State("T_SYNC"):
                # A memory write of a cut-off frame still completes first (a request stays valid until taken).
                m.d.comb += self.active.eq(1)
                with m.If(~ovalid & ~wpend):
                    m.d.comb += tx_crc.start.eq(1)
                    m.d.sync += [obyte.eq(P.SYNC), ovalid.eq(1), ocrc.eq(0), tcnt.eq(0)]
                    with m.Switch(len_kind):
                        for kind, n in ((LEN_NONE, 0), (LEN_INFO, P.INFO_BYTES), (LEN_REQ, hdr.length),
                                        (LEN_REG, 4)):
                            with m.Case(kind):
                                m.d.sync += [ans_len.eq(n), tleft.eq(n)]
                    m.d.sync += tdone.eq(0)
                    with m.If(status == P.LinkStatus.OK.value):
                        m.d.sync += [last_seq.eq(hdr.seq), last_ok.eq(1)]
                    m.next = "T_HEADER"
            with m.State("T_HEADER"):
                m.d.comb += self.active.eq(1)
                with m.If(~ovalid):
                    m.d.sync += [obyte.eq(ans.as_value().word_select(tcnt[:4], 8)), ovalid.eq(1), ocrc.eq(1),
                                 tcnt.eq(tcnt + 1)]
                    with m.If(tcnt == P.HEADER_BYTES - 1):
                        m.d.sync += tcnt.eq(0)
                        m.next = "T_HEADER_CRC"
            with m.State("T_HEADER_CRC"):
                m.d.comb += self.active.eq(1)
                with m.If(~ovalid):
                    m.d.sync += [obyte.eq(Mux(tcnt[0], tx_crc.crc[:8], tx_crc.crc[8:])), ovalid.eq(1), ocrc.eq(0),
                                 tcnt.eq(tcnt + 1)]
                    with m.If(tcnt[0]):
                        m.d.sync += tcnt.eq(0)
                        with m.If(ans_len == 0):
                            m.next = "HUNT"
                        with m.Else():
                            m.d.comb += tx_crc.start.eq(1)
                            m.next = "T_NEXT"
            with m.State("T_NEXT"):
                m.d.comb += self.active.eq(1)
                with m.If(tdone):
                    m.d.sync += tcnt.eq(0)
                    m.next = "T_PAYLOAD_CRC"
                with m.Elif((in_word == 0) & is_op[P.Op.READ_MEM]):
                    m.next = "T_MEM_READ"
                with m.Elif((in_word == 0) & is_op[P.Op.READ_REG]):
                    m.d.comb += self.csr.r_stb.eq(1)
                    m.next = "T_REG_READ"
                with m.Else():
                    m.next = "T_BYTE"
            with m.State("T_MEM_READ"):
                m.d.comb += [self.mem.req.valid.eq(1), self.mem.req.payload.write.eq(0), self.active.eq(1)]
                with m.If(self.mem.req.ready):
                    m.d.sync += addr.eq(addr + 1)
                    m.next = "T_MEM_WAIT"
            with m.State("T_MEM_WAIT"):
                m.d.comb += [self.mem.rsp.ready.eq(1), self.active.eq(1)]
                with m.If(self.mem.rsp.valid):
                    m.d.sync += wbuf.eq(self.mem.rsp.payload)
                    m.next = "T_BYTE"
            with m.State("T_REG_READ"):
                m.d.comb += self.active.eq(1)
                m.d.sync += [reg.eq(self.csr.r_data), addr.eq(addr + 1)]
                m.next = "T_BYTE"
            with m.State("T_BYTE"):
                m.d.comb += self.active.eq(1)
                with m.If(~ovalid):
                    m.d.sync += [obyte.eq(out_byte), ovalid.eq(1), ocrc.eq(1), tcnt.eq(tcnt + 1),
                                 tleft.eq(tleft - 1), tdone.eq(tleft == 1)]
                    m.next = "T_NEXT"
            with m.State("T_PAYLOAD_CRC"):
                m.d.comb += self.active.eq(1)
                with m.If(~ovalid):
                    m.d.sync += [obyte.eq(Mux(tcnt[0], tx_crc.crc[:8], tx_crc.crc[8:])), ovalid.eq(1), ocrc.eq(0),
                                 tcnt.eq(tcnt + 1)]
                    with m.If(tcnt[0]):
                        m.next = "HUNT"
        return m
