"""The host driver: one API over every backend (golden model, Verilator, a board).

The driver talks to a :class:`sw.transport.Transport` only. It checks the
engine's identity and configuration before anything else, writes memory images
and command lists, starts runs, waits, and turns an error status into a
:class:`CommandError` naming the command and the reason.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from hw.isa import (
    CMD_BYTES,
    ENGINE_ID,
    PROFILE_FIELDS,
    PROFILE_RECORD_BYTES,
    VERSION,
    Ctrl,
    EngineConfig,
    ErrorCode,
    Reg,
    Status,
)
from sw.isa_exec import CommandError
from sw.transport import Transport

__all__ = ["Driver", "RunResult", "EngineMismatch", "CommandError"]


class EngineMismatch(RuntimeError):
    """The engine at the other end is not the one the program was compiled for."""


@dataclasses.dataclass
class RunResult:
    status: int
    commands: int
    cycles: int | None           # engine cycles of the run (None for backends without time)
    active: int | None           # cycles in which the array took a vector
    profile: list[dict[str, int]] | None  # hw.isa.PROFILE_FIELDS counters per command, when profiled
    wall_s: float


class Driver:
    """Drive one engine through a transport.

    Parameters
    ----------
    transport : Transport
    config : EngineConfig
        The configuration the host expects; :meth:`identify` checks it against the engine's.
    timed : bool
        Whether the backend counts cycles (False for the golden backend).
    """

    def __init__(self, transport: Transport, config: EngineConfig, *, timed: bool = True):
        self.t = transport
        self.config = config
        self.timed = timed

    def identify(self) -> EngineConfig:
        """Read ID, VERSION and CONFIG; raise :class:`EngineMismatch` unless they match this driver.

        Raises
        ------
        EngineMismatch
            Wrong identification register, incompatible version or different configuration.
        """
        ident = self.t.read_reg(Reg.ID)
        if ident != ENGINE_ID:
            raise EngineMismatch(f"ID register reads {ident:#010x}, expected {ENGINE_ID:#010x}: not this engine")
        version = self.t.read_reg(Reg.VERSION)
        major = version >> 16
        if major != VERSION[0]:
            raise EngineMismatch(f"engine command set v{major}.{version & 0xFFFF}, driver speaks v{VERSION[0]}.x")
        words = tuple(self.t.read_reg(r) for r in (Reg.CONFIG0, Reg.CONFIG1, Reg.CONFIG2))
        try:
            found = EngineConfig.from_config_words(*words)
        except ValueError as e:
            raise EngineMismatch(f"engine reports an invalid configuration {words}: {e}") from None
        if found != self.config:
            raise EngineMismatch(f"engine is configured as {found}, the program needs {self.config}")
        return found

    # ---- memory ------------------------------------------------------------------------------
    def write_words(self, addr: int, words: np.ndarray) -> None:
        words = np.ascontiguousarray(np.asarray(words, dtype=np.int8))
        if words.ndim != 2 or words.shape[1] != self.config.rows:
            raise ValueError(f"words must be (n, {self.config.rows}) int8, got {words.shape}")
        self.t.write_mem(addr, words.tobytes())

    def read_words(self, addr: int, n: int) -> np.ndarray:
        raw = self.t.read_mem(addr, n)
        return np.frombuffer(raw, dtype=np.int8).reshape(n, self.config.rows).copy()

    def write_commands(self, addr: int, commands: list[bytes]) -> None:
        raw = b"".join(commands)
        if any(len(c) != CMD_BYTES for c in commands):
            raise ValueError(f"every command must be {CMD_BYTES} bytes")
        # Commands shorter than a word (rows > 64 cannot happen) are whole words by construction.
        self.t.write_mem(addr, raw)

    # ---- runs --------------------------------------------------------------------------------
    def run(self, cmd_addr: int, count: int, *, profile_addr: int | None = None, timeout: float = 600.0,
            max_cycles: int | None = None) -> RunResult:
        """Run ``count`` commands from ``cmd_addr`` and wait for the end.

        Raises
        ------
        CommandError
            The engine refused a command (its index and :class:`ErrorCode`); the engine is idle again.
        sw.transport.EngineTimeout
            The run did not finish within ``timeout`` seconds or ``max_cycles`` cycles.
        """
        t0 = time.monotonic()
        self.start(cmd_addr, count, profile_addr=profile_addr)
        return self.finish(count, profile_addr=profile_addr, timeout=timeout, max_cycles=max_cycles, t0=t0)

    def start(self, cmd_addr: int, count: int, *, profile_addr: int | None = None) -> None:
        """Start ``count`` commands from ``cmd_addr`` and return at once (the link is free during the run:
        :mod:`sw.resident` sends the next picture meanwhile); :meth:`finish` waits for the end."""
        self.t.write_reg(Reg.CTRL, Ctrl.CLEAR)
        self.t.write_reg(Reg.CMD_ADDR, cmd_addr)
        self.t.write_reg(Reg.CMD_COUNT, count)
        ctrl = Ctrl.START
        if profile_addr is not None:
            self.t.write_reg(Reg.PROF_ADDR, profile_addr)
            ctrl |= Ctrl.PROFILE
        self.t.write_reg(Reg.CTRL, ctrl)

    def finish(self, count: int, *, profile_addr: int | None = None, timeout: float = 600.0,
               max_cycles: int | None = None, t0: float | None = None) -> RunResult:
        """Wait for the run :meth:`start` began (of ``count`` commands); its :class:`RunResult` (``wall_s``
        from ``t0``, default now). Raises as :meth:`run`."""
        t0 = time.monotonic() if t0 is None else t0
        status = self.t.wait_done(timeout=timeout, max_cycles=max_cycles)
        wall = time.monotonic() - t0
        if status & Status.ERROR:
            index = self.t.read_reg(Reg.CMD_INDEX)
            raise CommandError(index, Status.error_code(status))
        if not status & Status.DONE:
            raise RuntimeError(f"engine stopped without DONE (STATUS={status:#x})")
        cycles = self.t.read_reg(Reg.CYCLES) if self.timed else None
        active = self.t.read_reg(Reg.ACTIVE) if self.timed else None
        profile = None
        if profile_addr is not None:
            pw = self.config.profile_words
            raw = self.t.read_mem(profile_addr, count * pw)
            rec = np.frombuffer(raw, dtype=np.uint8).reshape(count, pw * self.config.rows)[:, :PROFILE_RECORD_BYTES]
            vals = rec.copy().view("<u4").reshape(count, len(PROFILE_FIELDS))
            profile = [dict(zip(PROFILE_FIELDS, map(int, v), strict=True)) for v in vals] if self.timed else None
        return RunResult(status=status, commands=count, cycles=cycles, active=active, profile=profile, wall_s=wall)


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"unknown error {code}"
