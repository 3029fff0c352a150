"""Small reusable gateware blocks."""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SerialMultiplier"]


class SerialMultiplier(wiring.Component):
    """Unsigned shift-and-add multiplier: ``p = a * b`` in ``b_bits`` cycles.

    Used for the handful of products a command needs once (region sizes,
    strides), where a parallel multiplier would waste a DSP or hundreds of LUTs.

    Timing: ``start`` for one cycle with ``a`` and ``b``; ``done`` falls in
    the next cycle and rises again ``b_bits`` cycles later, with ``p`` valid
    until the next ``start``. (``done`` is high while idle: look at it from
    the cycle after ``start`` on.)
    """

    def __init__(self, a_bits: int, b_bits: int):
        self._a_bits, self._b_bits = a_bits, b_bits
        super().__init__({
            "start": In(1),
            "a": In(unsigned(a_bits)),
            "b": In(unsigned(b_bits)),
            "p": Out(unsigned(a_bits + b_bits)),
            "done": Out(1),
        })

    @property
    def cycles(self):
        return self._b_bits

    def elaborate(self, platform):
        m = Module()
        acc = Signal(unsigned(self._a_bits + self._b_bits))
        a = Signal(unsigned(self._a_bits + self._b_bits))
        b = Signal(unsigned(self._b_bits))
        count = Signal(range(self._b_bits + 1))
        busy = Signal()
        m.d.comb += [self.p.eq(acc), self.done.eq(~busy)]
        with m.If(self.start):
            m.d.sync += [acc.eq(0), a.eq(self.a), b.eq(self.b), count.eq(self._b_bits), busy.eq(1)]
        with m.Elif(busy):
            with m.If(b[0]):
                m.d.sync += acc.eq(acc + a)
            m.d.sync += [a.eq(a << 1), b.eq(b >> 1), count.eq(count - 1)]
            with m.If(count == 1):
                m.d.sync += busy.eq(0)
        return m
