"""The output path: requantizer, output queue, and the writer to the buffer or to memory."""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .bus import MemPortSignature
from .isa import ACC_BITS, IBUF_ADDR_BITS, M0_BITS, SHIFT_BITS, EngineConfig
from .requant import Requantizer

__all__ = ["OutputPath"]

OUT_ADDR_BITS = 32


class OutputPath(wiring.Component):
    """Requantize accumulator vectors and write the resulting words.

    Two producers share it, never at once: ``rq_*`` (accumulators to
    requantize: the convolution drain, the average pool) and ``raw_*``
    (finished words: the pool store). Each entry carries its destination: a
    word address and whether it goes to the activation buffer or to memory.

    ``ready`` is a credit: when high, one more entry can be presented in this
    cycle and is guaranteed room in the queue (the requantizer's pipeline is
    counted). ``idle`` is high when nothing is in flight or queued and every
    memory write has been accepted by the memory port.
    """

    DEPTH = 16

    def __init__(self, config: EngineConfig):
        self._cfg = config
        R = config.rows
        super().__init__({
            "rq_valid": In(1),
            "rq_acc": In(data.ArrayLayout(signed(ACC_BITS), R)),
            "rq_m0": In(data.ArrayLayout(signed(M0_BITS), R)),
            "rq_shift": In(data.ArrayLayout(unsigned(SHIFT_BITS), R)),
            "rq_zp": In(signed(8)),
            "rq_min": In(signed(8)),
            "rq_max": In(signed(8)),
            "rq_addr": In(OUT_ADDR_BITS),
            "rq_ibuf": In(1),
            "raw_valid": In(1),
            "raw_addr": In(OUT_ADDR_BITS),
            "raw_data": In(8 * R),
            "raw_ibuf": In(1),
            "ready": Out(1),
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
        entry = data.StructLayout({"addr": OUT_ADDR_BITS, "ibuf": 1, "data": 8 * R})
        user = data.StructLayout({"addr": OUT_ADDR_BITS, "ibuf": 1})

        m.submodules.rq = rq = Requantizer(lanes=R, user=user)
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=entry.size, depth=self.DEPTH)

        m.d.comb += [
            rq.i_valid.eq(self.rq_valid),
            rq.acc.eq(self.rq_acc), rq.m0.eq(self.rq_m0), rq.shift.eq(self.rq_shift),
            rq.zp_out.eq(self.rq_zp), rq.act_min.eq(self.rq_min), rq.act_max.eq(self.rq_max),
        ]
        rq_user = data.View(user, rq.i_user)
        m.d.comb += [rq_user.addr.eq(self.rq_addr), rq_user.ibuf.eq(self.rq_ibuf)]

        # Credits: queue occupancy plus the vectors inside the requantizer.
        inflight = Signal(range(Requantizer.latency + 2))
        m.d.sync += inflight.eq(inflight + self.rq_valid - rq.o_valid)
        # `ready` must not look at this cycle's valid (the producers' valid depends on it): keep room
        # for the entry presented now and for a store's read that is one cycle in flight.
        occupied = Signal(range(self.DEPTH + Requantizer.latency + 4))
        m.d.comb += occupied.eq(fifo.level + inflight)
        m.d.comb += self.ready.eq(occupied < self.DEPTH - 3)

        w = data.View(entry, fifo.w_data)
        out_user = data.View(user, rq.o_user)
        with m.If(rq.o_valid):
            m.d.comb += [w.addr.eq(out_user.addr), w.ibuf.eq(out_user.ibuf), w.data.eq(rq.o_data.as_value()),
                         fifo.w_en.eq(1)]
        with m.Elif(self.raw_valid):
            m.d.comb += [w.addr.eq(self.raw_addr), w.ibuf.eq(self.raw_ibuf), w.data.eq(self.raw_data),
                         fifo.w_en.eq(1)]

        # Writer.
        r = data.View(entry, fifo.r_data)
        m.d.comb += [
            self.ib_addr.eq(r.addr), self.ib_data.eq(r.data),
            self.mem.req.payload.addr.eq(r.addr), self.mem.req.payload.write.eq(1),
            self.mem.req.payload.data.eq(r.data),
            self.mem.rsp.ready.eq(1),
        ]
        with m.If(fifo.r_rdy):
            with m.If(r.ibuf):
                m.d.comb += [self.ib_we.eq(1), fifo.r_en.eq(1)]
            with m.Else():
                m.d.comb += [self.mem.req.valid.eq(1), fifo.r_en.eq(self.mem.req.ready)]

        m.d.comb += self.idle.eq(~fifo.r_rdy & (inflight == 0) & ~self.rq_valid & ~self.raw_valid
                                 & (fifo.level == 0))
        return m
