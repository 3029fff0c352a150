"""An independent int8 reference: PyTorch's own quantized convolution kernels (QNNPACK).

For a :class:`~quant.quantize.QConv` the same integer parameters are handed to
``torch.ao.nn.quantized.Conv2d`` (or ``ConvReLU2d``): the int8 activations as a
``quint8`` tensor (value and zero point shifted by 128, the same real
numbers), the int8 weights as a per-channel ``qint8`` tensor with scales
``s_w[c] = acc_scale[c] / s_in``, the bias as the float ``bias * s_in * s_w[c]``
(which QNNPACK turns back into the same int32) and the output scale and zero
point. The engine is forced to ``qnnpack``: fbgemm, x86 and onednn saturate
16-bit intermediate sums and disagree by up to 255.

QNNPACK requantizes in float32 (``acc * (s_in * s_w / s_out)`` rounded to
nearest-even) where the golden model uses gemmlowp's fixed-point
``rdbpot(srdhm(acc, m0), shift)``, so the two differ by one at rounding
boundaries; everything else (accumulation, zero points, padding, clamping)
must agree exactly.

Run ``python -m tools.torch_ref`` for the agreement table over every Fire
module convolution of SqueezeNet 1.1 (needs the shared data).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from .golden import conv_accumulate, run_conv
from .quantize import QConv, QGraph

__all__ = ["qnnpack_conv", "fp32_requantize", "Agreement", "compare_conv", "compare_fire_convs",
           "format_table"]


def qnnpack_conv(x, node: QConv) -> np.ndarray:
    """Run ``node`` on int8 ``x`` ``(Cin, H, W)`` with PyTorch's QNNPACK kernels; int8 ``(Cout, Ho, Wo)``.

    PyTorch's quantized convolution pads symmetrically: asymmetric padding
    ``(top, left, bottom, right)`` is applied to the int8 input beforehand with
    the input zero point (the value a padded tap reads, real 0), and the
    convolution runs unpadded.

    A depthwise ``node`` (dense weights, zero off the diagonal) runs as PyTorch's grouped convolution
    (``groups = channels``, the diagonal as its weights). A clamp other than none or ReLU (ReLU6) is
    applied to QNNPACK's unclamped int8 output: clamping after the requantization is the same operation.
    """
    t, l, b, r = node.padding
    if (t, l) != (b, r):
        x = np.pad(np.asarray(x, dtype=np.int16), ((0, 0), (t, b), (l, r)), constant_values=node.zp_in)
        t = l = 0
    clamp_after = (node.act_min, node.act_max) not in ((-128, 127), (node.zp_out, 127))
    relu = node.act_min == node.zp_out and node.act_min > -128 and not clamp_after
    depthwise = getattr(node, "depthwise", False)
    weight = node.weight.astype(np.int8)
    if depthwise:
        c = node.out_channels
        weight = np.ascontiguousarray(weight[np.arange(c), np.arange(c)][:, None])
    torch.backends.quantized.engine = "qnnpack"
    x = np.asarray(x, dtype=np.int16)
    w_scale = torch.from_numpy(np.asarray(node.weight_scale, dtype=np.float64))
    with warnings.catch_warnings():  # torch 2.13 flags quantized-tensor constructors as deprecated
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        qx = torch._make_per_tensor_quantized_tensor(torch.from_numpy((x + 128).astype(np.uint8))[None],
                                                     node.s_in, node.zp_in + 128)
        qw = torch._make_per_channel_quantized_tensor(torch.from_numpy(weight), w_scale,
                                                      torch.zeros(node.out_channels, dtype=torch.int64), 0)
    bias = torch.from_numpy(node.bias.astype(np.float64) * node.acc_scale).float()
    cls = torch.ao.nn.intrinsic.quantized.ConvReLU2d if relu else torch.ao.nn.quantized.Conv2d
    conv = cls(node.in_channels, node.out_channels, node.kernel_size, stride=node.stride, padding=(t, l),
               dilation=node.dilation, groups=node.out_channels if depthwise else 1)
    conv.set_weight_bias(qw, bias)
    conv.scale, conv.zero_point = float(node.s_out), int(node.zp_out) + 128
    with torch.no_grad():
        y = conv(qx)
    out = y.int_repr()[0].numpy().astype(np.int16) - 128
    return np.clip(out, node.act_min, node.act_max).astype(np.int8)


def fp32_requantize(acc, node: QConv) -> np.ndarray:
    """QNNPACK's float32 requantization applied to the golden model's int32 accumulators.

    ``clamp(nearbyint(float(acc) * ((s_w[c] * s_in) * (1 / s_out))) + zp_out)``
    in IEEE float32 with ties to even, as PyTorch's QNNPACK convolution
    computes it (``generate_requantization_scales`` and the fp32 requantization
    of ``pytorch_qnnp``). Where it equals :func:`qnnpack_conv`, the two
    implementations agree on every accumulator: all their differences are
    then in the rounding of the requantization.
    """
    f32 = np.float32
    scale = (np.asarray(node.weight_scale, dtype=f32) * f32(node.s_in)) * (f32(1.0) / f32(node.s_out))
    y = np.rint(np.asarray(acc).astype(f32) * scale.reshape(-1, 1, 1))
    return np.clip(y.astype(np.int64) + node.zp_out, node.act_min, node.act_max).astype(np.int8)


@dataclass
class Agreement:
    """Golden vs QNNPACK on one convolution.

    ``outputs`` compared, ``exact`` and ``within1`` matches, ``max_diff`` the
    largest difference, and ``acc_match`` the outputs where QNNPACK equals
    :func:`fp32_requantize` of the golden accumulators.
    """

    name: str
    outputs: int
    exact: int
    within1: int
    max_diff: int
    acc_match: int = 0

    def __add__(self, other: Agreement) -> Agreement:
        """Counts summed, the larger maximum; keeps this row's name."""
        return Agreement(self.name, self.outputs + other.outputs, self.exact + other.exact,
                         self.within1 + other.within1, max(self.max_diff, other.max_diff),
                         self.acc_match + other.acc_match)

    @property
    def exact_rate(self) -> float:
        return self.exact / self.outputs if self.outputs else 1.0

    @property
    def within1_rate(self) -> float:
        return self.within1 / self.outputs if self.outputs else 1.0

    @property
    def acc_match_rate(self) -> float:
        return self.acc_match / self.outputs if self.outputs else 1.0


def compare_conv(x, node: QConv) -> Agreement:
    """Golden and QNNPACK outputs of ``node`` on ``x``, compared."""
    ref = qnnpack_conv(x, node)
    d = np.abs(run_conv(x, node).astype(np.int16) - ref.astype(np.int16))
    acc = conv_accumulate(x, node.weight, node.bias, node.zp_in, stride=node.stride, padding=node.padding,
                          dilation=node.dilation)
    emulated = int((fp32_requantize(acc, node) == ref).sum())
    return Agreement(node.name, int(d.size), int((d == 0).sum()), int((d <= 1).sum()), int(d.max(initial=0)),
                     emulated)


def compare_fire_convs(qgraph: QGraph, golden_values: Iterable[dict[str, np.ndarray]]) -> list[Agreement]:
    """Agreement on every Fire-module convolution, accumulated over several golden runs.

    Parameters
    ----------
    qgraph : QGraph
    golden_values : iterable of dict
        Results of :func:`quant.golden.run` (one per image): each convolution
        is fed the golden model's own int8 input tensor.
    """
    names = [n for f in qgraph.fire_modules() for n in (f.squeeze, f.expand1x1, f.expand3x3)]
    rows = {n: Agreement(n, 0, 0, 0, 0) for n in names}
    for vals in golden_values:
        for n in names:
            node = qgraph[n]
            rows[n] = rows[n] + compare_conv(vals[node.inputs[0]], node)
    return list(rows.values())


def format_table(rows: list[Agreement]) -> str:
    """A Markdown table: one row per convolution and a total."""
    total = Agreement("total", 0, 0, 0, 0)
    for r in rows:
        total = total + r
    lines = ["| conv | outputs | exact % | within 1 % | max diff | QNNPACK = fp32 requant of golden acc % |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in [*rows, total]:
        name = f"**{r.name}**" if r is total else r.name
        lines.append(f"| {name} | {r.outputs} | {100 * r.exact_rate:.3f} | {100 * r.within1_rate:.3f} | "
                     f"{r.max_diff} | {100 * r.acc_match_rate:.3f} |")
    return "\n".join(lines)
