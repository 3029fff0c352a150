"""DDR3 read leveling from the host: scan the ECP5DDRPHY's read delay and bitslip, keep the centre.

A LiteDRAM core built with ``cpu: None`` runs neither the BIOS's ``sdram_init()`` (the board's init
sequencer plays it: :class:`hw.boards.dram_board.DramInitSequencer`) nor its ``sdram_leveling()``. On the
ECP5DDRPHY the read path has, per byte lane, a DQS input delay (``Rdly.DELAYS`` steps) and a bitslip
(``Rdly.BITSLIPS``): the data sampled at the wrong delay or in the wrong sys-clock phase reads back wrong.
:func:`ensure_leveled` scans all ``BITSLIPS x DELAYS`` settings through the board's ``DRAM_RDLY`` register
(:class:`hw.boards.dram_board.Rdly`): at each one it reads back a seeded test pattern written once
through the ordinary memory path (writes do not depend on the read delay), and marks each byte lane
passing when all of its bytes match. Each lane gets the centre of its longest passing run of settings
(ordered bitslip-major, as the BIOS scans them), the pattern is checked once more with the chosen
settings, and ``DRAM_LEVEL`` records them (with ``Rdly.LEVELED``): zero after a board reset, so a reset
board is leveled again before the next upload (:meth:`sw.resident.ResidentSession.upload`).

A core without PHY delay registers (the ULX3S's SDR PHY; every ``--sim`` core, where LiteDRAM's DRAM
model stands in for the PHY and the chip) reads ``Rdly.NO_PHY``: nothing is scanned, ``DRAM_LEVEL`` is
set to ``LEVELED`` alone. The scan itself is tested against a model of a PHY with a passing window
(``tests/test_leveling.py``); on hardware it has not run yet.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from hw.boards.dram_board import DramReg, Rdly
from sw.transport import Transport, TransportError

__all__ = ["DramLevelingError", "LevelResult", "ensure_leveled", "scan", "centre", "PATTERN_WORDS"]

#: Words of the test pattern, at the top of the memory (the program is uploaded after the scan).
PATTERN_WORDS = 64


class DramLevelingError(TransportError):
    """No read delay and bitslip reads the test pattern back on some byte lane, or the chosen ones do not."""


@dataclasses.dataclass(frozen=True)
class LevelResult:
    """The scan: ``passing[lane][bitslip * DELAYS + delay]``, the chosen (delay, bitslip) per lane."""

    passing: tuple
    chosen: tuple
    seconds: float

    @property
    def register(self) -> int:
        """``DRAM_LEVEL``: lane ``i``'s ``delay | bitslip << 4`` in bits ``8 i .. 8 i + 7``, and LEVELED."""
        value = Rdly.LEVELED
        for lane, (delay, bitslip) in enumerate(self.chosen):
            value |= (delay | bitslip << 4) << 8 * lane
        return value

    def summary(self) -> str:
        rows = []
        for lane, (ok, (d, b)) in enumerate(zip(self.passing, self.chosen, strict=True)):
            marks = "|".join("".join("+" if ok[s * Rdly.DELAYS + k] else "." for k in range(Rdly.DELAYS))
                             for s in range(Rdly.BITSLIPS))
            rows.append(f"lane {lane}: {marks} -> bitslip {b} delay {d}")
        return "; ".join(rows) + f" ({self.seconds:.2f} s)"


def centre(passing) -> int | None:
    """Index at the centre of the longest run of True in ``passing`` (the first such run); None if none."""
    best, start, best_len = None, None, 0
    for i, ok in enumerate(list(passing) + [False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            if i - start > best_len:
                best, best_len = start + (i - start - 1) // 2, i - start
            start = None
    return best


def _apply(t: Transport, setting: int, deadline: float) -> None:
    t.write_reg(DramReg.DRAM_RDLY, setting)
    while t.read_reg(DramReg.DRAM_RDLY) & Rdly.BUSY:
        if time.monotonic() >= deadline:
            raise DramLevelingError(f"DRAM_RDLY still busy applying {setting:#x} at the leveling deadline")


def _lanes_ok(got: bytes, want: bytes) -> list[bool]:
    g, w = np.frombuffer(got, np.uint8), np.frombuffer(want, np.uint8)
    return [bool(np.array_equal(g[lane::Rdly.LANES], w[lane::Rdly.LANES])) for lane in range(Rdly.LANES)]


def scan(t: Transport, *, mem_words: int, word_bytes: int, timeout: float = 30.0, seed: int = 1) -> LevelResult:
    """Scan every (bitslip, delay), choose each lane's centre, apply and check it (see the module).

    Raises
    ------
    DramLevelingError
        A lane with no passing setting, the chosen settings failing the pattern, or past ``timeout`` s.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    addr = mem_words - PATTERN_WORDS
    pattern = np.random.default_rng(seed).integers(0, 256, PATTERN_WORDS * word_bytes, dtype=np.uint8).tobytes()
    t.write_mem(addr, pattern)
    passing = [[False] * (Rdly.BITSLIPS * Rdly.DELAYS) for _ in range(Rdly.LANES)]
    for bitslip in range(Rdly.BITSLIPS):
        for delay in range(Rdly.DELAYS):
            _apply(t, Rdly.pack(delay, bitslip, (1 << Rdly.LANES) - 1), deadline)
            for lane, ok in enumerate(_lanes_ok(t.read_mem(addr, PATTERN_WORDS), pattern)):
                passing[lane][bitslip * Rdly.DELAYS + delay] = ok
    chosen = []
    for lane in range(Rdly.LANES):
        c = centre(passing[lane])
        if c is None:
            raise DramLevelingError(f"DDR3 read leveling: no read delay and bitslip reads the test pattern on byte "
                                    f"lane {lane} (DQ{8 * lane}..{8 * lane + 7}); check the DDR3 clock and the PHY")
        bitslip, delay = divmod(c, Rdly.DELAYS)
        chosen.append((delay, bitslip))
        _apply(t, Rdly.pack(delay, bitslip, 1 << lane), deadline)
    bad = [lane for lane, ok in enumerate(_lanes_ok(t.read_mem(addr, PATTERN_WORDS), pattern)) if not ok]
    result = LevelResult(tuple(tuple(p) for p in passing), tuple(chosen), time.monotonic() - t0)
    if bad:
        raise DramLevelingError(f"DDR3 read leveling: the chosen settings fail the test pattern on lanes {bad}: "
                                f"{result.summary()}")
    return result


def ensure_leveled(t: Transport, *, mem_words: int, word_bytes: int, timeout: float = 30.0) -> LevelResult | None:
    """Level the board's DRAM unless ``DRAM_LEVEL`` says it is; None when nothing was scanned.

    Raises
    ------
    DramLevelingError
        See :func:`scan`.
    """
    if t.read_reg(DramReg.DRAM_LEVEL) & Rdly.LEVELED:
        return None
    if t.read_reg(DramReg.DRAM_RDLY) & Rdly.NO_PHY:
        t.write_reg(DramReg.DRAM_LEVEL, Rdly.LEVELED)     # SDR or --sim: no read delays to level
        return None
    result = scan(t, mem_words=mem_words, word_bytes=word_bytes, timeout=timeout)
    t.write_reg(DramReg.DRAM_LEVEL, result.register)
    return result
