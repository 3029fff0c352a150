"""Units that read the activation buffer out: the store (pooled bands to memory) and the global average pool."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .isa import ACC_BITS, ADDR_BITS, CB_BITS, IBUF_ADDR_BITS, INT8_MAX, INT8_MIN, M0_BITS, SHIFT_BITS, EngineConfig
from .output import raw_word_layout
from .requant import RequantRequestSignature

__all__ = ["StoreOp", "StoreUnit", "GapOp", "GapUnit"]

StoreOp = data.StructLayout({
    "src": IBUF_ADDR_BITS,
    "n_pix": 24,
    "cb": CB_BITS,
    "dst": ADDR_BITS,
    "dst_pix": CB_BITS,
})

GapOp = data.StructLayout({
    "src": IBUF_ADDR_BITS,
    "n_pix": 24,
    "cb": CB_BITS,
    "dst": ADDR_BITS,
    "m0": M0_BITS,
    "shift": SHIFT_BITS,
    "zp_in": signed(8),
    "zp_out": signed(8),
})


class StoreUnit(wiring.Component):
    """Copy ``n_pix`` pixels of ``cb`` words from the buffer to memory at ``dst + p * dst_pix + cb``.

    Words go to the output path on ``raw``, one per cycle while it has credit (``raw.ready``).
    """

    def __init__(self, config: EngineConfig):
        R = config.rows
        super().__init__({
            "op": In(StoreOp), "start": In(1), "busy": Out(1),
            "ib_raddr": Out(IBUF_ADDR_BITS), "ib_ren": Out(1), "ib_rdata": In(8 * R),
            "raw": Out(stream.Signature(raw_word_layout(R))),
        })

    def elaborate(self, platform):
        m = Module()
        op = self.op  # held steady by the sequencer while busy
        rd = Signal(IBUF_ADDR_BITS)
        left = Signal(24)            # pixels still to read
        cbi = Signal(CB_BITS)
        pix_addr = Signal(ADDR_BITS)
        pend = Signal()              # a read was issued last cycle: its word is presented now
        pend_addr = Signal(ADDR_BITS)
        m.d.comb += [self.raw.valid.eq(pend), self.raw.payload.addr.eq(pend_addr),
                     self.raw.payload.data.eq(self.ib_rdata)]
        with m.FSM() as fsm:
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [rd.eq(op.src), cbi.eq(0), pix_addr.eq(op.dst), left.eq(op.n_pix)]
                m.next = "RUN"
            with m.State("RUN"):
                issue = (left != 0) & self.raw.ready
                m.d.comb += [self.ib_raddr.eq(rd), self.ib_ren.eq(issue)]
                m.d.sync += pend.eq(issue)
                with m.If(issue):
                    m.d.sync += [rd.eq(rd + 1), pend_addr.eq(pix_addr + cbi)]
                    with m.If(cbi == op.cb - 1):
                        m.d.sync += [cbi.eq(0), pix_addr.eq(pix_addr + op.dst_pix), left.eq(left - 1)]
                    with m.Else():
                        m.d.sync += cbi.eq(cbi + 1)
                with m.If((left == 0) & ~pend):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


class GapUnit(wiring.Component):
    """Global average pool: for each channel block, ``sum_p (x - zp_in)`` over ``n_pix`` pixels, requantized.

    The sums go to the output path's requantizer on ``rq`` with one multiplier for all
    lanes (``m0``, ``shift`` encode ``s_in / (n_pix * s_out)``), result to
    memory at ``dst + cb``. Reads one word per cycle.
    """

    def __init__(self, config: EngineConfig):
        R = config.rows
        self._R = R
        super().__init__({
            "op": In(GapOp), "start": In(1), "busy": Out(1),
            "ib_raddr": Out(IBUF_ADDR_BITS), "ib_ren": Out(1), "ib_rdata": In(8 * R),
            "rq": Out(RequantRequestSignature(R)),
        })

    def elaborate(self, platform):
        m = Module()
        R = self._R
        op = self.op  # held steady by the sequencer while busy
        cbi = Signal(CB_BITS)
        p = Signal(24)
        rd = Signal(IBUF_ADDR_BITS)
        pend = Signal()
        sums = Signal(data.ArrayLayout(signed(ACC_BITS), R))
        first = Signal()

        request = self.rq.payload
        for k in range(R):
            m.d.comb += [request.acc[k].eq(sums[k]), request.m0[k].eq(op.m0), request.shift[k].eq(op.shift)]
        m.d.comb += [request.zp_out.eq(op.zp_out), request.act_min.eq(INT8_MIN), request.act_max.eq(INT8_MAX),
                     request.addr.eq(op.dst + cbi)]

        with m.If(pend):
            for k in range(R):
                x = self.ib_rdata[8 * k:8 * k + 8].as_signed() - op.zp_in
                m.d.sync += sums[k].eq(Mux(first, x, sums[k] + x))
        m.d.sync += pend.eq(0)

        with m.FSM() as fsm:
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [cbi.eq(0), p.eq(0), rd.eq(op.src)]
                m.next = "READ"
            with m.State("READ"):
                m.d.comb += [self.ib_raddr.eq(rd), self.ib_ren.eq(1)]
                m.d.sync += [pend.eq(1), first.eq(p == 0),
                             rd.eq(rd + op.cb), p.eq(p + 1)]
                with m.If(p == op.n_pix - 1):
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                m.next = "EMIT"   # the last word is being added this cycle
            with m.State("EMIT"), m.If(self.rq.ready):
                m.d.comb += self.rq.valid.eq(1)
                with m.If(cbi == op.cb - 1):
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [cbi.eq(cbi + 1), p.eq(0), rd.eq(op.src + cbi + 1)]
                    m.next = "READ"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
