""":func:`compile_graph`: plan, place, allocate and emit, then check every command."""

from __future__ import annotations

from hw.isa import EngineConfig, ErrorCode, check_command
from hw.layout import cdiv
from quant.quantize import QGraph, QMaxPool

from .emit import _Emission
from .memory import _Memory
from .packing import pair_packed_conv
from .planning import _Op, _Planning
from .program import CompileError, Program, Root, TensorView


class _Compiler(_Planning, _Memory, _Emission):
    """The state of one compilation; its stages are the mixins of :mod:`.planning`, :mod:`.memory`, :mod:`.emit`."""

    def __init__(self, qgraph: QGraph, cfg: EngineConfig, *, mem_words: int | None, reuse: bool = True):
        self.reuse = reuse
        self.g = qgraph
        self.cfg = cfg
        self.R = cfg.rows
        self.mem_words = mem_words
        self.parent: dict[str, tuple[str, int]] = {}   # tensor -> (container tensor, lane offset)
        self.roots: dict[str, Root] = {}
        self.views: dict[str, TensorView] = {}
        self._virtual: dict[str, tuple[int, int, int]] = {}   # residual-add inputs: name -> shape
        self.fused_pools: dict[str, QMaxPool] = {}

def compile_graph(qgraph: QGraph, config: EngineConfig | None = None, *, mem_words: int | None = None,
                  reuse_memory: bool = True) -> Program:
    """Schedule a quantized network onto an engine configuration.

    Parameters
    ----------
    qgraph : QGraph
    config : EngineConfig
        Buffer sizes and array geometry the schedule must fit.
    mem_words : int, optional
        Memory available to the engine; :class:`CompileError` if the plan needs more.
    reuse_memory : bool
        Let a tensor take the region of one whose readers have all run (default). Without it every
        tensor keeps its own region, so that all of them can be read after a run.

    Raises
    ------
    CompileError
        A layer the engine cannot run (named, with the reason), or a plan that does not fit.
    """
    config = config or EngineConfig()
    c = _Compiler(qgraph, config, mem_words=mem_words, reuse=reuse_memory)
    ops = c.plan()
    c.place(ops)
    # Weight blobs first (their size does not depend on placement), then activations.
    blob_words = _blob_words_needed(c, ops)
    top = c.allocate(ops, blob_words)
    steps, blobs = c.emit(ops, 0)
    assert c._blob_top == blob_words, (c._blob_top, blob_words)
    cmd_addr = top
    prof_addr = cmd_addr + len(steps) * config.cmd_words
    mem_needed = prof_addr + len(steps) * config.profile_words
    if mem_words is not None and mem_needed > mem_words:
        raise CompileError(qgraph.outputs[0] if qgraph.outputs else "network",
                           f"the program needs {mem_needed} memory words, the engine has {mem_words}")
    for i, s in enumerate(steps):
        code = check_command(config, s.command)
        if code != ErrorCode.NONE:  # pragma: no cover - a scheduler bug, never the user's
            raise AssertionError(f"step {i} ({s.layer}) would be refused: {code.name}")
    outputs = c._engine_outputs()
    return Program(config=config, qgraph=qgraph, steps=steps, blobs=blobs, views=c.views,
                   inputs=list(qgraph.inputs), outputs=outputs, cmd_addr=cmd_addr, prof_addr=prof_addr,
                   mem_words=mem_needed, layer_order=list(dict.fromkeys(s.layer for s in steps)),
                   packed_inputs=dict(c.packed_inputs))


def _blob_words_needed(c: _Compiler, ops: list[_Op]) -> int:
    R = c.R
    total = 0
    for op in ops:
        if op.kind == "conv" and getattr(op.node, "depthwise", False):
            cout, _, kh, kw = op.node.weight.shape
            C = c.cfg.cols
            total += sum(c._blob_size(min(C, cout - c0), cdiv(min(C, cout - c0), R) * R, kh, kw)
                         for c0 in range(0, cout, C))
        elif op.kind == "conv":
            w = op.node.weight
            if op.src in c.packed_inputs:
                w = pair_packed_conv(w, op.node.padding[1], R)[0]
            total += c._blob_size(w.shape[0], c.views[op.src].cb(R) * R, w.shape[2], w.shape[3])
        elif op.kind == "fire":
            g = c.g
            sq, e1, e3 = g[op.node.squeeze], g[op.node.expand1x1], g[op.node.expand3x3]
            sq_cb = cdiv(sq.out_channels, R)
            total += c._blob_size(sq.out_channels, c.views[op.src].cb(R) * R, 1, 1)
            total += c._blob_size(e1.out_channels, sq_cb * R, 1, 1)
            total += c._blob_size(e3.out_channels, sq_cb * R, 3, 3)
    return total
