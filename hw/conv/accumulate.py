"""The accumulator banks and their drain: partial sums in, accumulator vectors out to requantization."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..isa import ACC_BITS, ADDR_BITS, M0_BITS, SHIFT_BITS, EngineConfig, param_tile_layout
from ..requant import RequantRequestSignature
from .feeder import pass_layout, vector_meta_layout
from .plan import ConvOp, log2_exact

__all__ = ["AccumulatorBanks"]


class AccumulatorBanks(wiring.Component):
    """Two banks of ``acc_depth x cols`` int32: a pass accumulates into one while the other drains.

    ``issued`` is the metadata of each vector entering the array; ``psum`` its partial sums
    ``array_latency`` cycles later, added to the bank (to the bias on a pass's first tile). A pass
    announced on ``pass_start`` makes its bank ``bank_busy``; after its last vector the bank drains,
    one group of ``rows`` channels per cycle while ``rq.ready`` (a credit), on ``rq`` (accumulators,
    the channels' ``m0`` and ``shift``, the destination word), and is free again.
    """

    def __init__(self, config: EngineConfig, *, psum_bits: int, array_latency: int):
        self._cfg = config
        self._latency = array_latency
        R, C = config.rows, config.cols
        super().__init__({
            "op": In(ConvOp),
            "restart": In(1),
            "pass_start": In(stream.Signature(pass_layout(config), always_ready=True)),
            "issued": In(stream.Signature(vector_meta_layout(config), always_ready=True)),
            "psum": In(data.ArrayLayout(signed(psum_bits), C)),
            "params": In(data.ArrayLayout(param_tile_layout(C), 2)),
            "bank_busy": Out(2),
            "draining": Out(1),
            "rq": Out(RequantRequestSignature(R)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        C, P = cfg.cols, cfg.acc_depth
        params = self.params
        bank_busy = self.bank_busy
        bank_full = Signal(2)               # bank b's pass is accumulated, waiting for/under drain
        passes = [Signal(pass_layout(cfg), name=f"pass{b}") for b in range(2)]
        with m.If(self.pass_start.valid):
            for b in range(2):
                with m.If(self.pass_start.payload.bank == b):
                    m.d.sync += passes[b].eq(self.pass_start.payload)
            m.d.sync += bank_busy.bit_select(self.pass_start.payload.bank, 1).eq(1)

        # The metadata rides a delay line beside the array: `before` one cycle before the partial sums
        # (to read the accumulator), `arriving` with them.
        meta = data.StructLayout({"valid": 1, "info": vector_meta_layout(cfg)})
        line = [Signal(meta, name=f"meta_d{i}") for i in range(self._latency)]
        m.d.sync += [line[0].valid.eq(self.issued.valid), line[0].info.eq(self.issued.payload)]
        for i in range(1, self._latency):
            m.d.sync += line[i].eq(line[i - 1])
        before, arriving = line[-2], line[-1]

        acc_shape = data.ArrayLayout(signed(ACC_BITS), C)
        banks = []
        for b in range(2):
            mem = Memory(shape=acc_shape, depth=P, init=[])
            m.submodules[f"acc{b}"] = mem
            banks.append((mem.read_port(), mem.write_port()))

        draining_run = Signal()
        drain_bank = Signal()
        drain_read = Signal()               # the drain reads its next pixel this cycle
        drain_read_addr = Signal(range(P))
        for b, (rp, wp) in enumerate(banks):
            drain_owns = draining_run & (drain_bank == b) | bank_full[b]
            with m.If(drain_owns):
                m.d.comb += [rp.addr.eq(drain_read_addr), rp.en.eq(drain_read)]
            with m.Else():
                m.d.comb += [rp.addr.eq(before.info.p), rp.en.eq(before.valid & (before.info.bank == b))]
            m.d.comb += [wp.addr.eq(arriving.info.p), wp.en.eq(arriving.valid & (arriving.info.bank == b))]
            for c in range(C):
                base = Mux(arriving.info.first, params[b].bias[c], rp.data[c])
                m.d.comb += wp.data[c].eq(base + self.psum[c])
        with m.If(arriving.valid & arriving.info.pass_end):
            m.d.sync += bank_full.bit_select(arriving.info.bank, 1).eq(1)

        rdata = Signal(acc_shape)
        m.d.comb += rdata.eq(Mux(drain_bank, banks[1][0].data, banks[0][0].data))
        self._drain(m, passes, rdata, bank_full, drain_bank, draining_run, drain_read, drain_read_addr)
        with m.If(self.restart):
            m.d.sync += drain_bank.eq(0)
        return m

    def _drain(self, m, passes, rdata, bank_full, drain_bank, draining_run, drain_read, drain_read_addr):
        """Bank -> requantizer lanes, one group of ``rows`` channels per cycle."""
        cfg = self._cfg
        R, P, G = cfg.rows, cfg.acc_depth, cfg.groups
        op, params = self.op, self.params
        pixel = Signal(range(P + 1))
        group = Signal(range(G + 1))
        out_pix = Signal(ADDR_BITS)
        request = self.rq.payload
        current = Signal(pass_layout(cfg))
        m.d.comb += current.eq(Mux(drain_bank, passes[1], passes[0]))
        for k in range(R):
            lane_acc = Signal(signed(ACC_BITS), name=f"lane_acc{k}")
            lane_m0 = Signal(signed(M0_BITS), name=f"lane_m0{k}")
            lane_shift = Signal(SHIFT_BITS, name=f"lane_shift{k}")
            with m.Switch(group):
                for g in range(G):
                    with m.Case(g):
                        c = g * R + k
                        m.d.comb += [lane_acc.eq(rdata[c]),
                                     lane_m0.eq(Mux(drain_bank, params[1].m0[c], params[0].m0[c])),
                                     lane_shift.eq(Mux(drain_bank, params[1].shift[c].value,
                                                       params[0].shift[c].value))]
            m.d.comb += [request.acc[k].eq(lane_acc), request.m0[k].eq(lane_m0), request.shift[k].eq(lane_shift)]
        m.d.comb += [request.zp_out.eq(op.zp_out), request.act_min.eq(op.act_min), request.act_max.eq(op.act_max),
                     request.addr.eq(out_pix + group), request.ibuf.eq(op.dst_ibuf)]

        with m.FSM(name="drain") as fsm:
            with m.State("IDLE"), m.If(bank_full.bit_select(drain_bank, 1)):
                m.d.comb += [drain_read.eq(1), drain_read_addr.eq(0)]
                m.d.sync += [pixel.eq(0), group.eq(0)]
                with m.If(current.first):
                    m.d.sync += out_pix.eq(op.dst + (current.cot << log2_exact(G)))
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += draining_run.eq(1)
                with m.If(self.rq.ready):
                    m.d.comb += self.rq.valid.eq(1)
                    with m.If(group == current.groups - 1):
                        m.d.sync += [group.eq(0), pixel.eq(pixel + 1), out_pix.eq(out_pix + op.dst_pix)]
                        with m.If(pixel == current.npass - 1):
                            m.next = "END"
                        with m.Else():
                            m.d.comb += [drain_read.eq(1), drain_read_addr.eq(pixel + 1)]
                    with m.Else():
                        m.d.sync += group.eq(group + 1)
            with m.State("END"):
                m.d.sync += [bank_full.bit_select(drain_bank, 1).eq(0), self.bank_busy.bit_select(drain_bank, 1).eq(0),
                             drain_bank.eq(~drain_bank)]
                m.next = "IDLE"
        m.d.comb += self.draining.eq(~fsm.ongoing("IDLE"))
