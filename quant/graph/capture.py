""":func:`capture`: a float ``nn.Module`` traced with ``torch.fx`` and lowered to the IR."""

from __future__ import annotations

import operator
import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..fold import fold_bn, fold_scale
from .ir import (
    Add,
    Concat,
    Conv,
    Flatten,
    GlobalAvgPool,
    Graph,
    HostOp,
    Input,
    MaxPool,
    Node,
    TensorRef,
    UnsupportedModelError,
)

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


def _where(path: str) -> str:
    """A module path as a refusal names it: a child of a top-level nn.Sequential, named by its index alone,
    is 'layer N'."""
    return f"layer {path}" if path.isdigit() else path


def _pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = tuple(v)
    if len(v) == 1:
        return int(v[0]), int(v[0])
    if len(v) != 2:
        raise UnsupportedModelError(f"{what}: expected an int or a pair, got {v!r}")
    return int(v[0]), int(v[1])


class _Refused:
    """The value of an fx node that was refused (or reads one): its readers are skipped, not refused again."""


class _Pad:
    """A zero pad waiting for the convolution that reads it: ``src`` tensor, ``(top, left, bottom, right)``."""

    def __init__(self, src: str, pad: tuple[int, int, int, int], path: str):
        self.src, self.pad, self.path = src, pad, path


class _SkipNode(Exception):
    """Raised when a node reads a refused value: the node is skipped (its refusal is its input's)."""


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
        if isinstance(a, fx.Node) and isinstance(self.value.get(a), _Refused):
            raise _SkipNode
        if isinstance(a, fx.Node) and isinstance(self.value.get(a), _Pad):
            raise UnsupportedModelError(f"{_where(self.value[a].path)}: a zero pad is supported only as the input "
                                        f"of a convolution (it folds into its padding), here it is read by "
                                        f"{_where(self._path(n))}")
        if not isinstance(a, fx.Node) or a not in self.value or not isinstance(self.value[a], str):
            raise UnsupportedModelError(f"{_where(self._path(n))}: argument {a!r} is not a tensor computed by the "
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
        refusals = []
        for n in self.gm.graph.nodes:
            try:
                self._lower(n)
            except _SkipNode:
                self.value[n] = _Refused()
            except UnsupportedModelError as e:
                if n.op in ("placeholder", "get_attr", "output"):
                    raise UnsupportedModelError(str(e), refusals + [str(e)]) from None
                refusals.append(str(e))
                self.value[n] = _Refused()
        if refusals:
            raise UnsupportedModelError(refusals[0], refusals)
        self._check_adds()
        return Graph(list(self.nodes.values()), self.inputs, self.outputs)

    def _lower(self, n: fx.Node) -> None:
        """One fx node into the IR (raises UnsupportedModelError naming it, or _SkipNode)."""
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
        return UnsupportedModelError(f"{_where(self._path(n))}: {what}")

    # call_module
    def _module(self, n: fx.Node) -> None:
        m = self.modules[n.target]
        if type(m) is nn.Conv2d:
            self._conv(n, m)
        elif isinstance(m, nn.BatchNorm2d):
            self._bn(n, m)
        elif type(m) is nn.ReLU:
            self._relu(n, n.args[0])
        elif type(m) is nn.ReLU6 or (type(m) is nn.Hardtanh and (m.min_val, m.max_val) == (0.0, 6.0)):
            self._relu6(n, n.args[0])
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
        elif isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d)):
            self._pad(n, n.args[0], m.padding, "constant", getattr(m, "value", 0.0))
        else:
            where = "" if not self._is_host_capable(n) else " (allowed only at the end of the network)"
            raise self._unsupported(n, f"module {type(m).__name__} is not supported{where}")

    def _pad(self, n: fx.Node, arg, pad, mode, value) -> None:
        """``nn.ZeroPad2d``, ``nn.ConstantPad2d`` (value 0) or ``F.pad`` (constant 0): kept as a pending pad of
        the tensor it reads, folded into the padding of the convolution that reads it."""
        pad = tuple(pad) if isinstance(pad, (tuple, list)) else (pad,) * 4
        if mode != "constant" or value not in (None, 0, 0.0):
            raise self._unsupported(n, f"pad mode {mode!r} value {value!r}: only a zero constant pad is supported "
                                       f"(it folds into the next convolution's padding)")
        if len(pad) == 2:
            pad = (*pad, 0, 0)
        if len(pad) != 4 or any(not isinstance(v, int) or v < 0 for v in pad):
            raise self._unsupported(n, f"pad {pad!r}: only non-negative padding of the last two dimensions "
                                       f"(left, right, top, bottom) is supported")
        left, right, top, bottom = pad
        prev = self.value.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(prev, _Pad):  # pad of a pad: the two add up
            t0, l0, b0, r0 = prev.pad
            self.value[n] = _Pad(prev.src, (t0 + top, l0 + left, b0 + bottom, r0 + right), self._path(n))
        else:
            self.value[n] = _Pad(self._tensor(arg, n), (top, left, bottom, right), self._path(n))

    def _conv(self, n: fx.Node, m: nn.Conv2d) -> None:
        pending = self.value.get(n.args[0]) if isinstance(n.args[0], fx.Node) else None
        extra = (0, 0, 0, 0)
        if isinstance(pending, _Pad):
            src, extra = pending.src, pending.pad
        else:
            src = self._tensor(n.args[0], n)
        in_shape = self.nodes[src].shape
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        if m.groups != 1 and not depthwise:
            raise self._unsupported(n, f"grouped convolution (groups={m.groups}) is not supported (only "
                                       f"depthwise: groups = input channels = output channels)")
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
        pad = tuple(a + b for a, b in zip(pad, extra, strict=True))
        w = m.weight.detach().double().numpy().copy()
        if depthwise:  # dense, zero off the diagonal: the arithmetic of the dense convolution is the same
            dense = np.zeros((m.out_channels, m.in_channels, kh, kw))
            dense[np.arange(m.out_channels), np.arange(m.out_channels)] = w[:, 0]
            w = dense
        b = (m.bias.detach().double().numpy().copy() if m.bias is not None
             else np.zeros(m.out_channels, dtype=np.float64))
        self._add(Conv(name=str(n.target), inputs=(src,), shape=self._shape(n), weight=w, bias=b,
                       stride=_pair(m.stride, self._path(n)), padding=pad, dilation=dil, groups=1,
                       in_shape=in_shape, depthwise=depthwise), n)

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

    def _relu6(self, n: fx.Node, arg) -> None:
        """ReLU6 folded into the convolution before it: the clamp ``[zp_out, zp_out + 6 / s_out]``."""
        src = self._tensor(arg, n)
        node = self.nodes[src]
        if not (isinstance(node, Conv) and self._sole_user(src, n) and not node.relu):
            raise self._unsupported(n, f"ReLU6 on {node.op} {src!r}: only a convolution whose output the ReLU6 "
                                       f"alone reads can absorb it")
        node.relu = node.relu6 = True
        node.folded += (self._path(n),)
        self._fuse(src, n)

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
        elif t is F.relu6:
            self._relu6(n, n.args[0] if n.args else n.kwargs["input"])
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
        elif t is F.pad:
            p = _bind(n.args, n.kwargs, ["input", "pad", "mode", "value"], {"mode": "constant", "value": None})
            self._pad(n, p["input"], p["pad"], p["mode"], p["value"])
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
        for node in list(self.nodes.values()):
            if not isinstance(node, Add):
                continue
            convs = [self.nodes[i] for i in node.inputs]
            why = self._dual_refusal(node, convs)
            if why is None:
                continue
            # One operand that is not such a convolution (an identity shortcut, a projection of another
            # geometry): written as an identity convolution with the other operand's geometry.
            for k in (1, 0):
                if self._dual_refusal(node, convs, identity=k) is None:
                    self._identity_operand(node, k, convs[1 - k])
                    break
            else:
                raise UnsupportedModelError(why)

    def _dual_refusal(self, node: Add, convs: list, identity: int | None = None) -> str | None:
        """Why ``node`` cannot run as one dual convolution (None when it can); with ``identity`` = k, operand
        k would be an identity convolution in the other operand's geometry."""
        for i, c in enumerate(convs):
            if i == identity:
                continue
            if not isinstance(c, Conv) or c.relu:
                return (f"{node.name}: operand {c.name!r} must be a convolution without ReLU "
                        f"(the add is computed as one dual convolution), got {c.op}"
                        f"{' with ReLU' if isinstance(c, Conv) and c.relu else ''}")
            users = [m for m in self.nodes.values() if c.name in m.inputs]
            if users != [node]:
                return f"{node.name}: operand {c.name!r} is also read by {[u.name for u in users if u is not node]}"
        if identity is not None:
            conv, other = convs[1 - identity], self.nodes[node.inputs[identity]]
            (pt, pl, _, _), (dy, dx) = conv.padding, conv.dilation
            if (conv.stride != (1, 1) or tuple(other.shape) != tuple(conv.shape) or pt % dy or pl % dx
                    or pt // dy >= conv.kernel_size[0] or pl // dx >= conv.kernel_size[1]):
                return f"{node.name}: the shortcut {other.name!r} does not line up with {conv.name!r}"
            return None
        a, b = convs
        geo_a = (a.kernel_size, a.stride, a.padding, a.dilation)
        geo_b = (b.kernel_size, b.stride, b.padding, b.dilation)
        if geo_a != geo_b or a.shape != b.shape:
            return (f"{node.name}: the two convolutions must have the same kernel, stride, padding and "
                    f"dilation to run as one dual convolution: {a.name} {geo_a} vs {b.name} {geo_b}")
        return None

    def _identity_operand(self, node: Add, k: int, conv: Conv) -> None:
        """Replace operand ``k`` of ``node`` by an identity convolution of it in ``conv``'s geometry; when the
        convolution reads that very tensor (``conv(x) + x``), add the identity to its weights instead."""
        src = node.inputs[k]
        c = self.nodes[src].shape[0]
        (pt, pl, _, _), (dy, dx) = conv.padding, conv.dilation
        weight = np.zeros((c, c, *conv.kernel_size))
        weight[np.arange(c), np.arange(c), pt // dy, pl // dx] = 1.0
        if conv.inputs[0] == src:
            conv.weight = conv.weight + weight
            conv.relu = node.relu
            conv.folded += (node.name,)
            order = [n for n in self.nodes.values() if n is not node]
            del self.nodes[conv.name]
            conv.name = node.name
            self.nodes = {n.name: n for n in order}
            return
        ident = Conv(name=f"{node.name}.identity", inputs=(src,), shape=tuple(conv.shape), weight=weight,
                     bias=np.zeros(c), stride=(1, 1), padding=conv.padding, dilation=conv.dilation, groups=1,
                     in_shape=tuple(self.nodes[src].shape))
        inputs = list(node.inputs)
        inputs[k] = ident.name
        node.inputs = tuple(inputs)
        order = list(self.nodes.values())
        order.insert(order.index(node), ident)
        self.nodes = {n.name: n for n in order}


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
