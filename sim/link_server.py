"""A cocotb test module: the host's serial line to the simulated board top, over a local socket.

Started by :class:`sim.link_sim.LinkSimulation` with
``COCOTB_TEST_MODULES=sim.link_server``. The single test connects to the
socket named by ``KINDLING_SIM_SOCKET``, resets the board top
(:class:`sim.link_top.LinkSimTop`) and then moves bytes: what the host writes
is driven onto the board's ``rx`` pin by :class:`sim.uart_model.UartDriver`,
what the board sends on ``tx`` is sampled by :class:`sim.uart_model.UartMonitor`
and sent to the host. The simulation runs freely meanwhile (the board's
timeouts and the engine's runs take simulated time whether or not bytes
move); the socket is polled every ``POLL_CYCLES`` cycles.

Messages use :mod:`sim.wire` framing (JSON header, raw payload).
Host to simulator: ``write`` + bytes; ``break(bits)``; ``drain(id)`` (answered
``drained(id)`` when everything written before it is on the wire);
``cycles(id)``; ``reset(id)`` (the top's reset held for 4 cycles); ``shutdown``. Simulator to
host: ``hello``, ``read`` + bytes, ``drained``, ``cycles``, ``reset``, ``bye``.
"""

from __future__ import annotations

import json
import os
import socket

from .wire import ENV_META, ENV_SOCKET, FrameDecoder, send_msg

__all__ = ["POLL_CYCLES", "serve_link"]

#: Cycles between two looks at the socket.
POLL_CYCLES = 256

async def serve_link(dut):
    """Connect to the host, reset the board top, carry the serial line until ``shutdown``."""
    import cocotb
    from cocotb.simtime import get_sim_time
    from cocotb.triggers import RisingEdge, Timer

    from .uart_model import UartDriver, UartMonitor

    path, meta_path = os.environ.get(ENV_SOCKET), os.environ.get(ENV_META)
    if not path or not meta_path:
        raise RuntimeError(f"{ENV_SOCKET} and {ENV_META} must be set; this module is started by sim.link_sim")
    with open(meta_path) as f:
        meta = json.load(f)["metadata"]

    dut.rx.value = 1
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    t1 = get_sim_time("step")
    await RisingEdge(dut.clk)
    period = get_sim_time("step") - t1
    for _ in range(4):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    t0 = get_sim_time("step")

    def cycles() -> int:
        return (get_sim_time("step") - t0) // period

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    inbox = FrameDecoder(sock)
    out = bytearray()

    def send(header, payload=b""):
        sock.setblocking(True)
        try:
            send_msg(sock, header, payload)
        finally:
            sock.setblocking(False)

    bit_steps = meta["divisor"] * period
    driver = UartDriver(dut.rx, bit_steps)
    monitor = UartMonitor(dut.tx, bit_steps, out.append)
    cocotb.start_soon(driver.run())
    cocotb.start_soon(monitor.run())
    send({"op": "hello", "pid": os.getpid(), "meta": meta, "period_steps": period})
    sock.setblocking(False)
    try:
        while True:
            for head, payload in inbox.poll():
                op = head.get("op")
                if op == "write":
                    driver.write(payload)
                elif op == "break":
                    driver.line_break(int(head.get("bits", 24)))
                elif op == "drain":
                    ident = head["id"]
                    driver.marker(lambda ident=ident: send({"op": "drained", "id": ident, "cycles": cycles()}))
                elif op == "cycles":
                    send({"op": "cycles", "id": head["id"], "value": cycles()})
                elif op == "reset":   # the board's reset pressed: every register of the top back to its reset value
                    dut.rst.value = 1
                    for _ in range(4):
                        await RisingEdge(dut.clk)
                    dut.rst.value = 0
                    send({"op": "reset", "id": head["id"], "cycles": cycles()})
                elif op == "shutdown":
                    send({"op": "bye", "cycles": cycles(), "sent": driver.sent, "received": monitor.received,
                          "framing_errors": monitor.framing_errors})
                    return
            if inbox.closed:
                return
            if out:
                send({"op": "read"}, bytes(out))
                out.clear()
            await Timer(POLL_CYCLES * period, "step")
    finally:
        sock.close()


try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def kindling_link_server(dut):
        """Carry the host's serial line (see the module documentation)."""
        await serve_link(dut)
