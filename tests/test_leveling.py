"""sw.leveling against a model of the ECP5DDRPHY's read path: a passing window of settings per byte lane.

The model keeps memory exactly, but a read returns a lane's bytes corrupted unless that lane's current
(bitslip, delay) lies in its window; ``DRAM_RDLY`` reads BUSY for a few polls after each write. The scan
must find each window's centre, apply it per lane, record it in ``DRAM_LEVEL``, and not scan again; a
lane without a window, or a PHY that stays busy, gives a one-line error; a core without PHY delays
(``NO_PHY``: SDR, every ``--sim`` core) is not scanned.
"""

from __future__ import annotations

import pytest

from hw.boards.dram_board import DramReg, Rdly
from sw.leveling import PATTERN_WORDS, DramLevelingError, centre, ensure_leveled

WORD_BYTES = 4
MEM_WORDS = 1 << 12


class PhyModel:
    """Registers DRAM_RDLY/DRAM_LEVEL and a memory whose reads depend on the per-lane read setting."""

    def __init__(self, windows, *, no_phy: bool = False, busy_polls: int = 2, stuck: bool = False):
        self.windows, self.no_phy, self.busy_polls, self.stuck = windows, no_phy, busy_polls, stuck
        self.mem = bytearray(MEM_WORDS * WORD_BYTES)
        self.setting = [(0, 0)] * Rdly.LANES
        self.rdly = 0
        self.busy = 0
        self.level = 0
        self.rdly_writes = 0
        self.mem_writes = 0

    def write_reg(self, reg, value):
        if reg == DramReg.DRAM_RDLY:
            self.rdly, self.busy = value & 0x3FF, self.busy_polls
            self.rdly_writes += 1
            delay, bitslip, modules = value & 7, value >> 4 & 3, value >> 8 & 3
            for lane in range(Rdly.LANES):
                if modules >> lane & 1:
                    self.setting[lane] = (delay, bitslip)
        elif reg == DramReg.DRAM_LEVEL:
            self.level = value
        else:
            raise AssertionError(f"unexpected register write {reg}")

    def read_reg(self, reg):
        if reg == DramReg.DRAM_RDLY:
            busy = self.stuck or self.busy > 0
            self.busy = max(0, self.busy - 1)
            return self.rdly | (Rdly.BUSY if busy else 0) | (Rdly.NO_PHY if self.no_phy else 0)
        if reg == DramReg.DRAM_LEVEL:
            return self.level
        raise AssertionError(f"unexpected register read {reg}")

    def write_mem(self, addr, data):
        self.mem[addr * WORD_BYTES:addr * WORD_BYTES + len(data)] = data
        self.mem_writes += 1

    def read_mem(self, addr, n):
        out = bytearray(self.mem[addr * WORD_BYTES:(addr + n) * WORD_BYTES])
        for lane in range(Rdly.LANES):
            delay, bitslip = self.setting[lane]
            if bitslip * Rdly.DELAYS + delay not in self.windows[lane]:
                for i in range(lane, len(out), Rdly.LANES):
                    out[i] ^= 0xA5
        return bytes(out)


@pytest.mark.parametrize("passing,want", [
    ([False, True, True, True, False], 2),
    ([True, False, True, True, True, True], 3),
    ([True] * 32, 15),
    ([False] * 32, None),
    ([True, True, False, True, True, True], 4),
])
def test_centre(passing, want):
    assert centre(passing) == want


def test_scan_finds_each_lanes_centre_and_records_it():
    phy = PhyModel([range(10, 15), range(17, 26)])
    result = ensure_leveled(phy, mem_words=MEM_WORDS, word_bytes=WORD_BYTES, timeout=5.0)
    print(f"\n{result.summary()}")
    assert result.chosen == ((4, 1), (5, 2)), result.summary()       # indices 12 and 21: bitslip * 8 + delay
    assert phy.setting == [(4, 1), (5, 2)]
    assert [i for i, ok in enumerate(result.passing[0]) if ok] == list(range(10, 15))
    assert [i for i, ok in enumerate(result.passing[1]) if ok] == list(range(17, 26))
    assert phy.level == Rdly.LEVELED | (4 | 1 << 4) | (5 | 2 << 4) << 8 == result.register
    writes = phy.rdly_writes
    assert writes == Rdly.BITSLIPS * Rdly.DELAYS + Rdly.LANES
    # Leveled: nothing more is scanned.
    assert ensure_leveled(phy, mem_words=MEM_WORDS, word_bytes=WORD_BYTES) is None and phy.rdly_writes == writes


def test_pattern_sits_at_the_top_of_memory():
    phy = PhyModel([range(32), range(32)])
    ensure_leveled(phy, mem_words=MEM_WORDS, word_bytes=WORD_BYTES)
    top = (MEM_WORDS - PATTERN_WORDS) * WORD_BYTES
    assert any(phy.mem[top:]) and not any(phy.mem[:top]) and phy.mem_writes == 1


def test_lane_without_a_window_is_a_clear_error():
    phy = PhyModel([range(8, 20), range(0)])
    with pytest.raises(DramLevelingError, match=r"no read delay and bitslip reads the test pattern on byte lane 1 "
                                                r"\(DQ8\.\.15\)"):
        ensure_leveled(phy, mem_words=MEM_WORDS, word_bytes=WORD_BYTES)
    assert phy.level == 0


def test_phy_that_stays_busy_fails_at_the_deadline():
    phy = PhyModel([range(32), range(32)], stuck=True)
    with pytest.raises(DramLevelingError, match="still busy applying 0x300 at the leveling deadline"):
        ensure_leveled(phy, mem_words=MEM_WORDS, word_bytes=WORD_BYTES, timeout=0.2)


def test_core_without_phy_delays_is_not_scanned():
    phy = PhyModel([range(0), range(0)], no_phy=True)
    assert ensure_leveled(phy, mem_words=MEM_WORDS, word_bytes=WORD_BYTES) is None
    assert phy.level == Rdly.LEVELED and phy.rdly_writes == 0 and phy.mem_writes == 0
