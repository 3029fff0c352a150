"""The engine: registers, command fetch and validation, micro-operation sequencing, buffers and units.

The host writes a command list to memory and starts it through the registers
(:class:`hw.isa.Reg`). For each command the sequencer (:class:`hw.sequencer.Sequencer`) fetches its 64 bytes,
checks it (a bad command stops the list with an error code and the engine
returns to idle, ready for the next start), loads its band, then runs its micro-operations one
after the other, each on its unit:

========  ===============================================================
CONV      load band (copy or max-pool)  ->  convolution to memory
FIRE      load band  ->  squeeze 1x1 into the buffer  ->  expand 1x1 to memory
          ->  expand 3x3 to memory (the concat is the placement)
POOL      load band through the max-pool  ->  store to memory
GAP       load tensor  ->  per-channel average to memory
========  ===============================================================

Within a command, a micro-operation starts when the previous one has finished completely
(including its last memory write). The next command's fetch, checks and band load run beside the
command's micro-operations when the sequencer finds no hazard between the two (buffer regions, the
FIRE squeeze's buffer writes, a memory fence, the buffer's read ports); otherwise its load waits.
"""

from amaranth.hdl import Module, Mux, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arbiter import MemArbiter
from .bus import CsrSignature, MemPortSignature
from .command import CommandChecker, CommandProducts, CommandRegions, MicroOpDecoder
from .conv import ConvUnit
from .isa import EngineConfig
from .load import LoadUnit
from .output import OutputPath
from .readout import GapUnit, StoreUnit
from .registers import RegisterFile
from .sequencer import Sequencer

__all__ = ["Engine"]


def _or(values):
    values = list(values)
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out


class Engine(wiring.Component):
    """The accelerator: ``csr`` (register target), ``mem`` (memory initiator), ``irq``.

    Parameters
    ----------
    config : EngineConfig
        Array geometry and buffer sizes; readable by the host in CONFIG0..2.

    ``irq`` is high while STATUS has DONE or ERROR set.
    """

    def __init__(self, config: EngineConfig | None = None):
        config = EngineConfig() if config is None else config
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, got {config!r}")
        if config.rows > 64:
            raise ValueError(f"rows={config.rows}: a command must span at least one memory word")
        self._cfg = config
        super().__init__({
            "csr": In(CsrSignature),
            "mem": Out(MemPortSignature(config.rows, config.mem_addr_bits)),
            "irq": Out(1),
        })

    @property
    def config(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, A = cfg.rows, cfg.mem_addr_bits

        # ---- units ------------------------------------------------------------------------------
        m.submodules.load = load = LoadUnit(cfg)
        m.submodules.conv = conv = ConvUnit(cfg)
        m.submodules.out = outp = OutputPath(cfg)
        m.submodules.store = store = StoreUnit(cfg)
        m.submodules.gap = gap = GapUnit(cfg)
        # The band load runs beside a command's convolution: it takes the memory cycles the others leave.
        m.submodules.arb = arb = MemArbiter(n=4, word_bytes=R, addr_bits=A, background=1)
        wiring.connect(m, wiring.flipped(self.mem), arb.o)
        wiring.connect(m, load.mem, arb.i1)
        wiring.connect(m, conv.wmem, arb.i2)
        wiring.connect(m, outp.mem, arb.i3)

        # ---- activation buffer --------------------------------------------------------------------
        m.submodules.ibuf = ibuf = Memory(shape=unsigned(8 * R), depth=cfg.ibuf_depth, init=[])
        ib_r = ibuf.read_port()
        ib_w = ibuf.write_port()
        readers = [conv, store, gap]
        if cfg.ibuf_read_ports == 2:
            # The load unit's own read port (pool on load), so a pooling load runs beside a convolution.
            ib_lr = ibuf.read_port()
            m.d.comb += [ib_lr.addr.eq(load.ib_raddr), ib_lr.en.eq(load.ib_ren), load.ib_rdata.eq(ib_lr.data)]
        else:
            readers.append(load)  # the sequencer keeps a pooling load from running beside another unit
        for u in readers:
            m.d.comb += u.ib_rdata.eq(ib_r.data)
        # One reader reads at a time, so the port's inputs are OR-ed together: a reader not reading drives zeros.
        # The buffer is written by the load or by the output path (FIRE's squeeze), never both at once.
        m.d.comb += [
            ib_r.addr.eq(_or(Mux(u.ib_ren, u.ib_raddr, 0) for u in readers)),
            ib_r.en.eq(_or(u.ib_ren for u in readers)),
            ib_w.addr.eq(Mux(load.ib_we, load.ib_waddr, outp.ib_addr)),
            ib_w.data.eq(Mux(load.ib_we, load.ib_wdata, outp.ib_data)),
            ib_w.en.eq(load.ib_we | outp.ib_we),
        ]

        # Output path: the conv drain or the average pool (requantized; never both at once), the store (raw).
        with m.If(gap.busy):
            m.d.comb += [outp.rq.valid.eq(gap.rq.valid), outp.rq.payload.eq(gap.rq.payload)]
        with m.Else():
            m.d.comb += [outp.rq.valid.eq(conv.rq.valid), outp.rq.payload.eq(conv.rq.payload)]
        m.d.comb += [conv.rq.ready.eq(outp.rq.ready), gap.rq.ready.eq(outp.rq.ready)]
        wiring.connect(m, store.raw, outp.raw)

        # ---- registers, the sequencer and the fetched command worked out ---------------------------
        m.submodules.registers = regs = RegisterFile(cfg)
        wiring.connect(m, wiring.flipped(self.csr), regs.csr)
        m.submodules.seq = seq = Sequencer(cfg)
        wiring.connect(m, seq.mem, arb.i0)
        m.d.comb += [seq.start.eq(regs.start), seq.clear.eq(regs.clear), seq.profile.eq(regs.profile),
                     seq.cmd_addr.eq(regs.cmd_addr), seq.cmd_count.eq(regs.cmd_count),
                     seq.prof_addr.eq(regs.prof_addr),
                     regs.status.eq(seq.status), regs.cmd_index.eq(seq.cmd_index), regs.cycles.eq(seq.cycles),
                     regs.active.eq(seq.active), self.irq.eq(seq.status.done | seq.status.error)]

        m.submodules.products = products = CommandProducts(cfg)
        m.submodules.checker = checker = CommandChecker(cfg)
        m.submodules.regions = regions = CommandRegions(cfg)
        # Two decoders: the front command's load, the executing command's other units.
        m.submodules.load_decoder = load_decoder = MicroOpDecoder(cfg)
        m.submodules.decoder = decoder = MicroOpDecoder(cfg)
        m.d.comb += [products.cmd.eq(seq.cmd), products.run.eq(seq.products_run),
                     seq.products_done.eq(products.done), seq.products.eq(products.products),
                     checker.cmd.eq(seq.cmd), checker.products.eq(products.products),
                     checker.sample.eq(seq.check_sample), checker.encode.eq(seq.check_encode),
                     seq.check_error.eq(checker.error),
                     regions.cmd.eq(seq.cmd), regions.products.eq(products.products), seq.regions.eq(regions.regions),
                     load_decoder.cmd.eq(seq.cmd), load_decoder.products.eq(products.products),
                     load.op.eq(load_decoder.load),
                     decoder.cmd.eq(seq.exec_cmd), decoder.products.eq(seq.exec_products),
                     decoder.conv_stage.eq(seq.conv_stage),
                     conv.op.eq(decoder.conv), store.op.eq(decoder.store), gap.op.eq(decoder.gap)]

        # The units' handshakes (the units' start and busy are their own ports, not an interface).
        for name, unit in (("load", load), ("conv", conv), ("store", store), ("gap", gap)):
            port = getattr(seq, name)
            m.d.comb += [unit.start.eq(port.start), port.busy.eq(unit.busy)]
        m.d.comb += [seq.out_idle.eq(outp.idle), seq.conv_active.eq(conv.active),
                     seq.wait_weights.eq(conv.wait_weights), seq.wait_bank.eq(conv.wait_bank)]
        return m
