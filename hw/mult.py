"""Signed 8 x 8 multipliers on each device family's DSP blocks, with a behavioural twin.

:class:`Int8Multipliers` computes ``n`` independent products ``p[i] = a[i] * b[i]``
(int8 x int8 -> int16) with the same timing on every family: operands are
sampled in cycle ``t`` (an input register) and the products appear in cycle
``t + 2`` (an output register), one new set of operands per cycle. What does
it depends on the family:

``"generic"``
    ``a * b`` between two register stages: what every simulator runs (the
    *twin*), and what Yosys maps by itself elsewhere.
``"ecp5"``
    One ``MULT18X18D`` per product, instantiated (Yosys's own mapping
    sign-extends the int8 operands over all 18 input pins and leaves every
    register of the block off: 36 routed input pins and 32 flip-flops in the
    fabric per product). Here the operands sit in the top bits,
    ``A[17:10] = a``, ``B[17:10] = b``, the low bits tied to 0, so the product
    ``a * b * 2**20`` is read from ``P[35:20]`` and the low pins carry
    constants; the block's input registers (``REG_INPUTA_CLK``,
    ``REG_INPUTB_CLK``) and output register (``REG_OUTPUT_CLK``) are on,
    all clocked by ``CLK0`` with one ``CE0``/``RST0``: 16 routed input pins
    per product and no fabric flip-flop.
``"ice40"``
    ``SB_MAC16`` in its two-independent-8x8 mode (``MODE_8x8``, signed A and
    B), two products per block: ``A = {a[2k+1], a[2k]}``, ``B = {b[2k+1],
    b[2k]}``, the top product on ``O[31:16]`` and the bottom one on
    ``O[15:0]``, through the input registers (``A_REG``, ``B_REG``) and the
    8x8 product registers (``TOP_8x8_MULT_REG``, ``BOT_8x8_MULT_REG``). Yosys
    never infers this mode. Only the iCE40 UltraPlus parts have the block.

The family comes from the platform the design is elaborated for unless the
``family`` parameter names one: a board build sets the platform's
``mult_family`` attribute from its :class:`hw.boards.BoardSpec` (``mult``);
otherwise an ECP5 ``LatticePlatform`` is ``"ecp5"``, an iCE40 UltraPlus
``SiliconBluePlatform`` ``"ice40"``, and anything else, including
simulation, ``"generic"``. The data path has no reset: the engine reads products
only under its own valid flags (the DSP registers' ``RST`` is tied low).
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FAMILIES", "Int8Multipliers", "platform_family"]

#: The families :class:`Int8Multipliers` knows.
FAMILIES = ("generic", "ecp5", "ice40")

#: Where the int8 operands sit in a MULT18X18D's 18-bit inputs, and the product in its 36-bit output.
ECP5_OPERAND_LSB = 10
ECP5_PRODUCT_LSB = 2 * ECP5_OPERAND_LSB


def platform_family(platform) -> str:
    """The :data:`FAMILIES` member for ``platform`` (``None`` in simulation: ``"generic"``)."""
    chosen = getattr(platform, "mult_family", None)
    if chosen is not None:
        if chosen not in FAMILIES:
            raise ValueError(f"platform.mult_family must be one of {FAMILIES}, got {chosen!r}")
        return chosen
    family = str(getattr(platform, "family", "") or "").lower()
    if family == "ecp5":
        return "ecp5"
    # SB_MAC16 exists on the UltraPlus parts only (iCE40UP*); the HX/LP parts have no DSP.
    if family == "ice40" and str(getattr(platform, "device", "")).upper().startswith("ICE40UP"):
        return "ice40"
    return "generic"


class Int8Multipliers(wiring.Component):
    """``n`` signed int8 x int8 -> int16 products, pipelined, on the family's DSP blocks.

    Parameters
    ----------
    n : int
        Products per cycle (>= 1).
    family : str or None
        One of :data:`FAMILIES`; ``None`` (default) takes it from the platform at
        elaboration (:func:`platform_family`).

    Ports
    -----
    a, b : In(ArrayLayout(signed(8), n))
        Operands, sampled every cycle.
    p : Out(ArrayLayout(signed(16), n))
        ``a[i] * b[i]`` of the operands sampled :attr:`latency` cycles earlier.

    Timing
    ------
    Latency 2 (input register, product register), throughput one set of
    operands per cycle, on every family.
    """

    #: Cycles from operands on ``a``/``b`` to their products on ``p``.
    latency = 2

    def __init__(self, n: int, *, family: str | None = None):
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if family is not None and family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES} or None, got {family!r}")
        self._n = n
        self._family = family
        vec = data.ArrayLayout(signed(8), n)
        super().__init__({"a": In(vec), "b": In(vec), "p": Out(data.ArrayLayout(signed(16), n))})

    @property
    def n(self):
        return self._n

    @property
    def family(self):
        """The family asked for (``None``: the platform's)."""
        return self._family

    def blocks(self, family: str) -> int:
        """DSP blocks used on ``family`` (0 for ``"generic"``, which leaves the mapping to Yosys)."""
        return {"generic": 0, "ecp5": self._n, "ice40": (self._n + 1) // 2}[family]

    def elaborate(self, platform):
        m = Module()
        family = self._family or platform_family(platform)
        {"generic": self._generic, "ecp5": self._ecp5, "ice40": self._ice40}[family](m)
        return m

    def _generic(self, m):
        for i in range(self._n):
            ra = Signal(signed(8), name=f"a_reg_{i}", reset_less=True)
            rb = Signal(signed(8), name=f"b_reg_{i}", reset_less=True)
            rp = Signal(signed(16), name=f"p_reg_{i}", reset_less=True)
            m.d.sync += [ra.eq(self.a[i]), rb.eq(self.b[i]), rp.eq(ra * rb)]
            m.d.comb += self.p[i].eq(rp)

    def _ecp5(self, m):
        lsb = ECP5_OPERAND_LSB
        for i in range(self._n):
            pa = Signal(18, name=f"mult_a_{i}")
            pb = Signal(18, name=f"mult_b_{i}")
            pp = Signal(36, name=f"mult_p_{i}")
            m.d.comb += [pa.eq(self.a[i].as_unsigned() << lsb), pb.eq(self.b[i].as_unsigned() << lsb),
                         self.p[i].eq(pp[ECP5_PRODUCT_LSB:ECP5_PRODUCT_LSB + 16])]
            # Only what is used is connected: the shift-cascade inputs SRIA/SRIB are dedicated wires from the
            # neighbouring block with no route from the fabric (nextpnr fails on a constant tied to them:
            # "Failed to route arc ... of net $PACKER_GND_NET ... to JSRIB9_MULT18"), and C, CLK1..3, CE1..3,
            # RST1..3 are unused.
            ports = {"i_CLK0": ClockSignal("sync"), "i_CE0": Const(1, 1), "i_RST0": Const(0, 1)}
            for k in range(18):
                ports[f"i_A{k}"] = pa[k]
                ports[f"i_B{k}"] = pb[k]
            for k in range(36):
                ports[f"o_P{k}"] = pp[k]
            m.submodules[f"mult18_{i}"] = Instance(
                "MULT18X18D",
                p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
                p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
                p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
                p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
                p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED", p_RESETMODE="SYNC", p_GSR="DISABLED",
                i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
                **ports)

    def _ice40(self, m):
        for k in range((self._n + 1) // 2):
            lo, hi = 2 * k, 2 * k + 1
            a = Signal(16, name=f"mac_a_{k}")
            b = Signal(16, name=f"mac_b_{k}")
            o = Signal(32, name=f"mac_o_{k}")
            m.d.comb += [a[:8].eq(self.a[lo]), b[:8].eq(self.b[lo]), self.p[lo].eq(o[:16])]
            if hi < self._n:
                m.d.comb += [a[8:].eq(self.a[hi]), b[8:].eq(self.b[hi]), self.p[hi].eq(o[16:])]
            zero16 = Const(0, 16)
            m.submodules[f"mac16_{k}"] = Instance(
                "SB_MAC16",
                p_NEG_TRIGGER=Const(0, 1), p_C_REG=Const(0, 1), p_A_REG=Const(1, 1), p_B_REG=Const(1, 1),
                p_D_REG=Const(0, 1), p_TOP_8x8_MULT_REG=Const(1, 1), p_BOT_8x8_MULT_REG=Const(1, 1),
                p_PIPELINE_16x16_MULT_REG1=Const(0, 1), p_PIPELINE_16x16_MULT_REG2=Const(0, 1),
                # Output select 2: the registered 8x8 products (F on top, G at the bottom).
                p_TOPOUTPUT_SELECT=Const(2, 2), p_TOPADDSUB_LOWERINPUT=Const(0, 2),
                p_TOPADDSUB_UPPERINPUT=Const(0, 1), p_TOPADDSUB_CARRYSELECT=Const(0, 2),
                p_BOTOUTPUT_SELECT=Const(2, 2), p_BOTADDSUB_LOWERINPUT=Const(0, 2),
                p_BOTADDSUB_UPPERINPUT=Const(0, 1), p_BOTADDSUB_CARRYSELECT=Const(0, 2),
                p_MODE_8x8=Const(1, 1), p_A_SIGNED=Const(1, 1), p_B_SIGNED=Const(1, 1),
                i_CLK=ClockSignal("sync"), i_CE=Const(1, 1), i_A=a, i_B=b, i_C=zero16, i_D=zero16,
                i_AHOLD=Const(0, 1), i_BHOLD=Const(0, 1), i_CHOLD=Const(0, 1), i_DHOLD=Const(0, 1),
                i_IRSTTOP=Const(0, 1), i_IRSTBOT=Const(0, 1), i_ORSTTOP=Const(0, 1), i_ORSTBOT=Const(0, 1),
                i_OLOADTOP=Const(0, 1), i_OLOADBOT=Const(0, 1), i_ADDSUBTOP=Const(0, 1), i_ADDSUBBOT=Const(0, 1),
                i_OHOLDTOP=Const(0, 1), i_OHOLDBOT=Const(0, 1), i_CI=Const(0, 1), i_ACCUMCI=Const(0, 1),
                i_SIGNEXTIN=Const(0, 1), o_O=o)
