"""SerialBackend on a real tty (a pseudo-terminal) whose other end babbles, stays silent or echoes.

Each test opens a pty, hands its slave device to :class:`sw.backends.serial.SerialBackend` by name (pyserial
opens it as it would ``/dev/ttyUSB1``) and plays the misbehaving device on the master end from a thread.
The backend must fail with the documented exception within its stated bound
(:meth:`SerialBackend.transaction_bound` of the INFO request), never hang; the elapsed time is measured.
"""

import contextlib
import os
import random
import select
import threading
import time

import pytest

from hw.boards import BOARDS
from hw.isa import ENGINE_ID, VERSION, EngineConfig, Reg
from hw.link import protocol as P

pytest.importorskip("serial")

from sw.backends.serial import LinkError, LinkTimeout, SerialBackend  # noqa: E402

# Short deadlines: the bound of one INFO transaction is (retries + 1) x (timeout + line time) + resync pauses.
KW = dict(timeout=0.2, retries=2, inter_byte_timeout=0.05)
# Scheduling slack on a loaded 2-core machine, on top of the stated bound.
MARGIN_S = 1.0


class PtyDevice:
    """The master end of a pty, played by a thread: ``behaviour(rng, written) -> bytes to send`` every 2 ms.

    ``written`` is what the host sent since the last call. Stops (and joins) on exit.
    """

    def __init__(self, behaviour, seed=0):
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self.behaviour = behaviour
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.sent = 0
        self.received = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            written = b""
            readable, _, _ = select.select([self.master], [], [], 0.002)
            if readable:
                with contextlib.suppress(OSError):
                    written = os.read(self.master, 65536)
            self.received += len(written)
            out = self.behaviour(self.rng, written)
            if out:
                _, writable, _ = select.select([], [self.master], [], 0.002)
                if writable:
                    with contextlib.suppress(OSError):
                        self.sent += os.write(self.master, out)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "the device thread did not stop"
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        return False


def garbage(rng, written):
    """Random bytes, forever (a noisy line or a wrong device); about 0.4% are SYNC."""
    return rng.randbytes(256)


def text(rng, written):
    """Printable text, forever (a board printing a console): never a SYNC byte."""
    return bytes(rng.choice(b"abcdefghij 0123456789\r\n") for _ in range(256))


def stale_frames(rng, written):
    """Well-formed frames with valid CRCs, forever, none of them an answer to the request (wrong sequence)."""
    return b"".join(P.encode_frame(P.Op.INFO, 0x80 | rng.randrange(128), addr=0, payload=rng.randbytes(24))
                    for _ in range(8))


def syncs(rng, written):
    """SYNC bytes and bare headers with valid CRCs announcing payloads that never come, forever."""
    return bytes([P.SYNC]) * 64 + P.encode_header(P.Op.INFO, rng.randrange(256), length=P.INFO_BYTES)


def silent(rng, written):
    """Takes every byte, answers nothing (a device that is not a board, or a board without its bitstream)."""
    return b""


def echo(rng, written):
    """Sends back what it receives (a loopback plug, or TX wired to RX)."""
    return written


def open_backend(dev):
    """SerialBackend on the pty by name; (exception, elapsed seconds, the INFO transaction's stated bound)."""
    t0 = time.monotonic()
    with pytest.raises(LinkError) as exc:
        SerialBackend(dev.path, **KW).close()
    elapsed = time.monotonic() - t0
    bound = probe_bound()
    return exc.value, elapsed, bound


def probe_bound():
    """The stated bound of one INFO transaction for the backend as configured by ``KW`` at the pty's baud."""
    probe = SerialBackend.__new__(SerialBackend)
    probe.timeout, probe.retries, probe.break_s, probe.resync_s = KW["timeout"], KW["retries"], 0.002, 0.005
    probe.byte_s = 20.0 / P.DEFAULT_BAUD
    return probe.transaction_bound(P.Op.INFO, 0)


@pytest.mark.parametrize("behaviour", [garbage, text, stale_frames, syncs, silent], ids=lambda b: b.__name__)
def test_babbling_or_silent_port_times_out(behaviour):
    with PtyDevice(behaviour, seed=11) as dev:
        err, elapsed, bound = open_backend(dev)
    print(f"\n{behaviour.__name__}: {type(err).__name__} after {elapsed:.3f} s (stated bound {bound:.3f} s, "
          f"{dev.sent} bytes sent by the device, {dev.received} received): {err}")
    assert isinstance(err, LinkTimeout), err
    assert str(err).startswith(f"{dev.path}: no valid answer to INFO")
    assert elapsed <= bound + MARGIN_S, (elapsed, bound)
    assert dev.received > 0                            # the host did send its requests
    if behaviour is not silent:
        assert dev.sent > 0                            # and the device did babble


def test_loopback_port_is_named():
    with PtyDevice(echo) as dev:
        err, elapsed, bound = open_backend(dev)
    print(f"\necho: {type(err).__name__} after {elapsed:.3f} s: {err}")
    assert type(err) is LinkError
    assert str(err) == (f"{dev.path}: the INFO request came back unchanged: the port echoes what is sent "
                        f"(a loopback or a terminal), not a kindling board")
    assert elapsed <= bound + MARGIN_S


@pytest.mark.parametrize("name, reason", [
    ("/dev/kindling-no-such-port", "No such file or directory"),
    ("/dev/null", "Inappropriate ioctl for device (not a serial port)"),
])
def test_port_that_cannot_be_opened_is_named(name, reason):
    with pytest.raises(LinkError) as exc:
        SerialBackend(name, **KW)
    assert str(exc.value) == f"{name}: cannot open the serial port: {reason}"


def test_unknown_simulated_board_is_named():
    """``--port sim:bogus``: refused before anything is built."""
    from sw.staging import connect_board

    with pytest.raises(LinkError) as exc:
        connect_board("sim:bogus")
    known = ", ".join(f"sim:{b}" for b in BOARDS)
    assert str(exc.value) == f"sim:bogus: no such simulated board; known: {known}"


class PtyBoard:
    """A kindling board on the pty's master end: INFO, registers and a small memory, by :mod:`hw.link.protocol`."""

    config = EngineConfig(rows=4, cols=8, mem_addr_bits=12, ibuf_depth=512, acc_depth=64, pool_max_cb=4)

    def __init__(self):
        self.reader = P.FrameReader(requests=True)
        self.mem = bytearray(1024 * self.config.rows)
        self.regs = [ENGINE_ID, VERSION[0] << 16 | VERSION[1], *self.config.config_words()] + [0] * 59

    def __call__(self, rng, written):
        out = b""
        for f in self.reader.feed(written):
            if not isinstance(f, P.Frame):
                continue
            op, wb, payload = P.Op(f.op), self.config.rows, b""
            if op == P.Op.INFO:
                payload = P.pack_info(board=1, word_bytes=wb, mem_words=1024, clk_hz=12_000_000, baud=P.DEFAULT_BAUD)
            elif op == P.Op.READ_REG:
                payload = b"".join(v.to_bytes(4, "little") for v in self.regs[f.addr:f.addr + f.length // 4])
            elif op == P.Op.READ_MEM:
                payload = bytes(self.mem[f.addr * wb:f.addr * wb + f.length])
            elif op == P.Op.WRITE_MEM:
                self.mem[f.addr * wb:f.addr * wb + f.length] = f.payload
            out += P.encode_frame(f.op, f.seq, addr=f.addr, payload=payload)
        return out


def test_board_on_a_pty_then_unplugged():
    """The backend opens a tty by name and works; when the device goes away mid-run it fails, named, in time."""
    board = PtyBoard()
    with PtyDevice(board) as dev:
        be = SerialBackend(dev.path, **KW)
        assert be.config == board.config and be.read_reg(Reg.ID) == ENGINE_ID
        data = random.Random(3).randbytes(4 * 1000)
        be.write_mem(24, data)
        assert be.read_mem(24, 1000) == data == bytes(board.mem[96:4096])
        assert be.stats.retries == 0
    # The device thread has stopped and the master end is closed: the slave reads fail (EIO) or stay empty.
    t0 = time.monotonic()
    with pytest.raises(LinkError) as exc:
        be.read_mem(0, 16)
    elapsed = time.monotonic() - t0
    be.close()
    print(f"\nunplugged: {type(exc.value).__name__} after {elapsed:.3f} s: {exc.value}")
    assert str(exc.value).startswith(f"{dev.path}: ")
    assert elapsed <= be.transaction_bound(P.Op.READ_MEM, 64) + MARGIN_S
