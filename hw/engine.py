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
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arbiter import MemArbiter
from .bus import CsrSignature, MemPortSignature
from .conv import ConvOp, ConvUnit
from .isa import (
    CB_BITS,
    CMD_BITS,
    DIM_BITS,
    ENGINE_ID,
    PROFILE_FIELDS,
    REGISTERS,
    VERSION,
    ConvCmd,
    EngineConfig,
    ErrorCode,
    FireCmd,
    GapCmd,
    Opcode,
    PoolCmd,
    ProfileRecord,
    Reg,
    StatusLayout,
)
from .load import LoadOp, LoadUnit
from .output import OutputPath
from .readout import GapUnit, StoreUnit
from .util import SerialMultiplier

__all__ = ["Engine"]


def _cdiv_pow2(x, n):
    return (x + (n - 1)) >> (n.bit_length() - 1)


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
        W = 8 * R
        cmd_words = cfg.cmd_words

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
        seq_mem = arb.i0  # command fetch and profile records

        # ---- activation buffer --------------------------------------------------------------------
        m.submodules.ibuf = ibuf = Memory(shape=unsigned(W), depth=cfg.ibuf_depth, init=[])
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

        # Output path: the conv drain, the average pool (requantized) and the store (raw).
        rq_fields = ("valid", "acc", "m0", "shift", "zp", "min", "max", "addr")
        with m.If(gap.busy):
            for f in rq_fields:
                m.d.comb += getattr(outp, f"rq_{f}").eq(getattr(gap, f"rq_{f}"))
        with m.Else():
            for f in rq_fields:
                m.d.comb += getattr(outp, f"rq_{f}").eq(getattr(conv, f"rq_{f}"))
            m.d.comb += outp.rq_ibuf.eq(conv.rq_ibuf)
        m.d.comb += [
            conv.rq_ready.eq(outp.ready), gap.rq_ready.eq(outp.ready), store.raw_ready.eq(outp.ready),
            outp.raw_valid.eq(store.raw_valid), outp.raw_addr.eq(store.raw_addr),
            outp.raw_data.eq(store.raw_data), outp.raw_ibuf.eq(0),
        ]

        # ---- registers ---------------------------------------------------------------------------
        cmd_addr = Signal(32)
        cmd_count = Signal(32)
        cmd_index = Signal(32)
        prof_addr = Signal(32)
        scratch = Signal(32)
        cycles = Signal(32)
        active = Signal(32)
        status = Signal(StatusLayout)
        st_busy, st_done, st_error, err_code = status.busy, status.done, status.error, status.error_code
        profile = Signal()
        start = Signal()
        clear = Signal()
        c0, c1, c2 = cfg.config_words()

        registers = {
            Reg.ID: ENGINE_ID, Reg.VERSION: (VERSION[0] << 16) | VERSION[1],
            Reg.CONFIG0: c0, Reg.CONFIG1: c1, Reg.CONFIG2: c2,
            Reg.STATUS: status, Reg.CMD_ADDR: cmd_addr, Reg.CMD_COUNT: cmd_count, Reg.CMD_INDEX: cmd_index,
            Reg.PROF_ADDR: prof_addr, Reg.CYCLES: cycles, Reg.ACTIVE: active, Reg.SCRATCH: scratch,
        }
        with m.If(self.csr.r_stb):
            m.d.sync += self.csr.r_data.eq(0)
            with m.Switch(self.csr.addr):
                for spec in REGISTERS:
                    if "R" in spec.access:
                        with m.Case(spec.index):
                            m.d.sync += self.csr.r_data.eq(registers[Reg[spec.name]])
        with m.If(self.csr.w_stb), m.Switch(self.csr.addr):
            with m.Case(int(Reg.CTRL)):
                m.d.comb += [start.eq(self.csr.w_data[0]), clear.eq(self.csr.w_data[1])]
            for spec in REGISTERS:
                if spec.access == "RW":
                    with m.Case(spec.index):
                        m.d.sync += registers[Reg[spec.name]].eq(self.csr.w_data)
        with m.If(clear):
            m.d.sync += [st_done.eq(0), st_error.eq(0), err_code.eq(ErrorCode.NONE)]
        m.d.comb += self.irq.eq(st_done | st_error)
        with m.If(st_busy):
            m.d.sync += cycles.eq(cycles + 1)
            with m.If(conv.active):
                m.d.sync += active.eq(active + 1)

        # ---- command fetch -----------------------------------------------------------------------
        cmd = Signal(CMD_BITS)
        opcode = Signal(4)
        m.d.comb += opcode.eq(cmd[:4])
        cv = data.View(ConvCmd, cmd[:ConvCmd.size])
        fv = data.View(FireCmd, cmd[:FireCmd.size])
        pv = data.View(PoolCmd, cmd[:PoolCmd.size])
        gv = data.View(GapCmd, cmd[:GapCmd.size])
        ld = cv.load  # the load spec sits at the same place in every layout
        fetch_issued = Signal(range(cmd_words + 1))
        fetch_got = Signal(range(cmd_words + 1))
        cmd_base = Signal(32)

        # Profile record of the command: one u32 counter per PROFILE_FIELDS entry, as words.
        record = Signal(ProfileRecord)
        counters = {f: record[f] for f in PROFILE_FIELDS}
        pwords = cfg.profile_words
        prof_i = Signal(range(pwords + 1))
        phase = {f: Signal(name=f"in_{f}") for f in ("load", "op0", "op1", "op2")}
        counting = {"cycles": Const(1), "active": conv.active, "wait_weights": conv.wait_weights,
                    "wait_bank": conv.wait_bank, **phase}
        for f, sig in counters.items():
            with m.If(counting[f]):
                m.d.sync += sig.eq(sig + 1)

        # ---- validation arithmetic ------------------------------------------------------------
        sq_cb = Signal(CB_BITS)
        e1_cb = Signal(CB_BITS)
        e3_cb = Signal(CB_BITS)
        m.d.comb += [sq_cb.eq(_cdiv_pow2(fv.squeeze, R)), e1_cb.eq(_cdiv_pow2(fv.expand1, R)),
                     e3_cb.eq(_cdiv_pow2(fv.expand3, R))]
        # Every product a command needs, for the checks and for the units, from one serial multiplier
        # (12-13 cycles each, before the command's first micro-op): the units have no multiplier.
        m.submodules.mul = mul = SerialMultiplier(2 * DIM_BITS, CB_BITS)
        mul_started = Signal()
        is_fire = opcode == Opcode.FIRE
        pooled_h = Mux(opcode == Opcode.POOL, pv.out_h, Mux(is_fire, fv.in_h, cv.in_h))
        pooled_w = Mux(opcode == Opcode.POOL, pv.out_w, Mux(is_fire, fv.in_w, cv.in_w))
        p_rw = Signal(2 * DIM_BITS, name="p_rows_w")      # src_rows * src_w: pixels loaded (GAP's count)
        prod_src = Signal(2 * DIM_BITS + CB_BITS)        # ... * cb: words the load reads
        p_oo = Signal(2 * DIM_BITS, name="p_pooled")     # pixels in the buffer tensor (pooled dims)
        prod_ldp = Signal(2 * DIM_BITS + CB_BITS)        # ... * cb: words a pooling load writes
        prod_sq = Signal(2 * DIM_BITS + CB_BITS)         # FIRE: squeeze region words
        orw = Signal(DIM_BITS + CB_BITS)                 # buffer row words (pooled row, or conv input row)
        rw_sq = Signal(DIM_BITS + CB_BITS)               # FIRE: squeeze row words
        n_out = Signal(2 * DIM_BITS)                     # output pixels of a band
        products = [
            (p_rw, ld.src_rows, ld.src_w),
            (prod_src, p_rw, ld.cb),
            (p_oo, pooled_h, pooled_w),
            (prod_ldp, p_oo, ld.cb),
            (prod_sq, p_oo, Mux(is_fire, sq_cb, 0)),
            (orw, pooled_w, ld.cb),
            (rw_sq, fv.in_w, sq_cb),
            (n_out, Mux(is_fire, fv.out_h, cv.out_h), Mux(is_fire, fv.in_w, cv.out_w)),
        ]
        prod_ld = Mux(ld.pool, prod_ldp, prod_src)        # words the load writes into the buffer
        err = Signal(ErrorCode)

        # ---- micro-operations ---------------------------------------------------------------------
        def load_op():
            o = Signal(LoadOp)
            m.d.comb += [
                o.src.eq(ld.src), o.src_rows.eq(ld.src_rows), o.src_w.eq(ld.src_w), o.cb.eq(ld.cb),
                o.src_pix.eq(ld.src_pix),
                o.ibuf.eq(ld.ibuf), o.pool.eq(ld.pool), o.pool_k.eq(ld.pool_k),
                o.pool_pad_t.eq(ld.pool_pad_t), o.pool_pad_l.eq(ld.pool_pad_l),
                o.out_h.eq(pooled_h), o.out_w.eq(pooled_w),
                o.n_words.eq(prod_src), o.orw.eq(orw),
            ]
            return o


        def conv_op(stage):
            """stage: 0 CONV, 1 fire squeeze, 2 fire expand1, 3 fire expand3."""
            o = Signal(ConvOp, name=f"conv_op{stage}")
            if stage == 0:
                m.d.comb += [
                    o.in_base.eq(ld.ibuf), o.in_h.eq(cv.in_h), o.in_w.eq(cv.in_w), o.in_cb.eq(ld.cb),
                    o.kh.eq(cv.kh), o.kw.eq(cv.kw), o.sy.eq(cv.sy), o.sx.eq(cv.sx), o.dil.eq(cv.dil),
                    o.pad_t.eq(cv.pad_t), o.pad_l.eq(cv.pad_l),
                    o.out_h.eq(cv.out_h), o.out_w.eq(cv.out_w), o.cout.eq(cv.cout),
                    o.zp_in.eq(cv.quant.zp_in), o.zp_out.eq(cv.quant.zp_out),
                    o.act_min.eq(cv.quant.act_min), o.act_max.eq(cv.quant.act_max),
                    o.wblob.eq(cv.wblob), o.dst.eq(cv.dst), o.dst_ibuf.eq(0), o.dst_pix.eq(cv.dst_pix),
                    o.row_words.eq(orw), o.n_pix.eq(n_out),
                ]
                return o
            common = [o.in_w.eq(fv.in_w), o.in_h.eq(fv.in_h), o.sy.eq(1), o.sx.eq(1), o.dil.eq(1),
                      o.out_w.eq(fv.in_w)]
            if stage == 1:
                m.d.comb += common + [
                    o.in_base.eq(ld.ibuf), o.in_cb.eq(ld.cb), o.kh.eq(1), o.kw.eq(1),
                    o.pad_t.eq(0), o.pad_l.eq(0), o.out_h.eq(fv.in_h), o.cout.eq(fv.squeeze),
                    o.zp_in.eq(fv.zp_in), o.zp_out.eq(fv.zp_sq), o.act_min.eq(fv.sq_min), o.act_max.eq(fv.sq_max),
                    o.wblob.eq(fv.w_sq), o.dst.eq(fv.sq_ibuf), o.dst_ibuf.eq(1), o.dst_pix.eq(sq_cb),
                    o.row_words.eq(orw), o.n_pix.eq(p_oo),
                ]
            else:
                k = 1 if stage == 2 else 3
                m.d.comb += common + [
                    o.in_base.eq(fv.sq_ibuf), o.in_cb.eq(sq_cb), o.kh.eq(k), o.kw.eq(k),
                    o.pad_t.eq((k // 2) - fv.halo_top), o.pad_l.eq(k // 2),
                    o.out_h.eq(fv.out_h), o.cout.eq(fv.expand1 if stage == 2 else fv.expand3),
                    o.zp_in.eq(fv.zp_sq), o.zp_out.eq(fv.zp_out), o.act_min.eq(fv.out_min),
                    o.act_max.eq(fv.out_max),
                    o.wblob.eq(fv.w_e1 if stage == 2 else fv.w_e3),
                    o.dst.eq(fv.dst if stage == 2 else fv.dst + e1_cb), o.dst_ibuf.eq(0),
                    o.dst_pix.eq(e1_cb + e3_cb),
                    o.row_words.eq(rw_sq), o.n_pix.eq(n_out),
                ]
            return o

        m.d.comb += load.op.eq(load_op())
        conv_ops = [conv_op(s) for s in range(4)]
        conv_stage = Signal(2)
        with m.Switch(conv_stage):
            for s in range(4):
                with m.Case(s):
                    m.d.comb += conv.op.eq(conv_ops[s])
        m.d.comb += [
            store.op.src.eq(ld.ibuf), store.op.n_pix.eq(p_oo), store.op.cb.eq(ld.cb),
            store.op.dst.eq(pv.dst), store.op.dst_pix.eq(pv.dst_pix),
            gap.op.src.eq(ld.ibuf), gap.op.n_pix.eq(p_rw), gap.op.cb.eq(ld.cb), gap.op.dst.eq(gv.dst),
            gap.op.m0.eq(gv.m0), gap.op.shift.eq(gv.shift), gap.op.zp_in.eq(gv.zp_in), gap.op.zp_out.eq(gv.zp_out),
        ]
        units_idle = ~load.busy & ~conv.busy & ~store.busy & ~gap.busy & outp.idle

        def addr_ok(a):
            return (a >> A) == 0 if A < 32 else Const(1)

        rules = self._check(m, opcode, cv, fv, pv, gv, ld, prod_ld, prod_sq, sq_cb, e1_cb, addr_ok)
        flags = [Signal(name=f"rule{i}_{code.name.lower()}") for i, (_, code) in enumerate(rules)]

        # ---- the sequencer --------------------------------------------------------------------
        with m.FSM(name="seq"):
            with m.State("IDLE"), m.If(start):
                m.d.sync += [st_busy.eq(1), st_done.eq(0), st_error.eq(0), err_code.eq(ErrorCode.NONE),
                             cmd_index.eq(0), cmd_base.eq(cmd_addr), cycles.eq(0), active.eq(0),
                             profile.eq(self.csr.w_data[2])]
                m.next = "NEXT"

            with m.State("NEXT"):
                with m.If(cmd_index == cmd_count):
                    m.d.sync += [st_busy.eq(0), st_done.eq(1)]
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
                        m.next = "MUL0"

            # The command's products, one serial multiplication at a time (see `products` above).
            for i, (dest, a, b) in enumerate(products):
                with m.State(f"MUL{i}"):
                    with m.If(mul.done & ~mul_started):
                        m.d.comb += [mul.start.eq(1), mul.a.eq(a), mul.b.eq(b)]
                        m.d.sync += mul_started.eq(1)
                    with m.Elif(mul.done):
                        m.d.sync += [dest.eq(mul.p), mul_started.eq(0)]
                        m.next = f"MUL{i + 1}" if i + 1 < len(products) else "CHECK6"
            # The rules' conditions are registered, then priority-encoded in the next cycle.
            with m.State("CHECK6"):
                m.d.sync += [flags[i].eq(cond) for i, (cond, _) in enumerate(rules)]
                m.next = "CHECK_ENC"
            with m.State("CHECK_ENC"):
                m.d.sync += err.eq(ErrorCode.NONE)
                for i, (_, code) in reversed(list(enumerate(rules))):
                    with m.If(flags[i]):
                        m.d.sync += err.eq(code)
                m.next = "CHECK7"
            with m.State("CHECK7"):
                with m.If(err != ErrorCode.NONE):
                    m.d.sync += [st_busy.eq(0), st_error.eq(1), err_code.eq(err)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += load.start.eq(1)
                    m.next = "LOAD"

            with m.State("LOAD"):
                m.d.comb += phase["load"].eq(1)
                with m.If(units_idle & ~load.start), m.Switch(opcode):
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
                m.d.comb += conv.start.eq(1)
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
                with m.If(units_idle):
                    with m.If((opcode == Opcode.FIRE) & (conv_stage != 3)):
                        m.d.sync += conv_stage.eq(conv_stage + 1)
                        m.next = "CONV"
                    with m.Else():
                        m.next = "PROFILE"
            with m.State("STORE"):
                m.d.comb += store.start.eq(1)
                m.next = "WAIT"
            with m.State("GAP"):
                m.d.comb += gap.start.eq(1)
                m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += phase["op0"].eq(1)
                with m.If(units_idle):
                    m.next = "PROFILE"

            with m.State("PROFILE"):
                with m.If(~profile):
                    m.next = "ADVANCE"
                with m.Else():
                    m.d.sync += prof_i.eq(0)
                    m.next = "PROFILE_WRITE"
            with m.State("PROFILE_WRITE"):
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
        return m

    def _check(self, m, opcode, cv, fv, pv, gv, ld, prod_ld, prod_sq, sq_cb, e1_cb, addr_ok):
        """The decoder's rules, in priority order: ``[(condition, ErrorCode), ...]``.

        The same rules as :func:`hw.isa.check_command`. Conditions of different opcodes exclude
        each other, so one flat list keeps the order of the nested specification.
        """
        cfg = self._cfg
        R, depth = cfg.rows, cfg.ibuf_depth
        ld_end = ld.ibuf + prod_ld
        known = (opcode == Opcode.CONV) | (opcode == Opcode.FIRE) | (opcode == Opcode.POOL) | (opcode == Opcode.GAP)
        pool_bad = ld.pool & (((ld.pool_k != 2) & (ld.pool_k != 3)) | (ld.pool_pad_t > 1) | (ld.pool_pad_l > 1)
                              | (ld.cb > cfg.pool_max_cb))
        is_conv, is_fire = opcode == Opcode.CONV, opcode == Opcode.FIRE
        is_pool, is_gap = opcode == Opcode.POOL, opcode == Opcode.GAP
        # Without pooling, the buffer tensor is the band as loaded.
        conv_shape_bad = ~ld.pool & ((cv.in_h != ld.src_rows) | (cv.in_w != ld.src_w))
        fire_shape_bad = (~ld.pool & ((fv.in_h != ld.src_rows) | (fv.in_w != ld.src_w))) \
            | (fv.out_h + fv.halo_top > fv.in_h) | (fv.in_h > fv.out_h + fv.halo_top + 1)
        sq_end = fv.sq_ibuf + prod_sq
        E = ErrorCode
        return [
            (~known, E.BAD_OPCODE),
            ((ld.src_rows == 0) | (ld.src_w == 0) | (ld.cb == 0), E.ZERO_SIZE),
            (pool_bad | (is_pool & ~ld.pool) | (is_gap & ld.pool), E.BAD_POOL),
            ((ld.src_pix != 0) & (ld.src_pix < ld.cb), E.BAD_PIXEL_STRIDE),
            (~addr_ok(ld.src), E.BAD_ADDRESS),
            (ld_end > depth, E.IBUF_OVERFLOW),
            (is_conv & ((cv.in_h == 0) | (cv.in_w == 0) | (cv.out_h == 0) | (cv.out_w == 0) | (cv.cout == 0)),
             E.ZERO_SIZE),
            (is_conv & ((cv.kh == 0) | (cv.kw == 0) | (cv.dil == 0)), E.BAD_KERNEL),
            (is_conv & ((cv.sy == 0) | (cv.sy == 3) | (cv.sx == 0) | (cv.sx == 3)), E.BAD_STRIDE),
            (is_conv & (cv.dst_pix < _cdiv_pow2(cv.cout, R)), E.BAD_PIXEL_STRIDE),
            (is_conv & conv_shape_bad, E.BAD_SHAPE),
            (is_conv & (~addr_ok(cv.wblob) | ~addr_ok(cv.dst)), E.BAD_ADDRESS),
            (is_fire & ((fv.in_h == 0) | (fv.in_w == 0) | (fv.out_h == 0) | (fv.squeeze == 0)
                        | (fv.expand1 == 0) | (fv.expand3 == 0)), E.ZERO_SIZE),
            (is_fire & ((fv.expand1 & (R - 1)) != 0), E.BAD_CHANNELS),
            (is_fire & fire_shape_bad, E.BAD_SHAPE),
            (is_fire & ((sq_end > depth) | ((fv.sq_ibuf < ld_end) & (sq_end > ld.ibuf))), E.IBUF_OVERFLOW),
            (is_fire & (~addr_ok(fv.w_sq) | ~addr_ok(fv.w_e1) | ~addr_ok(fv.w_e3) | ~addr_ok(fv.dst)),
             E.BAD_ADDRESS),
            (is_pool & ((pv.out_h == 0) | (pv.out_w == 0)), E.ZERO_SIZE),
            (is_pool & (pv.dst_pix < ld.cb), E.BAD_PIXEL_STRIDE),
            (is_pool & ~addr_ok(pv.dst), E.BAD_ADDRESS),
            (is_gap & ~addr_ok(gv.dst), E.BAD_ADDRESS),
        ]
