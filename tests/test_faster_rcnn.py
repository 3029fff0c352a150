"""SqueezeNet 1.1 Faster R-CNN: anchors, box coding, proposals, ROI pooling, engine parts, end to end.

The references here are hand-worked cases and naive element-by-element loops
written independently of the vectorised implementation.
"""

import math

import numpy as np
import pytest
import torch
import torch.fx

from sw.detect import iou
from sw.models.faster_rcnn import (
    ANCHOR_RATIOS,
    ANCHOR_SCALES,
    NUM_ANCHORS,
    VOC_CLASSES,
    FasterRCNN,
    RCNNHeadEngine,
    build_faster_rcnn,
    clip_boxes,
    decode_boxes,
    faster_rcnn_preprocess,
    generate_anchors,
    grid_anchors,
    rcnn_postprocess,
    roi_max_pool,
    rpn_proposals,
)
from sw.models.squeezenet import WEIGHTS_DIR
from sw.shared import skip_without_shared

# ---------------------------------------------------------------- anchors and box coding


def test_generate_anchors_hand_worked():
    a = generate_anchors()
    assert a.shape == (9, 4) and NUM_ANCHORS == 9
    # Index 4 = ratio 1 (middle), scale 16 (middle): a 256 x 256 square.
    np.testing.assert_allclose(a[4], [-128, -128, 128, 128])
    # Index 0 = ratio 0.5 (h/w), scale 8: w = 128 * sqrt(2), h = 128 / sqrt(2).
    r2 = math.sqrt(2)
    np.testing.assert_allclose(a[0], [-64 * r2, -32 * r2, 64 * r2, 32 * r2])
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    for i, (r, s) in enumerate((r, s) for r in ANCHOR_RATIOS for s in ANCHOR_SCALES):
        assert w[i] * h[i] == pytest.approx((16 * s) ** 2)
        assert h[i] / w[i] == pytest.approx(r)


def test_grid_anchors_order():
    base = generate_anchors()
    g = grid_anchors(2, 3)
    assert g.shape == (2 * 3 * 9, 4)
    for y in range(2):
        for x in range(3):
            for k in range(9):
                centre = np.array([(x + 0.5) * 16, (y + 0.5) * 16] * 2)
                np.testing.assert_allclose(g[(y * 3 + x) * 9 + k], base[k] + centre)


def test_decode_boxes_hand_worked():
    box = np.array([[0.0, 0.0, 10.0, 20.0]])          # w 10, h 20, centre (5, 10)
    # dx 0.1 -> cx 6, dy -0.1 -> cy 8, dw ln 2 -> w 20, dh 0 -> h 20
    np.testing.assert_allclose(decode_boxes(box, [[0.1, -0.1, math.log(2), 0.0]]), [[-4, -2, 16, 18]])
    # The same through the R-CNN stds (0.1, 0.1, 0.2, 0.2), as the second of two classes.
    np.testing.assert_allclose(
        decode_boxes(box, [[0, 0, 0, 0, 1.0, -1.0, 5 * math.log(2), 0.0]], (0.1, 0.1, 0.2, 0.2)),
        [[0, 0, 10, 20, -4, -2, 16, 18]])
    # Huge dw is clamped to log(1000/16): w = 10 * 62.5.
    wide = decode_boxes(box, [[0, 0, 50.0, 0]])
    assert wide[0, 2] - wide[0, 0] == pytest.approx(625.0)
    with pytest.raises(ValueError, match=r"\(N, 4K\)"):
        decode_boxes(box, [[0, 0, 0]])


def test_clip_boxes():
    b = clip_boxes(np.array([[-5, 3, 120, 90], [10, -1, 20, 200]]), 100, 80)
    np.testing.assert_array_equal(b, [[0, 3, 100, 80], [10, 0, 20, 80]])


# ---------------------------------------------------------------- proposals


def naive_proposals(cls, bbox, image_size, min_size, pre_n, post_n, thr):
    """Element-by-element RPN proposal layer (py-faster-rcnn layout: bg = channel a, fg = channel A + a)."""
    a_n = NUM_ANCHORS
    base = generate_anchors()
    width, height = image_size
    cands = []
    _, _, h, w = cls.shape
    for y in range(h):
        for x in range(w):
            for a in range(a_n):
                bg, fg = cls[0, a, y, x], cls[0, a_n + a, y, x]
                score = 1.0 / (1.0 + math.exp(bg - fg))
                ax1, ay1, ax2, ay2 = base[a] + [(x + 0.5) * 16, (y + 0.5) * 16] * 2
                aw, ah = ax2 - ax1, ay2 - ay1
                dx, dy, dw, dh = (bbox[0, 4 * a + k, y, x] for k in range(4))
                cx, cy = ax1 + aw / 2 + dx * aw, ay1 + ah / 2 + dy * ah
                bw, bh = aw * math.exp(dw), ah * math.exp(dh)
                box = [min(max(cx - bw / 2, 0), width), min(max(cy - bh / 2, 0), height),
                       min(max(cx + bw / 2, 0), width), min(max(cy + bh / 2, 0), height)]
                if box[2] - box[0] >= min_size and box[3] - box[1] >= min_size:
                    cands.append((score, len(cands), box))
    cands.sort(key=lambda t: (-t[0], t[1]))
    kept = []
    for score, _, box in cands[:pre_n]:
        if all(iou(np.array(box), np.array(k[1])) <= thr for k in kept):
            kept.append((score, box))
    kept = kept[:post_n]
    return np.array([k[1] for k in kept]), np.array([k[0] for k in kept])


def test_rpn_proposals_match_naive():
    rng = np.random.default_rng(5)
    cls = rng.normal(scale=2.0, size=(1, 18, 5, 6)).astype(np.float32)
    bbox = rng.normal(scale=0.3, size=(1, 36, 5, 6)).astype(np.float32)
    bbox[0, 4 * 2 + 2, 1, 1] = -4.0      # one anchor shrunk below min_size
    boxes, scores = rpn_proposals(torch.from_numpy(cls), torch.from_numpy(bbox), (200, 150),
                                  pre_nms_top_n=120, post_nms_top_n=15, nms_threshold=0.7, min_size=16)
    ref_boxes, ref_scores = naive_proposals(cls.astype(np.float64), bbox.astype(np.float64), (200, 150),
                                            16, 120, 15, 0.7)
    assert boxes.shape == (15, 4)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-12)
    np.testing.assert_allclose(boxes, ref_boxes, atol=1e-9)
    assert np.all(np.diff(scores) <= 0)
    off = iou(boxes, boxes)[~np.eye(len(boxes), dtype=bool)]
    assert off.max() <= 0.7


def test_rpn_proposals_single_peak():
    cls = np.zeros((1, 18, 8, 8))
    cls[0, 9 + 0, 3, 4] = 5.0           # object logit of anchor 0 (ratio 0.5, scale 8) at cell (y 3, x 4)
    boxes, scores = rpn_proposals(cls, np.zeros((1, 36, 8, 8)), (1000, 1000))
    assert scores[0] == pytest.approx(1 / (1 + math.exp(-5)))
    w, h = 128 * math.sqrt(2), 128 / math.sqrt(2)
    np.testing.assert_allclose(boxes[0], [max(72 - w / 2, 0), 56 - h / 2, 72 + w / 2, 56 + h / 2])
    with pytest.raises(ValueError, match=r"rpn_cls_score \(1, 18, h, w\)"):
        rpn_proposals(cls[:, :17], np.zeros((1, 36, 8, 8)), (1000, 1000))


# ---------------------------------------------------------------- ROI pooling


def naive_roi_pool(feat, rois, size, scale):
    """Caffe ROIPooling forward, one output element at a time (integer floor/ceil of ph * roi_h / S)."""
    def c_round(v):
        return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)

    c, height, width = feat.shape
    out = np.zeros((len(rois), c, size, size), np.float32)
    for n, (x1, y1, x2, y2) in enumerate(rois):
        sw_, sh_ = c_round(x1 * scale), c_round(y1 * scale)
        ew, eh = c_round(x2 * scale), c_round(y2 * scale)
        rw, rh = max(ew - sw_ + 1, 1), max(eh - sh_ + 1, 1)
        for ch in range(c):
            for ph in range(size):
                for pw in range(size):
                    hs = min(max(ph * rh // size + sh_, 0), height)
                    he = min(max(-(-(ph + 1) * rh // size) + sh_, 0), height)
                    ws = min(max(pw * rw // size + sw_, 0), width)
                    we = min(max(-(-(pw + 1) * rw // size) + sw_, 0), width)
                    best = 0.0 if (he <= hs or we <= ws) else -math.inf
                    for hh in range(hs, he):
                        for ww in range(ws, we):
                            best = max(best, feat[ch, hh, ww])
                    out[n, ch, ph, pw] = best
    return out


def test_roi_pool_matches_naive_loop():
    rng = np.random.default_rng(3)
    feat = rng.normal(size=(3, 9, 11)).astype(np.float32)   # negative values: empty bins must give 0
    xy = rng.uniform(-40, 170, size=(25, 2))
    wh = rng.uniform(0, 120, size=(25, 2))
    rois = np.concatenate([xy, xy + wh], 1)
    rois = np.vstack([rois, [
        [0, 0, 160, 128],          # the whole map and beyond
        [8, 8, 24, 40],            # x1 * 1/16 = 0.5: C rounding gives 1 (banker's would give 0)
        [300, 300, 400, 400],      # entirely outside: zeros
        [50, 60, 40, 50],          # x2 < x1: one-cell ROI
        [-30, -20, 20, 30],        # partly outside on the top/left
        [100, 100, 100, 100],      # a point
    ]])
    got = roi_max_pool(feat, rois, 7, 1 / 16)
    np.testing.assert_array_equal(got, naive_roi_pool(feat, rois, 7, 1 / 16))
    assert np.all(got[-4] == 0)
    t = roi_max_pool(torch.from_numpy(feat)[None], torch.from_numpy(rois), 7, 1 / 16)
    assert isinstance(t, torch.Tensor) and t.shape == (31, 3, 7, 7)
    np.testing.assert_array_equal(t.numpy(), got)


def test_roi_pool_identity_on_exact_grid():
    feat = np.arange(2 * 7 * 7, dtype=np.float32).reshape(2, 7, 7)
    # ROI covering cells 0..6 at scale 1: each bin is exactly one cell.
    np.testing.assert_array_equal(roi_max_pool(feat, [[0, 0, 6, 6]], 7, 1.0)[0], feat)
    # 2x2 output over the same cells: bins rows [0, 4) and [3, 7): the max is at the bottom-right of each.
    out = roi_max_pool(feat, [[0, 0, 6, 6]], 2, 1.0)[0, 0]
    np.testing.assert_array_equal(out, [[feat[0, 3, 3], feat[0, 3, 6]], [feat[0, 6, 3], feat[0, 6, 6]]])
    with pytest.raises(ValueError, match="one image"):
        roi_max_pool(np.zeros((2, 1, 3, 3)), [[0, 0, 1, 1]])


# ---------------------------------------------------------------- R-CNN post-processing


def test_rcnn_postprocess_hand_worked():
    rois = np.array([[10, 10, 50, 50], [12, 12, 52, 52], [100, 0, 150, 300]], float)
    # Classes: background, A, B. Logits chosen so the probabilities are exact fractions.
    probs = np.array([[0.1, 0.8, 0.1], [0.2, 0.5, 0.3], [0.7, 0.02, 0.28]])
    logits = np.log(probs)
    deltas = np.zeros((3, 12))
    deltas[2, 8:12] = [1.0, 0.0, 0.0, 0.0]   # class B of ROI 2 moves right by 0.1 * 50 (stds 0.1)
    dets = rcnn_postprocess(logits, deltas, rois, (140, 200), score_threshold=0.05, nms_threshold=0.3,
                            scale=0.5)
    got = [(d.label, round(d.score, 9), tuple(np.round(d.box, 6).tolist())) for d in dets]
    assert got == [
        # Class A: ROI 0 (0.8); ROI 1 (0.5) overlaps it with IoU 1444/1756 = 0.82 > 0.3; ROI 2 (0.02) < 0.05.
        (1, 0.8, (20.0, 20.0, 100.0, 100.0)),
        # Class B: ROI 1 (0.3) first, ROI 0 (0.1) suppressed by it, ROI 2 (0.28) disjoint.
        (2, 0.3, (24.0, 24.0, 104.0, 104.0)),
        # ROI 2 moved to x 105..155, clipped to the 140 x 200 input, then divided by the scale 0.5.
        (2, 0.28, (210.0, 0.0, 280.0, 400.0)),
    ]
    assert len(rcnn_postprocess(logits, deltas, rois, (140, 200), max_per_image=2)) == 2
    assert rcnn_postprocess(np.zeros((0, 3)), np.zeros((0, 12)), np.zeros((0, 4)), (10, 10)) == []
    with pytest.raises(ValueError, match=r"bbox_pred \(R, 4C\)"):
        rcnn_postprocess(logits, deltas[:, :8], rois, (140, 200))


# ---------------------------------------------------------------- engine parts


@pytest.fixture(scope="module")
def random_detector():
    torch.manual_seed(0)
    return build_faster_rcnn(pretrained=False, seed=1)


def test_engine_parts_trace_with_fx(random_detector):
    rpn, head = random_detector.rpn, random_detector.head
    g1, g2 = torch.fx.symbolic_trace(rpn), torch.fx.symbolic_trace(head)
    x = torch.randn(1, 3, 112, 144)
    rois = torch.randn(5, 512, 7, 7).relu()
    with torch.no_grad():
        eager1, traced1 = rpn(x), g1(x)
        eager2, traced2 = head(rois), g2(rois)
    for e, t in zip(eager1 + eager2, traced1 + traced2, strict=True):
        torch.testing.assert_close(t, e, rtol=0, atol=0)
    feat, cls, bbox = traced1
    cls_score, bbox_pred = traced2
    # conv1 3x3/2 valid: 112 x 144 -> 55 x 71; ceil-mode 3x3/2 pools: -> 27 x 35 -> 13 x 17 -> 6 x 8
    assert feat.shape == (1, 512, 6, 8) and cls.shape == (1, 18, 6, 8) and bbox.shape == (1, 36, 6, 8)
    assert cls_score.shape == (5, 21) and bbox_pred.shape == (5, 84)
    assert len(VOC_CLASSES) == 21
    # The engine-facing graphs contain only convolutions, ReLUs, pools, cat and flatten.
    kinds, funcs = set(), set()
    for g in (g1, g2):
        for node in g.graph.nodes:
            if node.op == "call_module":
                kinds.add(type(g.get_submodule(node.target)).__name__)
            elif node.op in ("call_function", "call_method"):
                funcs.add(node.target)
    assert kinds == {"Conv2d", "ReLU", "MaxPool2d", "AdaptiveAvgPool2d"}
    assert funcs == {torch.cat, torch.flatten}


def test_heads_are_seeded(random_detector):
    again = build_faster_rcnn(pretrained=False, seed=1)
    other = build_faster_rcnn(pretrained=False, seed=2)
    for name in ("rpn.rpn_conv.weight", "head.conv1_last.weight", "head.bbox_pred.weight"):
        a, b, c = (dict(m.named_parameters())[name] for m in (random_detector, again, other))
        assert torch.equal(a, b) and not torch.equal(a, c)
    assert random_detector.head.bbox_pred.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert random_detector.rpn.rpn_conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.count_nonzero(random_detector.head.cls_score.bias) == 0
    with pytest.raises(TypeError, match="detect"):
        random_detector(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        RCNNHeadEngine(1)


def test_preprocess_sizes():
    from PIL import Image

    grey = Image.new("RGB", (573, 640), (124, 116, 104))
    x, scale = faster_rcnn_preprocess(grey, short_side=320, max_side=512)
    assert x.shape == (1, 3, 357, 320) and scale == pytest.approx(320 / 573)
    # (124, 116, 104) / 255 is the ImageNet mean to within 0.001: the input is close to zero.
    assert x.abs().max().item() < 0.01
    x, scale = faster_rcnn_preprocess(Image.new("RGB", (1000, 200)), short_side=600, max_side=1000)
    assert x.shape == (1, 3, 200, 1000) and scale == 1.0


# ---------------------------------------------------------------- end to end (../shared)


@pytest.mark.shared
def test_end_to_end_on_real_image():
    root = skip_without_shared(WEIGHTS_DIR, "images/coco_dog.jpg")
    model = build_faster_rcnn()
    assert isinstance(model, FasterRCNN)
    w0 = np.load(root / WEIGHTS_DIR / "squeezenet0_conv0_weight.npy")
    np.testing.assert_array_equal(model.rpn.features[0].weight.detach().numpy(), w0)   # pretrained backbone
    res = model.detect(root / "images" / "coco_dog.jpg", short_side=224, max_side=320, post_nms_top_n=64)
    assert res.input_size == (224, 250)    # 573 x 640 picture: short side 224, 640 * 224 / 573 = 250.2
    r = len(res.proposals)
    assert 0 < r <= 64
    assert res.proposals.shape == (r, 4) and res.proposal_scores.shape == (r,)
    assert res.roi_features.shape == (r, 512, 7, 7)
    assert res.cls_score.shape == (r, 21) and res.bbox_pred.shape == (r, 84)
    assert 0 < len(res.detections) <= 100
    for d in res.detections:
        assert 1 <= d.label <= 20 and 0.05 < d.score <= 1.0
        assert -1e-6 <= d.x1 <= d.x2 <= 573 + 1e-6 and -1e-6 <= d.y1 <= d.y2 <= 640 + 1e-6
    # The host steps between the engine parts are the public functions, applied to the engine outputs.
    x, _ = faster_rcnn_preprocess(root / "images" / "coco_dog.jpg", short_side=224, max_side=320)
    with torch.no_grad():
        feat, _, _ = model.rpn(x)
    np.testing.assert_array_equal(roi_max_pool(feat, res.proposals).numpy(), res.roi_features.numpy())
