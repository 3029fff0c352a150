"""PoolOnLoad alone: a band's words with random gaps in, the max-pooled band in the buffer out, against
the loop reference; BandReader alone: the band's words in order under memory and consumer stalls."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.isa import EngineConfig
from hw.layout import cdiv, pack_activation, unpack_activation
from hw.load import BandReader, PoolOnLoad

from ..reference import maxpool_reference, pool_out_size


def _word(row):
    return int.from_bytes(row.tobytes(), "little")


#: (kernel, pad_t, pad_l, ceil mode), (channels, rows, columns) on two lanes.
POOL_CASES = [
    *[(p, (5, 7, 6)) for p in [(3, 0, 0, False), (3, 1, 1, True), (2, 0, 0, True), (3, 1, 0, False)]],
    # Rows of one word (one pixel, one channel block): consecutive rows merge into the same pooled word
    # back to back, the merge's read in the very cycle the previous row's write lands.
    *[(p, (c, 6, 1)) for p in [(2, 1, 1, False), (3, 1, 1, False), (3, 1, 1, True)] for c in (1, 2)],
    ((2, 0, 1, True), (2, 7, 1)),
]


@pytest.mark.parametrize("gap_p", [0.0, 0.5], ids=["dense", "gaps"])
@pytest.mark.parametrize("pool,shape", POOL_CASES, ids=lambda p: (
    f"k{p[0]}p{p[1]}{p[2]}{'ceil' if p[3] else 'floor'}" if len(p) == 4 else "x".join(map(str, p))))
def test_pool_on_load(pool, shape, gap_p):
    """The buffer is modelled as the engine's: a read-first port (a read in the cycle of a write to the same
    word returns the old word), the read data held while no read is enabled."""
    cfg = EngineConfig(rows=2, cols=2, ibuf_depth=256, acc_depth=16, pool_max_cb=8)
    R = cfg.rows
    k, pad_t, pad_l, ceil_mode = pool
    rng = np.random.default_rng(k * 10 + pad_t + int(gap_p * 10) + shape[2])
    x = rng.integers(-128, 128, shape)
    c, h, w = x.shape
    cb = cdiv(c, R)
    out_h, out_w = pool_out_size(h, k, 2, pad_t, ceil_mode), pool_out_size(w, k, 2, pad_l, ceil_mode)
    words = [_word(row) for row in pack_activation(x, R)]
    base = 9
    op = {"src_rows": h, "src_w": w, "cb": cb, "ibuf": base, "pool": 1, "pool_k": k, "pool_pad_t": pad_t,
          "pool_pad_l": pad_l, "out_h": out_h, "out_w": out_w, "n_words": len(words), "orw": out_w * cb}
    dut = PoolOnLoad(cfg)
    ib, errors, seen = {}, [], {"gaps": 0}

    async def bench(ctx):
        ctx.set(dut.op, op)
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        sent, rdata = 0, 0
        for _ in range(50 * len(words)):
            ctx.set(dut.ib_rdata, rdata)
            offer = sent < len(words) and rng.random() >= gap_p
            seen["gaps"] += sent < len(words) and not offer
            ctx.set(dut.words.valid, offer)
            ctx.set(dut.words.payload, words[sent] if offer else 0)
            written = ctx.get(dut.write.payload.addr) if ctx.get(dut.write.valid) else None
            if ctx.get(dut.ib_ren):
                read = ctx.get(dut.ib_raddr)
                if read not in ib and read != written:
                    errors.append(f"merge-read of word {read} before it was written")
                rdata = ib.get(read, 0)  # before this cycle's write: read-first
            if written is not None:
                ib[written] = ctx.get(dut.write.payload.data)
            if offer and ctx.get(dut.words.ready):
                sent += 1
            await ctx.tick()
            if sent == len(words) and not ctx.get(dut.busy):
                break
        else:
            errors.append("the pool never finished")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:5]
    n = out_h * out_w * cb
    stray = [a for a in ib if not base <= a < base + n]
    assert not stray, f"writes outside the pooled region: {stray[:10]}"
    got_words = np.array([np.frombuffer(ib.get(a, 0).to_bytes(R, "little"), np.int8) for a in range(base, base + n)])
    got = unpack_activation(got_words, c, out_h, out_w, R)
    expect = maxpool_reference(x, k=k, stride=2, pad=(pad_t, pad_l), out_hw=(out_h, out_w))
    bad = np.argwhere(got != expect)
    assert not len(bad), (f"{len(bad)} mismatches; first (c, y, x): "
                          + ", ".join(f"{tuple(b)} got {got[tuple(b)]} expected {expect[tuple(b)]}" for b in bad[:6]))
    if gap_p:
        assert seen["gaps"] > 0


@pytest.mark.parametrize("seed,ready_p,take_p", [(1, 1.0, 1.0), (2, 0.4, 0.5), (3, 0.9, 0.2)])
def test_band_reader(seed, ready_p, take_p):
    cfg = EngineConfig(rows=4, cols=4)
    rng = np.random.default_rng(seed)
    cb, pixels, src_pix, src = 3, 11, 5, 200
    mem = {a: int(rng.integers(0, 1 << 32)) for a in range(src, src + pixels * src_pix)}
    want = [mem[src + p * src_pix + b] for p in range(pixels) for b in range(cb)]
    dut = BandReader(cfg)
    got, stalls = [], {"memory": 0, "consumer": 0}

    async def bench(ctx):
        ctx.set(dut.op, {"src": src, "cb": cb, "src_pix": src_pix, "n_words": len(want)})
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        owed = []
        for _ in range(40 * len(want)):
            req_ready = rng.random() < ready_p
            rsp_valid = bool(owed) and rng.random() < ready_p
            take = rng.random() < take_p
            ctx.set(dut.mem.req.ready, req_ready)
            ctx.set(dut.mem.rsp.valid, rsp_valid)
            ctx.set(dut.mem.rsp.payload, owed[0] if rsp_valid else 0)
            ctx.set(dut.words.ready, take)
            if ctx.get(dut.mem.req.valid):
                if req_ready:
                    owed.append(mem[ctx.get(dut.mem.req.payload.addr)])
                else:
                    stalls["memory"] += 1
            if rsp_valid:
                owed.pop(0)
            if ctx.get(dut.words.valid):
                if take:
                    got.append(ctx.get(dut.words.payload))
                else:
                    stalls["consumer"] += 1
            await ctx.tick()
            if len(got) == len(want):
                break
        for _ in range(5):
            assert not ctx.get(dut.mem.req.valid), "the reader reads past the band"
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    first_bad = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), None)
    assert first_bad is None, f"word {first_bad}: got {got[first_bad]:#x}, expected {want[first_bad]:#x}"
    assert len(got) == len(want)
    if ready_p < 1:
        assert stalls["memory"] > 0
    if take_p < 1:
        assert stalls["consumer"] > 0
