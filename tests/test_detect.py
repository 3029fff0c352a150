"""Host-side SSD pipeline: preprocessing, priors, decoding, NMS, post-processing, drawing.

Expected values are worked by hand, come from ``../shared/DATA.md``, or from
the deliberately naive reference implementations written out in this file.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image

from sw.detect import (
    RFSONG779_PRIORS,
    Detection,
    PriorConfig,
    center_to_corners,
    decode,
    draw_detections,
    iou,
    nms,
    prior_boxes,
    softmax,
    ssd_postprocess,
)
from sw.preprocess import SSD_MEAN_BGR, ssd_preprocess

# ---------------------------------------------------------------- preprocessing


def test_preprocess_uniform_colour_is_bgr_minus_mean():
    img = Image.new("RGB", (640, 480), (10, 20, 30))
    x, size = ssd_preprocess(img)
    assert x.shape == (1, 3, 300, 300) and x.dtype == torch.float32
    assert size == (640, 480) and size.width == 640 and size.height == 480
    # Channel 0 is blue (30), 1 green (20), 2 red (10); means (104, 117, 123) in B, G, R order.
    expected = torch.tensor([30 - 104.0, 20 - 117.0, 10 - 123.0]).view(1, 3, 1, 1).expand_as(x)
    assert torch.equal(x, expected)


def test_preprocess_keeps_orientation_and_converts_grey():
    # Left half red, right half blue, top rows green: checks BGR order and no flips.
    img = Image.new("RGB", (600, 400), (255, 0, 0))
    img.paste((0, 0, 255), (300, 0, 600, 400))
    img.paste((0, 255, 0), (0, 0, 600, 40))
    x, _ = ssd_preprocess(img)
    b, g, r = (x[0, c] + SSD_MEAN_BGR[c] for c in range(3))
    assert (r[150, 10].item(), b[150, 10].item()) == (255, 0)     # left: red
    assert (r[150, 290].item(), b[150, 290].item()) == (0, 255)   # right: blue
    assert g[5, 150].item() == 255                                 # top: green
    grey, size = ssd_preprocess(Image.new("L", (50, 70), 100))
    assert size == (50, 70)
    assert torch.equal(grey[0, 0], torch.full((300, 300), 100 - 104.0))


def test_preprocess_rejects_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ssd_preprocess(tmp_path / "missing.jpg")
    with pytest.raises(TypeError, match="path or a PIL"):
        ssd_preprocess(42)
    with pytest.raises(ValueError, match="positive integer"):
        ssd_preprocess(Image.new("RGB", (8, 8)), size=0)


# ---------------------------------------------------------------- priors


def naive_priors(cfg: PriorConfig) -> np.ndarray:
    """ssd.pytorch-style PriorBox: nested loops, f_k = image_size / step."""
    out = []
    for k, f in enumerate(cfg.feature_maps):
        f_k = cfg.image_size / cfg.steps[k]
        for i, j in itertools.product(range(f), repeat=2):   # i = row (y), j = column (x)
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = cfg.min_sizes[k] / cfg.image_size
            s_kp = math.sqrt(s_k * (cfg.max_sizes[k] / cfg.image_size))
            r = cfg.max_ratios[k]
            out.append([cx, cy, s_kp * math.sqrt(r), s_kp / math.sqrt(r)])
            for a in cfg.aspect_ratios[k]:
                out.append([cx, cy, s_k * math.sqrt(a), s_k / math.sqrt(a)])
    return np.clip(np.array(out), 0.0, 1.0)


def test_prior_count_is_7759():
    # 38^2*4 + 19^2*4 + 10^2*4 + 5^2*4 + 3^2*4 + 1*3 (DATA.md: 7,759 priors)
    assert RFSONG779_PRIORS.num_priors == 7759
    assert RFSONG779_PRIORS.anchors_per_cell == (4, 4, 4, 4, 4, 3)
    assert prior_boxes().shape == (7759, 4)


def test_priors_match_naive_loops():
    np.testing.assert_allclose(prior_boxes(), naive_priors(RFSONG779_PRIORS), rtol=0, atol=1e-6)


def test_priors_hand_worked():
    p = prior_boxes().astype(np.float64)
    # First prior: cell (0, 0) of the 38x38 map, side sqrt(26*60)/300 at ratio 0.8.
    s = math.sqrt(26 * 60) / 300
    np.testing.assert_allclose(p[0], [4 / 300, 4 / 300, s * math.sqrt(0.8), s / math.sqrt(0.8)], atol=1e-7)
    # Second prior: same cell, side 26/300 at aspect 0.4.
    np.testing.assert_allclose(p[1], [4 / 300, 4 / 300, 26 / 300 * math.sqrt(0.4), 26 / 300 / math.sqrt(0.4)],
                               atol=1e-7)
    # Prior 4 is cell (row 0, column 1): x moves first (rows outer).
    np.testing.assert_allclose(p[4, :2], [12 / 300, 4 / 300], atol=1e-7)
    # First prior of row 1 of the 38x38 map.
    np.testing.assert_allclose(p[38 * 4, :2], [4 / 300, 12 / 300], atol=1e-7)
    # The very last prior: the 1x1 map, aspect 1.4, side 264/300; its width 1.041 is clipped to 1.
    np.testing.assert_allclose(p[-1], [0.5, 0.5, 1.0, 0.88 / math.sqrt(1.4)], atol=1e-7)
    # The 1x1 map's first box, side sqrt(264*315)/300 = 0.9641 at ratio 1.
    np.testing.assert_allclose(p[-3], [0.5, 0.5, math.sqrt(264 * 315) / 300, math.sqrt(264 * 315) / 300],
                               atol=1e-6)
    assert p.min() >= 0 and p.max() <= 1


def test_prior_config_checks_lengths():
    with pytest.raises(ValueError, match="steps has 1 entries but feature_maps has 2"):
        PriorConfig(300, (2, 1), (8,), (1, 2), (2, 3), (1, 1), ((1.0,), (1.0,)))


# ---------------------------------------------------------------- decode, softmax, IoU


def test_decode_hand_worked():
    priors = np.array([[0.5, 0.5, 0.2, 0.4], [0.3, 0.6, 0.1, 0.1]])
    loc = np.array([[1.0, -1.0, 5 * math.log(2), 0.0], [0.0, 0.0, 0.0, 0.0]])
    # cx = 0.5 + 1*0.1*0.2 = 0.52, cy = 0.5 - 0.1*0.4 = 0.46, w = 0.2*exp(0.2*5 ln 2) = 0.4, h = 0.4.
    expected = np.array([[0.32, 0.26, 0.72, 0.66], [0.25, 0.55, 0.35, 0.65]])
    np.testing.assert_allclose(decode(loc, priors), expected, atol=1e-12)
    np.testing.assert_allclose(center_to_corners([0.5, 0.5, 0.2, 0.4]), [0.4, 0.3, 0.6, 0.7], atol=1e-12)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        decode(loc[:1], priors)


def test_softmax_matches_torch():
    x = np.random.default_rng(0).normal(scale=20, size=(50, 3))
    np.testing.assert_allclose(softmax(x), torch.softmax(torch.from_numpy(x), 1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(softmax([[0.0, math.log(9)]]), [[0.1, 0.9]], rtol=1e-12)


def test_iou_hand_worked():
    a = np.array([0, 0, 2, 2])
    assert iou(a, [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert iou(a, a) == pytest.approx(1.0)
    assert iou(a, [2, 0, 4, 2]) == 0.0            # touching edges
    assert iou(a, [5, 5, 6, 6]) == 0.0
    assert iou(a, [0, 0, 1, 2]) == pytest.approx(0.5)
    assert iou([1, 1, 1, 3], [0, 0, 2, 2]) == 0.0  # zero-area box
    m = iou(np.array([[0, 0, 2, 2], [1, 1, 3, 3]]), np.array([[1, 1, 3, 3], [0, 0, 1, 2], [9, 9, 10, 10]]))
    np.testing.assert_allclose(m, [[1 / 7, 0.5, 0], [1, 0, 0]])
    assert iou(a, m[:, :0].reshape(0, 4)).shape == (0,)
    with pytest.raises(ValueError, match=r"\(4,\) or \(K, 4\)"):
        iou([0, 0, 1], a)


# ---------------------------------------------------------------- NMS


def naive_nms(boxes, scores, thr):
    """Textbook greedy NMS with explicit pairwise IoU (pure Python)."""
    def area(b):
        return max(b[2] - b[0], 0) * max(b[3] - b[1], 0)

    def pair_iou(p, q):
        w = max(min(p[2], q[2]) - max(p[0], q[0]), 0)
        h = max(min(p[3], q[3]) - max(p[1], q[1]), 0)
        u = area(p) + area(q) - w * h
        return w * h / u if u > 0 else 0.0

    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(pair_iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def test_nms_hand_worked():
    boxes = np.array([
        [0, 0, 10, 10],      # 0: best
        [1, 0, 11, 10],      # 1: IoU 9/11 with 0 -> suppressed
        [20, 20, 30, 30],    # 2: far away -> kept
        [5, 0, 15, 10],      # 3: IoU 5/15 = 1/3 with 0; IoU with 1 irrelevant (1 suppressed)
    ], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.3).tolist() == [0, 2]
    # IoU exactly equal to the threshold is kept (suppress only when greater).
    assert nms(boxes[[0, 3]], scores[[0, 3]], 1 / 3 + 1e-12).tolist() == [0, 1]
    assert nms(boxes, scores, 0.5, top_k=2).tolist() == [0]
    # Input order does not matter, only scores.
    assert nms(boxes[::-1], scores[::-1], 0.5).tolist() == [3, 1, 0]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


@pytest.mark.parametrize("thr", [0.0, 0.2, 0.5, 0.7, 1.0])
def test_nms_matches_naive(thr):
    rng = np.random.default_rng(1234)
    xy = rng.uniform(0, 100, size=(300, 2))
    wh = rng.uniform(1, 40, size=(300, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.integers(0, 50, size=300) / 50.0   # many ties: exercises the tie order
    assert nms(boxes, scores, thr).tolist() == naive_nms(boxes.tolist(), scores.tolist(), thr)


def test_nms_rejects_bad_input():
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(np.zeros((1, 4)), np.zeros(1), 1.5)
    with pytest.raises(ValueError, match="scores"):
        nms(np.zeros((2, 4)), np.zeros(3), 0.5)


# ---------------------------------------------------------------- post-processing


def test_postprocess_synthetic():
    priors = prior_boxes()
    loc = np.zeros((7759, 4), np.float32)
    conf = np.zeros((7759, 2), np.float32)      # every prior: person probability 0.5 ... too many
    conf[:, 0] = 10.0                            # ... so push all to background first
    a, b, c, d = 5 * 38 * 4 + 10 * 4, 5 * 38 * 4 + 10 * 4 + 2, 7759 - 3, 100
    conf[a] = [0, math.log(9)]      # p = 0.9
    conf[b] = [0, math.log(4)]      # p = 0.8, same cell as a: overlaps it, suppressed at IoU 0.2
    conf[c] = [0, math.log(0.35 / 0.65)]  # p = 0.35, the big central box
    conf[d] = [0, math.log(0.29 / 0.71)]  # p = 0.29 < 0.3: dropped
    assert iou(center_to_corners(priors[a]), center_to_corners(priors[b])) > 0.2
    assert iou(center_to_corners(priors[a]), center_to_corners(priors[c])) <= 0.2
    loc[c] = [1.0, 0.0, 0.0, 0.0]   # shift the central box right by 0.1 * w
    dets = ssd_postprocess(torch.from_numpy(loc)[None], torch.from_numpy(conf)[None], (200, 100))
    assert [round(det.score, 6) for det in dets] == [0.9, 0.35]
    box_a = center_to_corners(priors[a]) * [200, 100, 200, 100]
    np.testing.assert_allclose(dets[0].box, box_a, atol=1e-4)
    pc = priors[c].astype(np.float64)
    cx = pc[0] + 0.1 * pc[2]
    np.testing.assert_allclose(
        dets[1].box, [(cx - pc[2] / 2) * 200, (pc[1] - pc[3] / 2) * 100, (cx + pc[2] / 2) * 200,
                      (pc[1] + pc[3] / 2) * 100], atol=1e-4)
    assert all(det.label == 1 for det in dets)
    assert ssd_postprocess(loc, np.tile([10.0, 0.0], (7759, 1)), (10, 10)) == []


def test_postprocess_rejects_bad_shapes():
    with pytest.raises(ValueError, match="disagree"):
        ssd_postprocess(np.zeros((7758, 4)), np.zeros((7758, 2)), (10, 10))
    with pytest.raises(ValueError, match="batch of one"):
        ssd_postprocess(np.zeros((2, 7759, 4)), np.zeros((2, 7759, 2)), (10, 10))
    with pytest.raises(ValueError, match="foreground class"):
        ssd_postprocess(np.zeros((7759, 4)), np.zeros((7759, 2)), (10, 10), label=2)


def test_draw_detections(tmp_path):
    src = tmp_path / "grey.png"
    Image.new("RGB", (120, 80), (128, 128, 128)).save(src)
    out = draw_detections(src, [Detection(20, 30, 100, 70, 0.9)], tmp_path / "sub" / "out.png",
                          color=(0, 255, 0), width=2)
    assert out.exists()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (120, 80)
        assert im.getpixel((60, 70)) == (0, 255, 0)        # bottom edge of the box
        assert im.getpixel((100, 50)) == (0, 255, 0)       # right edge
        assert im.getpixel((60, 50)) == (128, 128, 128)    # inside untouched
        assert im.getpixel((5, 75)) == (128, 128, 128)     # outside untouched
