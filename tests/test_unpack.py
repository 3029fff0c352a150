"""``Program.pack_tensor`` / ``unpack_tensor`` round trip on every stored tensor, among random neighbours.

``unpack_tensor`` reads a tensor as a strided view of memory (pixel stride ``pix``
words, channel ``c`` in lane ``lanes[c]``): every tensor of a network with
concats (tensors stored inside another), a residual add's halves and
pixel-pair packed inputs is written over random memory and must read back
exactly, untouched by the bytes of its neighbours.
"""

from __future__ import annotations

import numpy as np
import pytest

from hw.isa import EngineConfig
from sw.compiler import compile_graph
from tests.nets import branch_network, fire_network


def _roundtrip(prog, rng):
    R = prog.config.rows
    mem = rng.integers(-128, 128, size=(prog.mem_words, R), dtype=np.int8)
    checked = 0
    for name, view in prog.views.items():
        shape = prog.qgraph.tensors[name].shape
        x = rng.integers(-128, 128, size=shape, dtype=np.int8)
        addr, words, pix = prog.pack_tensor(name, x)
        cb = words.shape[0] // (view.h * view.w)
        for q in range(view.h * view.w):   # only the tensor's own words: its neighbours stay random
            rows = words[q * cb:(q + 1) * cb]
            lane_mask = np.zeros((cb, R), bool)
            lane_mask.reshape(-1)[view.lanes] = True
            target = mem[addr + q * pix: addr + q * pix + cb]
            target[lane_mask] = rows[lane_mask]
        got = prog.unpack_tensor(name, lambda a, n: mem[a:a + n].copy())
        assert got.dtype == np.int8 and got.shape == tuple(shape), (name, got.shape, shape)
        bad = np.argwhere(got != x)
        assert not len(bad), f"{name}: first mismatches (c, y, x, read, written) " + str(
            [(*map(int, b), int(got[tuple(b)]), int(x[tuple(b)])) for b in bad[:5]])
        checked += 1
    return checked


@pytest.mark.parametrize("config", [EngineConfig(rows=8, cols=16), EngineConfig(rows=4, cols=8, ibuf_depth=4096)])
def test_unpack_roundtrip_branches_and_fire(config, rng):
    qg, _ = branch_network()
    assert _roundtrip(compile_graph(qg, config), rng) >= 4
    qg, _ = fire_network()
    prog = compile_graph(qg, config)
    assert bool(prog.packed_inputs) == (config.rows >= 8), "the stem's input is pixel-pair packed on 8 rows"
    assert _roundtrip(prog, rng) == len(prog.views) >= 3
