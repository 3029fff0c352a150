"""The ULX3S board core with its SDRAM as the Verilator link test builds it: LiteDRAM's ``--sim`` core inside.

:class:`DramLinkSimTop` is :class:`hw.boards.dram_board.DramBoardCore` with the LiteDRAM core generated
with ``--sim`` (LiteDRAM's SDRAMPHYModel in place of the PHY and the chip: refresh, bank timings and the
controller's latency are simulated; the pads are not), a small UART divisor, and the core's Verilog
appended. :class:`sim.link_sim.LinkSimulation` builds it for a board whose ``storage`` is ``sdram``.
"""

from __future__ import annotations

from hw.boards import BoardSpec
from hw.boards.dram_board import DramBoardCore

__all__ = ["DramLinkSimTop"]


class DramLinkSimTop(DramBoardCore):
    """:class:`DramBoardCore` for Verilator.

    Parameters
    ----------
    spec : BoardSpec
    divisor : int
        Clock cycles per UART bit in the simulation.
    frame_timeout : int or None
        Cycles of silence that end a frame (default: 64 byte times).
    init_writes, init_deadline
        As for :class:`DramBoardCore` (a test plays a broken init sequence).
    """

    def __init__(self, spec: BoardSpec, *, divisor: int = 8, frame_timeout: int | None = None, **kw):
        super().__init__(spec, divisor=divisor, sim=True,
                         frame_timeout=frame_timeout if frame_timeout is not None else 64 * 10 * divisor, **kw)

    def metadata(self) -> dict:
        return {"board": self.spec.name, "divisor": self.divisor, "frame_timeout": self.frame_timeout,
                "clk_hz": self.spec.clk_hz, "word_bytes": self.spec.engine.rows, "mem_words": self.spec.mem_words,
                "dram": str(self.dram.verilog), "init_writes": len(self.init_writes)}
