"""SqueezeNet 1.1 + Faster R-CNN end to end: two engine programs with the host's steps between them.

Engine part 1 (backbone to fire9, RPN 3x3 conv and its 1x1 objectness/box
convs) -> host: proposals (softmax, decode, NMS) and 7x7 ROI max pooling at
1/16 on the int8 fire9 features (a max pool keeps their quantization) ->
engine part 2 (R-CNN head: 1x1 conv 1000 + ReLU, global average, class and
box 1x1 convs), once per proposal -> host: softmax, decoding, per-class NMS.

The backbone is the pretrained SqueezeNet 1.1; the RPN and R-CNN heads are
seeded random (no trained heads exist), so the detections mean nothing: what
this proves is that the structure maps onto the engine and every engine layer
is bit-exact with the golden model.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np
import torch

from hw.isa import EngineConfig
from quant import golden
from quant.calibrate import calibrate
from quant.graph import capture
from quant.quantize import quantize
from sw.compiler import compile_graph
from sw.driver import Driver
from sw.networks import FRCNN_MAX_SIDE, FRCNN_PROPOSALS, FRCNN_SHORT_SIDE, _frcnn_float, engine_backend
from sw.runtime import Session, host_finish, run_network

__all__ = ["run_faster_rcnn", "FasterRCNNRun"]

CALIBRATION_IMAGES = ("images/people_1.jpg", "images/people_2.jpg", "images/people_3.jpg", "images/people_4.jpg")


def _preprocess(image, size=None):
    from sw.models.faster_rcnn import faster_rcnn_preprocess

    x, scale = faster_rcnn_preprocess(image, short_side=FRCNN_SHORT_SIDE, max_side=FRCNN_MAX_SIDE)
    if size is not None and tuple(x.shape[2:]) != size:
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x, scale


@functools.cache
def quantized_parts(input_hw: tuple[int, int]):
    """Both engine parts quantized for a ``(H, W)`` input; part 2 reads part 1's fire9 int8 features directly."""
    from sw.models.faster_rcnn import roi_max_pool, rpn_proposals
    from sw.shared import require_shared

    model = _frcnn_float()
    calib = torch.cat([_preprocess(require_shared(p), input_hw)[0] for p in CALIBRATION_IMAGES])
    g1 = capture(model.rpn, (3, *input_hw))
    q1 = quantize(g1, calibrate(g1, [calib]))
    # Part 2's calibration: the ROI features of the calibration pictures' own proposals.
    feats = []
    with torch.no_grad():
        for x in calib:
            feat, cls, bbox = model.rpn(x[None])
            props, _ = rpn_proposals(cls, bbox, (input_hw[1], input_hw[0]), post_nms_top_n=16)
            feats.append(torch.as_tensor(roi_max_pool(feat, props)))
    feats = torch.cat(feats).float()
    g2 = capture(model.head, (512, 7, 7))
    ranges = calibrate(g2, [feats])
    # Pin the head's input quantization to the fire9 tensor's, so ROI pooling (a max) stays in int8.
    qp = q1.qparams(q1.outputs[0])
    ranges[g2.inputs[0]] = (qp.scale * (-128 - qp.zero_point), qp.scale * (127 - qp.zero_point))
    q2 = quantize(g2, ranges)
    assert q2.qparams(q2.inputs[0]) == qp, (q2.qparams(q2.inputs[0]), qp)
    return q1, q2


@dataclasses.dataclass
class FasterRCNNRun:
    image: str
    input_hw: tuple[int, int]
    proposals: np.ndarray
    detections: list
    part1_exact: dict
    part2_exact: list[dict]
    cycles: int | None
    macs: int
    wall_s: float
    config: EngineConfig

    @property
    def bit_exact(self) -> bool | None:
        flags = list(self.part1_exact.values()) + [v for d in self.part2_exact for v in d.values()]
        return all(flags) if flags else None

    def summary(self) -> str:
        n1 = len(self.part1_exact)
        ok1 = sum(self.part1_exact.values())
        n2 = sum(len(d) for d in self.part2_exact)
        ok2 = sum(sum(d.values()) for d in self.part2_exact)
        lines = [f"{self.image}: Faster R-CNN on a {self.input_hw[0]}x{self.input_hw[1]} input, "
                 f"{len(self.proposals)} proposals through the R-CNN head",
                 f"  engine part 1 (backbone + RPN): {ok1}/{n1} layers bit-exact with the golden model",
                 f"  engine part 2 (R-CNN head x {len(self.part2_exact)}): {ok2}/{n2} layer runs bit-exact",
                 f"  {len(self.detections)} detection(s) above threshold (random heads: not meaningful)"]
        if self.cycles:
            util = self.macs / (self.cycles * self.config.macs_per_cycle)
            lines.append(f"  {self.cycles:,} engine cycles, {self.macs:,} MACs, utilization {util:.1%}; "
                         f"wall {self.wall_s:.1f} s")
        return "\n".join(lines)


def run_faster_rcnn(image, backend: str = "golden", config: EngineConfig | None = None, *, port=None,
                    check: bool = True, progress: bool = True, proposals: int = FRCNN_PROPOSALS,
                    clock_mhz: float = 100.0) -> FasterRCNNRun:
    """Run the whole detector on one picture with both engine parts on ``backend``."""
    from sw.models.faster_rcnn import rcnn_postprocess, roi_max_pool, rpn_proposals

    config = config or EngineConfig()
    t0 = time.monotonic()
    x, scale = _preprocess(image)
    input_hw = tuple(x.shape[2:])
    q1, q2 = quantized_parts(input_hw)
    p1, p2 = compile_graph(q1, config), compile_graph(q2, config)
    mem = max(p1.mem_words, p2.mem_words)
    cycles = 0 if backend != "golden" else None
    macs = 0
    with engine_backend(backend, config, mem, port=port) as t:
        # Part 1.
        x_q = golden.quantize_input(x, q1.qparams(q1.inputs[0]))
        s1 = Session(p1, Driver(t, config, timed=backend != "golden"))
        run1 = run_network(s1, x_q, reference=golden.run(q1, x_q) if check else None, progress=progress,
                           desc="frcnn part 1")
        if cycles is not None:
            cycles += run1.cycles
        macs += sum(s.macs for s in p1.steps)
        feat_name = q1.outputs[0]
        feat_q = run1.tensors[feat_name]
        _, cls, bbox = host_finish(q1, run1.tensors)
        # Host: proposals and ROI pooling on the int8 features.
        props, _ = rpn_proposals(cls, bbox, (input_hw[1], input_hw[0]), post_nms_top_n=proposals)
        pooled = roi_max_pool(torch.from_numpy(feat_q.astype(np.float32))[None], props)
        pooled_q = np.asarray(pooled).astype(np.int8)
        # Part 2, once per proposal (the program is installed once).
        s2 = Session(p2, Driver(t, config, timed=backend != "golden"))
        scores, deltas, exact2 = [], [], []
        for k in range(len(props)):
            ref = golden.run(q2, pooled_q[k]) if check else None
            run2 = run_network(s2, pooled_q[k], reference=ref, progress=False)
            if cycles is not None:
                cycles += run2.cycles
            macs += sum(s.macs for s in p2.steps)
            c, b = host_finish(q2, run2.tensors)
            scores.append(c)
            deltas.append(b)
            exact2.append(run2.exact or {})
    cls_score = torch.cat([s.reshape(1, -1) for s in scores])
    bbox_pred = torch.cat([b.reshape(1, -1) for b in deltas])
    dets = rcnn_postprocess(cls_score, bbox_pred, props, (input_hw[1], input_hw[0]), scale=scale)
    return FasterRCNNRun(image=str(image), input_hw=input_hw, proposals=props, detections=dets,
                         part1_exact=run1.exact or {}, part2_exact=exact2, cycles=cycles, macs=macs,
                         wall_s=time.monotonic() - t0, config=config)
