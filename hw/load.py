"""The load unit: external memory -> activation buffer, optionally max-pooling on the way in.

A band of ``src_rows x src_w`` pixels (``cb`` words each, pixel ``p`` at
``src + p * src_pix``) streams in at up to one word per cycle. In copy mode the words land at
``ibuf + i``. In pool mode (stride 2, kernel 2 or 3, padding 0 or 1, floor or
ceil: the caller chooses ``out_h``/``out_w``) the stream is reduced as it
arrives, so a pooling layer costs no more than reading its input once:

* horizontally, per channel block, a running maximum over the window kept in a
  small state memory indexed by block (``pool_max_cb`` entries);
* vertically, each finished horizontal maximum is merged into its pooled row(s)
  in the activation buffer: the first contributing input row writes, later
  rows read-modify-write. A source row shared by two pooled rows (kernel 3)
  writes both, which costs one extra cycle per emitted word in those rows.

Padding and ceil-mode overhang never win a maximum: they contribute nothing.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bus import MemPortSignature
from .isa import ADDR_BITS, CB_BITS, DIM_BITS, IBUF_ADDR_BITS, EngineConfig

__all__ = ["LoadOp", "LoadUnit"]

LoadOp = data.StructLayout({
    "src": ADDR_BITS,
    "src_rows": DIM_BITS,
    "src_w": DIM_BITS,
    "cb": CB_BITS,
    "src_pix": CB_BITS,  # 0: contiguous
    "ibuf": IBUF_ADDR_BITS,
    "pool": 1,
    "pool_k": 2,
    "pool_pad_t": 2,
    "pool_pad_l": 2,
    "out_h": DIM_BITS,   # pooled rows (pool mode)
    "out_w": DIM_BITS,   # pooled columns (pool mode)
    # Products the sequencer computes once for the unit (one shared multiplier in the engine):
    "n_words": 2 * DIM_BITS + CB_BITS,   # src_rows * src_w * cb: words read
    "orw": DIM_BITS + CB_BITS,           # out_w * cb: words of one pooled row
})


def _vmax(a, b, lanes):
    """Lane-wise signed maximum of two words."""
    out = []
    for r in range(lanes):
        x, y = a[8 * r:8 * r + 8].as_signed(), b[8 * r:8 * r + 8].as_signed()
        out.append(Mux(x > y, x, y)[:8])
    return Cat(*out)


class LoadUnit(wiring.Component):
    """Runs one :data:`LoadOp`.

    Ports
    -----
    op, start, busy
        As for the convolution unit.
    mem : Out(MemPortSignature)
        Reads of the source band.
    ib_we, ib_waddr, ib_wdata, ib_raddr, ib_ren, ib_rdata
        Activation buffer write port and (pool mode) read port.
    """

    FIFO_DEPTH = 16

    def __init__(self, config: EngineConfig):
        self._cfg = config
        R = config.rows
        super().__init__({
            "op": In(LoadOp),
            "start": In(1),
            "busy": Out(1),
            "mem": Out(MemPortSignature(R, config.mem_addr_bits)),
            "ib_we": Out(1),
            "ib_waddr": Out(IBUF_ADDR_BITS),
            "ib_wdata": Out(8 * R),
            "ib_raddr": Out(IBUF_ADDR_BITS),
            "ib_ren": Out(1),
            "ib_rdata": In(8 * R),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R = cfg.rows
        W = 8 * R
        # The operation is not latched: the sequencer holds it steady while the unit is busy.
        op = self.op
        n_words = op.n_words
        orw = op.orw

        # ---- reader -----------------------------------------------------------------------
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=W, depth=self.FIFO_DEPTH)
        rd_active = Signal()
        rd_i = Signal(ADDR_BITS)
        reserved = Signal(range(self.FIFO_DEPTH + 2))
        issue = Signal()
        rd_pix = Signal(ADDR_BITS)    # address of the pixel being read
        rd_cb = Signal(CB_BITS)
        m.d.comb += [
            self.mem.req.valid.eq(rd_active & (reserved < self.FIFO_DEPTH)),
            self.mem.req.payload.addr.eq(rd_pix + rd_cb),
            self.mem.req.payload.write.eq(0),
            issue.eq(self.mem.req.valid & self.mem.req.ready),
            self.mem.rsp.ready.eq(1),
            fifo.w_data.eq(self.mem.rsp.payload),
            fifo.w_en.eq(self.mem.rsp.valid),
        ]
        m.d.sync += reserved.eq(reserved + issue - fifo.r_en)
        with m.If(issue):
            m.d.sync += rd_i.eq(rd_i + 1)
            with m.If(rd_cb == op.cb - 1):
                m.d.sync += [rd_cb.eq(0), rd_pix.eq(rd_pix + Mux(op.src_pix == 0, op.cb, op.src_pix))]
            with m.Else():
                m.d.sync += rd_cb.eq(rd_cb + 1)
            with m.If(rd_i == n_words - 1):
                m.d.sync += rd_active.eq(0)

        consumed = Signal(ADDR_BITS)   # words popped
        pipe_busy = Signal()           # pool pipeline still holds work

        with m.FSM(name="load") as fsm:
            with m.State("IDLE"), m.If(self.start):
                m.next = "START"
            with m.State("START"):
                m.d.sync += [rd_active.eq(1), rd_i.eq(0), rd_pix.eq(op.src), rd_cb.eq(0),
                             consumed.eq(0)]
                m.next = "RUN"
            with m.State("RUN"), m.If((consumed == n_words) & ~pipe_busy):
                m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        running = fsm.ongoing("RUN")

        # ---- copy mode ----------------------------------------------------------------------
        copy_pop = running & ~op.pool & fifo.r_rdy

        # ---- pool mode ----------------------------------------------------------------------------
        # Position of the next word to pop (the stream is rows, then columns, then blocks).
        pos = data.StructLayout({
            "ix": DIM_BITS, "cbi": CB_BITS, "iy": DIM_BITS,
            "j_odd": 1,                  # parity of j = ix + pad_l
            "wj": DIM_BITS + 1,          # j >> 1: the window this column starts or continues
            "wcol": IBUF_ADDR_BITS,      # (j >> 1) * cb
            "wcol_m": IBUF_ADDR_BITS,    # wcol - cb (the window that ends here), kept beside it
            "i_odd": 1,                  # parity of i = iy + pad_t
            "vi": DIM_BITS + 1,          # i >> 1
            "vb": IBUF_ADDR_BITS,        # ibuf + (i >> 1) * out_w * cb (buffer addresses wrap modulo 2**16)
            "vb_m": IBUF_ADDR_BITS,      # vb - out_w * cb (the pooled row above), kept beside it
        })
        nxt = Signal(pos)
        h = Signal(pos)                  # position of the word in H1

        hst = Memory(shape=unsigned(W + 1), depth=cfg.pool_max_cb, init=[])
        m.submodules.hst = hst
        hrd = hst.read_port()
        hwr = hst.write_port()

        adv = Signal()                   # the vertical pipeline moves this cycle
        pool_pop = Signal()
        h_valid = Signal()
        h_word = Signal(W)
        h_second = Signal()              # H1 spends this cycle on its second emission
        last_state = Signal(W + 1)

        with m.If(fsm.ongoing("START")):
            m.d.sync += [nxt.ix.eq(0), nxt.cbi.eq(0), nxt.iy.eq(0), nxt.j_odd.eq(op.pool_pad_l[0]),
                         nxt.wj.eq(0), nxt.wcol.eq(0), nxt.wcol_m.eq(-op.cb), nxt.i_odd.eq(op.pool_pad_t[0]),
                         nxt.vi.eq(0), nxt.vb.eq(op.ibuf), nxt.vb_m.eq(op.ibuf - orw), h_valid.eq(0),
                         h_second.eq(0)]

        # H1 computation on (h, h_word, state).
        state = Signal(W + 1)
        m.d.comb += state.eq(Mux(op.cb == 1, last_state, hrd.data))
        s_val, s_ok = state[:W], state[W]
        v = h_word
        row_end = h.ix == op.src_w - 1
        k3 = op.pool_k == 3
        new_val = Signal(W)
        new_ok = Signal()
        e1 = Signal(W)
        e1_col = Signal(IBUF_ADDR_BITS)
        e1_ok = Signal()
        e2 = Signal(W)
        e2_col = Signal(IBUF_ADDR_BITS)
        e2_ok = Signal()
        merged = Mux(s_ok, _vmax(s_val, v, R), v)
        with m.If(~h.j_odd):
            started = h.wj < op.out_w
            m.d.comb += [new_val.eq(v), new_ok.eq(started & ~row_end)]
            with m.If(k3):
                # j ends window j/2 - 1 (if open) and starts window j/2.
                m.d.comb += [e1.eq(_vmax(s_val, v, R)), e1_col.eq(h.wcol_m + h.cbi), e1_ok.eq(s_ok),
                             e2.eq(v), e2_col.eq(h.wcol + h.cbi), e2_ok.eq(started & row_end)]
            with m.Else():
                m.d.comb += [e1.eq(v), e1_col.eq(h.wcol + h.cbi), e1_ok.eq(started & row_end)]
        with m.Else():
            active = h.wj < op.out_w
            with m.If(k3):
                m.d.comb += [new_val.eq(merged), new_ok.eq(active & ~row_end),
                             e1.eq(merged), e1_col.eq(h.wcol + h.cbi), e1_ok.eq(active & row_end)]
            with m.Else():
                m.d.comb += [e1.eq(merged), e1_col.eq(h.wcol + h.cbi), e1_ok.eq(active), new_ok.eq(0)]

        # Vertical targets of an emission from this source row: A (the pooled row this row ends or
        # continues: merged, or written when the row is its first) and B (the one it starts: written).
        orw_w = Signal(2 * DIM_BITS + 2)
        m.d.comb += orw_w.eq(orw)
        a_prev = ~h.i_odd & k3          # A is pooled row vi - 1
        a_ok = Mux(a_prev, (h.vi != 0) & (h.vi - 1 < op.out_h), h.i_odd & (h.vi < op.out_h))
        a_first = h.iy == 0
        b_ok = ~h.i_odd & (h.vi < op.out_h)
        a_base = Mux(a_prev, h.vb_m, h.vb)

        ev_layout = data.StructLayout({"valid": 1, "val": W, "a_addr": IBUF_ADDR_BITS, "a_ok": 1,
                                       "a_rmw": 1, "b_addr": IBUF_ADDR_BITS, "b_ok": 1,
                                       "a_base": IBUF_ADDR_BITS, "b_base": IBUF_ADDR_BITS, "col": IBUF_ADDR_BITS})
        v0 = Signal(ev_layout)
        v1 = Signal(ev_layout)
        v0_a_addr = Signal(IBUF_ADDR_BITS)
        m.d.comb += v0_a_addr.eq(v0.a_base + v0.col)
        v1_bdone = Signal()              # V1 wrote A last cycle and writes B in this one

        m.d.comb += adv.eq(~(v1.valid & v1.a_ok & v1.b_ok & ~v1_bdone))
        two = e1_ok & e2_ok
        h_done = adv & h_valid & (h_second | ~two)
        m.d.comb += pool_pop.eq(running & op.pool & fifo.r_rdy & (~h_valid | h_done))

        with m.If(adv):
            with m.If(h_valid):
                use2 = h_second | (~e1_ok & e2_ok)
                e_col = Mux(use2, e2_col, e1_col)
                m.d.sync += [
                    v0.valid.eq(e1_ok | e2_ok), v0.val.eq(Mux(use2, e2, e1)),
                    v0.a_base.eq(a_base), v0.b_base.eq(h.vb), v0.col.eq(e_col),
                    v0.a_ok.eq(a_ok), v0.a_rmw.eq(~a_first), v0.b_ok.eq(b_ok),
                    h_second.eq(two & ~h_second),
                ]
            with m.Else():
                m.d.sync += v0.valid.eq(0)
            m.d.sync += [v1.eq(v0), v1.a_addr.eq(v0_a_addr), v1.b_addr.eq(v0.b_base + v0.col), v1_bdone.eq(0)]
        with m.Else():
            m.d.sync += v1_bdone.eq(1)

        m.d.comb += [hwr.addr.eq(h.cbi), hwr.data.eq(Cat(new_val, new_ok)), hwr.en.eq(h_done),
                     hrd.addr.eq(nxt.cbi), hrd.en.eq(pool_pop)]
        with m.If(h_done):
            m.d.sync += last_state.eq(Cat(new_val, new_ok))
        with m.If(pool_pop):
            m.d.sync += [h_valid.eq(1), h_word.eq(fifo.r_data), h.eq(nxt)]
            with m.If(nxt.cbi == op.cb - 1):
                m.d.sync += nxt.cbi.eq(0)
                with m.If(nxt.ix == op.src_w - 1):
                    m.d.sync += [nxt.ix.eq(0), nxt.j_odd.eq(op.pool_pad_l[0]), nxt.wj.eq(0), nxt.wcol.eq(0),
                                 nxt.wcol_m.eq(-op.cb),
                                 nxt.iy.eq(nxt.iy + 1), nxt.i_odd.eq(~nxt.i_odd)]
                    with m.If(nxt.i_odd):  # i becomes even: one more pooled row begins
                        m.d.sync += [nxt.vi.eq(nxt.vi + 1), nxt.vb.eq(nxt.vb + orw_w), nxt.vb_m.eq(nxt.vb)]
                with m.Else():
                    m.d.sync += [nxt.ix.eq(nxt.ix + 1), nxt.j_odd.eq(~nxt.j_odd)]
                    with m.If(nxt.j_odd):
                        m.d.sync += [nxt.wj.eq(nxt.wj + 1), nxt.wcol.eq(nxt.wcol + op.cb), nxt.wcol_m.eq(nxt.wcol)]
            with m.Else():
                m.d.sync += nxt.cbi.eq(nxt.cbi + 1)
        with m.Elif(h_done):
            m.d.sync += h_valid.eq(0)

        # V0: read the pooled word A to merge into. V1: write A (merged or first), then B.
        m.d.comb += [self.ib_raddr.eq(v0_a_addr), self.ib_ren.eq(v0.valid & v0.a_ok & v0.a_rmw)]
        a_new = Mux(v1.a_rmw, _vmax(self.ib_rdata, v1.val, R), v1.val)

        m.d.comb += fifo.r_en.eq(copy_pop | pool_pop)
        with m.If(copy_pop):
            m.d.comb += [self.ib_we.eq(1), self.ib_waddr.eq(op.ibuf + consumed), self.ib_wdata.eq(fifo.r_data)]
        with m.Elif(v1.valid & v1.a_ok & ~v1_bdone):
            m.d.comb += [self.ib_we.eq(1), self.ib_waddr.eq(v1.a_addr), self.ib_wdata.eq(a_new)]
        with m.Elif(v1.valid & v1.b_ok):
            m.d.comb += [self.ib_we.eq(1), self.ib_waddr.eq(v1.b_addr), self.ib_wdata.eq(v1.val)]
        with m.If(copy_pop | pool_pop):
            m.d.sync += consumed.eq(consumed + 1)
        m.d.comb += pipe_busy.eq(h_valid | v0.valid | v1.valid)
        return m
