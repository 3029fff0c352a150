"""A :class:`~sw.transport.Transport` to the engine simulated by Verilator.

:class:`VerilatorBackend` wraps the engine (or any component with its three
members) in a :class:`sim.top.SimTop`, builds it with :func:`sim.build.build`
(cached: an unchanged design is never rebuilt), starts the cocotb simulation
of :mod:`sim.server` (:class:`sim.launch.SimulatorRun`), and talks to it over
a Unix socket (:mod:`sim.wire`). It is a simulator backend: above ``sw`` in
the package order, opened by name with ``sw.backends.open_backend("verilator")``.
Memory accesses use the simulator's VPI backdoor (no simulated time);
register accesses go through the CSR bus with the clock running;
:meth:`~VerilatorBackend.wait_done` clocks the design inside the simulator
until ``STATUS.BUSY`` clears, woken by ``irq``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from hw.isa import EngineConfig, Reg, Status
from sw.transport import EngineTimeout, Transport, TransportError

from .launch import SimulatorRun
from .wire import PROTOCOL, recv_msg, send_msg

__all__ = ["VerilatorBackend"]

log = logging.getLogger(__name__)

_UNLIMITED_CYCLES = 1 << 62


def _probability(p, name: str) -> int:
    """A stall probability in [0, 1) -> the gateware's x/256 setting."""
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
        raise ValueError(f"stall probability {name} must be in [0, 1), got {p!r}")
    return min(255, round(p * 256))


class VerilatorBackend(Transport):
    """The engine (or a stand-in with its ports) in Verilator, behind the :class:`Transport` interface.

    Parameters
    ----------
    top_factory : callable or None
        ``top_factory(config)`` returns the device under test: a component
        with ``csr: In(CsrSignature)``, ``mem: Out(MemPortSignature(...))``,
        ``irq: Out(1)`` (e.g. ``hw.engine.Engine`` or
        ``sim.fixtures.CopyEngine``), or a ready :class:`sim.top.SimTop`.
        Default: ``hw.engine.Engine``.
    config : EngineConfig
        The engine geometry; its ``rows`` must match the DUT's memory port.
    mem_words : int
        Size of the simulated memory in words.
    latency : int
        Read latency of the simulated memory in cycles (>= 2).
    stalls : float or (float, float)
        Probability per cycle that the memory withholds ``req.ready`` and
        that it holds back a pending read answer (one number: both), in
        ``[0, 1)``, quantised to 1/256. Changeable with :meth:`set_stalls`.
    seed : int
        Seed of the memory's stall generator.
    build_dir : path or None
        Build root (default ``sim_build/`` at the repository root).
    verbose : bool
        Show Verilator's build output and the simulator's log; by default
        both go to files (``build.log`` in the build directory,
        :attr:`log_path` for the simulation).
    waves : bool or None
        Record an FST waveform (default: the ``WAVES`` environment
        variable); written to :attr:`waves_path`.
    public_all : bool or None
        Make every signal visible to cocotb (slower model; default from
        ``KINDLING_PUBLIC_ALL``), e.g. to peek at the DUT's internals.
    verilator_args : sequence of str
        Extra Verilator arguments.
    internal_clock : bool
        Let a Verilog wrapper toggle the clock (``--timing``; the default,
        about twice as fast) rather than cocotb's ``Clock``. See
        :func:`sim.build.build`.
    start_timeout : float
        Seconds to wait for the simulator to come up after the build.

    Raises
    ------
    TransportError
        If the simulator fails to start (the message has its log's tail).
    sim.build.BuildError
        If the Verilator build fails.
    """

    def __init__(self, top_factory: Callable | None = None, config: EngineConfig | None = None, *,
                 mem_words: int = 1 << 20, latency: int = 4, stalls=0.0, seed: int = 0x2545F491,
                 build_dir: str | os.PathLike | None = None, verbose: bool = False,
                 waves: bool | None = None, public_all: bool | None = None, verilator_args=(),
                 internal_clock: bool = True, start_timeout: float = 120.0):
        from .build import build, setup_verilator_env
        from .top import SimTop

        self._run = None
        self._closed = False
        self._sim_wall = 0.0
        self._sim_cycles = 0

        config = EngineConfig() if config is None else config
        if top_factory is None:
            from hw.engine import Engine as top_factory
        dut = top_factory(config)
        top = dut if isinstance(dut, SimTop) else SimTop(dut, mem_words=mem_words, latency=latency,
                                                          seed=seed, storage="verilog")
        if top.word_bytes != config.rows:
            raise ValueError(f"the DUT's memory words are {top.word_bytes} bytes but config.rows is "
                             f"{config.rows}")
        self.config = config
        self.word_bytes = top.word_bytes
        self.mem_words = top.mem_words

        setup_verilator_env()
        self.build = build(top, build_root=build_dir, waves=waves, public_all=public_all,
                           internal_clock=internal_clock, extra_args=verilator_args, verbose=verbose)
        log.info("model %s (%s, %.1f s)", self.build.directory,
                 "cached" if self.build.cached else "built", self.build.seconds)

        self._run = SimulatorRun(self.build, "sim.server", name="sim", verbose=verbose,
                                 start_timeout=start_timeout)
        #: The waveform of this run (FST, or VCD without lz4) when built with waves, else None.
        self.waves_path = self._run.waves_path
        #: The simulator's log (None when verbose: it goes to stdout).
        self.log_path = self._run.log_path
        self._sock = self._run.sock
        self._sock.settimeout(None)
        hello = self._result(self._run.hello)[0]
        if hello.get("protocol") != PROTOCOL:
            self.close()
            raise TransportError(f"simulator speaks protocol {hello.get('protocol')}, expected {PROTOCOL}")
        self._run.pid = hello["pid"]
        self.start_seconds = self._run.start_seconds
        req, rsp = stalls if isinstance(stalls, tuple | list) else (stalls, stalls)
        if req or rsp:
            self.set_stalls(req, rsp)

    # --- link -----------------------------------------------------------------------------

    def _recv(self):
        msg = recv_msg(self._sock)
        if msg is None:
            self._run.thread.join(timeout=10)
            raise TransportError(f"the simulator closed the connection ({self._run.error!r}){self._run.log_tail()}")
        return self._result(msg)

    @staticmethod
    def _result(msg):
        header, payload = msg
        if not header.get("ok"):
            kind, text = header.get("error"), header.get("message")
            if kind == "EngineTimeout":
                raise EngineTimeout(text, status=header.get("status"), cycles=header.get("cycles"))
            raise TransportError(f"{kind}: {text}")
        return header["result"], payload

    def _call(self, op: str, payload: bytes = b"", *, timed: bool = False, with_payload: bool = False,
              **args):
        if self._closed:
            raise TransportError("the Verilator backend is closed")
        try:
            t0 = time.monotonic()
            send_msg(self._sock, {"op": op, **args}, payload)
            result, out = self._recv()
            if timed:
                self._sim_wall += time.monotonic() - t0
            return (result, out) if with_payload else result
        except OSError as exc:
            raise TransportError(f"lost the simulator: {exc}{self._run.log_tail()}") from exc

    # --- Transport ------------------------------------------------------------------------

    def write_mem(self, addr_words: int, data: bytes) -> None:
        """Write through the backdoor (VPI: no simulated time passes)."""
        self._call("mem_write", bytes(data), addr=int(addr_words))

    def read_mem(self, addr_words: int, n_words: int) -> bytes:
        """Read through the backdoor (VPI: no simulated time passes)."""
        if n_words == 0:
            return b""
        _, payload = self._call("mem_read", with_payload=True, addr=int(addr_words), n=int(n_words))
        return bytes(payload)

    def write_reg(self, reg: Reg | int, value: int) -> None:
        self._call("csr_write", reg=int(reg), value=int(value) & 0xFFFFFFFF)

    def read_reg(self, reg: Reg | int) -> int:
        return self._call("csr_read", reg=int(reg))

    def wait_done(self, timeout: float = 60.0, *, max_cycles: int | None = None) -> int:
        """Clock the design until ``STATUS.BUSY`` clears; return ``STATUS``.

        Runs inside the simulator (woken by ``irq``, else polling ``STATUS``
        every 64..65536 cycles), so no Python runs per cycle.

        Raises
        ------
        EngineTimeout
            After ``max_cycles`` simulated cycles or ``timeout`` wall seconds.
        """
        return self.run_until(Reg.STATUS, Status.BUSY, 0, timeout=timeout, max_cycles=max_cycles)["value"]

    def run_until(self, reg: Reg | int, mask: int, value: int, *, timeout: float = 60.0,
                  max_cycles: int | None = None) -> dict:
        """Clock until ``read_reg(reg) & mask == value``; return ``{"value", "cycles"}`` (cycles waited).

        Raises
        ------
        EngineTimeout
            After ``max_cycles`` simulated cycles or ``timeout`` wall seconds.
        """
        before = self.cycles()
        try:
            return self._call("run_until", timed=True, reg=int(reg), mask=int(mask), value=int(value),
                              max_cycles=int(_UNLIMITED_CYCLES if max_cycles is None else max_cycles),
                              timeout_s=float(timeout))
        finally:
            self._sim_cycles += self.cycles() - before

    def cycles(self) -> int:
        """Simulated clock cycles since the simulation's reset."""
        return self._call("cycles")

    def close(self) -> None:
        """Stop the simulator and remove the temporary files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._run is not None:
            self._run.stop(self._goodbye)

    def _goodbye(self) -> None:
        send_msg(self._sock, {"op": "shutdown"})
        self._sock.settimeout(10)
        self._recv()

    # --- simulation controls --------------------------------------------------------------

    def run(self, cycles: int) -> int:
        """Let ``cycles`` clock cycles pass; return the cycle count."""
        before = self.cycles()
        now = self._call("run", timed=True, cycles=int(cycles))
        self._sim_cycles += now - before
        return now

    def set_stalls(self, req: float = 0.0, rsp: float | None = None, *, seed: int | None = None,
                   block: bool = False) -> None:
        """Set the memory's stall probabilities (per cycle, in [0, 1), quantised to 1/256).

        Parameters
        ----------
        req : float
            Probability that ``req.ready`` is withheld in a cycle.
        rsp : float or None
            Probability that a pending read answer is held back (default: ``req``).
        seed : int or None
            Reload the stall generator with this non-zero 32-bit seed.
        block : bool
            Make the memory hang (no request accepted, no answer given) until
            called again with ``block=False``.
        """
        rsp = req if rsp is None else rsp
        self._call("set_stalls", req=_probability(req, "req"), rsp=_probability(rsp, "rsp"),
                   block=bool(block), seed=seed)

    def reset(self, cycles: int = 4) -> None:
        """Assert the synchronous reset for ``cycles`` cycles (memory contents are kept)."""
        self._call("reset", cycles=int(cycles))

    def mem_info(self) -> dict:
        """``{"fault", "fault_addr", "reads", "writes", "stalled"}`` of the simulated memory since reset.

        ``stalled`` counts the cycles in which a stall withheld an offered request or a ready answer.
        """
        return self._call("mem_info")

    @property
    def pid(self) -> int | None:
        """Process id of the simulator."""
        return self._run.pid if self._run is not None else None

    @property
    def cycles_per_second(self) -> float:
        """Simulated cycles per wall second over :meth:`run` / :meth:`wait_done` calls so far."""
        return self._sim_cycles / self._sim_wall if self._sim_wall else 0.0

    def report(self) -> str:
        """One line: the build, the cycles simulated and their speed."""
        b = self.build
        return (f"Verilator model {b.directory.name} ({'cached' if b.cached else 'built'} in "
                f"{b.build_seconds:.1f} s); {self._sim_cycles} cycles run at "
                f"{self.cycles_per_second / 1e3:.1f} kcycles/s")

