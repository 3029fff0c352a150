"""The imported operators and their integer kernels: TFLite's reference arithmetic, NHWC, exact.

Each operator is a dataclass holding everything its kernel needs, computed once at import
(multipliers, shifts, clamps, padding) from the scales and zero points stored in the file;
``run(*inputs)`` takes and returns int8 (or int32 constants) numpy arrays in TFLite's layout.
The kernels follow tflite-micro's int8 kernels (``reference_integer_ops`` / ``reference_ops``):

* convolutions accumulate ``sum(w * (x - zp_in)) + bias`` in a wrapping int32 (taps outside
  the image are skipped, i.e. read ``zp_in``), then ``MultiplyByQuantizedMultiplier`` per
  output channel, ``+ zp_out``, clamp;
* ADD rescales ``(x - zp) << 20`` of each input with its own multiplier, sums, rescales;
* AVERAGE_POOL_2D divides by the count of taps inside the image, rounding half away from zero;
* MEAN folds ``1 / n`` into its multiplier TFLite's way (``(q << s) / n``, shift ``- s``);
* SOFTMAX is gemmlowp's fixed-point exp and reciprocal (:func:`quant.tflite.arith.softmax_int8`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..arith import wrap_int32
from .arith import multiply_by_quantized_multiplier, softmax_int8

__all__ = ["Operator", "Conv2D", "DepthwiseConv2D", "Add", "AveragePool2D", "MaxPool2D", "Mean", "Pad",
           "Concatenation", "Reshape", "Softmax", "Transpose"]


@dataclass(kw_only=True, eq=False)
class Operator:
    """Base: ``index`` (position in the file's execution order), ``inputs`` (tensor names), ``output``."""

    kind: ClassVar[str] = "operator"
    index: int
    tflite_op: str
    inputs: tuple[str, ...]
    output: str
    out_shape: tuple[int, ...]

    def run(self, *xs: np.ndarray) -> np.ndarray:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def describe(self) -> str:
        """One line for listings: index, TFLite operator, output tensor and shape."""
        return f"{self.index:3d} {self.tflite_op:<18} -> {self.output} {list(self.out_shape)}"


def _windows(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
             out_hw: tuple[int, int]):
    """Yield ``(ky, kx, view)``: for every tap the ``(N, Ho, Wo, C)`` input pixels it reads (NHWC, padded)."""
    (kh, kw), (sy, sx), (dy, dx), (ho, wo) = kernel, stride, dilation, out_hw
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dy, kx * dx
            yield ky, kx, xp[:, y0:y0 + (ho - 1) * sy + 1:sy, x0:x0 + (wo - 1) * sx + 1:sx, :]


def _pad_hw(x: np.ndarray, padding: tuple[int, int, int, int], value) -> np.ndarray:
    top, left, bottom, right = padding
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def _requantize(acc: np.ndarray, multiplier, shift, zp_out: int, act_min: int, act_max: int) -> np.ndarray:
    """``clamp(MultiplyByQuantizedMultiplier(acc, q, shift) + zp_out, act_min, act_max)`` as int8."""
    y = multiply_by_quantized_multiplier(acc, multiplier, shift) + zp_out
    return np.clip(y, act_min, act_max).astype(np.int8)


@dataclass(kw_only=True, eq=False)
class Conv2D(Operator):
    """CONV_2D (and FULLY_CONNECTED as a 1x1 convolution): ``ConvPerChannel`` of reference_integer_ops.

    ``weight`` int8 ``(Cout, KH, KW, Cin / groups)`` (TFLite's OHWI), ``bias`` int64 ``(Cout,)``,
    ``multiplier``/``shift`` int64 ``(Cout,)`` (TFLite's quantized multiplier and exponent),
    ``padding`` ``(top, left, bottom, right)`` (TFLite pads only ``top``/``left``; the far side is
    whatever the output size needs), ``in_shape`` the NHWC shape the input is viewed as (a
    FULLY_CONNECTED input is reshaped to ``(batches, 1, 1, depth)``).
    """

    kind: ClassVar[str] = "conv"
    # In the order of TFLite's ConvParams: geometry, then offsets, requantization and clamp.
    padding: tuple[int, int, int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    zp_in: int
    zp_out: int
    multiplier: np.ndarray
    shift: np.ndarray
    act_min: int
    act_max: int
    weight: np.ndarray
    bias: np.ndarray
    in_shape: tuple[int, int, int, int]
    groups: int = 1

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        """The int32 accumulators ``wrap(sum(w * (x - zp_in)) + bias)``, int64 ``(N, Ho, Wo, Cout)``."""
        x = np.asarray(x).reshape(self.in_shape)
        cout, kh, kw, cpg = self.weight.shape
        n, ho, wo = x.shape[0], self.conv_out_shape[1], self.conv_out_shape[2]
        xp = _pad_hw(x.astype(np.float64) - self.zp_in, self.padding, 0.0)
        w = self.weight.astype(np.float64)
        fpg = cout // self.groups
        acc = np.zeros((n, ho, wo, cout), np.float64)
        # float64 is exact here: every partial sum is an integer below taps * 255 * 128 << 2**53.
        for ky, kx, view in _windows(xp, (kh, kw), self.stride, self.dilation, (ho, wo)):
            for g in range(self.groups):
                acc[..., g * fpg:(g + 1) * fpg] += view[..., g * cpg:(g + 1) * cpg] @ w[g * fpg:(g + 1) * fpg, ky, kx].T
        return wrap_int32(acc.astype(np.int64) + self.bias)

    @property
    def conv_out_shape(self) -> tuple[int, int, int, int]:
        """NHWC shape of the convolution result (before a FULLY_CONNECTED's reshape to ``out_shape``)."""
        n, h, w, _ = self.in_shape
        kh, kw = self.weight.shape[1:3]
        (sy, sx), (dy, dx) = self.stride, self.dilation
        top, left, bottom, right = self.padding
        return (n, (h + top + bottom - dy * (kh - 1) - 1) // sy + 1, (w + left + right - dx * (kw - 1) - 1) // sx + 1,
                self.out_channels)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def run(self, x: np.ndarray) -> np.ndarray:
        acc = self.accumulate(x)
        return _requantize(acc, self.multiplier, self.shift, self.zp_out, self.act_min, self.act_max).reshape(
            self.out_shape)


@dataclass(kw_only=True, eq=False)
class DepthwiseConv2D(Conv2D):
    """DEPTHWISE_CONV_2D: ``DepthwiseConvPerChannel``; ``weight`` int8 ``(1, KH, KW, Cin * depth_multiplier)``.

    Output channel ``c`` reads input channel ``c // depth_multiplier``.
    """

    kind: ClassVar[str] = "depthwise"
    depth_multiplier: int

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[3])

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x).reshape(self.in_shape)
        _, kh, kw, cout = self.weight.shape
        n, ho, wo, _ = self.conv_out_shape
        xp = _pad_hw(x.astype(np.int64) - self.zp_in, self.padding, 0)
        acc = np.zeros((n, ho, wo, cout), np.int64)
        for ky, kx, view in _windows(xp, (kh, kw), self.stride, self.dilation, (ho, wo)):
            acc += np.repeat(view, self.depth_multiplier, axis=-1) * self.weight[0, ky, kx].astype(np.int64)
        return wrap_int32(acc + self.bias)


@dataclass(kw_only=True, eq=False)
class Add(Operator):
    """ADD (int8): ``reference_integer_ops::AddFunc`` with numpy broadcasting.

    ``out = clamp(MBQM(MBQM((a - zp_a) << 20, q_a, s_a) + MBQM((b - zp_b) << 20, q_b, s_b), q_o, s_o) + zp_out)``.
    """

    kind: ClassVar[str] = "add"
    zp_a: int
    zp_b: int
    zp_out: int
    multiplier_a: int
    shift_a: int
    multiplier_b: int
    shift_b: int
    multiplier_out: int
    shift_out: int
    left_shift: int
    act_min: int
    act_max: int

    def run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sa = multiply_by_quantized_multiplier(
            wrap_int32((np.asarray(a, np.int64) - self.zp_a) << self.left_shift), self.multiplier_a, self.shift_a)
        sb = multiply_by_quantized_multiplier(
            wrap_int32((np.asarray(b, np.int64) - self.zp_b) << self.left_shift), self.multiplier_b, self.shift_b)
        raw = multiply_by_quantized_multiplier(wrap_int32(sa + sb), self.multiplier_out, self.shift_out)
        return np.clip(raw + self.zp_out, self.act_min, self.act_max).astype(np.int8).reshape(self.out_shape)


@dataclass(kw_only=True, eq=False)
class _Pool2D(Operator):
    """What the two pools share (TFLite's PoolParams): the window, its stride and padding, the clamp."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    act_min: int
    act_max: int


@dataclass(kw_only=True, eq=False)
class AveragePool2D(_Pool2D):
    """AVERAGE_POOL_2D (int8): sum of the taps inside the image, ``(sum +- count/2) / count`` truncated."""

    kind: ClassVar[str] = "avgpool"

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.int64)
        ho, wo = self.out_shape[1:3]
        xp = _pad_hw(x, self.padding, 0)
        inside = _pad_hw(np.ones((1,) + x.shape[1:3] + (1,), np.int64), self.padding, 0)
        acc = np.zeros((x.shape[0], ho, wo, x.shape[3]), np.int64)
        count = np.zeros((1, ho, wo, 1), np.int64)
        for _, _, view in _windows(xp, self.kernel, self.stride, (1, 1), (ho, wo)):
            acc += view
        for _, _, view in _windows(inside, self.kernel, self.stride, (1, 1), (ho, wo)):
            count += view
        half = count // 2
        # C: acc > 0 ? (acc + count/2) / count : (acc - count/2) / count, '/' truncating toward zero.
        avg = np.where(acc > 0, (acc + half) // count, -((-(acc - half)) // count))
        return np.clip(avg, self.act_min, self.act_max).astype(np.int8)


@dataclass(kw_only=True, eq=False)
class MaxPool2D(_Pool2D):
    """MAX_POOL_2D (int8): max over the taps inside the image, then the activation clamp."""

    kind: ClassVar[str] = "maxpool"

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.int64)
        ho, wo = self.out_shape[1:3]
        xp = _pad_hw(x, self.padding, -128)  # the running max starts at int8's lowest: padding never wins
        out = np.full((x.shape[0], ho, wo, x.shape[3]), -128, np.int64)
        for _, _, view in _windows(xp, self.kernel, self.stride, (1, 1), (ho, wo)):
            out = np.maximum(out, view)
        return np.clip(out, self.act_min, self.act_max).astype(np.int8)


@dataclass(kw_only=True, eq=False)
class Mean(Operator):
    """MEAN (int8): ``reference_ops::QuantizedMeanOrSum`` as tflite-micro runs it.

    ``multiplier``/``shift`` already include the ``1 / count`` fold:
    ``out = clamp(MBQM(wrap(sum(x) - zp_in * count), multiplier, shift) + zp_out)``.
    """

    kind: ClassVar[str] = "mean"
    axes: tuple[int, ...]
    count: int
    zp_in: int
    zp_out: int
    multiplier: int
    shift: int

    def run(self, x: np.ndarray) -> np.ndarray:
        total = wrap_int32(np.asarray(x, np.int64).sum(axis=self.axes))
        shifted = wrap_int32(total - self.zp_in * self.count)
        y = multiply_by_quantized_multiplier(shifted, self.multiplier, self.shift) + self.zp_out
        return np.clip(y, -128, 127).astype(np.int8).reshape(self.out_shape)


@dataclass(kw_only=True, eq=False)
class Pad(Operator):
    """PAD: ``paddings`` ``(ndim, 2)`` before/after per axis, filled with ``value`` (the output zero point)."""

    kind: ClassVar[str] = "pad"
    paddings: tuple[tuple[int, int], ...]
    value: int

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.pad(np.asarray(x), self.paddings, constant_values=self.value).astype(np.int8)


@dataclass(kw_only=True, eq=False)
class Concatenation(Operator):
    """CONCATENATION (int8, every input with the output's scale and zero point): values copied."""

    kind: ClassVar[str] = "concat"
    axis: int

    def run(self, *xs: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(x) for x in xs], axis=self.axis).astype(np.int8)


@dataclass(kw_only=True, eq=False)
class Reshape(Operator):
    """RESHAPE: the same values in the output tensor's shape."""

    kind: ClassVar[str] = "reshape"

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x).reshape(self.out_shape)


@dataclass(kw_only=True, eq=False)
class Softmax(Operator):
    """SOFTMAX int8 -> int8 over the last axis: gemmlowp fixed point (:func:`quant.tflite.arith.softmax_int8`)."""

    kind: ClassVar[str] = "softmax"
    input_multiplier: int
    input_left_shift: int
    diff_min: int

    def run(self, x: np.ndarray) -> np.ndarray:
        return softmax_int8(x, self.input_multiplier, self.input_left_shift, self.diff_min).astype(np.int8)


@dataclass(kw_only=True, eq=False)
class Transpose(Operator):
    """TRANSPOSE by a constant permutation (e.g. an NCHW input brought to NHWC)."""

    kind: ClassVar[str] = "transpose"
    perm: tuple[int, ...]

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.transpose(np.asarray(x), self.perm)
