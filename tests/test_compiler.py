"""The scheduler: exact on the golden machine, adapting to buffer sizes, refusing what the engine cannot run."""

import numpy as np
import pytest
import torch
from torch import nn

from hw.isa import EngineConfig, Opcode, unpack_command
from quant import golden
from quant.graph import UnsupportedModelError
from quant.quantize import quantize_model
from sw.backends.golden import GoldenBackend
from sw.compiler import CompileError, compile_graph
from sw.driver import Driver
from sw.runtime import Session


def _run_program_golden(prog, x_q, read=()):
    with GoldenBackend(prog.config, mem_words=prog.mem_words) as t:
        s = Session(prog, Driver(t, prog.config, timed=False))
        return s.run_int8(x_q, read=list(read)).tensors


def _check_all_tensors(qg, prog, x_q):
    ref = golden.run(qg, x_q)
    names = [n for n in prog.views if n in ref and n not in prog.inputs]
    got = _run_program_golden(prog, x_q, read=names)
    bad = {n: int((got[n] != ref[n]).sum()) for n in names if not np.array_equal(got[n], ref[n])}
    assert not bad, f"tensors that differ from quant.golden.run (count of differing values): {bad}"
    return names


@pytest.mark.shared
def test_squeezenet_program_equals_golden_model(q_squeezenet_imagenet, shared):
    """Every stored tensor of the whole network, run as commands by the golden machine, equals golden.run."""
    from sw.shared import imagenet_preprocess

    qg = q_squeezenet_imagenet
    x = golden.quantize_input(imagenet_preprocess(shared / "images/coco_dog.jpg"), qg.qparams(qg.inputs[0]))
    prog = compile_graph(qg, EngineConfig(), reuse_memory=False)
    names = _check_all_tensors(qg, prog, x)
    assert len(names) >= 11  # conv1, eight Fire modules, conv10, the average pool
    kinds = {s.kind for s in prog.steps}
    assert kinds == {"conv", "fire", "gap"}  # every pool fused into the next layer's load
    conv_macs = sum(int(np.prod(n.shape)) * n.weight[0].size for n in qg.convs())
    assert sum(s.macs for s in prog.steps) == conv_macs  # bands cover each layer exactly once
    assert 349e6 < conv_macs < 350e6  # the figure for SqueezeNet 1.1 at 224x224


@pytest.mark.shared
@pytest.mark.parametrize("cfg", [
    EngineConfig(rows=4, cols=8, ibuf_depth=4096, acc_depth=64),
    EngineConfig(rows=16, cols=16, ibuf_depth=2048, acc_depth=128, pool_max_cb=64),
    EngineConfig(rows=2, cols=2, ibuf_depth=8192, acc_depth=16, pool_max_cb=256),
], ids=["4x8-ibuf4k", "16x16-ibuf2k", "2x2"])
def test_schedule_adapts_to_the_configuration(q_squeezenet_imagenet, shared, cfg):
    """Other array sizes and buffers: other bands, the same bits."""
    from sw.shared import imagenet_preprocess

    qg = q_squeezenet_imagenet
    x = golden.quantize_input(imagenet_preprocess(shared / "images/coco_cat.jpg"), qg.qparams(qg.inputs[0]))
    prog = compile_graph(qg, cfg)
    default = compile_graph(qg, EngineConfig())
    assert len(prog.steps) != len(default.steps) or cfg.rows != 8  # the tiling really changed
    got = _run_program_golden(prog, x)
    ref = golden.run(qg, x)
    for name, v in got.items():
        assert np.array_equal(v, ref[name]), f"{name} differs on {cfg}"
    for s in prog.steps:  # every band fits the configured buffer
        op, c = unpack_command(s.command)
        assert op in (Opcode.CONV, Opcode.FIRE, Opcode.GAP, Opcode.POOL)


def test_memory_reuse_keeps_outputs(rng):
    """With region reuse the outputs are still exact, and the footprint is smaller."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(16, 24, 1), nn.ReLU(), nn.Conv2d(24, 8, 3, padding=1)).eval()
    calib = torch.randn(4, 3, 20, 20)
    qg = quantize_model(model, calib)
    x_q = golden.quantize_input(calib[:1], qg.qparams(qg.inputs[0]))
    reuse = compile_graph(qg, EngineConfig())
    keep = compile_graph(qg, EngineConfig(), reuse_memory=False)
    assert reuse.mem_words < keep.mem_words
    ref = golden.run(qg, x_q)
    for prog in (reuse, keep):
        out = _run_program_golden(prog, x_q)
        for name, v in out.items():
            assert np.array_equal(v, ref[name])


class _Residual(nn.Module):
    """An RFB-like tail: relu(conv_a(cat(b1, b2)) * 0.5 + conv_b(x)) with a pooled input, concat and add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 3, padding=2, dilation=2))
        self.b2 = nn.Sequential(nn.Conv2d(16, 8, 1), nn.Conv2d(8, 8, 3, padding=3, dilation=3))
        self.lin = nn.Conv2d(24, 16, 1)
        self.short = nn.Conv2d(16, 16, 1)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.head = nn.Conv2d(16, 6, 3, padding=1)

    def forward(self, x):
        x = self.stem(x)
        y = torch.relu(self.lin(torch.cat([self.b1(x), self.b2(x)], 1)) * 0.5 + self.short(x))
        return self.head(self.pool(y))


def test_residual_concat_dilation_network_is_exact():
    torch.manual_seed(0)
    model = _Residual().eval()
    calib = torch.randn(4, 3, 15, 13)
    qg = quantize_model(model, calib)
    x_q = golden.quantize_input(calib[:1], qg.qparams(qg.inputs[0]))
    prog = compile_graph(qg, EngineConfig(rows=4, cols=8, ibuf_depth=512, acc_depth=32), reuse_memory=False)
    _check_all_tensors(qg, prog, x_q)
    assert any(s.kind == "conv" and "+pool2x2" in s.detail for s in prog.steps)


def _compile(model, shape=(3, 16, 16), cfg=None):
    qg = quantize_model(model.eval(), torch.randn(2, *shape))
    return compile_graph(qg, cfg or EngineConfig())


@pytest.mark.parametrize("model,layer,reason", [
    (nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, (3, 9))), "2", "3x9 kernel"),
    (nn.Sequential(nn.Conv2d(3, 8, 3, stride=5)), "0", "stride"),
    (nn.Sequential(nn.Conv2d(3, 8, 3, dilation=(1, 2))), "0", "dilation"),
    (nn.Sequential(nn.Conv2d(3, 8, 3, padding=8)), "0", "padding"),
    (nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 8, 3, padding=7)), "1", "padding"),
    (nn.Sequential(nn.Conv2d(3, 8, 3), nn.MaxPool2d(3, stride=1), nn.Conv2d(8, 8, 1)), "1", "stride"),
    (nn.Sequential(nn.Conv2d(3, 4100, 1)), "0", "4100 output channels"),
], ids=["3x9", "stride5", "dilation-unequal", "padding8", "pad-plus-padding8", "maxpool-stride1", "too-many-channels"])
def test_unsupported_layers_are_refused_by_name(model, layer, reason):
    with pytest.raises(CompileError) as e:
        _compile(model)
    assert e.value.layer == layer, str(e.value)
    assert reason in e.value.reason, str(e.value)
    assert str(e.value).startswith(f"layer {layer!r}: ")


def test_grouped_conv_is_refused():
    """Refused when the graph is captured, before quantization: the message names the module."""
    with pytest.raises(UnsupportedModelError, match=r"^layer 0: grouped convolution \(groups=2\)"):
        _compile(nn.Sequential(nn.Conv2d(4, 8, 3, groups=2)), shape=(4, 8, 8))


def test_sigmoid_in_the_middle_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sigmoid(), nn.Conv2d(8, 8, 3))
    with pytest.raises(UnsupportedModelError, match=r"^layer 1: module Sigmoid is not supported"):
        _compile(model)


def test_a_row_that_does_not_fit_the_buffer_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
    with pytest.raises(CompileError, match="'2'.*buffer words"):
        _compile(model, shape=(3, 8, 300), cfg=EngineConfig(ibuf_depth=1024))
