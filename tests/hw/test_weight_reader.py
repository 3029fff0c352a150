"""WeightReader alone: the blob words in order, once per pass, under memory stalls and a stalling consumer."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.conv import WeightReader
from hw.isa import EngineConfig


def _expected_words(mem, wblob, blob_cot_words, passes_per_cot, n_cot):
    """The model: each output-channel tile's block, once per pass."""
    return [mem[wblob + cot * blob_cot_words + i]
            for cot in range(n_cot) for _ in range(passes_per_cot) for i in range(blob_cot_words)]


@pytest.mark.parametrize("seed,req_ready_p,rsp_p,take_p", [(1, 1.0, 1.0, 1.0), (2, 0.5, 0.6, 0.7), (3, 0.9, 0.3, 0.4),
                                                            (4, 0.3, 0.9, 0.2)])
def test_reader_streams_the_blob(seed, req_ready_p, rsp_p, take_p):
    cfg = EngineConfig(rows=4, cols=8, acc_depth=16)
    rng = np.random.default_rng(seed)
    wblob, blob_cot_words, passes, n_cot = 300, int(rng.integers(3, 40)), int(rng.integers(1, 4)), 3
    mem = {a: int(rng.integers(0, 1 << 32)) for a in range(wblob, wblob + n_cot * blob_cot_words)}
    want = _expected_words(mem, wblob, blob_cot_words, passes, n_cot)
    dut = WeightReader(cfg)
    got = []
    stalls = {"consumer": 0, "memory": 0}

    async def bench(ctx):
        ctx.set(dut.wblob, wblob)
        ctx.set(dut.plan, {"blob_cot_words": blob_cot_words, "passes_per_cot": passes, "n_cot": n_cot})
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        in_flight = []  # read answers the memory owes, in order
        for _ in range(20 * len(want) + 200):
            # Memory: accepts a request with probability req_ready_p, answers the oldest with rsp_p.
            req_ready = rng.random() < req_ready_p
            rsp_valid = bool(in_flight) and rng.random() < rsp_p
            ctx.set(dut.mem.req.ready, req_ready)
            ctx.set(dut.mem.rsp.valid, rsp_valid)
            ctx.set(dut.mem.rsp.payload, in_flight[0] if rsp_valid else 0)
            take = rng.random() < take_p
            ctx.set(dut.words.ready, take)
            if ctx.get(dut.mem.req.valid):
                assert not ctx.get(dut.mem.req.payload.write), "the reader wrote to memory"
                if req_ready:
                    in_flight.append(mem[ctx.get(dut.mem.req.payload.addr)])
                else:
                    stalls["memory"] += 1
            if rsp_valid:
                assert ctx.get(dut.mem.rsp.ready), "an answer was refused"
                in_flight.pop(0)
            if ctx.get(dut.words.valid):
                if take:
                    got.append(ctx.get(dut.words.payload))
                else:
                    stalls["consumer"] += 1
            await ctx.tick()
            if len(got) == len(want) and not in_flight:
                break
        for _ in range(10):  # nothing more comes
            ctx.set(dut.words.ready, 1)
            assert not ctx.get(dut.mem.req.valid), "the reader reads past the blob"
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    first_bad = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), None)
    assert first_bad is None, f"word {first_bad}: got {got[first_bad]:#x}, expected {want[first_bad]:#x}"
    assert len(got) == len(want), f"{len(got)} words streamed, expected {len(want)}"
    if take_p < 1:
        assert stalls["consumer"] > 0, "the consumer never stalled the stream"
    if req_ready_p < 1:
        assert stalls["memory"] > 0, "the memory never stalled a request"
