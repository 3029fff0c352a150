"""The host link's frame format: defined once, used by the gateware and by the driver.

Every constant of the link lives here: the sync byte, the header layout, the
operation and status codes, the CRC, the size limits and the INFO record. The
gateware (:mod:`hw.link.bridge`) decodes the same :mod:`amaranth.lib.data`
layouts that the host (:mod:`sw.backends.serial`) packs with
:func:`encode_frame`; the CRC of both sides is :data:`CRC` (the gateware
instantiates ``CRC(data_width=8).create()``, the host computes the same
function with :func:`crc16`).

Frame (both directions)
-----------------------
::

    SYNC | header (9 bytes) | CRC16(header), 2 bytes | payload | CRC16(payload), 2 bytes
                                                      `---- only when a payload follows ----'

* ``SYNC`` = 0xA5 starts a frame; the receiver hunts for it.
* The header is :data:`Header`, little-endian: ``op`` (1 byte), ``seq``
  (1), ``status`` (1), ``addr`` (4), ``length`` (2).
* CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no
  reflection, no final XOR), sent most significant byte first, so that the
  CRC over data and CRC is zero (the algorithm's residue). The header's CRC
  lets the board check an address before it writes any byte of a payload; the
  payload has its own.

Requests (host -> board)
------------------------
``status`` is 0. ``length`` is the size of the transfer in bytes; a payload
of ``length`` bytes follows only for the writes (:data:`WRITE_OPS`).

==========  ====================================  ==========================  =======================
op          addr                                  length                      answer payload
==========  ====================================  ==========================  =======================
INFO        -                                     -                           :data:`Info` (24 bytes)
READ_REG    first register (:class:`hw.isa.Reg`)  4 x count, 1..MAX_READ_REGS  count x u32
WRITE_REG   register                              4 (payload: u32 value)      -
READ_MEM    word address                          bytes, whole words           the words
WRITE_MEM   word address                          bytes, whole words           -
WAIT        most cycles to wait                   -                           STATUS (u32)
WRITE_PIX   word address of the first pixel       bytes, whole pixels          -
==========  ====================================  ==========================  =======================

``WRITE_PIX`` (since 1.1, on boards that have it; others answer ``BAD_OP``) carries a picture as
:data:`PIXEL_BYTES` bytes a pixel (its channels 0, 1, 2) and writes each pixel as one memory word:
the pixel's bytes in lanes 0..2, zero in the word's other lanes, pixel ``i`` at word ``addr + i``. It
is the engine's input layout of a 3-channel picture on a board whose words are 4 or more bytes
(``hw.layout.pack_activation``), sent without the padding lane: 150,528 bytes for 224 x 224 x 3
instead of 200,704. ``length`` is a multiple of :data:`PIXEL_BYTES`, at most :data:`MAX_PAYLOAD`.
``WAIT`` answers as soon as ``STATUS.BUSY`` is clear, or once ``addr``
cycles have passed: the host's "run and notify" without polling traffic.
Memory transfers are at most :data:`MAX_PAYLOAD` bytes.

Answers (board -> host)
-----------------------
The board answers every frame it sees (a frame cut short included, once its
header has begun): ``op``, ``seq`` and ``addr`` echoed, ``status`` a
:class:`LinkStatus` (with :data:`DUPLICATE` set when a repeated
``WRITE_REG`` was acknowledged without being executed again), ``length`` the
bytes of payload that follow (0 unless ``OK``).

Recovery
--------
The board drops a frame whose bytes stop for longer than its frame timeout
(answering ``TRUNCATED``), and on a line break or a framing error (over USB:
the vendor request :data:`USB_REQUEST_RESYNC`, :mod:`hw.link.usb`). The host
resends a frame after a retryable status (:data:`RETRYABLE`) or when no
valid answer came in time, with the same sequence number. Repeats are safe:
memory writes and every read are idempotent, and the board remembers the
sequence number of the last frame it executed so that a repeated register
write (a ``CTRL.START``...) is acknowledged and not executed twice.
"""

from __future__ import annotations

import binascii
import dataclasses
import struct

from amaranth.lib import crc, data, enum

from hw.bus import CSR_ADDR_BITS

__all__ = [
    "SYNC", "PROTOCOL_VERSION", "LINK_MAGIC", "CRC", "crc16", "Op", "LinkStatus", "DUPLICATE",
    "RETRYABLE", "WRITE_OPS", "PIXEL_BYTES", "MAX_PIX_PAYLOAD", "Header", "HEADER_BYTES", "CRC_BYTES",
    "FRAME_OVERHEAD", "MAX_PAYLOAD",
    "MAX_READ_REGS", "Info", "INFO_BYTES", "BOARD_IDS", "DEFAULT_BAUD", "Frame", "encode_frame",
    "encode_header", "FrameReader", "check_request", "answer_length", "request_wire_bytes",
    "answer_wire_bytes", "pack_info", "unpack_info", "USB_VID", "USB_PID", "USB_ENDPOINT", "USB_MAX_PACKET",
    "USB_REQUEST_RESYNC", "USB_HS_BAUD",
]

#: First byte of every frame.
SYNC = 0xA5
#: (major, minor); a host refuses a board of another major version. 1.1: ``WRITE_PIX``.
PROTOCOL_VERSION = (1, 1)
#: First field of the INFO record: ASCII "KLNK", little-endian.
LINK_MAGIC = int.from_bytes(b"KLNK", "little")

#: The frame CRC. ``crc16`` computes it in software; the gateware builds ``CRC(data_width=8).create()``.
CRC = crc.catalog.CRC16_CCITT_FALSE
CRC_BYTES = 2

# The host's fast path (binascii's table-driven CRC-CCITT) is this very algorithm: refuse to import if the
# definition above ever changes without it.
assert (CRC.crc_width, CRC.polynomial, CRC.initial_crc, CRC.reflect_input, CRC.reflect_output,
        CRC.xor_output) == (16, 0x1021, 0xFFFF, False, False, 0), "crc16() no longer matches CRC"


def crc16(data: bytes | bytearray | memoryview) -> int:
    """:data:`CRC` of ``data`` (CRC-16/CCITT-FALSE)."""
    return binascii.crc_hqx(data, CRC.initial_crc)


class Op(enum.IntEnum, shape=8):
    """Request operations (see the module documentation for their fields)."""

    INFO = 0x01
    READ_REG = 0x02
    WRITE_REG = 0x03
    READ_MEM = 0x04
    WRITE_MEM = 0x05
    WAIT = 0x06
    WRITE_PIX = 0x07


class LinkStatus(enum.IntEnum, shape=7):
    """The outcome of a request, in bits 0..6 of an answer's ``status``."""

    OK = 0
    HEADER_CRC = 1   # the header's CRC is wrong (op, seq, addr are not to be trusted)
    PAYLOAD_CRC = 2  # the payload's CRC is wrong (a memory write may have stored some of it: resend)
    BAD_OP = 3       # unknown op
    BAD_LENGTH = 4   # length zero, too long, not whole words / registers
    BAD_ADDRESS = 5  # beyond the memory or the register file
    TRUNCATED = 6    # the frame stopped (timeout, line break or framing error) before its end


#: Bit 7 of ``status``: an OK answer to a register write that repeated the last executed frame's
#: sequence number, acknowledged without executing it again.
DUPLICATE = 0x80

#: Statuses after which the host resends the same frame.
RETRYABLE = frozenset({LinkStatus.HEADER_CRC, LinkStatus.PAYLOAD_CRC, LinkStatus.TRUNCATED})
#: Requests that carry a payload.
WRITE_OPS = frozenset({Op.WRITE_REG, Op.WRITE_MEM, Op.WRITE_PIX})
#: Bytes of one pixel in a ``WRITE_PIX`` payload (each becomes one memory word).
PIXEL_BYTES = 3

#: The header, after SYNC, little-endian.
Header = data.StructLayout({
    "op": 8,         # an Op (kept as raw bits: the receiver must see unknown values)
    "seq": 8,
    "status": 8,     # requests: 0; answers: LinkStatus | DUPLICATE
    "addr": 32,
    "length": 16,
})
HEADER_BYTES = Header.size // 8
#: Bytes of a frame without payload: SYNC, header, header CRC.
FRAME_OVERHEAD = 1 + HEADER_BYTES + CRC_BYTES

#: Largest memory transfer in one frame, in bytes (a multiple of every word size, 2..64 bytes).
MAX_PAYLOAD = 4096
#: Largest ``WRITE_PIX`` payload: the whole pixels that fit :data:`MAX_PAYLOAD` (4095 bytes, 1365 pixels).
MAX_PIX_PAYLOAD = MAX_PAYLOAD - MAX_PAYLOAD % PIXEL_BYTES
#: Most registers one READ_REG returns.
MAX_READ_REGS = 16
#: Registers on the CSR bus.
CSR_REGS = 1 << CSR_ADDR_BITS

#: UART rate of every board: 3 Mbaud, 8N1. The FT2232H (iCEBreaker, ECPIX-5) and the FT231X (ULX3S)
#: both derive it exactly (12 MHz / 4 and 48 MHz / 16), and every board clock is a multiple of 3 MHz.
DEFAULT_BAUD = 3_000_000

#: The USB link (:mod:`hw.link.usb`, :mod:`sw.backends.usb`): the same frames over a vendor-class high-speed
#: device with one bulk OUT and one bulk IN endpoint. VID:PID is pid.codes' test pair (1209:0001): for a
#: board on a developer's desk, not for products.
USB_VID, USB_PID = 0x1209, 0x0001
#: The bulk endpoints' number (OUT 0x01: requests, IN 0x81: answers) and their packet size (high speed).
USB_ENDPOINT = 1
USB_MAX_PACKET = 512
#: Vendor request (host to device, no data stage) that drops the frame in progress: the UART's line break.
USB_REQUEST_RESYNC = 0x01
#: What INFO reports as the line rate of a USB board: the high-speed signalling rate, 480 Mbit/s.
USB_HS_BAUD = 480_000_000

#: Board identifiers reported by INFO (0: a simulation top or a test bench).
BOARD_IDS = {"sim": 0, "icebreaker": 1, "ulx3s-85f": 2, "ecpix5-85f": 3}

#: The INFO answer: what the host checks before anything else (the engine's own ID/VERSION/CONFIG
#: registers are checked next, by the driver).
Info = data.StructLayout({
    "magic": 32,          # LINK_MAGIC
    "version_major": 8,
    "version_minor": 8,
    "board": 8,           # BOARD_IDS
    "word_bytes": 8,      # memory word (EngineConfig.rows)
    "mem_words": 32,      # words of board memory
    "clk_hz": 32,         # the link's (and engine's) clock
    "baud": 32,
    "max_payload": 16,    # MAX_PAYLOAD of the gateware
    "last_seq": 8,        # sequence number of the last executed frame
    "max_read_regs": 8,
})
INFO_BYTES = Info.size // 8


def encode_header(op: int, seq: int, *, status: int = 0, addr: int = 0, length: int = 0) -> bytes:
    """``SYNC``, the header and its CRC."""
    if not (0 <= seq < 256 and 0 <= status < 256 and 0 <= addr < 1 << 32 and 0 <= length < 1 << 16):
        raise ValueError(f"header field out of range: seq={seq} status={status} addr={addr} length={length}")
    head = struct.pack("<BBBIH", int(op), seq, status, addr, length)
    return bytes([SYNC]) + head + crc16(head).to_bytes(2, "big")


def encode_frame(op: int, seq: int, *, status: int = 0, addr: int = 0, length: int | None = None,
                 payload: bytes = b"") -> bytes:
    """A whole frame: header (``length`` defaults to the payload's) and, if any, payload and its CRC."""
    payload = bytes(payload)
    frame = encode_header(op, seq, status=status, addr=addr, length=len(payload) if length is None else length)
    if payload:
        frame += payload + crc16(payload).to_bytes(2, "big")
    return frame


def request_wire_bytes(op: Op, length: int) -> int:
    """Bytes on the wire of a request (the host's cost model)."""
    return FRAME_OVERHEAD + (length + CRC_BYTES if op in WRITE_OPS and length else 0)


def answer_wire_bytes(op: Op, length: int) -> int:
    """Bytes on the wire of the OK answer to a request of ``length``."""
    n = answer_length(op, length)
    return FRAME_OVERHEAD + (n + CRC_BYTES if n else 0)


def answer_length(op: Op, length: int) -> int:
    """Payload bytes of the OK answer to a request."""
    if op == Op.INFO:
        return INFO_BYTES
    if op in (Op.READ_REG, Op.READ_MEM):
        return length
    if op == Op.WAIT:
        return 4
    return 0


def check_request(op: int, addr: int, length: int, *, word_bytes: int, mem_words: int,
                  write_pix: bool = False) -> LinkStatus:
    """The status the board gives a request whose header arrived intact (before its payload).

    This is the specification of the gateware's checks (``hw.link.bridge``),
    in the order it applies them; the tests compare the two. ``write_pix``:
    the board has ``WRITE_PIX`` (a board without it answers ``BAD_OP``).
    """
    try:
        op = Op(op)
    except ValueError:
        return LinkStatus.BAD_OP
    if op == Op.WRITE_PIX and not write_pix:
        return LinkStatus.BAD_OP
    if op == Op.READ_REG:
        if length % 4 or not 4 <= length <= 4 * MAX_READ_REGS:
            return LinkStatus.BAD_LENGTH
        if addr + length // 4 > CSR_REGS:
            return LinkStatus.BAD_ADDRESS
    elif op == Op.WRITE_REG:
        if length != 4:
            return LinkStatus.BAD_LENGTH
        if addr >= CSR_REGS:
            return LinkStatus.BAD_ADDRESS
    elif op in (Op.READ_MEM, Op.WRITE_MEM):
        if length % word_bytes or not 0 < length <= MAX_PAYLOAD:
            return LinkStatus.BAD_LENGTH
        if addr + length // word_bytes > mem_words:
            return LinkStatus.BAD_ADDRESS
    elif op == Op.WRITE_PIX:
        if length % PIXEL_BYTES or not 0 < length <= MAX_PAYLOAD:
            return LinkStatus.BAD_LENGTH
        if addr + length // PIXEL_BYTES > mem_words:
            return LinkStatus.BAD_ADDRESS
    return LinkStatus.OK


def pack_info(*, board: int, word_bytes: int, mem_words: int, clk_hz: int, baud: int, last_seq: int = 0) -> bytes:
    """The INFO record, as the gateware sends it."""
    value = Info.const({
        "magic": LINK_MAGIC, "version_major": PROTOCOL_VERSION[0], "version_minor": PROTOCOL_VERSION[1],
        "board": board, "word_bytes": word_bytes, "mem_words": mem_words, "clk_hz": clk_hz, "baud": baud,
        "max_payload": MAX_PAYLOAD, "last_seq": last_seq, "max_read_regs": MAX_READ_REGS,
    }).as_value().value
    return value.to_bytes(INFO_BYTES, "little")


def unpack_info(raw: bytes) -> dict:
    """The INFO record's fields, as a dict."""
    if len(raw) != INFO_BYTES:
        raise ValueError(f"INFO is {INFO_BYTES} bytes, got {len(raw)}")
    value = int.from_bytes(raw, "little")
    out = {}
    for name, field in Info:
        out[name] = (value >> field.offset) & ((1 << field.width) - 1)
    return out


@dataclasses.dataclass
class Frame:
    """A received frame. ``payload`` is None for a request whose payload does not follow (reads)."""

    op: int
    seq: int
    status: int
    addr: int
    length: int
    payload: bytes | None = None

    @property
    def link_status(self) -> LinkStatus | None:
        try:
            return LinkStatus(self.status & 0x7F)
        except ValueError:
            return None

    @property
    def duplicate(self) -> bool:
        return bool(self.status & DUPLICATE)


class FrameReader:
    """Incremental frame parser: bytes in, :class:`Frame` objects and errors out.

    A reference model of the board's receiver (and the host's parser of
    answers): hunt for ``SYNC``; a header whose CRC fails is reported and the
    hunt resumes at the byte after its ``SYNC`` (a real frame may start inside
    a corrupted one); a payload whose CRC fails is reported with the header
    that announced it.

    Parameters
    ----------
    requests : bool
        Parse requests (a payload follows only for :data:`WRITE_OPS`) rather
        than answers (a payload follows whenever ``length`` is not zero).
    max_payload : int
        Longer announced payloads are reported as ``BAD_LENGTH`` and skipped.
    """

    def __init__(self, *, requests: bool = False, max_payload: int = MAX_PAYLOAD):
        self.requests = requests
        self.max_payload = max_payload
        self.buf = bytearray()

    def _payload_len(self, op: int, length: int) -> int:
        if self.requests:
            return length if op in {int(o) for o in WRITE_OPS} else 0
        return length

    def feed(self, data: bytes) -> list:
        """Add bytes; return the events completed by them, in order.

        Each event is a :class:`Frame` (valid CRCs) or a tuple
        ``(LinkStatus, Frame or None)``: ``HEADER_CRC`` (no frame),
        ``PAYLOAD_CRC`` or ``BAD_LENGTH`` (with the header's frame).
        """
        self.buf += data
        events = []
        while True:
            i = self.buf.find(SYNC)
            if i < 0:
                self.buf.clear()
                return events
            del self.buf[:i]
            if len(self.buf) < FRAME_OVERHEAD:
                return events
            head = bytes(self.buf[1:1 + HEADER_BYTES])
            got = int.from_bytes(self.buf[1 + HEADER_BYTES:FRAME_OVERHEAD], "big")
            if crc16(head) != got:
                events.append((LinkStatus.HEADER_CRC, None))
                del self.buf[:1]
                continue
            op, seq, status, addr, length = struct.unpack("<BBBIH", head)
            frame = Frame(op, seq, status, addr, length)
            n = self._payload_len(op, length)
            if n > self.max_payload:
                events.append((LinkStatus.BAD_LENGTH, frame))
                del self.buf[:FRAME_OVERHEAD]
                continue
            if n == 0:
                del self.buf[:FRAME_OVERHEAD]
                events.append(frame)
                continue
            end = FRAME_OVERHEAD + n + CRC_BYTES
            if len(self.buf) < end:
                return events
            payload = bytes(self.buf[FRAME_OVERHEAD:FRAME_OVERHEAD + n])
            got = int.from_bytes(self.buf[end - CRC_BYTES:end], "big")
            del self.buf[:end]
            frame.payload = payload
            if crc16(payload) != got:
                events.append((LinkStatus.PAYLOAD_CRC, frame))
            else:
                events.append(frame)

    def pending(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self.buf)
