"""``.tflite`` -> :class:`TFLiteGraph`: every operator mapped to TFLite's own integer arithmetic.

The importer takes every scale, zero point and per-channel weight scale as the file stores them
(no calibration) and derives each multiplier and shift exactly as tflite-micro's ``Prepare``
functions do (``PopulateConvolutionQuantizationParams``, ``CalculateOpDataAdd``,
``PrepareMeanOrSumHelper``, ``CalculateSoftmaxParams``, ``CalculateOpDataFullyConnected``):
double-precision products of the float32 scales, then ``QuantizeMultiplier``. Padding SAME/VALID
is ``ComputePaddingHeightWidth``. Any operator outside :data:`SUPPORTED` (or an unsupported
variant of a supported one) is refused with one line naming the operator, its index and the
reason, before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arith import ACT_NONE, ACT_RELU, ACT_RELU6, activation_range, quantize_multiplier, softmax_int8_params
from .ops import (
    Add,
    AveragePool2D,
    Concatenation,
    Conv2D,
    DepthwiseConv2D,
    MaxPool2D,
    Mean,
    Operator,
    Pad,
    Reshape,
    Softmax,
    Transpose,
)
from .reader import RawModel, RawOperator, TensorInfo, TFLiteImportError, read_model

__all__ = ["SUPPORTED", "TFLiteGraph", "import_tflite"]

_PADDING_SAME, _PADDING_VALID = 0, 1
_ACTIVATIONS = {ACT_NONE: "NONE", ACT_RELU: "RELU", ACT_RELU6: "RELU6"}


@dataclass(eq=False)
class TFLiteGraph:
    """An imported int8 TFLite model: its tensors (by name), operators in execution order, inputs, outputs."""

    tensors: dict[str, TensorInfo]
    operators: list[Operator]
    inputs: list[str]
    outputs: list[str]
    source: str

    def summary(self) -> str:
        """One line per operator (index, TFLite operator, output tensor and shape)."""
        return "\n".join(op.describe() for op in self.operators)


class _Ctx:
    """What a builder sees of one operator: its tensors, options, and a way to refuse it."""

    def __init__(self, raw: RawModel, op: RawOperator):
        self.raw, self.op = raw, op

    def fail(self, reason: str) -> TFLiteImportError:
        return TFLiteImportError(f"operator {self.op.index} ({self.op.name}): {reason}")

    def tensor(self, position: int, *, optional: bool = False) -> TensorInfo | None:
        ins = self.op.inputs
        if position >= len(ins) or ins[position] < 0:
            if optional:
                return None
            raise self.fail(f"input {position} is missing")
        return self._tensor_at(ins[position])

    @property
    def out(self) -> TensorInfo:
        if len(self.op.outputs) != 1:
            raise self.fail(f"{len(self.op.outputs)} outputs; exactly one expected")
        return self._tensor_at(self.op.outputs[0])

    def _tensor_at(self, index: int) -> TensorInfo:
        if not 0 <= index < len(self.raw.tensors):
            raise self.fail(f"tensor index {index} is out of range ({len(self.raw.tensors)} tensors)")
        return self.raw.tensors[index]

    def int8(self, t: TensorInfo, what: str) -> TensorInfo:
        """``t`` must be an int8 tensor with one scale and zero point (an activation)."""
        if t.type_name != "int8":
            raise self.fail(f"{what} {t.name!r} is {t.type_name}; the importer runs int8 models only")
        if t.scale.size != 1:
            raise self.fail(f"{what} {t.name!r} has {t.scale.size} scales; an activation needs exactly one")
        if not (np.isfinite(t.scale[0]) and t.scale[0] > 0 and -128 <= t.per_tensor_zero_point <= 127):
            raise self.fail(f"{what} {t.name!r} has scale {float(t.scale[0])!r} and zero point "
                            f"{t.per_tensor_zero_point}; a positive scale and an int8 zero point are needed")
        return t

    def const(self, t: TensorInfo, what: str) -> np.ndarray:
        if t.data is None:
            raise self.fail(f"{what} {t.name!r} is not a constant tensor")
        return t.data

    def activation(self) -> tuple[int, int]:
        act = int(self.op.options.get("FusedActivationFunction", ACT_NONE))
        if act not in _ACTIVATIONS:
            name = {2: "RELU_N1_TO_1", 4: "TANH", 5: "SIGN_BIT"}.get(act, str(act))
            raise self.fail(f"fused activation {name} is not supported (NONE, RELU, RELU6)")
        out = self.out
        return activation_range(act, out.per_tensor_scale, out.per_tensor_zero_point)

    def common(self, *data_inputs: TensorInfo) -> dict:
        return dict(index=self.op.index, tflite_op=self.op.name, inputs=tuple(t.name for t in data_inputs),
                    output=self.out.name, out_shape=self.out.shape)


def _same_valid(ctx: _Ctx, padding: int, size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int, int]:
    """``ComputeOutSize`` + ``ComputePaddingWithOffset``: ``(out, pad_before, pad_after)``."""
    if padding not in (_PADDING_SAME, _PADDING_VALID) or min(kernel, stride, dilation) < 1:
        raise ctx.fail(f"padding {padding}, kernel {kernel}, stride {stride}, dilation {dilation} are not valid")
    effective = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride if padding == _PADDING_SAME else (size + stride - effective) // stride
    if out <= 0:
        raise ctx.fail(f"kernel {kernel} (dilation {dilation}) leaves no output on an input of {size}")
    total = max(0, (out - 1) * stride + effective - size)
    return out, total // 2, total - total // 2


def _window(ctx: _Ctx, in_shape, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """SAME/VALID padding ``(top, left, bottom, right)``, checked against the output tensor's shape."""
    pad = int(ctx.op.options.get("Padding", _PADDING_VALID))
    ho, top, bottom = _same_valid(ctx, pad, in_shape[1], kernel[0], stride[0], dilation[0])
    wo, left, right = _same_valid(ctx, pad, in_shape[2], kernel[1], stride[1], dilation[1])
    if len(ctx.out.shape) != 4 or tuple(ctx.out.shape[1:3]) != (ho, wo):
        raise ctx.fail(f"output shape {list(ctx.out.shape)} does not match the computed {ho}x{wo}")
    return top, left, bottom, right


def _conv_multipliers(ctx: _Ctx, x: TensorInfo, w: TensorInfo, channels: int):
    """Per-channel ``QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out))``.

    As ``PopulateConvolutionQuantizationParams``; a single weight scale is broadcast. Per-tensor
    FULLY_CONNECTED goes through ``GetQuantizedConvolutionMultipler``, whose source multiplies the
    two scales in float32 first, but the tflite-micro build this project pins computes the double
    product there too (tests/test_tflite_import.py finds accumulators that tell the two apart).
    """
    if not w.quantized or w.scale.size not in (1, channels):
        raise ctx.fail(f"weights {w.name!r} have {w.scale.size} scales for {channels} output channels")
    if np.any(w.zero_point != 0):
        raise ctx.fail(f"weights {w.name!r} have a nonzero zero point (TFLite int8 weights are symmetric)")
    s_in, s_out = float(x.scale[0]), float(ctx.out.scale[0])
    scales = np.broadcast_to(w.scale, (channels,))
    q, shift = np.zeros(channels, np.int64), np.zeros(channels, np.int64)
    for c in range(channels):
        q[c], shift[c] = quantize_multiplier(s_in * float(scales[c]) / s_out)
    return q, shift


def _bias(ctx: _Ctx, channels: int) -> np.ndarray:
    b = ctx.tensor(2, optional=True)
    if b is None:
        return np.zeros(channels, np.int64)
    if b.type_name != "int32":
        raise ctx.fail(f"bias {b.name!r} is {b.type_name}; int8 models carry int32 biases")
    data = ctx.const(b, "bias").astype(np.int64).reshape(-1)
    if data.size != channels:
        raise ctx.fail(f"bias {b.name!r} has {data.size} values for {channels} output channels")
    return data


def _conv_geometry(ctx: _Ctx, x: TensorInfo, kernel: tuple[int, int]) -> dict:
    o = ctx.op.options
    if len(x.shape) != 4:
        raise ctx.fail(f"input {x.name!r} has shape {list(x.shape)}; NHWC expected")
    stride = (int(o.get("StrideH", 1)), int(o.get("StrideW", 1)))
    dilation = (int(o.get("DilationHFactor", 1)), int(o.get("DilationWFactor", 1)))
    return dict(stride=stride, dilation=dilation, padding=_window(ctx, x.shape, kernel, stride, dilation),
                in_shape=tuple(x.shape))


def _build_conv(ctx: _Ctx) -> Conv2D:
    x, w = ctx.int8(ctx.tensor(0), "input"), ctx.tensor(1)
    out = ctx.int8(ctx.out, "output")
    weight = ctx.const(w, "weights")
    if w.type_name != "int8" or weight.ndim != 4:
        raise ctx.fail(f"weights {w.name!r} must be int8 OHWI, got {w.type_name} {list(w.shape)}")
    cout, _, _, cpg = weight.shape
    if x.shape[3] % cpg or cout % (x.shape[3] // cpg) or out.shape[3] != cout:
        raise ctx.fail(f"input channels {x.shape[3]}, weights {list(w.shape)} and output {list(out.shape)} "
                       f"do not form a (grouped) convolution")
    q, shift = _conv_multipliers(ctx, x, w, cout)
    act_min, act_max = ctx.activation()
    return Conv2D(**ctx.common(x), weight=weight, bias=_bias(ctx, cout), multiplier=q, shift=shift,
                  zp_in=x.per_tensor_zero_point, zp_out=out.per_tensor_zero_point, act_min=act_min, act_max=act_max,
                  groups=x.shape[3] // cpg, **_conv_geometry(ctx, x, weight.shape[1:3]))


def _build_depthwise(ctx: _Ctx) -> DepthwiseConv2D:
    x, w = ctx.int8(ctx.tensor(0), "input"), ctx.tensor(1)
    out = ctx.int8(ctx.out, "output")
    weight = ctx.const(w, "weights")
    if w.type_name != "int8" or weight.ndim != 4 or weight.shape[0] != 1:
        raise ctx.fail(f"weights {w.name!r} must be int8 (1, KH, KW, C), got {w.type_name} {list(w.shape)}")
    multiplier = int(ctx.op.options.get("DepthMultiplier", 1))
    cout = weight.shape[3]
    if multiplier < 1 or x.shape[3] * multiplier != cout or out.shape[3] != cout:
        raise ctx.fail(f"input channels {x.shape[3]} x depth multiplier {multiplier} != output channels {cout}")
    q, shift = _conv_multipliers(ctx, x, w, cout)
    act_min, act_max = ctx.activation()
    return DepthwiseConv2D(**ctx.common(x), weight=weight, bias=_bias(ctx, cout), multiplier=q, shift=shift,
                           zp_in=x.per_tensor_zero_point, zp_out=out.per_tensor_zero_point, act_min=act_min,
                           act_max=act_max, depth_multiplier=multiplier,
                           **_conv_geometry(ctx, x, weight.shape[1:3]))


def _build_fully_connected(ctx: _Ctx) -> Conv2D:
    """FULLY_CONNECTED as a 1x1 convolution over ``(batches, 1, 1, depth)``."""
    x, w = ctx.int8(ctx.tensor(0), "input"), ctx.tensor(1)
    out = ctx.int8(ctx.out, "output")
    weight = ctx.const(w, "weights")
    if int(ctx.op.options.get("WeightsFormat", 0)) != 0:
        raise ctx.fail("shuffled weights format is not supported")
    if w.type_name != "int8" or weight.ndim != 2:
        raise ctx.fail(f"weights {w.name!r} must be int8 (units, depth), got {w.type_name} {list(w.shape)}")
    units, depth = weight.shape
    size = int(np.prod(x.shape, dtype=np.int64))
    if not out.shape or out.shape[-1] != units or size % depth or size // depth != int(np.prod(out.shape[:-1])):
        raise ctx.fail(f"input {list(x.shape)}, weights {list(w.shape)} and output {list(out.shape)} do not match")
    per_channel = w.scale.size > 1
    b = ctx.tensor(2, optional=True)
    if (not per_channel and b is not None and b.quantized  # GetQuantizedConvolutionMultipler's bias check
            and abs(float(x.scale[0]) * float(w.scale[0]) - float(b.scale[0])) / float(out.scale[0]) > 0.02):
        raise ctx.fail(f"bias {b.name!r} scale {float(b.scale[0])!r} is not input scale x weight scale "
                           f"(TFLite refuses the model)")
    q, shift = _conv_multipliers(ctx, x, w, units)
    act_min, act_max = ctx.activation()
    return Conv2D(**ctx.common(x), weight=weight.reshape(units, 1, 1, depth), bias=_bias(ctx, units), multiplier=q,
                  shift=shift, zp_in=x.per_tensor_zero_point, zp_out=out.per_tensor_zero_point, act_min=act_min,
                  act_max=act_max, stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0),
                  in_shape=(size // depth, 1, 1, depth))


def _build_add(ctx: _Ctx) -> Add:
    a, b = ctx.int8(ctx.tensor(0), "input"), ctx.int8(ctx.tensor(1), "input")
    out = ctx.int8(ctx.out, "output")
    if np.broadcast_shapes(a.shape, b.shape) != tuple(out.shape):
        raise ctx.fail(f"inputs {list(a.shape)} and {list(b.shape)} do not broadcast to {list(out.shape)}")
    left_shift = 20
    twice_max = 2 * float(max(a.scale[0], b.scale[0]))
    qa, sa = quantize_multiplier(float(a.scale[0]) / twice_max)
    qb, sb = quantize_multiplier(float(b.scale[0]) / twice_max)
    qo, so = quantize_multiplier(twice_max / ((1 << left_shift) * float(out.scale[0])))
    act_min, act_max = ctx.activation()
    return Add(**ctx.common(a, b), zp_a=a.per_tensor_zero_point, zp_b=b.per_tensor_zero_point,
               zp_out=out.per_tensor_zero_point, multiplier_a=qa, shift_a=sa, multiplier_b=qb, shift_b=sb,
               multiplier_out=qo, shift_out=so, left_shift=left_shift, act_min=act_min, act_max=act_max)


def _build_pool(ctx: _Ctx, cls: type) -> Operator:
    x, out = ctx.int8(ctx.tensor(0), "input"), ctx.int8(ctx.out, "output")
    if len(x.shape) != 4:
        raise ctx.fail(f"input {x.name!r} has shape {list(x.shape)}; NHWC expected")
    # tflite-micro's pooling Prepare: same scale (within 1e-6) and zero point in and out.
    if abs(float(x.scale[0] - out.scale[0])) > 1e-6 or x.per_tensor_zero_point != out.per_tensor_zero_point:
        raise ctx.fail("input and output scale or zero point differ (TFLite pools do not rescale)")
    o = ctx.op.options
    kernel = (int(o.get("FilterHeight", 1)), int(o.get("FilterWidth", 1)))
    stride = (int(o.get("StrideH", 1)), int(o.get("StrideW", 1)))
    act_min, act_max = ctx.activation()
    return cls(**ctx.common(x), kernel=kernel, stride=stride, padding=_window(ctx, x.shape, kernel, stride, (1, 1)),
               act_min=act_min, act_max=act_max)


def _build_mean(ctx: _Ctx) -> Mean:
    x, out = ctx.int8(ctx.tensor(0), "input"), ctx.int8(ctx.out, "output")
    axes_t = ctx.tensor(1)
    raw_axes = ctx.const(axes_t, "axis").astype(np.int64).reshape(-1)
    axes: list[int] = []
    for a in raw_axes:  # ResolveAxis: negative axes wrap, duplicates drop
        a = int(a) + len(x.shape) if a < 0 else int(a)
        if not 0 <= a < len(x.shape):
            raise ctx.fail(f"axis {int(a)} is out of range for input {list(x.shape)}")
        if a not in axes:
            axes.append(a)
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if count <= 0 or int(np.prod(out.shape, dtype=np.int64)) * count != int(np.prod(x.shape, dtype=np.int64)):
        raise ctx.fail(f"reducing {list(x.shape)} over axes {axes} does not give {list(out.shape)}")
    q, shift = quantize_multiplier(float(x.scale[0]) / float(out.scale[0]))
    # QuantizedMeanOrSum folds 1/count into the multiplier: s = min(floor(log2(count)), 32, 31 + shift).
    s = min(count.bit_length() - 1, 32, 31 + shift)
    q, shift = int((q << s) // count), shift - s
    return Mean(**ctx.common(x), axes=tuple(axes), count=count, zp_in=x.per_tensor_zero_point,
                zp_out=out.per_tensor_zero_point, multiplier=q, shift=shift)


def _build_pad(ctx: _Ctx) -> Pad:
    x, out = ctx.int8(ctx.tensor(0), "input"), ctx.int8(ctx.out, "output")
    pads = ctx.const(ctx.tensor(1), "paddings").astype(np.int64).reshape(-1, 2)
    if pads.shape[0] != len(x.shape) or np.any(pads < 0):
        raise ctx.fail(f"paddings {pads.tolist()} do not fit input {list(x.shape)}")
    if tuple(int(d + p.sum()) for d, p in zip(x.shape, pads, strict=True)) != tuple(out.shape):
        raise ctx.fail(f"input {list(x.shape)} padded by {pads.tolist()} is not {list(out.shape)}")
    return Pad(**ctx.common(x), paddings=tuple((int(a), int(b)) for a, b in pads), value=out.per_tensor_zero_point)


def _build_concat(ctx: _Ctx) -> Concatenation:
    out = ctx.int8(ctx.out, "output")
    xs = [ctx.int8(ctx.tensor(i), "input") for i in range(len(ctx.op.inputs))]
    if int(ctx.op.options.get("FusedActivationFunction", ACT_NONE)) != ACT_NONE:
        raise ctx.fail("a fused activation on CONCATENATION is not supported")
    for t in xs:  # tflite-micro's int8 concatenation does not rescale
        if float(t.scale[0]) != float(out.scale[0]) or t.per_tensor_zero_point != out.per_tensor_zero_point:
            raise ctx.fail(f"input {t.name!r} has a scale or zero point other than the output's")
    axis = int(ctx.op.options.get("Axis", 0))
    axis = axis + len(out.shape) if axis < 0 else axis
    try:
        shape = np.concatenate([np.zeros(t.shape, np.int8) for t in xs], axis=axis).shape
    except (ValueError, np.exceptions.AxisError) as e:
        raise ctx.fail(f"inputs do not concatenate on axis {axis}: {e}") from e
    if shape != tuple(out.shape):
        raise ctx.fail(f"concatenation gives {list(shape)}, output is {list(out.shape)}")
    return Concatenation(**ctx.common(*xs), axis=axis)


def _build_reshape(ctx: _Ctx) -> Reshape:
    x, out = ctx.int8(ctx.tensor(0), "input"), ctx.int8(ctx.out, "output")
    if int(np.prod(x.shape, dtype=np.int64)) != int(np.prod(out.shape, dtype=np.int64)):
        raise ctx.fail(f"cannot reshape {list(x.shape)} to {list(out.shape)}")
    return Reshape(**ctx.common(x))


def _build_softmax(ctx: _Ctx) -> Softmax:
    x, out = ctx.int8(ctx.tensor(0), "input"), ctx.int8(ctx.out, "output")
    if out.per_tensor_zero_point != -128 or float(out.scale[0]) != float(np.float32(1.0 / 256)):
        raise ctx.fail("int8 softmax output must have scale 1/256 and zero point -128 (TFLite's requirement)")
    try:
        q, left_shift, diff_min = softmax_int8_params(np.float32(ctx.op.options.get("Beta", 1.0)), x.scale[0])
    except ValueError as e:
        raise ctx.fail(str(e)) from e
    return Softmax(**ctx.common(x), input_multiplier=q, input_left_shift=left_shift, diff_min=diff_min)


def _build_transpose(ctx: _Ctx) -> Transpose:
    x, out = ctx.int8(ctx.tensor(0), "input"), ctx.int8(ctx.out, "output")
    perm = tuple(int(p) for p in ctx.const(ctx.tensor(1), "permutation").reshape(-1))
    if sorted(perm) != list(range(len(x.shape))) or tuple(x.shape[p] for p in perm) != tuple(out.shape):
        raise ctx.fail(f"permutation {list(perm)} does not take {list(x.shape)} to {list(out.shape)}")
    return Transpose(**ctx.common(x), perm=perm)


#: The TFLite builtin operators the importer maps, and how.
SUPPORTED: dict[str, Callable[[_Ctx], Operator]] = {
    "CONV_2D": _build_conv,
    "DEPTHWISE_CONV_2D": _build_depthwise,
    "FULLY_CONNECTED": _build_fully_connected,
    "ADD": _build_add,
    "AVERAGE_POOL_2D": lambda ctx: _build_pool(ctx, AveragePool2D),
    "MAX_POOL_2D": lambda ctx: _build_pool(ctx, MaxPool2D),
    "MEAN": _build_mean,
    "PAD": _build_pad,
    "CONCATENATION": _build_concat,
    "RESHAPE": _build_reshape,
    "SOFTMAX": _build_softmax,
    "TRANSPOSE": _build_transpose,
}


def import_tflite(source: str | Path | bytes) -> TFLiteGraph:
    """Read a ``.tflite`` model (path or bytes) and map every operator; refuse before anything runs.

    Raises
    ------
    TFLiteImportError
        One line: ``operator <index> (<NAME>): <reason>`` for the first operator that is not in
        :data:`SUPPORTED` (checked over the whole model first) or that a builder refuses, or a
        file-level reason (not a flatbuffer, several subgraphs, a non-int8 model input).
    """
    raw = read_model(source)
    unsupported = [op for op in raw.operators if op.name not in SUPPORTED]
    if unsupported:
        first = unsupported[0]
        more = f" ({len(unsupported) - 1} more unsupported operators follow)" if len(unsupported) > 1 else ""
        raise TFLiteImportError(f"operator {first.index} ({first.name}): not supported by the TFLite importer "
                                f"(supported: {', '.join(sorted(SUPPORTED))}){more}")
    for i in raw.inputs:
        t = raw.tensors[i]
        if t.type_name != "int8" or t.scale.size != 1:
            raise TFLiteImportError(f"model input {t.name!r} is {t.type_name} with {t.scale.size} scales; "
                                    f"the importer runs fully int8 models only")
    operators = [SUPPORTED[op.name](_Ctx(raw, op)) for op in raw.operators]
    by_name = {t.name: t for t in raw.tensors}
    available = {raw.tensors[i].name for i in raw.inputs}
    for op in operators:  # in execution order: every input exists before the operator runs
        for name in op.inputs:
            if name not in available and by_name[name].data is None:
                raise TFLiteImportError(f"operator {op.index} ({op.tflite_op}): input {name!r} is neither a "
                                        f"model input, a constant, nor computed by an earlier operator")
        available.add(op.output)
    return TFLiteGraph(tensors=by_name, operators=operators,
                       inputs=[raw.tensors[i].name for i in raw.inputs],
                       outputs=[raw.tensors[i].name for i in raw.outputs],
                       source=str(source) if not isinstance(source, bytes | bytearray) else "<bytes>")
