"""The board backend: the engine on an FPGA board, over its UART (:mod:`hw.link.protocol`).

:class:`SerialBackend` is a :class:`sw.transport.Transport`: the driver, the
runtime and the command line use it exactly as they use the golden and
Verilator backends. It works over anything with pyserial's byte-stream
interface (``read``, ``write``, ``flush``, ``in_waiting``, ``timeout``,
``reset_input_buffer``), so the Verilator link test hands it a simulated port
(:class:`sim.link_sim.SimSerialPort`) wired to the board top's UART pins.

Reliability: every request carries a sequence number and CRCs; the board
answers every frame. A request is sent again, with the same sequence number,
after a retryable status (bad CRC, frame cut short), a corrupted answer, or no
answer in time; before a resend the backend breaks the line (the board drops
any frame in progress) and empties its input. A repeated register write is
acknowledged by the board without being executed twice. After ``retries``
resends the call fails with :class:`LinkTimeout`. :attr:`SerialBackend.stats`
counts frames, retries, bytes and the reasons.
"""

from __future__ import annotations

import collections
import dataclasses
import time

from hw.isa import EngineConfig, Reg, Status
from hw.link import protocol as P
from sw.transport import EngineTimeout, Transport, TransportError

__all__ = ["SerialBackend", "LinkError", "LinkTimeout", "LinkStats"]


class LinkError(TransportError):
    """The board refused a request (bad length, address, op) or is not a kindling board."""


class LinkTimeout(LinkError):
    """No valid answer to a request after every retry: the board is stuck, unpowered or not there."""


@dataclasses.dataclass
class LinkStats:
    """What the link did since the backend opened.

    Attributes
    ----------
    frames : int
        Requests completed.
    retries : int
        Requests sent again.
    bytes_out, bytes_in : int
        Bytes written and read (resends and discarded bytes included).
    timeouts : int
        Waits that ended without a valid answer.
    corrupt : int
        Answers discarded for a bad CRC or a cut.
    naks : Counter
        Retryable statuses the board answered, by name.
    duplicates : int
        Register writes the board recognised as repeats.
    stale : int
        Valid answers to earlier requests, discarded.
    """

    frames: int = 0
    retries: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    timeouts: int = 0
    corrupt: int = 0
    naks: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    duplicates: int = 0
    stale: int = 0

    def summary(self) -> str:
        naks = ", ".join(f"{k} {v}" for k, v in sorted(self.naks.items())) or "none"
        return (f"{self.frames} frames, {self.retries} retries (timeouts {self.timeouts}, corrupt answers "
                f"{self.corrupt}, NAKs: {naks}), {self.duplicates} duplicate writes, {self.bytes_out} bytes out, "
                f"{self.bytes_in} bytes in")


class SerialBackend(Transport):
    """The engine on a board, through the board's UART link.

    Parameters
    ----------
    port : str or serial-like object
        A device (``/dev/ttyUSB1``, opened with pyserial at ``baud``, 8N1) or
        an object with pyserial's ``read``/``write``/``flush``/``in_waiting``/
        ``timeout``/``reset_input_buffer`` (and optionally
        ``break_condition``).
    config : EngineConfig or None
        The engine the host expects. The link's word size and memory are
        checked against it at once (the driver checks the engine's own
        registers); None reads it from the engine's CONFIG registers.
    baud : int
        Line rate when ``port`` is a device name.
    timeout : float
        Seconds to wait for the first byte of an answer after the request has
        been sent (``WAIT`` adds its own wait).
    inter_byte_timeout : float
        Seconds of silence inside an answer after which it is taken as cut.
    retries : int
        Resends of one request before :class:`LinkTimeout`.
    wait_cycles : int or None
        Cycles the board waits per ``WAIT`` request in :meth:`wait_done`;
        default 50 ms at the board's clock.
    break_s : float
        Duration of the line break sent before a resend (0: none).
    resync_s : float
        Pause after the break, before the resend.

    Raises
    ------
    LinkTimeout
        If the board does not answer ``INFO``.
    LinkError
        If the answer is not a kindling link of a known version, or its word
        size or memory does not suit ``config``.
    """

    def __init__(self, port, config: EngineConfig | None = None, *, baud: int = P.DEFAULT_BAUD,
                 timeout: float = 0.5, inter_byte_timeout: float = 0.25, retries: int = 8,
                 wait_cycles: int | None = None, break_s: float = 0.002, resync_s: float = 0.005):
        if isinstance(port, str):
            import serial

            port = serial.Serial(port, baudrate=baud, timeout=0.05, write_timeout=30)
        for attr in ("read", "write"):
            if not callable(getattr(port, attr, None)):
                raise TypeError(f"port must be a device name or a serial-like object with {attr}(), got {port!r}")
        self._port = port
        self._closed = False
        self._rx = P.FrameReader(requests=False)
        self._events: collections.deque = collections.deque()
        self.timeout = timeout
        self.inter_byte_timeout = inter_byte_timeout
        self.retries = retries
        self.break_s = break_s
        self.resync_s = resync_s
        self.stats = LinkStats()
        self._seq = 0
        info = P.unpack_info(self._transact(P.Op.INFO, 0, 0))
        if info["magic"] != P.LINK_MAGIC:
            raise LinkError(f"INFO magic {info['magic']:#010x}, expected {P.LINK_MAGIC:#010x}: not a kindling board")
        if info["version_major"] != P.PROTOCOL_VERSION[0]:
            raise LinkError(f"board speaks link protocol v{info['version_major']}.{info['version_minor']}, "
                            f"this host v{P.PROTOCOL_VERSION[0]}.{P.PROTOCOL_VERSION[1]}")
        #: The board's INFO record (board id, word size, memory words, clock, baud...).
        self.info = info
        self.board = {v: k for k, v in P.BOARD_IDS.items()}.get(info["board"], f"board #{info['board']}")
        self.word_bytes = info["word_bytes"]
        self.mem_words = info["mem_words"]
        self.clk_hz = info["clk_hz"]
        self.wait_cycles = wait_cycles or max(1, self.clk_hz // 20)
        if config is None:
            config = EngineConfig.from_config_words(*(self.read_regs(Reg.CONFIG0, 3)))
        if config.rows != self.word_bytes:
            raise LinkError(f"the board's memory words are {self.word_bytes} bytes; the configuration "
                            f"{config} needs {config.rows}")
        self.config = config

    # ---- frames -------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _send(self, frame: bytes) -> None:
        self._port.write(frame)
        if hasattr(self._port, "flush"):
            self._port.flush()   # the answer timeout starts once the request is on the wire
        self.stats.bytes_out += len(frame)

    def _resync(self) -> None:
        """Break the line (the board drops a frame in progress), pause, forget what came in."""
        port = self._port
        if self.break_s and hasattr(port, "break_condition"):
            port.break_condition = True
            time.sleep(self.break_s)
            port.break_condition = False
        time.sleep(self.resync_s)
        if hasattr(port, "reset_input_buffer"):
            port.reset_input_buffer()
        self._rx = P.FrameReader(requests=False)
        self._events.clear()

    def _read_event(self, first_deadline: float):
        """The next parsed answer event, or None when the answer does not come in time."""
        port = self._port
        deadline = first_deadline
        while not self._events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            port.timeout = min(remaining, 0.05)
            chunk = port.read(1)
            if chunk:
                waiting = getattr(port, "in_waiting", 0)
                if waiting:
                    chunk += port.read(waiting)
                self.stats.bytes_in += len(chunk)
                self._events.extend(self._rx.feed(chunk))
                # Bytes keep coming: the answer is on its way; allow the inter-byte gap from now on.
                deadline = max(deadline, time.monotonic() + self.inter_byte_timeout)
        return self._events.popleft()

    def _transact(self, op: P.Op, addr: int, length: int, payload: bytes = b"", *, extra_wait: float = 0.0) -> bytes:
        """Send one request until it is answered OK; return the answer's payload.

        Raises
        ------
        LinkError
            The board refused the request (not retryable).
        LinkTimeout
            No valid answer after every retry.
        """
        if self._closed:
            raise TransportError("the serial backend is closed")
        seq = self._next_seq()
        frame = P.encode_frame(op, seq, addr=addr, length=length, payload=payload)
        why = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
                self._resync()
            self._send(frame)
            first_deadline = time.monotonic() + self.timeout + extra_wait
            while True:
                ev = self._read_event(first_deadline)
                if ev is None:
                    self.stats.timeouts += 1
                    why = "no answer in time"
                    break
                if isinstance(ev, tuple):          # an answer with a bad CRC (ours, most likely)
                    self.stats.corrupt += 1
                    why = f"corrupted answer ({ev[0].name})"
                    break
                st = ev.link_status
                if st in (P.LinkStatus.HEADER_CRC, P.LinkStatus.TRUNCATED) and ev.length == 0:
                    # The board could not read our header: its echo of op/seq may be garbage.
                    self.stats.naks[st.name] += 1
                    why = f"board answered {st.name}"
                    break
                if ev.seq != seq or ev.op != int(op):
                    self.stats.stale += 1
                    continue
                if st in P.RETRYABLE:
                    self.stats.naks[st.name] += 1
                    why = f"board answered {st.name}"
                    break
                if st != P.LinkStatus.OK:
                    raise LinkError(f"the board refused {op.name} addr={addr:#x} length={length}: "
                                    f"{st.name if st else hex(ev.status)}")
                if ev.duplicate:
                    self.stats.duplicates += 1
                expect = P.answer_length(op, length)
                got = len(ev.payload or b"")
                if got != expect:
                    raise LinkError(f"{op.name} answered {got} bytes, expected {expect}")
                self.stats.frames += 1
                return ev.payload or b""
        raise LinkTimeout(f"no valid answer to {op.name} (seq {seq}, addr={addr:#x}, length={length}) after "
                          f"{self.retries + 1} attempts; last: {why}. Is the board powered, the bitstream "
                          f"loaded and {getattr(self._port, 'port', None) or self._port!r} the right port?")

    # ---- Transport ------------------------------------------------------------------------------

    def _check_range(self, addr: int, n_words: int) -> None:
        if addr < 0 or n_words < 0 or addr + n_words > self.mem_words:
            raise TransportError(f"words [{addr}, {addr + n_words}) are outside the board's memory "
                                 f"({self.mem_words} words of {self.word_bytes} bytes)")

    def write_mem(self, addr_words: int, data: bytes) -> None:
        data = bytes(data)
        if len(data) % self.word_bytes:
            raise TransportError(f"{len(data)} bytes is not a whole number of {self.word_bytes}-byte words")
        self._check_range(addr_words, len(data) // self.word_bytes)
        step = P.MAX_PAYLOAD
        for off in range(0, len(data), step):
            chunk = data[off:off + step]
            self._transact(P.Op.WRITE_MEM, addr_words + off // self.word_bytes, len(chunk), chunk)

    def read_mem(self, addr_words: int, n_words: int) -> bytes:
        self._check_range(addr_words, n_words)
        out = bytearray()
        per = P.MAX_PAYLOAD // self.word_bytes
        for w in range(0, n_words, per):
            n = min(per, n_words - w)
            out += self._transact(P.Op.READ_MEM, addr_words + w, n * self.word_bytes)
        return bytes(out)

    def write_reg(self, reg: Reg | int, value: int) -> None:
        self._transact(P.Op.WRITE_REG, int(reg), 4, (int(value) & 0xFFFFFFFF).to_bytes(4, "little"))

    def read_reg(self, reg: Reg | int) -> int:
        return self.read_regs(reg, 1)[0]

    def read_regs(self, first: Reg | int, count: int) -> list[int]:
        """``count`` consecutive registers in one frame (at most ``MAX_READ_REGS``)."""
        raw = self._transact(P.Op.READ_REG, int(first), 4 * count)
        return [int.from_bytes(raw[4 * i:4 * i + 4], "little") for i in range(count)]

    def wait_done(self, timeout: float = 60.0, *, max_cycles: int | None = None) -> int:
        """Wait until ``STATUS.BUSY`` clears, with ``WAIT`` requests (the board answers when it does).

        Raises
        ------
        EngineTimeout
            If the engine is still busy after ``timeout`` seconds or
            ``max_cycles`` cycles (counted in ``WAIT`` requests), with the
            last ``STATUS``.
        LinkTimeout
            If the board stops answering.
        """
        deadline = time.monotonic() + timeout
        waited = 0
        while True:
            chunk = self.wait_cycles if max_cycles is None else max(1, min(self.wait_cycles, max_cycles - waited))
            raw = self._transact(P.Op.WAIT, chunk, 0, extra_wait=chunk / max(self.clk_hz, 1))
            status = int.from_bytes(raw, "little")
            if not status & Status.BUSY:
                return status
            waited += chunk
            if time.monotonic() > deadline or (max_cycles is not None and waited >= max_cycles):
                why = f"{timeout} s" if time.monotonic() > deadline else f"{max_cycles} cycles"
                raise EngineTimeout(f"the engine on {self.board} is still busy after {why} "
                                    f"(STATUS={status:#x}, about {waited} cycles waited): a command that "
                                    f"does not finish, or a timeout too short for this network",
                                    status=status, cycles=waited)

    def close(self) -> None:
        """Close the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        close = getattr(self._port, "close", None)
        if close is not None:
            close()

    def report(self) -> str:
        """One line: the board and the link's statistics."""
        return f"{self.board} at {self.info['baud'] / 1e6:g} Mbaud: {self.stats.summary()}"
