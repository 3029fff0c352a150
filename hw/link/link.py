"""The whole link on the board side: UART pins in and out, CSR and memory initiators."""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.bus import CsrSignature

from .bridge import LinkBridge
from .uart import UARTRx, UARTTx

__all__ = ["UARTLink"]


class UARTLink(wiring.Component):
    """UART receiver -> FIFO -> :class:`~hw.link.bridge.LinkBridge` -> UART transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (``clk_hz / baud``).
    rx_fifo : int
        Bytes of request buffered while the bridge waits (for the memory, or
        while it answers).
    **bridge
        The :class:`~hw.link.bridge.LinkBridge` parameters (``word_bytes``,
        ``addr_bits``, ``mem_words``, ``frame_timeout``, ``board``,
        ``clk_hz``, ``baud``).

    Members
    -------
    rx : ``In(1)``
        The line from the host (idle high).
    tx : ``Out(1)``
        The line to the host.
    csr : ``Out(CsrSignature)``, mem : ``Out(MemPortSignature)``
        The bridge's initiators.
    active : ``Out(1)``
        A frame is being received or answered.
    errors : ``Out(1)``
        Strobe: a framing error / line break, or a byte lost to a full FIFO.
    rx_byte : ``Out(1)``
        Strobe: a byte arrived from the host (the board counts the link's traffic with it).
    """

    def __init__(self, *, divisor: int, rx_fifo: int = 16, **bridge):
        self._bridge = LinkBridge(**bridge)
        self._divisor = divisor
        self._rx_fifo = rx_fifo
        self.uart_rx = UARTRx(divisor)
        self.uart_tx = UARTTx(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "csr": Out(CsrSignature),
            "mem": Out(self._bridge.mem.signature),
            "active": Out(1),
            "errors": Out(1),
            "rx_byte": Out(1),
        })

    @property
    def bridge(self) -> LinkBridge:
        return self._bridge

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = self.uart_rx
        m.submodules.uart_tx = tx = self.uart_tx
        m.submodules.bridge = br = self._bridge
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=self._rx_fifo)
        m.d.comb += [
            rx.rx.eq(self.rx), self.tx.eq(tx.tx),
            fifo.w_data.eq(rx.o.payload), fifo.w_en.eq(rx.o.valid), rx.o.ready.eq(fifo.w_rdy),
            br.i.payload.eq(fifo.r_data), br.i.valid.eq(fifo.r_rdy), fifo.r_en.eq(br.i.ready),
            br.abort.eq(rx.error),
            self.active.eq(br.active), self.errors.eq(rx.error | rx.overrun), self.rx_byte.eq(rx.o.valid & fifo.w_rdy),
        ]
        wiring.connect(m, br.o, tx.i)
        wiring.connect(m, br.csr, wiring.flipped(self.csr))
        wiring.connect(m, br.mem, wiring.flipped(self.mem))
        return m
