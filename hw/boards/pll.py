"""PLL parameter search (what ``icepll`` and ``ecppll`` compute) and the PLL + reset of a board's clock domain."""


import dataclasses

from amaranth.hdl import Instance, Module
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["Ice40PllParams", "Ecp5PllParams", "ice40_pll_params", "ecp5_pll_params", "BoardClock"]


@dataclasses.dataclass(frozen=True)
class Ice40PllParams:
    """SB_PLL40 settings: ``f_out = f_in * (divf + 1) / ((divr + 1) * 2**divq)``."""

    divr: int
    divf: int
    divq: int
    filter_range: int
    f_in: float
    f_out: float

    @property
    def f_pfd(self) -> float:
        return self.f_in / (self.divr + 1)

    @property
    def f_vco(self) -> float:
        return self.f_pfd * (self.divf + 1)


def ice40_pll_params(f_in: float, f_out: float) -> Ice40PllParams:
    """The SB_PLL40 settings (SIMPLE feedback) closest to ``f_out``, within the iCE40 data sheet's ranges.

    Phase detector 10..133 MHz, VCO 533..1066 MHz, output 16..275 MHz (the
    search ``icepll`` does).

    Raises
    ------
    ValueError
        If no setting lands within 1 % of ``f_out``.
    """
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f = f_vco / (1 << divq)
                if not 16e6 <= f <= 275e6:
                    continue
                if best is None or abs(f - f_out) < abs(best[0] - f_out):
                    best = (f, divr, divf, divq, f_pfd)
    if best is None or abs(best[0] - f_out) > 0.01 * f_out:
        raise ValueError(f"no iCE40 PLL setting gives {f_out / 1e6:.3f} MHz from {f_in / 1e6:.3f} MHz "
                         f"(closest {best[0] / 1e6 if best else float('nan'):.3f} MHz)")
    f, divr, divf, divq, f_pfd = best
    # Loop filter by phase-detector frequency (SB_PLL40 FILTER_RANGE, as icepll chooses it).
    filter_range = next(i for i, edge in enumerate((17e6, 26e6, 44e6, 66e6, 101e6), 1) if f_pfd < edge) \
        if f_pfd < 101e6 else 6
    return Ice40PllParams(divr, divf, divq, filter_range, f_in, f)


@dataclasses.dataclass(frozen=True)
class Ecp5PllParams:
    """EHXPLLL settings, feedback from CLKOP: ``f_out = f_in * clkfb_div / clki_div``, VCO ``f_out * clkop_div``."""

    clki_div: int
    clkfb_div: int
    clkop_div: int
    f_in: float
    f_out: float

    @property
    def f_vco(self) -> float:
        return self.f_out * self.clkop_div


def ecp5_pll_params(f_in: float, f_out: float) -> Ecp5PllParams:
    """The EHXPLLL settings closest to ``f_out`` (phase detector >= 3.125 MHz, VCO 400..800 MHz, as ``ecppll``).

    Raises
    ------
    ValueError
        If no setting lands within 1 % of ``f_out``.
    """
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if not 3.125e6 <= f_pfd <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            f = f_pfd * clkfb_div
            if not 3.125e6 <= f <= 400e6:
                continue
            for clkop_div in range(1, 129):
                f_vco = f * clkop_div
                if not 400e6 <= f_vco <= 800e6:
                    continue
                key = (abs(f - f_out), -f_vco)   # closest, then the fastest VCO (least jitter)
                if best is None or key < best[0]:
                    best = (key, clki_div, clkfb_div, clkop_div, f)
    if best is None or best[0][0] > 0.01 * f_out:
        raise ValueError(f"no ECP5 PLL setting gives {f_out / 1e6:.3f} MHz from {f_in / 1e6:.3f} MHz")
    _, clki_div, clkfb_div, clkop_div, f = best
    return Ecp5PllParams(clki_div, clkfb_div, clkop_div, f_in, f)


class BoardClock(wiring.Component):
    """A board's clock: the PLL, and the ``sync`` domain's reset held until it locks.

    The parent defines the ``sync`` domain and drives its clock from ``clk``.

    Parameters
    ----------
    family : str
        ``"ice40"`` (SB_PLL40_PAD: ``clk_pad`` must be the oscillator's pin,
        requested with ``dir="-"``) or ``"ecp5"`` (EHXPLLL fed from the
        buffered ``clk_in``).
    f_in, f_out : float
        Oscillator and target frequencies in Hz.

    Members
    -------
    clk_in : ``In(1)``
        The oscillator (ECP5 only).
    clk : ``Out(1)``
        The PLL's output.
    locked : ``Out(1)``
        The PLL has locked (the ``sync`` reset is released two cycles later).
    """

    clk_in: In(1)
    clk: Out(1)
    locked: Out(1)

    def __init__(self, *, family: str, f_in: float, f_out: float, clk_pad=None):
        if family not in ("ice40", "ecp5"):
            raise ValueError(f"family must be 'ice40' or 'ecp5', got {family!r}")
        if family == "ice40" and clk_pad is None:
            raise ValueError("the iCE40 PLL needs the oscillator's pad (request the clock with dir='-')")
        self._family = family
        self._clk_pad = clk_pad
        self.params = ice40_pll_params(f_in, f_out) if family == "ice40" else ecp5_pll_params(f_in, f_out)
        super().__init__()

    @property
    def frequency(self) -> float:
        """The frequency the PLL actually gives, in Hz."""
        return self.params.f_out

    def elaborate(self, platform):
        m = Module()
        clk = self.clk
        p = self.params
        if self._family == "ice40":
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE",
                p_DIVR=p.divr, p_DIVF=p.divf, p_DIVQ=p.divq, p_FILTER_RANGE=p.filter_range,
                io_PACKAGEPIN=getattr(self._clk_pad, "io", self._clk_pad),
                i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=self.locked,
            )
        else:
            m.submodules.pll = Instance(
                "EHXPLLL",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div, p_CLKOP_CPHASE=p.clkop_div - 1,
                p_CLKOP_FPHASE=0, p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div, p_FEEDBK_PATH="CLKOP",
                a_FREQUENCY_PIN_CLKI=f"{p.f_in / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{p.f_out / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                i_CLKI=self.clk_in, i_CLKFB=clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
                i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=clk, o_LOCK=self.locked,
            )
        m.submodules.reset = ResetSynchronizer(~self.locked, domain="sync")
        if platform is not None:
            platform.add_clock_constraint(clk, p.f_out)
        return m
