"""The board backend: the engine on an FPGA board, over its UART (:mod:`hw.link.protocol`).

:class:`SerialBackend` is a :class:`sw.transport.Transport`: the driver, the
runtime and the command line use it exactly as they use the golden and
Verilator backends. It works over anything with pyserial's byte-stream
interface (``read``, ``write``, ``in_waiting``, ``timeout``,
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

Deadlines and errors (the contract)
-----------------------------------
Every exchange of one frame (a *transaction*) has an absolute deadline, fixed
when it starts: bytes arriving never extend it, so a port that babbles (a noisy
line, another device, a board printing text) ends in :class:`LinkTimeout` just
as a silent one does. An attempt may take ``timeout + wait + n * byte_s``
seconds (``n``: the request's and the answer's bytes on the wire, ``wait``:
the board-side wait of a ``WAIT``), and ends sooner when nothing at all comes
within the request's line time plus ``timeout + wait``, or an answer stops for
``inter_byte_timeout``; a transaction takes at most
:meth:`SerialBackend.transaction_bound` =
``(retries + 1) * attempt + retries * (break_s + resync_s)`` seconds. A memory
transfer is one transaction per :data:`~hw.link.protocol.MAX_PAYLOAD` bytes.

Every failure is a :class:`sw.transport.TransportError` whose message starts
with the port's name:

* :class:`LinkTimeout`: no valid answer within the deadline (silence, garbage,
  answers to other requests);
* :class:`LinkError`: the port cannot be opened or fails while in use, it
  echoes the requests back (a loopback), the board identifies implausibly
  (INFO, engine ID or CONFIG out of range: not a kindling board, or not this
  protocol), or it refuses a request or answers a well-formed but wrong
  frame;
* :class:`sw.transport.EngineTimeout` (from :meth:`SerialBackend.wait_done`):
  the link works but the engine does not finish.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import os
import time

from hw.isa import ENGINE_ID, VERSION, EngineConfig, Reg, Status
from hw.link import protocol as P
from sw.transport import EngineTimeout, Transport, TransportError

__all__ = ["SerialBackend", "LinkError", "LinkRefused", "LinkTimeout", "LinkStats", "open_serial_port", "port_name"]


class LinkError(TransportError):
    """The port, the link or the board failed: not openable, a loopback, not a kindling board, a refused request."""


class LinkRefused(LinkError):
    """The board answered a request with a refusal (:attr:`status`: ``BAD_OP``, ``BAD_LENGTH``, ``BAD_ADDRESS``)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class LinkTimeout(LinkError):
    """No valid answer to a request before its deadline: the board is stuck, unpowered or not there."""


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
                f"{self.corrupt}, NAKs: {naks}), {self.stale} stale answers ignored, {self.duplicates} duplicate "
                f"writes, {self.bytes_out} bytes out, {self.bytes_in} bytes in")


def port_name(port) -> str:
    """How messages name ``port``: its device path (pyserial's ``port``, ``sim:<board>``...) or its repr."""
    if isinstance(port, str):
        return port
    return str(getattr(port, "port", None) or getattr(port, "name", None) or repr(port))


def open_serial_port(name: str, baud: int = P.DEFAULT_BAUD, *, write_timeout: float = 5.0):
    """The serial device ``name`` opened with pyserial at ``baud`` (8N1, no flow control).

    Raises
    ------
    LinkError
        If pyserial is missing or the device cannot be opened (no such device,
        permission denied, not a serial port), naming the device.
    """
    try:
        import serial
    except ImportError:
        raise LinkError(f"{name}: cannot open serial ports without pyserial (pip install pyserial)") from None
    try:
        return serial.Serial(name, baudrate=baud, timeout=0.05, write_timeout=write_timeout)
    except (serial.SerialException, OSError, ValueError) as e:
        code = getattr(e, "errno", None)
        cause = e.__context__      # pyserial wraps termios errors in a message without errno
        if code is None and cause is not None and cause.args and isinstance(cause.args[0], int):
            code = cause.args[0]
        reason = os.strerror(code) if isinstance(code, int) and code in errno.errorcode else str(e)
        if code == errno.ENOTTY:
            reason += " (not a serial port)"
        raise LinkError(f"{name}: cannot open the serial port: {reason}") from None


#: What :meth:`SerialBackend._read_event` returns when an answer began and then stopped.
_CUT = "cut"


class SerialBackend(Transport):
    """The engine on a board, through the board's UART link.

    Parameters
    ----------
    port : str or serial-like object
        A device (``/dev/ttyUSB1``, opened with pyserial at ``baud``, 8N1) or
        an object with pyserial's ``read``/``write``/``in_waiting``/
        ``timeout``/``reset_input_buffer`` (and optionally
        ``break_condition``, ``baudrate``, ``port``).
    config : EngineConfig or None
        The engine the host expects. The link's word size and memory are
        checked against it at once (the driver checks the engine's own
        registers); None reads it from the engine's ID and CONFIG registers.
    baud : int
        Line rate when ``port`` is a device name.
    timeout : float
        Seconds an attempt may take beyond the line time of its bytes
        (``WAIT`` adds its own wait).
    inter_byte_timeout : float
        Seconds of silence inside an answer after which it is taken as cut
        (this only ends an attempt early, never extends it).
    retries : int
        Resends of one request before :class:`LinkTimeout`.
    wait_cycles : int or None
        Cycles the board waits per ``WAIT`` request in :meth:`wait_done`;
        default 50 ms at the board's clock.
    break_s : float
        Duration of the line break sent before a resend (0: none).
    resync_s : float
        Pause after the break, before the resend.
    byte_s : float or None
        Seconds allowed per byte on the wire; default twice the 8N1 byte time
        at the port's ``baudrate`` (or ``baud``).

    Raises
    ------
    LinkTimeout
        If the board does not answer ``INFO`` in time (within
        ``transaction_bound(Op.INFO, 0)`` seconds).
    LinkError
        If the port cannot be opened, echoes what is sent, or the board's
        identification is implausible (not a kindling link of a known
        version, INFO fields, engine ID or CONFIG out of range), or its word
        size or memory does not suit ``config``. The message names the port
        and what was read.
    """

    def __init__(self, port, config: EngineConfig | None = None, *, baud: int = P.DEFAULT_BAUD,
                 timeout: float = 0.5, inter_byte_timeout: float = 0.25, retries: int = 8,
                 wait_cycles: int | None = None, break_s: float = 0.002, resync_s: float = 0.005,
                 byte_s: float | None = None):
        self.timeout = timeout
        self.inter_byte_timeout = inter_byte_timeout
        self.retries = retries
        self.break_s = break_s
        self.resync_s = resync_s
        self.wait_cycles = wait_cycles
        self.byte_s = byte_s if byte_s is not None else 20.0 / (getattr(port, "baudrate", None) or baud)
        owned = isinstance(port, str)
        if owned:
            port = open_serial_port(port, baud, write_timeout=self.attempt_bound(P.Op.WRITE_MEM, P.MAX_PAYLOAD))
        for attr in ("read", "write"):
            if not callable(getattr(port, attr, None)):
                raise TypeError(f"port must be a device name or a serial-like object with {attr}(), got {port!r}")
        self._port = port
        self.port_name = port_name(port)
        self._closed = False
        self._rx = P.FrameReader(requests=False)
        self._events: collections.deque = collections.deque()
        self.stats = LinkStats()
        self._seq = 0
        self._heard = False           # a byte has come since the current attempt's request was sent
        self._write_pix: bool | None = None   # the board has WRITE_PIX (None: not asked yet)
        try:
            self._identify(config)
        except BaseException:
            if owned:
                self.close()
            raise

    def _identify(self, config: EngineConfig | None) -> None:
        """Read INFO (and, without ``config``, the engine's ID and CONFIG); refuse what is implausible."""
        info = P.unpack_info(self._transact(P.Op.INFO, 0, 0))
        where = self.port_name
        if info["magic"] != P.LINK_MAGIC:
            raise LinkError(f"{where}: INFO magic {info['magic']:#010x}, expected {P.LINK_MAGIC:#010x}: "
                            f"not a kindling board")
        if info["version_major"] != P.PROTOCOL_VERSION[0]:
            raise LinkError(f"{where}: the board speaks link protocol v{info['version_major']}."
                            f"{info['version_minor']}, this host v{P.PROTOCOL_VERSION[0]}.{P.PROTOCOL_VERSION[1]}")
        wb, mem, clk = info["word_bytes"], info["mem_words"], info["clk_hz"]
        bad = []
        if wb not in (2, 4, 8, 16, 32, 64):
            bad.append(f"word_bytes={wb} (a power of two in [2, 64])")
        if not (mem > 0 and mem * max(wb, 1) <= 1 << 32):
            bad.append(f"mem_words={mem} (1 .. 4 GiB of memory)")
        if not 1_000_000 <= clk <= 1_000_000_000:
            bad.append(f"clk_hz={clk} (1 MHz .. 1 GHz)")
        if info["max_payload"] < P.MAX_PAYLOAD or info["max_read_regs"] < P.MAX_READ_REGS:
            bad.append(f"max_payload={info['max_payload']}, max_read_regs={info['max_read_regs']} "
                       f"(at least {P.MAX_PAYLOAD}, {P.MAX_READ_REGS})")
        if bad:
            raise LinkError(f"{where}: implausible INFO from the board: {'; '.join(bad)}")
        #: The board's INFO record (board id, word size, memory words, clock, baud...).
        self.info = info
        self.board = {v: k for k, v in P.BOARD_IDS.items()}.get(info["board"], f"board #{info['board']}")
        self.word_bytes = wb
        self.mem_words = mem
        self.clk_hz = clk
        self.wait_cycles = self.wait_cycles or max(1, clk // 20)
        if config is None:
            config = self._engine_config()
        if config.rows != self.word_bytes:
            raise LinkError(f"{where}: the board's memory words are {self.word_bytes} bytes; the configuration "
                            f"{config} needs {config.rows}")
        self.config = config

    def _engine_config(self) -> EngineConfig:
        """The engine's configuration from its registers, after checking its ID and major version."""
        ident, version, *words = self.read_regs(Reg.ID, 5)
        where = self.port_name
        if ident != ENGINE_ID:
            raise LinkError(f"{where}: the engine's ID register reads {ident:#010x}, expected {ENGINE_ID:#010x}: "
                            f"not a kindling engine")
        if version >> 16 != VERSION[0]:
            raise LinkError(f"{where}: the engine's command set is v{version >> 16}.{version & 0xFFFF}, "
                            f"this host speaks v{VERSION[0]}.x")
        try:
            return EngineConfig.from_config_words(*words)
        except ValueError as e:
            raise LinkError(f"{where}: the engine's CONFIG registers read "
                            f"({', '.join(f'{w:#010x}' for w in words)}): {e}") from None

    # ---- deadlines ------------------------------------------------------------------------------

    def attempt_bound(self, op: P.Op, length: int, extra_wait: float = 0.0) -> float:
        """Seconds one attempt of a request may take: ``timeout + extra_wait`` plus its bytes' line time."""
        wire = P.request_wire_bytes(op, length) + P.answer_wire_bytes(op, length)
        return self.timeout + extra_wait + wire * self.byte_s

    def transaction_bound(self, op: P.Op, length: int, extra_wait: float = 0.0) -> float:
        """Seconds within which one request, resends included, is answered or fails (its absolute deadline)."""
        return ((self.retries + 1) * self.attempt_bound(op, length, extra_wait)
                + self.retries * (self.break_s + self.resync_s))

    # ---- frames -------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _port_failed(self, what: str, e: OSError) -> LinkError:
        return LinkError(f"{self.port_name}: the port failed while {what}: {e}")

    def _send(self, frame: bytes) -> bool:
        """Write ``frame``; False if the port would not take it in time (pyserial's write timeout)."""
        try:
            self._port.write(frame)
        except OSError as e:
            if type(e).__name__ == "SerialTimeoutException":
                return False
            raise self._port_failed("sending", e) from None
        self.stats.bytes_out += len(frame)
        return True

    def _resync(self, deadline: float) -> None:
        """Break the line (the board drops a frame in progress), pause, forget what came in."""
        port = self._port
        try:
            if self.break_s and hasattr(port, "break_condition"):
                port.break_condition = True
                time.sleep(max(0.0, min(self.break_s, deadline - time.monotonic())))
                port.break_condition = False
            time.sleep(max(0.0, min(self.resync_s, deadline - time.monotonic())))
            if hasattr(port, "reset_input_buffer"):
                port.reset_input_buffer()
        except OSError as e:
            raise self._port_failed("resynchronising", e) from None
        self._rx = P.FrameReader(requests=False)
        self._events.clear()

    def _read_event(self, deadline: float, first_byte_deadline: float):
        """The next parsed answer event; None at ``deadline``; :data:`_CUT` when an answer stopped half-way.

        ``deadline`` is absolute: bytes arriving do not move it. The wait ends
        earlier when nothing at all has come by ``first_byte_deadline``, or
        when an answer's bytes stop for ``inter_byte_timeout``.
        """
        port = self._port
        last_byte = time.monotonic()
        while not self._events:
            now = time.monotonic()
            if now >= deadline or (not self._heard and now >= first_byte_deadline):
                return None
            if self._rx.pending() and now - last_byte > self.inter_byte_timeout:
                return _CUT
            try:
                port.timeout = min(deadline - now, 0.05)
                chunk = port.read(1)
                if chunk:
                    waiting = getattr(port, "in_waiting", 0)
                    if waiting:
                        chunk += port.read(waiting)
            except OSError as e:
                raise self._port_failed("receiving", e) from None
            if chunk:
                self._heard = True
                last_byte = time.monotonic()
                self.stats.bytes_in += len(chunk)
                self._events.extend(self._rx.feed(chunk))
        return self._events.popleft()

    def _transact(self, op: P.Op, addr: int, length: int, payload: bytes = b"", *, extra_wait: float = 0.0) -> bytes:
        """Send one request until it is answered OK, within :meth:`transaction_bound`; return the answer's payload.

        Raises
        ------
        LinkError
            The board refused the request, answered a well-formed wrong
            frame, or echoed the request (not retryable); the port failed.
        LinkTimeout
            No valid answer before the deadline, after every retry.
        """
        if self._closed:
            raise TransportError(f"{self.port_name}: the serial backend is closed")
        t0 = time.monotonic()
        deadline = t0 + self.transaction_bound(op, length, extra_wait)
        attempt_s = self.attempt_bound(op, length, extra_wait)
        seq = self._next_seq()
        frame = P.encode_frame(op, seq, addr=addr, length=length, payload=payload)
        why = "no attempt"
        attempts = 0
        while attempts <= self.retries and time.monotonic() < deadline:
            if attempts:
                self.stats.retries += 1
                self._resync(deadline)
            attempts += 1
            start = time.monotonic()
            attempt_deadline = min(deadline, start + attempt_s)
            first_byte_deadline = start + attempt_s - P.answer_wire_bytes(op, length) * self.byte_s
            self._heard = False
            if not self._send(frame):
                self.stats.timeouts += 1
                why = "the port did not take the request in time"
                continue
            answer, why = self._await_answer(op, seq, addr, length, frame, attempt_deadline, first_byte_deadline)
            if answer is not None:
                self.stats.frames += 1
                return answer
        raise LinkTimeout(f"{self.port_name}: no valid answer to {op.name} (seq {seq}, addr={addr:#x}, "
                          f"length={length}) within {time.monotonic() - t0:.2f} s, {attempts} attempts; last: "
                          f"{why}. Is the board powered, its bitstream loaded, and is this its port?")

    def _await_answer(self, op: P.Op, seq: int, addr: int, length: int, frame: bytes, deadline: float,
                      first_byte_deadline: float) -> tuple[bytes | None, str]:
        """One attempt's wait: (the OK answer's payload, "") or (None, why the attempt failed)."""
        while True:
            ev = self._read_event(deadline, first_byte_deadline)
            if ev is None:
                self.stats.timeouts += 1
                return None, "no answer in time"
            if ev is _CUT:
                self.stats.corrupt += 1
                return None, "an answer cut short"
            if isinstance(ev, tuple):          # an answer with a bad CRC (ours, most likely)
                self.stats.corrupt += 1
                return None, f"a corrupted answer ({ev[0].name})"
            st = ev.link_status
            if st in (P.LinkStatus.HEADER_CRC, P.LinkStatus.TRUNCATED) and ev.length == 0:
                # The board could not read our header: its echo of op/seq may be garbage.
                self.stats.naks[st.name] += 1
                return None, f"the board answered {st.name}"
            if ev.seq != seq or ev.op != int(op) or ev.addr != addr:
                self.stats.stale += 1
                continue
            if st in P.RETRYABLE:
                self.stats.naks[st.name] += 1
                return None, f"the board answered {st.name}"
            if ev.status == 0 and P.encode_frame(ev.op, ev.seq, addr=ev.addr, length=ev.length,
                                                 payload=ev.payload or b"") == frame:
                raise LinkError(f"{self.port_name}: the {op.name} request came back unchanged: the port echoes "
                                f"what is sent (a loopback or a terminal), not a kindling board")
            if st != P.LinkStatus.OK:
                raise LinkRefused(f"{self.port_name}: the board refused {op.name} addr={addr:#x} length={length}: "
                                  f"{st.name if st else f'status {ev.status:#04x}'}", ev.status)
            if ev.duplicate:
                self.stats.duplicates += 1
            expect = P.answer_length(op, length)
            got = len(ev.payload or b"")
            if got != expect:
                raise LinkError(f"{self.port_name}: {op.name} answered {got} bytes, expected {expect}")
            return ev.payload or b"", ""

    # ---- Transport ------------------------------------------------------------------------------

    def _check_range(self, addr: int, n_words: int) -> None:
        if addr < 0 or n_words < 0 or addr + n_words > self.mem_words:
            raise TransportError(f"words [{addr}, {addr + n_words}) are outside the board's memory "
                                 f"({self.mem_words} words of {self.word_bytes} bytes)")

    def _write(self, op: P.Op, addr_words: int, data: bytes, unit: int, what: str, step: int) -> None:
        """``data`` (whole ``unit``-byte items, one memory word each) in ``op`` frames of ``step`` bytes."""
        if len(data) % unit:
            raise TransportError(f"{len(data)} bytes is not a whole number of {unit}-byte {what}")
        self._check_range(addr_words, len(data) // unit)
        for off in range(0, len(data), step):
            chunk = data[off:off + step]
            self._transact(op, addr_words + off // unit, len(chunk), chunk)

    def write_mem(self, addr_words: int, data: bytes) -> None:
        self._write(P.Op.WRITE_MEM, addr_words, bytes(data), self.word_bytes, "words", P.MAX_PAYLOAD)

    @property
    def has_write_pix(self) -> bool:
        """The board executes ``WRITE_PIX`` (protocol 1.1 and built with it): asked once with a ``WRITE_PIX``
        of length 0, which a board with the op refuses as ``BAD_LENGTH`` and one without as ``BAD_OP``; no
        payload follows either way."""
        if self._write_pix is None:
            self._write_pix = False
            if (self.info["version_major"], self.info["version_minor"]) >= (1, 1) and self.word_bytes > P.PIXEL_BYTES:
                try:
                    self._transact(P.Op.WRITE_PIX, 0, 0)
                except LinkRefused as e:
                    self._write_pix = e.status == P.LinkStatus.BAD_LENGTH
        return self._write_pix

    def write_pixels(self, addr_words: int, pixels: bytes) -> None:
        """``WRITE_PIX`` frames of :data:`~hw.link.protocol.MAX_PIX_PAYLOAD` bytes (whole pixels); on a board
        without the op, the words (:meth:`sw.transport.Transport.write_pixels`)."""
        pixels = bytes(pixels)
        if not self.has_write_pix:
            super().write_pixels(addr_words, pixels)
            return
        self._write(P.Op.WRITE_PIX, addr_words, pixels, P.PIXEL_BYTES, "pixels", P.MAX_PIX_PAYLOAD)

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

        Returns or raises within ``timeout`` plus one ``WAIT`` transaction's
        :meth:`transaction_bound`.

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
                raise EngineTimeout(f"{self.port_name}: the engine on {self.board} is still busy after {why} "
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
