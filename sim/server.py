"""A cocotb test module that serves a host process over a local socket.

The host side is :class:`sim.verilator_backend.VerilatorBackend`: it builds a
:class:`sim.top.SimTop`, listens on a Unix socket, and starts the simulation
with ``COCOTB_TEST_MODULES=sim.server``; the single test here connects to the
socket named by ``KINDLING_SIM_SOCKET``, reads the build's metadata from
``KINDLING_SIM_META``, starts the clock, resets the design and then executes
requests until ``shutdown`` (or until the host goes away).

While a request is being read the simulator is frozen: simulated time only
passes inside requests that need it (CSR accesses, ``run``, ``run_until``).

Wire format: :mod:`sim.wire` (a 12-byte prefix, a JSON header, the raw
payload). Requests are
``{"op": name, ...arguments}``; answers ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": kind, "message": text}`` where ``kind`` is
``"EngineTimeout"``, ``"ValueError"`` or another exception's class name.

Operations
    ``mem_write(addr)`` + payload, ``mem_read(addr, n)`` -> payload: the VPI
    backdoor, word addresses, no simulated time;
    ``csr_write(reg, value)``, ``csr_read(reg)`` -> int: through the CSR bus,
    2 cycles each;
    ``run(cycles)``; ``run_until(reg, mask, value, max_cycles, timeout_s)`` ->
    ``{"value", "cycles"}``: clock until ``read(reg) & mask == value``
    (e.g. ``STATUS.BUSY`` clear), woken by ``irq`` rising, else polling
    every 64..65536 cycles; raises ``EngineTimeout`` past either limit;
    ``set_stalls(req, rsp, block, seed)``; ``reset(cycles)``;
    ``cycles`` -> int; ``mem_info`` -> dict; ``shutdown``.

The backdoor writes each 32-byte row of the memory array through a raw GPI
handle (``get_handle_by_index``), created on first use and cached, as a
binary string built for all rows at once with numpy.
"""

from __future__ import annotations

import json
import os
import socket
import time

import numpy as np

from .wire import ENV_META, ENV_SOCKET, PROTOCOL, recv_msg, send_msg

__all__ = ["CLOCK_PERIOD_NS", "pack_binstr", "unpack_binstr", "serve"]

#: Simulated clock period when the server drives the clock (only matters for
#: waveforms: everything else counts cycles).
CLOCK_PERIOD_NS = 10

# cocotb's GPI set actions (cocotb.handle._GPISetAction): write at once.
_NO_DELAY = 3
_DEPOSIT = 0


# --- row <-> binary string conversion --------------------------------------------------------

def pack_binstr(data: bytes, row_bytes: int) -> str:
    """Little-endian rows of ``row_bytes`` bytes -> their MSB-first binary digits, concatenated."""
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, row_bytes)[:, ::-1]
    bits = np.unpackbits(rows, axis=1)
    bits += ord("0")
    return bits.tobytes().decode("ascii")


def unpack_binstr(text: str, row_bytes: int) -> bytes:
    """Inverse of :func:`pack_binstr`. Digits other than 0/1 (X, Z) read as 0."""
    bits = np.frombuffer(text.encode("ascii"), dtype=np.uint8).reshape(-1, 8 * row_bytes)
    rows = np.packbits(bits == ord("1"), axis=1)
    return rows[:, ::-1].tobytes()


# --- the server ------------------------------------------------------------------------------

class EngineTimeout(Exception):
    """run_until ran out of cycles or wall time (reported to the host under this name)."""

    def __init__(self, message: str, status: int, cycles: int):
        super().__init__(message)
        self.status = status
        self.cycles = cycles


class _Server:
    def __init__(self, dut, meta: dict):
        from cocotb.triggers import ReadOnly, RisingEdge

        self.dut = dut
        self.meta = meta
        self.row_bytes = meta["row_bytes"]
        self.word_bytes = meta["word_bytes"]
        self.words_per_row = meta["words_per_row"]
        self.mem_words = meta["mem_words"]
        self.n_rows = meta["n_rows"]
        mem = dut
        for name in meta["memory_path"]:
            mem = getattr(mem, name)
        self.mem_raw = mem._handle
        self.rows: list = [None] * self.n_rows
        self.rise = RisingEdge(dut.clk)
        self.read_only = ReadOnly()
        self.in_read_only = False
        self.t0 = None
        self.stats = {"handles": 0}

    # time ----------------------------------------------------------------------------------

    def now_steps(self) -> int:
        from cocotb.simtime import get_sim_time
        return get_sim_time("step")

    def cycles(self) -> int:
        return (self.now_steps() - self.t0) // self.period_steps

    async def edge(self):
        """Continue just after the next rising edge (where inputs may be driven)."""
        await self.rise
        self.in_read_only = False

    async def writable(self):
        if self.in_read_only:
            await self.edge()

    async def run(self, n: int):
        """Advance exactly ``n`` rising edges."""
        from cocotb.triggers import Timer
        if n <= 0:
            return
        if self.in_read_only:
            await self.edge()
            n -= 1
            if n == 0:
                return
        if n > 1:
            # Land on the falling edge before the n-th rising edge, then take it.
            await Timer((n - 1) * self.period_steps + self.period_steps // 2, "step")
        await self.edge()

    # CSR bus -------------------------------------------------------------------------------

    async def csr_write(self, reg: int, value: int):
        d = self.dut
        await self.writable()
        d.csr__addr.value = reg
        d.csr__w_data.value = value & 0xFFFFFFFF
        d.csr__w_stb.value = 1
        await self.edge()
        d.csr__w_stb.value = 0

    async def csr_read(self, reg: int) -> int:
        d = self.dut
        await self.writable()
        d.csr__addr.value = reg
        d.csr__r_stb.value = 1
        await self.edge()
        d.csr__r_stb.value = 0
        # r_data is registered at the edge just taken; read it once settled.
        await self.read_only
        self.in_read_only = True
        return int(d.csr__r_data.value)

    async def run_until(self, reg: int, mask: int, value: int, max_cycles: int, timeout_s: float):
        from cocotb.triggers import First, RisingEdge, Timer
        start = self.cycles()
        deadline = time.monotonic() + timeout_s
        irq_rise = RisingEdge(self.dut.irq)
        chunk = 64
        while True:
            got = await self.csr_read(reg)
            waited = self.cycles() - start
            if got & mask == value:
                return {"value": got, "cycles": waited}
            if waited >= max_cycles or time.monotonic() > deadline:
                why = (f"{max_cycles} cycles" if waited >= max_cycles else f"{timeout_s} s wall time")
                raise EngineTimeout(
                    f"register {reg} = {got:#010x} still has {got & mask:#x} under mask {mask:#x} "
                    f"(waiting for {value:#x}) after {waited} cycles: gave up after {why}",
                    got, waited)
            n = max(1, min(chunk, max_cycles - waited))
            chunk = min(chunk * 2, 1 << 16)
            await self.writable()
            timer = Timer((n - 1) * self.period_steps + self.period_steps // 2, "step")
            if int(self.dut.irq.value):
                await timer
            else:
                await First(irq_rise, timer)
            await self.edge()

    # stall controls ------------------------------------------------------------------------

    async def set_stalls(self, req: int, rsp: int, block: bool, seed: int | None):
        d = self.dut
        for name, v in (("req", req), ("rsp", rsp)):
            if not (isinstance(v, int) and 0 <= v <= 255):
                raise ValueError(f"stall {name} must be in [0, 255] (probability x 256), got {v!r}")
        await self.writable()
        d.stall__req.value = req
        d.stall__rsp.value = rsp
        d.stall__block.value = int(bool(block))
        if seed is not None:
            if not (isinstance(seed, int) and 0 < seed < 1 << 32):
                raise ValueError(f"stall seed must be a non-zero 32-bit integer, got {seed!r}")
            d.stall__seed.value = seed
            d.stall__load.value = 1
            await self.edge()
            d.stall__load.value = 0

    async def reset(self, n: int):
        await self.writable()
        self.dut.rst.value = 1
        await self.run(max(1, n))
        self.dut.rst.value = 0

    # backdoor ------------------------------------------------------------------------------

    def _row(self, i: int):
        h = self.rows[i]
        if h is None:
            h = self.rows[i] = self.mem_raw.get_handle_by_index(i)
            if h is None:
                raise RuntimeError(f"no VPI handle for memory row {i}")
            self.stats["handles"] += 1
        return h

    def _check(self, addr, n_words):
        if not (isinstance(addr, int) and isinstance(n_words, int) and addr >= 0 and n_words >= 0
                and addr + n_words <= self.mem_words):
            raise ValueError(f"words [{addr}, {addr}+{n_words}) are outside the simulated memory "
                             f"(0..{self.mem_words - 1})")

    def _read_rows(self, first: int, count: int) -> bytes:
        row = self._row
        text = "".join([row(i).get_signal_val_binstr() for i in range(first, first + count)])
        return unpack_binstr(text, self.row_bytes)

    def _write_rows(self, first: int, data: bytes):
        rb = 8 * self.row_bytes
        text = pack_binstr(data, self.row_bytes)
        row = self._row
        for k, i in enumerate(range(first, first + len(data) // self.row_bytes)):
            row(i).set_signal_val_binstr(_NO_DELAY, text[k * rb:(k + 1) * rb])

    def mem_write(self, addr: int, data: bytes):
        if len(data) % self.word_bytes:
            raise ValueError(f"{len(data)} bytes is not a whole number of {self.word_bytes}-byte words")
        self._check(addr, len(data) // self.word_bytes)
        if not data:
            return
        rb = self.row_bytes
        start = addr * self.word_bytes
        end = start + len(data)
        first, last = start // rb, (end - 1) // rb
        lo, hi = first * rb, (last + 1) * rb
        if lo == start and hi == end:
            self._write_rows(first, data)
            return
        # Partial rows at either end: read-modify-write them, the middle is written whole.
        head = bytearray(self._read_rows(first, 1))
        tail = bytearray(self._read_rows(last, 1)) if last != first else head
        buf = bytearray(hi - lo)
        buf[:rb] = head
        buf[-rb:] = tail
        buf[start - lo:end - lo] = data
        self._write_rows(first, bytes(buf))

    def mem_read(self, addr: int, n_words: int) -> bytes:
        self._check(addr, n_words)
        if n_words == 0:
            return b""
        rb = self.row_bytes
        start = addr * self.word_bytes
        end = start + n_words * self.word_bytes
        first, last = start // rb, (end - 1) // rb
        raw = self._read_rows(first, last - first + 1)
        return raw[start - first * rb:end - first * rb]

    def mem_info(self) -> dict:
        d = self.dut
        return {"fault": int(d.mem_info__fault.value), "fault_addr": int(d.mem_info__fault_addr.value),
                "reads": int(d.mem_info__reads.value), "writes": int(d.mem_info__writes.value),
                "stalled": int(d.mem_info__stalled.value)}

    # main loop -----------------------------------------------------------------------------

    async def start(self):
        from cocotb.clock import Clock
        from cocotb.utils import get_sim_steps
        d = self.dut
        for name in ("csr__addr", "csr__r_stb", "csr__w_stb", "csr__w_data", "stall__req", "stall__rsp",
                     "stall__seed", "stall__load", "stall__block"):
            getattr(d, name).value = 0
        d.rst.value = 1
        if self.meta.get("internal_clock"):
            # The Verilog wrapper toggles clk itself (sim.build.clock_wrapper): measure its period.
            await self.edge()
            t1 = self.now_steps()
            await self.edge()
            self.period_steps = self.now_steps() - t1
        else:
            self.period_steps = get_sim_steps(CLOCK_PERIOD_NS, "ns")
            Clock(d.clk, self.period_steps, "step").start(start_high=False)
            await self.edge()
        await self.run(3)
        d.rst.value = 0
        await self.edge()
        self.t0 = self.now_steps()

    async def dispatch(self, req: dict, payload: bytearray):
        op = req.get("op")
        if op == "mem_write":
            self.mem_write(req["addr"], bytes(payload))
            return None, b""
        if op == "mem_read":
            return None, self.mem_read(req["addr"], req["n"])
        if op == "csr_write":
            await self.csr_write(req["reg"], req["value"])
            return None, b""
        if op == "csr_read":
            return await self.csr_read(req["reg"]), b""
        if op == "run":
            await self.run(req["cycles"])
            return self.cycles(), b""
        if op == "run_until":
            return await self.run_until(req["reg"], req["mask"], req["value"], req["max_cycles"],
                                        req["timeout_s"]), b""
        if op == "set_stalls":
            await self.set_stalls(req.get("req", 0), req.get("rsp", 0), req.get("block", False),
                                  req.get("seed"))
            return None, b""
        if op == "reset":
            await self.reset(req.get("cycles", 4))
            return None, b""
        if op == "cycles":
            return self.cycles(), b""
        if op == "mem_info":
            return self.mem_info(), b""
        raise ValueError(f"unknown operation {op!r}")


async def serve(dut):
    """Connect to the host, then execute its requests until ``shutdown`` or disconnection."""
    path = os.environ.get(ENV_SOCKET)
    meta_path = os.environ.get(ENV_META)
    if not path or not meta_path:
        raise RuntimeError(f"{ENV_SOCKET} and {ENV_META} must name the host's socket and the build's "
                           f"metadata; this module is started by sim.verilator_backend")
    with open(meta_path) as f:
        meta = json.load(f)["metadata"]
    server = _Server(dut, meta)
    await server.start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    try:
        send_msg(sock, {"ok": True, "result": {"protocol": PROTOCOL, "pid": os.getpid(), "meta": meta}})
        while True:
            msg = recv_msg(sock)
            if msg is None:
                break
            req, payload = msg
            if req.get("op") == "shutdown":
                send_msg(sock, {"ok": True, "result": {"cycles": server.cycles(), **server.stats}})
                break
            try:
                result, out = await server.dispatch(req, payload)
            except Exception as exc:  # reported to the host, which raises it there
                send_msg(sock, {"ok": False, "error": type(exc).__name__, "message": str(exc),
                                "status": getattr(exc, "status", None),
                                "cycles": getattr(exc, "cycles", None)})
                continue
            send_msg(sock, {"ok": True, "result": result}, out)
    finally:
        sock.close()


try:
    import cocotb
except ImportError:  # the wire-format helpers above are usable without cocotb
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def kindling_server(dut):
        """Serve the host process (see the module documentation)."""
        await serve(dut)
