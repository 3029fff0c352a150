"""A Verilator engine next to the golden machine: run the same commands on both, compare memory exactly."""

from __future__ import annotations

import dataclasses

import numpy as np

from hw.engine import Engine
from hw.isa import EngineConfig, ErrorCode, Reg, Status, unpack_command
from hw.layout import cdiv
from quant import golden
from sw.backends.golden import GoldenBackend
from sw.driver import CommandError, Driver
from sw.isa_exec import IsaMachine

MEM_WORDS = 1 << 20  # the VerilatorBackend default: every test and `make sim` share one build


@dataclasses.dataclass
class Outcome:
    status: int
    index: int
    cycles: int
    profile: list | None


class EngineBench:
    """One simulated engine (kept running across tests) and a golden machine for every run."""

    def __init__(self, config: EngineConfig, mem_words: int = MEM_WORDS):
        from sw.backends import open_backend

        self.config = config
        self.mem_words = mem_words
        self.vl = open_backend("verilator", top_factory=Engine, config=config, mem_words=mem_words)
        self.driver = Driver(self.vl, config)
        self.driver.identify()

    def close(self):
        self.vl.close()

    def run(self, writes, commands, outputs, *, cmd_addr=0, stalls=0.0, profile_addr=None):
        """Write ``writes`` [(addr, int8 words)] and the commands to both engines, run, compare ``outputs``.

        ``outputs`` is [(addr, n_words)]. Returns the simulator's :class:`Outcome` and the golden machine.
        Raises AssertionError listing the first mismatching words with the command that wrote them.
        """
        R = self.config.rows
        self.vl.set_stalls(stalls)
        gold = GoldenBackend(self.config, mem_words=self.mem_words)
        for t in (self.vl, gold):
            d = Driver(t, self.config, timed=t is self.vl)
            for addr, n in outputs:  # the same (recognisable) contents where results will land
                d.write_words(addr, np.full((n, R), 0x55, dtype=np.int8))
            for addr, words in writes:
                d.write_words(addr, words)
            d.write_commands(cmd_addr, commands)
        results = []
        for t in (self.vl, gold):
            d = Driver(t, self.config, timed=t is self.vl)
            try:
                r = d.run(cmd_addr, len(commands), profile_addr=profile_addr, timeout=300,
                          max_cycles=50_000_000)
                results.append(Outcome(r.status, len(commands), r.cycles or 0, r.profile))
            except CommandError as e:
                results.append(Outcome(Status.ERROR | (e.code.value << 8), e.index, 0, None))
        sim, ref = results
        assert (sim.status & 0xF0F, sim.index) == (ref.status & 0xF0F, ref.index), (
            f"engine status {sim.status:#x} at command {sim.index}, golden {ref.status:#x} at {ref.index} "
            f"({Status.error_code(sim.status).name} vs {Status.error_code(ref.status).name})")
        for addr, n in outputs:
            got = np.frombuffer(self.vl.read_mem(addr, n), np.int8).reshape(n, R)
            exp = np.frombuffer(gold.read_mem(addr, n), np.int8).reshape(n, R)
            if not np.array_equal(got, exp):
                raise AssertionError(describe_mismatch(self.config, commands, gold.machine, addr, got, exp))
        return sim, gold.machine


def describe_mismatch(cfg: EngineConfig, commands, machine: IsaMachine, base: int, got, exp, limit: int = 8) -> str:
    """The first mismatching words, with the operands of a convolution output where one applies."""
    bad = np.argwhere(got != exp)
    lines = [f"{len(bad)} of {got.size} output bytes differ (region at word {base})"]
    for w, lane in bad[:limit]:
        addr = base + int(w)
        line = f"  word {addr} lane {lane}: engine {got[w, lane]}, golden {exp[w, lane]}"
        line += _conv_operands(cfg, commands, machine, addr, int(lane))
        lines.append(line)
    return "\n".join(lines)


def _conv_operands(cfg, commands, machine, addr, lane) -> str:
    """For a CONV output word: its pixel, channel, accumulator and requantization constants."""
    from hw.isa import Opcode
    for raw in commands:
        op, c = unpack_command(raw)
        if op != Opcode.CONV or addr < c.dst:
            continue
        ocb = cdiv(c.cout, cfg.rows)
        pix, word = divmod(addr - c.dst, c.dst_pix)
        if word >= ocb or pix >= c.out_h * c.out_w:
            continue
        oy, ox = divmod(pix, c.out_w)
        co = word * cfg.rows + lane
        ld = c.load
        x = machine._read_band(ld.src, ld.src_rows, ld.src_w, ld.cb, ld.src_pix)
        n_cot = cdiv(c.cout, cfg.cols)
        from hw.layout import unpack_conv_blob
        nw = n_cot * (cfg.param_words + c.kh * c.kw * ld.cb * cfg.tile_words)
        wt, bias, m0, shift = unpack_conv_blob(machine.mem[c.wblob:c.wblob + nw], n_cot * cfg.cols,
                                               ld.cb * cfg.rows, c.kh, c.kw, cfg)
        if ld.pool:
            return f" (pixel {oy},{ox} channel {co}; pooled input)"
        acc = golden.conv_accumulate(x.astype(np.int8), wt[co:co + 1], bias[co:co + 1], c.quant.zp_in,
                                     stride=(c.sy, c.sx), padding=(c.pad_t, c.pad_l, 8, 8),
                                     dilation=c.dil, bias_folded=True) if c.pad_t >= 0 else None
        acc_s = f"acc {int(acc[0, oy, ox])}, " if acc is not None else ""
        return (f" (pixel {oy},{ox} channel {co}: {acc_s}m0 {int(m0[co])}, shift {int(shift[co])}, "
                f"zp_out {c.quant.zp_out}, clamp [{c.quant.act_min}, {c.quant.act_max}])")
    return ""


def expect_error(bench: EngineBench, command: bytes, code: ErrorCode):
    """Run one bad command; both engines must refuse it with ``code`` and the simulator must stay usable."""
    sim, _ = bench.run([], [command], [])
    assert sim.status & Status.ERROR and Status.error_code(sim.status) == code, \
        f"expected {code.name}, engine status {sim.status:#x} ({Status.error_code(sim.status).name})"
    assert not bench.vl.read_reg(Reg.STATUS) & Status.BUSY
