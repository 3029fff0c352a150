"""Running an imported :class:`~quant.tflite.importer.TFLiteGraph` on the host, exactly (numpy int64).

:func:`run` returns every tensor the graph computes, by name: the model inputs and each
operator's output, int8 arrays in TFLite's shapes (NHWC).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .importer import TFLiteGraph

__all__ = ["run", "outputs"]


def _check_input(graph: TFLiteGraph, name: str, x) -> np.ndarray:
    t = graph.tensors[name]
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"model input {name!r}: expected int8 values, got dtype {a.dtype}")
    if a.size and (a.min() < -128 or a.max() > 127):
        raise ValueError(f"model input {name!r}: values outside the int8 range [{a.min()}, {a.max()}]")
    if tuple(a.shape) != tuple(t.shape):
        if a.size != int(np.prod(t.shape, dtype=np.int64)):
            raise ValueError(f"model input {name!r}: shape {list(a.shape)}, the model expects {list(t.shape)}")
        a = a.reshape(t.shape)
    return a.astype(np.int8)


def run(graph: TFLiteGraph, inputs: np.ndarray | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Run the graph on int8 ``inputs`` (one array, or one per model input in the file's order).

    Returns ``{tensor name: int8 array}`` for the model inputs and every operator's output
    (intermediates and model outputs alike). An input with the right number of values but another
    shape is reshaped to the model's; wrong counts or non-int8 values raise ``ValueError``.
    """
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
        inputs = [inputs]
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"the model has {len(graph.inputs)} inputs, {len(inputs)} given")
    env = {name: _check_input(graph, name, x) for name, x in zip(graph.inputs, inputs, strict=True)}
    for op in graph.operators:
        args = [env[n] if n in env else graph.tensors[n].data for n in op.inputs]
        env[op.output] = op.run(*args)
    return env


def outputs(graph: TFLiteGraph, inputs: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """The model outputs only, in the file's order."""
    env = run(graph, inputs)
    return [env[n] for n in graph.outputs]
