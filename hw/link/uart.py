"""UART transmitter and receiver (8 data bits, no parity, 1 stop bit, LSB first), as byte streams."""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTTx", "UARTRx", "MIN_DIVISOR"]

#: Fewest clock cycles per bit: the receiver samples the middle of a bit, found from the start bit's edge.
MIN_DIVISOR = 4


class _UART(wiring.Component):
    """What both directions share: the bit time ``divisor`` (clock cycles per bit), checked at once."""

    def __init__(self, divisor: int):
        if not (isinstance(divisor, int) and divisor >= MIN_DIVISOR):
            raise ValueError(f"divisor (clock cycles per bit) must be an integer >= {MIN_DIVISOR}, got {divisor!r}")
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor


class UARTTx(_UART):
    """Serialize bytes: ``i`` stream in, ``tx`` line out (idle high).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (``clk_hz / baud``), at least :data:`MIN_DIVISOR`.

    Timing: a byte taken in cycle ``t`` starts its start bit in ``t + 1`` and
    occupies the line for ``10 * divisor`` cycles; ``i.ready`` is high while
    the line is idle and in the last cycle of a stop bit, so back-to-back
    bytes follow without a gap.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        shreg = Signal(10, init=0x3FF)   # stop bit, data, start bit: shifted out LSB first
        bits = Signal(range(11))
        timer = Signal(range(d))
        # Ready when idle, or in the last cycle of a stop bit: back-to-back bytes have no gap.
        m.d.comb += [self.tx.eq(shreg[0]), self.i.ready.eq((bits == 0) | ((bits == 1) & (timer == 0)))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(self.i.payload << 1 | 1 << 9), bits.eq(10), timer.eq(d - 1)]
        with m.Elif(bits != 0):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(shreg >> 1 | 1 << 9), bits.eq(bits - 1), timer.eq(d - 1)]
        return m


class UARTRx(_UART):
    """Deserialize bytes: ``rx`` line in, ``o`` stream out.

    The line goes through a two-flip-flop synchronizer. A falling edge starts
    a byte; the start bit is checked again in its middle (a shorter glitch is
    ignored), and each bit is sampled in its middle. A byte whose stop bit is
    low (a framing error, or a line break) is dropped with an ``error``
    strobe, and the receiver waits for the line to return high before it
    looks for the next start bit.

    A received byte stays on ``o`` until taken; if the next byte completes
    first, the new one is dropped with an ``overrun`` strobe (the consumer is
    expected to keep up: the link puts a FIFO here).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    error: Out(1)
    overrun: Out(1)

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(d))
        bits = Signal(range(9))
        shreg = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"), m.If(~line):
                m.d.sync += timer.eq(d // 2 - 1)
                m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):   # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(d - 1), bits.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(line << 7 | shreg >> 1), bits.eq(bits + 1), timer.eq(d - 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(~line):
                        m.d.comb += self.error.eq(1)
                        m.next = "BREAK"
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.comb += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"), m.If(line):
                m.next = "IDLE"
        return m
