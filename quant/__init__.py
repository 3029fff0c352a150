"""Float PyTorch model -> integers: capture, BatchNorm folding, calibration, quantization, golden model.

The pipeline: :func:`quant.graph.capture` (torch.fx -> :class:`Graph`),
:func:`quant.calibrate.calibrate` (observed ranges),
:func:`quant.quantize.quantize` (-> :class:`QGraph`: int8 weights, int32
biases, per-channel requantization) or all three at once with
:func:`quantize_model`; :mod:`quant.golden` is the bit-exact integer
specification the hardware is tested against and :mod:`quant.arith` the
shared integer arithmetic. See docs/QUANT.md.

The functions ``calibrate`` and ``quantize`` are deliberately not re-exported
here: they would shadow the submodules of the same name
(``import quant.quantize`` must give the module).
"""

from . import arith, golden
from .calibrate import QParams, qparam_groups, qparams_from_range
from .fold import fold_bn, fold_conv_bn
from .graph import Graph, UnsupportedModelError, capture, run_float
from .quantize import (
    FireMatch,
    QConcat,
    QConv,
    QDualConv,
    QFlatten,
    QGlobalAvgPool,
    QGraph,
    QInput,
    QMaxPool,
    QTensor,
    quantize_model,
)

__all__ = [
    "arith", "golden",
    "QParams", "qparam_groups", "qparams_from_range",
    "fold_bn", "fold_conv_bn",
    "Graph", "UnsupportedModelError", "capture", "run_float",
    "FireMatch", "QConcat", "QConv", "QDualConv", "QFlatten", "QGlobalAvgPool", "QGraph", "QInput",
    "QMaxPool", "QTensor", "quantize_model",
]
