"""Reading memory ahead into a FIFO: the part the load unit and the weight reader share."""

from amaranth.hdl import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered

__all__ = ["prefetch_reads"]


def prefetch_reads(m: Module, mem, words, *, active: Value, addr: Value, depth: int, width: int) -> Signal:
    """Reads of ``mem`` at ``addr`` while ``active``, their answers queued in a FIFO read out on ``words``.

    A read is issued only while the FIFO has room for every word in flight (``depth`` words, counted
    from issue to ``words`` taking it), so the answers never wait: ``mem.rsp.ready`` is 1. Returns
    ``issue``, high in a cycle whose read the memory takes (the caller steps ``addr`` on it).
    """
    m.submodules.fifo = fifo = SyncFIFOBuffered(width=width, depth=depth)
    wiring.connect(m, fifo.r_stream, wiring.flipped(words))
    m.d.comb += [fifo.w_stream.valid.eq(mem.rsp.valid), fifo.w_stream.payload.eq(mem.rsp.payload),
                 mem.rsp.ready.eq(1)]
    reserved = Signal(range(depth + 2))  # words in the FIFO or in flight
    issue = Signal()
    m.d.comb += [
        mem.req.valid.eq(active & (reserved < depth)),
        mem.req.payload.addr.eq(addr),
        mem.req.payload.write.eq(0),
        issue.eq(mem.req.valid & mem.req.ready),
    ]
    m.d.sync += reserved.eq(reserved + issue - (words.valid & words.ready))
    return issue
