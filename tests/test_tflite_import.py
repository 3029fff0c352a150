"""quant.tflite against TensorFlow Lite Micro: every tensor, every element, exactly.

The reference is tflite-micro's own interpreter (PyPI ``tflite-micro``). Its Python API returns
only model outputs, so :func:`micro_all_tensors` rewrites a copy of the flatbuffer (the schema's
object API that ships with tflite-micro) so that every operator's output is also a model output,
and runs that. The same object API writes the tiny single-operator models of the synthetic tests
(no TensorFlow needed), with seeded random weights, scales and zero points.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quant.tflite import SUPPORTED, TFLiteImportError, import_tflite, run
from quant.tflite import arith as tfl_arith
from sw.shared import skip_without_shared

fb = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
                         reason="the tflite-micro package (the exact reference) is not installed")
runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                              reason="the tflite-micro package (the exact reference) is not installed")
flatbuffers = pytest.importorskip("flatbuffers")

PERSON_DIR = "models/person_detect"
PERSON_MODEL = f"{PERSON_DIR}/person_detect.tflite"
ARENA = 1 << 23


# --- tflite-micro as the reference ---------------------------------------------------------------


def _model_object(model_bytes: bytes):
    return fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(model_bytes, 0))


def _pack(model) -> bytes:
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def micro_all_tensors(model_bytes: bytes, inputs: list[np.ndarray]) -> tuple[dict[int, np.ndarray], list[np.ndarray]]:
    """Run tflite-micro on a copy of the model whose outputs are every operator's output.

    Returns ``({tensor index: array}, outputs of the unmodified model)``.
    """
    model = _model_object(model_bytes)
    sg = model.subgraphs[0]
    produced = [int(t) for op in sg.operators for t in op.outputs]
    sg.outputs = np.asarray(produced, dtype=np.int32)
    interp = runtime.Interpreter.from_bytes(_pack(model), arena_size=ARENA)
    plain = runtime.Interpreter.from_bytes(model_bytes, arena_size=ARENA)
    for i, x in enumerate(inputs):
        interp.set_input(x, i)
        plain.set_input(x, i)
    interp.invoke()
    plain.invoke()
    n_out = len(_model_object(model_bytes).subgraphs[0].outputs)
    return ({t: np.array(interp.get_output(k)) for k, t in enumerate(produced)},
            [np.array(plain.get_output(k)) for k in range(n_out)])


def _mismatches(graph, env, index_of: dict[str, int], ref: dict[int, np.ndarray], limit: int = 5) -> list[str]:
    """Lines describing the first mismatching elements of each operator output (empty: all equal)."""
    lines = []
    for op in graph.operators:
        ours, theirs = env[op.output], ref[index_of[op.output]]
        if ours.shape != theirs.shape:
            lines.append(f"{op.describe()}: shape {ours.shape} vs tflite-micro {theirs.shape}")
            continue
        bad = np.argwhere(ours != theirs)
        for pos in bad[:limit]:
            p = tuple(int(v) for v in pos)
            operands = {n: (env[n][p] if n in env and env[n].shape == ours.shape else "…") for n in op.inputs}
            params = {k: getattr(op, k)[p[-1]] if np.ndim(getattr(op, k)) else getattr(op, k)
                      for k in ("multiplier", "shift", "zp_in", "zp_out") if hasattr(op, k)}
            lines.append(f"{op.describe()}: at {list(p)} ours {int(ours[p])}, tflite-micro {int(theirs[p])}; "
                         f"operands {operands}; {params}")
        if len(bad) > limit:
            lines.append(f"  ... {len(bad)} mismatching elements in {op.output}")
    return lines


def assert_exact(model_bytes: bytes, inputs: list[np.ndarray]) -> tuple[int, int]:
    """Import and run ``model_bytes``; every operator output must equal tflite-micro's. Returns (tensors, elements)."""
    graph = import_tflite(model_bytes)
    env = run(graph, inputs)
    ref, plain_outputs = micro_all_tensors(model_bytes, inputs)
    index_of = {name: t.index for name, t in graph.tensors.items()}
    lines = _mismatches(graph, env, index_of, ref)
    assert not lines, "imported model differs from tflite-micro:\n" + "\n".join(lines)
    for name, theirs in zip(graph.outputs, plain_outputs, strict=True):  # the rewrite changed nothing
        np.testing.assert_array_equal(env[name], theirs, err_msg=f"model output {name}")
    return len(graph.operators), sum(env[op.output].size for op in graph.operators)


# --- person_detect ------------------------------------------------------------------------------


def _person_input(root, picture: str) -> np.ndarray:
    from PIL import Image

    with Image.open(root / PERSON_DIR / picture) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.int16)
    return (pixels - 128).astype(np.int8).reshape(1, 96, 96, 1)


@pytest.mark.shared
@pytest.mark.parametrize("picture", ["person.bmp", "no_person.bmp"])
def test_person_detect_every_tensor_equals_tflite_micro(picture):
    root = skip_without_shared(PERSON_MODEL, f"{PERSON_DIR}/{picture}")
    model_bytes = (root / PERSON_MODEL).read_bytes()
    x = _person_input(root, picture)
    tensors, elements = assert_exact(model_bytes, [x])
    assert tensors == 31 and elements > 80_000
    # The rewritten model (every tensor an output) agrees with tflite-micro's preserve-all-tensors mode.
    keep = runtime.Interpreter.from_bytes(model_bytes, arena_size=ARENA,
                                          intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    keep.set_input(x, 0)
    keep.invoke()
    ref, _ = micro_all_tensors(model_bytes, [x])
    for index, values in ref.items():
        np.testing.assert_array_equal(keep.GetTensor(index, 0)["tensor_data"], values, err_msg=f"tensor {index}")
    graph = import_tflite(root / PERSON_MODEL)
    # Conv2d_0 is a depthwise convolution with depth multiplier 8.
    assert [op.tflite_op for op in graph.operators].count("DEPTHWISE_CONV_2D") == 14
    print(f"{picture}: {tensors} operator outputs, {elements} elements equal to tflite-micro; "
          f"scores {run(graph, x)[graph.outputs[0]].tolist()}")


@pytest.mark.shared
def test_person_detect_scores_differ_between_pictures():
    """The two pictures give different scores (a graph that ignored its input would pass equality tests)."""
    root = skip_without_shared(PERSON_MODEL, f"{PERSON_DIR}/person.bmp", f"{PERSON_DIR}/no_person.bmp")
    graph = import_tflite(root / PERSON_MODEL)
    a = run(graph, _person_input(root, "person.bmp"))[graph.outputs[0]]
    b = run(graph, _person_input(root, "no_person.bmp"))[graph.outputs[0]]
    assert a.shape == (1, 2) and not np.array_equal(a, b)
    assert b[0, 0] > b[0, 1]  # no_person.bmp: "no person" wins


@pytest.mark.shared
def test_project_golden_conv2d_reproduces_person_detect_convolutions():
    """quant.golden.conv2d (the engine's specification, CHW) gives every CONV_2D's output exactly.

    TFLite's (q, exponent) is the engine's (m0, right shift = -exponent) when the multiplier is
    below one, as all of person_detect's are; padding feeds the input zero point in both.
    """
    from quant import golden

    root = skip_without_shared(PERSON_MODEL, f"{PERSON_DIR}/person.bmp")
    graph = import_tflite(root / PERSON_MODEL)
    env = run(graph, _person_input(root, "person.bmp"))
    convs = [op for op in graph.operators if op.tflite_op == "CONV_2D"]
    assert len(convs) == 14
    for op in convs:
        assert np.all(op.shift <= 0) and np.all(op.shift >= -31)
        x = env[op.inputs[0]][0].transpose(2, 0, 1)
        ref = golden.conv2d(x, op.weight.transpose(0, 3, 1, 2), op.bias, op.multiplier, -op.shift, op.zp_in,
                            op.zp_out, op.act_min, op.act_max, stride=op.stride, padding=op.padding,
                            dilation=op.dilation)
        np.testing.assert_array_equal(ref.transpose(1, 2, 0)[None], env[op.output], err_msg=op.describe())


@pytest.mark.shared
def test_unsupported_operator_refused_by_name_and_index(tmp_path):
    """A copy of person_detect with its RESHAPE turned into HARD_SWISH: one line naming it and its index."""
    root = skip_without_shared(PERSON_MODEL)
    model = _model_object((root / PERSON_MODEL).read_bytes())
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.HARD_SWISH
    code.version = 1
    model.operatorCodes.append(code)
    sg = model.subgraphs[0]
    index = next(i for i, op in enumerate(sg.operators)
                 if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                        model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == fb.BuiltinOperator.RESHAPE)
    sg.operators[index].opcodeIndex = len(model.operatorCodes) - 1
    sg.operators[index].builtinOptionsType, sg.operators[index].builtinOptions = 0, None
    path = tmp_path / "person_hard_swish.tflite"
    path.write_bytes(_pack(model))
    with pytest.raises(TFLiteImportError) as err:
        import_tflite(path)
    msg = str(err.value)
    assert msg.startswith(f"operator {index} (HARD_SWISH): not supported") and "\n" not in msg
    assert index == 29


# --- refusals of files and inputs ---------------------------------------------------------------


def test_not_a_tflite_file_refused(tmp_path):
    p = tmp_path / "x.tflite"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(TFLiteImportError, match="not a TFLite flatbuffer"):
        import_tflite(p)
    with pytest.raises(TFLiteImportError, match="no such file"):
        import_tflite(tmp_path / "missing.tflite")


def test_truncated_file_refused_in_one_line():
    model = _single_op_model("ADD", np.random.default_rng(1))[0]
    with pytest.raises(TFLiteImportError) as err:
        import_tflite(model[: len(model) // 3])
    assert "\n" not in str(err.value)


def test_bad_inputs_refused():
    model, inputs = _single_op_model("CONV_2D", np.random.default_rng(2))
    graph = import_tflite(model)
    with pytest.raises(ValueError, match="int8 range"):
        run(graph, [inputs[0].astype(np.int32) + 200])
    with pytest.raises(ValueError, match="expects"):
        run(graph, [inputs[0][..., :1]])
    with pytest.raises(ValueError, match="inputs"):
        run(graph, [inputs[0], inputs[0]])


def test_fused_tanh_activation_and_float_model_refused():
    rng = np.random.default_rng(3)
    b = _Builder(rng)
    x = b.act("x", (1, 4, 4, 3))
    y = b.act("y", (1, 4, 4, 3))
    out = b.act("out", (1, 4, 4, 3))
    b.op("ADD", [x, y], [out], fb.BuiltinOptions.AddOptions, fb.AddOptionsT(fusedActivationFunction=4))
    with pytest.raises(TFLiteImportError, match=r"^operator 0 \(ADD\): fused activation TANH"):
        import_tflite(b.finish([x, y], [out]))
    b = _Builder(rng)
    x = b.tensor("x", (1, 4), fb.TensorType.FLOAT32)
    out = b.tensor("out", (1, 4), fb.TensorType.FLOAT32)
    b.op("SOFTMAX", [x], [out], fb.BuiltinOptions.SoftmaxOptions, fb.SoftmaxOptionsT(beta=1.0))
    with pytest.raises(TFLiteImportError, match="int8 models only"):
        import_tflite(b.finish([x], [out]))


# --- multipliers --------------------------------------------------------------------------------


def test_quantize_multiplier_matches_project_except_ties_and_range():
    """TFLite's QuantizeMultiplier equals quant.arith's on [2**-31, 1) but for exact ties (std::round)."""
    from quant import arith

    rng = np.random.default_rng(4)
    for real in np.exp(rng.uniform(np.log(2.0 ** -31), np.log(0.999), 20_000)):
        q, e = tfl_arith.quantize_multiplier(float(real))
        m0, shift = arith.quantize_multiplier(float(real))
        assert (q, -e) == (m0, shift), real
    tie = (2 ** 30 + 0.5) / 2 ** 31  # mantissa * 2**31 ends in exactly .5: ties away from zero, not to even
    assert tfl_arith.quantize_multiplier(tie) == (2 ** 30 + 1, 0)
    assert arith.quantize_multiplier(tie) == (2 ** 30, 0)
    assert tfl_arith.quantize_multiplier(3.0) == (3 << 29, 2)  # above one: a left shift
    assert tfl_arith.quantize_multiplier(2.0 ** -40) == (0, 0)  # below 2**-32: flushed to zero


# --- synthetic single-operator models ----------------------------------------------------------


class _Builder:
    """A tiny TFLite model writer on the schema's object API (buffer 0 is the empty buffer)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.model = fb.ModelT()
        self.model.version = 3
        self.model.buffers = [fb.BufferT()]
        self.model.operatorCodes = []
        self.sg = fb.SubGraphT()
        self.sg.tensors, self.sg.operators = [], []

    def tensor(self, name, shape, ttype=None, *, scale=None, zero_point=None, data=None, qdim=0) -> int:
        t = fb.TensorT()
        t.name, t.shape = name.encode(), np.asarray(shape, np.int32)
        t.type = fb.TensorType.INT8 if ttype is None else ttype
        t.buffer = 0
        if data is not None:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        if scale is not None:
            q = fb.QuantizationParametersT()
            q.scale = np.atleast_1d(np.asarray(scale, np.float32))
            q.zeroPoint = np.atleast_1d(np.asarray(zero_point if zero_point is not None else 0, np.int64))
            if q.zeroPoint.size != q.scale.size:
                q.zeroPoint = np.zeros(q.scale.size, np.int64)
            q.quantizedDimension = qdim
            t.quantization = q
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def act(self, name, shape, scale=None, zero_point=None) -> int:
        """An int8 activation with a random (or given) scale and zero point."""
        scale = float(self.rng.uniform(0.005, 0.1)) if scale is None else scale
        zero_point = int(self.rng.integers(-30, 31)) if zero_point is None else zero_point
        return self.tensor(name, shape, scale=scale, zero_point=zero_point)

    def const(self, name, values, ttype, **q) -> int:
        values = np.asarray(values)
        return self.tensor(name, values.shape, ttype, data=values, **q)

    def op(self, name, inputs, outputs, options_type=0, options=None):
        code = getattr(fb.BuiltinOperator, name)
        known = [oc.builtinCode for oc in self.model.operatorCodes]
        if code not in known:
            oc = fb.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            self.model.operatorCodes.append(oc)
            known.append(code)
        i = known.index(code)
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = i, np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
        op.builtinOptionsType, op.builtinOptions = options_type, options
        self.sg.operators.append(op)

    def finish(self, inputs, outputs) -> bytes:
        self.sg.inputs, self.sg.outputs = np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
        self.model.subgraphs = [self.sg]
        return _pack(self.model)


def _weights(b: _Builder, name, shape, channels: int, qdim: int, per_channel: bool = True):
    w = b.rng.integers(-127, 128, shape).astype(np.int8)
    scales = b.rng.uniform(0.002, 0.02, channels if per_channel else 1)
    return b.const(name, w, fb.TensorType.INT8, scale=scales, zero_point=np.zeros(scales.size, np.int64), qdim=qdim)


def _bias(b: _Builder, channels: int, x: int | None = None, w: int | None = None):
    """An int32 bias; at scale ``s_x * s_w`` when the two tensors are given (TFLite checks it for FC)."""
    scale = (np.full(channels, 1e-4) if x is None else
             b.sg.tensors[x].quantization.scale[0] * np.broadcast_to(b.sg.tensors[w].quantization.scale, (channels,)))
    return b.const("bias", b.rng.integers(-3000, 3000, channels).astype(np.int32), fb.TensorType.INT32,
                   scale=scale, zero_point=np.zeros(channels, np.int64))


def _conv_model(b: _Builder, *, kernel, stride, dilation, padding, act, cin=5, cout=6, size=(9, 11)):
    x = b.act("x", (1, *size, cin))
    w = _weights(b, "w", (cout, *kernel, cin), cout, 0)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    out_hw = [(n + s - 1) // s if padding == 0 else (n + s - e) // s
              for n, s, e in zip(size, stride, eff, strict=True)]
    out = b.act("y", (1, *out_hw, cout))
    b.op("CONV_2D", [x, w, _bias(b, cout)], [out], fb.BuiltinOptions.Conv2DOptions,
         fb.Conv2DOptionsT(padding=padding, strideW=stride[1], strideH=stride[0], fusedActivationFunction=act,
                           dilationWFactor=dilation[1], dilationHFactor=dilation[0]))
    return [x], [out]


def _depthwise_model(b: _Builder, *, kernel, stride, multiplier, padding, act, cin=4, size=(10, 9)):
    x = b.act("x", (1, *size, cin))
    cout = cin * multiplier
    w = _weights(b, "w", (1, *kernel, cout), cout, 3)
    out_hw = [(n + s - 1) // s if padding == 0 else (n + s - k) // s for n, s, k in zip(size, stride, kernel,
                                                                                        strict=True)]
    out = b.act("y", (1, *out_hw, cout))
    b.op("DEPTHWISE_CONV_2D", [x, w, _bias(b, cout)], [out], fb.BuiltinOptions.DepthwiseConv2DOptions,
         fb.DepthwiseConv2DOptionsT(padding=padding, strideW=stride[1], strideH=stride[0], depthMultiplier=multiplier,
                                    fusedActivationFunction=act, dilationWFactor=1, dilationHFactor=1))
    return [x], [out]


def _single_op_model(kind: str, rng: np.random.Generator, variant: int = 0) -> tuple[bytes, list[np.ndarray]]:
    """A one-operator model of ``kind`` (variant picks options), and a random int8 input for each input."""
    b = _Builder(rng)
    pool_opts = fb.BuiltinOptions.Pool2DOptions
    if kind == "CONV_2D":
        ins, outs = _conv_model(b, kernel=[(3, 3), (5, 5), (1, 3), (7, 7)][variant % 4],
                                stride=[(2, 2), (1, 1), (1, 2), (2, 1)][variant % 4],
                                dilation=[(1, 1), (2, 1), (1, 1), (1, 1)][variant % 4],
                                padding=variant % 2, act=[0, 1, 3][variant % 3])
    elif kind == "DEPTHWISE_CONV_2D":
        ins, outs = _depthwise_model(b, kernel=[(3, 3), (5, 5)][variant % 2], stride=[(1, 1), (2, 2)][variant % 2],
                                     multiplier=[1, 2, 3][variant % 3], padding=(variant // 2) % 2,
                                     act=[3, 1, 0][variant % 3])
    elif kind == "FULLY_CONNECTED":
        x = b.act("x", (2, 1, 1, 12) if variant % 2 else (3, 12))
        w = _weights(b, "w", (7, 12), 7, 0, per_channel=variant >= 2)
        out = b.act("y", (2, 7) if variant % 2 else (3, 7))
        inputs = [x, w, _bias(b, 7, x, w)] if variant != 2 else [x, w, -1]
        b.op("FULLY_CONNECTED", inputs, [out], fb.BuiltinOptions.FullyConnectedOptions,
             fb.FullyConnectedOptionsT(fusedActivationFunction=[0, 1, 3][variant % 3]))
        ins, outs = [x], [out]
    elif kind == "ADD":
        shape_b = [(1, 5, 6, 4), (1, 1, 1, 4), (1, 5, 6, 4), (4,)][variant % 4]
        x, y = b.act("x", (1, 5, 6, 4)), b.act("y", shape_b)
        out = b.act("out", (1, 5, 6, 4))
        b.op("ADD", [x, y], [out], fb.BuiltinOptions.AddOptions,
             fb.AddOptionsT(fusedActivationFunction=[0, 1, 3][variant % 3]))
        ins, outs = [x, y], [out]
    elif kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        kernel, stride = [((3, 3), (2, 2)), ((2, 2), (2, 2)), ((3, 2), (1, 2)), ((5, 5), (3, 3))][variant % 4]
        padding = variant % 2 if kind == "AVERAGE_POOL_2D" else (variant + 1) % 2
        size = (9, 8)
        out_hw = [(n + s - 1) // s if padding == 0 else (n + s - k) // s for n, s, k in zip(size, stride, kernel,
                                                                                            strict=True)]
        scale, zp = float(rng.uniform(0.01, 0.1)), int(rng.integers(-20, 20))
        x = b.act("x", (1, *size, 3), scale, zp)
        out = b.act("y", (1, *out_hw, 3), scale, zp)
        b.op(kind, [x], [out], pool_opts, fb.Pool2DOptionsT(padding=padding, strideW=stride[1], strideH=stride[0],
                                                            filterWidth=kernel[1], filterHeight=kernel[0],
                                                            fusedActivationFunction=[0, 1, 3][variant % 3]))
        ins, outs = [x], [out]
    elif kind == "MEAN":
        axes, keep = [([1, 2], True), ([1, 2], False), ([-1], True), ([2, 1, 2], False)][variant % 4]
        x = b.act("x", (1, 7, 5, 6))
        kept = [1 if (a in axes or a - 4 in axes) else d for a, d in enumerate((1, 7, 5, 6))]
        out_shape = kept if keep else [d for a, d in enumerate((1, 7, 5, 6)) if not (a in axes or a - 4 in axes)]
        out = b.act("y", out_shape)
        axis = b.const("axis", np.asarray(axes, np.int32), fb.TensorType.INT32)
        b.op("MEAN", [x, axis], [out], fb.BuiltinOptions.ReducerOptions, fb.ReducerOptionsT(keepDims=keep))
        ins, outs = [x], [out]
    else:
        return _shape_op_model(kind, b, variant)
    return b.finish(ins, outs), [rng.integers(-128, 128, tuple(b.sg.tensors[i].shape)).astype(np.int8) for i in ins]


def _shape_op_model(kind: str, b: _Builder, variant: int) -> tuple[bytes, list[np.ndarray]]:
    """PAD, CONCATENATION, RESHAPE, TRANSPOSE, SOFTMAX (values copied or TFLite's softmax)."""
    rng = b.rng
    scale, zp = float(rng.uniform(0.01, 0.1)), int(rng.integers(-20, 20))
    if kind == "PAD":
        pads = np.asarray([[0, 0], [1, 2], [variant, 1], [0, 0]], np.int32)
        x = b.act("x", (1, 4, 5, 3), scale, zp)
        out = b.act("y", (1, 7, 6 + variant, 3), scale, zp)
        b.op("PAD", [x, b.const("pads", pads, fb.TensorType.INT32)], [out], fb.BuiltinOptions.PadOptions,
             fb.PadOptionsT())
        ins = [x]
    elif kind == "CONCATENATION":
        axis = [3, 1, -1][variant % 3]
        shapes = [(1, 4, 5, 3), (1, 4, 5, 2)] if axis != 1 else [(1, 4, 5, 3), (1, 2, 5, 3)]
        xs = [b.act(f"x{i}", s, scale, zp) for i, s in enumerate(shapes)]
        out_shape = np.concatenate([np.zeros(s) for s in shapes], axis=axis).shape
        out = b.act("y", out_shape, scale, zp)
        b.op("CONCATENATION", xs, [out], fb.BuiltinOptions.ConcatenationOptions, fb.ConcatenationOptionsT(axis=axis))
        ins = xs
    elif kind == "RESHAPE":
        x = b.act("x", (1, 3, 4, 2), scale, zp)
        out = b.act("y", (1, 24) if variant % 2 else (2, 12), scale, zp)
        shape = b.const("shape", np.asarray(b.sg.tensors[out].shape, np.int32), fb.TensorType.INT32)
        b.op("RESHAPE", [x, shape], [out], fb.BuiltinOptions.ReshapeOptions,
             fb.ReshapeOptionsT(newShape=np.asarray(b.sg.tensors[out].shape, np.int32)))
        ins = [x]
    elif kind == "TRANSPOSE":
        perm = [(0, 2, 3, 1), (0, 3, 1, 2), (3, 2, 1, 0)][variant % 3]
        x = b.act("x", (1, 3, 4, 5), scale, zp)
        out = b.act("y", tuple((1, 3, 4, 5)[p] for p in perm), scale, zp)
        b.op("TRANSPOSE", [x, b.const("perm", np.asarray(perm, np.int32), fb.TensorType.INT32)], [out],
             fb.BuiltinOptions.TransposeOptions, fb.TransposeOptionsT())
        ins = [x]
    elif kind == "SOFTMAX":
        depth = [2, 10, 37, 1001][variant % 4]
        x = b.act("x", (3, depth), float(rng.uniform(0.01, 0.5)))
        out = b.act("y", (3, depth), 1.0 / 256, -128)
        b.op("SOFTMAX", [x], [out], fb.BuiltinOptions.SoftmaxOptions,
             fb.SoftmaxOptionsT(beta=float(rng.choice([1.0, 0.5, 2.0]))))
        ins = [x]
    else:
        raise ValueError(kind)
    return b.finish(ins, [out]), [rng.integers(-128, 128, tuple(b.sg.tensors[i].shape)).astype(np.int8) for i in ins]


@pytest.mark.parametrize("variant", range(6))
@pytest.mark.parametrize("kind", sorted(SUPPORTED))
def test_single_operator_equals_tflite_micro(kind, variant):
    rng = np.random.default_rng(1000 * variant + sorted(SUPPORTED).index(kind))
    model, inputs = _single_op_model(kind, rng, variant)
    tensors, elements = assert_exact(model, inputs)
    assert tensors == 1 and elements > 0


def test_softmax_saturated_rows_equal_tflite_micro():
    """Softmax rows with one dominant logit, all-equal rows and differences below diff_min."""
    rng = np.random.default_rng(5)
    model, (x,) = _single_op_model("SOFTMAX", rng, 1)
    x[0] = -128
    x[0, 3] = 127
    x[1] = 17
    x[2] = rng.choice([-128, 127], x.shape[1])
    assert_exact(model, [x])


@pytest.mark.parametrize("seed", range(4))
def test_add_every_operand_pair_equals_tflite_micro(seed):
    """ADD over all 256 x 256 int8 operand pairs (broadcast (256, 1) + (1, 256)), random scales."""
    rng = np.random.default_rng(100 + seed)
    b = _Builder(rng)
    scales = rng.uniform(0.005, 0.2, 3)
    x = b.act("x", (256, 1), float(scales[0]))
    y = b.act("y", (1, 256), float(scales[1]))
    out = b.act("out", (256, 256), float(scales[2]))
    b.op("ADD", [x, y], [out], fb.BuiltinOptions.AddOptions, fb.AddOptionsT(fusedActivationFunction=seed % 2))
    all_int8 = np.arange(-128, 128, dtype=np.int8)
    tensors, elements = assert_exact(b.finish([x, y], [out]), [all_int8.reshape(256, 1), all_int8.reshape(1, 256)])
    assert elements == 65536


@pytest.mark.parametrize("per_channel", [False, True])
def test_fully_connected_many_rows_equals_tflite_micro(per_channel):
    """A FULLY_CONNECTED with 65536 outputs: the per-tensor multiplier's float32 scale product shows."""
    rng = np.random.default_rng(7)
    b = _Builder(rng)
    x = b.act("x", (4096, 24))
    w = _weights(b, "w", (16, 24), 16, 0, per_channel=per_channel)
    out = b.act("y", (4096, 16))
    b.op("FULLY_CONNECTED", [x, w, _bias(b, 16, x, w)], [out], fb.BuiltinOptions.FullyConnectedOptions,
         fb.FullyConnectedOptionsT(fusedActivationFunction=0))
    assert_exact(b.finish([x], [out]), [rng.integers(-128, 128, (4096, 24)).astype(np.int8)])


def test_fully_connected_per_tensor_scale_product_as_tflite_micro_computes_it():
    """Biases chosen where a float32 product ``s_in * s_w`` would change the output of a per-tensor FC.

    TFLite's source (``GetQuantizedConvolutionMultipler``) multiplies the two float32 scales before
    widening to double; the multipliers then differ from the double product in their last bits,
    which moves an output only next to a rounding tie. This test searches such accumulators
    (``x = zp_in``, so the accumulator is the bias): the pinned tflite-micro build gives the
    double product's outputs, and so must the importer.
    """
    rng = np.random.default_rng(8)
    accs = np.arange(-(1 << 20), 1 << 20, dtype=np.int64)
    for _ in range(50):
        s_in, s_w, s_out = (np.float32(v) for v in (rng.uniform(0.02, 0.1), rng.uniform(0.001, 0.004), 1.0))
        q_f, e_f = tfl_arith.quantize_multiplier(float(s_in * s_w) / float(s_out))
        q_d, e_d = tfl_arith.quantize_multiplier(float(s_in) * float(s_w) / float(s_out))
        by_float = tfl_arith.multiply_by_quantized_multiplier(accs, q_f, e_f)
        by_double = tfl_arith.multiply_by_quantized_multiplier(accs, q_d, e_d)
        differ = accs[(by_float != by_double) & (np.abs(by_double) < 100)]
        if differ.size:
            break
    assert differ.size, "no accumulator separates the float32 and double scale products"
    assert not np.array_equal(  # the float32 product really would give other outputs on these
        tfl_arith.multiply_by_quantized_multiplier(differ[:8], q_f, e_f),
        tfl_arith.multiply_by_quantized_multiplier(differ[:8], q_d, e_d))
    targets = differ[:8].astype(np.int32)
    b = _Builder(rng)
    x = b.act("x", (1, 1), float(s_in), 0)
    w = b.const("w", np.ones((targets.size, 1), np.int8), fb.TensorType.INT8, scale=[s_w], zero_point=[0])
    bias = b.const("bias", targets, fb.TensorType.INT32, scale=[float(s_in) * float(s_w)], zero_point=[0])
    out = b.act("y", (1, targets.size), float(s_out), 0)
    b.op("FULLY_CONNECTED", [x, w, bias], [out], fb.BuiltinOptions.FullyConnectedOptions,
         fb.FullyConnectedOptionsT(fusedActivationFunction=0))
    assert_exact(b.finish([x], [out]), [np.zeros((1, 1), np.int8)])


def test_grouped_conv_and_dilated_depthwise_equal_tflite_micro():
    """CONV_2D with groups (filter depth < input depth) and a depthwise with dilation 3x2, multiplier 2."""
    rng = np.random.default_rng(9)
    b = _Builder(rng)
    x, out = b.act("x", (1, 6, 7, 8)), b.act("y", (1, 6, 7, 6))
    w = _weights(b, "w", (6, 3, 3, 4), 6, 0)
    b.op("CONV_2D", [x, w, _bias(b, 6)], [out], fb.BuiltinOptions.Conv2DOptions,
         fb.Conv2DOptionsT(padding=0, strideW=1, strideH=1, fusedActivationFunction=0, dilationWFactor=1,
                           dilationHFactor=1))
    model = b.finish([x], [out])
    assert import_tflite(model).operators[0].groups == 2
    assert_exact(model, [rng.integers(-128, 128, (1, 6, 7, 8)).astype(np.int8)])
    b = _Builder(rng)
    x, out = b.act("x", (1, 9, 10, 3)), b.act("y", (1, 9, 10, 6))
    w = _weights(b, "w", (1, 3, 3, 6), 6, 3)
    b.op("DEPTHWISE_CONV_2D", [x, w, _bias(b, 6)], [out], fb.BuiltinOptions.DepthwiseConv2DOptions,
         fb.DepthwiseConv2DOptionsT(padding=0, strideW=1, strideH=1, depthMultiplier=2, fusedActivationFunction=1,
                                    dilationWFactor=2, dilationHFactor=3))
    assert_exact(b.finish([x], [out]), [rng.integers(-128, 128, (1, 9, 10, 3)).astype(np.int8)])


@st.composite
def window_cases(draw):
    """Kernel 1..7 per axis, stride 1..4, dilation 1..3, SAME or VALID, on inputs the window fits."""
    kernel = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.sampled_from([0, 1]))
    size = tuple(draw(st.integers((k - 1) * d + 1, (k - 1) * d + 9)) for k, d in zip(kernel, dilation, strict=True))
    return kernel, stride, dilation, padding, size, draw(st.integers(0, 2 ** 32 - 1))


def _out_hw(size, kernel, stride, dilation, padding):
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    return [(n + s - 1) // s if padding == 0 else (n + s - e) // s for n, s, e in zip(size, stride, eff, strict=True)]


_WINDOW_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                            suppress_health_check=[HealthCheck.too_slow])


@_WINDOW_SETTINGS
@given(window_cases(), st.sampled_from(["CONV_2D", "DEPTHWISE_CONV_2D"]))
def test_convolution_geometry_equals_tflite_micro(case, kind):
    """Property: any kernel, stride, dilation and SAME/VALID padding, conv and depthwise, equal tflite-micro."""
    kernel, stride, dilation, padding, size, seed = case
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    cin = int(rng.integers(1, 5))
    cout = cin * int(rng.integers(1, 3)) if kind == "DEPTHWISE_CONV_2D" else int(rng.integers(1, 6))
    x = b.act("x", (1, *size, cin))
    out = b.act("y", (1, *_out_hw(size, kernel, stride, dilation, padding), cout))
    act = int(rng.choice([0, 1, 3]))
    if kind == "CONV_2D":
        w = _weights(b, "w", (cout, *kernel, cin), cout, 0)
        opts = fb.Conv2DOptionsT(padding=padding, strideW=stride[1], strideH=stride[0], fusedActivationFunction=act,
                                 dilationWFactor=dilation[1], dilationHFactor=dilation[0])
        b.op(kind, [x, w, _bias(b, cout)], [out], fb.BuiltinOptions.Conv2DOptions, opts)
    else:
        w = _weights(b, "w", (1, *kernel, cout), cout, 3)
        opts = fb.DepthwiseConv2DOptionsT(padding=padding, strideW=stride[1], strideH=stride[0],
                                          depthMultiplier=cout // cin, fusedActivationFunction=act,
                                          dilationWFactor=dilation[1], dilationHFactor=dilation[0])
        b.op(kind, [x, w, _bias(b, cout)], [out], fb.BuiltinOptions.DepthwiseConv2DOptions, opts)
    assert_exact(b.finish([x], [out]), [rng.integers(-128, 128, (1, *size, cin)).astype(np.int8)])


@_WINDOW_SETTINGS
@given(window_cases(), st.sampled_from(["AVERAGE_POOL_2D", "MAX_POOL_2D"]))
def test_pool_geometry_equals_tflite_micro(case, kind):
    """Property: any pool window, stride and SAME/VALID padding (edge windows partly outside) equal tflite-micro."""
    kernel, stride, _, padding, size, seed = case
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    scale, zp = float(rng.uniform(0.01, 0.1)), int(rng.integers(-20, 20))
    x = b.act("x", (1, *size, 3), scale, zp)
    out = b.act("y", (1, *_out_hw(size, kernel, stride, (1, 1), padding), 3), scale, zp)
    b.op(kind, [x], [out], fb.BuiltinOptions.Pool2DOptions,
         fb.Pool2DOptionsT(padding=padding, strideW=stride[1], strideH=stride[0], filterWidth=kernel[1],
                           filterHeight=kernel[0], fusedActivationFunction=int(rng.choice([0, 1, 3]))))
    assert_exact(b.finish([x], [out]), [rng.integers(-128, 128, (1, *size, 3)).astype(np.int8)])


def test_unsupported_variants_refused_in_one_line():
    """A pool that would rescale, and an activation whose zero point is not int8: refused, naming the operator."""
    rng = np.random.default_rng(10)
    b = _Builder(rng)
    x, out = b.act("x", (1, 4, 4, 2), 0.05, 3), b.act("y", (1, 2, 2, 2), 0.07, 3)
    b.op("MAX_POOL_2D", [x], [out], fb.BuiltinOptions.Pool2DOptions,
         fb.Pool2DOptionsT(padding=1, strideW=2, strideH=2, filterWidth=2, filterHeight=2))
    with pytest.raises(TFLiteImportError, match=r"^operator 0 \(MAX_POOL_2D\): input and output scale"):
        import_tflite(b.finish([x], [out]))
    b = _Builder(rng)
    x, y, out = b.act("x", (4,)), b.act("y", (4,), 0.1, 300), b.act("z", (4,))
    b.op("ADD", [x, y], [out], fb.BuiltinOptions.AddOptions, fb.AddOptionsT())
    with pytest.raises(TFLiteImportError, match=r"^operator 0 \(ADD\): input 'y' has scale .* zero point 300"):
        import_tflite(b.finish([x, y], [out]))
