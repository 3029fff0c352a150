"""The engine's two ports, defined once: the memory port and the register (CSR) bus.

Memory port (the engine is the initiator)
    ``req``: a stream of ``MemRequest`` (word address, write flag, data);
    ``rsp``: a stream of read data, one word per read request, in request
    order. The memory may hold ``req.ready`` low and answer any number of
    cycles late; the engine keeps at most a bounded number of reads in flight
    and is always able to take their answers. A write is complete when it is
    accepted: a later read of the same word must return it (a memory with
    posted writes must order them itself).

CSR bus (the host side is the initiator)
    One 32-bit register per index (``hw.isa.Reg``). A write is ``w_stb`` with
    ``addr`` and ``w_data`` for one cycle. A read is ``r_stb`` with ``addr``
    for one cycle; ``r_data`` is valid on the following cycle. There is no
    wait state.

Interrupt
    ``irq`` is a level: high while ``STATUS`` has ``DONE`` or ``ERROR`` set,
    low after ``CTRL.CLEAR`` or the next ``START``.
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["mem_request_layout", "MemPortSignature", "CSR_ADDR_BITS", "CsrSignature"]


def mem_request_layout(word_bytes: int, addr_bits: int) -> data.StructLayout:
    return data.StructLayout({
        "addr": unsigned(addr_bits),
        "write": unsigned(1),
        "data": unsigned(8 * word_bytes),
    })


class MemPortSignature(wiring.Signature):
    """Memory port of ``word_bytes``-byte words, from the initiator's side."""

    def __init__(self, word_bytes: int, addr_bits: int):
        self._word_bytes = word_bytes
        self._addr_bits = addr_bits
        super().__init__({
            "req": Out(stream.Signature(mem_request_layout(word_bytes, addr_bits))),
            "rsp": In(stream.Signature(unsigned(8 * word_bytes))),
        })

    @property
    def word_bytes(self):
        return self._word_bytes

    @property
    def addr_bits(self):
        return self._addr_bits

    def __eq__(self, other):
        return (isinstance(other, MemPortSignature) and other.word_bytes == self.word_bytes
                and other.addr_bits == self.addr_bits)

    def __hash__(self):
        return hash((MemPortSignature, self.word_bytes, self.addr_bits))

    def __repr__(self):
        return f"MemPortSignature({self.word_bytes}, {self.addr_bits})"


CSR_ADDR_BITS = 6

CsrSignature = wiring.Signature({
    "addr": Out(CSR_ADDR_BITS),
    "r_stb": Out(1),
    "w_stb": Out(1),
    "w_data": Out(32),
    "r_data": In(32),
})
