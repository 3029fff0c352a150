"""A fetched command, worked out: its products, its validity, and the micro-operations it runs.

Three components look at the 512 command bits the sequencer fetched (held steady while they work):
:class:`CommandProducts` computes the products the checks and the units need on one serial
multiplier, :class:`CommandChecker` applies the decoder's rules (``hw.isa.check_command``), and
:class:`MicroOpDecoder` turns the command into the operations of the load, convolution, store and
average units.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .conv import ConvOp
from .isa import (
    ADDR_BITS,
    CB_BITS,
    CMD_BITS,
    DIM_BITS,
    MAX_STRIDE,
    ConvCmd,
    EngineConfig,
    ErrorCode,
    FireCmd,
    GapCmd,
    Opcode,
    PoolCmd,
)
from .load import LoadOp
from .readout import GapOp, StoreOp
from .util import SerialMultiplier

__all__ = ["CommandProducts", "CommandChecker", "CommandRegions", "MicroOpDecoder", "ProductsLayout",
           "RegionsLayout"]

#: The products of a command (all unsigned).
ProductsLayout = data.StructLayout({
    "src_pixels": 2 * DIM_BITS,                 # src_rows * src_w: pixels loaded (GAP's count)
    "src_words": 2 * DIM_BITS + CB_BITS,        # ... * cb: words the load reads
    "pooled_pixels": 2 * DIM_BITS,              # pixels of the buffer tensor (pooled dimensions)
    "pooled_words": 2 * DIM_BITS + CB_BITS,     # ... * cb: words a pooling load writes
    "squeeze_words": 2 * DIM_BITS + CB_BITS,    # FIRE: words of the squeeze output region
    "row_words": DIM_BITS + CB_BITS,            # words of a buffer row (pooled row, or conv input row)
    "squeeze_row_words": DIM_BITS + CB_BITS,    # FIRE: words of a squeeze output row
    "out_pixels": 2 * DIM_BITS,                 # output pixels of a band
    "read_span": 2 * DIM_BITS + CB_BITS,        # memory words the load may read (hw.isa.load_read_span)
    "write_span": 2 * DIM_BITS + CB_BITS + 1,   # memory words the command may write (hw.isa.write_span)
})

#: Where a command works, for the sequencer's hazard checks between it and the next command's load:
#: activation-buffer regions and memory spans, each ``[lo, hi)`` (``hw.isa.buffer_regions``,
#: ``load_read_span``, ``write_span``).
_SPAN = 2 * DIM_BITS + CB_BITS + 2
RegionsLayout = data.StructLayout({
    "band_lo": _SPAN, "band_hi": _SPAN,     # the band the load writes (and the command then reads)
    "sq_lo": _SPAN, "sq_hi": _SPAN,         # FIRE's squeeze output (empty for the others)
    "rd_lo": ADDR_BITS, "rd_hi": _SPAN + ADDR_BITS - 2 * DIM_BITS,  # memory the load reads
    "wr_lo": ADDR_BITS, "wr_hi": _SPAN + ADDR_BITS - 2 * DIM_BITS,  # memory the command writes
    "fire": 1,                              # it writes the buffer (its squeeze): no load beside that
    "pool": 1,                              # its load reads the buffer (pool on load)
})


def _cdiv_pow2(x, n):
    return (x + (n - 1)) >> (n.bit_length() - 1)


class _Views:
    """The command bits seen through each opcode's layout, and the FIRE channel-block counts."""

    def __init__(self, m, cmd, rows):
        self.opcode = Signal(4)
        m.d.comb += self.opcode.eq(cmd[:4])
        self.conv = data.View(ConvCmd, cmd[:ConvCmd.size])
        self.fire = data.View(FireCmd, cmd[:FireCmd.size])
        self.pool = data.View(PoolCmd, cmd[:PoolCmd.size])
        self.gap = data.View(GapCmd, cmd[:GapCmd.size])
        self.load = self.conv.load  # the load spec sits at the same place in every layout
        fire = self.fire
        self.squeeze_cb, self.expand1_cb, self.expand3_cb = Signal(CB_BITS), Signal(CB_BITS), Signal(CB_BITS)
        m.d.comb += [self.squeeze_cb.eq(_cdiv_pow2(fire.squeeze, rows)),
                     self.expand1_cb.eq(_cdiv_pow2(fire.expand1, rows)),
                     self.expand3_cb.eq(_cdiv_pow2(fire.expand3, rows))]
        is_fire = self.opcode == Opcode.FIRE
        is_pool = self.opcode == Opcode.POOL
        self.pooled_h = Mux(is_pool, self.pool.out_h, Mux(is_fire, fire.in_h, self.conv.in_h))
        self.pooled_w = Mux(is_pool, self.pool.out_w, Mux(is_fire, fire.in_w, self.conv.in_w))


class CommandProducts(wiring.Component):
    """The products of ``cmd`` (:data:`ProductsLayout`), one after the other on one serial multiplier
    (12-13 cycles each) while ``run`` is high; ``done`` is high in the cycle the last is written."""

    def __init__(self, config: EngineConfig):
        self._cfg = config
        super().__init__({"cmd": In(CMD_BITS), "run": In(1), "products": Out(ProductsLayout), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cmd = _Views(m, self.cmd, self._cfg.rows)
        ld, fire, conv, out = cmd.load, cmd.fire, cmd.conv, self.products
        is_fire = cmd.opcode == Opcode.FIRE
        is_pool, is_gap = cmd.opcode == Opcode.POOL, cmd.opcode == Opcode.GAP
        dst_pix = Mux(is_pool, cmd.pool.dst_pix, conv.dst_pix)
        products = [
            (out.src_pixels, ld.src_rows, ld.src_w),
            (out.src_words, out.src_pixels, ld.cb),
            (out.pooled_pixels, cmd.pooled_h, cmd.pooled_w),
            (out.pooled_words, out.pooled_pixels, ld.cb),
            (out.squeeze_words, out.pooled_pixels, Mux(is_fire, cmd.squeeze_cb, 0)),
            (out.row_words, cmd.pooled_w, ld.cb),
            (out.squeeze_row_words, fire.in_w, cmd.squeeze_cb),
            (out.out_pixels, Mux(is_fire, fire.out_h, conv.out_h), Mux(is_fire, fire.in_w, conv.out_w)),
            (out.read_span, out.src_pixels, Mux(ld.src_pix == 0, ld.cb, ld.src_pix)),
            (out.write_span, Mux(is_gap, ld.cb, Mux(is_pool, out.pooled_pixels, out.out_pixels)),
             Mux(is_gap, 1, Mux(is_fire, cmd.expand1_cb + cmd.expand3_cb, dst_pix))),
        ]
        m.submodules.mul = mul = SerialMultiplier(2 * DIM_BITS, CB_BITS + 1)
        index = Signal(range(len(products)))
        started = Signal()
        with m.If(self.run), m.Switch(index):
            for i, (dest, a, b) in enumerate(products):
                with m.Case(i):
                    with m.If(mul.done & ~started):
                        m.d.comb += [mul.start.eq(1), mul.a.eq(a), mul.b.eq(b)]
                        m.d.sync += started.eq(1)
                    with m.Elif(mul.done):
                        m.d.sync += [dest.eq(mul.p), started.eq(0)]
                        if i + 1 < len(products):
                            m.d.sync += index.eq(i + 1)
                        else:
                            m.d.sync += index.eq(0)
                            m.d.comb += self.done.eq(1)
        return m


class CommandRegions(wiring.Component):
    """Where ``cmd`` works (:data:`RegionsLayout`), from the command and its ``products`` (combinational)."""

    def __init__(self, config: EngineConfig):
        self._cfg = config
        super().__init__({"cmd": In(CMD_BITS), "products": In(ProductsLayout), "regions": Out(RegionsLayout)})

    def elaborate(self, platform):
        m = Module()
        cmd = _Views(m, self.cmd, self._cfg.rows)
        ld, fv, products, o = cmd.load, cmd.fire, self.products, self.regions
        is_fire = cmd.opcode == Opcode.FIRE
        dst = Mux(is_fire, fv.dst, Mux(cmd.opcode == Opcode.POOL, cmd.pool.dst,
                                       Mux(cmd.opcode == Opcode.GAP, cmd.gap.dst, cmd.conv.dst)))
        m.d.comb += [
            o.band_lo.eq(ld.ibuf), o.band_hi.eq(ld.ibuf + Mux(ld.pool, products.pooled_words, products.src_words)),
            # Empty ranges are [0, 0): nothing starts below 0, so they meet nothing.
            o.sq_lo.eq(Mux(is_fire, fv.sq_ibuf, 0)), o.sq_hi.eq(Mux(is_fire, fv.sq_ibuf + products.squeeze_words, 0)),
            o.rd_lo.eq(ld.src), o.rd_hi.eq(ld.src + products.read_span),
            o.wr_lo.eq(dst), o.wr_hi.eq(dst + products.write_span),
            o.fire.eq(is_fire), o.pool.eq(ld.pool),
        ]
        return m


class CommandChecker(wiring.Component):
    """The decoder's rules on ``cmd`` and its ``products``: each rule's condition is registered on
    ``sample``, the first that holds is encoded into ``error`` on ``encode`` (the next cycle)."""

    def __init__(self, config: EngineConfig):
        self._cfg = config
        super().__init__({"cmd": In(CMD_BITS), "products": In(ProductsLayout), "sample": In(1), "encode": In(1),
                          "error": Out(ErrorCode)})

    def elaborate(self, platform):
        m = Module()
        rules = self._rules(_Views(m, self.cmd, self._cfg.rows))
        flags = [Signal(name=f"rule{i}_{code.name.lower()}") for i, (_, code) in enumerate(rules)]
        with m.If(self.sample):
            m.d.sync += [flags[i].eq(cond) for i, (cond, _) in enumerate(rules)]
        with m.If(self.encode):
            m.d.sync += self.error.eq(ErrorCode.NONE)
            for i, (_, code) in reversed(list(enumerate(rules))):
                with m.If(flags[i]):
                    m.d.sync += self.error.eq(code)
        return m

    def _rules(self, cmd):
        """The rules, in priority order: ``[(condition, ErrorCode), ...]``.

        The same rules as :func:`hw.isa.check_command`. Conditions of different opcodes exclude
        each other, so one flat list keeps the order of the nested specification.
        """
        cfg = self._cfg
        R, depth, A = cfg.rows, cfg.ibuf_depth, cfg.mem_addr_bits
        opcode, cv, fv, pv, gv, ld = cmd.opcode, cmd.conv, cmd.fire, cmd.pool, cmd.gap, cmd.load
        products = self.products

        def addr_ok(a):
            return (a >> A) == 0 if A < 32 else Const(1)

        ld_end = ld.ibuf + Mux(ld.pool, products.pooled_words, products.src_words)
        is_conv, is_fire = opcode == Opcode.CONV, opcode == Opcode.FIRE
        is_pool, is_gap = opcode == Opcode.POOL, opcode == Opcode.GAP
        known = is_conv | is_fire | is_pool | is_gap
        pool_bad = ld.pool & (((ld.pool_k != 2) & (ld.pool_k != 3)) | (ld.pool_pad_t > 1) | (ld.pool_pad_l > 1)
                              | (ld.cb > cfg.pool_max_cb))
        # Without pooling, the buffer tensor is the band as loaded.
        conv_shape_bad = ~ld.pool & ((cv.in_h != ld.src_rows) | (cv.in_w != ld.src_w))
        fire_shape_bad = (~ld.pool & ((fv.in_h != ld.src_rows) | (fv.in_w != ld.src_w))) \
            | (fv.out_h + fv.halo_top > fv.in_h) | (fv.in_h > fv.out_h + fv.halo_top + 1)
        sq_end = fv.sq_ibuf + products.squeeze_words
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
            (is_conv & ((cv.sy == 0) | (cv.sy > MAX_STRIDE) | (cv.sx == 0) | (cv.sx > MAX_STRIDE)), E.BAD_STRIDE),
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


class MicroOpDecoder(wiring.Component):
    """The operations ``cmd`` gives the units (combinational): ``load``, ``store``, ``gap``, and
    ``conv`` for ``conv_stage`` (0 CONV; FIRE's 1 squeeze, 2 expand 1x1, 3 expand 3x3)."""

    def __init__(self, config: EngineConfig):
        self._cfg = config
        super().__init__({
            "cmd": In(CMD_BITS), "products": In(ProductsLayout), "conv_stage": In(2),
            "load": Out(LoadOp), "conv": Out(ConvOp), "store": Out(StoreOp), "gap": Out(GapOp),
        })

    def elaborate(self, platform):
        m = Module()
        cmd = _Views(m, self.cmd, self._cfg.rows)
        ld, pv, gv, products = cmd.load, cmd.pool, cmd.gap, self.products
        o = self.load
        m.d.comb += [
            o.src.eq(ld.src), o.src_rows.eq(ld.src_rows), o.src_w.eq(ld.src_w), o.cb.eq(ld.cb),
            o.src_pix.eq(ld.src_pix),
            o.ibuf.eq(ld.ibuf), o.pool.eq(ld.pool), o.pool_k.eq(ld.pool_k),
            o.pool_pad_t.eq(ld.pool_pad_t), o.pool_pad_l.eq(ld.pool_pad_l),
            o.out_h.eq(cmd.pooled_h), o.out_w.eq(cmd.pooled_w),
            o.n_words.eq(products.src_words), o.orw.eq(products.row_words),
        ]
        conv_ops = [self._conv_op(m, cmd, stage) for stage in range(4)]
        with m.Switch(self.conv_stage):
            for stage in range(4):
                with m.Case(stage):
                    m.d.comb += self.conv.eq(conv_ops[stage])
        m.d.comb += [
            self.store.src.eq(ld.ibuf), self.store.n_pix.eq(products.pooled_pixels), self.store.cb.eq(ld.cb),
            self.store.dst.eq(pv.dst), self.store.dst_pix.eq(pv.dst_pix),
            self.gap.src.eq(ld.ibuf), self.gap.n_pix.eq(products.src_pixels), self.gap.cb.eq(ld.cb),
            self.gap.dst.eq(gv.dst), self.gap.m0.eq(gv.m0), self.gap.shift.eq(gv.shift),
            self.gap.zp_in.eq(gv.zp_in), self.gap.zp_out.eq(gv.zp_out),
        ]
        return m

    def _conv_op(self, m, cmd, stage):
        """The convolution of ``stage`` (0 CONV, 1 FIRE squeeze, 2 FIRE expand 1x1, 3 FIRE expand 3x3)."""
        ld, cv, fv, products = cmd.load, cmd.conv, cmd.fire, self.products
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
                o.row_words.eq(products.row_words), o.n_pix.eq(products.out_pixels),
            ]
            return o
        common = [o.in_w.eq(fv.in_w), o.in_h.eq(fv.in_h), o.sy.eq(1), o.sx.eq(1), o.dil.eq(1),
                  o.out_w.eq(fv.in_w)]
        if stage == 1:
            m.d.comb += common + [
                o.in_base.eq(ld.ibuf), o.in_cb.eq(ld.cb), o.kh.eq(1), o.kw.eq(1),
                o.pad_t.eq(0), o.pad_l.eq(0), o.out_h.eq(fv.in_h), o.cout.eq(fv.squeeze),
                o.zp_in.eq(fv.zp_in), o.zp_out.eq(fv.zp_sq), o.act_min.eq(fv.sq_min), o.act_max.eq(fv.sq_max),
                o.wblob.eq(fv.w_sq), o.dst.eq(fv.sq_ibuf), o.dst_ibuf.eq(1), o.dst_pix.eq(cmd.squeeze_cb),
                o.row_words.eq(products.row_words), o.n_pix.eq(products.pooled_pixels),
            ]
        else:
            k = 1 if stage == 2 else 3
            m.d.comb += common + [
                o.in_base.eq(fv.sq_ibuf), o.in_cb.eq(cmd.squeeze_cb), o.kh.eq(k), o.kw.eq(k),
                o.pad_t.eq((k // 2) - fv.halo_top), o.pad_l.eq(k // 2),
                o.out_h.eq(fv.out_h), o.cout.eq(fv.expand1 if stage == 2 else fv.expand3),
                o.zp_in.eq(fv.zp_sq), o.zp_out.eq(fv.zp_out), o.act_min.eq(fv.out_min),
                o.act_max.eq(fv.out_max),
                o.wblob.eq(fv.w_e1 if stage == 2 else fv.w_e3),
                o.dst.eq(fv.dst if stage == 2 else fv.dst + cmd.expand1_cb), o.dst_ibuf.eq(0),
                o.dst_pix.eq(cmd.expand1_cb + cmd.expand3_cb),
                o.row_words.eq(products.squeeze_row_words), o.n_pix.eq(products.out_pixels),
            ]
        return o
