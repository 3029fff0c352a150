"""Behavioural models the component tests share: a memory with random stalls, a synchronous buffer.

Each returns a process for ``Simulator.add_process``: it samples the DUT's outputs at every clock edge
(``ctx.tick().sample``) and drives its inputs for the next cycle, so the DUT sees a registered model.
"""


def stalling_memory(port, mem: dict, rng=None, *, p_ready: float = 1.0, p_answer: float = 1.0, log: list | None = None):
    """A memory on ``port`` (a :class:`hw.bus.MemPortSignature` interface, the DUT the initiator).

    Reads are answered in order with ``mem[addr]`` (a missing address fails the test: a read outside
    what the test laid out); writes store into ``mem``. Each cycle ``req.ready`` is high with
    probability ``p_ready`` and a pending answer is shown with probability ``p_answer`` (``rng`` None:
    always). The answer waits for ``rsp.ready``. ``log`` (if given) receives every accepted request as
    ``(addr, write, data)``.
    """

    def chance(p):
        return rng is None or rng.random() < p

    async def process(ctx):
        pending = []
        req_ready = rsp_valid = False
        async for _, _, valid, addr, write, wdata, rsp_ready in ctx.tick().sample(
                port.req.valid, port.req.payload.addr, port.req.payload.write, port.req.payload.data,
                port.rsp.ready):
            if valid and req_ready:
                if log is not None:
                    log.append((addr, write, wdata))
                if write:
                    mem[addr] = wdata
                elif addr in mem:
                    pending.append(mem[addr])
                else:
                    raise AssertionError(f"read of address {addr}, which the test did not lay out")
            if rsp_valid and rsp_ready:
                pending.pop(0)
            req_ready = chance(p_ready)
            ctx.set(port.req.ready, req_ready)
            rsp_valid = bool(pending) and chance(p_answer)
            ctx.set(port.rsp.valid, rsp_valid)
            if rsp_valid:
                ctx.set(port.rsp.payload, pending[0])

    return process


def synchronous_buffer(words: dict, ren, raddr, rdata):
    """A read port with one cycle of latency: ``rdata`` holds ``words[raddr]`` the cycle after ``ren``.

    A read of an address missing from ``words`` fails the test.
    """

    async def process(ctx):
        async for _, _, en, addr in ctx.tick().sample(ren, raddr):
            if en:
                assert addr in words, f"buffer read of word {addr}, outside the data laid out"
                ctx.set(rdata, words[addr])

    return process
