"""The address generator: walks an op's passes, weight tiles and pixels and feeds the array."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..isa import CB_BITS, DIM_BITS, IBUF_ADDR_BITS, EngineConfig
from .plan import BUF_ADDR_BITS, ConvOp, plan_layout

__all__ = ["AddressGenerator", "pass_layout", "vector_meta_layout"]


def pass_layout(config: EngineConfig) -> data.StructLayout:
    """A pass as the accumulator banks need it: its bank, pixels, output-channel tile, output words."""
    return data.StructLayout({"bank": 1, "npass": range(config.acc_depth + 1), "cot": DIM_BITS, "first": 1,
                              "groups": range(config.groups + 1)})


def vector_meta_layout(config: EngineConfig) -> data.StructLayout:
    """What travels beside an activation vector through the array: where its partial sums accumulate."""
    return data.StructLayout({
        "p": range(config.acc_depth),   # pixel within the pass (the accumulator address)
        "bank": 1,
        "first": 1,                     # first weight tile of the pass: start from the bias
        "last": 1,                      # last weight tile of the pass
        "pass_end": 1,                  # the pass's last vector: its bank is complete after it
        "wsel": 1,                      # the array's weight buffer it uses
    })


_Cursor = data.StructLayout({"oy": DIM_BITS, "ox": DIM_BITS, "iyb": DIM_BITS + 2, "ixb": DIM_BITS + 2,
                             "paddr": BUF_ADDR_BITS, "rowaddr": BUF_ADDR_BITS})


#: The weight tile being issued: its kernel tap and input block, the tap's input offsets (rows,
#: columns) and its buffer address offsets.
_Tile = data.StructLayout({"ky": 3, "kx": 3, "cb": CB_BITS, "tap_y": signed(8), "tap_x": signed(8),
                           "y_off": signed(BUF_ADDR_BITS), "x_off": signed(BUF_ADDR_BITS)})


class AddressGenerator(wiring.Component):
    """Issues one activation vector per cycle: for each pass (a run of up to ``acc_depth`` output
    pixels), for each weight tile (tap x input block), every pixel of the pass.

    Two register stages: the tap's buffer address and bounds (read ``ib_*``), then the vector with
    padding lanes at ``zp_in`` on ``vector``/``wsel`` for the array and its metadata on ``issued``.
    A pass starts on a bank whose parameters are loaded (``params_ready``), announced on
    ``pass_start`` and ``bank_claimed``; each tile waits for ``tiles_ready`` and is ``released``
    after its last pixel.
    """

    MIN_PASS = 2

    def __init__(self, config: EngineConfig):
        self._cfg = config
        R = config.rows
        super().__init__({
            "op": In(ConvOp),
            "start": In(1),
            "plan": In(plan_layout(config)),
            "init": In(1),
            "busy": Out(1),
            "tiles_ready": In(2),
            "params_ready": In(2),
            "bank_busy": In(2),
            "draining": In(1),
            "released": Out(stream.Signature(1, always_ready=True)),
            "bank_claimed": Out(stream.Signature(1, always_ready=True)),
            "pass_start": Out(stream.Signature(pass_layout(config), always_ready=True)),
            "ib_raddr": Out(IBUF_ADDR_BITS),
            "ib_ren": Out(1),
            "ib_rdata": In(8 * R),
            "vector": Out(data.ArrayLayout(signed(8), R)),
            "wsel": Out(1),
            "issued": Out(stream.Signature(vector_meta_layout(config), always_ready=True)),
            "wait_weights": Out(1),
            "wait_bank": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        op = self.op
        meta = data.StructLayout({"valid": 1, "info": vector_meta_layout(cfg)})
        stage1 = Signal(meta)               # the address stage
        stage1_iy = Signal(signed(DIM_BITS + 4))
        stage1_ix = Signal(signed(DIM_BITS + 4))
        stage1_addr = Signal(signed(BUF_ADDR_BITS))
        stage2 = Signal(meta)               # the buffer read stage
        stage2_inside = Signal()
        m.d.sync += stage1.valid.eq(0)      # a bubble unless the FSM issues
        self._walk(m, stage1, stage1_iy, stage1_ix, stage1_addr)

        inside = (stage1.valid & (stage1_iy >= 0) & (stage1_iy < op.in_h) & (stage1_ix >= 0)
                  & (stage1_ix < op.in_w))
        m.d.comb += [self.ib_raddr.eq(stage1_addr[:IBUF_ADDR_BITS]), self.ib_ren.eq(inside)]
        m.d.sync += [stage2.eq(stage1), stage2_inside.eq(inside)]
        for r in range(cfg.rows):
            m.d.comb += self.vector[r].eq(Mux(stage2_inside, self.ib_rdata[8 * r:8 * r + 8].as_signed(), op.zp_in))
        m.d.comb += [self.wsel.eq(stage2.info.wsel), self.issued.valid.eq(stage2.valid),
                     self.issued.payload.eq(stage2.info)]
        return m

    def _walk(self, m, stage1, stage1_iy, stage1_ix, stage1_addr):
        """The loop nest as a state machine: issues into the address stage."""
        cfg = self._cfg
        P, G = cfg.acc_depth, cfg.groups
        op, plan = self.op, self.plan
        cot = Signal(DIM_BITS)
        pass_in_cot = Signal(2 * DIM_BITS)
        npass = Signal(range(P + 1))        # pixels of this pass
        bank = Signal()
        tile_buf = Signal()                 # the weight buffer of the tile being issued
        kt = Signal(16)
        tile = Signal(_Tile)
        ky, kx, cb, tap_y, tap_x, y_off, x_off = (tile.ky, tile.kx, tile.cb, tile.tap_y, tile.tap_x, tile.y_off,
                                                  tile.x_off)
        p = Signal(range(P + 1))
        cur = Signal(_Cursor)               # the pixel being issued
        pass_first = Signal(_Cursor)        # the pass's first pixel (every tile walks the same pixels)

        def origin(target):
            return [target.oy.eq(0), target.ox.eq(0), target.iyb.eq(0), target.ixb.eq(0),
                    target.paddr.eq(op.in_base), target.rowaddr.eq(op.in_base)]

        tile_cycles = Signal(range(P + 1))
        m.d.comb += tile_cycles.eq(Mux(npass < self.MIN_PASS, self.MIN_PASS, npass))

        with m.FSM(name="feed") as fsm:
            with m.State("IDLE"), m.If(self.start):
                m.next = "SETUP"
            with m.State("SETUP"), m.If(self.init):
                m.d.sync += [
                    cot.eq(0), pass_in_cot.eq(0), bank.eq(0), tile_buf.eq(0),
                    npass.eq(Mux(plan.passes_per_cot == 1, plan.last_pass_pixels, P)),
                    *origin(cur), *origin(pass_first),
                ]
                m.next = "PASS_START"

            with m.State("PASS_START"):
                ok = self.params_ready.bit_select(bank, 1)
                m.d.comb += self.wait_bank.eq(~ok)
                start = self.pass_start
                m.d.comb += [
                    start.valid.eq(ok), self.bank_claimed.valid.eq(ok), self.bank_claimed.payload.eq(bank),
                    start.payload.bank.eq(bank), start.payload.npass.eq(npass), start.payload.cot.eq(cot),
                    start.payload.first.eq(pass_in_cot == 0),
                    start.payload.groups.eq(Mux(cot == plan.n_cot - 1, plan.last_tile_groups, G)),
                ]
                with m.If(ok):
                    m.d.sync += [
                        kt.eq(0), ky.eq(0), kx.eq(0), cb.eq(0),
                        tap_y.eq(-op.pad_t), tap_x.eq(-op.pad_l),
                        y_off.eq(plan.tap_y0), x_off.eq(plan.tap_x0), p.eq(0),
                    ]
                    m.next = "ISSUE"

            with m.State("ISSUE"):
                can = (p != 0) | self.tiles_ready.bit_select(tile_buf, 1)
                m.d.comb += self.wait_weights.eq(~can)
                with m.If(can):
                    real = p < npass
                    last_kt = kt == plan.n_kt - 1
                    m.d.sync += [
                        stage1.valid.eq(real), stage1.info.p.eq(p), stage1.info.bank.eq(bank),
                        stage1.info.first.eq(kt == 0), stage1.info.last.eq(last_kt),
                        stage1.info.pass_end.eq(last_kt & (p == npass - 1)), stage1.info.wsel.eq(tile_buf),
                        stage1_iy.eq(cur.iyb + tap_y), stage1_ix.eq(cur.ixb + tap_x),
                        stage1_addr.eq(cur.paddr + y_off + x_off + cb),
                    ]
                    with m.If(real):
                        with m.If(cur.ox == op.out_w - 1):
                            m.d.sync += [cur.ox.eq(0), cur.oy.eq(cur.oy + 1), cur.ixb.eq(0),
                                         cur.iyb.eq(cur.iyb + op.sy), cur.rowaddr.eq(cur.rowaddr + plan.row_step),
                                         cur.paddr.eq(cur.rowaddr + plan.row_step)]
                        with m.Else():
                            m.d.sync += [cur.ox.eq(cur.ox + 1), cur.ixb.eq(cur.ixb + op.sx),
                                         cur.paddr.eq(cur.paddr + plan.pixel_step)]
                    with m.If(p == tile_cycles - 1):
                        m.d.comb += [self.released.valid.eq(1), self.released.payload.eq(tile_buf)]
                        m.d.sync += [tile_buf.eq(~tile_buf), p.eq(0)]
                        with m.If(last_kt):
                            m.next = "PASS_END"
                        with m.Else():
                            m.d.sync += kt.eq(kt + 1)
                            self._next_tile(m, tile)
                            # Every tap of the pass walks the same pixels: back to the pass's first.
                            # (The cursor advance above is overridden by this later assignment.)
                            m.d.sync += cur.eq(pass_first)
                    with m.Else():
                        m.d.sync += p.eq(p + 1)

            with m.State("PASS_END"):
                # The cursor has walked the whole pass once more: it is at the next pass's first pixel.
                m.d.sync += bank.eq(~bank)
                with m.If(pass_in_cot == plan.passes_per_cot - 1):
                    m.d.sync += [pass_in_cot.eq(0), cot.eq(cot + 1), *origin(cur), *origin(pass_first),
                                 npass.eq(Mux(plan.passes_per_cot == 1, plan.last_pass_pixels, P))]
                    with m.If(cot == plan.n_cot - 1):
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "PASS_START"
                with m.Else():
                    m.d.sync += [pass_in_cot.eq(pass_in_cot + 1), pass_first.eq(cur),
                                 npass.eq(Mux(pass_in_cot == plan.passes_per_cot - 2, plan.last_pass_pixels, P))]
                    m.next = "PASS_START"

            with m.State("FINISH"), m.If((self.bank_busy == 0) & ~self.draining):
                m.next = "IDLE"

        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))

    def _next_tile(self, m, tile):
        """Advance to the next tap x input block: input block innermost, then kernel column, then row."""
        op, plan = self.op, self.plan
        with m.If(tile.cb == op.in_cb - 1):
            m.d.sync += tile.cb.eq(0)
            with m.If(tile.kx == op.kw - 1):
                m.d.sync += [tile.kx.eq(0), tile.tap_x.eq(-op.pad_l), tile.x_off.eq(plan.tap_x0),
                             tile.ky.eq(tile.ky + 1), tile.tap_y.eq(tile.tap_y + op.dil),
                             tile.y_off.eq(tile.y_off + plan.tap_y_step)]
            with m.Else():
                m.d.sync += [tile.kx.eq(tile.kx + 1), tile.tap_x.eq(tile.tap_x + op.dil),
                             tile.x_off.eq(tile.x_off + plan.tap_x_step)]
        with m.Else():
            m.d.sync += tile.cb.eq(tile.cb + 1)
