""":class:`StagedTransport`: a program's whole memory on the host, its runs staged through a small board."""

from __future__ import annotations

import time

import numpy as np

from hw.isa import (
    CMD_BYTES,
    PROFILE_FIELDS,
    PROFILE_RECORD_BYTES,
    Ctrl,
    EngineConfig,
    ErrorCode,
    Reg,
    Status,
    check_command,
)
from sw.compiler import Program
from sw.transport import EngineTimeout, Transport, TransportError

from .commands import StagingError, relocate_command
from .plan import StagingPlan, _compatible, plan_staging


class StagedTransport(Transport):
    """A program's whole memory on the host, its runs staged through a small board.

    Parameters
    ----------
    board : Transport
        The board's transport (:class:`sw.backends.serial.SerialBackend`, or
        any other: the tests stage through a golden backend).
    program : Program
        The program whose commands runs will execute (``CMD_ADDR`` must point
        into its command list).
    board_words : int or None
        Board memory to use; default ``board.mem_words``.

    Registers: ``ID``, ``VERSION`` and ``SCRATCH`` are the board's;
    ``CONFIG0..2`` read as the program's configuration (the board's, except
    for the address width, since the host image is the memory the driver
    sees, and maybe a shallower buffer, see :func:`compile_for_board`);
    ``CMD_ADDR``, ``CMD_COUNT``, ``PROF_ADDR`` are kept here;
    ``CTRL.START`` records a run that :meth:`wait_done` carries out;
    ``STATUS``, ``CMD_INDEX`` describe it (the index in the whole run) and
    ``CYCLES``, ``ACTIVE`` add up its groups. A step run in slices gets one
    profile record, the sum of its slices'.

    Raises
    ------
    StagingError
        If the board's engine is not the program's (array, buffers) or its
        memory words differ.
    """

    def __init__(self, board: Transport, program: Program, *, board_words: int | None = None):
        self.board = board
        self.program = program
        cfg = program.config
        if board.word_bytes != cfg.rows:
            raise StagingError(f"the board's words are {board.word_bytes} bytes, the program's {cfg.rows}")
        words = [board.read_reg(r) for r in (Reg.CONFIG0, Reg.CONFIG1, Reg.CONFIG2)]
        try:
            self.board_config = EngineConfig.from_config_words(*words)
        except ValueError as e:
            raise StagingError(f"the board reports an invalid configuration {words}: {e}") from None
        if not _compatible(self.board_config, cfg):
            raise StagingError(f"the board's engine is {self.board_config}, the program was compiled for {cfg}")
        self.word_bytes = cfg.rows
        self.board_words = board_words if board_words is not None else board.mem_words
        self.mem_words = program.mem_words
        self.image = bytearray(program.mem_words * cfg.rows)
        self._regs = {Reg.CMD_ADDR: 0, Reg.CMD_COUNT: 0, Reg.PROF_ADDR: 0, Reg.CMD_INDEX: 0, Reg.CYCLES: 0,
                      Reg.ACTIVE: 0}
        self._status = 0
        self._pending = None
        self._plans: dict = {}
        #: Memory bytes moved by the staging so far, and groups run.
        self.bytes_up = 0
        self.bytes_down = 0
        self.groups_run = 0

    def _check(self, addr, n):
        if addr < 0 or n < 0 or addr + n > self.mem_words:
            raise TransportError(f"words [{addr}, {addr + n}) are outside the program's memory ({self.mem_words})")

    def write_mem(self, addr_words: int, data: bytes) -> None:
        R = self.word_bytes
        if len(data) % R:
            raise TransportError(f"{len(data)} bytes is not a whole number of {R}-byte words")
        self._check(addr_words, len(data) // R)
        self.image[addr_words * R:addr_words * R + len(data)] = data

    def read_mem(self, addr_words: int, n_words: int) -> bytes:
        R = self.word_bytes
        self._check(addr_words, n_words)
        return bytes(self.image[addr_words * R:(addr_words + n_words) * R])

    def write_reg(self, reg: Reg | int, value: int) -> None:
        reg = Reg(reg)
        if reg in (Reg.CMD_ADDR, Reg.CMD_COUNT, Reg.PROF_ADDR):
            self._regs[reg] = value & 0xFFFFFFFF
        elif reg == Reg.CTRL:
            if value & Ctrl.CLEAR:
                self._status &= ~(int(Status.DONE) | int(Status.ERROR) | 0xF00)
            if value & Ctrl.START and not self._status & Status.BUSY:
                self._status = Status.BUSY
                self._pending = (self._regs[Reg.CMD_ADDR], self._regs[Reg.CMD_COUNT], self._regs[Reg.PROF_ADDR],
                                 bool(value & Ctrl.PROFILE))
        else:
            self.board.write_reg(reg, value)

    def read_reg(self, reg: Reg | int) -> int:
        reg = Reg(reg)
        if reg == Reg.STATUS:
            return self._status
        if reg in self._regs:
            return self._regs[reg]
        if reg in (Reg.CONFIG0, Reg.CONFIG1, Reg.CONFIG2):
            return self.program.config.config_words()[reg - Reg.CONFIG0]
        return self.board.read_reg(reg)

    def plan(self, first: int, count: int, profile: bool) -> StagingPlan:
        """The (cached) plan of a run."""
        key = (first, count, profile)
        if key not in self._plans:
            self._plans[key] = plan_staging(self.program, self.board_words, first=first, count=count,
                                            profile=profile)
        return self._plans[key]

    def wait_done(self, timeout: float = 60.0, *, max_cycles: int | None = None) -> int:
        """Carry out the recorded run, group by group, within ``timeout`` seconds in all.

        Raises
        ------
        StagingError
            If ``CMD_ADDR`` is not in the program's command list.
        EngineTimeout
            If a group does not finish in the time left.
        """
        if self._pending is None:
            return self._status
        cmd_addr, count, prof_addr, profile = self._pending
        self._pending = None
        p, cfg = self.program, self.program.config
        R = cfg.rows
        first, rem = divmod(cmd_addr - p.cmd_addr, cfg.cmd_words)
        if rem or first < 0 or first + count > len(p.steps):
            self._status = Status.ERROR | (ErrorCode.BAD_ADDRESS.value << 8)
            raise StagingError(f"CMD_ADDR={cmd_addr}, CMD_COUNT={count} is not a run of the program's commands "
                               f"(words {p.cmd_addr}.. in steps of {cfg.cmd_words})")
        deadline = time.monotonic() + timeout
        cycles = active = 0
        plan = self.plan(first, count, profile)
        b = self.board
        pw = cfg.profile_words
        records = np.zeros((count, len(PROFILE_FIELDS)), dtype=np.int64)
        image = np.frombuffer(self.image, dtype=np.uint8).reshape(-1, R)
        for g in plan.groups:
            for s, e in g.uploads:
                self._put(g.move(s), self.image[s * R:e * R])
            for u, at in zip(g.units, g.gather_at, strict=True):
                if u.gather:
                    ga = u.gather
                    rows = ga.src + np.arange(ga.n_pix)[:, None] * ga.pix + np.arange(ga.cb)[None, :]
                    self._put(at, image[rows.reshape(-1)].tobytes())
            cmds = []
            for u, s_at, g_at in zip(g.units, g.scatter_at, g.gather_at, strict=True):
                moved = relocate_command(u.command, g.move, src=g_at if u.gather else None,
                                         dst=s_at if u.scatter else None)
                code = check_command(self.board_config, moved)
                if code != ErrorCode.NONE and check_command(cfg, u.command) == ErrorCode.NONE:
                    raise StagingError(f"step {u.step} becomes invalid on the board once relocated ({code.name})")
                cmds.append(moved + bytes(cfg.cmd_words * R - CMD_BYTES))
            self._put(g.cmd_at, b"".join(cmds))
            board_prof = g.cmd_at + g.count * cfg.cmd_words
            b.write_reg(Reg.CTRL, Ctrl.CLEAR)
            b.write_reg(Reg.CMD_ADDR, g.cmd_at)
            b.write_reg(Reg.CMD_COUNT, g.count)
            ctrl = Ctrl.START
            if profile:
                b.write_reg(Reg.PROF_ADDR, board_prof)
                ctrl |= Ctrl.PROFILE
            b.write_reg(Reg.CTRL, ctrl)
            try:
                status = b.wait_done(timeout=max(0.0, deadline - time.monotonic()), max_cycles=max_cycles)
            except EngineTimeout as e:
                self._status = Status.BUSY
                raise EngineTimeout(f"staged run: group {self.groups_run + 1} (steps {g.units[0].step}.."
                                    f"{g.units[-1].step}) did not finish: {e}", status=e.status,
                                    cycles=e.cycles) from e
            self.groups_run += 1
            regs = (b.read_regs(Reg.CYCLES, 2) if hasattr(b, "read_regs")
                    else [b.read_reg(Reg.CYCLES), b.read_reg(Reg.ACTIVE)])
            cycles += regs[0]
            active += regs[1]
            if status & Status.ERROR:
                self._regs[Reg.CMD_INDEX] = g.units[b.read_reg(Reg.CMD_INDEX)].step - first
                self._status = int(status) & ~int(Status.BUSY)
                break
            for s, e in g.downloads:
                self.image[s * R:e * R] = self._get(g.move(s), e - s)
            for u, at, fetch in zip(g.units, g.scatter_at, g.fetch, strict=True):
                if fetch:
                    sc = u.scatter
                    got = np.frombuffer(self._get(at, sc.n_pix * sc.words), dtype=np.uint8).reshape(sc.n_pix,
                                                                                                   sc.words, R)
                    base = sc.dst + np.arange(sc.n_pix) * sc.pix
                    for src_w, dst_w, n in sc.pieces:
                        for w in range(n):
                            image[base + dst_w + w] = got[:, src_w + w]
            if profile:
                raw = np.frombuffer(self._get(board_prof, g.count * pw), dtype=np.uint8).reshape(g.count, pw * R)
                vals = raw[:, :PROFILE_RECORD_BYTES].copy().view("<u4").reshape(g.count, len(PROFILE_FIELDS))
                for u, v in zip(g.units, vals, strict=True):
                    records[u.step - first] += v
        else:
            self._regs[Reg.CMD_INDEX] = count
            self._status = Status.DONE
        if profile:
            # One record per program step (the slices of a step add up), where the driver reads them.
            rec = np.zeros((count, pw * R), dtype=np.uint8)
            rec[:, :PROFILE_RECORD_BYTES] = (records & 0xFFFFFFFF).astype("<u4").view(np.uint8).reshape(count, -1)
            self.image[prof_addr * R:(prof_addr + count * pw) * R] = rec.tobytes()
        self._regs[Reg.CYCLES] = cycles & 0xFFFFFFFF
        self._regs[Reg.ACTIVE] = active & 0xFFFFFFFF
        return self._status

    def _put(self, addr: int, data) -> None:
        self.board.write_mem(addr, bytes(data))
        self.bytes_up += len(data)

    def _get(self, addr: int, n: int) -> bytes:
        out = self.board.read_mem(addr, n)
        self.bytes_down += len(out)
        return out

    def cycles(self):
        return None

    def close(self) -> None:
        self.board.close()
