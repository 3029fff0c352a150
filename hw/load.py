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
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bus import MemPortSignature
from .isa import ADDR_BITS, CB_BITS, DIM_BITS, IBUF_ADDR_BITS, EngineConfig
from .prefetch import prefetch_reads

__all__ = ["LoadOp", "LoadUnit", "BandReader", "PoolOnLoad", "buffer_write_layout"]

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


def buffer_write_layout(config: EngineConfig) -> data.StructLayout:
    """One word written into the activation buffer."""
    return data.StructLayout({"addr": IBUF_ADDR_BITS, "data": 8 * config.rows})


class BandReader(wiring.Component):
    """Reads the ``n_words`` words of ``op``'s band (``cb`` words per pixel, pixel ``p`` at
    ``src + p * src_pix``) from memory into a FIFO, from ``restart`` on; ``words`` is the FIFO's read
    side. It issues a read only when the FIFO has room for every word in flight."""

    FIFO_DEPTH = 16

    def __init__(self, config: EngineConfig):
        self._cfg = config
        super().__init__({
            "op": In(LoadOp),
            "restart": In(1),
            "mem": Out(MemPortSignature(config.rows, config.mem_addr_bits)),
            "words": Out(stream.Signature(8 * config.rows)),
        })

    def elaborate(self, platform):
        m = Module()
        op, mem = self.op, self.mem
        active = Signal()
        word = Signal(ADDR_BITS)
        pixel = Signal(ADDR_BITS)    # address of the pixel being read
        block = Signal(CB_BITS)
        issue = prefetch_reads(m, mem, self.words, active=active, addr=pixel + block, depth=self.FIFO_DEPTH,
                               width=8 * self._cfg.rows)
        with m.If(issue):
            m.d.sync += word.eq(word + 1)
            with m.If(block == op.cb - 1):
                m.d.sync += [block.eq(0), pixel.eq(pixel + Mux(op.src_pix == 0, op.cb, op.src_pix))]
            with m.Else():
                m.d.sync += block.eq(block + 1)
            with m.If(word == op.n_words - 1):
                m.d.sync += active.eq(0)
        with m.If(self.restart):
            m.d.sync += [active.eq(1), word.eq(0), pixel.eq(op.src), block.eq(0)]
        return m


#: Where the next word of a pooled band comes from and goes (the stream is rows, then columns, then blocks).
_PoolPosition = data.StructLayout({
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

def _emission_layout(word_bits: int) -> data.StructLayout:
    """A horizontal maximum on its way into the pooled rows: A (the pooled row the source row ends or
    continues: merged, or written when the row is its first) and B (the one it starts: written)."""
    return data.StructLayout({"valid": 1, "val": word_bits, "a_addr": IBUF_ADDR_BITS, "a_ok": 1, "a_rmw": 1,
                              "b_addr": IBUF_ADDR_BITS, "b_ok": 1, "a_base": IBUF_ADDR_BITS,
                              "b_base": IBUF_ADDR_BITS, "col": IBUF_ADDR_BITS})


class PoolOnLoad(wiring.Component):
    """Max-pools the band's ``words`` as they arrive (see the module docstring): a horizontal stage
    (H1) keeps a running maximum per channel block, a vertical one (V0 reads the pooled word to merge
    into on ``ib_r*``, V1 writes it, then the pooled row the source row starts) emits ``write``.
    ``ib_r*`` is a read-first port (as the engine's buffer): a word V1 writes in the cycle V0 reads it is
    forwarded, so rows merge back to back at one word per cycle.
    ``busy`` while a word is inside; state resets on ``restart``."""

    def __init__(self, config: EngineConfig):
        self._cfg = config
        R = config.rows
        super().__init__({
            "op": In(LoadOp),
            "restart": In(1),
            "words": In(stream.Signature(8 * R)),
            "write": Out(stream.Signature(buffer_write_layout(config), always_ready=True)),
            "ib_raddr": Out(IBUF_ADDR_BITS),
            "ib_ren": Out(1),
            "ib_rdata": In(8 * R),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, W = cfg.rows, 8 * cfg.rows
        v0 = Signal(_emission_layout(W))
        v1 = Signal(_emission_layout(W))
        h_valid = Signal()
        adv = Signal()                   # the vertical pipeline moves this cycle
        self._horizontal(m, v0, h_valid, adv)

        v0_a_addr = Signal(IBUF_ADDR_BITS)
        m.d.comb += v0_a_addr.eq(v0.a_base + v0.col)
        v1_bdone = Signal()              # V1 wrote A last cycle and writes B in this one
        m.d.comb += adv.eq(~(v1.valid & v1.a_ok & v1.b_ok & ~v1_bdone))
        with m.If(adv):
            m.d.sync += [v1.eq(v0), v1.a_addr.eq(v0_a_addr), v1.b_addr.eq(v0.b_base + v0.col), v1_bdone.eq(0)]
        with m.Else():
            m.d.sync += v1_bdone.eq(1)

        # V0: read the pooled word A to merge into. V1: write A (merged or first), then B.
        # Read only in the cycle V0 moves on: the word read is the one V1 merges into next.
        m.d.comb += [self.ib_raddr.eq(v0_a_addr), self.ib_ren.eq(v0.valid & v0.a_ok & v0.a_rmw & adv)]
        write = self.write
        # The buffer's read port is read-first: V0's read in the cycle V1 writes the same word returns the
        # old word. That happens when consecutive emissions merge into one pooled word back to back (rows
        # of one word: one pixel, one channel block), so the write is forwarded to the merge instead.
        fwd = Signal()
        fwd_data = Signal(W)
        with m.If(self.ib_ren):  # the port's data changes only on a read
            m.d.sync += [fwd.eq(write.valid & (write.payload.addr == v0_a_addr)), fwd_data.eq(write.payload.data)]
        a_old = Mux(fwd, fwd_data, self.ib_rdata)
        a_new = Mux(v1.a_rmw, _vmax(a_old, v1.val, R), v1.val)
        with m.If(v1.valid & v1.a_ok & ~v1_bdone):
            m.d.comb += [write.valid.eq(1), write.payload.addr.eq(v1.a_addr), write.payload.data.eq(a_new)]
        with m.Elif(v1.valid & v1.b_ok):
            m.d.comb += [write.valid.eq(1), write.payload.addr.eq(v1.b_addr), write.payload.data.eq(v1.val)]
        m.d.comb += self.busy.eq(h_valid | v0.valid | v1.valid)
        return m

    def _horizontal(self, m, v0, h_valid, adv):
        """H1: the running maximum per channel block; issues into V0 when the vertical stage moves."""
        cfg = self._cfg
        R, W = cfg.rows, 8 * cfg.rows
        op = self.op
        nxt = Signal(_PoolPosition)
        h = Signal(_PoolPosition)        # position of the word in H1
        m.submodules.hst = hst = Memory(shape=unsigned(W + 1), depth=cfg.pool_max_cb, init=[])
        hrd = hst.read_port()
        hwr = hst.write_port()
        h_word = Signal(W)
        h_second = Signal()              # H1 spends this cycle on its second emission
        last_state = Signal(W + 1)
        with m.If(self.restart):
            m.d.sync += [nxt.ix.eq(0), nxt.cbi.eq(0), nxt.iy.eq(0), nxt.j_odd.eq(op.pool_pad_l[0]),
                         nxt.wj.eq(0), nxt.wcol.eq(0), nxt.wcol_m.eq(-op.cb), nxt.i_odd.eq(op.pool_pad_t[0]),
                         nxt.vi.eq(0), nxt.vb.eq(op.ibuf), nxt.vb_m.eq(op.ibuf - op.orw), h_valid.eq(0),
                         h_second.eq(0)]

        state = Signal(W + 1)
        m.d.comb += state.eq(Mux(op.cb == 1, last_state, hrd.data))
        emit = _window_emissions(m, op, h, h_word, state, R)
        new_val, new_ok, e1, e1_col, e1_ok, e2, e2_col, e2_ok = emit
        k3 = op.pool_k == 3
        a_prev = ~h.i_odd & k3          # A is pooled row vi - 1
        a_ok = Mux(a_prev, (h.vi != 0) & (h.vi - 1 < op.out_h), h.i_odd & (h.vi < op.out_h))
        a_first = h.iy == 0
        b_ok = ~h.i_odd & (h.vi < op.out_h)
        a_base = Mux(a_prev, h.vb_m, h.vb)

        two = e1_ok & e2_ok
        h_done = adv & h_valid & (h_second | ~two)
        m.d.comb += self.words.ready.eq(~h_valid | h_done)
        pop = self.words.valid & self.words.ready
        with m.If(adv):
            with m.If(h_valid):
                use2 = h_second | (~e1_ok & e2_ok)
                m.d.sync += [
                    v0.valid.eq(e1_ok | e2_ok), v0.val.eq(Mux(use2, e2, e1)),
                    v0.a_base.eq(a_base), v0.b_base.eq(h.vb), v0.col.eq(Mux(use2, e2_col, e1_col)),
                    v0.a_ok.eq(a_ok), v0.a_rmw.eq(~a_first), v0.b_ok.eq(b_ok),
                    h_second.eq(two & ~h_second),
                ]
            with m.Else():
                m.d.sync += v0.valid.eq(0)

        m.d.comb += [hwr.addr.eq(h.cbi), hwr.data.eq(Cat(new_val, new_ok)), hwr.en.eq(h_done),
                     hrd.addr.eq(nxt.cbi), hrd.en.eq(pop)]
        with m.If(h_done):
            m.d.sync += last_state.eq(Cat(new_val, new_ok))
        with m.If(pop):
            m.d.sync += [h_valid.eq(1), h_word.eq(self.words.payload), h.eq(nxt)]
            _advance_position(m, op, nxt)
        with m.Elif(h_done):
            m.d.sync += h_valid.eq(0)


def _window_emissions(m, op, h, v, state, lanes):
    """What H1 does with word ``v`` at position ``h`` given the block's running maximum ``state``:
    the new running state and up to two emissions (value, window column, valid)."""
    W = 8 * lanes
    s_val, s_ok = state[:W], state[W]
    row_end = h.ix == op.src_w - 1
    k3 = op.pool_k == 3
    new_val, new_ok = Signal(W), Signal()
    e1, e1_col, e1_ok = Signal(W), Signal(IBUF_ADDR_BITS), Signal()
    e2, e2_col, e2_ok = Signal(W), Signal(IBUF_ADDR_BITS), Signal()
    merged = Mux(s_ok, _vmax(s_val, v, lanes), v)
    with m.If(~h.j_odd):
        started = h.wj < op.out_w
        m.d.comb += [new_val.eq(v), new_ok.eq(started & ~row_end)]
        with m.If(k3):
            # j ends window j/2 - 1 (if open) and starts window j/2.
            m.d.comb += [e1.eq(_vmax(s_val, v, lanes)), e1_col.eq(h.wcol_m + h.cbi), e1_ok.eq(s_ok),
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
    return new_val, new_ok, e1, e1_col, e1_ok, e2, e2_col, e2_ok


def _advance_position(m, op, nxt):
    """The position of the word after ``nxt``: next block, then column, then row."""
    orw_w = Signal(2 * DIM_BITS + 2)
    m.d.comb += orw_w.eq(op.orw)
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


class LoadUnit(wiring.Component):
    """Runs one :data:`LoadOp`: a :class:`BandReader` feeds either the copy (word ``i`` to
    ``ibuf + i``) or the :class:`PoolOnLoad`.

    Ports
    -----
    op, start, busy
        As for the convolution unit.
    mem : Out(MemPortSignature)
        Reads of the source band.
    ib_we, ib_waddr, ib_wdata, ib_raddr, ib_ren, ib_rdata
        Activation buffer write port and (pool mode) read port.
    """

    FIFO_DEPTH = BandReader.FIFO_DEPTH

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
        op = self.op  # not latched: the sequencer holds it steady while the unit is busy
        m.submodules.reader = reader = BandReader(cfg)
        m.submodules.pool = pool = PoolOnLoad(cfg)
        wiring.connect(m, wiring.flipped(self.mem), reader.mem)
        consumed = Signal(ADDR_BITS)   # words popped
        with m.FSM(name="load") as fsm:
            with m.State("IDLE"), m.If(self.start):
                m.next = "START"
            with m.State("START"):
                m.d.sync += consumed.eq(0)
                m.next = "RUN"
            with m.State("RUN"), m.If((consumed == op.n_words) & ~pool.busy):
                m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        running = fsm.ongoing("RUN")
        restart = fsm.ongoing("START")
        m.d.comb += [reader.op.eq(op), reader.restart.eq(restart), pool.op.eq(op), pool.restart.eq(restart)]

        # The band's words go to the copy or to the pool, only while running.
        words = reader.words
        m.d.comb += [pool.words.valid.eq(words.valid & running & op.pool), pool.words.payload.eq(words.payload),
                     words.ready.eq(running & Mux(op.pool, pool.words.ready, 1))]
        copy = words.valid & running & ~op.pool
        with m.If(copy):
            m.d.comb += [self.ib_we.eq(1), self.ib_waddr.eq(op.ibuf + consumed), self.ib_wdata.eq(words.payload)]
        with m.Elif(pool.write.valid):
            m.d.comb += [self.ib_we.eq(1), self.ib_waddr.eq(pool.write.payload.addr),
                         self.ib_wdata.eq(pool.write.payload.data)]
        m.d.comb += [self.ib_raddr.eq(pool.ib_raddr), self.ib_ren.eq(pool.ib_ren), pool.ib_rdata.eq(self.ib_rdata)]
        with m.If(words.valid & words.ready):
            m.d.sync += consumed.eq(consumed + 1)
        return m
