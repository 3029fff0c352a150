"""Calibration: observed float ranges -> per-tensor asymmetric int8 parameters.

:func:`calibrate` runs the folded float graph on calibration batches and
records each tensor's minimum and maximum. :func:`qparam_groups` lists the
tensors that must share one scale and zero point so that the integer graph
needs no rescaling between them:

* every input of a concat and the concat itself (a concat is then a pure
  placement of bytes; in a Fire module expand1x1 and expand3x3 write the
  output's scale and zero point directly);
* a max pool's input and output (max commutes with a monotonic affine map);
* a flatten's input and output;
* a global average pool's input and output (the default output scale is the
  input's; the average stays within the input's range).

Each group's range is the union of its members' ranges, widened to include
0, and gives ``scale = (max - min) / 255`` and
``zero_point = round(-128 - min / scale)`` (TFLite's asymmetric int8), so a
tensor whose minimum is 0 (a fused ReLU output) gets ``zero_point = -128``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from .arith import INT8_MAX, INT8_MIN
from .graph import Add, Concat, Flatten, GlobalAvgPool, Graph, HostOp, MaxPool, run_float

__all__ = ["QParams", "round_half_away", "qparams_from_range", "calibrate", "device_tensors",
           "qparam_groups"]


def round_half_away(x):
    """Round to the nearest integer, ties away from zero (C's ``round``, as TFLite); int or int64 array."""
    if isinstance(x, np.ndarray | torch.Tensor):
        x = np.asarray(x, dtype=np.float64)
        return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine quantization: ``real = scale * (q - zero_point)``, ``q`` int8."""

    scale: float
    zero_point: int

    def __post_init__(self):
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {self.scale!r}")
        if not (isinstance(self.zero_point, int) and INT8_MIN <= self.zero_point <= INT8_MAX):
            raise ValueError(f"zero point must be an int in [-128, 127], got {self.zero_point!r}")

    @property
    def real_min(self) -> float:
        """Smallest representable real value."""
        return self.scale * (INT8_MIN - self.zero_point)

    @property
    def real_max(self) -> float:
        """Largest representable real value."""
        return self.scale * (INT8_MAX - self.zero_point)


def qparams_from_range(lo: float, hi: float, min_scale: float = 0.0) -> QParams:
    """Asymmetric int8 parameters covering ``[min(lo, 0), max(hi, 0)]`` (TFLite style).

    ``scale = (hi - lo) / 255`` (at least ``min_scale``) and
    ``zero_point = round(-128 - lo / scale)``, clamped to [-128, 127]. A range
    that is all zero gets ``scale = max(1, min_scale)``, ``zero_point = -128``.

    Raises
    ------
    ValueError
        For non-finite bounds or ``lo > hi``.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"invalid calibration range [{lo!r}, {hi!r}]")
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max((hi - lo) / (INT8_MAX - INT8_MIN), float(min_scale))
    if scale == 0.0:
        return QParams(1.0, INT8_MIN)
    zp = round_half_away(INT8_MIN - lo / scale)
    return QParams(scale, int(min(max(zp, INT8_MIN), INT8_MAX)))


def device_tensors(graph: Graph) -> list[str]:
    """Tensors that exist as int8 on the integer side.

    All node outputs except host-op results and the two convolution outputs
    that an :class:`~quant.graph.Add` consumes (they live only inside the dual
    convolution's accumulator).
    """
    fused = {i for n in graph if isinstance(n, Add) for i in n.inputs}
    return [n.name for n in graph if not isinstance(n, HostOp) and n.name not in fused]


def calibrate(graph: Graph, batches: Iterable[torch.Tensor]) -> dict[str, tuple[float, float]]:
    """Run the float graph on calibration batches and record every device tensor's ``(min, max)``.

    The graph runs in float64: the ranges then do not depend on the thread
    count or the BLAS summation order, so the same model and batches give the
    same :class:`~quant.quantize.QGraph` on every machine.

    Parameters
    ----------
    graph : Graph
        The captured float graph.
    batches : iterable of torch.Tensor
        Float batches of shape ``(N, *input_shape)``.

    Returns
    -------
    dict
        Tensor name -> ``(min, max)`` over all batches (not yet widened to include 0).

    Raises
    ------
    ValueError
        When no batch was given or a tensor has a non-finite value.
    """
    names = set(device_tensors(graph))
    ranges: dict[str, tuple[float, float]] = {}

    def observe(name, v):
        if name not in names:
            return
        lo, hi = float(v.min()), float(v.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"tensor {name!r} has non-finite values during calibration")
        if name in ranges:
            lo, hi = min(lo, ranges[name][0]), max(hi, ranges[name][1])
        ranges[name] = (lo, hi)

    seen = 0
    for x in batches:
        seen += 1
        run_float(graph, x.double(), keep=lambda _name: False, observe=observe)
    if not seen:
        raise ValueError("calibration needs at least one batch")
    return ranges


def qparam_groups(graph: Graph) -> list[list[str]]:
    """Partition the device tensors into groups that must share one :class:`QParams`.

    Returns the groups in order of their first member's position in the graph;
    singleton groups included.
    """
    names = device_tensors(graph)
    parent = {n: n for n in names}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    for node in graph:
        if isinstance(node, (Concat, MaxPool, Flatten, GlobalAvgPool)):
            for i in node.inputs:
                union(i, node.name)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(find(n), []).append(n)
    return list(groups.values())

