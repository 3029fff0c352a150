"""Running a compiled :class:`~sw.compiler.Program` through the driver, and the host's share of the network."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from quant import golden
from quant.graph import HostOp
from sw.compiler import Program
from sw.driver import Driver, RunResult

__all__ = ["Session", "Inference"]


@dataclasses.dataclass
class Inference:
    """One run: the int8 tensors the host read back, and the run's counters."""

    tensors: dict[str, np.ndarray]
    run: RunResult


class Session:
    """A program installed on an engine: weights written once, then any number of inferences.

    Parameters
    ----------
    program : Program
    driver : Driver
        Its transport must reach at least ``program.mem_words`` words.
    identify : bool
        Check the engine's identification and configuration first (default).
    """

    def __init__(self, program: Program, driver: Driver, *, identify: bool = True):
        self.program = program
        self.driver = driver
        if identify:
            driver.identify()
        for addr, words in program.blobs:
            driver.write_words(addr, words)
        driver.write_commands(program.cmd_addr, program.commands)

    def run_int8(self, x_q: np.ndarray, *, profile: bool = True, timeout: float = 3600.0,
                 read: list[str] | None = None, steps: tuple[int, int] | None = None) -> Inference:
        """Run the whole program (or ``steps = (first, count)``) on the int8 input; read the outputs back.

        ``read`` names more tensors to read (for layer-by-layer comparisons).
        """
        p = self.program
        (inp,) = p.inputs
        addr, words, pix = p.pack_tensor(inp, np.asarray(x_q).reshape(p.qgraph.tensors[inp].shape))
        cb = words.shape[0] // (p.views[inp].h * p.views[inp].w)
        if pix == cb:
            self.driver.write_words(addr, words)
        else:  # pragma: no cover - inputs are roots of their own
            raise AssertionError("the input tensor is stored inside another")
        first, count = steps if steps is not None else (0, len(p.steps))
        res = self.driver.run(p.cmd_addr + first * p.config.cmd_words, count,
                              profile_addr=p.prof_addr + first * p.config.profile_words if profile else None,
                              timeout=timeout)
        names = list(dict.fromkeys([*p.outputs, *(read or [])]))
        tensors = {n: p.unpack_tensor(n, self.driver.read_words) for n in names}
        return Inference(tensors=tensors, run=res)

    def infer(self, x_float: torch.Tensor, **kw) -> tuple[list, Inference]:
        """Quantize a float input, run the engine, finish the network on the host (float host ops).

        Returns the graph outputs (as :func:`quant.golden.infer` does) and the :class:`Inference`.
        """
        p = self.program
        g = p.qgraph
        (inp,) = p.inputs
        x_q = golden.quantize_input(x_float, g.qparams(inp))
        inf = self.run_int8(x_q, **kw)
        return host_finish(g, inf.tensors), inf


def host_finish(qgraph, tensors: dict[str, np.ndarray]) -> list:
    """Dequantize the engine's outputs and run the graph's host operations; return the graph outputs."""
    values = {}
    for name, q in tensors.items():
        values[name] = torch.from_numpy(golden.dequantize(q, qgraph.qparams(name))).unsqueeze(0)
    for node in qgraph.nodes:
        if isinstance(node, HostOp):
            values[node.name] = node.evaluate(values)
        elif node.op == "flatten" and node.inputs[0] in values:
            values[node.name] = values[node.inputs[0]].reshape(1, -1)
    return [values[o] for o in qgraph.outputs]


@dataclasses.dataclass
class LayerResult:
    """One layer run on its own: exactness against the golden model and where its cycles went."""

    layer: str
    kind: str
    detail: str
    commands: int
    macs: int
    profile: dict[str, int]        # PROFILE_FIELDS summed over the layer's commands (empty without timing)
    bit_exact: bool
    mismatches: int
    first_mismatches: list         # [(channel, y, x, engine, golden)]
    read_bytes: int
    write_bytes: int
    wall_s: float

    @property
    def cycles(self) -> int:
        return self.profile.get("cycles", 0)

    def utilization(self, config) -> float:
        return self.macs / (self.cycles * config.macs_per_cycle) if self.cycles else float("nan")


def write_tensor(session: Session, name: str, x: np.ndarray) -> None:
    """Place an int8 ``(C, H, W)`` tensor where the program keeps it (pixel by pixel inside a concat)."""
    p = session.program
    addr, words, pix = p.pack_tensor(name, x)
    view = p.views[name]
    cb = words.shape[0] // (view.h * view.w)
    if pix == cb:
        session.driver.write_words(addr, words)
    else:
        for q in range(view.h * view.w):
            session.driver.write_words(addr + q * pix, words[q * cb:(q + 1) * cb])


def run_layer(session: Session, layer: str, tensors: dict[str, np.ndarray]) -> LayerResult:
    """Run the commands of one layer with the golden model's input, and compare its output exactly.

    ``tensors`` holds the golden model's int8 tensors (``quant.golden.run``); the layer's
    stored input is written from it, so every layer is checked on real activations even when
    run alone.
    """
    import time as _time

    p = session.program
    idx = p.layer_steps()[layer]
    first, count = idx[0], len(idx)
    assert idx == list(range(first, first + count)), f"{layer}: steps are not consecutive"
    steps = [p.steps[i] for i in idx]
    src, out = steps[0].source, steps[0].output
    # The stored input: the tensor itself, or every part of it (a residual add's two halves).
    parts = [src] if src in tensors else [n for n, v in p.views.items()
                                          if v.root is p.views[src].root and n in tensors and n != out]
    for name in parts:
        write_tensor(session, name, tensors[name])
    t0 = _time.monotonic()
    res = session.driver.run(p.cmd_addr + first * p.config.cmd_words, count,
                             profile_addr=p.prof_addr + first * p.config.profile_words)
    wall = _time.monotonic() - t0
    got = p.unpack_tensor(out, session.driver.read_words)
    exp = tensors[out]
    bad = np.argwhere(got != exp)
    prof = {}
    for rec in res.profile or []:
        for k, v in rec.items():
            prof[k] = prof.get(k, 0) + v
    return LayerResult(
        layer=layer, kind=steps[0].kind, detail=steps[0].detail, commands=count,
        macs=sum(s.macs for s in steps), profile=prof, bit_exact=not len(bad), mismatches=len(bad),
        first_mismatches=[(int(c), int(y), int(x), int(got[c, y, x]), int(exp[c, y, x])) for c, y, x in bad[:8]],
        read_bytes=sum(s.read_bytes for s in steps), write_bytes=sum(s.write_bytes for s in steps), wall_s=wall)


@dataclasses.dataclass
class NetworkRun:
    """A whole network run layer by layer: outputs, per-command profile, per-layer exactness."""

    tensors: dict[str, np.ndarray]       # the program's outputs (what the host reads)
    profile: list[dict] | None           # per command, in program order (None without timing)
    exact: dict[str, bool] | None        # layer output tensor -> equal to the reference
    first_mismatch: dict[str, list]      # layer output tensor -> first mismatching values
    cycles: int | None
    wall_s: float


def run_network(session: Session, x_q: np.ndarray, *, reference: dict[str, np.ndarray] | None = None,
                progress: bool = False, desc: str = "engine", timeout: float = 3600.0) -> NetworkRun:
    """Run the program one layer at a time, reading each layer's output as soon as it is written.

    With ``reference`` (``quant.golden.run``'s tensors) every layer's output is compared with the
    golden model's before a later layer can overwrite its memory. ``progress`` shows a bar.
    """
    import time as _time

    from tqdm import tqdm

    p = session.program
    (inp,) = p.inputs
    addr, words, _ = p.pack_tensor(inp, np.asarray(x_q).reshape(p.qgraph.tensors[inp].shape))
    session.driver.write_words(addr, words)
    layers = p.layer_steps()
    profile = [] if session.driver.timed else None
    exact = {} if reference is not None else None
    first_bad = {}
    cycles = 0 if session.driver.timed else None
    t0 = _time.monotonic()
    bar = tqdm(p.layer_order, desc=desc, unit="layer", disable=None if progress else True, leave=False)
    for layer in bar:
        idx = layers[layer]
        first, count = idx[0], len(idx)
        bar.set_postfix_str(layer[-24:])
        res = session.driver.run(p.cmd_addr + first * p.config.cmd_words, count,
                                 profile_addr=p.prof_addr + first * p.config.profile_words, timeout=timeout)
        if profile is not None:
            profile += res.profile
            cycles += res.cycles
        if reference is not None:
            out = p.steps[first].output
            got = p.unpack_tensor(out, session.driver.read_words)
            ok = np.array_equal(got, reference[out])
            exact[out] = ok
            if not ok:
                bad = np.argwhere(got != reference[out])[:8]
                first_bad[out] = [(tuple(int(v) for v in b), int(got[tuple(b)]), int(reference[out][tuple(b)]))
                                  for b in bad]
    bar.close()
    wall = _time.monotonic() - t0
    tensors = {n: p.unpack_tensor(n, session.driver.read_words) for n in p.outputs}
    return NetworkRun(tensors=tensors, profile=profile, exact=exact, first_mismatch=first_bad, cycles=cycles,
                      wall_s=wall)
