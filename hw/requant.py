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
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from quant.arith import ACC_BITS, MAX_SHIFT

__all__ = ["Requantizer"]

_SHIFT_BITS = MAX_SHIFT.bit_length()


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

    latency = 4

    def __init__(self, *, lanes: int, user=1):
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self._lanes = lanes
        self._user = user
        super().__init__({
            "i_valid": In(1),
            "acc": In(data.ArrayLayout(signed(ACC_BITS), lanes)),
            "m0": In(data.ArrayLayout(signed(32), lanes)),
            "shift": In(data.ArrayLayout(unsigned(_SHIFT_BITS), lanes)),
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

        # Stage registers for the per-vector side data.
        valid = [Signal(name=f"valid_s{i}") for i in range(self.latency)]
        user = [Signal(user_width, name=f"user_s{i}") for i in range(self.latency)]
        zp = [Signal(signed(8), name=f"zp_s{i}") for i in range(self.latency - 1)]
        lo = [Signal(signed(8), name=f"lo_s{i}") for i in range(self.latency - 1)]
        hi = [Signal(signed(8), name=f"hi_s{i}") for i in range(self.latency - 1)]
        sh = [Signal(data.ArrayLayout(unsigned(_SHIFT_BITS), n), name=f"sh_s{i}") for i in range(2)]

        m.d.sync += [valid[0].eq(self.i_valid), user[0].eq(self.i_user),
                     zp[0].eq(self.zp_out), lo[0].eq(self.act_min), hi[0].eq(self.act_max),
                     sh[0].eq(self.shift)]
        for i in range(1, self.latency):
            m.d.sync += [valid[i].eq(valid[i - 1]), user[i].eq(user[i - 1])]
        for i in range(1, self.latency - 1):
            m.d.sync += [zp[i].eq(zp[i - 1]), lo[i].eq(lo[i - 1]), hi[i].eq(hi[i - 1])]
        m.d.sync += sh[1].eq(sh[0])

        for k in range(n):
            acc, m0 = self.acc[k], self.m0[k]
            # Stage 1: the full 64-bit product, and the saturation case.
            prod = Signal(signed(64), name=f"prod_{k}")
            sat = Signal(name=f"sat_{k}")
            int_min = Const(-(1 << 31), signed(32))
            m.d.sync += [prod.eq(acc * m0), sat.eq((acc == int_min) & (m0 == int_min))]

            # Stage 2: srdhm = (prod + nudge) / 2**31, C division (toward zero).
            t = Signal(signed(66), name=f"nudged_{k}")
            m.d.comb += t.eq(prod + Mux(prod >= 0, 1 << 30, 1 - (1 << 30)))
            q = Signal(signed(66), name=f"q_{k}")
            m.d.comb += q.eq(Mux(t < 0, t + ((1 << 31) - 1), t) >> 31)
            x = Signal(signed(32), name=f"srdhm_{k}")
            m.d.sync += x.eq(Mux(sat, (1 << 31) - 1, q[:32]))

            # Stage 3: rdbpot, round half away from zero.
            e = sh[1][k]
            mask = Signal(unsigned(32), name=f"mask_{k}")
            m.d.comb += mask.eq((Const(1, unsigned(33)) << e) - 1)
            rem = Signal(unsigned(32), name=f"rem_{k}")
            m.d.comb += rem.eq(x.as_unsigned() & mask)
            thr = Signal(unsigned(33), name=f"thr_{k}")
            m.d.comb += thr.eq((mask >> 1) + (x < 0))
            y = Signal(signed(33), name=f"rdbpot_{k}")
            m.d.sync += y.eq((x >> e) + (rem > thr))

            # Stage 4: output zero point and clamp (the clamp is also the fused ReLU).
            z = Signal(signed(34), name=f"z_{k}")
            m.d.comb += z.eq(y + zp[2])
            out = Signal(signed(8), name=f"out_{k}")
            with m.If(z < lo[2]):
                m.d.sync += out.eq(lo[2])
            with m.Elif(z > hi[2]):
                m.d.sync += out.eq(hi[2])
            with m.Else():
                m.d.sync += out.eq(z[:8])
            m.d.comb += self.o_data[k].eq(out)

        m.d.comb += [self.o_valid.eq(valid[-1]), self.o_user.eq(user[-1])]
        return m
