"""Fuzz of the host side of the link: the frame decoder, and SerialBackend against a misbehaving fake board.

(a) :class:`hw.link.protocol.FrameReader` gets random byte strings and mutated valid frames, whole and in
random pieces: it must never raise, give the same events however the bytes are split, never report a frame
that is not in its input verbatim (a CRC-checked frame is what was sent), and find a clean frame again after
a corrupted one.

(b) :class:`sw.backends.serial.SerialBackend` talks to :class:`FakeBoard`, a pure-Python serial port that
answers by the protocol of :mod:`hw.link.protocol` from a small memory and register file, with random line
faults (bits flipped, bytes dropped, inserted, frames cut short, lost, silence, babble) and random
well-formed nonsense (valid CRCs, wrong sequence number, op, address, length or status). Every call must
either return exactly what the fake board holds or raise a documented :class:`LinkError` (a
:class:`LinkTimeout` included), within the backend's stated bound.

Both parts are seeded (``SEED``) and bounded in cases and wall time; a failure prints the seed and the case.
CRC-16 lets a corrupted frame through with probability 2^-16: the seed fixes one run where none does.
"""

import random
import time

import pytest

from hw.isa import ENGINE_ID, VERSION, EngineConfig, Reg
from hw.link import protocol as P
from sw.backends.serial import LinkError, LinkTimeout, SerialBackend

SEED = 20261202
DECODER_CASES, DECODER_WALL_S = 4000, 3.0
BOARD_CALLS, BOARD_WALL_S = 800, 5.0
# Scheduling slack on a loaded 2-core machine, on top of each call's stated bound.
MARGIN_S = 0.5


# ---- (a) the frame decoder -------------------------------------------------------------------------

def random_frame(rng: random.Random, requests: bool) -> bytes:
    """A valid frame: a request (payload only for the writes) or an answer (payload whenever length > 0)."""
    op = rng.choice(list(P.Op))
    if requests:
        payload = rng.randbytes(4 * rng.randrange(1, 17)) if op in P.WRITE_OPS else b""
        length = len(payload) if payload else rng.randrange(0, 65)
        return P.encode_frame(op, rng.randrange(256), addr=rng.randrange(1 << 32), length=length, payload=payload)
    payload = rng.randbytes(rng.choice([0, 4, 24, rng.randrange(1, 80)]))
    return P.encode_frame(op, rng.randrange(256), status=rng.randrange(256), addr=rng.randrange(1 << 32),
                          payload=payload)


def mutate(rng: random.Random, frame: bytes) -> tuple[bytes, str]:
    """``frame`` with one random mutation: (bytes, what was done)."""
    data = bytearray(frame)
    kind = rng.choice(["flip", "flip2", "drop", "insert", "cut", "sync"])
    i = rng.randrange(len(data))
    if kind == "flip":
        data[i] ^= 1 << rng.randrange(8)
    elif kind == "flip2":
        j = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        data[j] ^= 1 << rng.randrange(8)
    elif kind == "drop":
        del data[i]
    elif kind == "insert":
        data.insert(i, rng.randrange(256))
    elif kind == "cut":
        del data[i:]
    else:
        data[i] = P.SYNC
    return bytes(data), f"{kind} at {i}"


def decode(data: bytes, requests: bool, pieces=None) -> tuple[list, P.FrameReader]:
    reader = P.FrameReader(requests=requests)
    events = []
    pos = 0
    for n in pieces or [len(data)]:
        events += reader.feed(data[pos:pos + n])
        pos += n
    events += reader.feed(data[pos:])
    return events, reader


def frame_bytes(f: P.Frame, requests: bool) -> bytes:
    if requests and f.op not in {int(o) for o in P.WRITE_OPS}:
        return P.encode_header(f.op, f.seq, status=f.status, addr=f.addr, length=f.length)
    return P.encode_frame(f.op, f.seq, status=f.status, addr=f.addr, length=f.length, payload=f.payload or b"")


def check_events(events, data: bytes, requests: bool, where: str) -> list[P.Frame]:
    """Events are Frames or (LinkStatus, Frame|None); every Frame is in ``data`` verbatim. The Frames."""
    frames = []
    for ev in events:
        if isinstance(ev, P.Frame):
            assert frame_bytes(ev, requests) in data, f"{where}: decoded a frame not in the input: {ev}"
            frames.append(ev)
        else:
            assert isinstance(ev, tuple) and len(ev) == 2, f"{where}: unexpected event {ev!r}"
            status, frame = ev
            assert status in (P.LinkStatus.HEADER_CRC, P.LinkStatus.PAYLOAD_CRC, P.LinkStatus.BAD_LENGTH), where
            assert (frame is None) == (status == P.LinkStatus.HEADER_CRC), f"{where}: {ev}"
    return frames


def test_frame_decoder_fuzz():
    rng = random.Random(SEED)
    t0 = time.monotonic()
    cases = recovered = 0
    while cases < DECODER_CASES and time.monotonic() - t0 < DECODER_WALL_S:
        cases += 1
        requests = rng.random() < 0.5
        if rng.random() < 0.3:          # random bytes, rich in SYNC
            data = bytes(rng.choice([P.SYNC, rng.randrange(256)]) for _ in range(rng.randrange(0, 200)))
            what = "random bytes"
            clean = b""
        else:                           # a mutated frame, then a clean one
            data, what = mutate(rng, random_frame(rng, requests))
            clean = random_frame(rng, requests)
        stream = data + clean
        where = f"seed {SEED} case {cases} ({what}, requests={requests}): {stream.hex()}"
        try:
            whole, reader = decode(stream, requests)
            cuts = sorted(rng.sample(range(len(stream) + 1), min(len(stream) + 1, rng.randrange(1, 8))))
            split, _ = decode(stream, requests, [b - a for a, b in zip([0, *cuts], cuts, strict=False)])
        except Exception as e:
            raise AssertionError(f"{where}: the decoder raised {e!r}") from e
        assert split == whole, f"{where}: the events depend on how the bytes are split"
        frames = check_events(whole, stream, requests, where)
        assert reader.pending() <= len(stream)
        if clean and what.startswith("flip "):
            # One flipped bit is always caught (CRC-16), and the decoder finds the next frame; only a header
            # that passes its CRC by chance inside the corrupted bytes (then reported verbatim) may hide it.
            clean_seen = any(frame_bytes(f, requests) == clean for f in frames)
            assert clean_seen or frames, f"{where}: lost the clean frame after a one-bit error"
            recovered += clean_seen
    wall = time.monotonic() - t0
    print(f"\nframe decoder fuzz: {cases} cases in {wall:.2f} s (seed {SEED}); {recovered} clean frames found "
          f"after a one-bit error")
    assert cases >= 500 and recovered > 50


# ---- (b) SerialBackend against a fake board ------------------------------------------------------------

CONFIG = EngineConfig(rows=4, cols=8, mem_addr_bits=12, ibuf_depth=512, acc_depth=64, pool_max_cb=4)
MEM_WORDS = 2048


class FakeBoard:
    """A pyserial-like port whose other end is a kindling board in Python, with seeded faults and nonsense.

    ``write`` takes one request (possibly damaged on the way by a line fault), runs it as the board would
    (:func:`hw.link.protocol.check_request`, a memory of ``mem_words`` words, the register file, repeated
    register writes acknowledged as duplicates) and queues the answer (possibly damaged, replaced or
    preceded by a well-formed wrong frame); ``read`` hands the answer out, or waits ``timeout`` in silence.
    ``rate`` is the probability of a fault per request. ``babble`` makes the line send garbage forever.
    """

    #: The port's name, as pyserial's ``Serial.port``: error messages start with it.
    port = "fake:board"

    def __init__(self, rng: random.Random, *, info: dict | None = None, regs: dict | None = None):
        self.rng = rng
        self.mem = bytearray(rng.randbytes(MEM_WORDS * CONFIG.rows))
        self.regs = [0] * P.CSR_REGS
        self.regs[Reg.ID], self.regs[Reg.VERSION] = ENGINE_ID, VERSION[0] << 16 | VERSION[1]
        self.regs[Reg.CONFIG0:Reg.CONFIG2 + 1] = CONFIG.config_words()
        for reg, value in (regs or {}).items():
            self.regs[reg] = value
        self.info = {**dict(board=1, word_bytes=CONFIG.rows, mem_words=MEM_WORDS, clk_hz=12_000_000,
                            baud=P.DEFAULT_BAUD), **(info or {})}
        self.raw_info = None            # bytes to send as INFO instead (nonsense identification)
        self.last_seq = None
        self.out = bytearray()
        self.timeout = 0.05
        self.break_condition = False
        self.rate = 0.0
        self.babble = None              # None, or a function rng -> garbage bytes
        self.faults: list[str] = []

    # -- serial interface
    @property
    def in_waiting(self) -> int:
        return 64 if self.babble else len(self.out)

    def read(self, size: int = 1) -> bytes:
        if self.babble:
            return self.babble(self.rng)[:size]
        if not self.out:
            time.sleep(self.timeout or 0)
            return b""
        data = bytes(self.out[:size])
        del self.out[:size]
        return data

    def reset_input_buffer(self) -> None:
        self.out.clear()

    def write(self, data: bytes) -> int:
        rng = self.rng
        request = bytearray(data)
        fault = rng.choice(FAULT_KINDS) if rng.random() < self.rate else None
        if fault:
            self.faults.append(fault)
        i = rng.randrange(len(request))
        if fault == "flip":
            request[i] ^= 1 << rng.randrange(8)
        elif fault == "drop":
            del request[i]
        elif fault == "insert":
            request.insert(i, rng.randrange(256))
        elif fault == "cut":
            del request[max(1, i):]
        elif fault == "lose":
            request = bytearray()
        answer = self._answer(bytes(request))
        if fault in ANSWER_KINDS and answer:
            answer = self._damage(fault, answer)
        self.out += answer
        return len(data)

    # -- the board
    def _answer(self, request: bytes) -> bytes:
        reader = P.FrameReader(requests=True)
        out = b""
        for ev in reader.feed(request):
            if isinstance(ev, P.Frame):
                out += self._execute(ev)
            else:
                status, f = ev
                out += P.encode_frame(f.op if f else 0, f.seq if f else 0, status=status, addr=f.addr if f else 0)
        if reader.pending():            # the frame stopped: the board's frame timeout answers TRUNCATED
            head = bytes(reader.buf[1:1 + P.HEADER_BYTES])
            op, seq = (head[0], head[1]) if len(head) >= 2 else (0, 0)
            out += P.encode_frame(op, seq, status=P.LinkStatus.TRUNCATED)
        return out

    def _execute(self, f: P.Frame) -> bytes:
        wb = CONFIG.rows
        status = P.check_request(f.op, f.addr, f.length, word_bytes=wb, mem_words=MEM_WORDS)
        if status != P.LinkStatus.OK:
            return P.encode_frame(f.op, f.seq, status=status, addr=f.addr)
        op, payload = P.Op(f.op), b""
        if op == P.Op.INFO:
            payload = self.raw_info or P.pack_info(**self.info, last_seq=self.last_seq or 0)
        elif op == P.Op.READ_REG:
            payload = b"".join(v.to_bytes(4, "little") for v in self.regs[f.addr:f.addr + f.length // 4])
        elif op == P.Op.WRITE_REG:
            if f.seq == self.last_seq:
                return P.encode_frame(f.op, f.seq, status=P.DUPLICATE, addr=f.addr)
            self.regs[f.addr] = int.from_bytes(f.payload, "little")
        elif op == P.Op.READ_MEM:
            payload = bytes(self.mem[f.addr * wb:f.addr * wb + f.length])
        elif op == P.Op.WRITE_MEM:
            self.mem[f.addr * wb:f.addr * wb + f.length] = f.payload
        else:
            payload = self.regs[Reg.STATUS].to_bytes(4, "little")
        self.last_seq = f.seq
        return P.encode_frame(f.op, f.seq, addr=f.addr, payload=payload)

    def _damage(self, fault: str, answer: bytes) -> bytes:
        """The answer after a line fault, or with well-formed nonsense instead of it or before it."""
        rng = self.rng
        data = bytearray(answer)
        i = rng.randrange(len(data))
        if fault == "flip_answer":
            data[i] ^= 1 << rng.randrange(8)
        elif fault == "drop_answer":
            del data[i]
        elif fault == "insert_answer":
            data.insert(i, rng.randrange(256))
        elif fault == "cut_answer":
            del data[i:]
        elif fault == "lose_answer":
            data = bytearray()
        elif fault == "garbage_first":
            data[:0] = rng.randbytes(rng.randrange(1, 40))
        else:
            f = P.FrameReader(requests=False).feed(answer)[0]
            op, seq, status, addr, payload = f.op, f.seq, f.status, f.addr, f.payload or b""
            if fault == "wrong_seq":
                seq = (seq + rng.randrange(1, 256)) & 0xFF
            elif fault == "wrong_op":
                op = rng.choice([o for o in range(256) if o != op])
            elif fault == "wrong_addr":
                addr ^= 1 << rng.randrange(32)
            elif fault == "wrong_length":
                payload = rng.choice([payload[:-1], payload + rng.randbytes(rng.randrange(1, 9)),
                                      rng.randbytes(rng.randrange(1, 30))])
            else:   # wrong_status
                status = rng.choice([s for s in range(256) if s not in (0, P.DUPLICATE)])
            nonsense = P.encode_frame(op, seq, status=status, addr=addr, payload=payload)
            stale = fault in ("wrong_seq", "wrong_op", "wrong_addr") and rng.random() < 0.5
            data = bytearray(nonsense + answer) if stale else bytearray(nonsense)
        return bytes(data)


LINE_KINDS = ("flip", "drop", "insert", "cut", "lose")
ANSWER_KINDS = ("flip_answer", "drop_answer", "insert_answer", "cut_answer", "lose_answer", "garbage_first",
                "wrong_seq", "wrong_op", "wrong_addr", "wrong_length", "wrong_status")
FAULT_KINDS = LINE_KINDS + ANSWER_KINDS
FAST = dict(timeout=0.02, inter_byte_timeout=0.01, retries=3, break_s=0.0, resync_s=0.0, byte_s=1e-6)


def garbage(rng):
    return rng.randbytes(64)


def text(rng):
    return bytes(rng.choice(b"hello board 0123456789\r\n") for _ in range(64))


def call_bound(be: SerialBackend, op: P.Op, nbytes: int) -> float:
    """The stated bound of a call moving ``nbytes`` (one transaction per MAX_PAYLOAD bytes)."""
    frames = max(1, -(-nbytes // P.MAX_PAYLOAD))
    return frames * be.transaction_bound(op, min(max(nbytes, 4), P.MAX_PAYLOAD)) + MARGIN_S


def one_call(be: SerialBackend, board: FakeBoard, rng: random.Random, where: str) -> str:
    """A random backend call; checks its result against the fake board; its outcome's name."""
    wb = be.word_bytes
    kind = rng.choice(["read_mem", "write_mem", "read_reg", "read_regs", "write_reg", "wait"])
    addr = rng.randrange(MEM_WORDS)
    n = rng.randrange(1, min(MEM_WORDS - addr, 1200) + 1)
    if kind == "read_mem":
        got = be.read_mem(addr, n)
        assert got == bytes(board.mem[addr * wb:(addr + n) * wb]), f"{where}: read_mem({addr}, {n}) is wrong"
    elif kind == "write_mem":
        data = rng.randbytes(n * wb)
        be.write_mem(addr, data)
        assert board.mem[addr * wb:(addr + n) * wb] == data, f"{where}: write_mem({addr}, {n}) not stored"
    elif kind == "read_reg":
        reg = rng.choice(list(Reg))
        assert be.read_reg(reg) == board.regs[reg], f"{where}: read_reg({reg.name}) is wrong"
    elif kind == "read_regs":
        first, count = rng.randrange(P.CSR_REGS - 1), rng.randrange(1, P.MAX_READ_REGS + 1)
        count = min(count, P.CSR_REGS - first)
        assert be.read_regs(first, count) == board.regs[first:first + count], f"{where}: read_regs wrong"
    elif kind == "write_reg":
        value = rng.randrange(1 << 32)
        be.write_reg(Reg.SCRATCH, value)
        assert board.regs[Reg.SCRATCH] == value, f"{where}: write_reg not stored"
    else:
        assert be.wait_done(timeout=1.0) == board.regs[Reg.STATUS]
    return kind


def test_serial_backend_against_a_faulty_fake_board():
    rng = random.Random(SEED)
    board = FakeBoard(rng)
    be = SerialBackend(board, None, **FAST)
    assert be.config == CONFIG and be.mem_words == MEM_WORDS and be.stats.retries == 0
    outcomes: dict[str, int] = {}
    t0 = time.monotonic()
    calls = 0
    while calls < BOARD_CALLS and time.monotonic() - t0 < BOARD_WALL_S:
        calls += 1
        board.rate = rng.choice([0.0, 0.1, 0.3, 0.6])
        board.babble = rng.choice([garbage, text]) if rng.random() < 0.02 else None
        faults_before = len(board.faults)
        where = f"seed {SEED} call {calls} (rate {board.rate}, babble {board.babble and board.babble.__name__})"
        c0 = time.monotonic()
        try:
            kind = one_call(be, board, rng, where)
            outcome = "ok"
        except LinkTimeout:
            outcome = "LinkTimeout"
        except LinkError as e:
            outcome = "LinkError"
            assert str(e).startswith(f"{be.port_name}: "), f"{where}: message does not name the port: {e}"
        except AssertionError:
            raise
        except Exception as e:
            raise AssertionError(f"{where}: undocumented exception {e!r}; faults "
                                 f"{board.faults[faults_before:]}") from e
        elapsed = time.monotonic() - c0
        bound = call_bound(be, P.Op.READ_MEM, 1200 * CONFIG.rows) + 1.0   # wait_done: 1 s more
        assert elapsed <= bound, f"{where}: took {elapsed:.2f} s, bound {bound:.2f} s"
        if board.babble:
            assert outcome != "ok" or kind == "", f"{where}: a babbling line gave a result"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    wall = time.monotonic() - t0
    print(f"\nfake board fuzz: {calls} calls in {wall:.2f} s (seed {SEED}): {outcomes}; "
          f"{len(board.faults)} faults injected; {be.stats.summary()}")
    assert calls >= 200
    assert outcomes.get("ok", 0) > calls // 3 and outcomes.get("LinkError", 0) and outcomes.get("LinkTimeout", 0)
    assert be.stats.corrupt and be.stats.stale and be.stats.retries and be.stats.duplicates


@pytest.mark.parametrize("case", range(30))
def test_implausible_identification_is_a_link_error(case):
    """INFO fields, engine ID, VERSION and CONFIG out of range: a LinkError naming the port and the values."""
    rng = random.Random(SEED + case)
    field, value = rng.choice([
        ("word_bytes", rng.choice([0, 1, 3, 128, 255])), ("mem_words", 0), ("clk_hz", rng.choice([0, 7, 1 << 31])),
        ("magic", rng.randrange(1 << 32)), ("version_major", rng.randrange(2, 256)),
        ("reg_ID", rng.randrange(1 << 32)), ("reg_VERSION", rng.randrange(2, 1 << 16) << 16),
        ("reg_CONFIG0", rng.randrange(1 << 32)), ("reg_CONFIG1", rng.randrange(1 << 32)),
        ("reg_CONFIG2", rng.choice([0, 3, 1 << 20])), ("raw", rng.randbytes(P.INFO_BYTES))])
    board = FakeBoard(rng, regs={Reg[field[4:]]: value} if field.startswith("reg_") else None,
                      info={field: value} if field in ("word_bytes", "mem_words", "clk_hz") else None)
    if field in ("magic", "version_major"):
        raw = bytearray(P.pack_info(**board.info))
        if field == "magic":
            raw[0:4] = value.to_bytes(4, "little")
        else:
            raw[4] = value
        board.raw_info = bytes(raw)
    elif field == "raw":
        board.raw_info = value
    where = f"seed {SEED + case}: {field}={value!r}"
    try:
        be = SerialBackend(board, None, **FAST)
    except LinkTimeout as e:
        raise AssertionError(f"{where}: a well-formed answer taken as silence: {e}") from e
    except LinkError as e:
        print(f"{where}: {e}")
        assert str(e).startswith("fake:board: "), str(e)
        return
    except Exception as e:
        raise AssertionError(f"{where}: undocumented exception {e!r}") from e
    # Accepted: only if what was read is a plausible configuration, and then it is exactly the board's.
    assert be.config == EngineConfig.from_config_words(*board.regs[Reg.CONFIG0:Reg.CONFIG2 + 1]), where
    assert be.word_bytes == be.config.rows
