"""The golden backend: the engine's registers and memory, with commands executed by the golden model."""

from __future__ import annotations

from hw.isa import ENGINE_ID, VERSION, Ctrl, EngineConfig, ErrorCode, Reg, Status
from sw.isa_exec import IsaMachine
from sw.transport import Transport, TransportError

__all__ = ["GoldenBackend"]


class GoldenBackend(Transport):
    """A :class:`~sw.transport.Transport` whose engine is :class:`sw.isa_exec.IsaMachine`.

    Same registers, same memory image, same error codes as the gateware; a
    START runs the whole command list at once (no cycles: ``CYCLES`` and the
    profile records read zero). Seconds for a whole network, which makes it the
    reference for every other backend.

    Parameters
    ----------
    config : EngineConfig
    mem_words : int
        Memory size in words.
    """

    def __init__(self, config: EngineConfig | None = None, *, mem_words: int = 1 << 20):
        config = EngineConfig() if config is None else config
        self.config = config
        self.word_bytes = config.rows
        self.machine = IsaMachine(config, mem_words)
        self._regs = {Reg.CMD_ADDR: 0, Reg.CMD_COUNT: 0, Reg.CMD_INDEX: 0, Reg.PROF_ADDR: 0, Reg.SCRATCH: 0,
                      Reg.CYCLES: 0, Reg.ACTIVE: 0}
        self._status = 0
        self._closed = False

    @property
    def mem_words(self) -> int:
        return len(self.machine.mem)

    def _check_range(self, addr: int, n: int):
        if addr < 0 or n < 0 or addr + n > self.mem_words:
            raise TransportError(f"words [{addr}, {addr + n}) outside the memory of {self.mem_words} words")

    def write_mem(self, addr_words: int, data: bytes) -> None:
        R = self.word_bytes
        if len(data) % R:
            raise TransportError(f"{len(data)} bytes is not a whole number of {R}-byte words")
        n = len(data) // R
        self._check_range(addr_words, n)
        import numpy as np
        self.machine.mem[addr_words:addr_words + n] = np.frombuffer(data, dtype=np.int8).reshape(n, R)

    def read_mem(self, addr_words: int, n_words: int) -> bytes:
        self._check_range(addr_words, n_words)
        return self.machine.mem[addr_words:addr_words + n_words].tobytes()

    def write_reg(self, reg, value: int) -> None:
        reg = Reg(reg)
        value &= 0xFFFF_FFFF
        if reg == Reg.CTRL:
            if value & Ctrl.CLEAR:
                self._status = 0
            if value & Ctrl.START:
                self._run(bool(value & Ctrl.PROFILE))
        elif reg in (Reg.CMD_ADDR, Reg.CMD_COUNT, Reg.PROF_ADDR, Reg.SCRATCH):
            self._regs[reg] = value

    def _run(self, profile: bool):
        code, index = self.machine.run(self._regs[Reg.CMD_ADDR], self._regs[Reg.CMD_COUNT],
                                       self._regs[Reg.PROF_ADDR] if profile else None)
        self._regs[Reg.CMD_INDEX] = index
        if code == ErrorCode.NONE:
            self._status = Status.DONE
        else:
            self._status = Status.ERROR | (code.value << 8)

    def read_reg(self, reg) -> int:
        reg = Reg(reg)
        c0, c1, c2 = self.config.config_words()
        fixed = {Reg.ID: ENGINE_ID, Reg.VERSION: (VERSION[0] << 16) | VERSION[1], Reg.CONFIG0: c0,
                 Reg.CONFIG1: c1, Reg.CONFIG2: c2, Reg.STATUS: self._status}
        if reg in fixed:
            return int(fixed[reg])
        return int(self._regs.get(reg, 0))

    def wait_done(self, timeout: float = 60.0, *, max_cycles: int | None = None) -> int:
        return self._status

    def close(self) -> None:
        self._closed = True
