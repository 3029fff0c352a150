"""Reading a ``.tflite`` flatbuffer with the PyPI ``tflite`` package (the generated TFLite schema).

:func:`read_model` turns the file into plain Python: one :class:`TensorInfo` per tensor (shape,
type, every scale, zero point and per-channel quantization AS STORED, constant data) and one
:class:`RawOperator` per operator (builtin name, tensor indices, builtin options as a dict).
Nothing is interpreted here; :mod:`quant.tflite.importer` decides what each operator means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..graph import UnsupportedModelError

__all__ = ["TFLiteImportError", "TensorInfo", "RawOperator", "RawModel", "read_model", "builtin_name"]


class TFLiteImportError(UnsupportedModelError):
    """A ``.tflite`` file the importer refuses: one line naming the operator (and index) and the reason."""


#: schema TensorType -> numpy dtype (the types an int8 model uses; others are named in refusals).
_TENSOR_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
                 9: np.int8, 10: np.float64}
_TENSOR_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
                      7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
                      13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4"}


def builtin_name(code: int) -> str:
    """The schema's name of a builtin operator code (``3`` -> ``"CONV_2D"``)."""
    from tflite.utils import BUILTIN_OPCODE2NAME

    return BUILTIN_OPCODE2NAME.get(int(code), f"BUILTIN_{int(code)}")


@dataclass(frozen=True, eq=False)
class TensorInfo:
    """One tensor of the subgraph, its quantization exactly as the file stores it.

    ``scale`` is float32 (one value, or one per channel along ``quantized_dimension``),
    ``zero_point`` int64 of the same length; both empty when the tensor is not quantized.
    ``data`` holds a constant tensor's values (shaped, typed), ``None`` for activations.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    type_name: str
    scale: np.ndarray
    zero_point: np.ndarray
    quantized_dimension: int
    data: np.ndarray | None

    @property
    def quantized(self) -> bool:
        return self.scale.size > 0

    @property
    def per_tensor_scale(self) -> float:
        """The single scale as TFLite reads it (``params.scale``: the first entry), a float32 value."""
        return float(self.scale[0])

    @property
    def per_tensor_zero_point(self) -> int:
        return int(self.zero_point[0]) if self.zero_point.size else 0


@dataclass(frozen=True, eq=False)
class RawOperator:
    """One operator as stored: ``index`` in execution order, builtin ``name``, tensor indices (-1: absent)."""

    index: int
    name: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class RawModel:
    """The single subgraph of a model: tensors, operators, input and output tensor indices."""

    tensors: tuple[TensorInfo, ...]
    operators: tuple[RawOperator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    description: str


def _options_dict(op, name: str) -> dict:
    """The operator's builtin options table as ``{FieldName: value}`` (numpy arrays for vectors)."""
    import tflite

    table = op.BuiltinOptions()
    if table is None:
        return {}
    cls_name = {"FULLY_CONNECTED": "FullyConnectedOptions", "AVERAGE_POOL_2D": "Pool2DOptions",
                "MAX_POOL_2D": "Pool2DOptions", "MEAN": "ReducerOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
                "CONV_2D": "Conv2DOptions", "CONCATENATION": "ConcatenationOptions", "ADD": "AddOptions",
                "RESHAPE": "ReshapeOptions", "SOFTMAX": "SoftmaxOptions", "PAD": "PadOptions",
                "TRANSPOSE": "TransposeOptions"}.get(name)
    if cls_name is None:
        return {}
    opts = getattr(tflite, cls_name)()
    opts.Init(table.Bytes, table.Pos)
    out = {}
    for attr in dir(opts):
        if not attr[:1].isupper() or attr.startswith(("GetRootAs", "Init")) or re.search(
                r"(AsNumpy|Length|IsNone|BufferHasIdentifier)$", attr):
            continue
        if hasattr(opts, attr + "AsNumpy"):
            v = getattr(opts, attr + "AsNumpy")()
            out[attr] = np.asarray(v) if not isinstance(v, int) else np.zeros(0, np.int32)
        else:
            out[attr] = getattr(opts, attr)()
    return out


def _tensor_info(model, t, index: int, names_seen: dict[str, int], buf: bytes) -> TensorInfo:
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    type_name = _TENSOR_TYPE_NAMES.get(t.Type(), f"type{t.Type()}")
    name = (t.Name() or b"").decode("utf-8", "replace") or f"tensor{index}"
    if name in names_seen:
        name = f"{name}#{index}"
    names_seen[name] = index
    q = t.Quantization()
    scale = np.zeros(0, np.float32)
    zero_point = np.zeros(0, np.int64)
    qdim = 0
    if q is not None and q.ScaleLength():
        scale = np.asarray(q.ScaleAsNumpy(), dtype=np.float32)
        zero_point = (np.asarray(q.ZeroPointAsNumpy(), dtype=np.int64) if q.ZeroPointLength()
                      else np.zeros(scale.size, np.int64))
        qdim = int(q.QuantizedDimension())
    data = None
    b = model.Buffers(t.Buffer()) if t.Buffer() > 0 else None
    if b is not None:
        if b.Offset() > 1:
            start = int(b.Offset())
            raw = np.frombuffer(buf[start:start + int(b.Size())], dtype=np.uint8)
        else:
            raw = b.DataAsNumpy() if b.DataLength() else None
        if raw is not None and not isinstance(raw, int) and raw.size:
            dtype = _TENSOR_TYPES.get(t.Type())
            if dtype is None:
                raise TFLiteImportError(f"tensor {index} ({name!r}): constant of type {type_name} is not supported")
            data = np.frombuffer(raw.tobytes(), dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
            if data.size != int(np.prod(shape, dtype=np.int64)):
                raise TFLiteImportError(f"tensor {index} ({name!r}): buffer holds {data.size} values, "
                                        f"shape {list(shape)} needs {int(np.prod(shape, dtype=np.int64))}")
            data = data.reshape(shape)
    return TensorInfo(index=index, name=name, shape=shape, type_name=type_name, scale=scale,
                      zero_point=zero_point, quantized_dimension=qdim, data=data)


def read_model(source: str | Path | bytes) -> RawModel:
    """Parse a ``.tflite`` file (path or bytes) into a :class:`RawModel`.

    Raises :class:`TFLiteImportError` (one line) for a file that is not a TFLite flatbuffer,
    has more than one subgraph, or cannot be parsed.
    """
    import tflite

    if isinstance(source, bytes | bytearray):
        buf, what = bytes(source), "model bytes"
    else:
        path = Path(source)
        if not path.is_file():
            raise TFLiteImportError(f"{path}: no such file")
        buf, what = path.read_bytes(), str(path)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise TFLiteImportError(f"{what}: not a TFLite flatbuffer (no 'TFL3' file identifier)")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() != 1:
            raise TFLiteImportError(f"{what}: {model.SubgraphsLength()} subgraphs; the importer reads "
                                    f"single-subgraph models only")
        sg = model.Subgraphs(0)
        names_seen: dict[str, int] = {}
        tensors = tuple(_tensor_info(model, sg.Tensors(i), i, names_seen, buf) for i in range(sg.TensorsLength()))
        operators = []
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            oc = model.OperatorCodes(op.OpcodeIndex())
            code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
            name = builtin_name(code)
            if name == "CUSTOM":
                name = f"CUSTOM {(oc.CustomCode() or b'').decode('utf-8', 'replace')!r}"
            ins = tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else ()
            outs = tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else ()
            operators.append(RawOperator(index=i, name=name, version=int(oc.Version()), inputs=ins, outputs=outs,
                                         options=_options_dict(op, name)))
        inputs = tuple(int(v) for v in sg.InputsAsNumpy()) if sg.InputsLength() else ()
        outputs = tuple(int(v) for v in sg.OutputsAsNumpy()) if sg.OutputsLength() else ()
        description = (model.Description() or b"").decode("utf-8", "replace")
    except TFLiteImportError:
        raise
    except Exception as e:  # a truncated or corrupt flatbuffer fails anywhere in the generated accessors
        raise TFLiteImportError(f"{what}: cannot parse the flatbuffer ({type(e).__name__}: {e})") from e
    return RawModel(tensors=tensors, operators=tuple(operators), inputs=inputs, outputs=outputs,
                    description=description)
