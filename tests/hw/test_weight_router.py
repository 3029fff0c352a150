"""WeightRouter alone: parameters to the right bank, tile columns to the right weight buffer, never into a
buffer the array still uses, with gaps in the incoming words and a slow address generator and drain."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.conv import WeightRouter
from hw.isa import EngineConfig


def _lanes(word, rows):
    return [((word >> (8 * r)) & 0xFF) - (256 if (word >> (8 * r)) & 0x80 else 0) for r in range(rows)]


@pytest.mark.parametrize("seed,word_p,hold_max", [(1, 1.0, 0), (2, 0.6, 5), (3, 0.3, 12), (4, 0.9, 30)])
def test_router_places_params_and_tiles(seed, word_p, hold_max):
    cfg = EngineConfig(rows=4, cols=8, acc_depth=16)
    R, C, PW = cfg.rows, cfg.cols, cfg.param_words
    rng = np.random.default_rng(seed)
    n_kt, n_pass = int(rng.integers(1, 4)), 5
    block = PW + n_kt * C
    words = [int(rng.integers(0, 1 << (8 * R))) for _ in range(n_pass * block)]
    dut = WeightRouter(cfg)
    loads, errors = [], []
    seen = {"gaps": 0, "holds": 0}

    async def bench(ctx):
        ctx.set(dut.blob_cot_words, block)
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        w = 0                      # next word to offer
        pass_i, tile_i, tile_global = 0, 0, 0
        phase, hold = "claim", 0   # the address generator's view
        busy = [False, False]
        drain_left = [0, 0]        # cycles until a finished bank's drain ends
        in_use = None              # the buffer whose tile the "array" is using
        for _ in range(60 * len(words) + 500):
            offer = w < len(words) and rng.random() < word_p
            if w < len(words) and not offer:
                seen["gaps"] += 1
            ctx.set(dut.words.valid, offer)
            ctx.set(dut.words.payload, words[w] if offer else 0)
            ctx.set(dut.bank_busy, busy[0] | busy[1] << 1)
            ctx.set(dut.released.valid, 0)
            ctx.set(dut.bank_claimed.valid, 0)
            bank = pass_i % 2
            if phase == "claim" and pass_i < n_pass and ctx.get(dut.params_ready) >> bank & 1:
                params = ctx.get(dut.params)[bank].as_value().value
                want = sum(words[pass_i * block + i] << (8 * R * i) for i in range(PW))
                if params != want:
                    errors.append(f"pass {pass_i}: bank {bank} parameters {params:#x}, expected {want:#x}")
                ctx.set(dut.bank_claimed.valid, 1)
                ctx.set(dut.bank_claimed.payload, bank)
                busy[bank] = True
                phase = "tile"
            elif phase == "tile" and ctx.get(dut.tiles_ready) >> (tile_global % 2) & 1:
                in_use, hold = tile_global % 2, int(rng.integers(0, hold_max + 1))
                seen["holds"] += hold > 0
                phase = "use"
            elif phase == "use":
                if hold == 0:
                    ctx.set(dut.released.valid, 1)
                    ctx.set(dut.released.payload, in_use)
                    in_use, tile_global, tile_i = None, tile_global + 1, tile_i + 1
                    phase = "tile"
                    if tile_i == n_kt:
                        drain_left[bank] = int(rng.integers(1, 20))
                        pass_i, tile_i, phase = pass_i + 1, 0, "claim"
                else:
                    hold -= 1
            if ctx.get(dut.tile_load.valid):
                load = ctx.get(dut.tile_load.payload)
                if load.buf == in_use:
                    errors.append(f"column written into buffer {load.buf} while the array uses it")
                loads.append((load.buf, load.col, list(load.data)))
            if offer and ctx.get(dut.words.ready):
                w += 1
            await ctx.tick()
            for b in range(2):
                if drain_left[b]:
                    drain_left[b] -= 1
                    busy[b] = drain_left[b] != 0
            if pass_i == n_pass:
                break
        else:
            errors.append(f"stuck at pass {pass_i}, tile {tile_i}, word {w}")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:5]
    want = [(t % 2, c, _lanes(words[(t // n_kt) * block + PW + (t % n_kt) * C + c], R))
            for t in range(n_pass * n_kt) for c in range(C)]
    first_bad = next((i for i, (g, e) in enumerate(zip(loads, want, strict=False)) if g != e), None)
    assert first_bad is None, f"column load {first_bad}: got {loads[first_bad]}, expected {want[first_bad]}"
    assert len(loads) == len(want)
    if word_p < 1:
        assert seen["gaps"] > 0
    if hold_max:
        assert seen["holds"] > 0
