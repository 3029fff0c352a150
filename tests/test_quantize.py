"""Float model, BatchNorm folding, graph capture, calibration and the quantizer.

Expected values come from DATA.md (SqueezeNet outputs and top-1 classes), from
PyTorch itself (float forward passes, forward hooks) or from the formulas of
the quantization scheme recomputed here.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quant import golden
from quant.arith import multiplier_to_float
from quant.calibrate import QParams, calibrate, qparam_groups, qparams_from_range
from quant.fold import fold_bn, fold_conv_bn
from quant.graph import (
    Add,
    Concat,
    Conv,
    Flatten,
    GlobalAvgPool,
    HostOp,
    MaxPool,
    UnsupportedModelError,
    capture,
    run_float,
)
from quant.quantize import MAX_MULTIPLIER, QConcat, QConv, QDualConv, quantize, quantize_model
from sw.models.squeezenet import Fire
from sw.shared import imagenet_preprocess, shared_path, skip_without_shared

# --- synthetic models --------------------------------------------------------------------------


def _randomize_bn(bn: nn.BatchNorm2d, g: torch.Generator) -> None:
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        if bn.affine:
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.2)


class TinyFireNet(nn.Module):
    """conv+BN+ReLU, max pool (ceil), one Fire module, dropout, 1x1 conv + ReLU, global average, flatten."""

    def __init__(self, g: torch.Generator):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.fire = Fire(8, 4, 8, 8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Conv2d(16, 10, 1)
        self.head_relu = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        _randomize_bn(self.bn, g)

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.stem(x))))
        x = self.head_relu(self.head(self.drop(self.fire(x))))
        return torch.flatten(self.gap(x), 1)


class BasicConv(nn.Module):
    """Conv2d without bias + BatchNorm2d (+ ReLU): the RFB building block."""

    def __init__(self, cin, cout, k, padding=0, dilation=1, relu=True, g=None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)
        self.relu = nn.ReLU(inplace=True) if relu else None
        _randomize_bn(self.bn, g)

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.relu is not None:
            x = self.relu(x)
        return x


class MiniRFB(nn.Module):
    """Two dilated branches, concat, linear 1x1, shortcut 1x1, ``relu(linear * scale + shortcut)``."""

    def __init__(self, g, scale=0.7):
        super().__init__()
        self.scale = scale
        self.stem = BasicConv(3, 8, 3, padding=1, g=g)
        self.branch0 = nn.Sequential(BasicConv(8, 4, 1, relu=False, g=g),
                                     BasicConv(4, 4, 3, 1, relu=False, g=g))
        self.branch1 = nn.Sequential(BasicConv(8, 4, 1, relu=False, g=g),
                                     BasicConv(4, 6, 3, padding=2, dilation=2, relu=False, g=g))
        self.ConvLinear = BasicConv(10, 8, 1, relu=False, g=g)
        self.shortcut = BasicConv(8, 8, 1, relu=False, g=g)
        self.out_relu = nn.ReLU(inplace=False)

    def forward(self, x):
        x = self.stem(x)
        out = torch.cat((self.branch0(x), self.branch1(x)), 1)
        out = self.ConvLinear(out)
        short = self.shortcut(x)
        out = out * self.scale + short
        return self.out_relu(out)


class TinySSDTail(nn.Module):
    """Two feature maps with loc/conf heads whose outputs are permuted, viewed, concatenated, softmaxed."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.loc = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)])
        self.conf = nn.ModuleList([nn.Conv2d(8, 4, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)])

    def forward(self, x):
        f1 = self.body(x)
        f2 = self.down(f1)
        loc, conf = [], []
        for f, lc, cf in zip((f1, f2), self.loc, self.conf, strict=True):
            loc.append(lc(f).permute(0, 2, 3, 1).contiguous())
            conf.append(cf(f).permute(0, 2, 3, 1).contiguous())
        loc = torch.cat([o.view(o.size(0), -1) for o in loc], 1)
        conf = torch.cat([o.view(o.size(0), -1) for o in conf], 1)
        return loc.view(loc.size(0), -1, 4), F.softmax(conf.view(conf.size(0), -1, 2), dim=-1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(7)


def _hooked_ranges(model: nn.Module, x: torch.Tensor, modules: dict[str, str]) -> dict:
    """Min/max of module outputs via forward hooks (an independent view of the float tensors)."""
    out, handles = {}, []
    named = dict(model.named_modules())
    for key, path in modules.items():
        def hook(_m, _i, y, key=key):
            out[key] = (float(y.min()), float(y.max()))
        handles.append(named[path].register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


# --- the float SqueezeNet -----------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize("i", [0, 1, 2])
def test_squeezenet_reproduces_onnx_test_sets(squeezenet, i):
    d = f"models/squeezenet1_1/test_data_set_{i}"
    skip_without_shared(f"{d}/input_0.npy", f"{d}/output_0.npy")
    x = torch.from_numpy(np.load(shared_path(d, "input_0.npy")))
    want = np.load(shared_path(d, "output_0.npy"))
    with torch.no_grad():
        got = squeezenet(x).numpy()
    assert got.shape == (1, 1000)
    assert np.abs(got - want).max() < 1e-3
    assert got.argmax() == 490 == want.argmax()


@pytest.mark.shared
@pytest.mark.parametrize("image,label,softmax", [("coco_cat.jpg", 282, 0.55), ("coco_dog.jpg", 163, 0.36)])
def test_squeezenet_top1_on_photos(squeezenet, image, label, softmax):
    skip_without_shared(f"images/{image}")
    with torch.no_grad():
        p = squeezenet(imagenet_preprocess(shared_path("images", image))).softmax(1)[0]
    assert int(p.argmax()) == label
    assert abs(float(p.max()) - softmax) < 0.006  # DATA.md quotes two decimals


@pytest.mark.shared
def test_imagenet_labels_match_data_md():
    skip_without_shared("images/imagenet_labels.txt")
    from sw.shared import imagenet_labels

    labels = imagenet_labels()
    assert "tiger" in labels[282] and "cat" in labels[282]
    assert labels[163] == "bloodhound"


def test_shared_dir_env_override(tmp_path, monkeypatch):
    from sw import shared

    monkeypatch.setenv(shared.ENV_VAR, str(tmp_path))
    assert shared.shared_dir() == tmp_path.resolve()
    with pytest.raises(FileNotFoundError, match="KINDLING_SHARED"):
        shared.require_shared("models/nothing_here")


# --- BatchNorm folding ------------------------------------------------------------------------


@pytest.mark.parametrize("bias,affine", [(True, True), (False, True), (False, False)])
def test_fold_conv_bn_matches_float_bn(gen, bias, affine):
    conv = nn.Conv2d(5, 7, 3, stride=2, padding=1, dilation=1, bias=bias)
    bn = nn.BatchNorm2d(7, eps=1e-3, affine=affine)
    _randomize_bn(bn, gen)
    seq = nn.Sequential(conv, bn).eval()
    x = torch.randn(2, 5, 9, 9, generator=gen)
    folded = fold_conv_bn(conv, bn)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), seq(x), atol=1e-5, rtol=1e-5)


def test_fold_bn_formula_and_errors():
    w = np.ones((2, 1, 1, 1))
    wf, bf = fold_bn(w, [1.0, 2.0], mean=[1.0, 0.0], var=[3.0, 0.0], gamma=[2.0, 1.0], beta=[0.5, -1.0],
                     eps=1.0)
    # k = gamma / sqrt(var + eps) = (1, 1): W' = W, b' = (b - mean) * k + beta = (0.5, 1).
    np.testing.assert_allclose(wf.reshape(-1), [1.0, 1.0])
    np.testing.assert_allclose(bf, [0.5, 1.0])
    with pytest.raises(ValueError, match="shape"):
        fold_bn(w, None, [0.0], [1.0], None, None, 1e-5)
    with pytest.raises(ValueError, match="negative"):
        fold_bn(w, None, [0.0, 0.0], [1.0, -1.0], None, None, 1e-5)


# --- capture ----------------------------------------------------------------------------------


def test_capture_tiny_fire_net(gen):
    model = TinyFireNet(gen).eval()
    g = capture(model, (3, 33, 33))
    ops = [(n.name, n.op) for n in g]
    assert ops == [("x", "input"), ("stem", "conv"), ("pool", "maxpool"), ("fire.squeeze", "conv"),
                   ("fire.expand1x1", "conv"), ("fire.expand3x3", "conv"), ("fire.cat", "concat"),
                   ("head", "conv"), ("gap", "gap"), ("flatten", "flatten")]
    stem = g["stem"]
    assert isinstance(stem, Conv) and stem.relu and stem.folded == ("bn", "relu")
    assert (stem.in_channels, stem.out_channels, stem.kernel_size) == (3, 8, (3, 3))
    assert stem.stride == (2, 2) and stem.padding == (0, 0, 0, 0) and stem.dilation == (1, 1)
    assert stem.in_shape == (3, 33, 33) and stem.shape == (8, 16, 16)
    pool = g["pool"]
    assert isinstance(pool, MaxPool) and pool.ceil_mode and pool.shape == (8, 8, 8)
    assert g["fire.expand3x3"].padding == (1, 1, 1, 1)
    assert isinstance(g["fire.cat"], Concat) and g["fire.cat"].inputs == ("fire.expand1x1", "fire.expand3x3")
    assert isinstance(g["gap"], GlobalAvgPool) and isinstance(g["flatten"], Flatten)
    assert g.outputs == ["flatten"] and g["flatten"].shape == (10,)
    x = torch.randn(3, 3, 33, 33, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(run_float(g, x)["flatten"], model(x), atol=1e-5, rtol=1e-5)


def test_capture_rfb_add_folds_scale(gen):
    model = MiniRFB(gen).eval()
    g = capture(model, (3, 12, 12))
    add = [n for n in g if isinstance(n, Add)]
    assert len(add) == 1 and add[0].relu
    lin, short = (g[i] for i in add[0].inputs)
    assert (lin.name, short.name) == ("ConvLinear.conv", "shortcut.conv")
    # The 0.7 went into ConvLinear: its folded weights are 0.7 x (BN-folded weights).
    bn = model.ConvLinear.bn
    w_bn, _ = fold_bn(model.ConvLinear.conv.weight, None, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                      bn.eps)
    np.testing.assert_allclose(lin.weight, 0.7 * w_bn, rtol=1e-12)
    assert g["branch1.1.conv"].dilation == (2, 2) and g["branch1.1.conv"].padding == (2, 2, 2, 2)
    x = torch.randn(2, 3, 12, 12, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(run_float(g, x)[g.outputs[0]], model(x), atol=1e-5, rtol=1e-5)


def test_capture_host_tail(gen):
    model = TinySSDTail().eval()
    g = capture(model, (3, 8, 8))
    hosts = {n.name for n in g if isinstance(n, HostOp)}
    assert {g[n].target for n in hosts} >= {"permute", "view", "size", torch.cat, F.softmax}
    # Host ops only feed host ops: the integer part of the graph never waits for the host.
    assert all(isinstance(c, HostOp) for h in hosts for c in g.consumers(h))
    assert all(o in hosts for o in g.outputs)
    assert {n.op for n in g if not isinstance(n, HostOp)} == {"input", "conv"}
    x = torch.randn(1, 3, 8, 8, generator=gen)
    vals = run_float(g, x)
    with torch.no_grad():
        want = model(x)
    for name, w in zip(g.outputs, want, strict=True):
        torch.testing.assert_close(vals[name], w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fn", [lambda x: x.mean((2, 3), keepdim=True),
                                lambda x: torch.mean(x, (-1, -2), True),
                                lambda x: F.avg_pool2d(x, 5), lambda x: F.adaptive_avg_pool2d(x, 1)],
                         ids=["method", "function", "avg_pool2d", "adaptive"])
def test_capture_global_average_forms(fn):
    model = _Wrap(lambda s, x: fn(s.c(x)), c=nn.Conv2d(4, 6, 3, padding=1)).eval()
    g = capture(model, (4, 5, 5))
    assert [n.op for n in g] == ["input", "conv", "gap"] and g.nodes[-1].shape == (6, 1, 1)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(run_float(g, x)[g.outputs[0]], model(x))


class _Wrap(nn.Module):
    def __init__(self, fn, **mods):
        super().__init__()
        self.fn = fn
        for k, v in mods.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.fn(self, x)


@pytest.mark.parametrize("model,match", [
    (_Wrap(lambda s, x: s.c(x), c=nn.Conv2d(4, 4, 3, groups=2)), "grouped convolution"),
    (_Wrap(lambda s, x: torch.sigmoid(s.c(x)), c=nn.Conv2d(4, 4, 1)), "sigmoid"),
    (_Wrap(lambda s, x: s.c(x) * s.d(x), c=nn.Conv2d(4, 4, 1), d=nn.Conv2d(4, 4, 1)),
     "multiplication by a tensor"),
    (_Wrap(lambda s, x: s.c(x) + 1.0, c=nn.Conv2d(4, 4, 1)), "constant"),
    (_Wrap(lambda s, x: s.c(x).view(1, -1, 4, 2).relu(), c=nn.Conv2d(4, 4, 1)), "view"),
    (_Wrap(lambda s, x: s.b(s.r(s.c(x))), c=nn.Conv2d(4, 4, 1), r=nn.ReLU(), b=nn.BatchNorm2d(4)),
     "BatchNorm2d"),
    (_Wrap(lambda s, x: torch.relu(s.c(x)) + torch.relu(s.d(x)), c=nn.Conv2d(4, 4, 1), d=nn.Conv2d(4, 4, 1)),
     "operand"),
    (_Wrap(lambda s, x: torch.cat([s.c(x), s.c(x) + s.d(x)], 1), c=nn.Conv2d(4, 4, 1), d=nn.Conv2d(4, 4, 1)),
     "called twice"),
    (_Wrap(lambda s, x: s.c(x) + s.d(x), c=nn.Conv2d(4, 4, 3, stride=2, padding=1), d=nn.Conv2d(4, 4, 1, stride=2)),
     "same kernel"),
    (_Wrap(lambda s, x: s.p(x), p=nn.AdaptiveAvgPool2d(2)), "adaptive average pool"),
    (_Wrap(lambda s, x: s.c(x), c=nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")), "padding_mode"),
    (_Wrap(lambda s, x: s.r(x), r=nn.ReLU()), "ReLU on input"),
    (_Wrap(lambda s, x: s.c(x).mean((2, 3)), c=nn.Conv2d(4, 4, 1)), "keepdim"),
    (_Wrap(lambda s, x: F.avg_pool2d(s.c(x), 2), c=nn.Conv2d(4, 4, 1)), "whole map"),
])
def test_capture_rejects_unsupported(model, match):
    with pytest.raises(UnsupportedModelError, match=match):
        capture(model.eval(), (4, 8, 8))


def test_capture_requires_eval_mode(gen):
    with pytest.raises(ValueError, match="training mode"):
        capture(TinyFireNet(gen), (3, 33, 33))


# --- calibration ------------------------------------------------------------------------------


def test_qparams_from_range_formula():
    # Hand-computed: [-1, 3] -> scale 4/255, zp = round(-128 + 1 / (4/255)) = round(-64.25) = -64.
    qp = qparams_from_range(-1.0, 3.0)
    assert qp.scale == pytest.approx(4 / 255) and qp.zero_point == -64
    # A ReLU output: min 0 -> zp -128, real 0 exactly representable.
    qp = qparams_from_range(0.0, 5.1)
    assert qp == QParams(5.1 / 255, -128)
    # 0 is always included.
    assert qparams_from_range(2.0, 5.1) == QParams(5.1 / 255, -128)
    assert qparams_from_range(-2.55, -1.0) == QParams(2.55 / 255, 127)
    assert qparams_from_range(0.0, 0.0) == QParams(1.0, -128)
    with pytest.raises(ValueError):
        qparams_from_range(1.0, -1.0)


def test_calibrate_records_min_max(gen):
    model = TinyFireNet(gen).eval()
    g = capture(model, (3, 33, 33))
    x = torch.randn(4, 3, 33, 33, generator=gen)
    ranges = calibrate(g, [x[:2], x[2:]])
    hooked = _hooked_ranges(model, x, {"stem": "relu", "fire.expand1x1": "fire.expand1x1_activation",
                                       "head": "head_relu", "gap": "gap"})
    for name, (lo, hi) in hooked.items():
        assert ranges[name] == pytest.approx((lo, hi), rel=1e-5, abs=1e-6), name
    assert ranges["x"] == pytest.approx((float(x.min()), float(x.max())))


def test_qparam_groups_fire(gen):
    g = capture(TinyFireNet(gen).eval(), (3, 33, 33))
    groups = {frozenset(gr) for gr in qparam_groups(g)}
    assert frozenset({"stem", "pool"}) in groups
    assert frozenset({"fire.expand1x1", "fire.expand3x3", "fire.cat"}) in groups
    assert frozenset({"head", "gap", "flatten"}) in groups
    assert frozenset({"fire.squeeze"}) in groups


# --- the quantizer ----------------------------------------------------------------------------


def _lsb_error(q, model, x, out_name):
    """|golden (dequantized) - float| in units of the output scale."""
    with torch.no_grad():
        want = model(x)
    got = golden.infer(q, x)[q.outputs.index(out_name)]
    return ((got - want).abs() / q.qparams(out_name).scale).numpy()


def test_quantize_tiny_fire_net(gen):
    model = TinyFireNet(gen).eval()
    # The evaluated input is part of the calibration batch: no clipping, so the error bound below
    # measures the integer arithmetic, not the calibration set.
    x = torch.randn(1, 3, 33, 33, generator=gen)
    calib = torch.cat([x, torch.randn(7, 3, 33, 33, generator=gen)])
    q = quantize_model(model, calib)
    assert [n.op for n in q] == ["input", "conv", "maxpool", "conv", "conv", "conv", "concat", "conv", "gap",
                                 "flatten"]
    # Concat sharing: both expands write the concat's scale and zero point; max pool keeps its input's.
    assert q.qparams("fire.expand1x1") == q.qparams("fire.expand3x3") == q.qparams("fire.cat")
    assert q.qparams("pool") == q.qparams("stem")
    assert q["fire.cat"].offsets == (0, 8) and isinstance(q["fire.cat"], QConcat)
    assert [f.concat for f in q.fire_modules()] == ["fire.cat"]
    g = capture(model, (3, 33, 33))
    for conv in q.convs():
        fl = g[conv.name]
        # Fused ReLU outputs have min 0: zero point -128 and the clamp starts at it.
        assert conv.relu and conv.zp_out == -128 and conv.act_min == -128
        assert conv.zp_in == q.qparams(conv.inputs[0]).zero_point
        # Symmetric per-channel weights: every channel's largest |w| is 127.
        assert conv.weight.dtype == np.int8
        per_channel_max = np.abs(conv.weight.astype(int)).reshape(conv.out_channels, -1).max(1)
        np.testing.assert_array_equal(per_channel_max, 127)
        s_w = np.abs(fl.weight).reshape(fl.out_channels, -1).max(1) / 127
        s_in = q.qparams(conv.inputs[0]).scale
        np.testing.assert_allclose(conv.acc_scale, s_in * s_w, rtol=1e-12)
        want_w = np.clip(np.round(fl.weight / s_w[:, None, None, None]), -127, 127)
        # Identical up to rounding ties (half away from zero vs numpy's half to even).
        assert np.abs(conv.weight - want_w).max() <= 1 and (conv.weight == want_w).mean() > 0.99
        np.testing.assert_array_equal(conv.bias, np.round(fl.bias / (s_in * s_w)))
        mult = np.array([multiplier_to_float(m, s) for m, s in zip(conv.m0, conv.shift, strict=True)])
        np.testing.assert_allclose(mult, s_in * s_w / q.qparams(conv.name).scale, rtol=2.0 ** -30)
    gap = q["gap"]
    # 33 -> 16 (3x3/2) -> 8 (pool 3/2, ceil): the average runs over 8 * 8 pixels.
    assert multiplier_to_float(gap.m0, gap.shift) == pytest.approx(1 / 64, rel=2.0 ** -30) and gap.count == 64
    # End to end, the dequantized integer network follows the float one to about one output step.
    err = _lsb_error(q, model, x, "flatten")
    assert err.max() < 3 and err.mean() < 1


def test_quantize_rfb_dual_conv(gen):
    model = MiniRFB(gen).eval()
    x = torch.randn(1, 3, 12, 12, generator=gen)
    calib = torch.cat([x, torch.randn(7, 3, 12, 12, generator=gen)])  # no clipping of x (see above)
    g = capture(model, (3, 12, 12))
    q = quantize(g, calibrate(g, [calib]))
    duals = [n for n in q if isinstance(n, QDualConv)]
    assert len(duals) == 1
    d = duals[0]
    assert "ConvLinear.conv" not in q and "shortcut.conv" not in q
    assert d.parts == ("ConvLinear.conv", "shortcut.conv") and d.inputs == ("cat", "stem.conv")
    assert d.weight.shape == (8, 18, 1, 1)
    s_a, s_b = q.qparams("cat").scale, q.qparams("stem.conv").scale
    wa_f, wb_f = g["ConvLinear.conv"].weight, g["shortcut.conv"].weight
    S = np.maximum(s_a * np.abs(wa_f).reshape(8, -1).max(1), s_b * np.abs(wb_f).reshape(8, -1).max(1)) / 127
    np.testing.assert_allclose(d.acc_scale, S, rtol=1e-12)
    both = np.concatenate([np.abs(d.weight_a.astype(int)), np.abs(d.weight_b.astype(int))], 1).reshape(8, -1)
    np.testing.assert_array_equal(both.max(1), 127)
    want_wa = np.round(wa_f * s_a / S[:, None, None, None])
    assert np.abs(d.weight_a - want_wa).max() <= 1
    np.testing.assert_array_equal(d.bias, np.round((g["ConvLinear.conv"].bias + g["shortcut.conv"].bias) / S))
    assert d.relu and d.act_min == d.zp_out == -128
    err = _lsb_error(q, model, x, q.outputs[0])
    assert err.max() < 4 and err.mean() < 1


def test_quantize_widens_output_scale_when_multiplier_would_exceed_one(gen):
    # Channels (x, x + d, 0) with weights (1, -1, 100): the accumulator scale is set by the weight 100 on
    # a channel that is always zero, while the output -d spans a few input steps only, so the calibrated
    # output scale is finer than one accumulator step (multiplier about 40).
    conv = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0, 100.0]).reshape(1, 3, 1, 1))
        conv.bias.zero_()
    model = nn.Sequential(conv).eval()
    x = torch.rand(4, 1, 5, 5, generator=gen)
    x = torch.cat([x, x + 0.02 * torch.rand(4, 1, 5, 5, generator=gen), torch.zeros(4, 1, 5, 5)], 1)
    g = capture(model, (3, 5, 5))
    ranges = calibrate(g, [x])
    s_in = qparams_from_range(*ranges[g.inputs[0]]).scale
    acc = s_in * 100.0 / 127
    assert qparams_from_range(*ranges["0"]).scale < acc / 10  # the situation under test
    q = quantize(g, ranges)
    node = q["0"]
    assert node.shift.min() >= 0 and node.m0.min() >= 2 ** 30
    assert q.qparams("0").scale == pytest.approx(acc / MAX_MULTIPLIER, rel=1e-9)
    assert float(node.multiplier.max()) <= MAX_MULTIPLIER
    # The widened output still requantizes correctly: compare with the real value of the accumulator
    # (computed here in float from the integer operands) divided by the output scale.
    xq = golden.quantize_input(x[:1], q.qparams(g.inputs[0]))
    got = golden.run(q, xq)["0"].astype(np.int64)
    acc = F.conv2d(torch.tensor(xq - node.zp_in, dtype=torch.float64)[None],
                   torch.tensor(node.weight, dtype=torch.float64))[0].numpy() + node.bias[:, None, None]
    want = np.round(acc * node.acc_scale[:, None, None] / q.qparams("0").scale) + node.zp_out
    want = np.clip(want, -128, 127)
    assert np.abs(got - want).max() <= 1
    assert len(np.unique(got)) > 2  # non-trivial outputs


def test_quantize_host_tail_end_to_end(gen):
    model = TinySSDTail().eval()
    x = torch.randn(1, 3, 8, 8, generator=gen)
    q = quantize_model(model, torch.cat([x, torch.randn(5, 3, 8, 8, generator=gen)]))  # no clipping of x
    loc, conf = golden.infer(q, x)
    with torch.no_grad():
        want_loc, want_conf = model(x)
    assert loc.shape == want_loc.shape and conf.shape == want_conf.shape
    scale = max(q.qparams(n).scale for n in ("loc.0", "loc.1"))
    assert (loc - want_loc).abs().max() < 3 * scale
    assert (conf - want_conf).abs().max() < 0.05


def test_quantize_missing_range_is_an_error(gen):
    g = capture(TinyFireNet(gen).eval(), (3, 33, 33))
    ranges = calibrate(g, [torch.randn(1, 3, 33, 33, generator=gen)])
    del ranges["fire.squeeze"]
    with pytest.raises(KeyError, match="fire.squeeze"):
        quantize(g, ranges)


def test_effective_bias_runs_like_the_engine(gen):
    q = quantize_model(TinyFireNet(gen).eval(), torch.randn(4, 3, 33, 33, generator=gen))
    vals = golden.run(q, golden.quantize_input(torch.randn(1, 3, 33, 33, generator=gen), q.qparams("x")))
    for c in q.convs():
        engine = golden.conv2d(vals[c.inputs[0]], c.weight, c.effective_bias, c.m0, c.shift, c.zp_in,
                               c.zp_out, c.act_min, c.act_max, stride=c.stride, padding=c.padding,
                               bias_folded=True)
        np.testing.assert_array_equal(engine, vals[c.name], err_msg=c.name)


# --- quantized SqueezeNet 1.1 -----------------------------------------------------------------


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.reshape(1, -1).double(), b.reshape(1, -1).double()))


@pytest.mark.shared
@pytest.mark.parametrize("image,label", [("coco_cat.jpg", 282), ("coco_dog.jpg", 163)])
def test_quantized_squeezenet_top1_on_photos(squeezenet, q_squeezenet_imagenet, image, label):
    skip_without_shared(f"images/{image}")
    x = imagenet_preprocess(shared_path("images", image))
    t0 = time.perf_counter()
    logits = golden.infer(q_squeezenet_imagenet, x)[0]
    elapsed = time.perf_counter() - t0
    with torch.no_grad():
        ref = squeezenet(x)
    cos = _cosine(logits, ref)
    print(f"{image}: int8 top-1 {int(logits.argmax())}, float top-1 {int(ref.argmax())}, cosine {cos:.5f}, "
          f"golden {elapsed:.2f} s")
    assert int(ref.argmax()) == label
    assert int(logits.argmax()) == label
    assert cos > 0.99
    assert elapsed < 10.0  # the whole golden network, one thread


@pytest.mark.shared
@pytest.mark.parametrize("i", [0, 1, 2])
def test_quantized_squeezenet_onnx_test_sets(q_squeezenet_noise, i):
    d = f"models/squeezenet1_1/test_data_set_{i}"
    skip_without_shared(f"{d}/input_0.npy", f"{d}/output_0.npy")
    x = torch.from_numpy(np.load(shared_path(d, "input_0.npy")))
    ref = torch.from_numpy(np.load(shared_path(d, "output_0.npy")))
    logits = golden.infer(q_squeezenet_noise, x)[0]
    cos = _cosine(logits, ref)
    print(f"test_data_set_{i}: int8 top-1 {int(logits.argmax())}, cosine to output_0.npy {cos:.5f}")
    assert int(logits.argmax()) == 490
    assert cos > 0.99


@pytest.mark.shared
def test_quantized_squeezenet_structure(q_squeezenet_imagenet):
    q = q_squeezenet_imagenet
    fires = q.fire_modules()
    assert [f.squeeze for f in fires] == [f"features.{i}.squeeze" for i in (3, 4, 6, 7, 9, 10, 11, 12)]
    for f in fires:
        assert q.qparams(f.expand1x1) == q.qparams(f.expand3x3) == q.qparams(f.concat)
    for c in q.convs():
        assert c.relu and c.act_min == c.zp_out == -128
        assert c.m0.min() >= 2 ** 30 and c.shift.min() >= 0 and c.shift.max() <= 31
    assert [n.shape for n in q if n.op == "maxpool"] == [(64, 55, 55), (128, 27, 27), (256, 13, 13)]
    assert isinstance(q["features.0"], QConv) and q.outputs == ["flatten"]
