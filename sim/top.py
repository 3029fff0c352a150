"""The simulation top: a device under test with the engine's ports, plus its memory.

:class:`SimTop` is what the Verilator benches build: the DUT's memory port is
connected to a :class:`sim.memory.SimMemory`, and everything a testbench
drives or watches is a top-level port. In the generated Verilog (module
``top`` by default) the ports are:

=======================  ===  =====================================================
``clk``, ``rst``         in   Amaranth's ``sync`` domain (``rst`` is synchronous)
``csr__addr`` (6)        in   CSR bus (:data:`hw.bus.CsrSignature`)
``csr__r_stb``           in
``csr__w_stb``           in
``csr__w_data`` (32)     in
``csr__r_data`` (32)     out
``irq``                  out  the DUT's interrupt
``stall__req`` (8)       in   P(``req.ready`` withheld) x 256, per cycle
``stall__rsp`` (8)       in   P(pending answer held back) x 256, per cycle
``stall__seed`` (32)     in   stall generator seed, loaded while ``stall__load``
``stall__load``          in
``stall__block``         in   memory hangs while high
``mem_info__fault``      out  sticky: an access beyond the memory
``mem_info__fault_addr`` out  the first such word address
``mem_info__reads`` (32) out  reads accepted
``mem_info__writes``     out  writes accepted
``mem_info__stalled``    out  cycles a stall held back an offered request or a ready answer
=======================  ===  =====================================================

The memory array is ``mem.dram`` (``storage="amaranth"``) or ``mem.dram.rows``
(``storage="verilog"``, what the Verilator backend uses) below the top
(:attr:`SimTop.memory_path`): ``n_rows`` rows of ``row_bytes`` bytes (see
:mod:`sim.memory`).
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.bus import CsrSignature, MemPortSignature

from .memory import MemInfoSignature, SimMemory, StallSignature

__all__ = ["SimTop"]


def check_dut(dut) -> MemPortSignature:
    """Check that ``dut`` has the engine's three members; return its memory port signature.

    Raises
    ------
    TypeError
        If ``dut`` is not a component with ``csr: In(CsrSignature)``,
        ``mem: Out(MemPortSignature(...))`` and ``irq: Out(1)``.
    """
    if not isinstance(dut, wiring.Component):
        raise TypeError(f"the DUT must be a wiring.Component, got {dut!r}")
    members = dut.signature.members
    problems = []
    if "csr" not in members or members["csr"] != In(CsrSignature):
        problems.append("csr: In(CsrSignature)")
    # Not members.get(): a missing member raises SignatureError, not KeyError.
    mem = members["mem"] if "mem" in members else None  # noqa: SIM401
    if (mem is None or not mem.is_signature or mem.flow != Out
            or not isinstance(mem.signature, MemPortSignature)):
        problems.append("mem: Out(MemPortSignature(word_bytes, addr_bits))")
    if "irq" not in members or members["irq"] != Out(1):
        problems.append("irq: Out(1)")
    if problems:
        raise TypeError(f"{type(dut).__name__} lacks the engine's members "
                        f"({', '.join(problems)}); its signature is {dut.signature!r}")
    return mem.signature


class SimTop(wiring.Component):
    """A DUT with the engine's ports wired to a simulated memory; the rest are top-level ports.

    Parameters
    ----------
    dut : wiring.Component or callable
        The device under test (``csr: In(CsrSignature)``,
        ``mem: Out(MemPortSignature(...))``, ``irq: Out(1)``), or a callable
        with no arguments returning one.
    mem_words : int
        Size of the simulated memory in words (a multiple of the words per
        32-byte row).
    latency, max_outstanding, seed, init, storage
        Passed to :class:`sim.memory.SimMemory`. Use ``storage="verilog"`` for
        Verilator builds of large memories, ``"amaranth"`` (the default) for
        the Python simulator.

    Members
    -------
    csr : ``In(CsrSignature)``
    irq : ``Out(1)``
    stall : ``In(StallSignature)``
    mem_info : ``Out(MemInfoSignature(addr_bits))``

    Raises
    ------
    TypeError
        If the DUT lacks one of the three members.
    """

    def __init__(self, dut: wiring.Component | Callable[[], wiring.Component], mem_words: int, *,
                 latency: int = 2, max_outstanding: int | None = None, seed: int = 0x2545F491,
                 init: bytes | None = None, storage: str = "amaranth"):
        if not isinstance(dut, wiring.Component) and callable(dut):
            dut = dut()
        port = check_dut(dut)
        self.dut = dut
        self.memory = SimMemory(word_bytes=port.word_bytes, addr_bits=port.addr_bits, mem_words=mem_words,
                                latency=latency, max_outstanding=max_outstanding, seed=seed, init=init,
                                storage=storage)
        super().__init__({
            "csr": In(CsrSignature),
            "irq": Out(1),
            "stall": In(StallSignature),
            "mem_info": Out(MemInfoSignature(port.addr_bits)),
        })

    @property
    def memory_path(self) -> tuple[str, ...]:
        """The memory array's hierarchical path below the top."""
        return ("mem", *self.memory.memory_path)

    def verilog_source(self) -> str:
        """Verilog to compile beside the converted top (the memory's, if any)."""
        return self.memory.verilog_source()

    @property
    def word_bytes(self) -> int:
        return self.memory.word_bytes

    @property
    def addr_bits(self) -> int:
        return self.memory.addr_bits

    @property
    def mem_words(self) -> int:
        return self.memory.mem_words

    def metadata(self) -> dict:
        """What a testbench needs to know about the generated top (stored beside the build)."""
        return {
            "memory_path": list(self.memory_path),
            "word_bytes": self.memory.word_bytes,
            "row_bytes": self.memory.row_bytes,
            "words_per_row": self.memory.words_per_row,
            "n_rows": self.memory.n_rows,
            "mem_words": self.memory.mem_words,
            "addr_bits": self.memory.addr_bits,
            "latency": self.memory.latency,
            "max_outstanding": self.memory.max_outstanding,
            "seed": self.memory.seed,
            "storage": self.memory.storage,
        }

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.submodules.mem = self.memory
        wiring.connect(m, self.dut.mem, self.memory.bus)
        wiring.connect(m, wiring.flipped(self.csr), self.dut.csr)
        wiring.connect(m, wiring.flipped(self.stall), self.memory.stall)
        wiring.connect(m, self.memory.info, wiring.flipped(self.mem_info))
        m.d.comb += self.irq.eq(self.dut.irq)
        return m
