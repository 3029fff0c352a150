"""Board tops: their table, PLLs and on-chip memory, elaboration of every top, synthesis against the device.

Synthesis needs the YoWASP tools (``pip install -e '.[fpga]'``); those tests
skip, saying so, when the tools are absent. A full bitstream of the ECP5
boards takes several minutes, so it is behind ``slow``
(``make bitstream BOARD=...`` is the command).
"""

import random

import pytest
from amaranth.sim import Simulator

from hw.boards import BOARDS, board
from hw.boards.memory import OnChipMemory
from hw.boards.pll import ecp5_pll_params, ice40_pll_params
from hw.boards.top import BoardTop
from hw.link import protocol as P

pytestmark = pytest.mark.fpga

#: Boards whose top does not fit its device today, and why. The fit test is an expected failure for them
#: (strict: it fails as soon as they fit, so that this entry is removed).
KNOWN_NOT_FITTING = {
    "icebreaker": "the engine needs more than twice the UP5K's logic cells, more DSPs and block RAMs than it has; "
                  "fitting it is a datapath redesign for this device (docs/BOARDS.md, issue 4)",
}


def test_board_table():
    for name, spec in BOARDS.items():
        assert board(name) is spec and spec.board_id == P.BOARD_IDS[name]
        assert spec.mem_words <= 1 << spec.engine.mem_addr_bits
        assert abs(spec.clk_hz / spec.divisor - spec.baud) / spec.baud < 0.01
        assert spec.peak_gops == pytest.approx(2 * spec.engine.macs_per_cycle * spec.clk_hz / 1e9)
        f_in = spec.make_platform().default_clk_frequency
        pll = ice40_pll_params(f_in, spec.clk_hz) if spec.family == "ice40" else ecp5_pll_params(f_in, spec.clk_hz)
        assert pll.f_out == pytest.approx(spec.clk_hz, rel=1e-6), f"{name}: the PLL cannot give the target exactly"
    with pytest.raises(KeyError, match="known boards"):
        board("no-such-board")


def test_ice40_pll_matches_icepll():
    # icepll -i 12 -o 48: DIVR 0, DIVF 63, DIVQ 4, FILTER_RANGE 1.
    p = ice40_pll_params(12e6, 48e6)
    assert (p.divr, p.divf, p.divq, p.filter_range, p.f_out) == (0, 63, 4, 1, 48e6)
    assert 533e6 <= p.f_vco <= 1066e6


@pytest.mark.parametrize("f_in,f_out", [(25e6, 105e6), (100e6, 105e6), (25e6, 75e6), (12e6, 48e6)])
def test_ecp5_pll_in_range(f_in, f_out):
    p = ecp5_pll_params(f_in, f_out)
    assert p.f_in * p.clkfb_div / p.clki_div == pytest.approx(p.f_out)
    assert abs(p.f_out - f_out) <= 0.01 * f_out and 400e6 <= p.f_vco <= 800e6 and p.f_in / p.clki_div >= 3.125e6


def test_pll_refuses_impossible():
    with pytest.raises(ValueError, match="no iCE40 PLL setting"):
        ice40_pll_params(12e6, 400e6)


@pytest.mark.parametrize("backpressure", [0.0, 0.6])
def test_onchip_memory_contract(backpressure):
    """Block-RAM memory: in-order answers, one request a cycle, a write seen by the next read; random traffic."""
    words, wb = 256, 4
    dut = OnChipMemory(word_bytes=wb, addr_bits=10, mem_words=words)
    rng = random.Random(11)
    model = [0] * words
    expect, got, issued = [], [], []

    async def requests(ctx):
        for _ in range(400):
            addr = rng.randrange(words)
            write = rng.random() < 0.4
            data = rng.randrange(1 << (8 * wb))
            ctx.set(dut.bus.req.payload.addr, addr)
            ctx.set(dut.bus.req.payload.write, write)
            ctx.set(dut.bus.req.payload.data, data)
            ctx.set(dut.bus.req.valid, 1)
            await ctx.tick().until(dut.bus.req.ready)
            issued.append(1)
            if write:
                model[addr] = data
            else:
                expect.append(model[addr])
        ctx.set(dut.bus.req.valid, 0)
        for _ in range(50):
            await ctx.tick()

    async def answers(ctx):
        arng = random.Random(12)
        while True:
            ready = not (backpressure and arng.random() < backpressure)
            ctx.set(dut.bus.rsp.ready, ready)
            _, _, valid, data = await ctx.tick().sample(dut.bus.rsp.valid, dut.bus.rsp.payload)
            if valid and ready:
                got.append(data)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(requests)
    sim.add_process(answers)
    sim.run()
    assert got == expect
    assert len(issued) == 400


def test_onchip_memory_refuses_sizes():
    with pytest.raises(ValueError, match="SPRAMs"):
        OnChipMemory(word_bytes=4, addr_bits=16, mem_words=65536, storage="spram")
    with pytest.raises(ValueError, match="word_bytes"):
        OnChipMemory(word_bytes=16, addr_bits=16, mem_words=16384, storage="spram")
    assert OnChipMemory(word_bytes=4, addr_bits=15, mem_words=32768, storage="spram").spram_blocks == 4


@pytest.mark.parametrize("name", list(BOARDS))
def test_board_top_elaborates(name, tmp_path):
    """Every board top elaborates for its platform: the PLL, the pins, the engine, the link, the memory."""
    spec = BOARDS[name]
    platform = spec.make_platform()
    top = BoardTop(spec)
    plan = platform.prepare(top, name="top", synth_opts=spec.synth_opts)
    files = dict(plan.files)
    rtlil = files["top.il"]
    rtlil = rtlil if isinstance(rtlil, str) else rtlil.decode()
    core = top.core
    if getattr(core, "owns_clock", False):
        # The DDR3 core's CRG makes the clock (EHXPLLL, ECLKSYNCB, CLKDIVF in its Verilog): no PLL of the top's.
        verilog = files["litedram_core.v"]
        assert "EHXPLLL" not in rtlil and "CLKDIVF" in verilog and "EHXPLLL" in verilog
        assert "ddr3_0__dqs__p" in rtlil and "ddr3_0__dq__io" in rtlil
    else:
        assert ("SB_PLL40_PAD" if spec.family == "ice40" else "EHXPLLL") in rtlil
    if spec.storage == "spram":
        assert rtlil.count("SB_SPRAM256KA") >= spec.mem_words * spec.engine.rows // (2 * 16384)
    if spec.storage == "sdram":   # the LiteDRAM core as an instance, its Verilog beside
        assert "litedram_core" in rtlil and "litedram_core.v" in files
        if not core.owns_clock:   # the SDR SDRAM's clock: an ODDR
            assert "ODDRX1F" in rtlil
    assert top.core.link.bridge.frame_timeout == round(spec.frame_timeout_s * spec.clk_hz)
    # WRITE_PIX on the DRAM board (pictures streamed into its memory); the others answer BAD_OP.
    assert top.core.link.bridge.write_pix == (spec.storage == "sdram")


def _tools_or_skip(family):
    from hw.boards.build import ToolsMissing, tool_env

    try:
        tool_env(family)
    except ToolsMissing as e:
        pytest.skip(f"FPGA tools absent: {e}")


@pytest.mark.parametrize("name", list(BOARDS))
def test_board_fits(name, tmp_path):
    """Yosys on each board top: every resource within its device's budget (1-2 minutes a board)."""
    _tools_or_skip(BOARDS[name].family)
    from hw.boards.build import synth_check

    r = synth_check(name, tmp_path / name)
    over = ", ".join(f"{k} {u} of {a}" for k, (u, a) in r["over"].items())
    msg = f"{name} does not fit: {over} (cells {r['cells']}, {r['seconds']} s)"
    if name in KNOWN_NOT_FITTING:
        if r["over"]:
            pytest.xfail(f"{msg} -- known: {KNOWN_NOT_FITTING[name]}")
        pytest.fail(f"{name} fits now ({r['cells']}): remove it from KNOWN_NOT_FITTING")
    assert not r["over"], msg


def test_board_shell_bitstream_meets_timing(tmp_path):
    """The whole flow to a bitstream in CI's budget: the ULX3S top with a register-only stand-in for the engine
    (link, bridge, arbiter, the LiteDRAM SDRAM controller, PLL) meets its clock (about a minute)."""
    name = "ulx3s-85f"
    _tools_or_skip(BOARDS[name].family)
    from hw.boards.build import build_board

    r = build_board(name, tmp_path / name, echo=False, shell=True)
    assert r["bitstream"] and r["bitstream_bytes"] > 0, r["error"]
    assert r["timing_met"], (r["fmax"], r["critical_path"])
    if BOARDS[name].storage == "bram":
        assert r["utilization"]["bram"]["used"] >= BOARDS[name].mem_words // 512
    else:   # the SDRAM: the LiteDRAM controller is in the top and reported on its own
        assert r["dram_controller"]["lut"] > 0 and r["dram_controller"]["io"] == 16


#: Boards whose top fits but does not route yet: the router runs to the flow's time limit (an hour) and fails.
#: Not run here for that reason; ``make bitstream BOARD=...`` is the command that tries.
KNOWN_NOT_ROUTING: dict[str, str] = {}


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(run=False, reason=KNOWN_NOT_ROUTING[n]))
                                  if n in KNOWN_NOT_ROUTING else n for n in BOARDS])
def test_bitstream_meets_timing(name, tmp_path):
    """The whole flow: bitstream written, target clock met (minutes per ECP5 board)."""
    _tools_or_skip(BOARDS[name].family)
    from hw.boards.build import build_board

    r = build_board(name, tmp_path / name, echo=False)
    if name in KNOWN_NOT_FITTING and not r["fits"]:
        pytest.xfail(f"{name}: {r['error']} -- known: {KNOWN_NOT_FITTING[name]}")
    assert r["bitstream"] and r["timing_met"], (r["error"], r["fmax"], r["critical_path"])


@pytest.mark.slow
def test_ecpix5_usb_bitstream_meets_timing(tmp_path):
    """The ECPIX-5 with its host link over USB (issue 11, ``make bitstream BOARD=ecpix5-85f LINK=usb``): the
    bitstream written, both clocks met (``sync`` at 75 MHz, the PHY's 60 MHz), no ABC step lost."""
    pytest.importorskip("luna", reason="LUNA is not installed (the usb extra)")
    name = "ecpix5-85f"
    _tools_or_skip(BOARDS[name].family)
    from hw.boards.build import build_board

    r = build_board(name, tmp_path / name, echo=False, link="usb")
    assert r["link"] == {"kind": "usb"} and not r["abc_failures"], (r["link"], r["abc_failures"])
    assert r["bitstream"] and r["timing_met"] and len(r["fmax"]) == 2, (r["error"], r["fmax"], r["critical_path"])


def test_flow_time_limit_stops_a_tool_that_never_ends(tmp_path):
    """nextpnr's router can loop for ever on a congested design: the flow stops it at its time limit."""
    import io
    import time

    from hw.boards.build import TIME_LIMIT_RC, _run

    t0 = time.monotonic()
    rc = _run(["sh", "-c", "echo routing; sleep 60"], tmp_path, {"PATH": "/usr/bin:/bin"}, io.StringIO(),
              echo=False, t0=t0, heartbeat=0.1, time_limit=0.5)
    assert rc == TIME_LIMIT_RC and time.monotonic() - t0 < 10


def test_abc_failures_and_options_in_the_report():
    """A dead ABC step is found in a Yosys log (Yosys may go on without it); the report names options and seed."""
    from hw.boards.build import abc_failures, format_report, nextpnr_options

    log = ("3.4. Executing ABC pass (technology mapping using ABC).\nABC: + strash\nABC: + &get -n\n"
           "Extracted 3107 gates and 4410 wires to a netlist network with 402 inputs and 344 outputs.\n"
           "End of script. Logfile hash: 8336f10a20\n")
    assert abc_failures(log) == []
    bad = log + 'ERROR: ABC: execution of command "abc -s -f /tmp/x/abc.script" failed: return code 134.\n'
    assert abc_failures(bad) == [bad.splitlines()[-1]]
    # Yosys 0.70 stopping in abc9's reintegration (the 4 x 32 ECP5 top), and a Yosys that just stops in ABC.
    died = ("2.46.20.5. Executing ABC9.\nRunning ABC command: \"/yosys-abc\" -s -f <abc-temp-dir>/abc.script\n"
            "2.46.20.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate ABC mapped design into module).\n"
            "ERROR: Assert `count_id(wire->name) == 0' failed in rtlil.cc:2872.\n")
    (msg,) = abc_failures(died)
    assert msg.startswith("Yosys stopped in 2.46.20.7. Executing ABC_OPS_REINTEGRATE") and "count_id" in msg, msg
    assert "no message" in abc_failures(died.split("2.46.20.7")[0])[0]
    assert abc_failures("2.47. Executing OPT pass.\nERROR: something else\n") == []
    spec = BOARDS["ecpix5-85f"]
    opts = nextpnr_options(spec, 7, "--placer static")
    assert "--seed 7" in opts and "--placer static" in opts and spec.pnr_opts in opts
    r = {"board": spec.name, "device": spec.device, "family": "ecp5", "engine": {"rows": 4, "cols": 32,
         "macs_per_cycle": 128}, "memory": {"bytes": 65536, "storage": "bram"}, "link": {"baud": 3e6},
         "utilization": {}, "fmax": {}, "peak_gops": 1.0, "target_mhz": 105, "seconds": {"total": 600.0},
         "nextpnr_options": opts, "seed": 7, "error": None, "critical_path": [], "bitstream": None}
    text = format_report(r)
    assert "built in 600 s" in text and f"nextpnr {opts} (seed 7)" in text
