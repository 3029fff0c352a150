"""The iCEBreaker board top in Verilator, driven through its UART pins by the real host driver.

:class:`sim.link_sim.LinkSimulation` runs the board's gateware (link, bridge,
arbiter, SPRAM memory, engine: everything but the PLL and the I/O buffers)
with a UART model on its pins; :class:`sw.backends.serial.SerialBackend` talks
to it through a simulated serial port, and :class:`sw.staging.StagedTransport`
stages the program through the board's memory. A reduced SqueezeNet 1.1 block
(stem convolution, max pool, Fire module) must come back bit-exact with the
golden model: cleanly, then with faults injected on the line (flipped bits,
dropped bytes, frames cut short, lost frames and answers, on any byte of a frame), with
the retries and the corrupt answers counted. A board that stops answering and an engine that does not finish must
give timeout errors, not hangs.
"""

import dataclasses
import time

import numpy as np
import pytest

from hw.boards import BOARDS
from hw.isa import ENGINE_ID, Ctrl, ErrorCode, Opcode, Reg, Status, check_command, pack_command
from hw.link import protocol as P
from quant import golden
from sw.compiler import compile_graph
from sw.driver import Driver
from sw.runtime import Session
from sw.staging import StagedTransport, plan_staging, program_config
from sw.transport import EngineTimeout

from .nets import fire_network

pytestmark = pytest.mark.verilator

BOARD = "icebreaker"
SPEC = BOARDS[BOARD]
# Simulated UART: 8 clock cycles per bit (the board's is 16 at 48 MHz); the cost is Python per bit.
DIVISOR = 8
# Host timeouts for the simulation: the simulated line moves a few kilobytes per wall second.
TIMEOUT = 2.0
WAIT_CYCLES = 20_000
# A board memory window small enough that the block runs in several groups (staging through the link).
WINDOW = 4096


@pytest.fixture(scope="module")
def sim():
    from sim.link_sim import LinkSimulation
    from sim.link_top import yosys_cells_sim

    try:
        yosys_cells_sim("ice40")
    except FileNotFoundError as e:
        pytest.skip(f"the iCE40 primitive models are absent: {e}")
    s = LinkSimulation(BOARD, divisor=DIVISOR)
    yield s
    s.close()


@pytest.fixture(scope="module")
def block():
    qgraph, x_q = fire_network(seed=3)
    program = compile_graph(qgraph, program_config(SPEC.engine))
    return qgraph, x_q, program, golden.run(qgraph, x_q)


def backend(port, **kw):
    from sw.backends.serial import SerialBackend

    return SerialBackend(port, None, timeout=kw.pop("timeout", TIMEOUT), wait_cycles=WAIT_CYCLES, **kw)


def run_block(be, block, window=WINDOW):
    qgraph, x_q, program, ref = block
    staged = StagedTransport(be, program, board_words=window)
    session = Session(program, Driver(staged, program.config))
    t0 = time.monotonic()
    inf = session.run_int8(x_q, profile=True, timeout=600)
    wall = time.monotonic() - t0
    for name, got in inf.tensors.items():
        bad = np.argwhere(got != ref[name])
        assert not len(bad), (f"{name}: {len(bad)} values differ from the golden model, first "
                              f"{[(tuple(b), int(got[tuple(b)]), int(ref[name][tuple(b)])) for b in bad[:5]]}")
    return inf, staged, wall


def test_identify_through_the_link(sim):
    be = backend(sim.port)
    assert be.board == BOARD and be.word_bytes == SPEC.engine.rows and be.mem_words == SPEC.mem_words
    assert be.config == SPEC.engine
    Driver(be, SPEC.engine).identify()
    assert be.read_regs(Reg.ID, 2)[0] == ENGINE_ID
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 4 * 700, dtype=np.uint8).tobytes()   # more than one frame's payload
    be.write_mem(SPEC.mem_words - 700, data)
    assert be.read_mem(SPEC.mem_words - 700, 700) == data
    assert be.stats.retries == 0


def test_write_pixels_falls_back_to_words_without_write_pix(sim):
    """The iCEBreaker's bridge has no WRITE_PIX: the probe is refused BAD_OP, the pixels go as words, exactly."""
    from sw.transport import expand_pixels

    be = backend(sim.port)
    assert be.info["version_minor"] >= 1 and not be.has_write_pix
    pixels = np.random.default_rng(4).integers(0, 256, P.PIXEL_BYTES * 300, dtype=np.uint8).tobytes()
    be.write_mem(100, b"\x55" * 4 * 300)
    out0 = be.stats.bytes_out
    be.write_pixels(100, pixels)
    # Words went out (a whole 4-byte word a pixel), and nothing was resent.
    assert be.stats.bytes_out - out0 == P.request_wire_bytes(P.Op.WRITE_MEM, 4 * 300)
    assert be.read_mem(100, 300) == expand_pixels(pixels, be.word_bytes)
    assert be.stats.retries == 0, be.report()


def test_fire_block_bit_exact(sim, block):
    be = backend(sim.port)
    c0 = sim.cycles()
    inf, staged, wall = run_block(be, block)
    plan = plan_staging(block[2], WINDOW)
    assert staged.groups_run == len(plan.groups) > 1
    assert be.stats.retries == 0, be.report()
    assert inf.run.cycles > 0 and len(inf.run.profile) == len(block[2].steps)
    print(f"\n{BOARD} link (clean): {be.report()}; {len(plan.groups)} groups, {staged.bytes_up} B up, "
          f"{staged.bytes_down} B down; engine {inf.run.cycles} cycles; {sim.cycles() - c0} simulated cycles; "
          f"wall {wall:.1f} s")


def test_fire_block_bit_exact_under_faults(sim, block):
    """Every fault kind, on a byte drawn over the whole request or answer frame: the block stays bit-exact,
    each fault costs a resend, and answers hit past their SYNC byte come back as corrupt (bad CRC or cut)."""
    from sim.link_sim import ANSWER_FAULTS, FAULTS, FaultyPort

    port = FaultyPort(sim.port, seed=7, rate=0.06,
                      schedule={3: "flip", 5: "drop", 7: "cut", 9: "lose", 11: "flip_answer", 13: "drop_answer",
                                15: "cut_answer", 17: "lose_answer"})
    be = backend(port)
    inf, staged, wall = run_block(be, block)
    kinds = {k for _, k in port.injected}
    assert set(FAULTS) <= kinds, kinds
    # Every fault costs at least one resend; a spurious timeout on a loaded machine may cost more.
    assert be.stats.retries >= len(port.injected), (port.injected, be.report())
    hits_past_sync = [h for h in port.answer_hits if h[1] != "lose_answer" and h[2] > 0]
    assert hits_past_sync and be.stats.corrupt > 0, (port.answer_hits, be.report())
    print(f"\n{BOARD} link ({len(port.injected)} faults injected: {sorted(kinds)}; answer bytes hit "
          f"{[(k, i, n) for _, k, i, n in port.answer_hits]}): {be.report()}; wall {wall:.1f} s")

    # A register write whose answer is lost is resent, acknowledged as a duplicate, executed once.
    dups = be.stats.duplicates
    port.schedule_next("lose_answer")
    be.write_reg(Reg.SCRATCH, 0x5EED)
    assert be.stats.duplicates == dups + 1
    assert be.read_reg(Reg.SCRATCH) == 0x5EED

    # One bit flipped anywhere after the SYNC byte of a read's answer: a bad header or payload CRC, counted as
    # a corrupt answer and read again, the data exact.
    data = bytes(range(256))
    be.write_mem(0, data)
    flips = 0
    for _ in range(4):
        corrupt, hits = be.stats.corrupt, len(port.answer_hits)
        port.schedule_next("flip_answer")
        assert be.read_mem(0, len(data) // be.word_bytes) == data
        assert len(port.answer_hits) == hits + 1
        _, kind, index, n = port.answer_hits[-1]
        if index > 0:
            assert be.stats.corrupt > corrupt, (index, n, be.report())
            flips += 1
    assert flips, port.answer_hits
    assert set(ANSWER_FAULTS) <= kinds
    print(f"{BOARD} link, one bit flipped in read answers (byte, of): "
          f"{[(i, n) for _, k, i, n in port.answer_hits[-4:]]}: {be.report()}")


def test_open_board_on_a_simulated_port(block):
    """``sw.staging.open_board("sim:icebreaker", program)``: what ``--backend serial --port sim:icebreaker``
    gives the driver; the whole block runs staged through the board's full memory, bit-exact."""
    from sw.staging import open_board

    qgraph, x_q, program, ref = block
    transport = open_board(f"sim:{BOARD}", program)
    try:
        assert isinstance(transport, StagedTransport) and transport.board_words == SPEC.mem_words
        inf = Session(program, Driver(transport, program.config)).run_int8(x_q, profile=False)
        for name, got in inf.tensors.items():
            assert np.array_equal(got, ref[name]), name
        assert transport.groups_run == 1
    finally:
        transport.close()


def test_runner_on_a_simulated_board(block):
    """The classify/detect path (``sw.networks.Runner`` with ``backend="serial"``): the board's configuration
    is read over the link, the network compiled for it and staged through its memory, every layer bit-exact."""
    from sw.networks import Runner
    from sw.runtime import run_network

    qgraph, x_q, _, ref = block
    with Runner("fire_block", "serial", port=f"sim:{BOARD}", qgraph=qgraph, progress=False) as r:
        assert dataclasses.replace(r.config, mem_addr_bits=SPEC.engine.mem_addr_bits) == SPEC.engine
        run = run_network(r.session, x_q, reference=ref)
    assert run.exact and all(run.exact.values()), run.exact
    assert run.cycles > 0


def test_stuck_board_times_out(sim):
    from sim.link_sim import FaultyPort
    from sw.backends.serial import LinkTimeout

    port = FaultyPort(sim.port, seed=1)
    be = backend(port)
    port.stuck = True
    be.timeout, be.retries = 0.3, 2
    t0 = time.monotonic()
    with pytest.raises(LinkTimeout, match="^sim:icebreaker: no valid answer to READ_REG"):
        be.read_reg(Reg.ID)
    elapsed, bound = time.monotonic() - t0, be.transaction_bound(P.Op.READ_REG, 4)
    print(f"\nstuck board: LinkTimeout after {elapsed:.2f} s (stated bound {bound:.2f} s)")
    assert elapsed <= bound + 1.0, (elapsed, bound)
    port.stuck = False
    assert be.read_reg(Reg.ID) == ENGINE_ID


def test_engine_that_does_not_finish_times_out(sim):
    """A run far longer than the wait gives EngineTimeout with the status, and the link stays usable."""
    be = backend(sim.port)
    cfg = SPEC.engine
    # 32x32 pixels, 4 -> 1024 channels, 3x3: about 2.4 M cycles (its output wraps round the board's memory:
    # only its length matters here).
    cmd = pack_command(Opcode.CONV, load=dict(src=0, src_rows=32, src_w=32, cb=1, ibuf=0),
                       in_h=32, in_w=32, kh=3, kw=3, sy=1, sx=1, dil=1, pad_t=1, pad_l=1, out_h=32, out_w=32,
                       cout=1024, quant=dict(zp_in=0, zp_out=0, act_min=-128, act_max=127),
                       wblob=2048, dst=16384, dst_pix=256)
    assert check_command(cfg, cmd) == ErrorCode.NONE
    be.write_mem(1024, cmd)
    be.write_reg(Reg.CTRL, Ctrl.CLEAR)
    be.write_reg(Reg.CMD_ADDR, 1024)
    be.write_reg(Reg.CMD_COUNT, 1)
    be.write_reg(Reg.CTRL, Ctrl.START)
    with pytest.raises(EngineTimeout, match="still busy") as exc:
        be.wait_done(timeout=0.5)
    assert exc.value.status & Status.BUSY
    assert be.read_reg(Reg.STATUS) & Status.BUSY        # the link still answers while the engine runs


@pytest.mark.slow
def test_full_size_fire_module_bit_exact(sim):
    """SqueezeNet 1.1's fire2 at its real size (55x55, 64 -> 16 -> 64 + 64) through the link, staged."""
    qgraph, x_q = fire_network(cin=64, squeeze=16, expand=64, hw=55, stem=False, seed=5)
    program = compile_graph(qgraph, program_config(SPEC.engine))
    be = backend(sim.port)
    inf, staged, wall = run_block(be, (qgraph, x_q, program, golden.run(qgraph, x_q)), window=SPEC.mem_words)
    print(f"\n{BOARD} full-size fire2 through the link: {be.report()}; {staged.groups_run} groups, "
          f"engine {inf.run.cycles} cycles; wall {wall:.1f} s")
