"""The convolution operation and its plan: the loop bounds and address steps derived from it once."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..isa import ADDR_BITS, CB_BITS, DIM_BITS, IBUF_ADDR_BITS, EngineConfig

__all__ = ["ConvOp", "BUF_ADDR_BITS", "plan_layout", "ConvPlanner", "small_mul", "log2_exact"]

#: A convolution as the unit runs it (band-local geometry; the sequencer derives it from a command).
ConvOp = data.StructLayout({
    "in_base": IBUF_ADDR_BITS,
    "in_h": DIM_BITS, "in_w": DIM_BITS, "in_cb": CB_BITS,
    "kh": 3, "kw": 3, "sy": 3, "sx": 3, "dil": 3,
    "pad_t": signed(4), "pad_l": 3,
    "out_h": DIM_BITS, "out_w": DIM_BITS, "cout": DIM_BITS,
    "zp_in": signed(8), "zp_out": signed(8), "act_min": signed(8), "act_max": signed(8),
    "wblob": ADDR_BITS,
    "dst": ADDR_BITS, "dst_ibuf": 1, "dst_pix": CB_BITS,
    # Products the sequencer computes once for the unit (one shared multiplier in the engine):
    "row_words": DIM_BITS + CB_BITS,     # in_w * in_cb
    "n_pix": 2 * DIM_BITS,               # out_h * out_w
})

#: Width of the buffer address arithmetic. It wraps modulo 2**16: a tap that is inside the band has
#: an address below ibuf_depth <= 2**16, and a modular sum of the right terms is the right address;
#: taps outside the band are recognised from their row and column, never from their address.
BUF_ADDR_BITS = IBUF_ADDR_BITS


def small_mul(x, k, k_bits):
    """``x * k`` for a narrow ``k`` as a sum of shifted copies: adders only, never a DSP."""
    terms = [Mux(k[i], x << i, 0) for i in range(k_bits)]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def log2_exact(n):
    """log2 of a power of two."""
    assert n & (n - 1) == 0
    return n.bit_length() - 1


def plan_layout(config: EngineConfig) -> data.StructLayout:
    """What :class:`ConvPlanner` derives from a :data:`ConvOp` (buffer steps are in words)."""
    P, G = config.acc_depth, config.groups
    return data.StructLayout({
        "n_kt": 16,                           # weight tiles per output tile: kh * kw * in_cb
        "tap_x_step": BUF_ADDR_BITS,          # dil * in_cb: from one kernel column to the next
        "tap_y_step": BUF_ADDR_BITS,          # dil * row_words: from one kernel row to the next
        "tap_x0": signed(BUF_ADDR_BITS),      # -pad_l * in_cb: the first kernel column's offset
        "tap_y0": signed(BUF_ADDR_BITS),      # -pad_t * row_words: the first kernel row's offset
        "pixel_step": BUF_ADDR_BITS,          # sx * in_cb: from one output pixel to the next
        "row_step": BUF_ADDR_BITS,            # sy * row_words: from one output row to the next
        "n_cot": DIM_BITS,                    # output-channel tiles
        "passes_per_cot": 2 * DIM_BITS,       # pixel runs (passes) per output-channel tile
        "last_pass_pixels": range(P + 1),     # pixels of the last pass
        "last_tile_groups": range(G + 1),     # output words per pixel of the last output-channel tile
        "blob_cot_words": ADDR_BITS,          # weight-blob words per output-channel tile
    })


class ConvPlanner(wiring.Component):
    """Derives the :func:`plan_layout` of ``op`` in five cycles after ``start``, one adder chain per cycle.

    ``init`` is high for one cycle, five cycles after ``start``, when every field of ``plan`` holds:
    the other parts reset their state on it.
    ``op`` must be held steady.
    """

    def __init__(self, config: EngineConfig):
        self._cfg = config
        super().__init__({
            "op": In(ConvOp),
            "start": In(1),
            "plan": Out(plan_layout(config)),
            "init": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, C, P, G = cfg.rows, cfg.cols, cfg.acc_depth, cfg.groups
        op, plan = self.op, self.plan
        kernel_taps = Signal(6)
        out_blocks = Signal(DIM_BITS)
        with m.FSM(name="plan"):
            with m.State("IDLE"), m.If(self.start):
                m.next = "STEP0"
            with m.State("STEP0"):
                m.d.sync += [
                    kernel_taps.eq(small_mul(op.kh, op.kw, 3)),
                    out_blocks.eq((op.cout + (R - 1)) >> log2_exact(R)),
                    plan.n_cot.eq((op.cout + (C - 1)) >> log2_exact(C)),
                    plan.tap_x_step.eq(small_mul(op.in_cb, op.dil, 3)),
                    plan.tap_x0.eq(-small_mul(op.in_cb, op.pad_l, 3)),
                    plan.pixel_step.eq(small_mul(op.in_cb, op.sx, 3)),
                ]
                m.next = "STEP1"
            with m.State("STEP1"):
                m.d.sync += [plan.n_kt.eq(small_mul(op.in_cb, kernel_taps, 6)),
                             plan.last_tile_groups.eq(((out_blocks - 1) & (G - 1)) + 1)]
                m.next = "STEP2"
            with m.State("STEP2"):
                m.d.sync += [
                    plan.tap_y_step.eq(small_mul(op.row_words, op.dil, 3)),
                    plan.row_step.eq(small_mul(op.row_words, op.sy, 3)),
                    plan.blob_cot_words.eq(cfg.param_words + (plan.n_kt << log2_exact(C))),
                    # pad_t is signed: -pad_t * row_words
                    plan.tap_y0.eq(Mux(op.pad_t < 0, small_mul(op.row_words, (-op.pad_t)[:4], 4),
                                       -small_mul(op.row_words, op.pad_t.as_unsigned()[:3], 3))),
                ]
                m.next = "STEP3"
            with m.State("STEP3"):
                m.d.sync += [plan.passes_per_cot.eq((op.n_pix + (P - 1)) >> log2_exact(P)),
                             plan.last_pass_pixels.eq(((op.n_pix - 1) & (P - 1)) + 1)]
                m.next = "INIT"
            with m.State("INIT"):
                m.d.comb += self.init.eq(1)
                m.next = "IDLE"
        return m
