"""The host link: protocol definitions, UART, and the bridge in Amaranth's simulator against malformed input.

The bridge runs with the board's memory (:class:`hw.boards.memory.OnChipMemory`),
the arbiter, and :class:`sim.fixtures.CopyEngine` as the register target (it has
the engine's register map and a STATUS.BUSY that lasts), with seeded idle and
backpressure insertion on its byte streams.
"""

import random
import struct

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.arbiter import MemArbiter
from hw.boards.memory import OnChipMemory
from hw.isa import ENGINE_ID, Ctrl, EngineConfig, Reg, Status
from hw.link import LinkBridge, UARTLink, UARTRx, UARTTx
from hw.link import protocol as P
from sim.fixtures import CopyEngine

SEED = 20240607


# ---- protocol -------------------------------------------------------------------------------------

def crc16_reference(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, bit by bit from its definition (independent of binascii and amaranth.lib.crc)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def test_crc_check_value():
    # The catalogue's check value of CRC-16/CCITT-FALSE.
    assert P.crc16(b"123456789") == crc16_reference(b"123456789") == 0x29B1


@pytest.mark.parametrize("n", [0, 1, 2, 9, 64, 4096])
def test_crc_matches_references(n):
    rng = random.Random(SEED + n)
    data = bytes(rng.randrange(256) for _ in range(n))
    assert P.crc16(data) == crc16_reference(data) == P.CRC(data_width=8).compute(data)


def test_crc_residue_is_zero():
    """Data followed by its CRC (MSB first) leaves the residue the gateware's match_detected looks for."""
    data = bytes(range(37))
    framed = data + P.crc16(data).to_bytes(2, "big")
    assert P.CRC(data_width=8).residue() == 0
    assert crc16_reference(framed) == 0


def test_frame_roundtrip_and_hunt():
    rng = random.Random(SEED)
    frames = [P.encode_frame(P.Op.WRITE_MEM, s, addr=rng.randrange(1 << 20), payload=bytes(rng.randrange(256)
                             for _ in range(4 * rng.randrange(1, 40)))) for s in range(5)]
    garbage = bytes([0x00, P.SYNC, 0x13, P.SYNC, 0xFF])
    reader = P.FrameReader(requests=True)
    events = []
    for f in frames:
        stream_ = garbage + f
        for i in range(0, len(stream_), 7):     # in odd-sized pieces
            events += reader.feed(stream_[i:i + 7])
    good = [e for e in events if isinstance(e, P.Frame)]
    assert [(f.seq, f.payload) for f in good] == [(s, frames[s][P.FRAME_OVERHEAD:-2]) for s in range(5)]
    assert all(e[0] == P.LinkStatus.HEADER_CRC for e in events if isinstance(e, tuple))


def test_frame_errors_detected():
    f = bytearray(P.encode_frame(P.Op.WRITE_MEM, 7, addr=3, payload=bytes(range(32))))
    bad_payload = bytearray(f)
    bad_payload[P.FRAME_OVERHEAD + 5] ^= 0x10
    ev = P.FrameReader(requests=True).feed(bytes(bad_payload))
    assert ev[0][0] == P.LinkStatus.PAYLOAD_CRC and ev[0][1].seq == 7
    bad_header = bytearray(f)
    bad_header[4] ^= 0x01
    ev = P.FrameReader(requests=True).feed(bytes(bad_header))
    assert ev and ev[0] == (P.LinkStatus.HEADER_CRC, None)


def test_info_roundtrip_and_sizes():
    raw = P.pack_info(board=1, word_bytes=4, mem_words=32768, clk_hz=48_000_000, baud=3_000_000, last_seq=9)
    assert len(raw) == P.INFO_BYTES
    info = P.unpack_info(raw)
    assert (info["magic"], info["board"], info["word_bytes"], info["mem_words"], info["clk_hz"], info["last_seq"]) \
        == (P.LINK_MAGIC, 1, 4, 32768, 48_000_000, 9)
    assert P.request_wire_bytes(P.Op.WRITE_MEM, 100) == P.FRAME_OVERHEAD + 102
    assert P.answer_wire_bytes(P.Op.READ_MEM, 100) == P.FRAME_OVERHEAD + 102
    assert P.answer_wire_bytes(P.Op.WRITE_MEM, 100) == P.FRAME_OVERHEAD


# ---- UART -------------------------------------------------------------------------------------------

def _line_for(data: bytes, divisor: int, *, bad_stop=()) -> list[int]:
    levels = []
    for k, b in enumerate(data):
        bits = [0, *((b >> i) & 1 for i in range(8)), 0 if k in bad_stop else 1]
        for bit in bits:
            levels += [bit] * divisor
        if k in bad_stop:
            levels += [1] * (3 * divisor)   # the line returns high after the break
    return levels + [1] * (4 * divisor)


@pytest.mark.parametrize("divisor", [4, 5, 16])
def test_uart_tx_waveform(divisor):
    dut = UARTTx(divisor)
    data = bytes([0x55, 0x00, 0xFF, 0xA5])
    seen = []

    async def bench(ctx):
        for b in data:
            ctx.set(dut.i.payload, b)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        for _ in range(12 * divisor):
            await ctx.tick()

    async def probe(ctx):
        async for _, _, tx in ctx.tick().sample(dut.tx):
            seen.append(tx)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_process(probe)
    sim.run()
    start = seen.index(0)
    want = _line_for(data, divisor)[:len(data) * 10 * divisor]
    got = seen[start:start + len(want)]
    first_bad = next((i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b), None)
    assert got == want, f"line differs from the 8N1 waveform at sample {first_bad}"


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_uart_rx(divisor):
    rng = random.Random(SEED + divisor)
    data = bytes(rng.randrange(256) for _ in range(12))
    line = _line_for(data, divisor, bad_stop=(5,))
    # A glitch shorter than half a bit on the idle line is not a start bit.
    line = [1] * divisor + [0] * (divisor // 2 - 1) + [1] * (2 * divisor) + line
    dut = UARTRx(divisor)
    got, errors = [], []

    async def drive(ctx):
        for level in line:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def collect(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, valid, payload, err in ctx.tick().sample(dut.o.valid, dut.o.payload, dut.error):
            if valid:
                got.append(payload)
            if err:
                errors.append(1)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_process(collect)
    sim.run()
    want = bytes(b for k, b in enumerate(data) if k != 5)
    assert bytes(got) == want
    assert len(errors) == 1, "the byte with the low stop bit must raise exactly one framing error"


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_uart_rejects_small_divisor():
    with pytest.raises(ValueError, match="divisor"):
        UARTRx(3)


# ---- the bridge ------------------------------------------------------------------------------------

CFG = EngineConfig(rows=4, cols=4, ibuf_depth=1024, acc_depth=16, mem_addr_bits=12, pool_max_cb=16)
MEM_WORDS = 1024
TIMEOUT = 64


class BridgeHarness(wiring.Component):
    """The bridge with the board's arbiter and memory, and CopyEngine as the register target."""

    i: In(stream.Signature(8))
    abort: In(1)
    o: Out(stream.Signature(8))

    def __init__(self, *, write_pix: bool = False):
        self.write_pix = write_pix
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = br = LinkBridge(word_bytes=CFG.rows, addr_bits=CFG.mem_addr_bits, mem_words=MEM_WORDS,
                                              frame_timeout=TIMEOUT, board=0, clk_hz=1_000_000, baud=250_000,
                                              write_pix=self.write_pix)
        m.submodules.engine = eng = CopyEngine(CFG)
        m.submodules.arb = arb = MemArbiter(n=2, word_bytes=CFG.rows, addr_bits=CFG.mem_addr_bits, max_reads=4)
        m.submodules.mem = mem = OnChipMemory(word_bytes=CFG.rows, addr_bits=CFG.mem_addr_bits, mem_words=MEM_WORDS)
        wiring.connect(m, eng.mem, arb.i0)
        wiring.connect(m, br.mem, arb.i1)
        wiring.connect(m, arb.o, mem.bus)
        wiring.connect(m, br.csr, eng.csr)
        wiring.connect(m, wiring.flipped(self.i), br.i)
        wiring.connect(m, br.o, wiring.flipped(self.o))
        m.d.comb += br.abort.eq(self.abort)
        return m


def run_bridge(chunks, *, seed=SEED, idle=0.0, backpressure=0.0, gap_after=None, tail_cycles=3000,
               write_pix=False):
    """Feed ``chunks`` (bytes, or ("abort",), or ("gap", cycles)) to the bridge; return every byte it sent."""
    dut = BridgeHarness(write_pix=write_pix)
    out = bytearray()
    rng = random.Random(seed)

    async def feed(ctx):
        for chunk in chunks:
            if isinstance(chunk, tuple):
                if chunk[0] == "abort":
                    ctx.set(dut.abort, 1)
                    await ctx.tick()
                    ctx.set(dut.abort, 0)
                else:
                    for _ in range(chunk[1]):
                        await ctx.tick()
                continue
            for b in chunk:
                while idle and rng.random() < idle:
                    await ctx.tick()
                ctx.set(dut.i.payload, b)
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)
        for _ in range(tail_cycles):
            await ctx.tick()

    async def drain(ctx):
        orng = random.Random(seed + 1)
        while True:
            ready = not (backpressure and orng.random() < backpressure)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ready and valid:
                out.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed)
    sim.add_process(drain)
    sim.run()
    return bytes(out)


def answers(raw: bytes) -> list:
    events = P.FrameReader(requests=False).feed(raw)
    assert all(isinstance(e, P.Frame) for e in events), f"the bridge sent a corrupted answer: {events}"
    return events


def req(op, seq, addr=0, length=0, payload=b""):
    return P.encode_frame(op, seq, addr=addr, length=length if op not in P.WRITE_OPS else None, payload=payload)


STREAM_MODES = {"plain": dict(), "idle+backpressure": dict(idle=0.3, backpressure=0.5)}


@pytest.mark.parametrize("mode", list(STREAM_MODES))
def test_bridge_memory_and_registers(mode):
    rng = random.Random(SEED)
    data = bytes(rng.randrange(256) for _ in range(4 * 40))
    value = rng.randrange(1 << 32)
    frames = [
        req(P.Op.INFO, 1),
        req(P.Op.WRITE_MEM, 2, addr=100, payload=data),
        req(P.Op.READ_MEM, 3, addr=100, length=len(data)),
        req(P.Op.READ_MEM, 4, addr=110, length=8),
        req(P.Op.WRITE_REG, 5, addr=Reg.SCRATCH, payload=value.to_bytes(4, "little")),
        req(P.Op.READ_REG, 6, addr=Reg.ID, length=4 * 3),
        req(P.Op.READ_REG, 7, addr=Reg.SCRATCH, length=4),
    ]
    got = answers(run_bridge(frames, **STREAM_MODES[mode]))
    assert [(a.op, a.seq, a.status) for a in got] == [(int(P.Op(f[1])), f[2], 0) for f in frames]
    info = P.unpack_info(got[0].payload)
    assert (info["magic"], info["word_bytes"], info["mem_words"], info["baud"], info["last_seq"]) == \
        (P.LINK_MAGIC, CFG.rows, MEM_WORDS, 250_000, 1)
    assert got[2].payload == data
    assert got[3].payload == data[40:48]
    ident, version, config0 = struct.unpack("<3I", got[5].payload)
    assert ident == ENGINE_ID and config0 == CFG.config_words()[0]
    assert int.from_bytes(got[6].payload, "little") == value


def test_bridge_wait_and_run():
    """START a copy through the link; WAIT answers once BUSY clears, with the final STATUS."""
    rng = random.Random(SEED + 1)
    src = bytes(rng.randrange(256) for _ in range(4 * 64))
    frames = [
        req(P.Op.WRITE_MEM, 1, addr=0, payload=src),
        req(P.Op.WRITE_REG, 2, addr=Reg.CMD_ADDR, payload=(0).to_bytes(4, "little")),
        req(P.Op.WRITE_REG, 3, addr=Reg.CMD_COUNT, payload=(64).to_bytes(4, "little")),
        req(P.Op.WRITE_REG, 4, addr=Reg.PROF_ADDR, payload=(512).to_bytes(4, "little")),
        req(P.Op.WRITE_REG, 5, addr=Reg.CTRL, payload=int(Ctrl.START).to_bytes(4, "little")),
        req(P.Op.WAIT, 6, addr=10_000),
        req(P.Op.READ_MEM, 7, addr=512, length=len(src)),
    ]
    got = answers(run_bridge(frames))
    assert [a.status for a in got] == [0] * len(frames)
    status = int.from_bytes(got[5].payload, "little")
    assert status & Status.DONE and not status & Status.BUSY
    assert got[6].payload == src


def test_bridge_wait_expires():
    """WAIT gives up after its cycle budget while the engine is still busy (the host then decides)."""
    frames = [
        req(P.Op.WRITE_REG, 1, addr=Reg.CMD_COUNT, payload=(600).to_bytes(4, "little")),
        req(P.Op.WRITE_REG, 2, addr=Reg.PROF_ADDR, payload=(400).to_bytes(4, "little")),
        req(P.Op.WRITE_REG, 3, addr=Reg.CTRL, payload=int(Ctrl.START).to_bytes(4, "little")),
        req(P.Op.WAIT, 4, addr=20),
    ]
    got = answers(run_bridge(frames, tail_cycles=200))
    assert int.from_bytes(got[3].payload, "little") & Status.BUSY


def test_bridge_duplicate_register_write_not_executed():
    """A register write repeating the last executed sequence number is acknowledged, not executed."""
    frames = [
        req(P.Op.WRITE_REG, 9, addr=Reg.SCRATCH, payload=(111).to_bytes(4, "little")),
        req(P.Op.WRITE_REG, 9, addr=Reg.SCRATCH, payload=(222).to_bytes(4, "little")),
        req(P.Op.READ_REG, 10, addr=Reg.SCRATCH, length=4),
        req(P.Op.WRITE_REG, 11, addr=Reg.SCRATCH, payload=(333).to_bytes(4, "little")),
        req(P.Op.READ_REG, 12, addr=Reg.SCRATCH, length=4),
    ]
    got = answers(run_bridge(frames))
    assert [a.duplicate for a in got] == [False, True, False, False, False]
    assert int.from_bytes(got[2].payload, "little") == 111
    assert int.from_bytes(got[4].payload, "little") == 333


def _header_only(op, seq, addr, length):
    return P.encode_header(op, seq, addr=addr, length=length)


def test_bridge_refuses_bad_headers_like_the_spec():
    """Random headers with valid CRCs: the bridge's status is check_request's, and nothing wedges."""
    rng = random.Random(SEED + 2)
    frames, expect = [], []
    for seq in range(40):
        op = rng.choice([0, 7, 0x55, *[o.value for o in P.Op]])
        addr = rng.choice([0, 5, 63, 64, 70, MEM_WORDS - 3, MEM_WORDS, rng.randrange(1 << 32)])
        length = rng.choice([0, 1, 3, 4, 8, 12, 64, 68, 4096, 4100, rng.randrange(1 << 16)])
        st = P.check_request(op, addr, length, word_bytes=CFG.rows, mem_words=MEM_WORDS)
        if st == P.LinkStatus.OK and op in {o.value for o in P.WRITE_OPS}:
            continue   # a valid write: its payload would follow; covered elsewhere
        if st == P.LinkStatus.OK and op == P.Op.WAIT.value:
            addr %= 64  # keep the wait short
        frames.append(_header_only(op, seq, addr, length))
        expect.append((seq, st))
    frames.append(req(P.Op.READ_REG, 200, addr=Reg.ID, length=4))
    got = answers(run_bridge(frames, tail_cycles=20_000))
    assert [(a.seq, P.LinkStatus(a.status)) for a in got[:-1]] == expect
    assert got[-1].status == 0 and int.from_bytes(got[-1].payload, "little") == ENGINE_ID


def test_bridge_malformed_input_does_not_wedge():
    """Bit flips, a cut frame (timeout), a line break, garbage: each answered or ignored, then a good frame works."""
    payload = bytes(range(64))
    good = req(P.Op.WRITE_MEM, 1, addr=8, payload=payload)
    flipped_payload = bytearray(good)
    flipped_payload[P.FRAME_OVERHEAD + 10] ^= 4
    flipped_header = bytearray(good)
    flipped_header[6] ^= 0x80
    cut = good[:P.FRAME_OVERHEAD + 20]
    chunks = [
        bytes(flipped_payload),                     # -> PAYLOAD_CRC
        bytes(flipped_header),                      # -> HEADER_CRC (then its payload is hunted as garbage)
        ("gap", 2 * TIMEOUT),
        cut, ("gap", 2 * TIMEOUT),                  # -> TRUNCATED by the frame timeout
        good[:30], ("abort",),                      # -> TRUNCATED by a line break
        bytes([0x00, 0x11, 0xFF] * 5),              # garbage without SYNC: ignored
        good,                                       # -> OK
        req(P.Op.READ_MEM, 2, addr=8, length=64),   # -> the payload
    ]
    raw = run_bridge(chunks, tail_cycles=5000)
    got = answers(raw)
    statuses = [P.LinkStatus(a.status & 0x7F) for a in got]
    assert statuses[0] == P.LinkStatus.PAYLOAD_CRC
    assert P.LinkStatus.HEADER_CRC in statuses
    assert statuses.count(P.LinkStatus.TRUNCATED) >= 2
    assert statuses[-2:] == [P.LinkStatus.OK, P.LinkStatus.OK]
    assert got[-1].payload == payload


def _no_sync(frame: bytes) -> bool:
    """No SYNC after the first byte: a refused frame's payload is hunted through without starting a frame."""
    return P.SYNC not in frame[1:]


def _pix_frame(rng, seq, addr, n_bytes):
    """A whole WRITE_PIX frame (header, payload, CRC) of ``n_bytes`` random bytes, without SYNC inside."""
    while True:
        payload = bytes(rng.choice([b for b in range(256) if b != P.SYNC]) for _ in range(n_bytes))
        frame = P.encode_frame(P.Op.WRITE_PIX, seq, addr=addr, payload=payload)
        if _no_sync(frame):
            return frame, payload


@pytest.mark.parametrize("mode", list(STREAM_MODES))
def test_bridge_write_pix(mode):
    """3-byte pixels into 4-byte words (lane 3 zeroed); bad lengths and addresses refused, the bridge answers after."""
    rng = random.Random(SEED + 5)
    n = 40
    ones = bytes([0x11] * 4 * (n + 1))
    good, pixels = _pix_frame(rng, 2, 100, P.PIXEL_BYTES * n)
    bad_len, _ = _pix_frame(rng, 4, 100, P.PIXEL_BYTES * 5 + 1)
    bad_addr, _ = _pix_frame(rng, 5, MEM_WORDS - 2, P.PIXEL_BYTES * 3)
    too_long = _header_only(P.Op.WRITE_PIX, 6, 0, P.MAX_PAYLOAD + 2)     # 1366 pixels: one more than fits
    edge, edge_pixels = _pix_frame(rng, 8, MEM_WORDS - 3, P.PIXEL_BYTES * 3)
    frames = [
        req(P.Op.WRITE_MEM, 1, addr=100, payload=ones),                 # lane 3 of each word is 0x11 before
        good,
        req(P.Op.READ_MEM, 3, addr=100, length=len(ones)),
        bad_len, bad_addr, too_long,
        req(P.Op.READ_MEM, 7, addr=100, length=len(ones)),              # the refused frames wrote nothing
        edge,                                                           # the memory's last three words
        req(P.Op.READ_MEM, 9, addr=MEM_WORDS - 3, length=12),
        req(P.Op.READ_REG, 10, addr=Reg.ID, length=4),
    ]
    got = answers(run_bridge(frames, write_pix=True, tail_cycles=5000, **STREAM_MODES[mode]))
    statuses = [(a.seq, P.LinkStatus(a.status)) for a in got]
    assert statuses == [(1, P.LinkStatus.OK), (2, P.LinkStatus.OK), (3, P.LinkStatus.OK),
                        (4, P.LinkStatus.BAD_LENGTH), (5, P.LinkStatus.BAD_ADDRESS), (6, P.LinkStatus.BAD_LENGTH),
                        (7, P.LinkStatus.OK), (8, P.LinkStatus.OK), (9, P.LinkStatus.OK), (10, P.LinkStatus.OK)]
    expect = b"".join(pixels[3 * i:3 * i + 3] + b"\0" for i in range(n)) + ones[4 * n:]
    assert got[2].payload == expect, (got[2].payload.hex(), expect.hex())
    assert got[6].payload == expect
    assert got[8].payload == b"".join(edge_pixels[3 * i:3 * i + 3] + b"\0" for i in range(3))
    assert int.from_bytes(got[9].payload, "little") == ENGINE_ID


def test_bridge_without_write_pix_answers_bad_op():
    """A bridge built without WRITE_PIX refuses it (the host then sends words) and answers what follows."""
    frame, _ = _pix_frame(random.Random(SEED + 6), 1, 0, 12)
    got = answers(run_bridge([frame, req(P.Op.READ_REG, 2, addr=Reg.ID, length=4)]))
    assert [(a.seq, P.LinkStatus(a.status)) for a in got] == [(1, P.LinkStatus.BAD_OP), (2, P.LinkStatus.OK)]
    assert int.from_bytes(got[1].payload, "little") == ENGINE_ID


def test_uart_link_end_to_end():
    """Two frames through the UART pins of UARTLink (bit level), with the bridge behind."""
    divisor = 4

    class Top(wiring.Component):
        rx: In(1, init=1)
        tx: Out(1, init=1)

        def elaborate(self, platform):
            m = Module()
            m.submodules.link = link = UARTLink(divisor=divisor, word_bytes=CFG.rows, addr_bits=CFG.mem_addr_bits,
                                                mem_words=MEM_WORDS, frame_timeout=TIMEOUT * 10, board=0)
            m.submodules.engine = eng = CopyEngine(CFG)
            m.submodules.arb = arb = MemArbiter(n=2, word_bytes=CFG.rows, addr_bits=CFG.mem_addr_bits)
            m.submodules.mem = mem = OnChipMemory(word_bytes=CFG.rows, addr_bits=CFG.mem_addr_bits,
                                                  mem_words=MEM_WORDS)
            wiring.connect(m, eng.mem, arb.i0)
            wiring.connect(m, link.mem, arb.i1)
            wiring.connect(m, arb.o, mem.bus)
            wiring.connect(m, link.csr, eng.csr)
            m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
            return m

    dut = Top()
    frames = req(P.Op.WRITE_MEM, 1, addr=4, payload=bytes(range(16))) + req(P.Op.READ_MEM, 2, addr=4, length=16)
    line = _line_for(frames, divisor)
    levels = []

    async def drive(ctx):
        for level in line:
            ctx.set(dut.rx, level)
            await ctx.tick()
        for _ in range(60 * 10 * divisor):
            await ctx.tick()

    async def probe(ctx):
        async for _, _, tx in ctx.tick().sample(dut.tx):
            levels.append(tx)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_process(probe)
    sim.run()
    # Decode the tx line at the middle of each bit.
    out, i = bytearray(), 0
    while i < len(levels):
        if levels[i] == 0:
            bits = [levels[i + divisor * k + divisor // 2] for k in range(10)]
            assert bits[9] == 1, "stop bit"
            out.append(sum(b << k for k, b in enumerate(bits[1:9])))
            i += 10 * divisor - divisor // 2
        else:
            i += 1
    got = answers(bytes(out))
    assert [a.status for a in got] == [0, 0] and got[1].payload == bytes(range(16))
