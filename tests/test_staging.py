"""Staging a program through a small board memory: bit-exact against the golden model, and its byte counts.

The "board" here is a :class:`sw.backends.golden.GoldenBackend` with a few
thousand words of memory, so every rewrite of :mod:`sw.staging` runs in
seconds: groups, compact (scattered) outputs, gathered inputs, convolutions
and Fire modules cut into output-channel slices, weights left on the board
between bands.
"""

import dataclasses

import numpy as np
import pytest

from hw.isa import ADDR_BITS, EngineConfig, ErrorCode, Opcode, Reg, Status, pack_command, unpack_command
from hw.link import protocol as P
from quant import golden
from sw.backends.golden import GoldenBackend
from sw.compiler import compile_graph
from sw.driver import Driver
from sw.runtime import Session
from sw.staging import (
    StagedTransport,
    StagingError,
    plan_staging,
    program_config,
    relocate_command,
    traffic,
)

from .nets import branch_network, fire_network

CFG = EngineConfig(rows=4, cols=4, ibuf_depth=1024, acc_depth=16, mem_addr_bits=15, pool_max_cb=16)


@pytest.fixture(scope="module")
def fire():
    g, x = fire_network(seed=1)
    return g, x, compile_graph(g, program_config(CFG)), golden.run(g, x)


@pytest.fixture(scope="module")
def branches():
    g, x = branch_network(seed=2)
    return g, x, compile_graph(g, program_config(CFG)), golden.run(g, x)


def run_staged(case, board_words, *, profile=True):
    g, x, program, ref = case
    staged = StagedTransport(GoldenBackend(CFG, mem_words=board_words), program)
    inf = Session(program, Driver(staged, program.config, timed=False)).run_int8(x, profile=profile)
    for name, got in inf.tensors.items():
        assert np.array_equal(got, ref[name]), f"{name} differs from the golden model through {board_words} words"
    return staged, inf


def test_program_config_widens_addresses_only():
    pc = program_config(CFG)
    assert pc.mem_addr_bits == ADDR_BITS and dataclasses.replace(pc, mem_addr_bits=CFG.mem_addr_bits) == CFG


def test_relocate_moves_every_address_field():
    cmd = pack_command(Opcode.FIRE, load=dict(src=1000, src_rows=3, src_w=4, cb=2, ibuf=0), in_h=3, in_w=4,
                       out_h=3, squeeze=4, expand1=8, expand3=8, sq_ibuf=100, w_sq=10, w_e1=20, w_e3=30, dst=5000)
    moved = relocate_command(cmd, lambda a: a + 7, dst=3)
    _, c = unpack_command(moved)
    assert (c.load.src, c.w_sq, c.w_e1, c.w_e3, c.dst) == (1007, 17, 27, 37, 3)
    assert (c.expand1, c.squeeze, c.in_w) == (8, 4, 4)


@pytest.mark.parametrize("board_words", [3100, 4096, 1 << 14])
def test_fire_block_staged_bit_exact(fire, board_words):
    staged, inf = run_staged(fire, board_words)
    plan = plan_staging(fire[2], board_words)
    assert staged.groups_run == len(plan.groups)
    assert (len(plan.groups) > 1) == (board_words < fire[2].mem_words)
    assert inf.run.status & Status.DONE


@pytest.mark.parametrize("board_words", [1100, 1500, 4096])
def test_concat_and_sliced_convolution_staged_bit_exact(branches, board_words):
    """Concat members go through compact outputs; the wide head convolution is cut into slices when small."""
    staged, _ = run_staged(branches, board_words)
    plan = plan_staging(branches[2], board_words)
    assert any(u.scatter for gr in plan.groups for u in gr.units)
    if board_words < 1500:
        assert plan.slices > 0


def test_fire_slices_bit_exact():
    """A Fire module whose weights do not fit is cut into expand-channel slices, each squeezing again."""
    g, x = fire_network(cin=16, squeeze=8, expand=32, stem=False, hw=6, seed=4)
    program = compile_graph(g, program_config(CFG))
    need = plan_staging(program, 1 << 16).groups[0].board_words
    words = need - 300
    plan = plan_staging(program, words)
    assert plan.slices > 0
    run_staged((g, x, program, golden.run(g, x)), words)


def test_gathered_input_bit_exact():
    """A global average pool over a tensor read in part of each pixel (src_pix > cb) gathers it."""
    import torch
    from torch import nn

    from quant.quantize import quantize_model

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(8, 12, 1), nn.Conv2d(8, 20, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            return self.pool(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1))

    gen = torch.Generator().manual_seed(5)
    model = Net().eval()
    g = quantize_model(model, torch.rand((4, 8, 12, 12), generator=gen))
    x = np.asarray(golden.quantize_input(torch.rand((1, 8, 12, 12), generator=gen), g.qparams(g.inputs[0])))
    # A buffer too small for the whole map in one go: the average runs on channel blocks (strided reads).
    cfg = dataclasses.replace(CFG, ibuf_depth=512)
    program = compile_graph(g, program_config(cfg))
    plan = plan_staging(program, 4096)
    if not any(u.gather for gr in plan.groups for u in gr.units):
        pytest.skip("the compiler read this average contiguously")
    staged = StagedTransport(GoldenBackend(cfg, mem_words=4096), program)
    inf = Session(program, Driver(staged, program.config, timed=False)).run_int8(x)
    ref = golden.run(g, x)
    for name, got in inf.tensors.items():
        assert np.array_equal(got, ref[name])


def test_weights_stay_on_the_board_between_bands(fire):
    """Consecutive groups of one layer do not upload the same weights again."""
    program = fire[2]
    blob_lo = min(a for a, _ in program.blobs)
    blob_hi = max(a + len(w) for a, w in program.blobs)
    stem = len(program.layer_steps()["0"])
    plan = plan_staging(program, 2400, first=0, count=stem) if stem >= 2 else None
    if plan is None or len(plan.groups) < 2:
        pytest.skip("the stem is not in two bands here")
    first, second = plan.groups[0], plan.groups[1]
    assert any(s < blob_hi and blob_lo < e for s, e in first.uploads)
    assert not any(s < blob_hi and blob_lo < e for s, e in second.uploads)


def test_traffic_matches_what_moves(fire):
    """The byte-count model equals the bytes the staged run moves through the board's transport."""
    for words in (3100, 1 << 14):
        staged, _ = run_staged(fire, words, profile=False)
        t = traffic(plan_staging(fire[2], words, profile=False))
        assert (t.payload_up, t.payload_down) == (staged.bytes_up, staged.bytes_down)
        assert t.wire_up > t.payload_up and t.frames >= 2 * len(plan_staging(fire[2], words).groups)
        assert t.seconds(P.DEFAULT_BAUD) == pytest.approx((t.wire_up + t.wire_down) * 10 / P.DEFAULT_BAUD)


def test_too_small_a_board_is_refused_by_name(fire):
    with pytest.raises(StagingError, match=r"step \d+ \(3\.cat"):
        plan_staging(fire[2], 1500)


def test_error_index_is_the_programs(fire):
    """An engine error inside a staged run reports the program's command index and the engine's code."""
    from sw.driver import CommandError
    from sw.staging.commands import _set

    g, x, program, _ = fire
    steps = list(program.steps)
    value = int.from_bytes(steps[1].command, "little")
    steps[1] = dataclasses.replace(steps[1], command=_set(value, Opcode.CONV, "kh", 0).to_bytes(64, "little"))
    bad = dataclasses.replace(program, steps=steps)
    staged = StagedTransport(GoldenBackend(CFG, mem_words=3100), bad)
    session = Session(bad, Driver(staged, bad.config, timed=False))
    with pytest.raises(CommandError) as exc:
        session.run_int8(x)
    assert exc.value.index == 1 and exc.value.code == ErrorCode.BAD_KERNEL
    assert staged.read_reg(Reg.STATUS) & Status.ERROR


def test_convolution_in_sub_bands_bit_exact():
    """A convolution band too big for the board runs in sub-bands of output rows, its weights staying put."""
    import torch
    from torch import nn

    from quant.quantize import quantize_model
    from sw.staging.commands import _get

    gen = torch.Generator().manual_seed(6)
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()).eval()
    g = quantize_model(model, torch.rand((4, 8, 20, 20), generator=gen))
    x = np.asarray(golden.quantize_input(torch.rand((1, 8, 20, 20), generator=gen), g.qparams(g.inputs[0])))
    program = compile_graph(g, program_config(CFG))
    words = 1200
    plan = plan_staging(program, words)
    heights = [_get(int.from_bytes(u.command, "little"), Opcode.CONV, "out_h") for gr in plan.groups for u in gr.units]
    couts = {_get(int.from_bytes(u.command, "little"), Opcode.CONV, "cout") for gr in plan.groups for u in gr.units}
    assert len(heights) > 1 and sum(heights) == 20 and couts == {8}
    blob = program.blobs[0][0]
    assert sum(any(s <= blob < e for s, e in gr.uploads) for gr in plan.groups) == 1, "weights uploaded once"
    run_staged((g, x, program, golden.run(g, x)), words)


def test_pooled_load_and_layer_by_layer_runs_bit_exact():
    """A convolution reading through a max pool (its load reads more rows than the pooled band), run whole and
    one layer at a time (sw.runtime.run_network): every layer exact."""
    import torch
    from torch import nn

    from quant.quantize import quantize_model
    from sw.runtime import run_network

    gen = torch.Generator().manual_seed(8)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Conv2d(8, 12, 3, padding=1),
                          nn.ReLU()).eval()
    g = quantize_model(model, torch.rand((4, 3, 26, 26), generator=gen))
    x = np.asarray(golden.quantize_input(torch.rand((1, 3, 26, 26), generator=gen), g.qparams(g.inputs[0])))
    program = compile_graph(g, program_config(CFG))
    assert any(unpack_command(s.command)[1].load.pool for s in program.steps), "no pool-on-load in this program"
    ref = golden.run(g, x)
    for words in (1500, 1 << 14):
        run_staged((g, x, program, ref), words)
        staged = StagedTransport(GoldenBackend(CFG, mem_words=words), program)
        session = Session(program, Driver(staged, program.config, timed=False))
        r = run_network(session, x, reference=ref)
        assert all(r.exact.values()), r.first_mismatch
