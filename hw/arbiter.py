"""Round-robin arbiter sharing one memory port between the engine's initiators."""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .bus import MemPortSignature

__all__ = ["MemArbiter"]


class MemArbiter(wiring.Component):
    """``n`` initiator ports in, one memory port out.

    Each cycle the first requesting initiator at or after the round-robin
    pointer is granted. Reads are tagged with their initiator in a FIFO of
    ``max_reads`` entries (no read is granted while it is full) and answers,
    which come back in order, are routed by it. Writes need no answer.
    Initiators must accept their answers (``rsp.ready``) whenever they have
    reads outstanding; every initiator in this engine reserves room first.
    The ``background`` initiator (an index, or None) is granted only in cycles no other one requests.
    """

    def __init__(self, *, n: int, word_bytes: int, addr_bits: int, max_reads: int = 32,
                 background: int | None = None):
        self._n = n
        self._background = background
        self._max_reads = max_reads
        sig = MemPortSignature(word_bytes, addr_bits)
        members = {f"i{k}": In(sig) for k in range(n)}
        members["o"] = Out(sig)
        super().__init__(members)

    def initiator(self, k):
        return getattr(self, f"i{k}")

    def elaborate(self, platform):
        m = Module()
        n = self._n
        ports = [self.initiator(k) for k in range(n)]
        m.submodules.tags = tags = SyncFIFO(width=max(1, (n - 1).bit_length()), depth=self._max_reads)

        ptr = Signal(range(n))
        eligible = [p.req.valid & (p.req.payload.write | tags.w_stream.ready) for p in ports]
        if self._background is not None:
            others = [e for k, e in enumerate(eligible) if k != self._background]
            busy = others[0]
            for e in others[1:]:
                busy = busy | e
            eligible[self._background] = eligible[self._background] & ~busy
        grant = Signal(range(n))
        any_req = Signal()
        # Priority from the pointer round the ring.
        for off in reversed(range(n)):
            for k in range(n):
                with m.If((ptr == k) & eligible[(k + off) % n]):
                    m.d.comb += [grant.eq((k + off) % n), any_req.eq(1)]

        with m.Switch(grant):
            for k, p in enumerate(ports):
                with m.Case(k):
                    m.d.comb += [self.o.req.payload.eq(p.req.payload), p.req.ready.eq(self.o.req.ready & any_req)]
        m.d.comb += self.o.req.valid.eq(any_req)
        accepted = any_req & self.o.req.ready
        with m.If(accepted):
            m.d.sync += ptr.eq(grant + 1 if n > 1 else 0)
            with m.If(grant == n - 1):
                m.d.sync += ptr.eq(0)
        m.d.comb += [tags.w_stream.payload.eq(grant), tags.w_stream.valid.eq(accepted & ~self.o.req.payload.write)]

        # Answers, in order, to the initiator at the head of the tag FIFO.
        for k, p in enumerate(ports):
            m.d.comb += [p.rsp.payload.eq(self.o.rsp.payload),
                         p.rsp.valid.eq(self.o.rsp.valid & tags.r_stream.valid & (tags.r_stream.payload == k))]
        with m.Switch(tags.r_stream.payload):
            for k, p in enumerate(ports):
                with m.Case(k):
                    m.d.comb += self.o.rsp.ready.eq(tags.r_stream.valid & p.rsp.ready)
        m.d.comb += tags.r_stream.ready.eq(self.o.rsp.valid & self.o.rsp.ready)
        return m
