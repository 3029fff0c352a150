"""AddressGenerator alone: the buffer reads and the vectors it issues, in the order of the loop nest,
against a Python walk of it, with weight tiles, parameters and bank drains arriving late at random."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.conv import AddressGenerator
from hw.isa import EngineConfig
from hw.layout import cdiv

from .test_conv_plan import _expected as plan_of


def _word(addr, rows):
    """The buffer's content: a word derived from its address."""
    return sum((((addr * 37 + r * 11) % 251) & 0xFF) << (8 * r) for r in range(rows))


def _lanes(word, rows):
    return [((word >> (8 * r)) & 0xFF) - (256 if (word >> (8 * r)) & 0x80 else 0) for r in range(rows)]


def _walk(cfg, op):
    """The model: every issued vector as (meta, buffer address or None for padding), in order."""
    C, P = cfg.cols, cfg.acc_depth
    n_pix = op["out_h"] * op["out_w"]
    out = []
    bank = 0
    wsel = 0
    for _cot in range(cdiv(op["cout"], C)):
        for start in range(0, n_pix, P):
            npass = min(P, n_pix - start)
            tiles = [(ky, kx, cb) for ky in range(op["kh"]) for kx in range(op["kw"]) for cb in range(op["in_cb"])]
            for kt, (ky, kx, cb) in enumerate(tiles):
                for p in range(max(npass, 2)):
                    if p < npass:
                        oy, ox = divmod(start + p, op["out_w"])
                        iy = oy * op["sy"] + ky * op["dil"] - op["pad_t"]
                        ix = ox * op["sx"] + kx * op["dil"] - op["pad_l"]
                        inside = 0 <= iy < op["in_h"] and 0 <= ix < op["in_w"]
                        addr = (op["in_base"] + iy * op["row_words"] + ix * op["in_cb"] + cb) & 0xFFFF
                        meta = {"p": p, "bank": bank, "first": kt == 0, "last": kt == len(tiles) - 1,
                                "pass_end": kt == len(tiles) - 1 and p == npass - 1, "wsel": wsel}
                        out.append((meta, addr if inside else None))
                wsel ^= 1
            bank ^= 1
    return out


OPS = [
    dict(in_h=5, in_w=6, in_cb=2, kh=3, kw=3, sy=1, sx=1, dil=1, pad_t=1, pad_l=1, out_h=5, out_w=6, cout=12),
    dict(in_h=7, in_w=7, in_cb=1, kh=3, kw=3, sy=2, sx=2, dil=1, pad_t=0, pad_l=0, out_h=3, out_w=3, cout=4),
    dict(in_h=6, in_w=5, in_cb=3, kh=1, kw=1, sy=1, sx=1, dil=1, pad_t=0, pad_l=0, out_h=6, out_w=5, cout=20),
    dict(in_h=8, in_w=8, in_cb=1, kh=3, kw=2, sy=1, sx=1, dil=2, pad_t=2, pad_l=1, out_h=6, out_w=7, cout=8),
    dict(in_h=1, in_w=1, in_cb=1, kh=3, kw=3, sy=1, sx=1, dil=1, pad_t=1, pad_l=1, out_h=1, out_w=1, cout=3),
    # 7x7 stride 4 with asymmetric padding, 1x5 and 5x1 with stride 3 across / down
    dict(in_h=13, in_w=11, in_cb=1, kh=7, kw=7, sy=4, sx=4, dil=1, pad_t=3, pad_l=2, out_h=3, out_w=3, cout=5),
    dict(in_h=4, in_w=9, in_cb=2, kh=1, kw=5, sy=1, sx=3, dil=1, pad_t=0, pad_l=2, out_h=4, out_w=3, cout=4),
    dict(in_h=9, in_w=3, in_cb=1, kh=5, kw=1, sy=3, sx=1, dil=2, pad_t=4, pad_l=0, out_h=4, out_w=3, cout=2),
]


@pytest.mark.parametrize("delay_max", [0, 25], ids=["prompt", "late"])
@pytest.mark.parametrize("case", range(len(OPS)))
def test_generator_walks_the_loop_nest(case, delay_max):
    cfg = EngineConfig(rows=2, cols=4, acc_depth=16)
    R = cfg.rows
    op = dict(OPS[case], in_base=100, zp_in=-7, row_words=OPS[case]["in_w"] * OPS[case]["in_cb"])
    op["n_pix"] = op["out_h"] * op["out_w"]
    plan = plan_of(cfg, op)
    want = _walk(cfg, op)
    rng = np.random.default_rng(case * 10 + delay_max)
    dut = AddressGenerator(cfg)
    got, errors, seen = [], [], {"wait_weights": 0, "wait_bank": 0}

    async def bench(ctx):
        ctx.set(dut.op, op)
        ctx.set(dut.plan, plan)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await ctx.tick().repeat(3)
        ctx.set(dut.init, 1)
        await ctx.tick()
        ctx.set(dut.init, 0)
        # The router and the banks, as delays: tile t lands in buffer t % 2 once that buffer is free.
        tiles_ready, params_ready, busy = [0, 0], [0, 0], [0, 0]
        buffer_free = [True, True]
        next_tile, next_param_bank = 0, 0
        tile_delay = param_delay = delay_max  # the first tile and parameters come late too
        drain = [0, 0]
        read_addr = None
        for _ in range(50000):
            if tile_delay == 0 and buffer_free[next_tile % 2]:
                tiles_ready[next_tile % 2], buffer_free[next_tile % 2] = 1, False
                next_tile += 1
                tile_delay = int(rng.integers(0, delay_max + 1))
            elif tile_delay:
                tile_delay -= 1
            if param_delay == 0 and not busy[next_param_bank] and not params_ready[next_param_bank]:
                params_ready[next_param_bank] = 1
                next_param_bank ^= 1
                param_delay = int(rng.integers(0, delay_max + 1))
            elif param_delay:
                param_delay -= 1
            ctx.set(dut.tiles_ready, tiles_ready[0] | tiles_ready[1] << 1)
            ctx.set(dut.params_ready, params_ready[0] | params_ready[1] << 1)
            ctx.set(dut.bank_busy, busy[0] | busy[1] << 1)
            ctx.set(dut.ib_rdata, _word(read_addr, R) if read_addr is not None else 0)
            seen["wait_weights"] += ctx.get(dut.wait_weights)
            seen["wait_bank"] += ctx.get(dut.wait_bank)
            if ctx.get(dut.issued.valid):
                meta = ctx.get(dut.issued.payload)
                meta = {k: int(getattr(meta, k)) for k in ("p", "bank", "first", "last", "pass_end", "wsel")}
                got.append((meta, list(ctx.get(dut.vector))))
                if ctx.get(dut.wsel) != meta["wsel"]:
                    errors.append("wsel differs from the issued metadata")
                if meta["pass_end"]:
                    drain[meta["bank"]] = int(rng.integers(1, 8 * delay_max + 3))
            read_addr = ctx.get(dut.ib_raddr) if ctx.get(dut.ib_ren) else None
            if ctx.get(dut.released.valid):
                b = ctx.get(dut.released.payload)
                tiles_ready[b], buffer_free[b] = 0, True
            if ctx.get(dut.bank_claimed.valid):
                b = ctx.get(dut.bank_claimed.payload)
                if ctx.get(dut.pass_start.payload.bank) != b or not ctx.get(dut.pass_start.valid):
                    errors.append("pass_start and bank_claimed disagree")
                params_ready[b], busy[b] = 0, 1
            busy_now = ctx.get(dut.busy)
            await ctx.tick()
            for b in range(2):
                if drain[b]:
                    drain[b] -= 1
                    busy[b] = int(drain[b] != 0)
            if not busy_now and got:
                break
        else:
            errors.append("the generator never finished")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:5]
    expect = [(meta, _lanes(_word(addr, R), R) if addr is not None else [op["zp_in"]] * R) for meta, addr in want]
    first_bad = next((i for i, (g, w) in enumerate(zip(got, expect, strict=False)) if g != w), None)
    assert first_bad is None, f"vector {first_bad}: got {got[first_bad]}, expected {expect[first_bad]}"
    assert len(got) == len(expect), f"{len(got)} vectors issued, expected {len(expect)}"
    if delay_max:
        assert seen["wait_weights"] > 0 and seen["wait_bank"] > 0, seen
