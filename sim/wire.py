"""The socket wire format between a host process and a simulator it started (no cocotb import).

Both directions: a 12-byte prefix ``<IQ`` (header length, payload length), a
JSON header, then the raw payload. The host side (:mod:`sim.verilator_backend`,
:mod:`sim.link_sim`) and the cocotb side (:mod:`sim.server`,
:mod:`sim.link_server`) both frame with this module, and the host starts the
simulator with the two environment variables named here.
"""

from __future__ import annotations

import json
import socket
import struct

__all__ = ["ENV_SOCKET", "ENV_META", "PROTOCOL", "send_msg", "recv_msg", "FrameDecoder"]

#: The Unix socket the simulator connects to.
ENV_SOCKET = "KINDLING_SIM_SOCKET"
#: The build's metadata (``kindling_build.json``) the simulator reads.
ENV_META = "KINDLING_SIM_META"
#: Version of the request set of :mod:`sim.server`; the host refuses another.
PROTOCOL = 1

_PREFIX = struct.Struct("<IQ")


def send_msg(sock: socket.socket, header: dict, payload: bytes | bytearray | memoryview = b"") -> None:
    """Send one framed message."""
    head = json.dumps(header).encode()
    sock.sendall(_PREFIX.pack(len(head), len(payload)) + head)
    if len(payload):
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return None
        got += k
    return buf


def recv_msg(sock: socket.socket) -> tuple[dict, bytearray] | None:
    """Receive one framed message (blocking); None when the peer has closed the connection."""
    prefix = _recv_exact(sock, _PREFIX.size)
    if prefix is None:
        return None
    hlen, plen = _PREFIX.unpack(prefix)
    head = _recv_exact(sock, hlen)
    payload = _recv_exact(sock, plen) if plen else bytearray()
    if head is None or payload is None:
        return None
    return json.loads(head), payload


class FrameDecoder:
    """Non-blocking reassembly of framed messages from a socket set to non-blocking mode."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.closed = False

    def poll(self) -> list[tuple[dict, bytes]]:
        """The messages complete so far (``closed`` set when the peer has gone)."""
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
        out = []
        while len(self.buf) >= _PREFIX.size:
            hlen, plen = _PREFIX.unpack_from(self.buf)
            end = _PREFIX.size + hlen + plen
            if len(self.buf) < end:
                break
            head = json.loads(bytes(self.buf[_PREFIX.size:_PREFIX.size + hlen]))
            out.append((head, bytes(self.buf[_PREFIX.size + hlen:end])))
            del self.buf[:end]
        return out
