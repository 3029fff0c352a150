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
