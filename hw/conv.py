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

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .array import SystolicArray
from .bus import MemPortSignature
from .isa import (
    ACC_BITS,
    ADDR_BITS,
    CB_BITS,
    DIM_BITS,
    IBUF_ADDR_BITS,
    M0_BITS,
    SHIFT_BITS,
    EngineConfig,
    param_tile_layout,
)

__all__ = ["ConvOp", "ConvUnit", "small_mul"]

#: A convolution as the unit runs it (band-local geometry; the sequencer derives it from a command).
ConvOp = data.StructLayout({
    "in_base": IBUF_ADDR_BITS,
    "in_h": DIM_BITS, "in_w": DIM_BITS, "in_cb": CB_BITS,
    "kh": 2, "kw": 2, "sy": 2, "sx": 2, "dil": 3,
    "pad_t": signed(4), "pad_l": 3,
    "out_h": DIM_BITS, "out_w": DIM_BITS, "cout": DIM_BITS,
    "zp_in": signed(8), "zp_out": signed(8), "act_min": signed(8), "act_max": signed(8),
    "wblob": ADDR_BITS,
    "dst": ADDR_BITS, "dst_ibuf": 1, "dst_pix": CB_BITS,
    # Products the sequencer computes once for the unit (one shared multiplier in the engine):
    "row_words": DIM_BITS + CB_BITS,     # in_w * in_cb
    "n_pix": 2 * DIM_BITS,               # out_h * out_w
})

# Width of the buffer address arithmetic. It wraps modulo 2**16: a tap that is inside the band has
# an address below ibuf_depth <= 2**16, and a modular sum of the right terms is the right address;
# taps outside the band are recognised from their row and column, never from their address.
_AW = IBUF_ADDR_BITS


def small_mul(x, k, k_bits):
    """``x * k`` for a narrow ``k`` as a sum of shifted copies: adders only, never a DSP."""
    terms = [Mux(k[i], x << i, 0) for i in range(k_bits)]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _log2(n):
    assert n & (n - 1) == 0
    return n.bit_length() - 1


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
    rq_* : Out, rq_ready : In
        Accumulator vectors to the output path, one ``rows``-wide group per cycle when ``rq_ready``.
    active : Out
        High in every cycle an activation vector with real data enters the array.
    wait_weights, wait_bank : Out
        The feeder is held: the next weight tile has not arrived / the pass's bank is still draining.
    """

    MIN_PASS = 2
    WFIFO_DEPTH = 32
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
            "rq_valid": Out(1),
            "rq_acc": Out(data.ArrayLayout(signed(ACC_BITS), R)),
            "rq_m0": Out(data.ArrayLayout(signed(M0_BITS), R)),
            "rq_shift": Out(data.ArrayLayout(unsigned(SHIFT_BITS), R)),
            "rq_zp": Out(signed(8)),
            "rq_min": Out(signed(8)),
            "rq_max": Out(signed(8)),
            "rq_addr": Out(ADDR_BITS),
            "rq_ibuf": Out(1),
            "rq_ready": In(1),
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
        R, C, P = cfg.rows, cfg.cols, cfg.acc_depth
        G = cfg.groups
        PW = cfg.param_words
        log2C, log2P, log2G, log2R = _log2(C), _log2(P), _log2(G), _log2(R)

        # The operation is not latched: the sequencer holds it steady while the unit is busy.
        op = self.op

        # ---- derived constants (SETUP) -------------------------------------------------------
        row_words = op.row_words            # in_w * in_cb
        n_pix = op.n_pix                    # out_h * out_w
        n_kt = Signal(16)                   # kh * kw * in_cb
        dx = Signal(_AW)                    # dil * in_cb
        dy = Signal(_AW)                    # dil * row_words
        x0 = Signal(signed(_AW))            # -pad_l * in_cb
        y0 = Signal(signed(_AW))            # -pad_t * row_words
        sx_step = Signal(_AW)
        sy_step = Signal(_AW)
        n_cot = Signal(DIM_BITS)
        n_pass_cot = Signal(2 * DIM_BITS)
        last_pass = Signal(range(P + 1))
        groups_last = Signal(range(G + 1))
        blob_cot = Signal(ADDR_BITS)


        # ---- shared state between the feeder, the weight path, the accumulators and the drain ---
        wready = Signal(2)                  # weight buffer b holds the tile the feeder wants next
        cool = [Signal(range(R + C + 8), name=f"cool{b}") for b in range(2)]
        param_ok = Signal(2)                # bank b's parameters hold the next pass's
        bank_busy = Signal(2)               # bank b belongs to a pass not yet drained
        bank_full = Signal(2)               # bank b's pass is accumulated, waiting for/under drain
        desc_layout = data.StructLayout({"npass": range(P + 1), "cot": DIM_BITS, "first": 1,
                                         "groups": range(G + 1)})
        desc = [Signal(desc_layout, name=f"desc{b}") for b in range(2)]
        params = [Signal(param_tile_layout(C), name=f"params{b}") for b in range(2)]

        def bias(b, c):
            return params[b].bias[c]

        def m0(b, c):
            return params[b].m0[c]

        def shift(b, c):
            return params[b].shift[c].value

        # Feeder -> weight loader handshake.
        feed_release = Signal()             # feeder finished a tile in buffer fpar
        fpar = Signal()
        load_done = Signal()                # loader completed a tile in buffer lpar
        lpar = Signal()
        with m.If(feed_release):
            m.d.sync += wready.bit_select(fpar, 1).eq(0)
        with m.If(load_done):
            m.d.sync += wready.bit_select(lpar, 1).eq(1)
        for b in range(2):
            with m.If(feed_release & (fpar == b)):
                m.d.sync += cool[b].eq(R + C + 6)
            with m.Elif(cool[b] != 0):
                m.d.sync += cool[b].eq(cool[b] - 1)

        # ---- feeder FSM ------------------------------------------------------------------------
        cot = Signal(DIM_BITS)
        pass_in_cot = Signal(2 * DIM_BITS)
        npass = Signal(range(P + 1))
        bank = Signal()
        kt = Signal(16)
        ky = Signal(2)
        kx = Signal(2)
        cb = Signal(CB_BITS)
        tky = Signal(signed(8))
        tkx = Signal(signed(8))
        y_off = Signal(signed(_AW))
        x_off = Signal(signed(_AW))
        p = Signal(range(P + 1))

        cursor = data.StructLayout({"oy": DIM_BITS, "ox": DIM_BITS, "iyb": DIM_BITS + 2,
                                    "ixb": DIM_BITS + 2, "paddr": _AW, "rowaddr": _AW})
        cur = Signal(cursor)
        snap = Signal(cursor)

        def origin(target):
            return [target.oy.eq(0), target.ox.eq(0), target.iyb.eq(0), target.ixb.eq(0),
                    target.paddr.eq(op.in_base), target.rowaddr.eq(op.in_base)]

        kt_cycles = Signal(range(P + 1))
        m.d.comb += kt_cycles.eq(Mux(npass < self.MIN_PASS, self.MIN_PASS, npass))

        # F1 registers (address stage) and F2 registers (buffer read stage).
        meta_layout = data.StructLayout({"valid": 1, "p": range(P), "bank": 1, "first": 1, "last": 1,
                                         "pass_end": 1, "wsel": 1})
        f1 = Signal(meta_layout)
        f1_iy = Signal(signed(DIM_BITS + 4))
        f1_ix = Signal(signed(DIM_BITS + 4))
        f1_addr = Signal(signed(_AW))
        f2 = Signal(meta_layout)
        f2_inb = Signal()
        m.d.sync += f1.valid.eq(0)  # default: a bubble unless the FSM issues

        feed_done = Signal()
        draining = Signal()  # the drain FSM is busy (used for the unit's busy/finish)

        with m.FSM(name="feed") as feed_fsm:
            with m.State("IDLE"), m.If(self.start):
                m.next = "SETUP0"
            # Derived constants, a few per cycle so that no path holds more than one adder chain.
            khkw = Signal(4)
            ocb = Signal(DIM_BITS)
            npc = Signal(2 * DIM_BITS)
            with m.State("SETUP0"):
                m.d.sync += [
                    khkw.eq(small_mul(op.kh, op.kw, 2)),
                    ocb.eq((op.cout + (R - 1)) >> log2R),
                    n_cot.eq((op.cout + (C - 1)) >> log2C),
                    dx.eq(small_mul(op.in_cb, op.dil, 3)),
                    x0.eq(-small_mul(op.in_cb, op.pad_l, 3)),
                    sx_step.eq(Mux(op.sx == 2, op.in_cb << 1, op.in_cb)),
                ]
                m.next = "SETUP1"
            with m.State("SETUP1"):
                m.d.sync += [n_kt.eq(small_mul(op.in_cb, khkw, 4)), groups_last.eq(((ocb - 1) & (G - 1)) + 1)]
                m.next = "SETUP2"
            with m.State("SETUP2"):
                m.d.sync += [
                    dy.eq(small_mul(row_words, op.dil, 3)),
                    sy_step.eq(Mux(op.sy == 2, row_words << 1, row_words)),
                    blob_cot.eq(PW + (n_kt << log2C)),
                    # pad_t is signed: -pad_t * row_words
                    y0.eq(Mux(op.pad_t < 0, small_mul(row_words, (-op.pad_t)[:4], 4),
                              -small_mul(row_words, op.pad_t.as_unsigned()[:3], 3))),
                ]
                m.next = "SETUP3"
            with m.State("SETUP3"):
                m.d.sync += [npc.eq((n_pix + (P - 1)) >> log2P), last_pass.eq(((n_pix - 1) & (P - 1)) + 1)]
                m.next = "SETUP4"
            with m.State("SETUP4"):
                m.d.sync += [
                    n_pass_cot.eq(npc),
                    cot.eq(0), pass_in_cot.eq(0), bank.eq(0),
                    npass.eq(Mux(npc == 1, last_pass, P)),
                    *origin(cur), *origin(snap),
                ]
                m.next = "PASS_START"

            with m.State("PASS_START"):
                m.d.comb += self.wait_bank.eq(~param_ok.bit_select(bank, 1))
                with m.If(param_ok.bit_select(bank, 1)):
                    for b in range(2):
                        with m.If(bank == b):
                            m.d.sync += [
                                desc[b].npass.eq(npass), desc[b].cot.eq(cot),
                                desc[b].first.eq(pass_in_cot == 0),
                                desc[b].groups.eq(Mux(cot == n_cot - 1, groups_last, G)),
                            ]
                    m.d.sync += [
                        bank_busy.bit_select(bank, 1).eq(1),
                        kt.eq(0), ky.eq(0), kx.eq(0), cb.eq(0),
                        tky.eq(-op.pad_t), tkx.eq(-op.pad_l),
                        y_off.eq(y0), x_off.eq(x0), p.eq(0),
                    ]
                    m.next = "ISSUE"

            with m.State("ISSUE"):
                can = (p != 0) | wready.bit_select(fpar, 1)
                m.d.comb += self.wait_weights.eq(~can)
                with m.If(can):
                    real = p < npass
                    last_kt = kt == n_kt - 1
                    m.d.sync += [
                        f1.valid.eq(real), f1.p.eq(p), f1.bank.eq(bank), f1.first.eq(kt == 0),
                        f1.last.eq(last_kt), f1.pass_end.eq(last_kt & (p == npass - 1)), f1.wsel.eq(fpar),
                        f1_iy.eq(cur.iyb + tky), f1_ix.eq(cur.ixb + tkx),
                        f1_addr.eq(cur.paddr + y_off + x_off + cb),
                    ]
                    with m.If(real):
                        with m.If(cur.ox == op.out_w - 1):
                            m.d.sync += [cur.ox.eq(0), cur.oy.eq(cur.oy + 1), cur.ixb.eq(0),
                                         cur.iyb.eq(cur.iyb + op.sy), cur.rowaddr.eq(cur.rowaddr + sy_step),
                                         cur.paddr.eq(cur.rowaddr + sy_step)]
                        with m.Else():
                            m.d.sync += [cur.ox.eq(cur.ox + 1), cur.ixb.eq(cur.ixb + op.sx),
                                         cur.paddr.eq(cur.paddr + sx_step)]
                    with m.If(p == kt_cycles - 1):
                        m.d.comb += feed_release.eq(1)
                        m.d.sync += [fpar.eq(~fpar), p.eq(0)]
                        with m.If(last_kt):
                            m.next = "PASS_END"
                        with m.Else():
                            m.d.sync += kt.eq(kt + 1)
                            with m.If(cb == op.in_cb - 1):
                                m.d.sync += cb.eq(0)
                                with m.If(kx == op.kw - 1):
                                    m.d.sync += [kx.eq(0), tkx.eq(-op.pad_l), x_off.eq(x0),
                                                 ky.eq(ky + 1), tky.eq(tky + op.dil), y_off.eq(y_off + dy)]
                                with m.Else():
                                    m.d.sync += [kx.eq(kx + 1), tkx.eq(tkx + op.dil), x_off.eq(x_off + dx)]
                            with m.Else():
                                m.d.sync += cb.eq(cb + 1)
                            # Every tap of the pass walks the same pixels: back to the pass's first.
                            # (The cursor advance above is overridden by this later assignment.)
                            m.d.sync += cur.eq(snap)
                    with m.Else():
                        m.d.sync += p.eq(p + 1)

            with m.State("PASS_END"):
                # The cursor has walked the whole pass once more: it is at the next pass's first pixel.
                m.d.sync += [bank.eq(~bank)]
                with m.If(pass_in_cot == n_pass_cot - 1):
                    m.d.sync += [pass_in_cot.eq(0), cot.eq(cot + 1), *origin(cur), *origin(snap),
                                 npass.eq(Mux(n_pass_cot == 1, last_pass, P))]
                    with m.If(cot == n_cot - 1):
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "PASS_START"
                with m.Else():
                    m.d.sync += [pass_in_cot.eq(pass_in_cot + 1), snap.eq(cur),
                                 npass.eq(Mux(pass_in_cot == n_pass_cot - 2, last_pass, P))]
                    m.next = "PASS_START"

            with m.State("FINISH"):
                m.d.comb += feed_done.eq(1)
                with m.If((bank_busy == 0) & ~draining):
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(~feed_fsm.ongoing("IDLE"))

        # ---- address stage (F1) and buffer read stage (F2) ----------------------------------------
        inb = (f1.valid & (f1_iy >= 0) & (f1_iy < op.in_h) & (f1_ix >= 0) & (f1_ix < op.in_w))
        m.d.comb += [self.ib_raddr.eq(f1_addr[:IBUF_ADDR_BITS]), self.ib_ren.eq(inb)]
        m.d.sync += [f2.eq(f1), f2_inb.eq(inb)]

        # ---- the array ---------------------------------------------------------------------------
        m.submodules.array = array = SystolicArray(rows=R, cols=C, psum_bits=cfg.psum_bits)
        for r in range(R):
            m.d.comb += array.a[r].eq(Mux(f2_inb, self.ib_rdata[8 * r:8 * r + 8].as_signed(), op.zp_in))
        m.d.comb += [array.wsel.eq(f2.wsel), self.active.eq(f2.valid)]

        # Metadata rides a delay line beside the array: m_pre one cycle before the partial sums
        # (to read the accumulator), m_acc with them.
        L = array.latency
        line = [Signal(meta_layout, name=f"meta_d{i}") for i in range(L)]
        m.d.sync += line[0].eq(f2)
        for i in range(1, L):
            m.d.sync += line[i].eq(line[i - 1])
        m_pre, m_acc = line[L - 2], line[L - 1]

        # ---- weight blob reader ------------------------------------------------------------------
        m.submodules.wfifo = wfifo = SyncFIFOBuffered(width=8 * R, depth=self.WFIFO_DEPTH)
        rd_active = Signal()
        rd_cot = Signal(DIM_BITS)
        rd_pass = Signal(2 * DIM_BITS)
        rd_i = Signal(ADDR_BITS)
        rd_base = Signal(ADDR_BITS)
        reserved = Signal(range(self.WFIFO_DEPTH + 2))  # words in the FIFO or in flight
        issue = Signal()
        m.d.comb += [
            self.wmem.req.valid.eq(rd_active & (reserved < self.WFIFO_DEPTH)),
            self.wmem.req.payload.addr.eq(rd_base + rd_i),
            self.wmem.req.payload.write.eq(0),
            issue.eq(self.wmem.req.valid & self.wmem.req.ready),
            self.wmem.rsp.ready.eq(1),
            wfifo.w_data.eq(self.wmem.rsp.payload),
            wfifo.w_en.eq(self.wmem.rsp.valid),
        ]
        m.d.sync += reserved.eq(reserved + issue - wfifo.r_en)
        with m.If(feed_fsm.ongoing("SETUP4")):
            m.d.sync += [rd_active.eq(1), rd_cot.eq(0), rd_pass.eq(0), rd_i.eq(0), rd_base.eq(op.wblob)]
        with m.Elif(issue):
            with m.If(rd_i == blob_cot - 1):
                m.d.sync += rd_i.eq(0)
                with m.If(rd_pass == n_pass_cot - 1):
                    m.d.sync += [rd_pass.eq(0), rd_cot.eq(rd_cot + 1), rd_base.eq(rd_base + blob_cot)]
                    with m.If(rd_cot == n_cot - 1):
                        m.d.sync += rd_active.eq(0)
                with m.Else():
                    m.d.sync += rd_pass.eq(rd_pass + 1)
            with m.Else():
                m.d.sync += rd_i.eq(rd_i + 1)

        # ---- router: parameters to the pass's bank, tiles to the array's weight buffers -----------
        r_i = Signal(ADDR_BITS)       # word within the pass's block
        rbank = Signal()
        lcol = Signal(range(C))
        in_params = r_i < PW
        can_param = ~bank_busy.bit_select(rbank, 1) & ~param_ok.bit_select(rbank, 1)
        can_tile = (lcol != 0) | (~wready.bit_select(lpar, 1) & (Mux(lpar, cool[1], cool[0]) == 0))
        pop = Signal()
        m.d.comb += [pop.eq(wfifo.r_rdy & Mux(in_params, can_param, can_tile)), wfifo.r_en.eq(pop)]
        with m.If(feed_fsm.ongoing("SETUP4")):
            m.d.sync += [r_i.eq(0), rbank.eq(0), lcol.eq(0), lpar.eq(0), fpar.eq(0),
                         wready.eq(0), param_ok.eq(0)]
        with m.Elif(pop):
            with m.If(r_i == blob_cot - 1):
                m.d.sync += [r_i.eq(0), rbank.eq(~rbank)]
            with m.Else():
                m.d.sync += r_i.eq(r_i + 1)
            with m.If(in_params):
                for b in range(2):
                    with m.If(rbank == b):
                        m.d.sync += params[b].as_value().word_select(r_i[:max(1, (PW - 1).bit_length())], 8 * R).eq(
                            wfifo.r_data)
                with m.If(r_i == PW - 1):
                    m.d.sync += param_ok.bit_select(rbank, 1).eq(1)
            with m.Else():
                m.d.comb += [array.w_we.eq(1), array.w_col.eq(lcol), array.w_buf.eq(lpar)]
                m.d.sync += lcol.eq(lcol + 1)
                with m.If(lcol == C - 1):
                    m.d.comb += load_done.eq(1)
                    m.d.sync += lpar.eq(~lpar)
        for r in range(R):
            m.d.comb += array.w_data[r].eq(wfifo.r_data[8 * r:8 * r + 8].as_signed())
        with m.If(feed_fsm.ongoing("PASS_START") & param_ok.bit_select(bank, 1)):
            m.d.sync += param_ok.bit_select(bank, 1).eq(0)

        # ---- accumulator banks -------------------------------------------------------------------
        acc_shape = data.ArrayLayout(signed(ACC_BITS), C)
        banks = []
        for b in range(2):
            mem = Memory(shape=acc_shape, depth=P, init=[])
            m.submodules[f"acc{b}"] = mem
            banks.append((mem.read_port(), mem.write_port()))

        d_state_run = Signal()
        dbank = Signal()
        d_p = Signal(range(P + 1))
        d_g = Signal(range(G + 1))
        d_read = Signal()           # the drain reads its next pixel this cycle
        d_read_addr = Signal(range(P))

        for b, (rp, wp) in enumerate(banks):
            drain_owns = d_state_run & (dbank == b) | bank_full[b]
            with m.If(drain_owns):
                m.d.comb += [rp.addr.eq(d_read_addr), rp.en.eq(d_read)]
            with m.Else():
                m.d.comb += [rp.addr.eq(m_pre.p), rp.en.eq(m_pre.valid & (m_pre.bank == b))]
            m.d.comb += [wp.addr.eq(m_acc.p), wp.en.eq(m_acc.valid & (m_acc.bank == b))]
            for c in range(C):
                base = Mux(m_acc.first, bias(b, c), rp.data[c])
                m.d.comb += wp.data[c].eq(base + array.psum[c])
        with m.If(m_acc.valid & m_acc.pass_end):
            m.d.sync += bank_full.bit_select(m_acc.bank, 1).eq(1)

        # ---- drain: bank -> requantizer, one group of `rows` channels per cycle -------------------
        out_pix = Signal(ADDR_BITS)
        dsel = Signal(desc_layout)
        m.d.comb += dsel.eq(Mux(dbank, desc[1], desc[0]))
        rdata = Signal(acc_shape)
        m.d.comb += rdata.eq(Mux(dbank, banks[1][0].data, banks[0][0].data))
        for k in range(R):
            lane_acc = Signal(signed(ACC_BITS), name=f"lane_acc{k}")
            lane_m0 = Signal(signed(M0_BITS), name=f"lane_m0{k}")
            lane_sh = Signal(SHIFT_BITS, name=f"lane_sh{k}")
            with m.Switch(d_g):
                for g in range(G):
                    with m.Case(g):
                        c = g * R + k
                        m.d.comb += [lane_acc.eq(rdata[c]),
                                     lane_m0.eq(Mux(dbank, m0(1, c), m0(0, c))),
                                     lane_sh.eq(Mux(dbank, shift(1, c), shift(0, c)))]
            m.d.comb += [self.rq_acc[k].eq(lane_acc), self.rq_m0[k].eq(lane_m0), self.rq_shift[k].eq(lane_sh)]
        m.d.comb += [self.rq_zp.eq(op.zp_out), self.rq_min.eq(op.act_min), self.rq_max.eq(op.act_max),
                     self.rq_addr.eq(out_pix + d_g), self.rq_ibuf.eq(op.dst_ibuf)]

        with m.FSM(name="drain") as drain_fsm:
            with m.State("IDLE"), m.If(bank_full.bit_select(dbank, 1)):
                m.d.comb += [d_read.eq(1), d_read_addr.eq(0)]
                m.d.sync += [d_p.eq(0), d_g.eq(0)]
                with m.If(dsel.first):
                    m.d.sync += out_pix.eq(op.dst + (dsel.cot << log2G))
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += d_state_run.eq(1)
                with m.If(self.rq_ready):
                    m.d.comb += self.rq_valid.eq(1)
                    with m.If(d_g == dsel.groups - 1):
                        m.d.sync += [d_g.eq(0), d_p.eq(d_p + 1), out_pix.eq(out_pix + op.dst_pix)]
                        with m.If(d_p == dsel.npass - 1):
                            m.next = "END"
                        with m.Else():
                            m.d.comb += [d_read.eq(1), d_read_addr.eq(d_p + 1)]
                    with m.Else():
                        m.d.sync += d_g.eq(d_g + 1)
            with m.State("END"):
                m.d.sync += [bank_full.bit_select(dbank, 1).eq(0), bank_busy.bit_select(dbank, 1).eq(0),
                             dbank.eq(~dbank)]
                m.next = "IDLE"
        m.d.comb += draining.eq(~drain_fsm.ongoing("IDLE"))
        with m.If(feed_fsm.ongoing("SETUP4")):
            m.d.sync += dbank.eq(0)
        # bank_busy is set by the feeder at PASS_START (above) and cleared here; setting wins a tie.
        return m
