"""RegisterFile alone: every register of hw.isa.REGISTERS read and written over the CSR bus as declared."""

import numpy as np
from amaranth.sim import Simulator

from hw.isa import ENGINE_ID, REGISTERS, VERSION, Ctrl, EngineConfig, Reg
from hw.registers import RegisterFile


def test_register_map():
    cfg = EngineConfig(rows=4, cols=8)
    rng = np.random.default_rng(5)
    dut = RegisterFile(cfg)
    inputs = {"status": 0x306, "cmd_index": 17, "cycles": 123456, "active": 789}
    errors = []

    async def bench(ctx):
        for name, value in inputs.items():
            ctx.set(getattr(dut, name).as_value() if name == "status" else getattr(dut, name), value)

        async def write(reg, value):
            ctx.set(dut.csr.addr, int(reg))
            ctx.set(dut.csr.w_data, value)
            ctx.set(dut.csr.w_stb, 1)
            strobes = (ctx.get(dut.start), ctx.get(dut.clear), ctx.get(dut.profile))
            await ctx.tick()
            ctx.set(dut.csr.w_stb, 0)
            return strobes

        async def read(reg):
            ctx.set(dut.csr.addr, int(reg))
            ctx.set(dut.csr.r_stb, 1)
            await ctx.tick()
            ctx.set(dut.csr.r_stb, 0)
            return ctx.get(dut.csr.r_data)

        written = {}
        for spec in REGISTERS:
            if spec.access == "RW":
                written[spec.name] = int(rng.integers(0, 1 << 32))
                await write(spec.index, written[spec.name])
            elif spec.access == "R":
                await write(spec.index, 0xDEAD_BEEF)  # ignored
        c0, c1, c2 = cfg.config_words()
        want = {"ID": ENGINE_ID, "VERSION": VERSION[0] << 16 | VERSION[1], "CONFIG0": c0, "CONFIG1": c1,
                "CONFIG2": c2, "STATUS": inputs["status"], "CMD_INDEX": inputs["cmd_index"],
                "CYCLES": inputs["cycles"], "ACTIVE": inputs["active"], "CTRL": 0, **written}
        for spec in REGISTERS:
            got = await read(spec.index)
            if got != want[spec.name]:
                errors.append(f"{spec.name}: read {got:#x}, expected {want[spec.name]:#x}")
        if await read(max(s.index for s in REGISTERS) + 1) != 0:
            errors.append("an unmapped register does not read 0")
        for port, reg in (("cmd_addr", "CMD_ADDR"), ("cmd_count", "CMD_COUNT"), ("prof_addr", "PROF_ADDR")):
            if ctx.get(getattr(dut, port)) != written[reg]:
                errors.append(f"{port} is not what CSR wrote")
        for bits in (Ctrl.START, Ctrl.CLEAR, Ctrl.START | Ctrl.PROFILE):
            strobes = await write(Reg.CTRL, int(bits))
            want_strobes = (bool(bits & Ctrl.START), bool(bits & Ctrl.CLEAR), bool(bits & Ctrl.PROFILE))
            if tuple(map(bool, strobes)) != want_strobes:
                errors.append(f"CTRL={int(bits):#x}: start/clear/profile {strobes}, expected {want_strobes}")
            if ctx.get(dut.start) or ctx.get(dut.clear):
                errors.append("a CTRL strobe lasted more than its cycle")
        strobes = await write(Reg.SCRATCH, int(Ctrl.START))
        if strobes[0]:
            errors.append("a write to another register started the engine")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors
