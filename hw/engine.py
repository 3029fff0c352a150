"""The engine: registers, command fetch and validation, micro-operation sequencing, buffers and units.

The host writes a command list to memory and starts it through the registers
(:class:`hw.isa.Reg`). For each command the sequencer fetches its 64 bytes,
checks it (a bad command stops the list with an error code and the engine
returns to idle, ready for the next start), then runs its micro-operations one
after the other, each on its unit:

========  ===============================================================
CONV      load band (copy or max-pool)  ->  convolution to memory
FIRE      load band  ->  squeeze 1x1 into the buffer  ->  expand 1x1 to memory
          ->  expand 3x3 to memory (the concat is the placement)
POOL      load band through the max-pool  ->  store to memory
GAP       load tensor  ->  per-channel average to memory
========  ===============================================================

A micro-operation starts when the previous one has finished completely
(including its last memory write), so every buffer dependency is honoured.
"""

from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arbiter import MemArbiter
from .bus import CsrSignature, MemPortSignature
from .command import CommandChecker, CommandProducts, MicroOpDecoder
from .conv import ConvUnit
from .isa import CMD_BITS, PROFILE_FIELDS, EngineConfig, ErrorCode, Opcode, ProfileRecord, StatusLayout
from .load import LoadUnit
from .output import OutputPath
from .readout import GapUnit, StoreUnit
from .registers import RegisterFile

__all__ = ["Engine"]


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
        m.submodules.arb = arb = MemArbiter(n=4, word_bytes=R, addr_bits=A)
        wiring.connect(m, wiring.flipped(self.mem), arb.o)
        wiring.connect(m, load.mem, arb.i1)
        wiring.connect(m, conv.wmem, arb.i2)
        wiring.connect(m, outp.mem, arb.i3)

        # ---- activation buffer --------------------------------------------------------------------
        m.submodules.ibuf = ibuf = Memory(shape=unsigned(8 * R), depth=cfg.ibuf_depth, init=[])
        ib_r = ibuf.read_port()
        ib_w = ibuf.write_port()
        for u in (load, conv, store, gap):
            m.d.comb += u.ib_rdata.eq(ib_r.data)
        # Exactly one unit runs at a time, so the ports are OR-ed together: idle units drive zeros.
        m.d.comb += [
            ib_r.addr.eq(Mux(load.busy, load.ib_raddr, 0) | Mux(conv.busy, conv.ib_raddr, 0)
                         | Mux(store.busy, store.ib_raddr, 0) | Mux(gap.busy, gap.ib_raddr, 0)),
            ib_r.en.eq(load.ib_ren | conv.ib_ren | store.ib_ren | gap.ib_ren),
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

        # ---- registers and run state ------------------------------------------------------------
        m.submodules.registers = regs = RegisterFile(cfg)
        wiring.connect(m, wiring.flipped(self.csr), regs.csr)
        status = Signal(StatusLayout)
        cmd_index, cycles, active = Signal(32), Signal(32), Signal(32)
        m.d.comb += [regs.status.eq(status), regs.cmd_index.eq(cmd_index), regs.cycles.eq(cycles),
                     regs.active.eq(active)]
        with m.If(regs.clear):
            m.d.sync += [status.done.eq(0), status.error.eq(0), status.error_code.eq(ErrorCode.NONE)]
        m.d.comb += self.irq.eq(status.done | status.error)
        with m.If(status.busy):
            m.d.sync += cycles.eq(cycles + 1)
            with m.If(conv.active):
                m.d.sync += active.eq(active + 1)

        # ---- the fetched command, worked out --------------------------------------------------------
        cmd = Signal(CMD_BITS)
        m.submodules.products = products = CommandProducts(cfg)
        m.submodules.checker = checker = CommandChecker(cfg)
        m.submodules.decoder = decoder = MicroOpDecoder(cfg)
        m.d.comb += [products.cmd.eq(cmd), checker.cmd.eq(cmd), checker.products.eq(products.products),
                     decoder.cmd.eq(cmd), decoder.products.eq(products.products),
                     load.op.eq(decoder.load), conv.op.eq(decoder.conv), store.op.eq(decoder.store),
                     gap.op.eq(decoder.gap)]

        units = _Units(load=load, conv=conv, store=store, gap=gap,
                       idle=~load.busy & ~conv.busy & ~store.busy & ~gap.busy & outp.idle)
        run = _RunState(status=status, cmd_index=cmd_index, cycles=cycles, active=active, cmd=cmd)
        self._sequence(m, arb.i0, regs, products, checker, decoder, units, run)
        return m

    def _sequence(self, m, seq_mem, regs, products, checker, decoder, units, run):
        """The sequencer: fetch each command, work it out, run its micro-operations, write its profile."""
        cfg = self._cfg
        W, cmd_words, pwords = 8 * cfg.rows, cfg.cmd_words, cfg.profile_words
        status, cmd_index, cmd = run.status, run.cmd_index, run.cmd
        opcode = cmd[:4]
        conv, conv_stage = units.conv, decoder.conv_stage
        fetch_issued = Signal(range(cmd_words + 1))
        fetch_got = Signal(range(cmd_words + 1))
        cmd_base = Signal(32)
        profile = Signal()

        # Profile record of the command: one u32 counter per PROFILE_FIELDS entry, as words.
        record = Signal(ProfileRecord)
        counters = {f: record[f] for f in PROFILE_FIELDS}
        prof_i = Signal(range(pwords + 1))
        phase = {f: Signal(name=f"in_{f}") for f in ("load", "op0", "op1", "op2")}
        counting = {"cycles": Const(1), "active": conv.active, "wait_weights": conv.wait_weights,
                    "wait_bank": conv.wait_bank, **phase}
        for f, sig in counters.items():
            with m.If(counting[f]):
                m.d.sync += sig.eq(sig + 1)

        with m.FSM(name="seq"):
            with m.State("IDLE"), m.If(regs.start):
                m.d.sync += [status.busy.eq(1), status.done.eq(0), status.error.eq(0),
                             status.error_code.eq(ErrorCode.NONE), cmd_index.eq(0), cmd_base.eq(regs.cmd_addr),
                             run.cycles.eq(0), run.active.eq(0), profile.eq(regs.profile)]
                m.next = "NEXT"

            with m.State("NEXT"):
                with m.If(cmd_index == regs.cmd_count):
                    m.d.sync += [status.busy.eq(0), status.done.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [fetch_issued.eq(0), fetch_got.eq(0), *(c.eq(0) for c in counters.values())]
                    m.next = "FETCH"

            with m.State("FETCH"):
                m.d.comb += [seq_mem.req.valid.eq(fetch_issued != cmd_words),
                             seq_mem.req.payload.addr.eq(cmd_base + fetch_issued),
                             seq_mem.req.payload.write.eq(0), seq_mem.rsp.ready.eq(1)]
                with m.If(seq_mem.req.valid & seq_mem.req.ready):
                    m.d.sync += fetch_issued.eq(fetch_issued + 1)
                with m.If(seq_mem.rsp.valid):
                    m.d.sync += [cmd.word_select(fetch_got, W).eq(seq_mem.rsp.payload),
                                 fetch_got.eq(fetch_got + 1)]
                    with m.If(fetch_got == cmd_words - 1):
                        m.next = "PRODUCTS"

            with m.State("PRODUCTS"):
                m.d.comb += products.run.eq(1)
                with m.If(products.done):
                    m.next = "CHECK"
            # The rules' conditions are registered, then priority-encoded in the next cycle.
            with m.State("CHECK"):
                m.d.comb += checker.sample.eq(1)
                m.next = "CHECK_ENCODE"
            with m.State("CHECK_ENCODE"):
                m.d.comb += checker.encode.eq(1)
                m.next = "CHECK_RESULT"
            with m.State("CHECK_RESULT"):
                with m.If(checker.error != ErrorCode.NONE):
                    m.d.sync += [status.busy.eq(0), status.error.eq(1), status.error_code.eq(checker.error)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += units.load.start.eq(1)
                    m.next = "LOAD"
            self._micro_ops(m, opcode, units, conv_stage, phase)

            with m.State("PROFILE"):
                with m.If(~profile):
                    m.next = "ADVANCE"
                with m.Else():
                    m.d.sync += prof_i.eq(0)
                    m.next = "PROFILE_WRITE"
            with m.State("PROFILE_WRITE"):
                prof_addr = regs.prof_addr
                m.d.comb += [seq_mem.req.valid.eq(1), seq_mem.req.payload.write.eq(1),
                             seq_mem.req.payload.addr.eq(prof_addr + cmd_index * pwords if pwords == 1
                                                         else prof_addr + (cmd_index << (pwords.bit_length() - 1))
                                                         + prof_i),
                             seq_mem.req.payload.data.eq(record.as_value().word_select(prof_i, W)
                                                         if ProfileRecord.size > W else record)]
                with m.If(seq_mem.req.ready):
                    m.d.sync += prof_i.eq(prof_i + 1)
                    with m.If(prof_i == pwords - 1):
                        m.next = "ADVANCE"
            with m.State("ADVANCE"):
                m.d.sync += [cmd_index.eq(cmd_index + 1), cmd_base.eq(cmd_base + cmd_words)]
                m.next = "NEXT"

    @staticmethod
    def _micro_ops(m, opcode, units, conv_stage, phase):
        """The states that run a command's micro-operations, one unit after the other (inside the FSM)."""
        with m.State("LOAD"):
            m.d.comb += phase["load"].eq(1)
            with m.If(units.idle & ~units.load.start), m.Switch(opcode):
                with m.Case(Opcode.CONV):
                    m.d.sync += conv_stage.eq(0)
                    m.next = "CONV"
                with m.Case(Opcode.FIRE):
                    m.d.sync += conv_stage.eq(1)
                    m.next = "CONV"
                with m.Case(Opcode.POOL):
                    m.next = "STORE"
                with m.Case(Opcode.GAP):
                    m.next = "GAP"
        with m.State("CONV"):
            m.d.comb += units.conv.start.eq(1)
            m.next = "CONV_WAIT"
        with m.State("CONV_WAIT"):
            # FIRE's stages 1, 2, 3 are op0, op1, op2; CONV's stage 0 is op0.
            with m.Switch(conv_stage):
                with m.Case(0, 1):
                    m.d.comb += phase["op0"].eq(1)
                with m.Case(2):
                    m.d.comb += phase["op1"].eq(1)
                with m.Case(3):
                    m.d.comb += phase["op2"].eq(1)
            with m.If(units.idle):
                with m.If((opcode == Opcode.FIRE) & (conv_stage != 3)):
                    m.d.sync += conv_stage.eq(conv_stage + 1)
                    m.next = "CONV"
                with m.Else():
                    m.next = "PROFILE"
        with m.State("STORE"):
            m.d.comb += units.store.start.eq(1)
            m.next = "WAIT"
        with m.State("GAP"):
            m.d.comb += units.gap.start.eq(1)
            m.next = "WAIT"
        with m.State("WAIT"):
            m.d.comb += phase["op0"].eq(1)
            with m.If(units.idle):
                m.next = "PROFILE"


class _Units:
    """The units the sequencer starts, and whether all of them (and the output path) are idle."""

    def __init__(self, **units):
        self.__dict__.update(units)


class _RunState:
    """What the sequencer keeps about the run: STATUS, the command index, the counters, the command."""

    def __init__(self, **state):
        self.__dict__.update(state)
