"""The boards the engine is built for: one :class:`BoardSpec` each, in :data:`BOARDS`.

This table is the one place where a board's engine configuration, memory,
clock and line rate are chosen; the board top (:mod:`hw.boards.top`), the
build (:mod:`hw.boards.build`), the link test and ``docs/BOARDS.md`` all read
it. Switching a board to a bigger array is a one-line change of its
``engine``.
"""

from __future__ import annotations

import dataclasses
import importlib

from hw.isa import EngineConfig
from hw.link.protocol import BOARD_IDS, DEFAULT_BAUD

__all__ = ["BoardSpec", "BOARDS", "board"]


@dataclasses.dataclass(frozen=True)
class BoardSpec:
    """One board: its platform, device budget and the engine built for it.

    Attributes
    ----------
    name : str
        The ``make bitstream BOARD=`` name.
    title : str
    platform : str
        ``module:Class`` of the amaranth-boards platform.
    family : str
        ``ice40`` or ``ecp5``.
    device : str
        Part name, for reports.
    budget : dict
        What the device has: ``lut``, ``ff``, ``dsp`` (8x8-capable multiplier
        blocks: SB_MAC16 / MULT18X18D), ``bram`` (SB_RAM40_4K / DP16KD),
        ``spram``.
    engine : EngineConfig
    mem_words : int
        Words of memory behind the engine's port (on chip, or the external DRAM's).
    storage : str
        ``spram`` (iCE40 UltraPlus SB_SPRAM256KA), ``bram``, or ``sdram`` (external DRAM through
        LiteDRAM: :mod:`hw.boards.dram_board`; the ULX3S's SDR SDRAM, the ECPIX-5's DDR3).
    clk_hz : int
        The PLL's target: the clock of the link and the engine.
    baud : int
        UART rate (a divisor of ``clk_hz`` within 1 %).
    frame_timeout_s : float
        Silence that ends a frame in progress.
    synth_opts : str
        Extra ``synth_<family>`` options.
    pnr_opts : str
        Extra nextpnr options.
    seed : int
        nextpnr's placement seed when the build is not given one (``make bitstream``).
    dram_config : str
        With ``storage="sdram"``: the LiteDRAM config in ``hw/boards/dram/`` (:func:`hw.boards.dram.gen.generate`).
    mult : str or None
        The array's multipliers (:data:`hw.mult.FAMILIES`); ``None``: the device family's DSP
        primitive (:func:`hw.mult.platform_family`).
    link : str
        The host link of the build: ``uart`` (the default) or ``usb`` (:mod:`hw.link.usb`, on a board
        whose ``links`` has it); :meth:`with_link` chooses it.
    links : tuple
        The links the board can carry (``usb``: a ULPI PHY, amaranth-boards' ``ulpi`` resource).
    link_options : dict
        Per link, the fields its build changes (``{"usb": {"pnr_opts": "", "seed": 1}}``): another nextpnr
        seed or router where the board's own do not route that top.
    """

    name: str
    title: str
    platform: str
    family: str
    device: str
    budget: dict
    engine: EngineConfig
    mem_words: int
    storage: str
    clk_hz: int
    baud: int = DEFAULT_BAUD
    frame_timeout_s: float = 0.01
    synth_opts: str = ""
    pnr_opts: str = ""
    seed: int = 1
    dram_config: str = ""
    mult: str | None = None
    link: str = "uart"
    links: tuple = ("uart",)
    link_options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.link not in self.links:
            raise ValueError(f"board {self.name}: link must be one of {', '.join(self.links)}, got {self.link!r}")
        if self.family not in ("ice40", "ecp5"):
            raise ValueError(f"board {self.name}: family must be ice40 or ecp5, got {self.family!r}")
        if self.mem_words > 1 << self.engine.mem_addr_bits:
            raise ValueError(f"board {self.name}: {self.mem_words} words of memory need more than "
                             f"mem_addr_bits={self.engine.mem_addr_bits}")
        div = self.clk_hz / self.baud
        if abs(round(div) - div) / div > 0.01 or round(div) < 4:
            raise ValueError(f"board {self.name}: {self.clk_hz} Hz / {self.baud} baud = {div:.2f} is not an "
                             f"integer divisor >= 4 within 1 %")

    def with_link(self, link: str) -> BoardSpec:
        """This board built with the host link ``link`` (and that link's :attr:`link_options`).

        Raises
        ------
        ValueError
            If the board has no such link (the message lists the ones it has).
        """
        if link not in self.links:
            raise ValueError(f"board {self.name} has no {link!r} link; it has: {', '.join(self.links)}")
        return dataclasses.replace(self, link=link, **self.link_options.get(link, {}))

    @property
    def board_id(self) -> int:
        return BOARD_IDS[self.name]

    @property
    def divisor(self) -> int:
        """Clock cycles per UART bit."""
        return round(self.clk_hz / self.baud)

    @property
    def mem_bytes(self) -> int:
        return self.mem_words * self.engine.rows

    @property
    def dram_config_path(self):
        """The LiteDRAM config file (``storage == "sdram"``)."""
        from pathlib import Path

        return Path(__file__).resolve().parent / "dram" / self.dram_config

    @property
    def peak_gops(self) -> float:
        """2 x MACs per cycle x clock, in GOPS."""
        return 2 * self.engine.macs_per_cycle * self.clk_hz / 1e9

    def make_platform(self):
        """An instance of the board's amaranth-boards platform (with ``mult_family`` set when ``mult`` is)."""
        module, cls = self.platform.split(":")
        platform = getattr(importlib.import_module(module), cls)()
        if self.mult is not None:
            platform.mult_family = self.mult
        return platform


BOARDS: dict[str, BoardSpec] = {spec.name: spec for spec in (
    BoardSpec(
        name="icebreaker", title="1BitSquared iCEBreaker", platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        family="ice40", device="iCE40UP5K-SG48",
        budget={"lut": 5280, "ff": 5280, "dsp": 8, "bram": 30, "spram": 4},
        # 4x4: 16 MACs per cycle. The accumulator banks are cols x 32 bits wide and an SB_RAM40_4K is
        # 16 bits wide, so each bank takes 2 * cols block RAMs whatever its depth up to 256: 2x8 would
        # need 32 of the 30 for the banks alone, 4x4 needs 16. SqueezeNet 1.1 needs ibuf_depth >= 2048
        # at 4 rows (fire3's 55-pixel row of 128 channels is 1760 words).
        engine=EngineConfig(rows=4, cols=4, ibuf_depth=2048, acc_depth=256, mem_addr_bits=15, pool_max_cb=64,
                            ibuf_read_ports=1),  # one buffer read port: its block RAMs are short already
        mem_words=32768, storage="spram",   # the four SPRAMs: 128 KiB
        clk_hz=48_000_000, synth_opts="-dsp"),
    BoardSpec(
        name="ulx3s-85f", title="Radiona ULX3S (85F)", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        family="ecp5", device="LFE5U-85F-6BG381C",
        budget={"lut": 83640, "ff": 83640, "dsp": 156, "bram": 208, "spram": 0},
        # 4x8: 32 MACs per cycle (48 MULT18X18D with the requantizer). The 4x32 top (128 MACs, 144 of 156
        # multipliers) fits and places, but nextpnr's router does not converge on it; 2x2 and 4x8 route
        # (docs/BOARDS.md). 45 MHz = 25 x 9/5: routed for 60 MHz it reached 51.5 MHz.
        # Memory: the 32 MB SDR SDRAM through LiteDRAM (issue 11): 2**23 words of 4 bytes; the program stays
        # on the board and only pictures and answers cross the link. The block RAM the on-chip memory used
        # goes to a 4x deeper activation buffer (8192 words, 32 KiB): RFSong-779's 300-pixel rows need
        # 7200 words, and SqueezeNet 1.1's larger bands cut its commands 288 -> 96 and its DRAM traffic
        # 16.0 -> 13.5 MB a frame.
        # One buffer read port: with the second (overlapped pooling loads) the router stopped at 5,719
        # overused wires after 60 minutes (2026-12-05); the loads still overlap, pooling ones wait.
        engine=EngineConfig(rows=4, cols=8, ibuf_depth=8192, acc_depth=256, mem_addr_bits=23, pool_max_cb=64,
                            ibuf_read_ports=1),
        mem_words=1 << 23, storage="sdram", dram_config="ulx3s_sdram.yml",
        clk_hz=45_000_000, mult="generic",  # as the bitstreams of docs/BOARDS.md were built
        # Seed 3: 47.67 MHz at 45 with the two-slot sequencer (seed 1: 44.70, seed 2: 47.26; 2026-12-05).
        pnr_opts="--router router2", seed=3),
    BoardSpec(
        name="ecpix5-85f", title="LambdaConcept ECPIX-5 (85F)", platform="amaranth_boards.ecpix5:ECPIX585Platform",
        family="ecp5", device="LFE5UM5G-85F-8BG554C",
        budget={"lut": 83640, "ff": 83640, "dsp": 156, "bram": 208, "spram": 0},
        # The ULX3S-85F's device in the fastest speed grade, on a board with an FT2232H UART; the same engine,
        # at 75 MHz (100 x 3/4): the 4x8 top routed for 30 MHz reached 90.5 MHz.
        # Memory: the 512 MB DDR3 (MT41K256M16) through LiteDRAM's ECP5DDRPHY (issue 11): 2**27 words of 4 bytes,
        # four to a 128-bit native word (hw.dram_port.WideDramPort). The core's CRG makes the 75 MHz clock from
        # the 100 MHz oscillator and the engine runs on it (hw.boards.dram_board). The block RAM the on-chip
        # memory used goes to the activation buffer, 8192 words as on the ULX3S.
        engine=EngineConfig(rows=4, cols=8, ibuf_depth=8192, acc_depth=256, mem_addr_bits=27, pool_max_cb=64,
                            ibuf_read_ports=1),  # as the ULX3S: the routed 4x8 configuration
        mem_words=1 << 27, storage="sdram", dram_config="ecpix5_ddr3.yml",
        clk_hz=75_000_000, mult="generic",  # the bitstreams of docs/BOARDS.md; mult=None: MULT18X18D instances
        pnr_opts="--router router2",
        # High-speed USB on the USB3300 ULPI PHY (issue 11): `--link usb`. router2 does not converge on the USB
        # top (seeds 1 and 2, 2026-12-05: overused wires fall to ~400-500, then climb for ever from iteration
        # ~27); nextpnr's default router routes it (docs/BOARDS.md).
        links=("uart", "usb"), link_options={"usb": {"pnr_opts": "", "seed": 1}}),
)}


def board(name: str) -> BoardSpec:
    """The board called ``name``.

    Raises
    ------
    KeyError
        With the list of known boards.
    """
    try:
        return BOARDS[name]
    except KeyError:
        raise KeyError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None
