"""Kernels up to 7x7 (1xK, Kx1), strides up to 4 and asymmetric padding through the whole software path:
capture (zero pads folded into the next convolution), quantization, compilation and the golden machine,
exact against ``quant.golden.run`` on every stored tensor."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hw.isa import EngineConfig, Opcode, unpack_command
from quant import golden
from quant.graph import UnsupportedModelError, capture
from quant.quantize import quantize_model
from sw.compiler import compile_graph

from .test_compiler import _check_all_tensors


class _TfSame(nn.Module):
    """A TensorFlow-style network: SAME padding written as explicit pads before valid convolutions."""

    def __init__(self):
        super().__init__()
        self.pad1 = nn.ZeroPad2d((2, 3, 2, 3))          # 7x7/2 SAME on an even input: more after
        self.conv1 = nn.Conv2d(3, 16, 7, stride=2)
        self.conv2 = nn.Conv2d(16, 24, (1, 3))
        self.conv3 = nn.Conv2d(24, 24, (3, 1), padding=(1, 0))
        self.pad4 = nn.ConstantPad2d((0, 1, 0, 1), 0.0)
        self.conv4 = nn.Conv2d(24, 32, 3, stride=2)
        self.conv5 = nn.Conv2d(32, 16, 5, stride=3, padding=2)
        self.conv6 = nn.Conv2d(16, 8, 4, stride=4)

    def forward(self, x):
        x = F.relu(self.conv1(self.pad1(x)))
        x = F.relu(self.conv2(F.pad(x, (1, 1))))         # F.pad on the width only
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(self.pad4(x)))
        x = F.relu(self.conv5(x))
        return self.conv6(F.pad(F.pad(x, (0, 1, 0, 0)), (0, 0, 1, 0)))   # two pads add up


def _quantized(model, shape, seed=0):
    torch.manual_seed(seed)
    calib = torch.randn(4, *shape)
    qg = quantize_model(model.eval(), calib)
    return qg, golden.quantize_input(calib[:1], qg.qparams(qg.inputs[0]))


def test_pads_fold_into_the_next_convolution():
    g = capture(_TfSame().eval(), (3, 32, 30))
    pads = {c.name: c.padding for c in g.convs()}
    assert pads == {"conv1": (2, 2, 3, 3), "conv2": (0, 1, 0, 1), "conv3": (1, 0, 1, 0), "conv4": (0, 0, 1, 1),
                    "conv5": (2, 2, 2, 2), "conv6": (1, 0, 0, 1)}
    assert [type(n).__name__ for n in g.nodes].count("Conv") == len(g.nodes) - 1  # no pad node left


def test_folded_pads_equal_the_float_model():
    """The captured graph with pads folded computes what the PyTorch model computes (float)."""
    from quant.graph import run_float

    model = _TfSame().eval()
    x = torch.randn(1, 3, 32, 30)
    g = capture(model, (3, 32, 30))
    got = run_float(g, x)[g.outputs[0]]
    with torch.no_grad():
        want = model(x)
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())


@pytest.mark.parametrize("cfg", [EngineConfig(), EngineConfig(rows=2, cols=4, ibuf_depth=1024, acc_depth=16)],
                         ids=["8x16", "2x4-small-buffer"])
def test_tf_same_network_compiles_and_is_exact(cfg):
    qg, x_q = _quantized(_TfSame(), (3, 32, 30))
    prog = compile_graph(qg, cfg, reuse_memory=False)
    names = _check_all_tensors(qg, prog, x_q)
    assert {"conv1", "conv2", "conv3", "conv4", "conv5", "conv6"} <= set(names)
    kernels = set()
    for s in prog.steps:
        op, c = unpack_command(s.command)
        if op == Opcode.CONV:
            kernels.add((c.kh, c.kw, c.sy, c.sx))
    # conv1 runs pixel-pair packed (7x4 kernel, stride 1 across) on the 8-row array
    assert {(1, 3, 1, 1), (3, 1, 1, 1), (3, 3, 2, 2), (5, 5, 3, 3), (4, 4, 4, 4)} <= kernels
    assert ((7, 4, 2, 1) if cfg.rows >= 6 else (7, 7, 2, 2)) in kernels


def test_squeezenet10_stem_packed_and_banded():
    """A 7x7/2 conv with 3 inputs and 96 filters (SqueezeNet 1.0's conv1) and its max pool, small buffer:
    many bands, the packed input, exact."""
    model = nn.Sequential(nn.Conv2d(3, 96, 7, stride=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                          nn.Conv2d(96, 16, 1), nn.ReLU())
    qg, x_q = _quantized(model, (3, 61, 57), seed=3)
    prog = compile_graph(qg, EngineConfig(ibuf_depth=1024), reuse_memory=False)
    _check_all_tensors(qg, prog, x_q)
    conv1 = [s for s in prog.steps if s.layer == "0"]
    assert len(conv1) > 1 and all("packed" in s.detail for s in conv1)


@pytest.mark.parametrize("model,match", [
    (nn.Sequential(nn.ConstantPad2d(1, 0.5), nn.Conv2d(3, 8, 3)), r"^layer 0: pad mode 'constant' value 0.5"),
    (nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(2)), r"^layer 0: a zero pad is supported only as the input "
                                                       r"of a convolution .* read by layer 1"),
    (nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 8, 3)), r"^layer 0: module ReflectionPad2d is not supported"),
], ids=["nonzero-value", "pad-before-pool", "reflection"])
def test_pads_that_cannot_fold_are_refused_by_name(model, match):
    with pytest.raises(UnsupportedModelError, match=match):
        capture(model.eval(), (3, 8, 8))


class _Shortcuts(nn.Module):
    """Adds the dual convolution could not take before: an identity shortcut, a 1x1 + 3x3 pair, a chain."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 16, 1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.c = nn.Conv2d(16, 16, 3, padding=2, dilation=2)
        self.d = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = torch.relu(self.a(x) + x)                 # identity shortcut
        z = torch.relu(self.b(y) + self.d(y))         # 3x3 + 1x1: the 1x1's output through an identity
        return self.c(z) + z                          # identity in a dilated 3x3's geometry


def test_identity_shortcuts_run_as_dual_convolutions():
    model = _Shortcuts().eval()
    g = capture(model, (3, 12, 10))
    idents = [n for n in g.nodes if n.name.endswith(".identity")]
    assert [n.name for n in idents] == ["add_1.identity"] and idents[0].inputs == ("d",)
    assert idents[0].weight[3, 3, 1, 1] == 1.0 and np.count_nonzero(idents[0].weight) == 16
    # conv(x) + x: the identity joins the convolution's own weights, at the tap reading the pixel itself
    c = g["add_2"]
    assert type(c).__name__ == "Conv" and c.folded[-1] == "add_2" and c.kernel_size == (3, 3)
    w = model.c.weight.detach().double().numpy()
    np.testing.assert_allclose(c.weight[:, :, 1, 1] - w[:, :, 1, 1], np.eye(16))
    assert g["add"].relu and g["add"].kernel_size == (1, 1)
    from quant.graph import run_float

    x = torch.randn(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.allclose(run_float(g, x)[g.outputs[0]], model(x), atol=1e-5)
    qg, x_q = _quantized(model, (3, 12, 10), seed=5)
    prog = compile_graph(qg, EngineConfig(rows=4, cols=8, ibuf_depth=512, acc_depth=32), reuse_memory=False)
    _check_all_tensors(qg, prog, x_q)


def test_depthwise_relu6_network_is_exact_and_close_to_float():
    """Depthwise 3x3 and 5x5 (stride 1 and 2) with ReLU6 (nn.ReLU6, F.relu6, Hardtanh(0, 6)) captured as
    depthwise convolutions with the clamp [zp, zp + 6/s]; every tensor exact on the golden machine."""
    model = nn.Sequential(nn.Conv2d(3, 24, 3, stride=2, padding=1), nn.ReLU6(),
                          nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.Hardtanh(0.0, 6.0),
                          nn.Conv2d(24, 40, 1), nn.ReLU6(),
                          nn.Conv2d(40, 40, 5, stride=2, padding=2, groups=40), nn.ReLU6(),
                          nn.Conv2d(40, 16, 1)).eval()
    g = capture(model, (3, 23, 21))
    assert [c.depthwise for c in g.convs()] == [False, True, False, True, False]
    assert [c.relu6 for c in g.convs()] == [True, True, True, True, False]
    torch.manual_seed(9)
    calib = 8 * torch.randn(4, 3, 23, 21)     # large enough for the 6 to clamp
    qg = quantize_model(model, calib)
    x_q = golden.quantize_input(calib[:1], qg.qparams(qg.inputs[0]))
    dw = [n for n in qg.convs() if n.depthwise]
    assert all(n.act_max == min(127, n.zp_out + round(6 / n.s_out)) and n.act_min == n.zp_out for n in dw)
    # the clamp binds: calibrated through ReLU6, the int8 range ends at 6 (the clamp is then the range itself)
    tops = [n.s_out * (n.act_max - n.zp_out) for n in qg.convs()[:4]]
    assert max(tops) < 6.0 + 1e-6 and sum(abs(t - 6.0) < 1e-6 for t in tops) >= 2, tops
    for cfg in (EngineConfig(), EngineConfig(rows=2, cols=4, ibuf_depth=256, acc_depth=16)):
        prog = compile_graph(qg, cfg, reuse_memory=False)
        _check_all_tensors(qg, prog, x_q)
        assert sum(1 for s in prog.steps if s.detail.startswith("dw")) >= 40 // cfg.cols * 2
    with torch.no_grad():
        want = model(calib[:1])
    got = golden.infer(qg, calib[:1])[0]
    assert float((got - want).abs().max()) < 0.1 * float(want.abs().max())
