"""AccumulatorBanks alone: partial sums accumulated per pixel onto the bias, drained group by group with
each channel's m0 and shift to the right word, with bubbles between the vectors and a stalling output."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.conv import AccumulatorBanks
from hw.isa import EngineConfig


def _wrap32(x):
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


@pytest.mark.parametrize("seed,bubble_p,ready_p", [(1, 0.0, 1.0), (2, 0.3, 0.6), (3, 0.1, 0.2), (4, 0.6, 0.9)])
def test_banks_accumulate_and_drain(seed, bubble_p, ready_p):
    cfg = EngineConfig(rows=2, cols=8, acc_depth=16)
    R, C, P, G = cfg.rows, cfg.cols, cfg.acc_depth, cfg.groups
    latency, psum_bits = 6, 20
    rng = np.random.default_rng(seed)
    op = {"dst": 1000, "dst_pix": 7, "zp_out": -3, "act_min": -100, "act_max": 90, "dst_ibuf": 1}
    params = [{"bias": [int(v) for v in rng.integers(-2**31, 2**31, C)],
               "m0": [int(v) for v in rng.integers(-2**31, 2**31, C)],
               "shift": [{"value": int(v), "unused": 0} for v in rng.integers(0, 32, C)]} for _ in range(2)]
    passes = []
    for j in range(6):
        first = j % 3 == 0  # three passes per output-channel tile
        passes.append({"bank": j % 2, "npass": int(rng.integers(1, P + 1)), "cot": j // 3, "first": first,
                       "groups": int(rng.integers(1, G + 1)), "n_kt": int(rng.integers(1, 4))})
    dut = AccumulatorBanks(cfg, psum_bits=psum_bits, array_latency=latency)
    got, errors, seen = [], [], {"bubbles": 0, "refusals": 0}
    expected_acc = []  # per pass: [pixel][channel]

    async def bench(ctx):
        ctx.set(dut.op, op)
        ctx.set(dut.params, params)
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        schedule = []  # (pass index or None, meta, psums) per cycle the generator issues
        for j, ps in enumerate(passes):
            acc = [[params[ps["bank"]]["bias"][c] for c in range(C)] for _ in range(ps["npass"])]
            vectors = []
            for kt in range(ps["n_kt"]):
                for p in range(max(ps["npass"], 2)):
                    sums = [int(v) for v in rng.integers(-(1 << (psum_bits - 1)), 1 << (psum_bits - 1), C)]
                    real = p < ps["npass"]
                    if real:
                        acc[p] = [_wrap32(a + s) for a, s in zip(acc[p], sums, strict=True)]
                    meta = {"p": p % P, "bank": ps["bank"], "first": kt == 0, "last": kt == ps["n_kt"] - 1,
                            "pass_end": kt == ps["n_kt"] - 1 and p == ps["npass"] - 1, "wsel": kt % 2}
                    vectors.append((real, meta, sums))
            expected_acc.append(acc)
            schedule.append((j, vectors))
        pipeline = [None] * latency  # psums due `latency` cycles after issue
        pending = list(schedule)
        current = None
        for _ in range(20000):
            # The address generator: claim the bank when free, then issue with random bubbles.
            ctx.set(dut.pass_start.valid, 0)
            ctx.set(dut.issued.valid, 0)
            issued = None
            if current is None and pending:
                j, vectors = pending[0]
                if not (ctx.get(dut.bank_busy) >> passes[j]["bank"] & 1):
                    pending.pop(0)
                    ps = passes[j]
                    ctx.set(dut.pass_start.valid, 1)
                    ctx.set(dut.pass_start.payload, {k: ps[k] for k in ("bank", "npass", "cot", "first", "groups")})
                    current = list(vectors)
            elif current:
                if rng.random() < bubble_p:
                    seen["bubbles"] += 1
                else:
                    real, meta, sums = current.pop(0)
                    ctx.set(dut.issued.valid, real)
                    ctx.set(dut.issued.payload, meta)
                    issued = sums
                if not current:
                    current = None
            due = pipeline.pop(0)
            ctx.set(dut.psum, due if due is not None else [0] * C)
            pipeline.append(issued)
            ready = rng.random() < ready_p
            ctx.set(dut.rq.ready, ready)
            if ctx.get(dut.rq.valid):
                if not ready:
                    errors.append("rq.valid without rq.ready")
                rq = ctx.get(dut.rq.payload)
                got.append((rq.addr, list(rq.acc), list(rq.m0), list(rq.shift), rq.zp_out, rq.act_min,
                            rq.act_max, rq.ibuf))
            elif ctx.get(dut.draining) and not ready:
                seen["refusals"] += 1
            await ctx.tick()
            if not pending and current is None and not ctx.get(dut.bank_busy) and not ctx.get(dut.draining):
                break
        else:
            errors.append("the banks never drained")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:5]
    want, out_pix = [], 0
    for ps, acc in zip(passes, expected_acc, strict=True):
        if ps["first"]:
            out_pix = op["dst"] + ps["cot"] * G
        for p in range(ps["npass"]):
            for g in range(ps["groups"]):
                chans = range(g * R, g * R + R)
                bank = params[ps["bank"]]
                want.append((out_pix + g, [acc[p][c] for c in chans], [bank["m0"][c] for c in chans],
                             [bank["shift"][c]["value"] for c in chans], op["zp_out"], op["act_min"],
                             op["act_max"], op["dst_ibuf"]))
            out_pix += op["dst_pix"]
    first_bad = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), None)
    assert first_bad is None, f"output {first_bad}: got {got[first_bad]}, expected {want[first_bad]}"
    assert len(got) == len(want), f"{len(got)} outputs, expected {len(want)}"
    if bubble_p:
        assert seen["bubbles"] > 0
    if ready_p < 1:
        assert seen["refusals"] > 0
