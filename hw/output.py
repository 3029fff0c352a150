"""The output path: requantizer, output queue, and the writer to the buffer or to memory."""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .bus import MemPortSignature
from .isa import ADDR_BITS, IBUF_ADDR_BITS, EngineConfig
from .requant import Requantizer, RequantRequestSignature

__all__ = ["OutputPath", "raw_word_layout"]

OUT_ADDR_BITS = ADDR_BITS


def raw_word_layout(rows: int) -> data.StructLayout:
    """A finished word for the output path: its address and whether it goes to the buffer."""
    return data.StructLayout({"addr": OUT_ADDR_BITS, "ibuf": 1, "data": 8 * rows})


class OutputPath(wiring.Component):
    """Requantize accumulator vectors and write the resulting words.

    Two producers share it, never at once: ``rq`` (accumulators to
    requantize: the convolution drain, the average pool) and ``raw``
    (finished words: the pool store). Each entry carries its destination: a
    word address and whether it goes to the activation buffer or to memory.

    Both streams' ``ready`` is one credit: when high, one more entry can be
    presented in this cycle and is guaranteed room in the queue (the
    requantizer's pipeline is counted). ``idle`` is high when nothing is in
    flight or queued and every memory write has been accepted by the memory
    port.
    """

    DEPTH = 16

    def __init__(self, config: EngineConfig):
        self._cfg = config
        R = config.rows
        super().__init__({
            "rq": In(RequantRequestSignature(R)),
            "raw": In(stream.Signature(raw_word_layout(R))),
            "idle": Out(1),
            "ib_we": Out(1),
            "ib_addr": Out(IBUF_ADDR_BITS),
            "ib_data": Out(8 * R),
            "mem": Out(MemPortSignature(R, config.mem_addr_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R = cfg.rows
        entry = raw_word_layout(R)
        user = data.StructLayout({"addr": OUT_ADDR_BITS, "ibuf": 1})

        m.submodules.rq = rq = Requantizer(lanes=R, user=user)
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=entry.size, depth=self.DEPTH)

        request, raw = self.rq.payload, self.raw.payload
        m.d.comb += [
            rq.i_valid.eq(self.rq.valid),
            rq.acc.eq(request.acc), rq.m0.eq(request.m0), rq.shift.eq(request.shift),
            rq.zp_out.eq(request.zp_out), rq.act_min.eq(request.act_min), rq.act_max.eq(request.act_max),
        ]
        rq_user = data.View(user, rq.i_user)
        m.d.comb += [rq_user.addr.eq(request.addr), rq_user.ibuf.eq(request.ibuf)]

        # Credits: queue occupancy plus the vectors inside the requantizer.
        inflight = Signal(range(Requantizer.latency + 2))
        m.d.sync += inflight.eq(inflight + self.rq.valid - rq.o_valid)
        # `ready` must not look at this cycle's valid (the producers' valid depends on it): keep room
        # for the entry presented now and for a store's read that is one cycle in flight.
        occupied = Signal(range(self.DEPTH + Requantizer.latency + 4))
        m.d.comb += occupied.eq(fifo.level + inflight)
        credit = occupied < self.DEPTH - 3
        m.d.comb += [self.rq.ready.eq(credit), self.raw.ready.eq(credit)]

        w = data.View(entry, fifo.w_stream.payload)
        out_user = data.View(user, rq.o_user)
        with m.If(rq.o_valid):
            m.d.comb += [w.addr.eq(out_user.addr), w.ibuf.eq(out_user.ibuf), w.data.eq(rq.o_data.as_value()),
                         fifo.w_stream.valid.eq(1)]
        with m.Elif(self.raw.valid):
            m.d.comb += [w.eq(raw), fifo.w_stream.valid.eq(1)]

        # Writer.
        r = data.View(entry, fifo.r_stream.payload)
        m.d.comb += [
            self.ib_addr.eq(r.addr), self.ib_data.eq(r.data),
            self.mem.req.payload.addr.eq(r.addr), self.mem.req.payload.write.eq(1),
            self.mem.req.payload.data.eq(r.data),
            self.mem.rsp.ready.eq(1),
        ]
        with m.If(fifo.r_stream.valid):
            with m.If(r.ibuf):
                m.d.comb += [self.ib_we.eq(1), fifo.r_stream.ready.eq(1)]
            with m.Else():
                m.d.comb += [self.mem.req.valid.eq(1), fifo.r_stream.ready.eq(self.mem.req.ready)]

        m.d.comb += self.idle.eq(~fifo.r_stream.valid & (inflight == 0) & ~self.rq.valid & ~self.raw.valid
                                 & (fifo.level == 0))
        return m
