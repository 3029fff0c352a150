"""The weight-stationary systolic array.

Dataflow (see ``docs/ARCHITECTURE.md``): PE ``(r, c)`` holds the weight of
input channel ``r`` of the current tile and output channel ``c``, in two
buffers so that the next tile loads while this one computes. An activation
vector (one pixel, ``rows`` input channels) enters on the left, row ``r``
delayed by ``r`` cycles, and moves right one column per cycle together with
the buffer select it was issued with; partial sums move down one row per cycle
and leave the bottom, column ``c`` ``c`` cycles late, where they are
realigned. One vector in per cycle gives one ``cols``-wide partial-sum vector
out per cycle, ``latency`` cycles later.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .mult import Int8Multipliers

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """``rows x cols`` int8 multiply-accumulate array.

    Parameters
    ----------
    rows, cols : int
        Array geometry (>= 1 each).
    psum_bits : int
        Width of the column partial sums; must hold ``rows`` products of int8 x int8.
    mult_family : str or None
        The multipliers' family (:data:`hw.mult.FAMILIES`); ``None``: the platform's
        (:func:`hw.mult.platform_family`: the DSP blocks on an ECP5 or iCE40 UltraPlus board, ``a * w``
        elsewhere). Every family has the same latency and the same products.

    Ports
    -----
    a : In(ArrayLayout(signed(8), rows))
        Activation vector presented in cycle ``t`` (all rows at once; the array skews it).
    wsel : In(1)
        Weight buffer used by this vector.
    w_we, w_col, w_buf, w_data
        Weight load: in a cycle with ``w_we``, column ``w_col`` of buffer
        ``w_buf`` takes ``w_data[r]`` in row ``r``. Loading a buffer while a
        vector that uses it is still inside the array is the caller's hazard.
    psum : Out(ArrayLayout(signed(psum_bits), cols))
        ``sum_r a[r] * w[r][c]`` of the vector presented ``latency`` cycles earlier.
    """

    def __init__(self, *, rows: int, cols: int, psum_bits: int, mult_family: str | None = None):
        if rows < 1 or cols < 1:
            raise ValueError(f"array must be at least 1x1, got {rows}x{cols}")
        if (1 << (psum_bits - 1)) < rows * (1 << 14):
            raise ValueError(f"psum_bits={psum_bits} cannot hold {rows} int8 products")
        self._rows, self._cols, self._psum_bits = rows, cols, psum_bits
        self._mult_family = mult_family
        vec = data.ArrayLayout(signed(8), rows)
        super().__init__({
            "a": In(vec),
            "wsel": In(1),
            "w_we": In(1),
            "w_col": In(range(cols)),
            "w_buf": In(1),
            "w_data": In(vec),
            "psum": Out(data.ArrayLayout(signed(psum_bits), cols)),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @property
    def latency(self):
        """Cycles from a vector on ``a`` to its partial sums on ``psum``."""
        return self._rows + self._cols + Int8Multipliers.latency - 1

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols

        # The data path has no reset (reset_less): its values are only ever read under the control's
        # valid flags, which do reset, and a reset net to every data flip-flop is a fan-out of tens of
        # thousands that nextpnr routes through general routing on ECP5.
        # Input skew: row r sees the vector r cycles late.
        a_in, s_in = [], []
        for r in range(R):
            a, s = self.a[r], self.wsel
            for k in range(r):
                a_d = Signal(signed(8), name=f"skew_a_{r}_{k}", reset_less=True)
                s_d = Signal(name=f"skew_s_{r}_{k}")
                m.d.sync += [a_d.eq(a), s_d.eq(s)]
                a, s = a_d, s_d
            a_in.append(a)
            s_in.append(s)

        psum_prev = [None] * C
        for r in range(R):
            # One multiplier per PE, a row's in one component (on the iCE40 two PEs share a SB_MAC16).
            # The multiplier's input register is the PE's operand register and its output register the
            # product register: it samples the operands the PE's a/s registers take, in the same cycle.
            m.submodules[f"mult_{r}"] = mult = Int8Multipliers(C, family=self._mult_family)
            a_left, s_left = a_in[r], s_in[r]
            for c in range(C):
                a_reg = Signal(signed(8), name=f"a_{r}_{c}", reset_less=True)
                s_reg = Signal(name=f"s_{r}_{c}")
                w0 = Signal(signed(8), name=f"w0_{r}_{c}")
                w1 = Signal(signed(8), name=f"w1_{r}_{c}")
                p = Signal(signed(self._psum_bits), name=f"p_{r}_{c}", reset_less=True)
                m.d.sync += [a_reg.eq(a_left), s_reg.eq(s_left)]
                with m.If(self.w_we & (self.w_col == c)):
                    with m.If(self.w_buf):
                        m.d.sync += w1.eq(self.w_data[r])
                    with m.Else():
                        m.d.sync += w0.eq(self.w_data[r])
                # The weight of the vector arriving from the left: its buffer select is s_left, and the
                # buffer is not loaded while a vector that uses it is inside the array.
                m.d.comb += [mult.a[c].eq(a_left), mult.b[c].eq(Mux(s_left, w1, w0))]
                prod = mult.p[c]
                m.d.sync += p.eq(prod if r == 0 else psum_prev[c] + prod)
                psum_prev[c] = p
                a_left, s_left = a_reg, s_reg

        # Output de-skew: column c leaves c cycles after column 0.
        for c in range(C):
            v = psum_prev[c]
            for k in range(C - 1 - c):
                v_d = Signal(signed(self._psum_bits), name=f"deskew_{c}_{k}", reset_less=True)
                m.d.sync += v_d.eq(v)
                v = v_d
            m.d.comb += self.psum[c].eq(v)
        return m
