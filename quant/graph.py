"""Float graph IR and its capture from a PyTorch model with ``torch.fx``.

:func:`capture` traces a float ``nn.Module`` (eval mode) with
``torch.fx.symbolic_trace``, propagates shapes, and lowers it to a short list of
nodes in topological order, each named by its module path (a convolution is
named after its ``Conv2d``, e.g. ``"features.3.squeeze"``; a function call
after the module that made it plus the fx name, e.g. ``"features.3.cat"``).
The output of every node is one tensor that carries the node's name. Shapes
exclude the batch dimension: ``(C, H, W)`` for feature maps.

Lowering rules
    * ``Conv2d`` -> :class:`Conv` (``groups`` must be 1, zero padding only).
      A following ``BatchNorm2d`` (eval statistics), a multiplication or
      division by a Python number and a ReLU fold into it when the
      convolution's output has no other consumer.
    * ``MaxPool2d`` / ``F.max_pool2d`` -> :class:`MaxPool`.
    * ``AdaptiveAvgPool2d(1)``, ``AvgPool2d`` / ``F.avg_pool2d`` over the whole
      map, ``x.mean((2, 3), keepdim=True)`` -> :class:`GlobalAvgPool`.
    * ``torch.cat`` on the channel dimension -> :class:`Concat`.
    * ``a + b`` of two convolution outputs (each used only by the add, same
      geometry), optionally followed by ReLU -> :class:`Add` (quantized as one
      dual convolution).
    * ``flatten(x, 1)`` -> :class:`Flatten` (a no-op on the integer side).
    * ``Dropout``, ``Identity``, ``contiguous()`` and a ReLU on a tensor that
      is already non-negative -> removed.
    * Shape and layout operations at the end of the network (``permute``,
      ``view``, ``reshape``, ``size``, ``cat`` on other dimensions, softmax),
      whose results only feed other such operations or the outputs ->
      :class:`HostOp`, evaluated in float on the host.

Anything else raises :class:`UnsupportedModelError` naming the node and the
reason.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .fold import fold_bn, fold_scale

__all__ = [
    "UnsupportedModelError", "Node", "Input", "Conv", "MaxPool", "GlobalAvgPool", "Concat", "Add",
    "Flatten", "HostOp", "TensorRef", "Graph", "capture", "run_float", "maxpool_out_size",
]


class UnsupportedModelError(ValueError):
    """The model contains an operation, or a combination, that the integer pipeline cannot represent."""


# --- IR ----------------------------------------------------------------------------------------


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
        Always 1 after capture (grouped convolutions are rejected).
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
class MaxPool(Node):
    """Max pooling; ``padding`` is ``(py, px)`` on both sides (PyTorch's convention), dilation 1."""

    op: ClassVar[str] = "maxpool"
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    ceil_mode: bool
    in_shape: tuple[int, ...]


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


# --- capture -----------------------------------------------------------------------------------

_ALIAS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
_HOST_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Flatten)
_HOST_FUNCTIONS = {torch.cat, torch.concat, torch.flatten, torch.reshape, torch.permute, torch.softmax,
                   torch.log_softmax, F.softmax, F.log_softmax, torch.transpose, operator.getitem,
                   torch.squeeze, torch.unsqueeze}
_HOST_METHODS = {"view", "reshape", "permute", "size", "contiguous", "flatten", "softmax", "log_softmax",
                 "transpose", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_MUL_FUNCTIONS = {operator.mul, operator.imul, torch.mul}
_DIV_FUNCTIONS = {operator.truediv, operator.itruediv, torch.div}
_MEAN_PARAMS = (["input", "dim", "keepdim"], {"dim": None, "keepdim": False})


def _pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = tuple(v)
    if len(v) == 1:
        return int(v[0]), int(v[0])
    if len(v) != 2:
        raise UnsupportedModelError(f"{what}: expected an int or a pair, got {v!r}")
    return int(v[0]), int(v[1])


def _bind(args, kwargs, names: list[str], defaults: dict) -> dict:
    """Bind positional/keyword arguments of a functional call to parameter names."""
    out = dict(defaults)
    out.update(zip(names, args, strict=False))
    out.update(kwargs)
    return out


class _Capture:
    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes: dict[str, Node] = {}      # IR nodes by name, in creation (topological) order
        self.value: dict[fx.Node, Any] = {}   # fx node -> IR tensor name
        self.head: dict[str, fx.Node] = {}    # IR tensor -> the fx node currently standing for it
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._names: dict[fx.Node, str] = {}
        self._used: set[str] = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
        self.host_ok = self._host_region()

    # helpers
    def _path(self, n: fx.Node) -> str:
        """Module path of a module call; ``<module path>.<function>`` for a function call inside a module.

        fx numbers repeated function names (``cat_1``); the number is dropped
        when the shorter name is unique (``features.4.cat``).
        """
        if n.op == "call_module":
            return str(n.target)
        if n not in self._names:
            stack = n.meta.get("nn_module_stack")
            prefix = f"{next(reversed(stack))}." if stack else ""
            short = prefix + re.sub(r"_\d+$", "", n.name)
            self._names[n] = short if short not in self._used else prefix + n.name
            self._used.add(self._names[n])
        return self._names[n]

    def _shape(self, n: fx.Node) -> tuple[int, ...]:
        meta = n.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            return ()
        return tuple(int(s) for s in meta.shape[1:])

    def _is_alias(self, n: fx.Node) -> bool:
        if n.op == "call_module":
            return isinstance(self.modules[n.target], _ALIAS_MODULES)
        if n.op == "call_function":
            return n.target is F.dropout or n.target is torch.dropout
        if n.op == "call_method":
            return n.target == "contiguous" and n not in self.host_ok
        return False

    def _real_users(self, n: fx.Node) -> list[fx.Node]:
        out = []
        for u in n.users:
            out.extend(self._real_users(u) if self._is_alias(u) else [u])
        return out

    def _sole_user(self, name: str, user: fx.Node) -> bool:
        return self._real_users(self.head[name]) == [user]

    def _tensor(self, a: Any, n: fx.Node) -> str:
        if not isinstance(a, fx.Node) or a not in self.value or not isinstance(self.value[a], str):
            raise UnsupportedModelError(f"{self._path(n)}: argument {a!r} is not a tensor computed by the "
                                        f"graph")
        return self.value[a]

    def _add(self, node: Node, n: fx.Node) -> None:
        if node.name in self.nodes:
            raise UnsupportedModelError(f"{node.name}: module called twice (shared modules are not "
                                        f"supported)")
        self.nodes[node.name] = node
        self.value[n] = node.name
        self.head[node.name] = n

    def _fuse(self, name: str, n: fx.Node) -> None:
        self.value[n] = name
        self.head[name] = n

    def _nonneg(self, name: str) -> bool:
        node = self.nodes[name]
        if isinstance(node, (Conv, Add)):
            return node.relu
        if isinstance(node, (MaxPool, GlobalAvgPool, Concat, Flatten)):
            return all(self._nonneg(i) for i in node.inputs)
        return False

    def _is_host_capable(self, n: fx.Node) -> bool:
        if n.op == "call_module":
            return isinstance(self.modules[n.target], _HOST_MODULES)
        if n.op == "call_function":
            return n.target in _HOST_FUNCTIONS
        if n.op == "call_method":
            return n.target in _HOST_METHODS
        return False

    def _host_region(self) -> set[fx.Node]:
        """fx nodes that can run on the host: host-capable, and every user is too (or the output)."""
        ok: set[fx.Node] = set()
        for n in reversed(list(self.gm.graph.nodes)):
            if self._is_host_capable(n) and all(u.op == "output" or u in ok for u in n.users):
                ok.add(n)
        return ok

    # lowering
    def run(self) -> Graph:
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if self.inputs:
                    raise UnsupportedModelError(f"{n.name}: only single-input models are supported")
                self._add(Input(name=n.name, inputs=(), shape=self._shape(n)), n)
                self.inputs.append(n.name)
            elif n.op == "get_attr":
                raise UnsupportedModelError(f"{n.name}: reads parameter/buffer {n.target!r} directly; "
                                            f"only module calls may use weights")
            elif n.op == "output":
                self._output(n.args[0])
            elif self._is_alias(n):
                self.value[n] = self._tensor(n.args[0], n)
            elif n in self.host_ok and not self._is_device_form(n):
                self._host(n)
            elif n.op == "call_module":
                self._module(n)
            elif n.op == "call_function":
                self._function(n)
            elif n.op == "call_method":
                self._method(n)
            else:  # pragma: no cover - fx has no other opcodes
                raise UnsupportedModelError(f"{n.name}: fx opcode {n.op!r}")
        self._check_adds()
        return Graph(list(self.nodes.values()), self.inputs, self.outputs)

    def _is_device_form(self, n: fx.Node) -> bool:
        """Host-capable nodes with an integer lowering: channel concat and flatten(x, 1) of device tensors."""
        if any(isinstance(a, fx.Node) and isinstance(self.value.get(a), str)
               and isinstance(self.nodes.get(self.value[a]), HostOp) for a in n.all_input_nodes):
            return False
        return self._concat_dim(n) is not None or self._flatten_ok(n)

    def _concat_dim(self, n: fx.Node):
        if n.op == "call_function" and n.target in (torch.cat, torch.concat):
            p = _bind(n.args, n.kwargs, ["tensors", "dim"], {"dim": 0})
            nd = len(self._shape(n)) + 1
            dim = p["dim"] + nd if p["dim"] < 0 else p["dim"]
            return 1 if nd == 4 and dim == 1 else None
        return None

    def _flatten_ok(self, n: fx.Node) -> bool:
        if (n.op, n.target) in (("call_function", torch.flatten), ("call_method", "flatten")):
            p = _bind(n.args, n.kwargs, ["input", "start_dim", "end_dim"], {"start_dim": 0, "end_dim": -1})
        elif n.op == "call_module" and isinstance(self.modules[n.target], nn.Flatten):
            m = self.modules[n.target]
            p = {"start_dim": m.start_dim, "end_dim": m.end_dim}
        else:
            return False
        return p["start_dim"] == 1 and p["end_dim"] == -1

    def _output(self, out) -> None:
        if isinstance(out, fx.Node):
            self.outputs.append(self._tensor(out, out))
        elif isinstance(out, (list, tuple)):
            for o in out:
                self._output(o)
        elif isinstance(out, dict):
            for o in out.values():
                self._output(o)
        else:
            raise UnsupportedModelError(f"model output {out!r} is not a tensor")

    def _host(self, n: fx.Node) -> None:
        def sub(a):
            if isinstance(a, fx.Node):
                return TensorRef(self._tensor(a, n))
            if isinstance(a, (list, tuple)):
                return type(a)(sub(v) for v in a)
            if isinstance(a, dict):
                return {k: sub(v) for k, v in a.items()}
            return a

        target = self.modules[n.target] if n.op == "call_module" else n.target
        inputs = tuple(self._tensor(a, n) for a in n.all_input_nodes)
        self._add(HostOp(name=self._path(n), inputs=inputs, shape=self._shape(n), kind=n.op, target=target,
                         args=sub(n.args), kwargs=sub(n.kwargs)), n)

    def _unsupported(self, n: fx.Node, what: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"{self._path(n)}: {what}")

    # call_module
    def _module(self, n: fx.Node) -> None:
        m = self.modules[n.target]
        if type(m) is nn.Conv2d:
            self._conv(n, m)
        elif isinstance(m, nn.BatchNorm2d):
            self._bn(n, m)
        elif type(m) is nn.ReLU:
            self._relu(n, n.args[0])
        elif isinstance(m, nn.MaxPool2d):
            if m.return_indices:
                raise self._unsupported(n, "MaxPool2d with return_indices")
            self._maxpool(n, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            self._adaptive_avg(n, m.output_size)
        elif isinstance(m, nn.AvgPool2d):
            self._avgpool(n, m)
        elif isinstance(m, nn.Flatten) and self._flatten_ok(n):
            self._flatten(n)
        else:
            where = "" if not self._is_host_capable(n) else " (allowed only at the end of the network)"
            raise self._unsupported(n, f"module {type(m).__name__} is not supported{where}")

    def _conv(self, n: fx.Node, m: nn.Conv2d) -> None:
        src = self._tensor(n.args[0], n)
        in_shape = self.nodes[src].shape
        if m.groups != 1:
            raise self._unsupported(n, f"grouped convolution (groups={m.groups}) is not supported")
        if m.padding_mode != "zeros":
            raise self._unsupported(n, f"padding_mode={m.padding_mode!r} is not supported (zeros only)")
        kh, kw = m.kernel_size
        dil = _pair(m.dilation, self._path(n))
        if isinstance(m.padding, str):
            if m.padding == "valid":
                pad = (0, 0, 0, 0)
            else:  # "same": PyTorch puts the odd extra pixel at the bottom/right
                th, tw = dil[0] * (kh - 1), dil[1] * (kw - 1)
                pad = (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        else:
            py, px = _pair(m.padding, self._path(n))
            pad = (py, px, py, px)
        w = m.weight.detach().double().numpy().copy()
        b = (m.bias.detach().double().numpy().copy() if m.bias is not None
             else np.zeros(m.out_channels, dtype=np.float64))
        self._add(Conv(name=str(n.target), inputs=(src,), shape=self._shape(n), weight=w, bias=b,
                       stride=_pair(m.stride, self._path(n)), padding=pad, dilation=dil, groups=1,
                       in_shape=in_shape), n)

    def _bn(self, n: fx.Node, m: nn.BatchNorm2d) -> None:
        src = self._tensor(n.args[0], n)
        conv = self.nodes[src]
        if not isinstance(conv, Conv) or not self._sole_user(src, n) or conv.relu:
            after = ", after ReLU" if conv.relu else ""
            raise self._unsupported(n, f"BatchNorm2d must directly follow a convolution whose output it "
                                       f"alone reads (input is {conv.op} {src!r}{after})")
        if m.running_mean is None or m.running_var is None:
            raise self._unsupported(n, "BatchNorm2d without running statistics cannot be folded")
        conv.weight, conv.bias = fold_bn(conv.weight, conv.bias, m.running_mean, m.running_var,
                                         m.weight if m.affine else None, m.bias if m.affine else None, m.eps)
        conv.folded += (self._path(n),)
        self._fuse(src, n)

    def _relu(self, n: fx.Node, arg) -> None:
        src = self._tensor(arg, n)
        node = self.nodes[src]
        if self._nonneg(src):
            self.value[n] = src  # ReLU of a non-negative tensor is the identity
        elif isinstance(node, (Conv, Add)) and self._sole_user(src, n):
            node.relu = True
            if isinstance(node, Conv):
                node.folded += (self._path(n),)
            self._fuse(src, n)
        else:
            raise self._unsupported(n, f"ReLU on {node.op} {src!r}, which cannot absorb it (only a "
                                       f"convolution or an add whose output the ReLU alone reads can)")

    def _maxpool(self, n, kernel, stride, padding, dilation, ceil_mode) -> None:
        src = self._tensor(n.args[0], n)
        if _pair(dilation, self._path(n)) != (1, 1):
            raise self._unsupported(n, f"max pool dilation {dilation!r} is not supported")
        k = _pair(kernel, self._path(n))
        s = k if stride is None or stride == () or stride == [] else _pair(stride, self._path(n))
        p = _pair(padding, self._path(n))
        if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
            raise self._unsupported(n, f"max pool padding {p} larger than half the kernel {k}")
        self._add(MaxPool(name=self._path(n), inputs=(src,), shape=self._shape(n), kernel=k, stride=s,
                          padding=p, ceil_mode=bool(ceil_mode), in_shape=self.nodes[src].shape), n)

    def _gap(self, n: fx.Node) -> None:
        src = self._tensor(n.args[0], n)
        self._add(GlobalAvgPool(name=self._path(n), inputs=(src,), shape=self._shape(n),
                                in_shape=self.nodes[src].shape), n)

    def _adaptive_avg(self, n: fx.Node, size) -> None:
        if size not in (1, (1, 1), [1, 1], (1,)):
            raise self._unsupported(n, f"adaptive average pool to {size!r} (only global, size 1)")
        self._gap(n)

    def _avgpool(self, n: fx.Node, m: nn.AvgPool2d) -> None:
        self._full_map_average(n, m.kernel_size, m.padding)

    def _full_map_average(self, n: fx.Node, kernel, padding) -> None:
        src = self._tensor(n.args[0], n)
        hw = tuple(self.nodes[src].shape[1:])
        if (_pair(kernel, self._path(n)) != hw or _pair(padding, self._path(n)) != (0, 0)
                or self._shape(n)[1:] != (1, 1)):
            raise self._unsupported(n, f"average pool (kernel={kernel}, padding={padding}) on a {hw} "
                                       f"map: only an average over the whole map is supported")
        self._gap(n)

    def _mean(self, n: fx.Node, p: dict) -> None:
        dims = p["dim"]
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if sorted(d % 4 for d in dims) != [2, 3] or not p["keepdim"] or len(self._shape(n)) != 3:
            raise self._unsupported(n, f"mean over dims {p['dim']!r} (keepdim={p['keepdim']}): only the "
                                       f"spatial mean of an NCHW tensor with keepdim=True is supported")
        self._gap(n)

    def _flatten(self, n: fx.Node) -> None:
        src = self._tensor(n.args[0], n)
        self._add(Flatten(name=self._path(n), inputs=(src,), shape=self._shape(n)), n)

    # call_function / call_method
    def _function(self, n: fx.Node) -> None:
        t = n.target
        if t in _RELU_FUNCTIONS:
            self._relu(n, n.args[0] if n.args else n.kwargs["input"])
        elif t in (torch.cat, torch.concat):
            self._concat(n)
        elif t in _ADD_FUNCTIONS:
            self._binary_add(n, n.args, n.kwargs)
        elif t in _MUL_FUNCTIONS or t in _DIV_FUNCTIONS:
            self._scale(n, n.args, t in _DIV_FUNCTIONS)
        elif t is torch.flatten and self._flatten_ok(n):
            self._flatten(n)
        elif t is F.max_pool2d:
            p = _bind(n.args, n.kwargs, ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                         "return_indices"],
                      {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                       "return_indices": False})
            if p["return_indices"]:
                raise self._unsupported(n, "max_pool2d with return_indices")
            self._maxpool(n, p["kernel_size"], p["stride"], p["padding"], p["dilation"], p["ceil_mode"])
        elif t is F.adaptive_avg_pool2d:
            self._adaptive_avg(n, _bind(n.args, n.kwargs, ["input", "output_size"], {})["output_size"])
        elif t is F.avg_pool2d:
            p = _bind(n.args, n.kwargs, ["input", "kernel_size", "stride", "padding"], {"padding": 0})
            self._full_map_average(n, p["kernel_size"], p["padding"])
        elif t is torch.mean:
            self._mean(n, _bind(n.args, n.kwargs, *_MEAN_PARAMS))
        else:
            name = getattr(t, "__name__", repr(t))
            where = " (allowed only at the end of the network)" if self._is_host_capable(n) else ""
            raise self._unsupported(n, f"function {name} is not supported{where}")

    def _method(self, n: fx.Node) -> None:
        t = n.target
        if t in ("relu", "relu_"):
            self._relu(n, n.args[0])
        elif t in ("add", "add_", "__add__"):
            self._binary_add(n, n.args, n.kwargs)
        elif t in ("mul", "mul_", "__mul__", "div", "div_", "__truediv__"):
            self._scale(n, n.args, t.startswith(("div", "__truediv")))
        elif t == "flatten" and self._flatten_ok(n):
            self._flatten(n)
        elif t == "mean":
            self._mean(n, _bind(n.args, n.kwargs, *_MEAN_PARAMS))
        else:
            where = " (allowed only at the end of the network)" if self._is_host_capable(n) else ""
            raise self._unsupported(n, f"tensor method {t!r} is not supported{where}")

    def _concat(self, n: fx.Node) -> None:
        if self._concat_dim(n) is None:
            raise self._unsupported(n, "torch.cat is supported on the channel dimension of NCHW tensors only "
                                       "(or at the end of the network)")
        tensors = _bind(n.args, n.kwargs, ["tensors", "dim"], {})["tensors"]
        srcs = tuple(self._tensor(a, n) for a in tensors)
        self._add(Concat(name=self._path(n), inputs=srcs, shape=self._shape(n)), n)

    def _binary_add(self, n: fx.Node, args, kwargs) -> None:
        if kwargs.get("alpha", 1) != 1 or len(args) != 2:
            raise self._unsupported(n, "add with alpha or with other than two operands")
        a, b = args
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            raise self._unsupported(n, f"addition of a constant ({a!r} + {b!r}) is not supported")
        sa, sb = self._tensor(a, n), self._tensor(b, n)
        self._add(Add(name=self._path(n), inputs=(sa, sb), shape=self._shape(n)), n)

    def _scale(self, n: fx.Node, args, divide: bool) -> None:
        if len(args) != 2:
            raise self._unsupported(n, "multiplication with other than two operands")
        a, b = args
        if isinstance(a, fx.Node) and isinstance(b, fx.Node):
            raise self._unsupported(n, "multiplication by a tensor is not supported")
        if divide and not isinstance(a, fx.Node):
            raise self._unsupported(n, "division of a constant by a tensor is not supported")
        t, c = (a, b) if isinstance(a, fx.Node) else (b, a)
        if not isinstance(c, (int, float)):
            raise self._unsupported(n, f"multiplication by {c!r} (only a Python number can be folded)")
        c = 1.0 / float(c) if divide else float(c)
        src = self._tensor(t, n)
        conv = self.nodes[src]
        if not isinstance(conv, Conv) or not self._sole_user(src, n):
            raise self._unsupported(n, f"multiplication by a constant of {conv.op} {src!r}: only the output "
                                       f"of a convolution read by nothing else can absorb it")
        if conv.relu and c < 0:
            raise self._unsupported(n, f"negative scale {c} after a ReLU cannot be folded")
        conv.weight, conv.bias = fold_scale(conv.weight, conv.bias, c)
        conv.folded += (self._path(n),)
        self._fuse(src, n)

    def _check_adds(self) -> None:
        for node in self.nodes.values():
            if not isinstance(node, Add):
                continue
            convs = [self.nodes[i] for i in node.inputs]
            for c in convs:
                if not isinstance(c, Conv) or c.relu:
                    raise UnsupportedModelError(
                        f"{node.name}: operand {c.name!r} must be a convolution without ReLU "
                        f"(the add is computed as one dual convolution), got {c.op}"
                        f"{' with ReLU' if isinstance(c, Conv) and c.relu else ''}")
                users = [m for m in self.nodes.values() if c.name in m.inputs]
                if users != [node]:
                    raise UnsupportedModelError(f"{node.name}: operand {c.name!r} is also read by "
                                                f"{[u.name for u in users if u is not node]}")
            a, b = convs
            geo_a = (a.kernel_size, a.stride, a.padding, a.dilation)
            geo_b = (b.kernel_size, b.stride, b.padding, b.dilation)
            if geo_a != geo_b or a.shape != b.shape:
                raise UnsupportedModelError(
                    f"{node.name}: the two convolutions must have the same kernel, stride, padding and "
                    f"dilation to run as one dual convolution: {a.name} {geo_a} vs {b.name} {geo_b}")


def capture(model: nn.Module, input_shape: tuple[int, ...] = (3, 224, 224)) -> Graph:
    """Trace a float model into the IR.

    Parameters
    ----------
    model : torch.nn.Module
        A float model in eval mode, traceable by ``torch.fx.symbolic_trace``.
    input_shape : tuple of int
        Input shape without the batch dimension, for shape propagation.

    Returns
    -------
    Graph
        Nodes in topological order, BatchNorm/scale/ReLU folded, dropout removed.

    Raises
    ------
    ValueError
        When the model is in training mode.
    UnsupportedModelError
        For a construct the integer pipeline cannot represent (the message
        names the node and why), or when the model cannot be traced.
    """
    if model.training:
        raise ValueError(f"{type(model).__name__} is in training mode: call .eval() before capturing it "
                         f"(BatchNorm folding uses the running statistics)")
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # fx raises TraceError, TypeError, ... on data-dependent control flow
        raise UnsupportedModelError(f"{type(model).__name__} cannot be traced by torch.fx: {e}") from e
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros((1, *input_shape), dtype=dtype))
    return _Capture(gm).run()


# --- float interpreter -------------------------------------------------------------------------


def _conv_float(node: Conv, x: torch.Tensor) -> torch.Tensor:
    t, l, b, r = node.padding
    w = torch.from_numpy(node.weight).to(x.dtype)
    bias = torch.from_numpy(node.bias).to(x.dtype)
    y = F.conv2d(F.pad(x, (l, r, t, b)), w, bias, stride=node.stride, dilation=node.dilation,
                 groups=node.groups)
    return F.relu(y) if node.relu else y


def run_float(graph: Graph, x: torch.Tensor, *, keep: Callable[[str], bool] | None = None,
              observe: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Evaluate the float IR (folded weights) on a batch ``x`` of shape ``(N, *input_shape)``.

    Parameters
    ----------
    graph : Graph
    x : torch.Tensor
        Float input batch.
    keep : callable, optional
        ``keep(name) -> bool``: with it, a tensor is dropped as soon as its
        last consumer has run unless ``keep`` says otherwise (outputs are
        always kept). Without it every tensor is returned.
    observe : callable, optional
        ``observe(name, value)`` is called for every node output as it is
        computed (calibration uses it to record ranges without keeping them).

    Returns
    -------
    dict
        Tensor name -> batched value.
    """
    vals: dict[str, Any] = {}
    needed_by: dict[str, int] = {}
    for node in graph.nodes:
        for i in node.inputs:
            needed_by[i] = needed_by.get(i, 0) + 1
    out_set = set(graph.outputs)
    with torch.no_grad():
        for node in graph.nodes:
            ins = [vals[i] for i in node.inputs]
            if isinstance(node, Input):
                y = x
            elif isinstance(node, Conv):
                y = _conv_float(node, ins[0])
            elif isinstance(node, MaxPool):
                y = F.max_pool2d(ins[0], node.kernel, node.stride, node.padding, ceil_mode=node.ceil_mode)
            elif isinstance(node, GlobalAvgPool):
                y = ins[0].mean(dim=(2, 3), keepdim=True)
            elif isinstance(node, Concat):
                y = torch.cat(ins, 1)
            elif isinstance(node, Add):
                y = ins[0] + ins[1]
                y = F.relu(y) if node.relu else y
            elif isinstance(node, Flatten):
                y = ins[0].flatten(1)
            elif isinstance(node, HostOp):
                y = node.evaluate(vals)
            else:  # pragma: no cover
                raise TypeError(f"unknown node {node!r}")
            vals[node.name] = y
            if observe is not None:
                observe(node.name, y)
            if keep is not None:
                for i in node.inputs:
                    needed_by[i] -= 1
                    if needed_by[i] == 0 and i not in out_set and not keep(i):
                        del vals[i]
    return vals
