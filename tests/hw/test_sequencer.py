"""The sequencer alone: its memory, the command checker and the units are modelled by the testbench, with
random delays; the order of the micro-operations, STATUS, the counters and the profile writes are checked.
The modelled commands' regions are all empty, so the next command's load runs beside each command."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.isa import EngineConfig, ErrorCode, Opcode, pack_command
from hw.sequencer import Sequencer

from .test_engine import _good_conv

#: The micro-operations of each opcode, as (unit, conv_stage) in order (conv_stage None: not a conv).
EXPECTED = {Opcode.CONV: [("load", None), ("conv", 0)],
            Opcode.FIRE: [("load", None), ("conv", 1), ("conv", 2), ("conv", 3)],
            Opcode.POOL: [("load", None), ("store", None)], Opcode.GAP: [("load", None), ("gap", None)]}
UNITS = ("load", "conv", "store", "gap")
DEADLINE = 20_000  # cycles for one run


def _commands(cfg):
    load = dict(src=0x100, src_rows=4, src_w=4, cb=1)
    return {Opcode.CONV: _good_conv(cfg),
            Opcode.FIRE: pack_command(Opcode.FIRE, load=load, in_h=4, in_w=4, out_h=4, squeeze=8, expand1=8,
                                      expand3=8, sq_ibuf=16, w_sq=0x100, w_e1=0x200, w_e3=0x300, dst=0x400),
            Opcode.POOL: pack_command(Opcode.POOL, load=dict(load, pool=1, pool_k=2), out_h=2, out_w=2, dst=0x400,
                                      dst_pix=1),
            Opcode.GAP: pack_command(Opcode.GAP, load=load, m0=1 << 30, shift=3, dst=0x400)}


class _Bench:
    """Memory, products, checker and units around the sequencer, one cycle at a time, with random delays."""

    def __init__(self, dut, cfg, rng):
        self.dut, self.cfg, self.rng = dut, cfg, rng
        self.mem, self.writes, self.starts = {}, [], []
        self.rsp = []               # [cycle due, word] of accepted reads, in order
        self.products_left = None   # cycles until products_done
        self.busy_left = dict.fromkeys(UNITS, 0)
        self.out_low = 0
        self.cycle = 0

    def place(self, addr, raws):
        W = self.cfg.rows
        for i, raw in enumerate(raws):
            for k in range(self.cfg.cmd_words):
                self.mem[addr + i * self.cfg.cmd_words + k] = int.from_bytes(raw[k * W:(k + 1) * W], "little")

    async def step(self, ctx):
        """One clock cycle: inputs from the models, then the handshakes seen, then the tick."""
        d, rng = self.dut, self.rng
        ctx.set(d.mem.req.ready, int(rng.random() < 0.6))
        due = bool(self.rsp) and self.rsp[0][0] <= self.cycle
        ctx.set(d.mem.rsp.valid, int(due))
        ctx.set(d.mem.rsp.payload, self.rsp[0][1] if due else 0)
        ctx.set(d.products_done, int(self.products_left == 0))
        for u in UNITS:
            ctx.set(getattr(d, u).busy, int(self.busy_left[u] > 0))
        ctx.set(d.out_idle, int(self.out_low == 0))
        # what the sequencer does this cycle
        if due and ctx.get(d.mem.rsp.ready):
            self.rsp.pop(0)
        if ctx.get(d.mem.req.valid) and ctx.get(d.mem.req.ready):
            addr = ctx.get(d.mem.req.payload.addr)
            if ctx.get(d.mem.req.payload.write):
                self.writes.append((addr, ctx.get(d.mem.req.payload.data)))
            else:
                self.rsp.append((self.cycle + int(rng.integers(1, 6)), self.mem.get(addr, 0)))
        if self.products_left == 0:
            self.products_left = None
        elif self.products_left is not None:
            self.products_left -= 1
        elif ctx.get(d.products_run):
            self.products_left = int(rng.integers(0, 8))
        encode = ctx.get(d.check_encode)
        opcode = ctx.get(d.cmd) & 0xF
        any_busy = any(self.busy_left.values())
        exec_busy = any(self.busy_left[u] for u in UNITS if u != "load")
        load_busy = self.busy_left["load"] > 0
        for u in UNITS:
            self.busy_left[u] = max(0, self.busy_left[u] - 1)
        if any_busy and not any(self.busy_left.values()):
            self.out_low = int(rng.integers(0, 4))  # the output path drains after the unit
        elif self.out_low:
            self.out_low -= 1
        for u in UNITS:
            if ctx.get(getattr(d, u).start):
                if u == "load":
                    assert not load_busy, f"cycle {self.cycle}: a load started during a load"
                else:
                    assert not exec_busy and self.out_low == 0, f"cycle {self.cycle}: {u} started while not idle"
                self.starts.append((u, ctx.get(d.conv_stage) if u == "conv" else None))
                self.busy_left[u] = int(rng.integers(1, 12))
        await ctx.tick()
        self.cycle += 1
        if encode:
            valid = opcode in {int(op.value) for op in Opcode}
            ctx.set(d.check_error, ErrorCode.NONE if valid else ErrorCode.BAD_OPCODE)

    async def run(self, ctx, *, cmd_addr, count, prof_addr=0, profile=0):
        """Start a list and step until STATUS says done or error; return (STATUS, cycles busy seen)."""
        d = self.dut
        ctx.set(d.cmd_addr, cmd_addr)
        ctx.set(d.cmd_count, count)
        ctx.set(d.prof_addr, prof_addr)
        ctx.set(d.start, 1)
        ctx.set(d.profile, profile)
        await self.step(ctx)
        ctx.set(d.start, 0)
        ctx.set(d.profile, 0)
        for busy in range(DEADLINE):
            status = ctx.get(d.status)
            if not status.busy:
                return status, busy
            await self.step(ctx)
        raise AssertionError(f"no DONE or ERROR within {DEADLINE} cycles (cmd_index {ctx.get(d.cmd_index)})")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bad_command_then_a_list_in_order(seed):
    cfg = EngineConfig(rows=8, cols=16)
    dut = Sequencer(cfg)
    rng = np.random.default_rng(seed)
    bench = _Bench(dut, cfg, rng)
    cmds = _commands(cfg)
    ops = [Opcode(int(o)) for o in rng.permutation([op.value for op in Opcode])[:2]]
    bad = bytes(64)  # opcode 0
    bench.place(0x40, [cmds[ops[0]], bad])
    bench.place(0x80, [cmds[op] for op in ops])
    pwords = cfg.profile_words

    async def testbench(ctx):
        # The second command is bad: ERROR with its code, at index 1, the first one run.
        status, busy = await bench.run(ctx, cmd_addr=0x40, count=2)
        assert (status.done, status.error, ErrorCode(status.error_code)) == (0, 1, ErrorCode.BAD_OPCODE)
        assert ctx.get(dut.cmd_index) == 1 and ctx.get(dut.cycles) == busy
        assert bench.starts == EXPECTED[ops[0]], bench.starts
        # CLEAR, then the sequencer takes the next list: both commands in order, profiled.
        ctx.set(dut.clear, 1)
        await bench.step(ctx)
        ctx.set(dut.clear, 0)
        status = ctx.get(dut.status)
        assert (status.busy, status.done, status.error, ErrorCode(status.error_code)) == (0, 0, 0, ErrorCode.NONE)
        bench.starts, bench.writes = [], []
        status, busy = await bench.run(ctx, cmd_addr=0x80, count=2, prof_addr=0x800, profile=1)
        assert (status.done, status.error) == (1, 0)
        assert ctx.get(dut.cmd_index) == 2 and ctx.get(dut.cycles) == busy
        # The units' operations in command order, each command's load before its operations.
        want = [(u, s) for op in ops for u, s in EXPECTED[op] if u != "load"]
        assert [x for x in bench.starts if x[0] != "load"] == want, f"micro-operations {bench.starts}"
        loads = [i for i, x in enumerate(bench.starts) if x[0] == "load"]
        unit_ops = [i for i, x in enumerate(bench.starts) if x[0] != "load"]
        second_first_op = unit_ops[len(EXPECTED[ops[0]]) - 1]
        assert len(loads) == 2 and loads[0] < unit_ops[0] and loads[1] < second_first_op, bench.starts
        assert [a for a, _ in bench.writes] == [0x800 + i * pwords + k for i in range(2) for k in range(pwords)]
        total = sum(w[1] & 0xFFFFFFFF for w in bench.writes[::pwords])  # each record's cycles field first
        assert 0 < total <= busy, (total, busy)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
