"""The DRAM boards, whole, in Verilator: the real driver over the simulated UART.

Every test runs on both DRAM boards (``ulx3s-85f``: SDR SDRAM through a 16-bit port and DramPort;
``ecpix5-85f``: DDR3 through a 128-bit port and WideDramPort). The top is
:class:`hw.boards.dram_board.DramBoardCore` (engine, link, arbiter, port adapter, init sequencer)
with LiteDRAM's ``--sim`` core (its DRAM model: refresh, bank timing, the controller's latency),
built by :class:`sim.link_sim.LinkSimulation`; the host is :class:`sw.backends.serial.SerialBackend`
and :class:`sw.resident.ResidentSession`, exactly as ``kindling --backend serial`` uses them. The
simulated UART runs at 4 clock cycles per bit; the link time at the board's 3 Mbaud is computed from
the byte counts.

* a reduced network (a stem and a Fire module): uploaded once, two pictures bit-exact with the golden
  model, the second without upload, a second session (a second command) without upload, and per frame
  only the picture (``WRITE_PIX``, 3 bytes a pixel) and the outputs on the link (byte counts printed);
* the same network double-buffered (``ResidentSession.frames``): the next picture written into the
  second buffer while the engine runs (``RUN_LINK_WORDS``), three frames bit-exact;
* a board reset between frames: the hash reads 0, the program is uploaded again, the frame is exact;
* a program larger than the DRAM: refused before any memory write;
* a DRAM that never finishes initialising (the sequence's last write left out, a short deadline): a
  clear error from ``DRAM_INIT``, within the host's absolute deadline;
* ``slow``: SqueezeNet 1.1 uploaded once and run on two photographs double-buffered, bit-exact, the second
  picture written whole during the first run; the board's fps from the measured cycles and bytes.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hw.boards import BOARDS
from hw.boards.dram_board import DramReg, InitBits
from hw.link import protocol as P
from quant import golden
from sw.compiler import compile_graph
from sw.driver import Driver

from .nets import fire_network

pytestmark = pytest.mark.verilator

DRAM_BOARDS = [name for name, spec in BOARDS.items() if spec.storage == "sdram"]
DIVISOR = 4
TIMEOUT = 2.0
WAIT_CYCLES = 20_000
#: Bytes of link protocol around a frame's payloads: SYNC, headers and CRCs of each request and answer.
PER_FRAME = 2 * (P.FRAME_OVERHEAD + P.CRC_BYTES)


def _need_litedram():
    if shutil.which("litedram_gen") is None and not (Path(sys.executable).parent / "litedram_gen").exists():
        pytest.skip("litedram_gen not installed (pip install -e '.[dram]')")


@pytest.fixture(scope="module", params=DRAM_BOARDS)
def sim(request):
    _need_litedram()
    from sim.link_sim import LinkSimulation

    s = LinkSimulation(request.param, divisor=DIVISOR)
    yield s
    s.close()


def backend(port):
    from sw.backends.serial import SerialBackend

    return SerialBackend(port, None, timeout=TIMEOUT, wait_cycles=WAIT_CYCLES)


@pytest.fixture(scope="module")
def block():
    qgraph, x1 = fire_network(seed=3)
    x2 = np.random.default_rng(5).integers(-128, 128, x1.shape).astype(np.int8)
    return qgraph, [x1, x2], [golden.run(qgraph, x) for x in (x1, x2)]


def assert_exact(inf, ref, what):
    for name, got in inf.tensors.items():
        bad = np.argwhere(got != ref[name])
        first = [(tuple(b), int(got[tuple(b)]), int(ref[name][tuple(b)])) for b in bad[:5]]
        assert not len(bad), (f"{what}: {name}: {len(bad)} values differ from the golden model, first (index, "
                              f"engine, golden) {first}")


def frame_payload(program, x, *, pixels: bool):
    """(picture bytes, output bytes) of one frame: the least that must cross the link (``pixels``: the picture
    at 3 bytes a pixel, else its words)."""
    (inp,) = program.inputs
    _, words, _ = program.pack_tensor(inp, np.asarray(x).reshape(program.qgraph.tensors[inp].shape))
    picture = P.PIXEL_BYTES * words.shape[0] if pixels else words.size
    out = 0
    for name in program.outputs:
        v = program.views[name]
        out += v.h * v.w * math.ceil(program.qgraph.tensors[name].shape[0] / program.config.rows)
    return picture, out * program.config.rows


def link_seconds(nbytes: int, baud: int) -> float:
    return 10 * nbytes / baud


def test_program_uploaded_once_then_pictures_only(sim, block):
    from sw.resident import ResidentSession, dram_bytes_per_cycle, fps_estimate, frame_wire_bytes, picture_wire_bytes

    qgraph, xs, refs = block
    spec = sim.spec
    be = backend(sim.port)
    program = compile_graph(qgraph, be.config)
    be.write_reg(DramReg.PROG_HASH_LO, 0)     # whatever an earlier test left: this one uploads
    c0, b0 = sim.cycles(), be.stats.bytes_out
    s1 = ResidentSession(program, Driver(be, be.config))
    up_cycles, up_bytes = sim.cycles() - c0, be.stats.bytes_out - b0
    assert s1.uploads == 1 and s1.upload_bytes > 0
    assert s1.board_hash() == s1.hash
    frames = []
    for i, (x, ref) in enumerate(zip(xs, refs, strict=True)):
        c0 = sim.cycles()
        inf, fr = s1.frame(x)
        assert_exact(inf, ref, f"frame {i + 1}")
        assert not fr.uploaded
        frames.append((fr, sim.cycles() - c0))
    # A second command on the same board: the hash matches, nothing is uploaded.
    be2 = backend(sim.port)
    s2 = ResidentSession(program, Driver(be2, be2.config))
    assert s2.uploads == 0
    inf, fr3 = s2.frame(xs[1])
    assert_exact(inf, refs[1], "second session")
    assert s1.pixels and be.has_write_pix and s1.double_buffered
    pic, out = frame_payload(program, xs[0], pixels=True)
    print(f"\nupload: {s1.upload_bytes:,} B of program, {up_bytes:,} B on the link, {up_cycles:,} simulated cycles "
          f"({link_seconds(up_bytes, spec.baud):.3f} s at {spec.baud / 1e6:g} Mbaud) on {spec.name}")
    for i, (fr, cyc) in enumerate(frames):
        est = fps_estimate(program, cycles=fr.cycles, link_bytes=fr.bytes, clk_hz=spec.clk_hz, baud=spec.baud,
                           dram_bytes_per_cycle=dram_bytes_per_cycle(spec.name))
        print(f"frame {i + 1}: {fr.bytes_out:,} B out (picture {pic:,} B), {fr.bytes_in:,} B in (outputs {out:,} B); "
              f"engine {fr.cycles:,} cycles, {cyc:,} simulated cycles with the UART at divisor {DIVISOR}; "
              f"at 3 Mbaud the link takes {link_seconds(fr.bytes, spec.baud) * 1e3:.2f} ms; {est.summary()}")
    for fr, _ in frames + [(fr3, 0)]:
        # The byte model of a frame (sw.resident.frame_wire_bytes) is exact: the WAITs are the only free term.
        out0, in0 = frame_wire_bytes(program, waits=0, pixels=True)
        waits, rest = divmod(fr.bytes_in - in0, P.answer_wire_bytes(P.Op.WAIT, 0))
        assert rest == 0 and waits >= 1 and (fr.bytes_out, fr.bytes_in) == \
            frame_wire_bytes(program, waits=waits, pixels=True), (fr, out0, in0)
        assert fr.picture_bytes == picture_wire_bytes(program, pixels=True) and fr.overlap_bytes == 0
        n_frames_bound = 16 + math.ceil(pic / P.MAX_PAYLOAD) + math.ceil(out / P.MAX_PAYLOAD)
        assert pic <= fr.bytes_out <= pic + PER_FRAME * n_frames_bound, (fr, pic)
        assert out <= fr.bytes_in <= out + PER_FRAME * n_frames_bound + 4 * n_frames_bound, (fr, out)
    assert be.stats.retries == 0 and be2.stats.retries == 0, be.report()


def wait_bytes() -> int:
    return P.request_wire_bytes(P.Op.WAIT, 0) + P.answer_wire_bytes(P.Op.WAIT, 0)


def check_frames_bytes(program, frames):
    """Each double-buffered frame's bytes are the model's (``frame_wire_bytes`` with the RUN_LINK read), the first
    with its own picture too, the last without a next one; the WAITs are the free term. Returns the WAITs."""
    from sw.resident import frame_wire_bytes, picture_wire_bytes

    pic = picture_wire_bytes(program, pixels=True)
    model0 = sum(frame_wire_bytes(program, waits=0, pixels=True, run_link=True))
    waits = []
    for i, (_, fr) in enumerate(frames):
        extra = pic * (i == 0) - pic * (i == len(frames) - 1)
        n, rest = divmod(fr.bytes - model0 - extra, wait_bytes())
        assert rest == 0 and n >= 1, (i, fr, model0, extra)
        assert fr.picture_bytes == pic * ((i == 0) + (i < len(frames) - 1))
        assert fr.overlap_bytes == pic * (i < len(frames) - 1)
        waits.append(n)
    return waits


def test_frames_double_buffered(sim, block):
    """``ResidentSession.frames``: picture N+1 written into the second buffer while N runs, every frame exact.

    The reduced network's run (~23,000 cycles) is shorter than its picture at the fast UART (5,547 B at 40
    cycles a byte): ``RUN_LINK_WORDS`` shows part of the next picture written during each run (the board's
    regime for SqueezeNet, whose picture takes longer than its run); the slow test shows a whole one.
    """
    from sw.resident import ResidentSession

    qgraph, xs, refs = block
    be = backend(sim.port)
    program = compile_graph(qgraph, be.config)
    session = ResidentSession(program, Driver(be, be.config))
    assert session.double_buffered and session.pixels and be.has_write_pix
    (inp,) = program.inputs
    npix = program.views[inp].h * program.views[inp].w
    order = [0, 1, 0]       # the third frame reads buffer A again
    frames = list(session.frames([xs[i] for i in order]))
    for i, ((inf, fr), k) in enumerate(zip(frames, order, strict=True)):
        assert_exact(inf, refs[k], f"double-buffered frame {i + 1}")
        if i < len(order) - 1:
            assert 0 < fr.run_link_words <= npix, fr
            assert fr.run_link_bytes >= P.PIXEL_BYTES * fr.run_link_words + P.FRAME_OVERHEAD, fr
        else:
            # No picture: the link wrote no memory word, and received only part of this frame's own requests
            # (its WAITs; not a whole number of frames when the run ends while a WAIT is arriving, as under load).
            assert fr.picture_bytes == 0 and fr.run_link_words == 0 and fr.run_link_bytes < fr.bytes_out, fr
        print(f"\nframe {i + 1}: {fr.bytes_out:,} B out, {fr.bytes_in:,} B in, picture {fr.picture_bytes:,} B "
              f"(during the run {fr.overlap_bytes:,} B); engine {fr.cycles:,} cycles; during the run the link "
              f"received {fr.run_link_bytes:,} B and wrote {fr.run_link_words:,} of the next picture's {npix:,} words")
    check_frames_bytes(program, frames)
    assert be.stats.retries == 0, be.report()


def test_double_buffered_frames_under_faults(sim, block):
    """Faults on WRITE_PIX frames (and the rest) while the engine runs: resent, every frame still exact."""
    from sim.link_sim import FaultyPort
    from sw.resident import ResidentSession

    qgraph, xs, refs = block
    be = backend(sim.port)
    program = compile_graph(qgraph, be.config)
    session = ResidentSession(program, Driver(be, be.config))      # uploaded (or already there) cleanly
    port = FaultyPort(sim.port, seed=11, rate=0.15, kinds=("flip", "drop", "cut", "lose", "flip_answer"))
    faulty = backend(port)
    session = ResidentSession(program, Driver(faulty, faulty.config))
    assert session.uploads == 0 and faulty.has_write_pix
    port.injected.clear()
    for i, ((inf, _fr), k) in enumerate(zip(session.frames([xs[0], xs[1], xs[0]]), [0, 1, 0], strict=True)):
        assert_exact(inf, refs[k], f"frame {i + 1} under faults")
    assert port.injected and faulty.stats.retries >= len(port.injected), (port.injected, faulty.report())
    print(f"\n{len(port.injected)} faults injected ({sorted({k for _, k in port.injected})}): {faulty.report()}")


def test_board_reset_between_frames_uploads_again(sim, block):
    from sw.resident import ResidentSession

    qgraph, xs, refs = block
    be = backend(sim.port)
    program = compile_graph(qgraph, be.config)
    session = ResidentSession(program, Driver(be, be.config))
    inf, fr = session.frame(xs[0])
    assert_exact(inf, refs[0], "before the reset")
    before = session.uploads
    sim.reset_board()
    assert session.board_hash() == 0, "the reset did not clear PROG_HASH"
    inf, fr = session.frame(xs[1])
    assert fr.uploaded and session.uploads == before + 1
    assert_exact(inf, refs[1], "after the reset")
    inf, fr = session.frame(xs[0])
    assert not fr.uploaded
    assert_exact(inf, refs[0], "the frame after")


def test_program_larger_than_the_dram_refused_before_upload(sim, block):
    from sw.resident import ProgramTooLarge, ResidentSession

    qgraph, _, _ = block
    be = backend(sim.port)
    program = compile_graph(qgraph, be.config)
    n = sim.spec.mem_words
    assert be.mem_words == n
    big = dataclasses.replace(program, mem_words=n + 1)
    b0, f0 = be.stats.bytes_out, be.stats.frames
    mb = n * sim.spec.engine.rows / 2**20
    with pytest.raises(ProgramTooLarge, match=rf"needs {n + 1:,} words \({mb:.1f} MB\), the board's DRAM holds "
                                              rf"{n:,} \({mb:.1f} MB\): not uploaded"):
        ResidentSession(big, Driver(be, be.config))
    # Only register reads went out (identification, DRAM_INIT): no memory write.
    assert be.stats.bytes_out - b0 == P.FRAME_OVERHEAD * (be.stats.frames - f0)


@pytest.mark.parametrize("board", DRAM_BOARDS)
def test_dram_that_never_initialises_gives_a_clear_error(board):
    _need_litedram()
    from hw.boards.dram.gen import generate
    from sim.link_sim import LinkSimulation
    from sw.resident import DramInitError, ResidentSession

    writes = generate(BOARDS[board].dram_config_path, sim=True).init_writes
    assert writes[-1][0] == "ddrctrl_init_done"
    # The sequence without its last write (ddrctrl_init_done = 1): init_done never rises.
    with LinkSimulation(board, divisor=DIVISOR, top_options={"init_writes": writes[:-1],
                                                             "init_deadline": 5_000}) as broken:
        be = backend(broken.port)
        qgraph, _ = fire_network(seed=3)
        program = compile_graph(qgraph, be.config)
        t0 = time.monotonic()
        with pytest.raises(DramInitError) as err:
            ResidentSession(program, Driver(be, be.config), init_timeout=60.0)
        wall = time.monotonic() - t0
        print(f"\n{err.value} ({wall:.1f} s)")
        assert f"DRAM_INIT={(0xD7A3 << 16) | InitBits.TIMEOUT:#010x} (TIMEOUT)" in str(err.value)
        assert wall < 60.0
        assert be.read_reg(DramReg.DRAM_INIT) & InitBits.DONE == 0


def test_runner_on_the_dram_board_prints_fps(sim, block):
    """``kindling --backend serial``'s path: the Runner sees the DRAM, compiles for the board, keeps the program
    there, runs a frame in one go (outputs only, exact), and has the fps estimate the command line prints."""
    import torch

    from sw.networks import Runner
    from sw.resident import ResidentSession

    qgraph, _, _ = block
    x = torch.rand((1, *qgraph.tensors[qgraph.inputs[0]].shape), generator=torch.Generator().manual_seed(9))
    runner = Runner("squeezenet", "serial", port=sim.port, qgraph=qgraph, progress=False,
                    serial_options={"timeout": TIMEOUT, "wait_cycles": WAIT_CYCLES})
    with runner:
        assert isinstance(runner.session, ResidentSession) and runner.config == sim.spec.engine
        res = runner.run_float(x)
        again = runner.run_float(x)
    assert res.run.exact and all(res.run.exact.values()), res.run.first_mismatch
    assert set(res.run.exact) == set(runner.program.outputs)
    assert res.run.cycles > 0 and res.run.profile is None
    assert not again.extra["frame"].uploaded and again.extra["uploads"] == res.extra["uploads"]
    est = again.extra["fps"]
    assert est.clk_hz == sim.spec.clk_hz and est.baud == sim.spec.baud and est.link_bytes == again.extra["frame"].bytes
    engine_s = max(est.cycles / est.clk_hz, est.dram_bytes / (est.dram_bytes_per_cycle * est.clk_hz))
    fr = again.extra["frame"]
    assert est.overlap_bytes == fr.picture_bytes > 0
    assert est.fps_sequential == pytest.approx(1 / (engine_s + 10 * est.link_bytes / est.baud))
    assert est.fps == pytest.approx(1 / (max(engine_s, 10 * fr.picture_bytes / est.baud)
                                         + 10 * (est.link_bytes - fr.picture_bytes) / est.baud))
    assert est.fps_sequential < est.fps <= min(est.fps_compute, est.fps_link * est.link_bytes
                                               / (est.link_bytes - fr.picture_bytes))
    print(f"\n{est.summary()}")


def test_runner_pipelines_several_inputs_on_the_dram_board(sim, block):
    """``kindling classify a.jpg b.jpg c.jpg --backend serial`` (Runner.run_float_many): on a board with two input
    buffers each next picture crosses the link while the engine runs the current one; every frame exact, in
    order (each compared with its own golden outputs), the last frame with nothing to overlap."""
    import torch

    from sw.networks import Runner

    qgraph, _, _ = block
    shape = (1, *qgraph.tensors[qgraph.inputs[0]].shape)
    xs = [torch.rand(shape, generator=torch.Generator().manual_seed(s)) for s in (11, 12, 13)]
    runner = Runner("squeezenet", "serial", port=sim.port, qgraph=qgraph, progress=False,
                    serial_options={"timeout": TIMEOUT, "wait_cycles": WAIT_CYCLES})
    with runner:
        assert runner.session.double_buffered
        results = list(runner.run_float_many(iter(xs)))
        alone = [runner.run_float(x) for x in xs]
    assert len(results) == 3
    for i, (res, ref) in enumerate(zip(results, alone, strict=True)):
        assert res.run.exact and all(res.run.exact.values()), (i, res.run.first_mismatch)
        for name, got in res.run.tensors.items():
            assert np.array_equal(got, ref.run.tensors[name]), f"frame {i}: {name} differs from its own run"
    frames = [r.extra["frame"] for r in results]
    assert [f.overlap_bytes > 0 for f in frames] == [True, True, False], [f.overlap_bytes for f in frames]
    assert not any(f.uploaded for f in frames[1:])


@pytest.mark.slow
@pytest.mark.shared
def test_squeezenet_uploaded_once_two_pictures_bit_exact(sim, q_squeezenet_imagenet):
    """SqueezeNet 1.1, double-buffered: the dog's picture crosses the link (WRITE_PIX) while the cat's run goes on,
    all of it (RUN_LINK_WORDS), both frames bit-exact; the board's fps from the measured cycles and bytes."""
    import torch

    from sw.resident import (
        ResidentSession,
        dram_bytes_per_cycle,
        fps_estimate,
        frame_wire_bytes,
        picture_requests,
        picture_wire_bytes,
    )
    from sw.shared import imagenet_preprocess, shared_dir

    qg = q_squeezenet_imagenet
    be = backend(sim.port)
    program = compile_graph(qg, be.config)
    torch.set_num_threads(1)
    be.write_reg(DramReg.PROG_HASH_LO, 0)
    t0, c0 = time.monotonic(), sim.cycles()
    session = ResidentSession(program, Driver(be, be.config))
    print(f"\nSqueezeNet 1.1 upload: {session.upload_bytes:,} B of program (two command lists), "
          f"{be.stats.bytes_out:,} B on the link, {sim.cycles() - c0:,} simulated cycles, "
          f"wall {time.monotonic() - t0:.0f} s")
    assert session.uploads == 1 and session.double_buffered and session.write_pix
    names = ("coco_cat.jpg", "coco_dog.jpg")
    pictures = [golden.quantize_input(imagenet_preprocess(shared_dir() / "images" / name), qg.qparams(qg.inputs[0]))
                for name in names]
    refs = [golden.run(qg, x_q) for x_q in pictures]
    (inp,) = program.inputs
    npix = program.views[inp].h * program.views[inp].w
    pix_req = sum(P.request_wire_bytes(op, n) for op, n in picture_requests(program, pixels=True))
    pic = picture_wire_bytes(program, pixels=True)
    frames = []
    t0, c0 = time.monotonic(), sim.cycles()
    for name, ref, (inf, fr) in zip(names, refs, session.frames(pictures, timeout=7200), strict=True):
        assert_exact(inf, ref, name)
        assert not fr.uploaded and session.uploads == 1
        frames.append((inf, fr))
        print(f"{name}: {fr.bytes_out:,} B out, {fr.bytes_in:,} B in, of which pictures {fr.picture_bytes:,} B "
              f"({fr.overlap_bytes:,} B during the run); engine {fr.cycles:,} cycles (refresh, DRAM latency and "
              f"the link's writes included); during the run the link received {fr.run_link_bytes:,} B and wrote "
              f"{fr.run_link_words:,} words; {sim.cycles() - c0:,} simulated cycles with the UART at divisor "
              f"{DIVISOR}, wall {time.monotonic() - t0:.0f} s")
        t0, c0 = time.monotonic(), sim.cycles()
    (_, first), (_, last) = frames
    # The dog's every pixel was written while the cat's run went on: its WRITE_PIX frames arrived during the run
    # (and the WAIT requests sent before the run ended, 12 B each).
    assert first.run_link_words == npix, (first, npix)
    extra, rest = divmod(first.run_link_bytes - pix_req, P.request_wire_bytes(P.Op.WAIT, 0))
    assert rest == 0 and extra >= 0, (first, pix_req)
    assert last.run_link_words == 0
    waits = check_frames_bytes(program, frames)
    # On the board (3 Mbaud, 45 MHz) a steady frame: the next picture during the run, then one WAIT if the
    # picture outlasts the run (else one per 50 ms left), the counters and the logits.
    spec = sim.spec
    engine_s = first.cycles / spec.clk_hz
    pic_s = link_seconds(pic, spec.baud)
    board_waits = max(1, math.ceil((engine_s - pic_s) / 0.05))
    board = sum(frame_wire_bytes(program, waits=board_waits, pixels=True, run_link=True))
    est = fps_estimate(program, cycles=first.cycles, link_bytes=board, clk_hz=spec.clk_hz, baud=spec.baud,
                       overlap_bytes=pic, dram_bytes_per_cycle=dram_bytes_per_cycle(spec.name))
    print(f"picture {pic:,} B on the wire ({npix * P.PIXEL_BYTES:,} B of pixels), {waits} WAITs in the simulation; "
          f"on the board {board:,} B a frame ({board - pic:,} B after the run); {est.summary()}")
    assert est.fps > est.fps_sequential
