"""ConvPlanner alone: every plan field against the formulas of hw.layout, and its five-cycle timing."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.conv import ConvPlanner
from hw.isa import EngineConfig
from hw.layout import cdiv

MASK16 = (1 << 16) - 1


def _expected(cfg, op):
    R, C, P, G = cfg.rows, cfg.cols, cfg.acc_depth, cfg.groups
    n_kt = op["kh"] * op["kw"] * op["in_cb"]
    return {
        "n_kt": n_kt,
        "tap_x_step": op["dil"] * op["in_cb"] & MASK16,
        "tap_y_step": op["dil"] * op["row_words"] & MASK16,
        "tap_x0": -op["pad_l"] * op["in_cb"],
        "tap_y0": -op["pad_t"] * op["row_words"],
        "pixel_step": op["sx"] * op["in_cb"] & MASK16,
        "row_step": op["sy"] * op["row_words"] & MASK16,
        "n_cot": cdiv(op["cout"], C),
        "passes_per_cot": cdiv(op["n_pix"], P),
        "last_pass_pixels": (op["n_pix"] - 1) % P + 1,
        "last_tile_groups": (cdiv(op["cout"], R) - 1) % G + 1,
        "blob_cot_words": cfg.param_words + n_kt * C,
    }


def _random_op(rng):
    in_w, in_cb = int(rng.integers(1, 60)), int(rng.integers(1, 40))
    out_h, out_w = int(rng.integers(1, 60)), int(rng.integers(1, 60))
    return {
        "in_cb": in_cb, "kh": int(rng.integers(1, 8)), "kw": int(rng.integers(1, 8)),
        "sy": int(rng.integers(1, 5)), "sx": int(rng.integers(1, 5)), "dil": int(rng.integers(1, 8)),
        "pad_t": int(rng.integers(-1, 8)), "pad_l": int(rng.integers(0, 8)), "cout": int(rng.integers(1, 700)),
        "in_w": in_w, "out_h": out_h, "out_w": out_w, "row_words": in_w * in_cb, "n_pix": out_h * out_w,
    }


@pytest.mark.parametrize("cfgkw", [dict(rows=8, cols=16, acc_depth=512), dict(rows=2, cols=8, acc_depth=16)])
def test_planner_matches_formulas(cfgkw):
    cfg = EngineConfig(**cfgkw)
    rng = np.random.default_rng(cfg.rows * 100 + cfg.cols)
    ops = [_random_op(rng) for _ in range(25)]
    dut = ConvPlanner(cfg)
    mismatches = []

    async def bench(ctx):
        for op in ops:
            ctx.set(dut.op, op)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            waited = 1  # cycles since the one with start
            while not ctx.get(dut.init):
                await ctx.tick()
                waited += 1
                assert waited <= 5, "init did not come within five cycles"
            assert waited == 5, f"init came {waited} cycles after start, not 5"
            plan = ctx.get(dut.plan)
            for name, want in _expected(cfg, op).items():
                got = getattr(plan, name)
                if got != want:
                    mismatches.append((name, got, want, op))
            await ctx.tick()
            assert not ctx.get(dut.init), "init lasted more than one cycle"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not mismatches, f"{len(mismatches)} mismatches (field, got, expected, op), first: {mismatches[:4]}"
