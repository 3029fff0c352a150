"""The board top in Verilator with a simulated serial port: the host link proven end to end.

:class:`LinkSimulation` builds :class:`sim.link_top.LinkSimTop` (the board's
:class:`~hw.boards.top.BoardCore`: link, bridge, arbiter, on-chip memory,
engine) with :func:`sim.build.build`, starts the cocotb module
:mod:`sim.link_server` in a background thread and gives the host a
:class:`SimSerialPort`: an object with pyserial's interface whose bytes
travel, bit by bit, over the board's simulated UART pins. Hand it to
:class:`sw.backends.serial.SerialBackend` and the real driver talks to the
simulated board.

:class:`FaultyPort` wraps any such port (a real one too) and corrupts the
byte stream by a seeded plan: flipped bits, dropped bytes, frames cut short,
lost frames, corrupted or lost answers, a board that stops answering.

Example::

    with LinkSimulation("icebreaker") as sim:
        be = SerialBackend(FaultyPort(sim.port, seed=1, rate=0.05), spec.engine, timeout=2.0)
        ...
        print(be.report(), sim.cycles())
"""

from __future__ import annotations

import logging
import random
import threading
import time

from hw.boards import board as board_spec
from sw.transport import TransportError

from .launch import SimulatorRun
from .wire import recv_msg, send_msg

__all__ = ["LinkSimulation", "SimSerialPort", "FaultyPort", "FAULTS", "ANSWER_FAULTS", "open_sim_port"]

log = logging.getLogger(__name__)


class SimSerialPort:
    """A pyserial-like port whose other end is the simulated board's UART.

    ``write`` queues bytes for the line; ``flush`` returns once they have all
    been driven onto the board's ``rx`` pin; ``read(n)`` returns up to ``n``
    bytes the board sent, waiting at most :attr:`timeout` seconds for them.
    ``break_condition = True`` queues a line break (24 bit times low).

    :attr:`baudrate` is not the simulated board's line rate but the rate the
    host can count on in wall-clock time (the simulated line moves a few
    hundred to a thousand bytes per second on a loaded machine):
    :class:`sw.backends.serial.SerialBackend` sets its deadlines by it.
    """

    #: Wall-clock line rate for the host's deadlines: 300 bytes/s (6.7 ms a byte at the backend's 2x margin).
    baudrate = 3000

    def __init__(self, sim: LinkSimulation):
        self._sim = sim
        self._buf = bytearray()
        self._cv = threading.Condition()
        self.timeout: float | None = 1.0
        self.port = f"sim:{sim.spec.name}"
        self.owns_simulation = False

    # fed by the simulation's reader thread
    def _deliver(self, data: bytes) -> None:
        with self._cv:
            self._buf += data
            self._cv.notify_all()

    @property
    def in_waiting(self) -> int:
        with self._cv:
            return len(self._buf)

    def read(self, size: int = 1) -> bytes:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with self._cv:
            while len(self._buf) < size:
                self._sim._check_alive()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cv.wait(0.05 if remaining is None else min(remaining, 0.05))
            out = bytes(self._buf[:size])
            del self._buf[:size]
            return out

    def write(self, data: bytes) -> int:
        self._sim._send({"op": "write"}, bytes(data))
        return len(data)

    def flush(self) -> None:
        """Wait until everything written is on the wire."""
        self._sim._request("drain")

    def reset_input_buffer(self) -> None:
        with self._cv:
            self._buf.clear()

    @property
    def break_condition(self) -> bool:
        return False

    @break_condition.setter
    def break_condition(self, on: bool) -> None:
        if on:
            self._sim._send({"op": "break", "bits": 24})

    def close(self) -> None:
        """Shut the simulation down if this port owns it (:func:`open_sim_port`); else nothing."""
        if self.owns_simulation:
            self._sim.close()


class LinkSimulation:
    """A board's :class:`~sim.link_top.LinkSimTop` running in Verilator, reachable as a serial port.

    Parameters
    ----------
    board : str
        A key of :data:`hw.boards.BOARDS`.
    divisor : int
        Clock cycles per UART bit in the simulation.
    frame_timeout : int or None
        The board's frame timeout in cycles (default: 64 byte times).
    build_dir : path or None
        Build root (default ``sim_build/``).
    verbose : bool
        Show the build and simulator output.
    waves : bool or None
        FST waveform (default: ``WAVES``).
    start_timeout : float
        Seconds for the simulator to come up after the build.
    top_options : dict or None
        More keyword arguments of the top (:class:`sim.dram_top.DramLinkSimTop` for a board with
        SDRAM: ``init_writes``, ``init_deadline``).

    Attributes
    ----------
    port : SimSerialPort
    build : sim.build.Build
    spec : hw.boards.BoardSpec
    """

    def __init__(self, board: str = "icebreaker", *, divisor: int = 8, frame_timeout: int | None = None,
                 build_dir=None, verbose: bool = False, waves: bool | None = None, start_timeout: float = 120.0,
                 top_options: dict | None = None):
        from .build import build, setup_verilator_env
        from .link_top import LinkSimTop

        self.spec = board_spec(board)
        self._closed = False
        self._run = None
        self._sock = None
        self._reader = None
        self._error = None
        self._replies: dict[int, dict] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self.bye: dict | None = None

        if self.spec.storage == "sdram":
            from sim.dram_top import DramLinkSimTop as LinkSimTop
        top = LinkSimTop(self.spec, divisor=divisor, frame_timeout=frame_timeout, **(top_options or {}))
        self.top = top
        self.divisor = top.divisor
        self.frame_timeout = top.frame_timeout
        setup_verilator_env()
        self.build = build(top, build_root=build_dir, waves=waves, verbose=verbose)
        log.info("link model %s (%s, %.1f s)", self.build.directory, "cached" if self.build.cached else "built",
                 self.build.seconds)
        self._run = SimulatorRun(self.build, "sim.link_server", name="link", verbose=verbose,
                                 start_timeout=start_timeout)
        self.log_path = self._run.log_path
        self._sock = self._run.sock
        hello, _ = self._run.hello
        self._run.pid = hello["pid"]
        self.period_steps = hello["period_steps"]
        self.start_seconds = self._run.start_seconds
        self.port = SimSerialPort(self)
        self._reader = threading.Thread(target=self._read_loop, name="kindling-link-reader", daemon=True)
        self._reader.start()

    # ---- plumbing ----------------------------------------------------------------------------

    def _log_tail(self) -> str:
        return self._run.log_tail()

    def _read_loop(self):
        while True:
            try:
                msg = recv_msg(self._sock)
            except OSError:
                msg = None
            if msg is None:
                with self._cv:
                    self._error = self._error or EOFError("the simulator closed the connection")
                    self._cv.notify_all()
                return
            head, payload = msg
            op = head.get("op")
            if op == "read":
                self.port._deliver(bytes(payload))
            elif op == "bye":
                with self._cv:
                    self.bye = head
                    self._cv.notify_all()
            else:
                with self._cv:
                    self._replies[head["id"]] = head
                    self._cv.notify_all()

    def _check_alive(self):
        if self._closed:
            raise TransportError("the link simulation is closed")
        error = self._error or self._run.error
        if error is not None and self.bye is None:
            raise TransportError(f"lost the simulator: {error!r}{self._log_tail()}")

    def _send(self, header: dict, payload: bytes = b"") -> None:
        self._check_alive()
        try:
            with self._lock:
                send_msg(self._sock, header, payload)
        except OSError as exc:
            raise TransportError(f"lost the simulator: {exc}{self._log_tail()}") from exc

    def _request(self, op: str, timeout: float = 600.0) -> dict:
        with self._cv:
            ident = self._next_id
            self._next_id += 1
        self._send({"op": op, "id": ident})
        deadline = time.monotonic() + timeout
        with self._cv:
            while ident not in self._replies:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise TransportError(f"the simulator did not answer {op} within {timeout} s")
                self._cv.wait(0.1)
            return self._replies.pop(ident)

    # ---- API ---------------------------------------------------------------------------------

    def cycles(self) -> int:
        """Simulated clock cycles since the board top left reset."""
        return self._request("cycles")["value"]

    def reset_board(self) -> int:
        """Press the board's reset (the top's ``rst`` for 4 cycles); return the simulated cycle it ended."""
        return self._request("reset")["cycles"]

    def close(self) -> None:
        """Shut the simulator down (idempotent)."""
        if self._closed:
            return
        if self._run is not None:
            self._run.stop(self._goodbye)
        self._closed = True

    def _goodbye(self) -> None:
        self._send({"op": "shutdown"})
        deadline = time.monotonic() + 10
        with self._cv:
            while self.bye is None and self._error is None and self._run.error is None \
                    and time.monotonic() < deadline:
                self._cv.wait(0.1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


#: What :class:`FaultyPort` can do to a write (a request frame) or to the answer that follows it.
FAULTS = ("flip", "drop", "cut", "lose", "flip_answer", "drop_answer", "cut_answer", "lose_answer")
#: The faults that hit the answer.
ANSWER_FAULTS = ("flip_answer", "drop_answer", "cut_answer", "lose_answer")


def expected_answer_bytes(request: bytes) -> int:
    """Wire bytes of the OK answer to the request frame ``request`` (a whole frame as the host writes it)."""
    from hw.link import protocol as P

    if len(request) < P.FRAME_OVERHEAD:
        return P.FRAME_OVERHEAD
    try:
        op = P.Op(request[1])
    except ValueError:
        return P.FRAME_OVERHEAD
    return P.answer_wire_bytes(op, int.from_bytes(request[8:10], "little"))


class FaultyPort:
    """A serial-like port that corrupts traffic by a seeded plan, around another port.

    Each ``write`` is one request frame (what :class:`sw.backends.serial.SerialBackend`
    does). A fault hits a write with probability ``rate`` (kind drawn
    uniformly from ``kinds``), or as ``schedule`` says (``{write number:
    kind}``, counting from 1). The byte hit is drawn uniformly over the whole
    frame, SYNC, header, CRCs and payload alike:

    ``flip``
        one random bit of one random byte of the request inverted;
    ``drop``
        one random byte of the request left out;
    ``cut``
        the request stops after a random number of its bytes (a frame cut short);
    ``lose``
        the whole request lost;
    ``flip_answer``, ``drop_answer``, ``cut_answer``
        the same to one random byte of the answer that comes back (its
        position drawn over the OK answer's length, known from the request);
    ``lose_answer``
        the whole answer lost.

    While :attr:`stuck` is set, nothing goes through in either direction (a
    board that hangs). :attr:`injected` lists ``(write number, kind)``, and
    :attr:`answer_hits` ``(write number, kind, byte index, answer length)``
    for the answer faults that found their byte.
    """

    def __init__(self, port, *, seed: int, rate: float = 0.0, kinds=FAULTS, schedule: dict | None = None):
        bad = [k for k in kinds if k not in FAULTS] + [k for k in (schedule or {}).values() if k not in FAULTS]
        if bad:
            raise ValueError(f"unknown fault kinds {bad}; choose from {FAULTS}")
        self.__dict__["_port"] = port
        self._rng = random.Random(seed)
        self._rate = rate
        self._kinds = tuple(kinds)
        self._schedule = dict(schedule or {})
        self._writes = 0
        self._answer_fault = None     # (kind, byte index in the answer, answer length)
        self._answer_pos = 0          # answer bytes read since the last write
        self._swallow = False         # drop every byte until the next write (cut or lost answer)
        self.injected: list[tuple[int, str]] = []
        self.answer_hits: list[tuple[int, str, int, int]] = []
        self.stuck = False

    def __getattr__(self, name):
        return getattr(self.__dict__["_port"], name)

    def __setattr__(self, name, value):
        if name in ("timeout", "break_condition"):
            setattr(self._port, name, value)
        else:
            self.__dict__[name] = value

    @property
    def timeout(self):
        return self._port.timeout

    def schedule_next(self, kind: str) -> None:
        """Give the next write the fault ``kind``."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {FAULTS}")
        self._schedule[self._writes + 1] = kind

    def write(self, data: bytes) -> int:
        data = bytearray(data)
        self._writes += 1
        self._answer_fault, self._answer_pos, self._swallow = None, 0, False
        if self.stuck:
            return len(data)
        kind = self._schedule.get(self._writes)
        if kind is None and self._rate and self._rng.random() < self._rate:
            kind = self._rng.choice(self._kinds)
        if kind is not None:
            self.injected.append((self._writes, kind))
        rng = self._rng
        if kind == "flip":
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == "drop":
            del data[rng.randrange(len(data))]
        elif kind == "cut":
            del data[rng.randrange(1, len(data)):]
        elif kind == "lose":
            data = bytearray()
        elif kind in ANSWER_FAULTS:
            n = expected_answer_bytes(bytes(data))
            self._answer_fault = (kind, 0 if kind == "lose_answer" else rng.randrange(n), n)
        if data:
            self._port.write(bytes(data))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if self.stuck:
            time.sleep(self._port.timeout or 0)
            self._port.reset_input_buffer()
            return b""
        data = bytearray(self._port.read(size))
        start, self._answer_pos = self._answer_pos, self._answer_pos + len(data)
        if self._swallow:
            return b""
        if data and self._answer_fault is not None and start <= self._answer_fault[1] < self._answer_pos:
            kind, index, n = self._answer_fault
            self._answer_fault = None
            self.answer_hits.append((self._writes, kind, index, n))
            i = index - start
            if kind == "flip_answer":
                data[i] ^= 1 << self._rng.randrange(8)
            elif kind == "drop_answer":
                del data[i]
            else:   # cut_answer, lose_answer: the answer stops at byte i; the rest never arrives
                del data[i:]
                self._swallow = True
        return bytes(data)

    @property
    def in_waiting(self) -> int:
        return 0 if self.stuck else self._port.in_waiting


def open_sim_port(name: str, **kw) -> SimSerialPort:
    """A serial port to a simulated board, from a port name ``sim:<board>`` (the board top in Verilator).

    Closing the port shuts the simulation down; ``kw`` go to :class:`LinkSimulation`. Opened by
    ``sw.backends.open_port`` for a ``sim:`` port (which names the port in any error).

    Raises
    ------
    ValueError
        If ``name`` is not ``sim:<board>`` of a known board.
    RuntimeError
        If the simulation does not start (the cause chained); a :class:`TransportError` as it is.
    """
    from hw.boards import BOARDS

    if not name.startswith("sim:"):
        raise ValueError(f"a simulated port is named sim:<board>, got {name!r}")
    if name[4:] not in BOARDS:
        raise ValueError(f"no such simulated board; known: {', '.join('sim:' + b for b in BOARDS)}")
    try:
        port = LinkSimulation(name[4:], **kw).port
    except TransportError:
        raise
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RuntimeError(f"the simulated board did not start: {reason}") from e
    port.owns_simulation = True
    return port
