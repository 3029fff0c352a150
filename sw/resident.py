"""A program resident in the board's DRAM: uploaded once, then only pictures and answers cross the link.

On a board with external DRAM (:mod:`hw.boards.dram_board`) the engine's memory holds a whole program:
:class:`ResidentSession` checks that the DRAM initialised (``DRAM_INIT``, within an absolute deadline),
refuses a program larger than the memory before writing anything, and uploads the weights and the
command list only when the board's ``PROG_HASH`` registers do not already hold the program's hash
(:func:`program_hash`). Per frame (:meth:`ResidentSession.frame`) it checks the hash again (a board
reset clears it: the program is uploaded again), writes the input picture, starts the whole command
list and reads back only the program's outputs (SqueezeNet's 1000 logits, RFSong-779's head tensors).

A 3-channel picture goes up as 3 bytes a pixel (``WRITE_PIX``, :meth:`sw.transport.Transport.write_pixels`)
when the program's input is one word a pixel with the channels in lanes 0..2 (:func:`pixel_input`); a
board without the op gets the words. When the board's memory has room, the session keeps a second
input buffer and a second copy of the command list reading from it (:func:`relocate_input`), and
:meth:`ResidentSession.frames` double-buffers: it starts the run of picture N, sends picture N+1 into the
other buffer while the engine runs, then waits and reads the outputs of N. The board's
``RUN_LINK_WORDS``/``RUN_LINK_BYTES`` registers count what the link wrote during each run.

:func:`fps_estimate` turns a frame's measured cycles and link bytes into frames per second, bounded by
compute, DRAM bandwidth and the link, with the next picture's upload overlapped with the run and without.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import numpy as np

from hw.boards.dram_board import INIT_MAGIC, DramReg, InitBits, init_status
from hw.isa import ADDR_BITS, COMMAND_LAYOUTS, LoadSpec, unpack_command
from hw.link import protocol as P
from sw.compiler import Program
from sw.driver import Driver
from sw.leveling import ensure_leveled
from sw.runtime import Inference, Session
from sw.transport import Transport, TransportError

__all__ = ["DramInitError", "ProgramTooLarge", "program_hash", "has_dram", "wait_dram_init", "ResidentSession",
           "FrameStats", "FpsEstimate", "fps_estimate", "frame_wire_bytes", "DRAM_BYTES_PER_CYCLE",
           "BOARD_DRAM_BYTES_PER_CYCLE", "dram_bytes_per_cycle", "pixel_input",
           "picture_pixels", "relocate_input", "second_buffer", "picture_requests", "picture_wire_bytes"]

#: Measured sequential bandwidth of the ULX3S SDRAM through LiteDRAM (tests/test_litedram_sim.py: 4096
#: 16-bit words read in 4269 cycles, refresh included): bytes per clock cycle.
DRAM_BYTES_PER_CYCLE = 2 * 4096 / 4269

#: Bytes per cycle the engine gets from each DRAM board. ECPIX-5: a ceiling, not a measurement: every engine
#: word is one native command (hw.dram_port.WideDramPort), one DDR3 burst of 8, and at the ECP5DDRPHY's 1:2
#: rate a burst holds the DRAM bus for 2 sys cycles: 4 bytes per 2 cycles at most (the --sim core's 1:4
#: model moves a burst a cycle, so the simulation runs up to twice as fast on DRAM-bound layers).
BOARD_DRAM_BYTES_PER_CYCLE = {"ulx3s-85f": DRAM_BYTES_PER_CYCLE, "ecpix5-85f": 2.0}


def dram_bytes_per_cycle(board: str) -> float:
    """:data:`BOARD_DRAM_BYTES_PER_CYCLE` of ``board``."""
    try:
        return BOARD_DRAM_BYTES_PER_CYCLE[board]
    except KeyError:
        raise KeyError(f"no DRAM bandwidth for board {board!r}; DRAM boards: {', '.join(BOARD_DRAM_BYTES_PER_CYCLE)}") \
            from None


class DramInitError(TransportError):
    """The board's DRAM did not initialise (``DRAM_INIT`` reports an error, a timeout, or stays busy)."""


class ProgramTooLarge(TransportError):
    """The program needs more memory than the board's DRAM has; nothing was uploaded."""


def program_hash(program: Program, more_commands: tuple = ()) -> int:
    """A 64-bit hash (never 0) of everything the upload writes: configuration, weight blobs, commands, and
    ``more_commands`` (``(address, command list)`` pairs: the second buffer's copy)."""
    h = hashlib.sha256()
    h.update(repr(program.config).encode())
    for addr, words in program.blobs:
        h.update(int(addr).to_bytes(8, "little"))
        h.update(np.ascontiguousarray(np.asarray(words, dtype=np.int8)).tobytes())
    for addr, commands in ((program.cmd_addr, program.commands), *more_commands):
        h.update(int(addr).to_bytes(8, "little"))
        h.update(b"".join(commands))
    return int.from_bytes(h.digest()[:8], "little") or 1


def _input_view(program: Program):
    (inp,) = program.inputs
    return inp, program.views[inp]


def pixel_input(program: Program) -> bool:
    """The program's input can go up as :data:`~hw.link.protocol.PIXEL_BYTES`-byte pixels: 3 channels in
    lanes 0..2 of one word a pixel (words wider than a pixel), not pixel-pair packed, alone in its region."""
    inp, v = _input_view(program)
    return (inp not in program.packed_inputs and v.channels == P.PIXEL_BYTES
            and program.config.rows > P.PIXEL_BYTES and v.pix == 1 and v.offset == 0
            and np.array_equal(v.lanes, np.arange(P.PIXEL_BYTES)))


def picture_pixels(program: Program, x_q: np.ndarray) -> bytes:
    """The int8 ``(C, H, W)`` picture as ``WRITE_PIX`` sends it: pixels in row order, 3 channel bytes each."""
    inp, v = _input_view(program)
    x = np.asarray(x_q, dtype=np.int8).reshape(program.qgraph.tensors[inp].shape)
    return np.ascontiguousarray(x.transpose(1, 2, 0)).tobytes()


#: Where a command's band load reads from: the one field by which a command addresses the input.
_LOAD_SRC = {op: layout["load"].offset + LoadSpec["src"].offset for op, layout in COMMAND_LAYOUTS.items()}


def relocate_input(program: Program, base: int) -> list[bytes]:
    """The program's command list with its input read from the region at word ``base`` instead of its own.

    Every command whose band load's source lies in the input's region moves by the region's displacement.
    This is the one place that knows which command fields address the input (``hw.isa.LoadSpec.src``):
    adapt it when the command layout changes.

    Raises
    ------
    ValueError
        If the commands that read the input (``Step.source``) are not exactly those relocated.
    """
    inp, v = _input_view(program)
    lo, hi = v.root.addr, v.root.addr + v.root.words
    out, moved = [], []
    for i, raw in enumerate(program.commands):
        op, cmd = unpack_command(raw)
        if op is not None and lo <= cmd.load.src < hi:
            value = int.from_bytes(raw, "little")
            off, mask = _LOAD_SRC[op], (1 << ADDR_BITS) - 1
            src = cmd.load.src - lo + base
            value = value & ~(mask << off) | (src & mask) << off
            raw = value.to_bytes(len(raw), "little")
            moved.append(i)
        out.append(raw)
    readers = [i for i, step in enumerate(program.steps) if step.source == inp]
    if moved != readers:
        raise ValueError(f"the commands that read the input {inp!r} are {readers}, relocated {moved}")
    return out


def second_buffer(program: Program, mem_words: int | None) -> tuple[int, int] | None:
    """``(input region, command list)`` word addresses of the second input buffer, after the program's memory;
    None when the memory has no room or the input shares its region."""
    inp, v = _input_view(program)
    if any(o is not v and o.root is v.root for o in program.views.values()):
        return None
    base = program.mem_words
    cmds = base + v.root.words
    end = cmds + len(program.steps) * program.config.cmd_words
    if mem_words is None or end > mem_words or end > 1 << program.config.mem_addr_bits:
        return None
    return base, cmds


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
    """One frame on the link: bytes each way, engine cycles, wall time, whether the program was uploaded.

    ``picture_bytes`` are the wire bytes (both ways) of the picture writes in the frame, ``overlap_bytes`` the
    part of them sent while the engine ran (the next picture, double-buffered); ``run_link_words`` and
    ``run_link_bytes`` the board's ``RUN_LINK_*`` registers after the run (None where not read).
    """

    bytes_out: int
    bytes_in: int
    cycles: int | None
    wall_s: float
    uploaded: bool
    picture_bytes: int = 0
    overlap_bytes: int = 0
    run_link_words: int | None = None
    run_link_bytes: int | None = None

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
    double_buffer : bool
        Keep a second input buffer (and command list) when the memory has room (:func:`second_buffer`).

    Attributes
    ----------
    hash : int
        :func:`program_hash` of the program (and of the second buffer's commands).
    uploads : int
        Uploads done by this session (0 when the board already held the program).
    upload_bytes : int
        Bytes the uploads wrote (payload).
    leveling : sw.leveling.LevelResult or None
        The last DDR3 read-leveling scan (None: none ran: not DDR3, or the board was leveled already).
    buffers : list of (int, int)
        ``(input region, command list)`` word addresses of each input buffer (one or two).
    pixels : bool
        The input goes up as 3-byte pixels (:func:`pixel_input`; the transport decides whether as
        ``WRITE_PIX`` or as words).
    write_pix : bool
        ... as ``WRITE_PIX`` (the board has it: :attr:`sw.backends.serial.SerialBackend.has_write_pix`).

    Raises
    ------
    DramInitError
        See :func:`wait_dram_init`.
    sw.leveling.DramLevelingError
        DDR3 read leveling found no working setting.
    ProgramTooLarge
        ``program.mem_words`` exceeds the board's memory (checked before any write).
    """

    def __init__(self, program: Program, driver: Driver, *, identify: bool = True, init_timeout: float = 5.0,
                 double_buffer: bool = True):
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
        _, v = _input_view(program)
        self.buffers = [(v.root.addr, program.cmd_addr)]
        self._more_commands: list[tuple[int, list[bytes]]] = []
        second = second_buffer(program, mem_words) if double_buffer else None
        if second is not None:
            base, cmds = second
            self._more_commands.append((cmds, relocate_input(program, base)))
            self.buffers.append(second)
        self.pixels = pixel_input(program)
        # Whether the pictures go as WRITE_PIX: asked now (one header each way), not in the first frame.
        self.write_pix = self.pixels and bool(getattr(t, "has_write_pix", False))
        self.hash = program_hash(program, tuple(self._more_commands))
        self.uploads = 0
        self.upload_bytes = 0
        self.leveling = None
        self.ensure_uploaded()

    @property
    def double_buffered(self) -> bool:
        return len(self.buffers) > 1

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
        """Write the weights and the command lists, then the hash (cleared first: a cut upload leaves none)."""
        t, p = self.driver.t, self.program
        t.write_reg(DramReg.PROG_HASH_LO, 0)
        t.write_reg(DramReg.PROG_HASH_HI, 0)
        wait_dram_init(t, timeout=1.0)   # a board reset restarts the initialisation
        # DDR3 read leveling (sw.leveling) when DRAM_LEVEL reads 0: after a board reset, before the program.
        self.leveling = ensure_leveled(t, mem_words=getattr(t, "mem_words", None) or p.mem_words,
                                       word_bytes=p.config.rows) or self.leveling
        n = 0
        for addr, words in p.blobs:
            self.driver.write_words(addr, words)
            n += np.asarray(words).size
        for addr, commands in ((p.cmd_addr, p.commands), *self._more_commands):
            self.driver.write_commands(addr, commands)
            n += sum(len(c) for c in commands)
        t.write_reg(DramReg.PROG_HASH_LO, self.hash & 0xFFFFFFFF)
        t.write_reg(DramReg.PROG_HASH_HI, self.hash >> 32)
        self.uploads += 1
        self.upload_bytes += n

    def write_input(self, x_q: np.ndarray, buffer: int = 0) -> int:
        """Write the int8 picture into input buffer ``buffer``; return its bytes on the link (both ways)."""
        p = self.program
        inp, v = _input_view(p)
        base = self.buffers[buffer][0]
        b0 = sum(self._bytes())
        if self.pixels:
            self.driver.t.write_pixels(base, picture_pixels(p, x_q))
        else:
            _, words, _ = p.pack_tensor(inp, np.asarray(x_q).reshape(p.qgraph.tensors[inp].shape))
            self.driver.write_words(base + v.offset, words)
        return sum(self._bytes()) - b0

    def _outputs(self) -> dict[str, np.ndarray]:
        return {n: self.program.unpack_tensor(n, self.driver.read_words) for n in self.program.outputs}

    def frame(self, x_q: np.ndarray, *, timeout: float = 3600.0) -> tuple[Inference, FrameStats]:
        """One picture: the program checked (uploaded again after a board reset), the input written, one run
        of the whole command list, the outputs read; with the link bytes of the frame."""
        return next(self.frames([x_q], timeout=timeout, run_link=False))

    def frames(self, pictures, *, timeout: float = 3600.0, run_link: bool = True):
        """Run every picture of the iterable ``pictures``; yield ``(Inference, FrameStats)`` for each, in order.

        Double-buffered when there are two buffers: picture N's run is started, picture N+1 written into the
        other buffer while the engine computes, then the run awaited and its outputs read (a frame's bytes
        include the next picture's). Each frame checks the program's hash first (uploaded again, and the
        picture written again, after a board reset). ``run_link``: read ``RUN_LINK_WORDS``/``RUN_LINK_BYTES``
        after each run (one more register read a frame).
        """
        p, d = self.program, self.driver
        n = len(p.steps)
        it = iter(pictures)
        cur = next(it, None)
        k, written = 0, False
        while cur is not None:
            t0, b0 = time.monotonic(), self._bytes()
            uploaded = self.ensure_uploaded()
            if uploaded:
                b0 = self._bytes()   # the frame's own bytes, the upload apart
            picture = overlap = 0
            if uploaded or not written:
                picture += self.write_input(cur, k)
            d.start(self.buffers[k][1], n)
            nxt = next(it, None)
            nk = (k + 1) % len(self.buffers)
            written = nxt is not None and self.double_buffered
            if written:
                overlap = self.write_input(nxt, nk)
            res = d.finish(n, timeout=timeout, t0=t0)
            words = nbytes = None
            if run_link:
                words, nbytes = self._run_link()
            inf = Inference(tensors=self._outputs(), run=res)
            b1 = self._bytes()
            yield inf, FrameStats(bytes_out=b1[0] - b0[0], bytes_in=b1[1] - b0[1], cycles=res.cycles,
                                  wall_s=time.monotonic() - t0, uploaded=uploaded, picture_bytes=picture + overlap,
                                  overlap_bytes=overlap, run_link_words=words, run_link_bytes=nbytes)
            cur, k = nxt, nk

    def _bytes(self) -> tuple[int, int]:
        stats = getattr(self.driver.t, "stats", None)
        return (stats.bytes_out, stats.bytes_in) if stats is not None else (0, 0)

    def _run_link(self) -> tuple[int, int]:
        t = self.driver.t
        if hasattr(t, "read_regs"):
            words, nbytes = t.read_regs(DramReg.RUN_LINK_WORDS, 2)
        else:
            words, nbytes = t.read_reg(DramReg.RUN_LINK_WORDS), t.read_reg(DramReg.RUN_LINK_BYTES)
        return words, nbytes


@dataclasses.dataclass
class FpsEstimate:
    """Frames per second of one network on one board, and what bounds it.

    ``overlap_bytes`` of the frame's ``link_bytes`` can cross while the engine runs (the next picture, with
    two input buffers): :attr:`fps` = 1 / (max(engine, overlap on the link) + the rest on the link);
    :attr:`fps_sequential` = 1 / (engine + all of the link), one after the other.
    """

    clk_hz: float
    cycles: int                # engine cycles of one frame (DRAM stalls included when measured on DRAM)
    dram_bytes: int            # bytes the engine moves to and from the DRAM per frame
    link_bytes: int            # bytes on the link per frame, both ways
    baud: int
    dram_bytes_per_cycle: float = DRAM_BYTES_PER_CYCLE
    overlap_bytes: int = 0     # of link_bytes, those sent while the engine runs
    link_bytes_per_s: float = 0.0   # the link's rate when it is not a UART's baud / 10 (USB: hw.link.usb.usb_rates)

    @property
    def bytes_per_s(self) -> float:
        """The link's bytes per second: ``link_bytes_per_s``, else the UART's (8N1: 10 bits a byte)."""
        return self.link_bytes_per_s or self.baud / 10

    @property
    def fps_compute(self) -> float:
        return self.clk_hz / self.cycles

    @property
    def fps_memory(self) -> float:
        return self.clk_hz * self.dram_bytes_per_cycle / self.dram_bytes

    @property
    def fps_link(self) -> float:
        return self.bytes_per_s / self.link_bytes

    @property
    def engine_s(self) -> float:
        """Seconds of one run: compute or DRAM bandwidth, whichever bounds."""
        return max(self.cycles / self.clk_hz, self.dram_bytes / (self.clk_hz * self.dram_bytes_per_cycle))

    def link_s(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_s

    @property
    def fps(self) -> float:
        """The next picture sent during the run, the rest of the link after it."""
        return 1 / (max(self.engine_s, self.link_s(self.overlap_bytes))
                    + self.link_s(self.link_bytes - self.overlap_bytes))

    @property
    def fps_sequential(self) -> float:
        """Picture in, run, answer out, one after the other (the link is idle while the engine runs)."""
        return 1 / (self.engine_s + self.link_s(self.link_bytes))

    def summary(self) -> str:
        end = (f"end to end {self.fps:.2f} with the picture sent during the run: 1 / (max({self.engine_s:.3f}, "
               f"{self.link_s(self.overlap_bytes):.3f}) + {self.link_s(self.link_bytes - self.overlap_bytes):.4f} s); "
               f"{self.fps_sequential:.2f} one after the other" if self.overlap_bytes
               else f"end to end {self.fps:.2f}")
        return (f"frames/s: compute-bound {self.fps_compute:.2f} ({self.cycles:,} cycles at "
                f"{self.clk_hz / 1e6:g} MHz), "
                f"memory-bound {self.fps_memory:.2f} ({self.dram_bytes / 1e6:.2f} MB at "
                f"{self.dram_bytes_per_cycle * self.clk_hz / 1e6:.0f} MB/s), link-bound {self.fps_link:.2f} "
                f"({self.link_bytes:,} B at {self._rate()}); {end}")

    def _rate(self) -> str:
        return f"{self.link_bytes_per_s / 1e6:.1f} MB/s" if self.link_bytes_per_s else f"{self.baud / 1e6:g} Mbaud"


def fps_estimate(program: Program, *, cycles: int, link_bytes: int, clk_hz: float, baud: int,
                 dram_bytes_per_cycle: float = DRAM_BYTES_PER_CYCLE, overlap_bytes: int = 0) -> FpsEstimate:
    """:class:`FpsEstimate` of ``program`` from a frame's measured ``cycles`` and ``link_bytes`` (of which
    ``overlap_bytes`` can cross during the run). A board whose INFO reports USB's 480 Mbit/s as ``baud``
    runs at the USB link's request rate (:func:`hw.link.usb.usb_rates`: a frame's bytes are its picture)."""
    dram = sum(s.read_bytes + s.write_bytes for s in program.steps)
    rate = 0.0
    if baud == P.USB_HS_BAUD:
        from hw.link.usb import usb_rates

        rate = usb_rates(clk_hz)[0]
    return FpsEstimate(clk_hz=clk_hz, cycles=cycles, dram_bytes=dram, link_bytes=link_bytes, baud=baud,
                       dram_bytes_per_cycle=dram_bytes_per_cycle, overlap_bytes=overlap_bytes,
                       link_bytes_per_s=rate)


def picture_requests(program: Program, *, pixels: bool) -> list[tuple[P.Op, int]]:
    """The requests that write one picture: ``WRITE_PIX`` chunks (``pixels``) or ``WRITE_MEM`` chunks of words."""
    R = program.config.rows
    _, v = _input_view(program)
    if pixels:
        return _chunks(P.Op.WRITE_PIX, v.h * v.w * P.PIXEL_BYTES, P.MAX_PIX_PAYLOAD)
    return _chunks(P.Op.WRITE_MEM, v.h * v.w * v.cb(R) * R)


def frame_wire_bytes(program: Program, *, waits: int = 1, pixels: bool = False,
                     run_link: bool = False) -> tuple[int, int]:
    """(host to board, board to host) bytes on the wire of one frame without upload.

    The requests: the hash (one ``READ_REG`` of two registers), the picture (:func:`picture_requests`:
    ``WRITE_PIX`` when ``pixels``), ``CTRL``/``CMD_ADDR``/``CMD_COUNT``/``CTRL`` writes, ``waits`` ``WAIT``
    requests, ``CYCLES`` and ``ACTIVE``, with ``run_link`` one ``READ_REG`` of ``RUN_LINK_WORDS`` and
    ``RUN_LINK_BYTES``, each output (``READ_MEM`` chunks). Every answer without error or resend. A
    double-buffered frame (:meth:`ResidentSession.frames`) sends the next picture instead of its own: the
    same bytes. The full-system test checks this model against the bytes measured.
    """
    R = program.config.rows
    reqs = [(P.Op.READ_REG, 8)]
    reqs += picture_requests(program, pixels=pixels)
    reqs += [(P.Op.WRITE_REG, 4)] * 4 + [(P.Op.WAIT, 0)] * waits + [(P.Op.READ_REG, 4)] * 2
    if run_link:
        reqs.append((P.Op.READ_REG, 8))
    for name in program.outputs:
        o = program.views[name]
        reqs += _chunks(P.Op.READ_MEM, ((o.h * o.w - 1) * o.pix + o.cb(R)) * R)
    return (sum(P.request_wire_bytes(op, n) for op, n in reqs), sum(P.answer_wire_bytes(op, n) for op, n in reqs))


def picture_wire_bytes(program: Program, *, pixels: bool) -> int:
    """Bytes on the wire, both ways, of writing one picture."""
    return sum(P.request_wire_bytes(op, n) + P.answer_wire_bytes(op, n)
               for op, n in picture_requests(program, pixels=pixels))


def _chunks(op: P.Op, nbytes: int, step: int = P.MAX_PAYLOAD) -> list:
    return [(op, min(step, nbytes - off)) for off in range(0, nbytes, step)]
