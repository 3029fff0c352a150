"""The link bridge's parts alone: ByteReceiver (bytes through under stalls, the cut of a frame) and
RequestChecker (the header checks against hw.link.protocol.check_request)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.link import protocol as P
from hw.link.bridge import ByteReceiver, RequestChecker


@pytest.mark.parametrize("seed,valid_p,ready_p", [(1, 1.0, 1.0), (2, 0.5, 0.5), (3, 0.9, 0.2), (4, 0.2, 0.9)])
def test_byte_receiver_passes_bytes_under_stalls(seed, valid_p, ready_p):
    rng = np.random.default_rng(seed)
    sent = [int(b) for b in rng.integers(0, 256, 60)]
    dut = ByteReceiver(frame_timeout=1000)
    got, seen = [], {"gaps": 0, "refusals": 0}

    async def bench(ctx):
        i = 0
        for _ in range(2000):
            offer = i < len(sent) and rng.random() < valid_p
            seen["gaps"] += i < len(sent) and not offer
            take = rng.random() < ready_p
            ctx.set(dut.i.valid, offer)
            ctx.set(dut.i.payload, sent[i] if offer else 0)
            ctx.set(dut.o.ready, take)
            if offer and ctx.get(dut.i.ready):
                i += 1
            if ctx.get(dut.o.valid):
                if take:
                    got.append(ctx.get(dut.o.payload))
                else:
                    seen["refusals"] += 1
            assert not ctx.get(dut.cut), "a frame was cut while bytes were flowing"
            await ctx.tick()
            if len(got) == len(sent):
                break

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    first_bad = next((k for k, (g, s) in enumerate(zip(got, sent, strict=False)) if g != s), None)
    assert first_bad is None, f"byte {first_bad}: got {got[first_bad]}, sent {sent[first_bad]}"
    assert len(got) == len(sent), f"{len(got)} bytes came through, {len(sent)} were sent"
    if valid_p < 1:
        assert seen["gaps"] > 0
    if ready_p < 1:
        assert seen["refusals"] > 0


def test_byte_receiver_cuts_after_the_timeout_and_on_a_break():
    timeout = 20
    dut = ByteReceiver(frame_timeout=timeout)

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        quiet = 0
        while not ctx.get(dut.cut):
            await ctx.tick()
            quiet += 1
            assert quiet <= timeout + 3, "no cut after the timeout"
        assert quiet >= timeout, f"cut after {quiet} quiet cycles, before the timeout of {timeout}"
        ctx.set(dut.i.valid, 1)  # a byte ends the quiet
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        await ctx.tick()
        assert not ctx.get(dut.cut), "the cut outlived the next byte"
        ctx.set(dut.abort, 1)
        await ctx.tick()
        ctx.set(dut.abort, 0)
        assert ctx.get(dut.cut), "a line break did not cut the frame (one cycle later)"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("word_bytes,mem_words,write_pix", [(8, 1 << 16, False), (2, 300, False), (4, 1 << 23, True),
                                                             (8, 300, True)])
def test_request_checker_matches_the_spec(word_bytes, mem_words, write_pix):
    rng = np.random.default_rng(word_bytes + write_pix)
    ops = [o.value for o in P.Op] + [0, 0x7F, 0xFF]
    headers = []
    for _ in range(300):
        length = int(rng.choice([0, 4, 8, word_bytes, 3 * word_bytes, P.MAX_PAYLOAD, P.MAX_PAYLOAD + word_bytes,
                                 4 * P.MAX_READ_REGS, 4 * P.MAX_READ_REGS + 4, int(rng.integers(0, 1 << 16)),
                                 3, 4095, 4098, 3 * int(rng.integers(1, 1366)), 3 * int(rng.integers(1, 1366)) + 1,
                                 3 * int(rng.integers(1, 1 << 14))]))
        addr = int(rng.choice([0, 1, P.CSR_REGS - 1, P.CSR_REGS, mem_words - 1, mem_words,
                               int(rng.integers(0, 1 << 32)), max(0, mem_words - int(rng.integers(0, 1400)))]))
        headers.append((int(rng.choice(ops)), addr, length))
    # WRITE_PIX at the edges: one pixel, the largest payload, the memory's last words, a byte too many.
    headers += [(P.Op.WRITE_PIX.value, a, n) for a, n in (
        (0, 3), (mem_words - 1, 3), (mem_words - 1, 6), (mem_words, 3), (0, 4095), (0, 4096), (0, 4098),
        (max(0, mem_words - 1365), 4095), (max(0, mem_words - 1364), 4095), (7, 0), (7, 3 * 300 + 2))]
    dut = RequestChecker(word_bytes=word_bytes, mem_words=mem_words, write_pix=write_pix)
    mismatches = []

    async def bench(ctx):
        for op, addr, length in headers:
            ctx.set(dut.header, {"op": op, "seq": 5, "status": 0, "addr": addr, "length": length})
            ctx.set(dut.crc_match, 1)
            ctx.set(dut.sample, 1)
            await ctx.tick()
            ctx.set(dut.sample, 0)
            want = P.check_request(op, addr, length, word_bytes=word_bytes, mem_words=mem_words, write_pix=write_pix)
            got = ctx.get(dut.status)
            if got != want or not ctx.get(dut.crc_ok):
                mismatches.append((op, addr, length, got, want))
            flags = ctx.get(dut.op)
            for o in P.Op:
                if getattr(flags, o.name.lower()) != (op == o.value and (o != P.Op.WRITE_PIX or write_pix)):
                    mismatches.append((op, addr, length, f"op flag {o.name}"))
        ctx.set(dut.crc_match, 0)
        ctx.set(dut.sample, 1)
        await ctx.tick()
        assert not ctx.get(dut.crc_ok), "a header CRC mismatch was not kept"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not mismatches, f"{len(mismatches)} mismatches (op, addr, length, got, expected): {mismatches[:5]}"
    statuses = {P.check_request(o, a, n, word_bytes=word_bytes, mem_words=mem_words, write_pix=write_pix)
                for o, a, n in headers}
    assert len(statuses) == 4, f"the random headers did not reach every outcome: {statuses}"
    if write_pix:
        pix = {P.check_request(o, a, n, word_bytes=word_bytes, mem_words=mem_words, write_pix=True)
               for o, a, n in headers if o == P.Op.WRITE_PIX}
        assert len(pix) == 3, f"the random WRITE_PIX headers did not reach every outcome: {pix}"
