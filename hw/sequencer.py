"""The sequencer: fetches each command of the list, has it worked out and checked, runs its band load, then
its micro-operations on the units one after the other, and writes its profile record. It holds two commands:
while one (the *executing* slot) computes, the next (the *front* slot) is fetched, checked and loaded, when
no hazard between the two holds."""

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .bus import MemPortSignature
from .command import ProductsLayout, RegionsLayout
from .isa import CMD_BITS, EngineConfig, ErrorCode, Opcode, ProfileRecord, StatusLayout

__all__ = ["Sequencer", "UnitHandshake"]

#: A unit as the sequencer sees it: a one-cycle ``start`` (the unit's op is held meanwhile), ``busy`` back.
UnitHandshake = wiring.Signature({"start": Out(1), "busy": In(1)})


def _meet(a_lo, a_hi, b_lo, b_hi):
    """Two ranges ``[lo, hi)`` share a word (an empty range is ``[0, 0)`` and meets nothing)."""
    return (a_lo < b_hi) & (b_lo < a_hi)


class Sequencer(wiring.Component):
    """Runs the command list the registers start, two commands at a time.

    The *front* slot fetches command N+1 on ``mem``, presents it as ``cmd`` to the products/checker
    (``products_run``/``products_done``, ``check_sample``/``check_encode``/``check_error``; ``products`` and
    ``regions`` are what they work out), then starts ``load`` for it while command N, in the *executing*
    slot (``exec_cmd``, ``exec_products``, ``conv_stage``), still runs ``conv``, ``store`` or ``gap``. The
    load starts only when no hazard holds between N+1 and N (checked here, in hardware):

    * the buffer band N+1's load writes meets a buffer region N still reads (its band; a FIRE's squeeze
      output, its band being dead after its squeeze);
    * N is a FIRE before the end of its squeeze (which reads its band and writes the buffer);
    * the memory N+1's load reads meets the memory N writes (the fence);
    * N+1's load pools (it reads the buffer) and the buffer has one read port (``ibuf_read_ports``).

    Otherwise it waits for N to finish. The loaded command moves to the executing slot when that is empty;
    N's micro-operations start each when the units and the output path (``out_idle``) are idle.

    The register side is ``start``/``clear``/``profile``/``cmd_addr``/``cmd_count``/``prof_addr`` in and
    ``status``/``cmd_index``/``cycles``/``active`` out (``active`` counts ``conv_active`` cycles); a bad
    command stops the list, once the command before it has finished, with its error code in ``status``,
    and the sequencer returns to idle. ``overlap`` is high in the cycles a load runs beside a command.
    """

    def __init__(self, config: EngineConfig):
        self._cfg = config
        super().__init__({
            "mem": Out(MemPortSignature(config.rows, config.mem_addr_bits)),
            # register file side
            "start": In(1), "clear": In(1), "profile": In(1),
            "cmd_addr": In(32), "cmd_count": In(32), "prof_addr": In(32),
            "status": Out(StatusLayout), "cmd_index": Out(32), "cycles": Out(32), "active": Out(32),
            # the front command, worked out by CommandProducts, CommandChecker, CommandRegions
            "cmd": Out(CMD_BITS), "products_run": Out(1), "products_done": In(1),
            "check_sample": Out(1), "check_encode": Out(1), "check_error": In(ErrorCode),
            "products": In(ProductsLayout), "regions": In(RegionsLayout),
            # the executing command, for the MicroOpDecoder of its units
            "exec_cmd": Out(CMD_BITS), "exec_products": Out(ProductsLayout), "conv_stage": Out(2),
            # the units
            "load": Out(UnitHandshake), "conv": Out(UnitHandshake), "store": Out(UnitHandshake),
            "gap": Out(UnitHandshake), "out_idle": In(1),
            "conv_active": In(1), "wait_weights": In(1), "wait_bank": In(1),
            "overlap": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        status = self.status
        with m.If(self.clear):
            m.d.sync += [status.done.eq(0), status.error.eq(0), status.error_code.eq(ErrorCode.NONE)]
        with m.If(status.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(self.conv_active):
                m.d.sync += self.active.eq(self.active + 1)

        # The executing slot.
        exec_valid = Signal()
        exec_regions = Signal(RegionsLayout)
        sq_pending = Signal()        # the executing FIRE has not finished its squeeze
        exec_index = Signal(32)
        profile = Signal()
        # Profile record of the executing command: one u32 counter per PROFILE_FIELDS entry.
        record = Signal(ProfileRecord)
        since = Signal(32)           # cycles since the previous command ended (or START)
        load_count = Signal(32)      # the front command's load cycles
        phase = {f: Signal(name=f"in_{f}") for f in ("load", "op0", "op1", "op2")}
        counting = {"active": self.conv_active, "wait_weights": self.wait_weights, "wait_bank": self.wait_bank,
                    "op0": phase["op0"], "op1": phase["op1"], "op2": phase["op2"]}
        for f, sig in counting.items():
            with m.If(sig):
                m.d.sync += record[f].eq(record[f] + 1)
        with m.If(status.busy):
            m.d.sync += since.eq(since + 1)
        with m.If(phase["load"]):
            m.d.sync += load_count.eq(load_count + 1)
        prof_writing = Signal()

        # The hazards between the front command's load and the executing command (registered: while the
        # front waits they only ever clear).
        reg = self.regions
        hazard = Signal()
        # A FIRE reads its band only in its squeeze, which no load runs beside: then only its squeeze output
        # (which its expands read) is live.
        m.d.sync += hazard.eq(exec_valid & (
            (~exec_regions.fire & _meet(reg.band_lo, reg.band_hi, exec_regions.band_lo, exec_regions.band_hi))
            | _meet(reg.band_lo, reg.band_hi, exec_regions.sq_lo, exec_regions.sq_hi)
            | sq_pending
            | _meet(reg.rd_lo, reg.rd_hi, exec_regions.wr_lo, exec_regions.wr_hi)
            | (reg.pool if cfg.ibuf_read_ports == 1 else Const(0))))
        m.d.comb += self.overlap.eq(phase["load"] & exec_valid)

        handoff = Signal()           # the front command moves to the executing slot this cycle
        retire = Signal()            # the executing command has ended (record written)
        self._front(m, exec_valid, hazard, handoff, prof_writing, phase, profile)
        with m.If(handoff):
            m.d.sync += [self.exec_cmd.eq(self.cmd), self.exec_products.eq(self.products),
                         exec_regions.eq(self.regions), exec_valid.eq(1), exec_index.eq(self.cmd_index),
                         sq_pending.eq(self.regions.fire),
                         *(record[f].eq(0) for f in counting), record.load.eq(load_count), load_count.eq(0)]
        self._exec(m, exec_valid, sq_pending, exec_index, record, since, retire, prof_writing, phase, profile)
        with m.If(retire):
            m.d.sync += exec_valid.eq(0)
        with m.If(self.start & ~status.busy):
            m.d.sync += [since.eq(0), exec_valid.eq(0), load_count.eq(0), profile.eq(self.profile)]
        return m

    def _front(self, m, exec_valid, hazard, handoff, prof_writing, phase, profile):
        """The front slot: fetch, products, checks, the wait for hazards, the load, the handoff."""
        cfg = self._cfg
        W, cmd_words = 8 * cfg.rows, cfg.cmd_words
        status, cmd_index, cmd, mem = self.status, self.cmd_index, self.cmd, self.mem
        fetch_issued = Signal(range(cmd_words + 1))
        fetch_got = Signal(range(cmd_words + 1))
        cmd_base = Signal(32)
        m.d.comb += mem.rsp.ready.eq(1)   # answers come only to the fetch, which takes them all
        with m.FSM(name="front"):
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [status.busy.eq(1), status.done.eq(0), status.error.eq(0),
                             status.error_code.eq(ErrorCode.NONE), cmd_index.eq(0), cmd_base.eq(self.cmd_addr),
                             self.cycles.eq(0), self.active.eq(0)]
                m.next = "NEXT"

            with m.State("NEXT"):
                with m.If(cmd_index == self.cmd_count):
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += [fetch_issued.eq(0), fetch_got.eq(0)]
                    m.next = "FETCH"

            with m.State("FETCH"):
                # The profile record of the executing command goes first; answers still come in meanwhile.
                with m.If(~prof_writing):
                    m.d.comb += [mem.req.valid.eq(fetch_issued != cmd_words),
                                 mem.req.payload.addr.eq(cmd_base + fetch_issued),
                                 mem.req.payload.write.eq(0)]
                    with m.If(mem.req.valid & mem.req.ready):
                        m.d.sync += fetch_issued.eq(fetch_issued + 1)
                with m.If(mem.rsp.valid):
                    m.d.sync += [cmd.word_select(fetch_got, W).eq(mem.rsp.payload), fetch_got.eq(fetch_got + 1)]
                    with m.If(fetch_got == cmd_words - 1):
                        m.next = "PRODUCTS"

            with m.State("PRODUCTS"):
                m.d.comb += self.products_run.eq(1)
                with m.If(self.products_done):
                    m.next = "CHECK"
            # The rules' conditions are registered, then priority-encoded in the next cycle.
            with m.State("CHECK"):
                m.d.comb += self.check_sample.eq(1)
                m.next = "CHECK_ENCODE"
            with m.State("CHECK_ENCODE"):
                m.d.comb += self.check_encode.eq(1)
                m.next = "CHECK_RESULT"
            with m.State("CHECK_RESULT"):
                with m.If(self.check_error != ErrorCode.NONE):
                    m.next = "REFUSE"
                with m.Else():
                    m.next = "HAZARD"
            # REFUSE: the commands before the refused one complete; then the list stops.
            with m.State("REFUSE"), m.If(~exec_valid):
                m.d.sync += [status.busy.eq(0), status.error.eq(1), status.error_code.eq(self.check_error)]
                m.next = "IDLE"
            with m.State("HAZARD"), m.If(~hazard):
                m.d.comb += self.load.start.eq(1)
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += phase["load"].eq(1)
                with m.If(~self.load.busy):
                    m.next = "HANDOFF"
            with m.State("HANDOFF"), m.If(~exec_valid):
                m.d.comb += handoff.eq(1)
                m.d.sync += [cmd_index.eq(cmd_index + 1), cmd_base.eq(cmd_base + cmd_words)]
                m.next = "NEXT"
            with m.State("FINISH"), m.If(~exec_valid):
                m.d.sync += [status.busy.eq(0), status.done.eq(1)]
                m.next = "IDLE"

    def _exec(self, m, exec_valid, sq_pending, exec_index, record, since, retire, prof_writing, phase, profile):
        """The executing slot: the command's micro-operations after its load, then its profile record."""
        cfg = self._cfg
        W, pwords = 8 * cfg.rows, cfg.profile_words
        mem, conv_stage = self.mem, self.conv_stage
        opcode = self.exec_cmd[:4]
        idle = Signal()
        m.d.comb += idle.eq(~self.conv.busy & ~self.store.busy & ~self.gap.busy & self.out_idle)
        prof_i = Signal(range(pwords + 1))

        def finish():
            # The command's last write is done: its record's cycles run from the previous command's end.
            m.d.sync += [record.cycles.eq(since + 1), since.eq(0), prof_i.eq(0)]
            with m.If(profile):
                m.next = "PROFILE_WRITE"
            with m.Else():
                m.d.comb += retire.eq(1)
                m.next = "EMPTY"

        with m.FSM(name="exec"):
            with m.State("EMPTY"), m.If(exec_valid), m.Switch(opcode):
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
                m.d.comb += self.conv.start.eq(1)
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
                with m.If(idle):
                    with m.If((opcode == Opcode.FIRE) & (conv_stage != 3)):
                        m.d.sync += [conv_stage.eq(conv_stage + 1), sq_pending.eq(0)]
                        m.next = "CONV"
                    with m.Else():
                        finish()
            with m.State("STORE"):
                m.d.comb += self.store.start.eq(1)
                m.next = "WAIT"
            with m.State("GAP"):
                m.d.comb += self.gap.start.eq(1)
                m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += phase["op0"].eq(1)
                with m.If(idle):
                    finish()
            with m.State("PROFILE_WRITE"):
                m.d.comb += [prof_writing.eq(1), mem.req.valid.eq(1), mem.req.payload.write.eq(1),
                             mem.req.payload.addr.eq(self.prof_addr + exec_index * pwords if pwords == 1
                                                     else self.prof_addr + (exec_index << (pwords.bit_length() - 1))
                                                     + prof_i),
                             mem.req.payload.data.eq(record.as_value().word_select(prof_i, W)
                                                     if ProfileRecord.size > W else record)]
                with m.If(mem.req.ready):
                    m.d.sync += prof_i.eq(prof_i + 1)
                    with m.If(prof_i == pwords - 1):
                        m.d.comb += retire.eq(1)
                        m.next = "EMPTY"
