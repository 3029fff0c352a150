"""The resident program's host side without a board: pixels, the second buffer's commands, the byte and fps models.

The full-system simulation (``tests/test_dram_board.py``) runs all of it against the gateware; these
check the pieces exactly and fast.
"""

from __future__ import annotations

import numpy as np
import pytest

from hw.boards import BOARDS
from hw.isa import LoadSpec, unpack_command
from hw.link import protocol as P
from sw.compiler import compile_graph
from sw.resident import (
    FpsEstimate,
    frame_wire_bytes,
    picture_pixels,
    picture_requests,
    picture_wire_bytes,
    pixel_input,
    relocate_input,
    second_buffer,
)
from sw.transport import TransportError, expand_pixels

from .nets import fire_network

CFG = BOARDS["ulx3s-85f"].engine


@pytest.fixture(scope="module")
def program():
    qgraph, x = fire_network(seed=3)
    return compile_graph(qgraph, CFG), x


def test_pixels_expand_to_the_input_words(program):
    """WRITE_PIX's pixels, expanded as the bridge does, are exactly the words the compiler places."""
    p, x = program
    assert pixel_input(p)
    (inp,) = p.inputs
    _, words, _ = p.pack_tensor(inp, x.reshape(p.qgraph.tensors[inp].shape))
    pixels = picture_pixels(p, x)
    assert len(pixels) == P.PIXEL_BYTES * words.shape[0]
    assert expand_pixels(pixels, CFG.rows) == words.tobytes()
    with pytest.raises(TransportError, match="whole number of 3-byte pixels"):
        expand_pixels(pixels[:-1], CFG.rows)
    with pytest.raises(TransportError, match="wider than a pixel"):
        expand_pixels(pixels, 2)


def test_relocate_input_moves_only_the_input_loads(program):
    p, _ = program
    (inp,) = p.inputs
    root = p.views[inp].root
    base, cmds = second_buffer(p, BOARDS["ulx3s-85f"].mem_words)
    assert base == p.mem_words and cmds == base + root.words
    moved = relocate_input(p, base)
    assert len(moved) == len(p.commands)
    readers = 0
    for step, old, new in zip(p.steps, p.commands, moved, strict=True):
        (op, a), (op2, b) = unpack_command(old), unpack_command(new)
        assert op == op2
        if step.source == inp:
            readers += 1
            assert b.load.src == a.load.src - root.addr + base
            # Every other bit is unchanged: the difference is the src field alone.
            diff = int.from_bytes(old, "little") ^ int.from_bytes(new, "little")
            assert diff == (a.load.src ^ b.load.src) << (_load_src_offset(op)), (step.layer, hex(diff))
        else:
            assert new == old
    assert readers >= 1


def _load_src_offset(op):
    from hw.isa import COMMAND_LAYOUTS

    return COMMAND_LAYOUTS[op]["load"].offset + LoadSpec["src"].offset


def test_second_buffer_only_with_room(program):
    p, _ = program
    (inp,) = p.inputs
    need = p.mem_words + p.views[inp].root.words + len(p.steps) * CFG.cmd_words
    assert second_buffer(p, need) is not None
    assert second_buffer(p, need - 1) is None
    assert second_buffer(p, None) is None


def test_picture_and_frame_bytes(program):
    p, _ = program
    (inp,) = p.inputs
    npix = p.views[inp].h * p.views[inp].w
    reqs = picture_requests(p, pixels=True)
    assert all(op == P.Op.WRITE_PIX and n % P.PIXEL_BYTES == 0 and n <= P.MAX_PIX_PAYLOAD for op, n in reqs)
    assert sum(n for _, n in reqs) == P.PIXEL_BYTES * npix
    assert sum(n for _, n in picture_requests(p, pixels=False)) == CFG.rows * npix
    # Frames differ by the picture alone (and the RUN_LINK read: one READ_REG of two registers).
    words, pix = frame_wire_bytes(p, pixels=False), frame_wire_bytes(p, pixels=True)
    assert sum(words) - sum(pix) == picture_wire_bytes(p, pixels=False) - picture_wire_bytes(p, pixels=True)
    assert sum(frame_wire_bytes(p, pixels=True, run_link=True)) - sum(pix) == \
        P.request_wire_bytes(P.Op.READ_REG, 8) + P.answer_wire_bytes(P.Op.READ_REG, 8)


def test_fps_overlapped_and_sequential():
    """SqueezeNet 1.1's figures of the full-system simulation: 1.96 frames/s with the picture during the run."""
    est = FpsEstimate(clk_hz=45e6, cycles=17_377_100, dram_bytes=13_520_000, link_bytes=152_794, baud=3_000_000,
                      overlap_bytes=151_490)
    assert est.fps == pytest.approx(1 / (max(17_377_100 / 45e6, 1_514_900 / 3e6) + 13_040 / 3e6))
    assert est.fps_sequential == pytest.approx(1 / (17_377_100 / 45e6 + 1_527_940 / 3e6))
    assert round(est.fps, 2) == 1.96 and round(est.fps_sequential, 2) == 1.12
    assert "end to end 1.96 with the picture sent during the run" in est.summary()
    # Without overlap the two figures are one.
    seq = FpsEstimate(clk_hz=45e6, cycles=17_377_100, dram_bytes=13_520_000, link_bytes=152_794, baud=3_000_000)
    assert seq.fps == seq.fps_sequential == pytest.approx(est.fps_sequential)
    # A run longer than the picture: the picture costs nothing.
    long = FpsEstimate(clk_hz=45e6, cycles=45_000_000, dram_bytes=1, link_bytes=3_100, baud=3_000_000,
                       overlap_bytes=3_000)
    assert long.fps == pytest.approx(1 / (1.0 + 100 * 10 / 3e6))
    assert np.isclose(long.fps_sequential, 1 / (1.0 + 31_000 / 3e6))
