"""The USB link (:mod:`hw.link.usb`) in Amaranth's simulator.

Two levels:

* the ``sync`` part (:class:`~hw.link.usb.UsbStreamLink`: the bridge and the answer framer) with byte
  streams, seeded idle and backpressure: every answer is the exact frame of the protocol, its last
  byte marked (that mark is what ends a USB transfer), and the bytes per cycle of the link;
* the whole :class:`~hw.link.usb.UsbLink` with LUNA's device at its UTMI interface, driven by a
  small host model (tokens, data packets, handshakes, CRCs from LUNA's test helpers): enumeration
  (the device descriptor with VID:PID), request frames on bulk OUT, answers on bulk IN (a transfer
  of whole 512-byte packets ends with a zero-length packet), and the resync vendor request.

LUNA on a UTMI bus runs its full-speed logic (no high-speed chirp: the ULPI PHY is not simulated);
the packets, endpoints and clock crossing are the board's.
"""

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.arbiter import MemArbiter
from hw.boards.memory import OnChipMemory
from hw.isa import EngineConfig, Reg
from hw.link import protocol as P
from hw.link.usb import UsbStreamLink, usb_byte_layout
from sim.fixtures import CopyEngine

SEED = 20261205
MEM_WORDS = 1024
TIMEOUT = 256
CFGS = {4: EngineConfig(rows=4, cols=4, ibuf_depth=1024, acc_depth=16, mem_addr_bits=12, pool_max_cb=16),
        2: EngineConfig(rows=2, cols=2, ibuf_depth=1024, acc_depth=16, mem_addr_bits=12, pool_max_cb=16)}


def bridge_args(word_bytes: int) -> dict:
    cfg = CFGS[word_bytes]
    return dict(word_bytes=cfg.rows, addr_bits=cfg.mem_addr_bits, mem_words=MEM_WORDS, frame_timeout=TIMEOUT,
                board=0, clk_hz=75_000_000, baud=P.USB_HS_BAUD)


def attach_board(m: Module, link, word_bytes: int) -> None:
    """The board behind a link: CopyEngine on the CSR bus, the arbiter and the on-chip memory."""
    cfg = CFGS[word_bytes]
    m.submodules.engine = eng = CopyEngine(cfg)
    m.submodules.arb = arb = MemArbiter(n=2, word_bytes=cfg.rows, addr_bits=cfg.mem_addr_bits, max_reads=4)
    m.submodules.mem = mem = OnChipMemory(word_bytes=cfg.rows, addr_bits=cfg.mem_addr_bits, mem_words=MEM_WORDS)
    wiring.connect(m, eng.mem, arb.i0)
    wiring.connect(m, link.mem, arb.i1)
    wiring.connect(m, arb.o, mem.bus)
    wiring.connect(m, link.csr, eng.csr)


class StreamHarness(wiring.Component):
    """:class:`UsbStreamLink` with the board behind it; its byte streams and ``abort`` outside."""

    i: In(stream.Signature(8))
    abort: In(1)
    o: Out(stream.Signature(usb_byte_layout()))

    def __init__(self, word_bytes: int):
        self.word_bytes = word_bytes
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = UsbStreamLink(**bridge_args(self.word_bytes))
        attach_board(m, link, self.word_bytes)
        wiring.connect(m, wiring.flipped(self.i), link.i)
        wiring.connect(m, link.o, wiring.flipped(self.o))
        m.d.comb += link.abort.eq(self.abort)
        return m


def run_stream(chunks, *, word_bytes=4, idle=0.0, backpressure=0.0, seed=SEED, tail_cycles=None):
    """Feed ``chunks`` (bytes, or ``("abort",)``) to the stream link; return ``(transfers, stamps)``: the
    answer bytes cut at each ``last`` mark (a trailing unmarked rest is a transfer too), and the cycles at
    which each request byte was taken (``stamps["in"]``) and each answer byte sent (``stamps["out"]``)."""
    dut = StreamHarness(word_bytes)
    if tail_cycles is None:   # room for the longest answer: a few cycles a byte (more under backpressure)
        tail_cycles = 2000 + 8 * sum(len(c) for c in chunks if not isinstance(c, tuple))
    transfers, current, stamps = [], bytearray(), {"in": [], "out": []}
    clock = {"n": 0}
    rng = random.Random(seed)

    async def feed(ctx):
        for chunk in chunks:
            if isinstance(chunk, tuple):
                ctx.set(dut.abort, 1)
                await ctx.tick()
                ctx.set(dut.abort, 0)
                continue
            for b in chunk:
                while idle and rng.random() < idle:
                    await ctx.tick()
                ctx.set(dut.i.payload, b)
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                stamps["in"].append(clock["n"])
                ctx.set(dut.i.valid, 0)
        for _ in range(tail_cycles):
            await ctx.tick()

    async def drain(ctx):
        orng = random.Random(seed + 1)
        while True:
            ready = not (backpressure and orng.random() < backpressure)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            clock["n"] += 1
            if ready and valid:
                current.append(payload.data)
                stamps["out"].append(clock["n"])
                if payload.last:
                    transfers.append(bytes(current))
                    current.clear()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed)
    sim.add_process(drain)
    sim.run()
    if current:
        transfers.append(bytes(current))
    return transfers, stamps


def req(op, seq, addr=0, length=0, payload=b""):
    return P.encode_frame(op, seq, addr=addr, length=length if op not in P.WRITE_OPS else None, payload=payload)


def ans(op, seq, addr=0, payload=b"", status=0):
    return P.encode_frame(op, seq, status=status, addr=addr, payload=payload)


def info_payload(word_bytes: int, last_seq: int) -> bytes:
    a = bridge_args(word_bytes)
    return P.pack_info(board=0, word_bytes=word_bytes, mem_words=MEM_WORDS, clk_hz=a["clk_hz"], baud=a["baud"],
                       last_seq=last_seq)


def exchange(rng, word_bytes=4):
    """Requests and the exact answer transfers the protocol specifies for them."""
    data = bytes(rng.randrange(256) for _ in range(4 * 40))
    value = rng.randrange(1 << 32)
    requests = [
        req(P.Op.INFO, 1),
        req(P.Op.WRITE_MEM, 2, addr=100, payload=data),
        req(P.Op.READ_MEM, 3, addr=100, length=len(data)),
        req(P.Op.WRITE_REG, 4, addr=Reg.SCRATCH, payload=value.to_bytes(4, "little")),
        req(P.Op.READ_REG, 5, addr=Reg.SCRATCH, length=4),
        req(P.Op.READ_MEM, 6, addr=MEM_WORDS, length=4),              # beyond the memory
    ]
    expected = [
        ans(P.Op.INFO, 1, payload=info_payload(word_bytes, 1)),
        ans(P.Op.WRITE_MEM, 2, addr=100),
        ans(P.Op.READ_MEM, 3, addr=100, payload=data),
        ans(P.Op.WRITE_REG, 4, addr=Reg.SCRATCH),
        ans(P.Op.READ_REG, 5, addr=Reg.SCRATCH, payload=value.to_bytes(4, "little")),
        ans(P.Op.READ_MEM, 6, addr=MEM_WORDS, status=P.LinkStatus.BAD_ADDRESS),
    ]
    return requests, expected


STREAM_MODES = {"plain": dict(), "idle+backpressure": dict(idle=0.3, backpressure=0.5)}


@pytest.mark.parametrize("mode", list(STREAM_MODES))
def test_stream_link_answers_each_frame_exactly(mode):
    requests, expected = exchange(random.Random(SEED))
    transfers, _ = run_stream(requests, **STREAM_MODES[mode])
    assert transfers == expected, f"got {[t.hex() for t in transfers]}, expected {[e.hex() for e in expected]}"


def test_stream_link_abort_answers_truncated():
    head = req(P.Op.WRITE_MEM, 9, addr=4, payload=bytes(range(64)))[:30]
    transfers, _ = run_stream([head, ("abort",), req(P.Op.READ_REG, 10, addr=Reg.ID, length=4)])
    assert [P.FrameReader().feed(t)[0].status for t in transfers] == [P.LinkStatus.TRUNCATED, P.LinkStatus.OK]
    assert transfers[0] == ans(P.Op.WRITE_MEM, 9, addr=4, status=P.LinkStatus.TRUNCATED)


def test_stream_link_answer_of_whole_packets_is_marked_at_its_end():
    """2-byte words: a READ_MEM of 498 bytes is an answer of exactly 512 (the case that needs a ZLP on USB)."""
    data = random.Random(SEED).randbytes(498)
    requests = [req(P.Op.WRITE_MEM, 1, payload=data), req(P.Op.READ_MEM, 2, length=498)]
    transfers, _ = run_stream(requests, word_bytes=2)
    assert transfers == [ans(P.Op.WRITE_MEM, 1), ans(P.Op.READ_MEM, 2, payload=data)]
    assert len(transfers[1]) == P.USB_MAX_PACKET


def test_no_answer_is_whole_packets_with_four_byte_words():
    """What docs/BOARDS.md says: with words of 4 bytes or more an answer never fills whole 512-byte packets."""
    lengths = {P.answer_wire_bytes(P.Op.READ_MEM, n) for n in range(4, P.MAX_PAYLOAD + 1, 4)}
    lengths |= {P.answer_wire_bytes(op, 4) for op in P.Op} | {P.FRAME_OVERHEAD}
    assert not [n for n in lengths if n % P.USB_MAX_PACKET == 0]
    assert P.answer_wire_bytes(P.Op.READ_MEM, 498) == P.USB_MAX_PACKET


def link_rate(word_bytes=4):
    """Bytes per cycle through the bridge: a WRITE_MEM of MAX_PAYLOAD in, a READ_MEM of MAX_PAYLOAD out."""
    n = P.MAX_PAYLOAD
    data = random.Random(SEED).randbytes(n)
    write, read = req(P.Op.WRITE_MEM, 1, payload=data), req(P.Op.READ_MEM, 2, length=n)
    transfers, stamps = run_stream([write, read], word_bytes=word_bytes, tail_cycles=4 * n)
    assert transfers == [ans(P.Op.WRITE_MEM, 1), ans(P.Op.READ_MEM, 2, payload=data)]
    t_in = stamps["in"][len(write) - 1] - stamps["in"][0]
    out = stamps["out"][len(transfers[0]):]
    return (len(write) - 1) / t_in, (len(out) - 1) / (out[-1] - out[0])


def test_link_rate_is_a_byte_every_other_cycle():
    rate_in, rate_out = link_rate()
    print(f"bridge: {rate_in:.4f} request bytes/cycle, {rate_out:.4f} answer bytes/cycle; at 75 MHz "
          f"{rate_in * 75:.2f} / {rate_out * 75:.2f} MB/s")
    # The bridge's contract: a request byte every other cycle; READ_MEM answers one 4-byte word every
    # 14 cycles (a memory read, then the bytes one every other cycle, each through the answer register).
    assert 0.499 < rate_in <= 0.5, rate_in
    assert 0.285 < rate_out <= 4 / 14, rate_out
