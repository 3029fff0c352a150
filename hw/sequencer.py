"""The sequencer: fetches each command of the list, has it worked out and checked, runs its micro-operations
on the units one after the other, and writes its profile record."""

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .bus import MemPortSignature
from .isa import CMD_BITS, PROFILE_FIELDS, EngineConfig, ErrorCode, Opcode, ProfileRecord, StatusLayout

__all__ = ["Sequencer", "UnitHandshake"]

#: A unit as the sequencer sees it: a one-cycle ``start`` (the unit's op is held meanwhile), ``busy`` back.
UnitHandshake = wiring.Signature({"start": Out(1), "busy": In(1)})


class Sequencer(wiring.Component):
    """Runs the command list the registers start: fetches each command on ``mem``, presents it as ``cmd``
    to the products/checker/decoder (``products_run``/``products_done``, ``check_sample``/``check_encode``/
    ``check_error``, ``conv_stage``), then starts ``load``, ``conv``, ``store``, ``gap`` in turn, each
    when every unit and the output path (``out_idle``) are idle, and writes the profile record on ``mem``.

    The register side is ``start``/``clear``/``profile``/``cmd_addr``/``cmd_count``/``prof_addr`` in and
    ``status``/``cmd_index``/``cycles``/``active`` out (``active`` counts ``conv_active`` cycles); a bad
    command stops the list with its error code in ``status`` and the sequencer returns to idle.
    """

    def __init__(self, config: EngineConfig):
        self._cfg = config
        super().__init__({
            "mem": Out(MemPortSignature(config.rows, config.mem_addr_bits)),
            # register file side
            "start": In(1), "clear": In(1), "profile": In(1),
            "cmd_addr": In(32), "cmd_count": In(32), "prof_addr": In(32),
            "status": Out(StatusLayout), "cmd_index": Out(32), "cycles": Out(32), "active": Out(32),
            # the command, worked out by CommandProducts, CommandChecker, MicroOpDecoder
            "cmd": Out(CMD_BITS), "products_run": Out(1), "products_done": In(1),
            "check_sample": Out(1), "check_encode": Out(1), "check_error": In(ErrorCode),
            "conv_stage": Out(2),
            # the units
            "load": Out(UnitHandshake), "conv": Out(UnitHandshake), "store": Out(UnitHandshake),
            "gap": Out(UnitHandshake), "out_idle": In(1),
            "conv_active": In(1), "wait_weights": In(1), "wait_bank": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        W, cmd_words, pwords = 8 * cfg.rows, cfg.cmd_words, cfg.profile_words
        status, cmd_index, cmd, mem = self.status, self.cmd_index, self.cmd, self.mem
        idle = Signal()
        m.d.comb += idle.eq(~self.load.busy & ~self.conv.busy & ~self.store.busy & ~self.gap.busy
                            & self.out_idle)
        with m.If(self.clear):
            m.d.sync += [status.done.eq(0), status.error.eq(0), status.error_code.eq(ErrorCode.NONE)]
        with m.If(status.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(self.conv_active):
                m.d.sync += self.active.eq(self.active + 1)

        fetch_issued = Signal(range(cmd_words + 1))
        fetch_got = Signal(range(cmd_words + 1))
        cmd_base = Signal(32)
        profile = Signal()
        # Profile record of the command: one u32 counter per PROFILE_FIELDS entry, as words.
        record = Signal(ProfileRecord)
        counters = {f: record[f] for f in PROFILE_FIELDS}
        prof_i = Signal(range(pwords + 1))
        phase = {f: Signal(name=f"in_{f}") for f in ("load", "op0", "op1", "op2")}
        counting = {"cycles": Const(1), "active": self.conv_active, "wait_weights": self.wait_weights,
                    "wait_bank": self.wait_bank, **phase}
        for f, sig in counters.items():
            with m.If(counting[f]):
                m.d.sync += sig.eq(sig + 1)

        with m.FSM(name="seq"):
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [status.busy.eq(1), status.done.eq(0), status.error.eq(0),
                             status.error_code.eq(ErrorCode.NONE), cmd_index.eq(0), cmd_base.eq(self.cmd_addr),
                             self.cycles.eq(0), self.active.eq(0), profile.eq(self.profile)]
                m.next = "NEXT"

            with m.State("NEXT"):
                with m.If(cmd_index == self.cmd_count):
                    m.d.sync += [status.busy.eq(0), status.done.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [fetch_issued.eq(0), fetch_got.eq(0), *(c.eq(0) for c in counters.values())]
                    m.next = "FETCH"

            with m.State("FETCH"):
                m.d.comb += [mem.req.valid.eq(fetch_issued != cmd_words),
                             mem.req.payload.addr.eq(cmd_base + fetch_issued),
                             mem.req.payload.write.eq(0), mem.rsp.ready.eq(1)]
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
                    m.d.sync += [status.busy.eq(0), status.error.eq(1), status.error_code.eq(self.check_error)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.load.start.eq(1)
                    m.next = "LOAD"
            self._micro_ops(m, cmd[:4], idle, phase)

            with m.State("PROFILE"):
                with m.If(~profile):
                    m.next = "ADVANCE"
                with m.Else():
                    m.d.sync += prof_i.eq(0)
                    m.next = "PROFILE_WRITE"
            with m.State("PROFILE_WRITE"):
                prof_addr = self.prof_addr
                m.d.comb += [mem.req.valid.eq(1), mem.req.payload.write.eq(1),
                             mem.req.payload.addr.eq(prof_addr + cmd_index * pwords if pwords == 1
                                                     else prof_addr + (cmd_index << (pwords.bit_length() - 1))
                                                     + prof_i),
                             mem.req.payload.data.eq(record.as_value().word_select(prof_i, W)
                                                     if ProfileRecord.size > W else record)]
                with m.If(mem.req.ready):
                    m.d.sync += prof_i.eq(prof_i + 1)
                    with m.If(prof_i == pwords - 1):
                        m.next = "ADVANCE"
            with m.State("ADVANCE"):
                m.d.sync += [cmd_index.eq(cmd_index + 1), cmd_base.eq(cmd_base + cmd_words)]
                m.next = "NEXT"
        return m

    def _micro_ops(self, m, opcode, idle, phase):
        """The states that run a command's micro-operations, one unit after the other (inside the FSM)."""
        conv_stage = self.conv_stage
        with m.State("LOAD"):
            m.d.comb += phase["load"].eq(1)
            with m.If(idle & ~self.load.start), m.Switch(opcode):
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
                    m.d.sync += conv_stage.eq(conv_stage + 1)
                    m.next = "CONV"
                with m.Else():
                    m.next = "PROFILE"
        with m.State("STORE"):
            m.d.comb += self.store.start.eq(1)
            m.next = "WAIT"
        with m.State("GAP"):
            m.d.comb += self.gap.start.eq(1)
            m.next = "WAIT"
        with m.State("WAIT"):
            m.d.comb += phase["op0"].eq(1)
            with m.If(idle):
                m.next = "PROFILE"
