"""The float graph IR: its nodes (one output tensor each, named after the module that made it) and the graph."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

__all__ = ["UnsupportedModelError", "Node", "Input", "Conv", "MaxPoolWindow", "MaxPool", "GlobalAvgPool", "Concat",
           "Add", "Flatten", "HostOp", "TensorRef", "Graph", "maxpool_out_size"]


class UnsupportedModelError(ValueError):
    """The model contains an operation, or a combination, that the integer pipeline cannot represent.

    The message is the first refusal; ``refusals`` lists every one that capture found (the layers that
    only read a refused one are not refusals of their own).
    """

    def __init__(self, message: str, refusals: list[str] | None = None):
        super().__init__(message)
        self.refusals = refusals or [message]

@dataclass(kw_only=True, eq=False)
class Node:
    """Base of the IR nodes.

    Attributes
    ----------
    name : str
        Node name, also the name of its output tensor (a module path).
    inputs : tuple of str
        Names of the input tensors.
    shape : tuple of int
        Output shape without the batch dimension.
    """

    op: ClassVar[str] = "node"
    name: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]


@dataclass(kw_only=True, eq=False)
class Input(Node):
    """The network input (a placeholder of the traced model)."""

    op: ClassVar[str] = "input"


@dataclass(kw_only=True, eq=False)
class Conv(Node):
    """2-D convolution with BatchNorm / constant scale already folded in and an optional fused ReLU.

    Attributes
    ----------
    weight : numpy.ndarray
        Float64 ``(out_channels, in_channels // groups, kh, kw)``.
    bias : numpy.ndarray
        Float64 ``(out_channels,)`` (zeros when the layer had no bias).
    stride, dilation : (int, int)
        ``(y, x)``.
    padding : (int, int, int, int)
        Zero padding ``(top, left, bottom, right)``.
    groups : int
        Always 1 after capture (a depthwise convolution is stored dense, other groupings are rejected).
    relu : bool
        A ReLU follows (fused).
    in_shape : (int, int, int)
        Input shape ``(C, H, W)``.
    folded : tuple of str
        Names of the layers folded into this one (BatchNorm, scale, ReLU).
    """

    op: ClassVar[str] = "conv"
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int = 1
    relu: bool = False
    in_shape: tuple[int, ...]
    folded: tuple[str, ...] = ()
    #: A depthwise convolution (``groups = in = out channels``) stored dense: ``weight[c, k]`` is zero for
    #: ``k != c`` (``groups`` stays 1); the compiler runs each output tile on its own input channels.
    depthwise: bool = False
    #: The ReLU is a ReLU6 (``min(max(y, 0), 6)``); ``relu`` is set too.
    relu6: bool = False

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1] * self.groups)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def kernel_size(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])


@dataclass(kw_only=True, eq=False)
class MaxPoolWindow:
    """A max pool's window, the same in the float graph and the integer one.

    ``padding`` is ``(py, px)`` on both sides (PyTorch's convention), dilation 1; ``in_shape`` the input's
    ``(C, H, W)``.
    """

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    ceil_mode: bool
    in_shape: tuple[int, ...]

    def window(self) -> dict:
        """The window's fields, to make another node with the same window."""
        return {f.name: getattr(self, f.name) for f in fields(MaxPoolWindow)}


@dataclass(kw_only=True, eq=False)
class MaxPool(Node, MaxPoolWindow):
    """Max pooling over a :class:`MaxPoolWindow`."""

    op: ClassVar[str] = "maxpool"


@dataclass(kw_only=True, eq=False)
class GlobalAvgPool(Node):
    """Average of every channel over all pixels: ``(C, H, W) -> (C, 1, 1)``."""

    op: ClassVar[str] = "gap"
    in_shape: tuple[int, ...]


@dataclass(kw_only=True, eq=False)
class Concat(Node):
    """Concatenation on the channel dimension, inputs in order."""

    op: ClassVar[str] = "concat"


@dataclass(kw_only=True, eq=False)
class Add(Node):
    """``inputs[0] + inputs[1]``, optionally followed by ReLU; both inputs are :class:`Conv` outputs."""

    op: ClassVar[str] = "add"
    relu: bool = False


@dataclass(kw_only=True, eq=False)
class Flatten(Node):
    """``flatten(x, 1)``: ``(C, H, W) -> (C*H*W,)``.

    A true no-op when ``H = W = 1`` (after a global average pool). For a larger
    map the order is channel-major, which differs from the engine's
    pixel-major memory layout (``hw.layout``): a scheduler must reorder.
    """

    op: ClassVar[str] = "flatten"


@dataclass(frozen=True)
class TensorRef:
    """Placeholder for a graph value inside a :class:`HostOp`'s arguments."""

    name: str


@dataclass(kw_only=True, eq=False)
class HostOp(Node):
    """A shape/layout operation (or softmax) at the end of the network, run in float on the host.

    ``kind`` is the fx opcode (``"call_function"``, ``"call_method"`` or
    ``"call_module"``), ``target`` the function, method name or module, and
    ``args``/``kwargs`` the arguments with :class:`TensorRef` for graph values.
    Host ops work on tensors *with* their batch dimension. ``shape`` is the
    result's shape without the batch dimension, ``()`` for a non-tensor (``size``).
    """

    op: ClassVar[str] = "host"
    kind: str
    target: Any
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def evaluate(self, values: dict[str, Any]) -> Any:
        """Run the operation on ``values`` (name -> batched float tensor or Python value)."""
        def sub(a):
            if isinstance(a, TensorRef):
                return values[a.name]
            if isinstance(a, (list, tuple)):
                return type(a)(sub(v) for v in a)
            if isinstance(a, dict):
                return {k: sub(v) for k, v in a.items()}
            return a

        args, kwargs = sub(self.args), sub(self.kwargs)
        if self.kind == "call_method":
            return getattr(args[0], self.target)(*args[1:], **kwargs)
        return self.target(*args, **kwargs)


@dataclass(eq=False)
class Graph:
    """A captured float network: nodes in topological order, input and output tensor names."""

    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}
        if len(self._by_name) != len(self.nodes):
            raise ValueError("duplicate node names in graph")

    def __getitem__(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no node named {name!r} in the graph") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def consumers(self, name: str) -> list[Node]:
        """Nodes that read tensor ``name``."""
        return [n for n in self.nodes if name in n.inputs]

    def convs(self) -> list[Conv]:
        return [n for n in self.nodes if isinstance(n, Conv)]

    def summary(self) -> str:
        """One line per node: name, op, inputs, output shape and the main parameters."""
        lines = []
        for n in self.nodes:
            extra = ""
            if isinstance(n, Conv):
                extra = (f"{n.in_channels}->{n.out_channels} k{n.kernel_size} s{n.stride} p{n.padding} "
                         f"d{n.dilation}{' relu' if n.relu else ''}")
            elif isinstance(n, MaxPool):
                extra = f"k{n.kernel} s{n.stride} p{n.padding}{' ceil' if n.ceil_mode else ''}"
            elif isinstance(n, Add):
                extra = "relu" if n.relu else ""
            lines.append(f"{n.name:32s} {n.op:8s} {','.join(n.inputs):40s} {n.shape} {extra}")
        return "\n".join(lines)


def maxpool_out_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """Output length of a max pool along one axis, with PyTorch's rule for ``ceil_mode``.

    ``(size + 2*pad - kernel) / stride + 1`` rounded down (or up with
    ``ceil_mode``); in ceil mode a last window that would start in the right
    padding (at or past ``size + pad``) is dropped.
    """
    span = size + 2 * pad - kernel
    if span < 0:
        raise ValueError(f"max pool kernel {kernel} larger than the padded input {size + 2 * pad}")
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out
