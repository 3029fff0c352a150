""":func:`run_float`: the float IR (folded weights) evaluated with PyTorch, for calibration and reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .ir import Add, Concat, Conv, Flatten, GlobalAvgPool, Graph, HostOp, Input, MaxPool


def _conv_float(node: Conv, x: torch.Tensor) -> torch.Tensor:
    t, l, b, r = node.padding
    w = torch.from_numpy(node.weight).to(x.dtype)
    bias = torch.from_numpy(node.bias).to(x.dtype)
    y = F.conv2d(F.pad(x, (l, r, t, b)), w, bias, stride=node.stride, dilation=node.dilation,
                 groups=node.groups)
    if node.relu6:
        return y.clamp(0.0, 6.0)
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
