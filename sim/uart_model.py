"""A UART on cocotb signals: the host's end of the board's serial line (8N1, LSB first).

:class:`UartDriver` drives a pin from a queue of bytes (and line breaks);
:class:`UartMonitor` samples a pin and hands each byte to a callback. Both
count time in clock periods of the design (``bit_steps`` simulator steps per
bit), so the simulated line may run at a few clock cycles per bit: the cost is
Python per bit (a few trigger waits), not per clock.
"""

from __future__ import annotations

import collections

__all__ = ["UartDriver", "UartMonitor", "byte_bits"]


def byte_bits(value: int) -> list[int]:
    """Line levels of one 8N1 character: start bit, 8 data bits LSB first, stop bit."""
    return [0, *((value >> i) & 1 for i in range(8)), 1]


def _runs(levels):
    """[(level, count)] of consecutive equal levels."""
    out = []
    for v in levels:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out


class UartDriver:
    """Drives ``pin`` with queued bytes at ``bit_steps`` simulator steps per bit.

    Items are queued with :meth:`write` (bytes), :meth:`line_break` (the line
    low for some bit times, then idle) and :meth:`marker` (a callback run when
    every item queued before it has been sent: what a serial port's
    ``flush()`` waits for).
    """

    def __init__(self, pin, bit_steps: int):
        from cocotb.triggers import Event

        self.pin = pin
        self.bit_steps = bit_steps
        self.queue: collections.deque = collections.deque()
        self.wake = Event()
        self.sent = 0
        pin.value = 1

    def write(self, data: bytes) -> None:
        self.queue.append(bytes(data))
        self.wake.set()

    def line_break(self, bits: int) -> None:
        self.queue.append(("break", bits))
        self.wake.set()

    def marker(self, callback) -> None:
        self.queue.append(("marker", callback))
        self.wake.set()

    async def run(self):
        from cocotb.triggers import Timer

        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            item = self.queue.popleft()
            if isinstance(item, bytes):
                levels = [b for value in item for b in byte_bits(value)]
                for level, n in _runs(levels):
                    self.pin.value = level
                    await Timer(n * self.bit_steps, "step")
                self.sent += len(item)
            elif item[0] == "break":
                self.pin.value = 0
                await Timer(item[1] * self.bit_steps, "step")
                self.pin.value = 1
                await Timer(2 * self.bit_steps, "step")
            else:
                item[1]()


class UartMonitor:
    """Samples ``pin`` in the middle of each bit; ``on_byte(value)`` per character with a valid stop bit.

    Characters with a low stop bit count in :attr:`framing_errors` and are not delivered.
    """

    def __init__(self, pin, bit_steps: int, on_byte):
        self.pin = pin
        self.bit_steps = bit_steps
        self.on_byte = on_byte
        self.framing_errors = 0
        self.received = 0

    async def run(self):
        from cocotb.triggers import FallingEdge, Timer

        half = self.bit_steps // 2
        while True:
            await FallingEdge(self.pin)
            await Timer(self.bit_steps + half, "step")   # middle of data bit 0
            value = 0
            for i in range(8):
                value |= int(self.pin.value) << i
                await Timer(self.bit_steps, "step")
            if int(self.pin.value):                      # stop bit
                self.received += 1
                self.on_byte(value)
            else:
                self.framing_errors += 1
