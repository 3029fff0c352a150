"""The convolution unit: address generation, weight streaming, the array, accumulation, drain.

One :data:`ConvOp` computes ``out[co, oy, ox] = requant(bias[co] + sum x[ci, iy, ix] * w[co, ci, ky, kx])``
for a tensor already in the activation buffer, writing int8 words to the buffer
or to memory. The loop nest (weight-stationary, see ``docs/ARCHITECTURE.md``)::

    for cot in output-channel tiles (cols channels):
        for pass in pixel runs of up to acc_depth output pixels (raster order):
            params(cot) -> the pass's accumulator bank
            for kt = (ky, kx, cb) in taps x input blocks:     # weight tile kt of cot
                for p in pass: vector x[cb*rows:(cb+1)*rows, iy(p, ky), ix(p, kx)]  -> array
            the bank drains through the requantizer while the next pass computes

Timing contract: the array sees one vector per cycle while the weights of the
next tile and the parameters of the next pass stream in behind it (double
buffering), so a pass of ``n`` pixels costs ``max(n, MIN_PASS)`` cycles per
weight tile plus stalls only when memory cannot keep up or the previous
pass's bank has not finished draining. Bank drains take ``groups`` cycles per
pixel. The first vector reaches the accumulators ``FEED_LATENCY + rows + cols``
cycles after issue.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..array import SystolicArray
from ..bus import MemPortSignature
from ..isa import IBUF_ADDR_BITS, EngineConfig
from ..requant import RequantRequestSignature
from .accumulate import AccumulatorBanks
from .feeder import AddressGenerator
from .plan import ConvOp, ConvPlanner
from .weights import WeightReader, WeightRouter

__all__ = ["ConvUnit"]


class ConvUnit(wiring.Component):
    """Runs one :data:`ConvOp` at a time. See the module docstring for the dataflow.

    Ports
    -----
    op, start : In
        The operation, latched on ``start`` (only when not ``busy``).
    busy : Out
        High from ``start`` until every output vector has been handed to the output path.
    ib_raddr, ib_ren, ib_rdata
        Activation buffer read port (synchronous: data the cycle after ``ib_ren``).
    wmem : Out(MemPortSignature)
        Reads of the weight blob (read-only client).
    rq : Out(RequantRequestSignature)
        Accumulator vectors to the output path, one ``rows``-wide group per cycle when ``rq.ready``.
    active : Out
        High in every cycle an activation vector with real data enters the array.
    wait_weights, wait_bank : Out
        The feeder is held: the next weight tile has not arrived / the pass's bank is still draining.
    """

    MIN_PASS = AddressGenerator.MIN_PASS
    WFIFO_DEPTH = WeightReader.FIFO_DEPTH
    FEED_LATENCY = 2

    def __init__(self, config: EngineConfig):
        self._cfg = config
        R = config.rows
        super().__init__({
            "op": In(ConvOp),
            "start": In(1),
            "busy": Out(1),
            "ib_raddr": Out(IBUF_ADDR_BITS),
            "ib_ren": Out(1),
            "ib_rdata": In(8 * R),
            "wmem": Out(MemPortSignature(R, config.mem_addr_bits)),
            "rq": Out(RequantRequestSignature(R)),
            "active": Out(1),
            "wait_weights": Out(1),
            "wait_bank": Out(1),
        })

    @property
    def config(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        op = self.op  # not latched: the sequencer holds it steady while the unit is busy
        m.submodules.planner = planner = ConvPlanner(cfg)
        m.submodules.feeder = feeder = AddressGenerator(cfg)
        m.submodules.reader = reader = WeightReader(cfg)
        m.submodules.router = router = WeightRouter(cfg)
        m.submodules.array = array = SystolicArray(rows=cfg.rows, cols=cfg.cols, psum_bits=cfg.psum_bits)
        m.submodules.banks = banks = AccumulatorBanks(cfg, psum_bits=cfg.psum_bits, array_latency=array.latency)

        # The op, its plan and the plan's init (where every part resets) go to every part.
        m.d.comb += [planner.op.eq(op), planner.start.eq(self.start), feeder.op.eq(op), feeder.start.eq(self.start),
                     feeder.plan.eq(planner.plan), feeder.init.eq(planner.init), banks.op.eq(op),
                     banks.restart.eq(planner.init), reader.restart.eq(planner.init), reader.wblob.eq(op.wblob),
                     reader.plan.eq(planner.plan), router.restart.eq(planner.init),
                     router.blob_cot_words.eq(planner.plan.blob_cot_words)]

        # Weights: memory -> reader -> router -> the array's weight buffers and the banks' parameters.
        wiring.connect(m, wiring.flipped(self.wmem), reader.mem)
        wiring.connect(m, reader.words, router.words)
        m.d.comb += [array.w_we.eq(router.tile_load.valid), array.w_col.eq(router.tile_load.payload.col),
                     array.w_buf.eq(router.tile_load.payload.buf), array.w_data.eq(router.tile_load.payload.data),
                     banks.params.eq(router.params)]

        # The address generator's bookkeeping with the router and the banks.
        wiring.connect(m, feeder.released, router.released)
        wiring.connect(m, feeder.bank_claimed, router.bank_claimed)
        wiring.connect(m, feeder.pass_start, banks.pass_start)
        m.d.comb += [feeder.tiles_ready.eq(router.tiles_ready), feeder.params_ready.eq(router.params_ready),
                     feeder.bank_busy.eq(banks.bank_busy), router.bank_busy.eq(banks.bank_busy),
                     feeder.draining.eq(banks.draining)]

        # Activations: buffer -> address generator -> array -> banks.
        m.d.comb += [self.ib_raddr.eq(feeder.ib_raddr), self.ib_ren.eq(feeder.ib_ren),
                     feeder.ib_rdata.eq(self.ib_rdata),
                     array.a.eq(feeder.vector), array.wsel.eq(feeder.wsel), banks.psum.eq(array.psum)]
        wiring.connect(m, feeder.issued, banks.issued)

        # Accumulators out to the requantizer, and the unit's status.
        wiring.connect(m, wiring.flipped(self.rq), banks.rq)
        m.d.comb += [self.busy.eq(feeder.busy),
                     self.active.eq(feeder.issued.valid), self.wait_weights.eq(feeder.wait_weights),
                     self.wait_bank.eq(feeder.wait_bank)]
        return m
