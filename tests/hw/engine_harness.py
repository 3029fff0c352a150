"""Run the whole engine in Amaranth's simulator: a Python memory model and a register-level host."""

from __future__ import annotations

import dataclasses

import numpy as np
from amaranth.sim import Simulator

from hw.engine import Engine
from hw.isa import CMD_BYTES, EngineConfig, Reg, Status


@dataclasses.dataclass
class RunResult:
    status: int
    cmd_index: int
    cycles: int
    active: int
    mem: dict  # word address -> int


def words_from_bytes(raw: bytes, rows: int) -> list[int]:
    return [int.from_bytes(raw[i:i + rows], "little") for i in range(0, len(raw), rows)]


def run_engine(cfg: EngineConfig, mem: dict, cmd_addr: int, n_cmds: int, *, stall_seed=None,
               profile_addr=None, max_cycles=300_000, extra_runs=()):
    """Start the command list and run until the engine is idle; return status, counters and memory.

    ``extra_runs`` is a list of ``(cmd_addr, n_cmds)`` started after the first run completes
    (to show the engine stays usable after an error).
    """
    dut = Engine(cfg)
    rng = np.random.default_rng(stall_seed or 0)
    results = []

    async def mem_model(ctx):
        pending = []
        req_ready = rsp_valid = False
        async for _, _, valid, addr, write, wdata, rsp_ready in ctx.tick().sample(
                dut.mem.req.valid, dut.mem.req.payload.addr, dut.mem.req.payload.write,
                dut.mem.req.payload.data, dut.mem.rsp.ready):
            if valid and req_ready:
                if write:
                    mem[addr] = wdata
                else:
                    pending.append(mem.get(addr, 0))
            if rsp_valid and rsp_ready:
                pending.pop(0)
            req_ready = stall_seed is None or rng.random() < 0.5
            ctx.set(dut.mem.req.ready, req_ready)
            rsp_valid = bool(pending) and (stall_seed is None or rng.random() < 0.6)
            ctx.set(dut.mem.rsp.valid, rsp_valid)
            if rsp_valid:
                ctx.set(dut.mem.rsp.payload, pending[0])

    async def write_reg(ctx, reg, value):
        ctx.set(dut.csr.addr, int(reg))
        ctx.set(dut.csr.w_data, value)
        ctx.set(dut.csr.w_stb, 1)
        await ctx.tick()
        ctx.set(dut.csr.w_stb, 0)

    async def read_reg(ctx, reg):
        ctx.set(dut.csr.addr, int(reg))
        ctx.set(dut.csr.r_stb, 1)
        await ctx.tick()
        ctx.set(dut.csr.r_stb, 0)
        return ctx.get(dut.csr.r_data)

    async def host(ctx):
        for addr, count in [(cmd_addr, n_cmds), *extra_runs]:
            await write_reg(ctx, Reg.CMD_ADDR, addr)
            await write_reg(ctx, Reg.CMD_COUNT, count)
            ctrl = 1 | (4 if profile_addr is not None else 0)
            if profile_addr is not None:
                await write_reg(ctx, Reg.PROF_ADDR, profile_addr)
            await write_reg(ctx, Reg.CTRL, ctrl)
            for _ in range(max_cycles // 16):
                await ctx.tick().repeat(16)
                status = await read_reg(ctx, Reg.STATUS)
                if not status & Status.BUSY:
                    break
            else:
                raise AssertionError(f"engine still busy after {max_cycles} cycles")
            results.append(RunResult(status=status, cmd_index=await read_reg(ctx, Reg.CMD_INDEX),
                                     cycles=await read_reg(ctx, Reg.CYCLES), active=await read_reg(ctx, Reg.ACTIVE),
                                     mem=mem))
            await write_reg(ctx, Reg.CTRL, 2)  # CLEAR

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(mem_model)
    sim.add_testbench(host)
    sim.run()
    return results


def load_words(mem: dict, addr: int, words: np.ndarray):
    """Place int8 words (n, rows) into the memory dict at ``addr``."""
    for i, w in enumerate(np.asarray(words, dtype=np.int8)):
        mem[addr + i] = int.from_bytes(w.tobytes(), "little")


def read_words(mem: dict, addr: int, n: int, rows: int) -> np.ndarray:
    out = np.zeros((n, rows), dtype=np.int8)
    for i in range(n):
        v = mem.get(addr + i)
        if v is not None:
            out[i] = np.frombuffer(v.to_bytes(rows, "little"), np.int8)
    return out


def place_commands(mem: dict, addr: int, cmds: list[bytes], rows: int):
    for k, c in enumerate(cmds):
        assert len(c) == CMD_BYTES
        for i, w in enumerate(words_from_bytes(c, rows)):
            mem[addr + k * (CMD_BYTES // rows) + i] = w
