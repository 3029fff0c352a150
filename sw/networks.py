"""The networks the project runs end to end, and how each one goes from a picture to an answer.

For each network: the float model (written in sw/models, weights from
../shared), its calibration set (never the pictures it is evaluated on), the
quantized integer graph, the engine program, the host's pre- and
post-processing. :class:`Runner` runs one on any backend:

* ``golden``: the command list executed by the golden model (seconds);
* ``verilator``: the engine's Verilog, cycle-accurate (minutes);
* ``serial``: a board on a UART (``port=...``).

Every engine layer's output can be compared with the golden model's as it is
produced (``check=True``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
import torch

from hw.isa import EngineConfig
from quant import golden
from sw.compiler import Program, compile_graph
from sw.driver import Driver
from sw.report import NetworkReport, network_report
from sw.resident import ResidentSession
from sw.runtime import NetworkRun, Session, host_finish, run_network

__all__ = ["NETWORKS", "Runner", "engine_backend", "quantized", "calibration"]

NETWORKS = {
    "squeezenet": "SqueezeNet 1.1 (ImageNet classifier, 224x224)",
    "rfsong": "RFSong-779 (RFB-lite SSD person detector, 300x300)",
    "faster_rcnn": "SqueezeNet 1.1 + Faster R-CNN (RPN and R-CNN head seeded random)",
}

#: Faster R-CNN input: short side of the picture (600 in the paper; smaller keeps Verilator runs short).
FRCNN_SHORT_SIDE = 224
FRCNN_MAX_SIDE = 400
#: Proposals sent to the R-CNN head on the engine.
FRCNN_PROPOSALS = 8


@functools.cache
def _rfsong_float():
    from sw.models.rfsong import load_rfsong779

    return load_rfsong779()


@functools.cache
def _frcnn_float():
    from sw.models.faster_rcnn import build_faster_rcnn

    return build_faster_rcnn()


def calibration(name: str, kind: str = "default") -> torch.Tensor:
    """The calibration batch of a network (disjoint from the pictures the tests evaluate on)."""
    from sw.preprocess import ssd_preprocess
    from sw.shared import require_shared

    if name == "squeezenet":
        from sw.models.squeezenet import calibration_batch

        return calibration_batch("imagenet" if kind == "default" else kind)
    if name == "rfsong":
        # The two photographs without people (the people_* pictures are the evaluation set), and mirrors.
        xs = []
        for n in ("images/coco_cat.jpg", "images/coco_dog.jpg"):
            x, _ = ssd_preprocess(require_shared(n))
            xs += [x, x.flip(3)]
        return torch.cat(xs)
    raise ValueError(f"no calibration set for {name!r}")


@functools.cache
def quantized(name: str, kind: str = "default"):
    """The quantized integer graph of a network (cached for the process)."""
    from quant.quantize import quantize_model

    if name == "squeezenet":
        from sw.models.squeezenet import quantize_squeezenet11

        return quantize_squeezenet11("imagenet" if kind == "default" else kind)
    if name == "rfsong":
        eng = _rfsong_float().engine_module().eval()
        return quantize_model(eng, calibration("rfsong"), (3, 300, 300))
    raise ValueError(f"unknown network {name!r}; choose from {list(NETWORKS)}")


def engine_backend(backend: str, config: EngineConfig, mem_words: int, *, port: str | None = None,
                   stalls: float = 0.0, verbose: bool = False):
    """A transport (:func:`sw.backends.open_backend`) to an engine of ``config`` for a program of ``mem_words``.

    The Verilator memory is a power of two of at least 1 Mi words (one cached model for most programs).
    """
    from sw.backends import open_backend

    if backend == "golden":
        return open_backend("golden", config=config, mem_words=mem_words)
    if backend == "verilator":
        return open_backend("verilator", config=config, mem_words=max(1 << 20, 1 << (mem_words - 1).bit_length()),
                            stalls=stalls, verbose=verbose)
    if backend == "serial" and port is None:
        raise ValueError("the serial backend needs --port")
    if backend == "serial":
        return open_backend("serial", port=port, config=config)
    return open_backend(backend)     # an unknown name: the registry's one-line error


@dataclasses.dataclass
class Result:
    """What one picture gave: the network outputs, the run, and the per-layer report."""

    outputs: list
    run: NetworkRun
    report: NetworkReport
    extra: dict = dataclasses.field(default_factory=dict)


class Runner:
    """One network compiled for one engine, on one backend.

    Parameters
    ----------
    network : str
        A key of :data:`NETWORKS` (``faster_rcnn`` has its own :class:`FasterRCNNRunner`).
    backend : str
        ``golden``, ``verilator`` or ``serial``.
    config : EngineConfig
    check : bool
        Also run the golden model and compare every engine layer with it.
    clock_mhz : float
        Clock for frames-per-second figures.
    serial_options : dict or None
        Keyword arguments of :class:`sw.backends.serial.SerialBackend` (``timeout``...) for the serial backend.

    With the serial backend the board is connected (and identified) before
    the network is quantized, so a wrong port fails at once.
    """

    def __init__(self, network: str, backend: str = "golden", config: EngineConfig | None = None, *,
                 check: bool = True, clock_mhz: float = 100.0, port: str | None = None, kind: str = "default",
                 progress: bool = True, qgraph=None, stalls: float = 0.0, serial_options: dict | None = None):
        self.network = network
        self.backend = backend
        self.config = config or EngineConfig()
        self.check = check
        self.clock_mhz = clock_mhz
        self.progress = progress
        if backend == "serial":
            # The board decides the configuration: read it, compile for it, stage through its memory.
            from sw.staging import board_transport, compile_for_board, connect_board

            if port is None:
                raise ValueError("the serial backend needs --port (a device such as /dev/ttyUSB1, or sim:<board>)")
            from sw.resident import has_dram

            board = connect_board(port, **(serial_options or {}))
            try:
                self.qgraph = qgraph if qgraph is not None else quantized(network, kind)
                if has_dram(board):
                    # The program lives in the board's DRAM: compiled for the board itself, uploaded once.
                    self.program = compile_graph(self.qgraph, board.config)
                    self.config = board.config
                    self.transport = board
                    self.session = ResidentSession(self.program, Driver(board, self.config))
                    return
                self.program, _ = compile_for_board(self.qgraph, board.config, board.mem_words)
                self.config = self.program.config    # the board's, addresses widened for staging
                self.transport = board_transport(board, self.program)
            except BaseException:
                board.close()
                raise
        else:
            self.qgraph = qgraph if qgraph is not None else quantized(network, kind)
            self.program: Program = compile_graph(self.qgraph, self.config)
            self.transport = engine_backend(backend, self.config, self.program.mem_words, port=port, stalls=stalls)
        self.session = Session(self.program, Driver(self.transport, self.config, timed=backend != "golden"))

    def close(self):
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run_float(self, x: torch.Tensor) -> Result:
        """Quantize ``x``, run the engine layer by layer (a DRAM board: in one run), finish on the host."""
        g = self.qgraph
        x_q = golden.quantize_input(x, g.qparams(g.inputs[0]))
        reference = golden.run(g, x_q) if self.check else None
        if isinstance(self.session, ResidentSession):
            return self._run_resident(x_q, reference)
        t0 = time.monotonic()
        run = run_network(self.session, x_q, reference=reference, progress=self.progress, desc=self.network)
        wall = time.monotonic() - t0
        outputs = host_finish(g, run.tensors)
        rep = network_report(self.program, run.profile, network=self.network, backend=self.backend, wall_s=wall,
                             cycles=run.cycles, clock_mhz=self.clock_mhz, exact=run.exact)
        return Result(outputs=outputs, run=run, report=rep)


    def run_float_many(self, xs):
        """:meth:`run_float` on every input of the iterable ``xs``; yield each :class:`Result` in order.

        On a DRAM board with two input buffers the frames are pipelined (:meth:`ResidentSession.frames`):
        the next picture crosses the link while the engine computes the current one.
        """
        if not isinstance(self.session, ResidentSession):
            for x in xs:
                yield self.run_float(x)
            return
        g = self.qgraph
        refs = []

        def pictures():
            for x in xs:
                x_q = golden.quantize_input(x, g.qparams(g.inputs[0]))
                refs.append(golden.run(g, x_q) if self.check else None)
                yield x_q

        for inf, frame in self.session.frames(pictures(), run_link=False):
            yield self._resident_result(inf, frame, refs.pop(0))

    def _run_resident(self, x_q, reference) -> Result:
        """One frame on a DRAM board: picture in, one run, outputs out; compared with the golden outputs."""
        inf, frame = self.session.frame(x_q)
        return self._resident_result(inf, frame, reference)

    def _resident_result(self, inf, frame, reference) -> Result:
        from hw.boards import BOARDS
        from sw.resident import BOARD_DRAM_BYTES_PER_CYCLE, DRAM_BYTES_PER_CYCLE, fps_estimate

        exact, first_bad = None, {}
        if reference is not None:
            exact = {n: bool(np.array_equal(inf.tensors[n], reference[n])) for n in self.program.outputs}
            for n, ok in exact.items():
                if not ok:
                    bad = np.argwhere(inf.tensors[n] != reference[n])[:8]
                    first_bad[n] = [(tuple(int(v) for v in b), int(inf.tensors[n][tuple(b)]),
                                     int(reference[n][tuple(b)])) for b in bad]
        run = NetworkRun(tensors=inf.tensors, profile=None, exact=exact, first_mismatch=first_bad,
                         cycles=inf.run.cycles, wall_s=frame.wall_s)
        info = self.transport.info
        spec = BOARDS.get(getattr(self.transport, "board", ""))
        clk = info["clk_hz"] or self.clock_mhz * 1e6
        rep = network_report(self.program, None, network=self.network, backend=self.backend, wall_s=frame.wall_s,
                             cycles=run.cycles, clock_mhz=clk / 1e6, exact=exact)
        # With two input buffers the picture crosses while the engine runs (ResidentSession.frames).
        est = fps_estimate(self.program, cycles=run.cycles or 1, link_bytes=frame.bytes, clk_hz=clk,
                           baud=_link_baud(spec, info),
                           overlap_bytes=frame.picture_bytes if self.session.double_buffered else 0,
                           dram_bytes_per_cycle=BOARD_DRAM_BYTES_PER_CYCLE.get(getattr(spec, "name", ""),
                                                                               DRAM_BYTES_PER_CYCLE))
        return Result(outputs=host_finish(self.qgraph, inf.tensors), run=run, report=rep,
                      extra={"frame": frame, "fps": est, "uploads": self.session.uploads})


def _link_baud(spec, info: dict) -> int:
    """The line rate for frames-per-second figures: the board's UART rate, or USB's when its INFO says so."""
    from hw.link.protocol import USB_HS_BAUD

    return info["baud"] if spec is None or info["baud"] == USB_HS_BAUD else spec.baud


def classify(runner: Runner, image: str | Path | torch.Tensor,
             top: int = 5) -> tuple[Result, list[tuple[int, str, float]]]:
    """SqueezeNet on a picture (ImageNet preprocessing), a ``.npy`` input fed as it is, or an input tensor."""
    from sw.shared import imagenet_preprocess

    if isinstance(image, torch.Tensor):
        x = image
    else:
        path = Path(image)
        x = torch.from_numpy(np.load(path)).float() if path.suffix == ".npy" else imagenet_preprocess(path)
    return _top_classes(runner.run_float(x), top)


def classify_many(runner: Runner, xs, top: int = 5):
    """SqueezeNet on every preprocessed input tensor of ``xs``, pipelined on a DRAM board: yield
    ``(Result, top classes)`` in order."""
    for res in runner.run_float_many(xs):
        yield _top_classes(res, top)


def _top_classes(res: Result, top: int) -> tuple[Result, list[tuple[int, str, float]]]:
    from sw.shared import imagenet_labels

    logits = res.outputs[0].reshape(-1)
    prob = torch.softmax(logits.double(), 0)
    labels = imagenet_labels()
    order = torch.argsort(prob, descending=True)[:top]
    return res, [(int(i), labels[int(i)], float(prob[i])) for i in order]


def detect(runner: Runner, image: str | Path):
    """RFSong-779 on a picture: detections in picture pixels."""
    from sw.preprocess import ssd_preprocess

    x, size = ssd_preprocess(image)
    return next(detect_many(runner, [(x, size)]))


def detect_many(runner: Runner, inputs):
    """RFSong-779 on every ``(input tensor, picture size)`` of ``inputs`` (:func:`sw.preprocess.ssd_preprocess`),
    pipelined on a DRAM board: yield ``(Result, detections)`` in order."""
    from sw.detect import ssd_postprocess
    from sw.models.rfsong import flatten_heads

    sizes = []

    def xs():
        for x, size in inputs:
            sizes.append(size)
            yield x

    for res in runner.run_float_many(xs()):
        loc, conf = flatten_heads([o.numpy() for o in res.outputs])
        yield res, ssd_postprocess(loc, conf, sizes.pop(0))
