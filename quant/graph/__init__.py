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

The package by what it holds: :mod:`.ir` (the nodes and the graph),
:mod:`.capture` (``torch.fx`` -> IR), :mod:`.interpret` (the float
interpreter, :func:`run_float`).
"""

from . import ir
from .capture import capture
from .interpret import run_float
from .ir import *  # noqa: F403 (the IR's names, listed once in ir.__all__)

__all__ = [*ir.__all__, "capture", "run_float"]
