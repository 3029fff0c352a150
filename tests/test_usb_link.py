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
from hw.link.usb import ANSWER_BYTES_PER_CYCLE, REQUEST_BYTES_PER_CYCLE, UsbStreamLink, usb_byte_layout
from sim.fixtures import CopyEngine

# LUNA 0.2.3 still imports amaranth.hdl.rec and friends (deprecated in 0.5, gone in 0.6): its warnings, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:luna")

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
    # The contract hw.link.usb states (and sw's frames-per-second figures use).
    assert REQUEST_BYTES_PER_CYCLE - 0.001 < rate_in <= REQUEST_BYTES_PER_CYCLE, rate_in
    assert ANSWER_BYTES_PER_CYCLE <= rate_out < ANSWER_BYTES_PER_CYCLE + 0.001, rate_out   # the CRC's 2 bytes: faster


# ---- the whole link: LUNA's device at its UTMI interface ------------------------------------------------

def _luna():
    """LUNA's UTMI bus, packet ids and packet encoders (LUNA is the optional ``usb`` extra)."""
    pytest.importorskip("luna", reason="LUNA is not installed (pip install -e .[usb])")
    from luna.gateware.interface.utmi import UTMIInterface
    from luna.gateware.test.contrib import usb_packet
    from luna.gateware.usb.usb2 import USBPacketID

    return UTMIInterface, usb_packet, USBPacketID


def _octets(bits: str) -> list[int]:
    """LUNA's test packets are bit strings, least significant bit first."""
    return [int(bits[i:i + 8][::-1], 2) for i in range(0, len(bits), 8)]


class UsbHarness(wiring.Component):
    """:class:`UsbLink` on a UTMI bus, with the board behind it."""

    def __init__(self, word_bytes: int):
        from hw.link.usb import UsbLink

        UTMIInterface, _, _ = _luna()
        self.word_bytes = word_bytes
        self.utmi = UTMIInterface()
        self.link = UsbLink(bus=self.utmi, **bridge_args(word_bytes))
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = self.link
        attach_board(m, self.link, self.word_bytes)
        return m


class UtmiHost:
    """A USB host at the device's UTMI interface (``usb`` domain): tokens, data packets and handshakes,
    every wait bounded by ``timeout`` cycles; bulk transfers with data toggles and NAK retries."""

    def __init__(self, ctx, utmi, *, timeout=4000, max_naks=2000):
        _, self.packet, self.PID = _luna()
        self.ctx, self.utmi, self.timeout, self.max_naks = ctx, utmi, timeout, max_naks
        self.toggle = {}                   # (endpoint, direction) -> next DATA0/1 of a bulk endpoint
        self.in_packets = []               # every bulk IN data packet's length, in order

    async def send(self, octets):
        ctx, u = self.ctx, self.utmi
        ctx.set(u.rx_active, 1)                  # RxActive rises a cycle before the first byte (UTMI)
        await ctx.tick("usb")
        ctx.set(u.rx_valid, 1)
        for b in octets:
            ctx.set(u.rx_data, b)
            await ctx.tick("usb")
        ctx.set(u.rx_active, 0)
        ctx.set(u.rx_valid, 0)
        await ctx.tick("usb").repeat(2)

    async def receive(self) -> bytes:
        ctx, u = self.ctx, self.utmi
        ctx.set(u.tx_ready, 1)
        for _ in range(self.timeout):
            if ctx.get(u.tx_valid):
                break
            await ctx.tick("usb")
        else:
            raise AssertionError(f"no packet from the device within {self.timeout} cycles")
        data = bytearray()
        while ctx.get(u.tx_valid):
            data.append(ctx.get(u.tx_data))
            await ctx.tick("usb")
        ctx.set(u.tx_ready, 0)
        return bytes(data)

    async def token(self, pid, endpoint):
        await self.send(_octets(self.packet.token_packet(pid, 0, endpoint)))

    async def out_packet(self, endpoint, data, data_pid, token=None) -> int:
        """One OUT (or SETUP) transaction: the handshake's PID byte."""
        await self.token(token or self.PID.OUT, endpoint)
        await self.send(_octets(self.packet.data_packet(data_pid, list(data))))
        return (await self.receive())[0]

    async def in_packet(self, endpoint):
        """One IN transaction: ``(pid byte, payload)``, payload None for a handshake (NAK, STALL)."""
        await self.token(self.PID.IN, endpoint)
        got = await self.receive()
        if len(got) == 1:
            return got[0], None
        payload = list(got[1:-2])
        assert list(got[-2:]) == self.packet.crc16(payload), f"bad CRC16 on a packet from the device: {got.hex()}"
        await self.send([self.PID.ACK.byte()])
        return got[0], bytes(payload)

    def _next_pid(self, key):
        pid = self.toggle.get(key, self.PID.DATA0)
        self.toggle[key] = self.PID.DATA1 if pid == self.PID.DATA0 else self.PID.DATA0
        return pid

    async def setup(self, request_type, request, value=0, index=0, length=0):
        data = [request_type, request, value & 0xFF, value >> 8, index & 0xFF, index >> 8, length & 0xFF, length >> 8]
        got = await self.out_packet(0, data, self.PID.DATA0, token=self.PID.SETUP)
        assert got == self.PID.ACK.byte(), f"SETUP answered {got:#04x}, expected ACK"

    async def _in_until_data(self, endpoint):
        for _ in range(self.max_naks):
            pid, payload = await self.in_packet(endpoint)
            if payload is not None:
                return pid, payload
            assert pid == self.PID.NAK.byte(), f"IN on endpoint {endpoint} answered {pid:#04x}"
        raise AssertionError(f"endpoint {endpoint} NAKed {self.max_naks} INs in a row")

    async def control_in(self, request_type, request, value=0, index=0, length=0, max_packet=64) -> bytes:
        """A control read: SETUP, data stage (DATA1 first), status stage (a zero-length OUT)."""
        await self.setup(request_type, request, value, index, length)
        data, expect = bytearray(), self.PID.DATA1
        while True:
            pid, payload = await self._in_until_data(0)
            assert pid == expect.byte(), f"data stage PID {pid:#04x}, expected {expect.name}"
            expect = self.PID.DATA0 if expect == self.PID.DATA1 else self.PID.DATA1
            data += payload
            if len(payload) < max_packet or len(data) >= length:
                break
        got = await self.out_packet(0, b"", self.PID.DATA1)
        assert got == self.PID.ACK.byte(), f"status stage answered {got:#04x}"
        return bytes(data)

    async def control_out(self, request_type, request, value=0, index=0):
        """A control write without data stage: SETUP, then the status stage (a zero-length IN)."""
        await self.setup(request_type, request, value, index, 0)
        pid, payload = await self._in_until_data(0)
        assert (pid, payload) == (self.PID.DATA1.byte(), b""), f"status stage: {pid:#04x} {payload!r}"

    async def bulk_out(self, data: bytes, max_packet=P.USB_MAX_PACKET):
        """``data`` to the bulk OUT endpoint in packets of ``max_packet``, NAKs retried."""
        for start in range(0, len(data), max_packet):
            pid = self._next_pid((P.USB_ENDPOINT, "out"))
            for _ in range(self.max_naks):
                got = await self.out_packet(P.USB_ENDPOINT, data[start:start + max_packet], pid)
                if got == self.PID.ACK.byte():
                    break
                assert got == self.PID.NAK.byte(), f"bulk OUT answered {got:#04x}"
            else:
                raise AssertionError(f"bulk OUT NAKed {self.max_naks} times in a row")

    async def bulk_in(self, max_packet=P.USB_MAX_PACKET) -> bytes:
        """One transfer from the bulk IN endpoint: packets until a short one (a zero-length one included)."""
        data = bytearray()
        while True:
            pid, payload = await self._in_until_data(P.USB_ENDPOINT)
            expect = self._next_pid((P.USB_ENDPOINT, "in"))
            assert pid == expect.byte(), f"bulk IN PID {pid:#04x}, expected {expect.name}"
            self.in_packets.append(len(payload))
            data += payload
            if len(payload) < max_packet:
                return bytes(data)


def run_usb(script, *, word_bytes=4):
    """Run ``script(host)`` (an async function of a :class:`UtmiHost`) against the simulated device, with
    ``sync`` at 75 MHz and ``usb`` at 60 MHz. Every wait of the host is bounded: the run ends."""
    dut = UsbHarness(word_bytes)
    out = {}

    async def bench(ctx):
        ctx.set(dut.utmi.line_state, 0b01)       # J: an idle full-speed bus, no reset
        await ctx.delay(20 / 60e6)               # the usb domain's reset synchronizer lets go (a tick would raise)
        host = UtmiHost(ctx, dut.utmi)
        out["result"] = await script(host)
        out["host"] = host

    sim = Simulator(dut)
    sim.add_clock(1 / 75e6, domain="sync")
    sim.add_clock(1 / 60e6, domain="usb")
    sim.add_testbench(bench)
    sim.run()
    return out["result"], out["host"]


def test_usb_enumeration_device_descriptor():
    from usb_protocol.types import USBStandardRequests

    async def script(host):
        return await host.control_in(0x80, USBStandardRequests.GET_DESCRIPTOR, value=0x0100, length=18)

    desc, _ = run_usb(script)
    assert len(desc) == 18 and desc[:2] == bytes([18, 1]), desc.hex()
    assert int.from_bytes(desc[8:10], "little") == P.USB_VID and int.from_bytes(desc[10:12], "little") == P.USB_PID


def _bulk_exchange(requests):
    async def script(host):
        transfers = []
        for frame in requests:
            await host.bulk_out(frame)
            transfers.append(await host.bulk_in())
        return transfers
    return script


def test_usb_bulk_requests_answered_one_transfer_each():
    """Requests on bulk OUT, each answer one bulk IN transfer, byte for byte the protocol's (and what the
    host's parser, the one SerialBackend runs, takes as valid frames)."""
    requests, expected = exchange(random.Random(SEED))
    transfers, host = run_usb(_bulk_exchange(requests))
    assert transfers == expected, f"got {[t.hex() for t in transfers]}, expected {[e.hex() for e in expected]}"
    events = P.FrameReader(requests=False).feed(b"".join(transfers))
    assert [(e.op, e.seq, e.status) for e in events] == [(f[1], f[2], f[3]) for f in expected]
    assert host.in_packets == [len(e) for e in expected]       # all short: no ZLP with 4-byte words


def test_usb_answer_of_exactly_512_bytes_ends_with_a_zlp():
    data = random.Random(SEED).randbytes(498)
    requests = [req(P.Op.WRITE_MEM, 1, payload=data), req(P.Op.READ_MEM, 2, length=498)]
    transfers, host = run_usb(_bulk_exchange(requests), word_bytes=2)
    assert transfers == [ans(P.Op.WRITE_MEM, 1), ans(P.Op.READ_MEM, 2, payload=data)]
    assert host.in_packets == [P.FRAME_OVERHEAD, P.USB_MAX_PACKET, 0]


def test_usb_long_request_and_answer_cross_several_packets():
    data = random.Random(SEED + 1).randbytes(P.MAX_PAYLOAD)
    requests = [req(P.Op.WRITE_MEM, 1, payload=data), req(P.Op.READ_MEM, 2, length=P.MAX_PAYLOAD)]
    transfers, host = run_usb(_bulk_exchange(requests))
    assert transfers == [ans(P.Op.WRITE_MEM, 1), ans(P.Op.READ_MEM, 2, payload=data)]
    n = P.answer_wire_bytes(P.Op.READ_MEM, P.MAX_PAYLOAD)
    assert host.in_packets == [P.FRAME_OVERHEAD] + [P.USB_MAX_PACKET] * (n // 512) + [n % 512]


def test_usb_resync_request_drops_the_frame_in_progress():
    head = req(P.Op.WRITE_MEM, 9, addr=4, payload=bytes(range(64)))[:30]

    async def script(host):
        await host.bulk_out(head)
        await host.control_out(0x40, P.USB_REQUEST_RESYNC)     # vendor, host to device, to the device
        cut = await host.bulk_in()
        await host.bulk_out(req(P.Op.INFO, 10))
        return cut, await host.bulk_in()

    (cut, info), _ = run_usb(script)
    assert cut == ans(P.Op.WRITE_MEM, 9, addr=4, status=P.LinkStatus.TRUNCATED)
    assert info == ans(P.Op.INFO, 10, payload=info_payload(4, 10))   # INFO reports its own seq


def test_usb_other_vendor_requests_stall():
    async def script(host):
        await host.setup(0x40, P.USB_REQUEST_RESYNC + 1)
        return await host.in_packet(0)

    (pid, payload), host = run_usb(script)
    assert (pid, payload) == (host.PID.STALL.byte(), None)


# ---- the board ---------------------------------------------------------------------------------------------

def test_ecpix5_usb_board_core_has_no_uart_pins():
    """The USB top elaborates for the ECPIX-5 (DDR3 board core, a stand-in engine): no UART, the ULPI pins, a
    60 MHz constraint on the PHY's clock; the UART top keeps its pins; the on-chip-memory core takes the USB
    link as well."""
    import dataclasses

    from hw.boards import board
    from hw.boards.dram_board import DramBoardCore
    from hw.boards.top import BoardCore, BoardTop
    from hw.link import UARTLink
    from hw.link.usb import UsbLink

    _luna()
    spec = board("ecpix5-85f")
    dram_members = {"irq", "busy", "link_active", "dram_ready", "clk_in"}   # clk_in: the DDR3 core's CRG
    top = BoardTop(spec.with_link("usb"), engine=CopyEngine(spec.engine))
    lpf = spec.make_platform().prepare(top, name="top").files["top.lpf"]
    assert isinstance(top.core, DramBoardCore) and isinstance(top.core.link, UsbLink)
    assert set(top.core.signature.members) == dram_members
    assert 'FREQUENCY PORT "ulpi_0__clk__io" 60000000.0 HZ;' in lpf and "uart" not in lpf
    uart = BoardTop(spec, engine=CopyEngine(spec.engine))
    assert isinstance(uart.core.link, UARTLink) and set(uart.core.signature.members) == dram_members | {"rx", "tx"}
    onchip = dataclasses.replace(spec, storage="bram", mem_words=16384, dram_config=None,
                                 engine=dataclasses.replace(spec.engine, mem_addr_bits=16, ibuf_depth=2048))
    small = BoardTop(onchip.with_link("usb"), engine=CopyEngine(onchip.engine))
    onchip.make_platform().prepare(small, name="top")
    assert isinstance(small.core, BoardCore) and isinstance(small.core.link, UsbLink)
    assert set(small.core.signature.members) == {"irq", "busy", "link_active"}
    usb = spec.with_link("usb")
    assert (spec.link, usb.link, usb.seed, usb.pnr_opts, spec.with_link("uart")) == ("uart", "usb", 1, "", spec)
    with pytest.raises(ValueError, match="board icebreaker has no 'usb' link; it has: uart"):
        board("icebreaker").with_link("usb")


# ---- the host: UsbPipe under SerialBackend ---------------------------------------------------------------

class FakeUsbDevice:
    """A PyUSB device of the USB link, answering like the board: one IN read gives one whole answer (the
    short packet that ends its transfer), a resync request drops the frame in progress. ``drop`` answers
    are swallowed (the host must time out, resync and resend)."""

    def __init__(self, *, mem_words=MEM_WORDS, drop=0):
        self.mem = bytearray(4 * mem_words)
        self.reader = P.FrameReader(requests=True)
        self.answers, self.drop, self.resyncs, self.reads = [], drop, 0, []

    def write(self, endpoint, data, timeout):
        assert endpoint == P.USB_ENDPOINT and timeout >= 1, (endpoint, timeout)
        for f in self.reader.feed(bytes(data)):
            self.answers.append(self._answer(f))
        return len(data)

    def _answer(self, f):
        if f.op == P.Op.INFO:
            return ans(f.op, f.seq, payload=P.pack_info(board=3, word_bytes=4, mem_words=len(self.mem) // 4,
                                                        clk_hz=75_000_000, baud=P.USB_HS_BAUD, last_seq=f.seq))
        if f.op == P.Op.WRITE_MEM:
            self.mem[4 * f.addr:4 * f.addr + len(f.payload)] = f.payload
            return ans(f.op, f.seq, addr=f.addr)
        assert f.op == P.Op.READ_MEM, f
        return ans(f.op, f.seq, addr=f.addr, payload=bytes(self.mem[4 * f.addr:4 * f.addr + f.length]))

    def read(self, endpoint, size, timeout):
        import usb.core

        assert endpoint == 0x80 | P.USB_ENDPOINT and size % P.USB_MAX_PACKET == 0 and timeout >= 1
        self.reads.append(size)
        while self.answers and self.drop:
            self.answers.pop(0)
            self.drop -= 1
        if not self.answers:
            raise usb.core.USBTimeoutError("timeout", errno=110)
        return bytearray(self.answers.pop(0))

    def ctrl_transfer(self, request_type, request, value, index, data, timeout):
        assert (request_type, request, data) == (0x40, P.USB_REQUEST_RESYNC, None)
        self.resyncs += 1
        self.reader = P.FrameReader(requests=True)


def test_serial_backend_runs_over_usb_pipe():
    pytest.importorskip("usb", reason="PyUSB is not installed")
    from sw.backends.serial import SerialBackend
    from sw.backends.usb import UsbPipe

    dev = FakeUsbDevice(mem_words=4096, drop=1)       # the first INFO answer is lost: timeout, resync request, resend
    link = SerialBackend(UsbPipe(dev, name="usb:1209:0001"), config=CFGS[4], timeout=0.05)
    data = random.Random(SEED).randbytes(P.MAX_PAYLOAD * 2 + 40)
    link.write_mem(10, data)
    assert link.read_mem(10, len(data) // 4) == data
    assert (link.board, link.clk_hz, dev.resyncs, link.stats.retries) == ("ecpix5-85f", 75_000_000, 1, 1)
    assert link.port_name == "usb:1209:0001"


@pytest.mark.parametrize("name, expected", [("usb", (0x1209, 0x0001)), ("usb:1d50:615c", (0x1D50, 0x615C))])
def test_usb_port_names(name, expected):
    from sw.backends.usb import parse_usb_port

    assert parse_usb_port(name) == expected


@pytest.mark.parametrize("name", ["usb:", "usb:12:34", "usb:xyzw:0001", "usb:1209"])
def test_usb_port_name_malformed(name):
    from sw.backends.serial import LinkError
    from sw.backends.usb import open_usb_port

    with pytest.raises(LinkError, match=r"a USB port is 'usb' or 'usb:VVVV:PPPP'"):
        open_usb_port(name)


def test_usb_port_absent_is_one_line():
    """No board here: libusb is missing, or the device is (one line either way, no traceback)."""
    pytest.importorskip("usb", reason="PyUSB is not installed")
    from sw.backends import open_serial
    from sw.backends.serial import LinkError

    with pytest.raises(LinkError) as e:
        open_serial("usb")
    msg = str(e.value)
    assert "\n" not in msg and (msg == "usb: PyUSB finds no libusb (install libusb-1.0)" or
                                msg.startswith("usb: no USB device 1209:0001")), msg


def test_usb_link_rate_in_frames_per_second():
    """SqueezeNet 1.1 resident on a board, one frame on the link: the picture as WRITE_PIX (151,490 B on the
    wire) and the rest (1,304 B: the run, the logits), docs/BOARDS.md. At 75 MHz the USB link moves it in
    about 4 ms (UART at 3 Mbaud: 0.51 s)."""
    from hw.link.usb import USB_HS_BULK_BYTES_PER_S, usb_rates
    from sw.resident import FpsEstimate

    up, down = usb_rates(75e6)
    assert (up, down) == (37.5e6, 75e6 * 4 / 14) and usb_rates(120e6)[0] == USB_HS_BULK_BYTES_PER_S
    est = FpsEstimate(clk_hz=75e6, cycles=13_970_549, dram_bytes=13_520_000, link_bytes=152_794, baud=P.USB_HS_BAUD,
                      link_bytes_per_s=up)
    uart = FpsEstimate(clk_hz=75e6, cycles=13_970_549, dram_bytes=13_520_000, link_bytes=152_794, baud=P.DEFAULT_BAUD)
    assert est.fps_link == 37.5e6 / 152_794 and uart.fps_link == 300_000 / 152_794
    assert "152,794 B at 37.5 MB/s" in est.summary()
