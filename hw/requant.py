"""Fixed-point requantization, int32 -> int8, bit-exact with ``quant.arith.requantize``.

``out = clamp(zp_out + rdbpot(srdhm(acc, m0), shift), act_min, act_max)`` per
lane, with gemmlowp's rounding written out:

* ``srdhm``: ``(acc * m0 + nudge) / 2**31`` truncated toward zero, ``nudge``
  ``2**30`` for a non-negative product and ``1 - 2**30`` otherwise; the one
  overflowing case ``acc == m0 == -2**31`` saturates to ``2**31 - 1``.
* ``rdbpot``: arithmetic shift right by ``shift`` rounding half away from zero
  (``remainder > (mask >> 1) + (x < 0)``).
"""

from amaranth.hdl import Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .isa import ACC_BITS, ADDR_BITS, M0_BITS, SHIFT_BITS

__all__ = ["Requantizer", "requant_request_layout", "RequantRequestSignature"]


def requant_request_layout(lanes: int) -> data.StructLayout:
    """One vector to requantize and where its int8 word goes: ``lanes`` accumulators with each
    channel's multiplier and shift, the output zero point and clamp, the word address, and whether
    it goes to the activation buffer (1) or to memory (0)."""
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(ACC_BITS), lanes),
        "m0": data.ArrayLayout(signed(M0_BITS), lanes),
        "shift": data.ArrayLayout(unsigned(SHIFT_BITS), lanes),
        "zp_out": signed(8),
        "act_min": signed(8),
        "act_max": signed(8),
        "addr": ADDR_BITS,
        "ibuf": 1,
    })


def RequantRequestSignature(lanes: int) -> stream.Signature:
    """The stream of :func:`requant_request_layout` into the output path.

    Its ``ready`` is a credit: it never depends on ``valid``, and a producer raises ``valid`` only in
    a cycle with ``ready`` (so every vector presented is taken). The producers (the accumulator
    drain, the average pool) would otherwise need a skid register, one more cycle per drain.
    """
    return stream.Signature(requant_request_layout(lanes))


class Requantizer(wiring.Component):
    """``lanes`` parallel requantizers, fully pipelined (one vector per cycle).

    Parameters
    ----------
    lanes : int
        Values per vector.
    user : Shape-castable
        Payload carried alongside each vector with the same latency (addresses, flags).

    Timing
    ------
    A vector presented with ``i_valid`` in cycle ``t`` comes out with
    ``o_valid`` in cycle ``t + latency``. There is no backpressure: the
    producer must know the consumer has room (``latency`` entries in flight).
    ``zp_out``, ``act_min``, ``act_max`` are sampled with the vector.
    """

    #: Pipeline depth: input registers, two partial products, their sum, the nudge, the division
    #: by 2**31, the rounding shift, its rounding increment, zero point and clamp. Short stages so
    #: that no path holds more than one wide adder (100 MHz on ECP5).
    latency = 9

    def __init__(self, *, lanes: int, user=1):
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self._lanes = lanes
        self._user = user
        super().__init__({
            "i_valid": In(1),
            "acc": In(data.ArrayLayout(signed(ACC_BITS), lanes)),
            "m0": In(data.ArrayLayout(signed(M0_BITS), lanes)),
            "shift": In(data.ArrayLayout(unsigned(SHIFT_BITS), lanes)),
            "zp_out": In(signed(8)),
            "act_min": In(signed(8)),
            "act_max": In(signed(8)),
            "i_user": In(user),
            "o_valid": Out(1),
            "o_data": Out(data.ArrayLayout(signed(8), lanes)),
            "o_user": Out(user),
        })

    @property
    def lanes(self):
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        n = self._lanes
        user_width = Shape.cast(self._user).width

        L = self.latency
        # Side data rides along: valid and user through every stage, the shift to stage 5, the zero
        # point and clamp to the last.
        valid = [Signal(name=f"valid_s{i}") for i in range(L)]
        user = [Signal(user_width, name=f"user_s{i}") for i in range(L)]
        zp = [Signal(signed(8), name=f"zp_s{i}") for i in range(L - 1)]
        lo = [Signal(signed(8), name=f"lo_s{i}") for i in range(L - 1)]
        hi = [Signal(signed(8), name=f"hi_s{i}") for i in range(L - 1)]
        sh = [Signal(data.ArrayLayout(unsigned(SHIFT_BITS), n), name=f"sh_s{i}") for i in range(5)]
        m.d.sync += [valid[0].eq(self.i_valid), user[0].eq(self.i_user), zp[0].eq(self.zp_out),
                     lo[0].eq(self.act_min), hi[0].eq(self.act_max), sh[0].eq(self.shift)]
        for i in range(1, L):
            m.d.sync += [valid[i].eq(valid[i - 1]), user[i].eq(user[i - 1])]
        for i in range(1, L - 1):
            m.d.sync += [zp[i].eq(zp[i - 1]), lo[i].eq(lo[i - 1]), hi[i].eq(hi[i - 1])]
        for i in range(1, 5):
            m.d.sync += sh[i].eq(sh[i - 1])

        int_min = Const(-(1 << 31), signed(32))
        for k in range(n):
            # Stage 0: input registers.
            a = Signal(signed(32), name=f"a_{k}")
            b = Signal(signed(32), name=f"b_{k}")
            m.d.sync += [a.eq(self.acc[k]), b.eq(self.m0[k])]
            # Stage 1: two 32x16 partial products (b = b_hi * 2**16 + b_lo, b_lo unsigned), and the
            # saturation case.
            p_lo = Signal(signed(49), name=f"p_lo_{k}")
            p_hi = Signal(signed(48), name=f"p_hi_{k}")
            sat = [Signal(name=f"sat_{k}_{i}") for i in range(3)]
            m.d.sync += [p_lo.eq(a * b[:16]), p_hi.eq(a * b[16:].as_signed()),
                         sat[0].eq((a == int_min) & (b == int_min))]
            # Stage 2: the full product.
            prod = Signal(signed(64), name=f"prod_{k}")
            m.d.sync += [prod.eq((p_hi << 16) + p_lo), sat[1].eq(sat[0])]
            # Stage 3: srdhm's nudge.
            t = Signal(signed(65), name=f"nudged_{k}")
            m.d.sync += [t.eq(prod + Mux(prod >= 0, 1 << 30, 1 - (1 << 30))), sat[2].eq(sat[1])]
            # Stage 4: C division by 2**31 (toward zero), saturation.
            x = Signal(signed(32), name=f"srdhm_{k}")
            q = Mux(t < 0, t + ((1 << 31) - 1), t) >> 31
            m.d.sync += x.eq(Mux(sat[2], (1 << 31) - 1, q[:32]))
            # Stage 5: rdbpot's shift and its rounding decision, round half away from zero.
            e = sh[4][k]
            mask = Signal(unsigned(32), name=f"mask_{k}")
            m.d.comb += mask.eq((Const(1, unsigned(33)) << e) - 1)
            shifted = Signal(signed(32), name=f"shifted_{k}")
            up = Signal(name=f"up_{k}")
            m.d.sync += [shifted.eq(x >> e),
                         up.eq((x.as_unsigned() & mask) > ((mask >> 1) + (x < 0)))]
            # Stage 6: the rounded value.
            y = Signal(signed(33), name=f"rdbpot_{k}")
            m.d.sync += y.eq(shifted + up)
            # Stage 7: output zero point.
            z = Signal(signed(34), name=f"z_{k}")
            m.d.sync += z.eq(y + zp[6])
            # Stage 8: clamp (the clamp is also the fused ReLU).
            out = Signal(signed(8), name=f"out_{k}")
            with m.If(z < lo[7]):
                m.d.sync += out.eq(lo[7])
            with m.Elif(z > hi[7]):
                m.d.sync += out.eq(hi[7])
            with m.Else():
                m.d.sync += out.eq(z[:8])
            m.d.comb += self.o_data[k].eq(out)

        m.d.comb += [self.o_valid.eq(valid[-1]), self.o_user.eq(user[-1])]
        return m
