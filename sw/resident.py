"""A program resident in the board's DRAM: uploaded once, then only pictures and answers cross the link.

On a board with external DRAM (:mod:`hw.boards.ulx3s_dram`) the engine's memory holds a whole program:
:class:`ResidentSession` checks that the DRAM initialised (``DRAM_INIT``, within an absolute deadline),
refuses a program larger than the memory before writing anything, and uploads the weights and the
command list only when the board's ``PROG_HASH`` registers do not already hold the program's hash
(:func:`program_hash`). Per frame (:meth:`ResidentSession.frame`) it checks the hash again (a board
reset clears it: the program is uploaded again), writes the input picture, starts the whole command
list and reads back only the program's outputs (SqueezeNet's 1000 logits, RFSong-779's head tensors).

:func:`fps_estimate` turns a frame's measured cycles and link bytes into frames per second, bounded by
compute, DRAM bandwidth and the link.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import numpy as np

from hw.boards.ulx3s_dram import INIT_MAGIC, DramReg, InitBits, init_status
from hw.link import protocol as P
from sw.compiler import Program
from sw.driver import Driver
from sw.runtime import Inference, Session
from sw.transport import Transport, TransportError

__all__ = ["DramInitError", "ProgramTooLarge", "program_hash", "has_dram", "wait_dram_init", "ResidentSession",
           "FrameStats", "FpsEstimate", "fps_estimate", "frame_wire_bytes", "DRAM_BYTES_PER_CYCLE"]

#: Measured sequential bandwidth of the ULX3S SDRAM through LiteDRAM (tests/test_litedram_sim.py: 4096
#: 16-bit words read in 4269 cycles, refresh included): bytes per clock cycle.
DRAM_BYTES_PER_CYCLE = 2 * 4096 / 4269


class DramInitError(TransportError):
    """The board's DRAM did not initialise (``DRAM_INIT`` reports an error, a timeout, or stays busy)."""


class ProgramTooLarge(TransportError):
    """The program needs more memory than the board's DRAM has; nothing was uploaded."""


def program_hash(program: Program) -> int:
    """A 64-bit hash (never 0) of everything the upload writes: configuration, weight blobs, commands."""
    h = hashlib.sha256()
    h.update(repr(program.config).encode())
    for addr, words in program.blobs:
        h.update(int(addr).to_bytes(8, "little"))
        h.update(np.ascontiguousarray(np.asarray(words, dtype=np.int8)).tobytes())
    h.update(int(program.cmd_addr).to_bytes(8, "little"))
    h.update(b"".join(program.commands))
    return int.from_bytes(h.digest()[:8], "little") or 1


def _port(t: Transport) -> str:
    return str(getattr(t, "port_name", None) or getattr(t, "board", None) or type(t).__name__)


def has_dram(t: Transport) -> bool:
    """The board answers ``DRAM_INIT`` with :data:`INIT_MAGIC` (boards without DRAM read 0 there)."""
    return t.read_reg(DramReg.DRAM_INIT) >> 16 == INIT_MAGIC


def wait_dram_init(t: Transport, *, timeout: float = 5.0, poll: float = 0.05) -> int:
    """``DRAM_INIT`` once it says DONE; the deadline is absolute (``timeout`` seconds from the call).

    Raises
    ------
    DramInitError
        Not a DRAM board, the init sequencer reports ERROR or TIMEOUT, or DONE is still low at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        v = t.read_reg(DramReg.DRAM_INIT)
        if v >> 16 != INIT_MAGIC:
            raise DramInitError(f"{_port(t)}: DRAM_INIT reads {init_status(v)}: this board has no DRAM")
        if v & InitBits.DONE:
            return v
        if v & (InitBits.ERROR | InitBits.TIMEOUT):
            raise DramInitError(f"{_port(t)}: the board's DRAM did not initialise: DRAM_INIT={init_status(v)}; "
                                f"power-cycle the board (check the SDRAM clock and the bitstream's DRAM config)")
        if time.monotonic() >= deadline:
            raise DramInitError(f"{_port(t)}: the board's DRAM still initialising after {timeout:g} s: "
                                f"DRAM_INIT={init_status(v)}")
        time.sleep(poll)


@dataclasses.dataclass
class FrameStats:
    """One frame on the link: bytes each way, engine cycles, wall time, whether the program was uploaded."""

    bytes_out: int
    bytes_in: int
    cycles: int | None
    wall_s: float
    uploaded: bool

    @property
    def bytes(self) -> int:
        return self.bytes_out + self.bytes_in


class ResidentSession(Session):
    """``program`` kept in the board's DRAM, uploaded only when the board does not hold it already.

    Parameters
    ----------
    program : Program
        Compiled for the board's own configuration (no staging).
    driver : Driver
        On a transport to a board with DRAM (:class:`sw.backends.serial.SerialBackend`).
    identify : bool
        Check the engine's identification first.
    init_timeout : float
        Seconds the DRAM has to report DONE.

    Attributes
    ----------
    hash : int
        :func:`program_hash` of the program.
    uploads : int
        Uploads done by this session (0 when the board already held the program).
    upload_bytes : int
        Bytes the uploads wrote (payload).

    Raises
    ------
    DramInitError
        See :func:`wait_dram_init`.
    ProgramTooLarge
        ``program.mem_words`` exceeds the board's memory (checked before any write).
    """

    def __init__(self, program: Program, driver: Driver, *, identify: bool = True, init_timeout: float = 5.0):
        self.program = program
        self.driver = driver
        t = driver.t
        if identify:
            driver.identify()
        self.init = wait_dram_init(t, timeout=init_timeout)
        mem_words = getattr(t, "mem_words", None)
        if mem_words is not None and program.mem_words > mem_words:
            wb = program.config.rows
            raise ProgramTooLarge(f"{_port(t)}: the program needs {program.mem_words:,} words "
                                  f"({program.mem_words * wb / 2**20:.1f} MB), the board's DRAM holds {mem_words:,} "
                                  f"({mem_words * wb / 2**20:.1f} MB): not uploaded")
        self.hash = program_hash(program)
        self.uploads = 0
        self.upload_bytes = 0
        self.ensure_uploaded()

    def board_hash(self) -> int:
        """The hash the board holds (0 after a reset)."""
        t = self.driver.t
        if hasattr(t, "read_regs"):
            lo, hi = t.read_regs(DramReg.PROG_HASH_LO, 2)
        else:
            lo, hi = t.read_reg(DramReg.PROG_HASH_LO), t.read_reg(DramReg.PROG_HASH_HI)
        return hi << 32 | lo

    def ensure_uploaded(self) -> bool:
        """Upload the program unless the board holds it; True when it was uploaded now."""
        if self.board_hash() == self.hash:
            return False
        self.upload()
        return True

    def upload(self) -> None:
        """Write the weights and the command list, then the hash (cleared first: a cut upload leaves none)."""
        t, p = self.driver.t, self.program
        t.write_reg(DramReg.PROG_HASH_LO, 0)
        t.write_reg(DramReg.PROG_HASH_HI, 0)
        wait_dram_init(t, timeout=1.0)   # a board reset restarts the initialisation
        n = 0
        for addr, words in p.blobs:
            self.driver.write_words(addr, words)
            n += np.asarray(words).size
        self.driver.write_commands(p.cmd_addr, p.commands)
        n += sum(len(c) for c in p.commands)
        t.write_reg(DramReg.PROG_HASH_LO, self.hash & 0xFFFFFFFF)
        t.write_reg(DramReg.PROG_HASH_HI, self.hash >> 32)
        self.uploads += 1
        self.upload_bytes += n

    def frame(self, x_q: np.ndarray, *, timeout: float = 3600.0) -> tuple[Inference, FrameStats]:
        """One picture: the program checked (uploaded again after a board reset), the input written, one run
        of the whole command list, the outputs read; with the link bytes of the frame."""
        stats = getattr(self.driver.t, "stats", None)
        b0 = (stats.bytes_out, stats.bytes_in) if stats is not None else (0, 0)
        t0 = time.monotonic()
        uploaded = self.ensure_uploaded()
        if uploaded and stats is not None:
            b0 = (stats.bytes_out, stats.bytes_in)   # the frame's own bytes, the upload apart
        inf = self.run_int8(x_q, profile=False, timeout=timeout)
        b1 = (stats.bytes_out, stats.bytes_in) if stats is not None else (0, 0)
        return inf, FrameStats(bytes_out=b1[0] - b0[0], bytes_in=b1[1] - b0[1], cycles=inf.run.cycles,
                               wall_s=time.monotonic() - t0, uploaded=uploaded)


@dataclasses.dataclass
class FpsEstimate:
    """Frames per second of one network on one board, and what bounds it."""

    clk_hz: float
    cycles: int                # engine cycles of one frame (DRAM stalls included when measured on DRAM)
    dram_bytes: int            # bytes the engine moves to and from the DRAM per frame
    link_bytes: int            # bytes on the link per frame, both ways
    baud: int
    dram_bytes_per_cycle: float = DRAM_BYTES_PER_CYCLE

    @property
    def fps_compute(self) -> float:
        return self.clk_hz / self.cycles

    @property
    def fps_memory(self) -> float:
        return self.clk_hz * self.dram_bytes_per_cycle / self.dram_bytes

    @property
    def fps_link(self) -> float:
        return self.baud / 10 / self.link_bytes      # 8N1: 10 bits a byte

    @property
    def fps(self) -> float:
        """Picture in, run, answer out, one after the other (the link is idle while the engine runs)."""
        return 1 / (max(self.cycles / self.clk_hz, self.dram_bytes / (self.clk_hz * self.dram_bytes_per_cycle))
                    + 10 * self.link_bytes / self.baud)

    def summary(self) -> str:
        return (f"frames/s: compute-bound {self.fps_compute:.2f} ({self.cycles:,} cycles at "
                f"{self.clk_hz / 1e6:g} MHz), "
                f"memory-bound {self.fps_memory:.2f} ({self.dram_bytes / 1e6:.2f} MB at "
                f"{self.dram_bytes_per_cycle * self.clk_hz / 1e6:.0f} MB/s), link-bound {self.fps_link:.2f} "
                f"({self.link_bytes:,} B at {self.baud / 1e6:g} Mbaud); end to end {self.fps:.2f}")


def fps_estimate(program: Program, *, cycles: int, link_bytes: int, clk_hz: float, baud: int,
                 dram_bytes_per_cycle: float = DRAM_BYTES_PER_CYCLE) -> FpsEstimate:
    """:class:`FpsEstimate` of ``program`` from a frame's measured ``cycles`` and ``link_bytes``."""
    dram = sum(s.read_bytes + s.write_bytes for s in program.steps)
    return FpsEstimate(clk_hz=clk_hz, cycles=cycles, dram_bytes=dram, link_bytes=link_bytes, baud=baud,
                       dram_bytes_per_cycle=dram_bytes_per_cycle)


def frame_wire_bytes(program: Program, *, waits: int = 1) -> tuple[int, int]:
    """(host to board, board to host) bytes on the wire of one :meth:`ResidentSession.frame` without upload.

    The requests, in order: the hash (one ``READ_REG`` of two registers), the picture (``WRITE_MEM`` in
    :data:`~hw.link.protocol.MAX_PAYLOAD` chunks), ``CTRL``/``CMD_ADDR``/``CMD_COUNT``/``CTRL`` writes,
    ``waits`` ``WAIT`` requests, ``CYCLES`` and ``ACTIVE``, each output (``READ_MEM`` chunks). Every answer
    without error or resend. The full-system test checks this model against the bytes measured.
    """
    R = program.config.rows
    reqs = [(P.Op.READ_REG, 8)]
    (inp,) = program.inputs
    v = program.views[inp]
    reqs += _chunks(P.Op.WRITE_MEM, v.h * v.w * v.cb(R) * R)
    reqs += [(P.Op.WRITE_REG, 4)] * 4 + [(P.Op.WAIT, 0)] * waits + [(P.Op.READ_REG, 4)] * 2
    for name in program.outputs:
        o = program.views[name]
        reqs += _chunks(P.Op.READ_MEM, ((o.h * o.w - 1) * o.pix + o.cb(R)) * R)
    return (sum(P.request_wire_bytes(op, n) for op, n in reqs), sum(P.answer_wire_bytes(op, n) for op, n in reqs))


def _chunks(op: P.Op, nbytes: int) -> list:
    return [(op, min(P.MAX_PAYLOAD, nbytes - off)) for off in range(0, nbytes, P.MAX_PAYLOAD)]
