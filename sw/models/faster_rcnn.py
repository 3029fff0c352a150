"""SqueezeNet 1.1 + Faster R-CNN (the seed's ``Alex_Squeeze_v1.1``), float, split for the engine.

Structure (seed documents ``000_*.txt`` / ``001_*.txt``):

* backbone: SqueezeNet 1.1 ``features`` up to fire9 (``fire9/concat``, 512
  channels, stride 16), pretrained on ImageNet (:func:`sw.models.squeezenet.load_squeezenet11`);
* RPN: ``rpn_conv/3x3`` 512 -> 256 (padding 1) + ReLU, then 1x1
  ``rpn_cls_score`` (2 A channels) and 1x1 ``rpn_bbox_pred`` (4 A), with
  A = 9 anchors per cell (scales 8, 16, 32 x ratios 0.5, 1, 2 at stride 16);
* proposals (decode, clip, drop small, top-N, NMS 0.7), 7x7 ROI max pooling
  at spatial scale 1/16 (Caffe ``ROIPooling`` semantics);
* R-CNN head: ``conv1_last`` 1x1 512 -> 1000 + ReLU on each pooled ROI, then
  ``cls_score`` and ``bbox_pred``.

Deviation from the seed: the seed's ``cls_score`` / ``bbox_pred`` are
InnerProducts over the whole 1000 x 7 x 7 map; here the 1000 x 7 x 7 map is
global-average-pooled first and the two layers are 1x1 convolutions
(1000 -> C and 1000 -> 4 C), so the engine runs them as convolutions and the
head stays small.

Weights: no trained detection heads exist for this model. The backbone is the
pretrained SqueezeNet 1.1; the RPN and R-CNN heads are initialised from a
seeded generator with the seed's fillers (Gaussian std 0.01, ``bbox_pred``
std 0.001, zero biases). The detector therefore runs end to end with the right
shapes and numerics for the engine, but its boxes and classes are meaningless.

Engine / host split
-------------------
1. engine part 1, :class:`RPNEngine`: image -> ``(features, rpn_cls_score, rpn_bbox_pred)``;
2. host, :func:`rpn_proposals` and :func:`roi_max_pool`: proposals and their
   ``(R, 512, 7, 7)`` pooled features;
3. engine part 2, :class:`RCNNHeadEngine`: ``(R, 512, 7, 7)`` -> ``(cls_score (R, C), bbox_pred (R, 4 C))``;
4. host, :func:`rcnn_postprocess`: softmax, box decoding, per-class NMS.

Both engine parts are ``torch.fx.symbolic_trace``-able. :class:`FasterRCNN`
chains the four steps (:meth:`FasterRCNN.detect`). Boxes are continuous
corner-form pixel coordinates ``(x1, y1, x2, y2)`` of the image given to the
network unless stated otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from sw.detect import Detection, nms, softmax

__all__ = [
    "FEAT_STRIDE", "ANCHOR_SCALES", "ANCHOR_RATIOS", "NUM_ANCHORS", "POOLED_SIZE", "SPATIAL_SCALE",
    "BBOX_STDS", "VOC_CLASSES", "RPNEngine", "RCNNHeadEngine", "FasterRCNN", "FasterRCNNResult",
    "generate_anchors", "grid_anchors", "decode_boxes", "clip_boxes", "rpn_proposals", "roi_max_pool",
    "rcnn_postprocess", "faster_rcnn_preprocess", "build_faster_rcnn",
]

#: Stride of fire9 relative to the input (conv1 /2, three max pools /2).
FEAT_STRIDE = 16
#: Anchor sides are ``FEAT_STRIDE * scale`` pixels: 128, 256, 512.
ANCHOR_SCALES = (8, 16, 32)
#: Anchor aspect ratios, height / width.
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
NUM_ANCHORS = len(ANCHOR_SCALES) * len(ANCHOR_RATIOS)
#: ROI pooling output side and feature-map scale (the seed's pooled_w/h 7, spatial_scale 0.0625).
POOLED_SIZE = 7
SPATIAL_SCALE = 1.0 / FEAT_STRIDE
#: R-CNN box-delta normalisation (py-faster-rcnn's BBOX_NORMALIZE_STDS).
BBOX_STDS = (0.1, 0.1, 0.2, 0.2)
#: Largest log-scale a box delta may apply (py-faster-rcnn / torchvision clamp).
_DELTA_CLAMP = math.log(1000.0 / 16)
#: PASCAL VOC class names, background first: the default 21 classes.
VOC_CLASSES = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


# ---------------------------------------------------------------------------------------- engine parts


class RPNEngine(nn.Module):
    """Engine part 1: SqueezeNet 1.1 features (to fire9) and the RPN convolutions.

    Parameters
    ----------
    features : torch.nn.Module
        The backbone, image ``(N, 3, H, W)`` -> ``(N, 512, H', W')`` at stride 16
        (``SqueezeNet11().features``).
    num_anchors : int, optional
        Anchors per feature-map cell.

    Notes
    -----
    ``rpn_cls_score`` channels ``0 .. A-1`` are the background logits of
    anchors ``0 .. A-1`` and channels ``A .. 2A-1`` their object logits
    (py-faster-rcnn's layout); ``rpn_bbox_pred`` channel ``4 a + k`` is
    delta ``k`` (dx, dy, dw, dh) of anchor ``a``.
    """

    def __init__(self, features: nn.Module, num_anchors: int = NUM_ANCHORS):
        super().__init__()
        self.num_anchors = num_anchors
        self.features = features
        self.rpn_conv = nn.Conv2d(512, 256, 3, padding=1)
        self.rpn_relu = nn.ReLU()
        self.rpn_cls_score = nn.Conv2d(256, 2 * num_anchors, 1)
        self.rpn_bbox_pred = nn.Conv2d(256, 4 * num_anchors, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(features (N, 512, h, w), rpn_cls_score (N, 2A, h, w), rpn_bbox_pred (N, 4A, h, w))``."""
        feat = self.features(x)
        r = self.rpn_relu(self.rpn_conv(feat))
        return feat, self.rpn_cls_score(r), self.rpn_bbox_pred(r)


class RCNNHeadEngine(nn.Module):
    """Engine part 2: the R-CNN head on a batch of pooled ROI features.

    ``conv1_last`` 1x1 512 -> 1000 + ReLU, global average pool, then 1x1
    ``cls_score`` (1000 -> C) and ``bbox_pred`` (1000 -> 4 C).

    Parameters
    ----------
    num_classes : int, optional
        Classes including background (21 for PASCAL VOC).
    in_channels : int, optional
        Channels of the pooled features.
    hidden : int, optional
        Output channels of ``conv1_last``.
    """

    def __init__(self, num_classes: int = len(VOC_CLASSES), in_channels: int = 512, hidden: int = 1000):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must count background and at least one class, got {num_classes}")
        self.num_classes = num_classes
        self.conv1_last = nn.Conv2d(in_channels, hidden, 1)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.cls_score = nn.Conv2d(hidden, num_classes, 1)
        self.bbox_pred = nn.Conv2d(hidden, 4 * num_classes, 1)

    def forward(self, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R, 512, 7, 7)`` -> ``(cls_score (R, C) logits, bbox_pred (R, 4 C) normalised deltas)``."""
        h = self.avgpool(self.relu(self.conv1_last(rois)))
        return torch.flatten(self.cls_score(h), 1), torch.flatten(self.bbox_pred(h), 1)


# ---------------------------------------------------------------------------------------- host: boxes


def generate_anchors(base_size: int = FEAT_STRIDE, ratios: Sequence[float] = ANCHOR_RATIOS,
                     scales: Sequence[float] = ANCHOR_SCALES) -> np.ndarray:
    """Anchor shapes centred on the origin.

    Anchor ``(r, s)`` has area ``(base_size * s) ** 2`` and height / width
    ``r``; ratios are the outer loop, scales the inner (py-faster-rcnn order).

    Parameters
    ----------
    base_size : int, optional
        Side of the scale-1 anchor, the feature stride.
    ratios : sequence of float, optional
        Height / width ratios.
    scales : sequence of float, optional
        Multiples of ``base_size``.

    Returns
    -------
    numpy.ndarray
        ``(len(ratios) * len(scales), 4)`` float64 corner-form boxes.
    """
    out = []
    for r in ratios:
        for s in scales:
            side = base_size * s
            w, h = side / math.sqrt(r), side * math.sqrt(r)
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return np.asarray(out, dtype=np.float64)


def grid_anchors(height: int, width: int, stride: int = FEAT_STRIDE,
                 base_anchors: np.ndarray | None = None) -> np.ndarray:
    """All anchors of a ``height`` x ``width`` feature map, in input-image pixels.

    Cell ``(y, x)`` is centred at ``((x + 0.5) * stride, (y + 0.5) * stride)``.
    Anchor ``(y, x, a)`` is row ``(y * width + x) * A + a``, the order in which
    :func:`rpn_proposals` flattens the RPN outputs.

    Parameters
    ----------
    height, width : int
        Feature-map size.
    stride : int, optional
        Input pixels per feature-map cell.
    base_anchors : numpy.ndarray, optional
        ``(A, 4)`` origin-centred anchors; :func:`generate_anchors` by default.

    Returns
    -------
    numpy.ndarray
        ``(height * width * A, 4)`` float64 corner-form boxes.
    """
    if base_anchors is None:
        base_anchors = generate_anchors(stride)
    cy, cx = np.meshgrid((np.arange(height) + 0.5) * stride, (np.arange(width) + 0.5) * stride, indexing="ij")
    shifts = np.stack([cx.ravel(), cy.ravel(), cx.ravel(), cy.ravel()], axis=1)
    return (shifts[:, None, :] + base_anchors[None, :, :]).reshape(-1, 4)


def decode_boxes(boxes: np.ndarray, deltas: np.ndarray,
                 stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> np.ndarray:
    """Apply Faster R-CNN box deltas.

    With ``w = x2 - x1``, centre ``cx`` and ``(dx, dy, dw, dh) = deltas * stds``:
    ``cx' = cx + dx w``, ``w' = w exp(dw)`` (``dw``, ``dh`` clamped to
    ``log(1000 / 16)``), likewise for y.

    Parameters
    ----------
    boxes : numpy.ndarray
        ``(N, 4)`` corner-form reference boxes (anchors or ROIs).
    deltas : numpy.ndarray
        ``(N, 4 K)``: K sets of deltas per box (one per class for the R-CNN head).
    stds : sequence of 4 float, optional
        De-normalisation of the deltas.

    Returns
    -------
    numpy.ndarray
        ``(N, 4 K)`` float64 decoded corner-form boxes.

    Raises
    ------
    ValueError
        On mismatched shapes.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    deltas = np.asarray(deltas, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or deltas.ndim != 2 or deltas.shape[0] != boxes.shape[0] \
            or deltas.shape[1] % 4:
        raise ValueError(f"boxes must be (N, 4) and deltas (N, 4K); got {boxes.shape} and {deltas.shape}")
    d = deltas.reshape(len(deltas), -1, 4) * np.asarray(stds, dtype=np.float64)
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    cx = boxes[:, 0:1] + 0.5 * w
    cy = boxes[:, 1:2] + 0.5 * h
    pcx, pcy = cx + d[..., 0] * w, cy + d[..., 1] * h
    pw = w * np.exp(np.minimum(d[..., 2], _DELTA_CLAMP))
    ph = h * np.exp(np.minimum(d[..., 3], _DELTA_CLAMP))
    out = np.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], axis=-1)
    return out.reshape(deltas.shape)


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clamp ``(N, 4 K)`` corner-form boxes to ``[0, width] x [0, height]``."""
    boxes = np.array(boxes, dtype=np.float64)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return boxes


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def rpn_proposals(rpn_cls_score, rpn_bbox_pred, image_size: tuple[int, int], *, stride: int = FEAT_STRIDE,
                  base_anchors: np.ndarray | None = None, pre_nms_top_n: int = 6000,
                  post_nms_top_n: int = 300, nms_threshold: float = 0.7,
                  min_size: float = 16.0) -> tuple[np.ndarray, np.ndarray]:
    """Host step after engine part 1: region proposals.

    Softmax over each anchor's (background, object) logits; decode the deltas
    against the anchors; clip to the image; drop boxes narrower or shorter
    than ``min_size``; keep the ``pre_nms_top_n`` best; NMS at
    ``nms_threshold``; keep the ``post_nms_top_n`` best.

    Parameters
    ----------
    rpn_cls_score : torch.Tensor or numpy.ndarray
        ``(1, 2A, h, w)`` logits (layout in :class:`RPNEngine`).
    rpn_bbox_pred : torch.Tensor or numpy.ndarray
        ``(1, 4A, h, w)`` deltas.
    image_size : (int, int)
        ``(width, height)`` of the network input in pixels.
    stride : int, optional
        Feature stride.
    base_anchors : numpy.ndarray, optional
        ``(A, 4)`` anchor shapes; :func:`generate_anchors` by default.
    pre_nms_top_n, post_nms_top_n : int, optional
        Boxes kept before and after NMS.
    nms_threshold : float, optional
        NMS IoU threshold.
    min_size : float, optional
        Smallest side, in input pixels, of a kept proposal.

    Returns
    -------
    proposals : numpy.ndarray
        ``(R, 4)`` float64 boxes in input pixels, ``R <= post_nms_top_n``.
    scores : numpy.ndarray
        ``(R,)`` object probabilities, decreasing.

    Raises
    ------
    ValueError
        If the two maps disagree with each other or with the anchors.
    """
    cls = _numpy(rpn_cls_score).astype(np.float64)
    bbox = _numpy(rpn_bbox_pred).astype(np.float64)
    if base_anchors is None:
        base_anchors = generate_anchors(stride)
    a = len(base_anchors)
    if cls.ndim != 4 or cls.shape[:2] != (1, 2 * a) or bbox.shape != (1, 4 * a, *cls.shape[2:]):
        raise ValueError(f"expected rpn_cls_score (1, {2 * a}, h, w) and rpn_bbox_pred (1, {4 * a}, h, w); "
                         f"got {cls.shape} and {bbox.shape}")
    h, w = cls.shape[2:]
    logits = np.stack([cls[0, :a], cls[0, a:]], axis=-1)            # (A, h, w, 2)
    scores = softmax(logits, axis=-1)[..., 1].transpose(1, 2, 0).reshape(-1)
    deltas = bbox[0].reshape(a, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4)
    anchors = grid_anchors(h, w, stride, base_anchors)
    width, height = image_size
    boxes = clip_boxes(decode_boxes(anchors, deltas), width, height)
    big = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    boxes, scores = boxes[big], scores[big]
    order = np.argsort(-scores, kind="stable")[:pre_nms_top_n]
    boxes, scores = boxes[order], scores[order]
    keep = nms(boxes, scores, nms_threshold)[:post_nms_top_n]
    return boxes[keep], scores[keep]


def _c_round(x: np.ndarray) -> np.ndarray:
    """C ``round()``: halves away from zero (numpy's ``round`` goes to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _roi_bins(roi: Sequence[float], extent: int, spatial_scale: float,
              output_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature-map rows (or columns) of each pooling bin of one ROI along one axis.

    Parameters
    ----------
    roi : pair of float
        ``(start, end)`` of the ROI along the axis, in input pixels (``end`` inclusive, Caffe style).
    extent : int
        Feature-map size along the axis (bins are clipped to ``[0, extent]``).
    spatial_scale, output_size : float, int
        As for :func:`roi_max_pool`.

    Returns
    -------
    start, end : numpy.ndarray
        ``(output_size,)`` int64 half-open bin bounds; a bin is empty when ``end <= start``.
    """
    lo, hi = _c_round(np.asarray(roi, dtype=np.float64) * spatial_scale).astype(np.int64)
    length = max(int(hi - lo) + 1, 1)
    p = np.arange(output_size, dtype=np.int64)
    start = (p * length) // output_size + lo
    end = -((-(p + 1) * length) // output_size) + lo       # exact ceil
    return np.clip(start, 0, extent), np.clip(end, 0, extent)


def roi_max_pool(features, rois, output_size: int = POOLED_SIZE, spatial_scale: float = SPATIAL_SCALE):
    """Host step: ROI max pooling with Caffe ``ROIPooling`` semantics.

    Each ROI is mapped to the feature map as ``round(coord * spatial_scale)``
    (C rounding, halves away from zero) with ``x2, y2`` inclusive, so
    ``roi_h = max(y2' - y1' + 1, 1)``; bin ``ph`` covers rows
    ``[floor(ph * roi_h / S), ceil((ph + 1) * roi_h / S))`` offset by ``y1'``
    and clipped to the map (columns likewise); the output is the maximum over
    the bin, or 0 if the clipped bin is empty. The bin bounds are computed in
    exact integer arithmetic (Caffe's float32 ``bin_size`` can be off by one
    row in rare cases; that quirk is not reproduced).

    Parameters
    ----------
    features : torch.Tensor or numpy.ndarray
        ``(1, C, H, W)`` or ``(C, H, W)`` feature map of one image.
    rois : numpy.ndarray or torch.Tensor
        ``(R, 4)`` boxes ``(x1, y1, x2, y2)`` in input-image pixels.
    output_size : int, optional
        Side S of the pooled output.
    spatial_scale : float, optional
        Feature-map cells per input pixel.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        ``(R, C, S, S)`` float32; a tensor if ``features`` is a tensor.

    Raises
    ------
    ValueError
        On badly shaped inputs.
    """
    as_tensor = isinstance(features, torch.Tensor)
    feat = _numpy(features).astype(np.float32, copy=False)
    if feat.ndim == 4:
        if feat.shape[0] != 1:
            raise ValueError(f"features must hold one image, got batch {feat.shape[0]}")
        feat = feat[0]
    rois = _numpy(rois).astype(np.float64)
    if feat.ndim != 3 or rois.ndim != 2 or rois.shape[1] != 4:
        raise ValueError(f"expected features (C, H, W) and rois (R, 4); got {feat.shape} and {rois.shape}")
    c, height, width = feat.shape
    hwc = np.ascontiguousarray(feat.transpose(1, 2, 0))   # reductions then run along contiguous channels
    out = np.zeros((len(rois), output_size, output_size, c), dtype=np.float32)
    for r, (x1, y1, x2, y2) in enumerate(rois):
        hs, he = _roi_bins((y1, y2), height, spatial_scale, output_size)
        ws, we = _roi_bins((x1, x2), width, spatial_scale, output_size)
        for ph in range(output_size):
            if he[ph] <= hs[ph]:
                continue                                   # empty bin: stays 0
            # Max is separable over a rectangular bin: first over the bin's rows, then its columns.
            rows = hwc[hs[ph]:he[ph]].max(axis=0)
            for pw in range(output_size):
                if we[pw] > ws[pw]:
                    out[r, ph, pw] = rows[ws[pw]:we[pw]].max(axis=0)
    out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    return torch.from_numpy(out) if as_tensor else out


def rcnn_postprocess(cls_score, bbox_pred, rois: np.ndarray, image_size: tuple[int, int], *,
                     stds: Sequence[float] = BBOX_STDS, score_threshold: float = 0.05,
                     nms_threshold: float = 0.3, max_per_image: int = 100,
                     scale: float = 1.0) -> list[Detection]:
    """Host step after engine part 2: final detections.

    Softmax over the classes; for each foreground class, decode that class's
    deltas (times ``stds``) against the ROIs, clip to the image, keep scores
    above ``score_threshold``, NMS at ``nms_threshold``; then keep the
    ``max_per_image`` best over all classes.

    Parameters
    ----------
    cls_score : torch.Tensor or numpy.ndarray
        ``(R, C)`` logits.
    bbox_pred : torch.Tensor or numpy.ndarray
        ``(R, 4 C)`` normalised deltas.
    rois : numpy.ndarray
        ``(R, 4)`` proposals in input pixels.
    image_size : (int, int)
        ``(width, height)`` of the network input.
    stds : sequence of 4 float, optional
        Delta de-normalisation.
    score_threshold, nms_threshold : float, optional
        Per-class score cut and NMS IoU threshold.
    max_per_image : int, optional
        Detections kept in total.
    scale : float, optional
        Input pixels per original-image pixel: boxes are divided by it.

    Returns
    -------
    list of Detection
        Highest score first; ``label`` indexes the classes (0 = background never appears).

    Raises
    ------
    ValueError
        On mismatched shapes.
    """
    logits = _numpy(cls_score).astype(np.float64)
    deltas = _numpy(bbox_pred).astype(np.float64)
    rois = _numpy(rois).astype(np.float64)
    r, c = logits.shape if logits.ndim == 2 else (None, None)
    if r is None or deltas.shape != (r, 4 * c) or rois.shape != (r, 4):
        raise ValueError(f"expected cls_score (R, C), bbox_pred (R, 4C), rois (R, 4); got {logits.shape}, "
                         f"{deltas.shape}, {rois.shape}")
    if r == 0:
        return []
    probs = softmax(logits, axis=1)
    width, height = image_size
    boxes = clip_boxes(decode_boxes(rois, deltas, stds), width, height) / scale
    found = []
    for j in range(1, c):
        idx = np.flatnonzero(probs[:, j] > score_threshold)
        if not idx.size:
            continue
        b, s = boxes[idx, 4 * j:4 * j + 4], probs[idx, j]
        for k in nms(b, s, nms_threshold):
            found.append(Detection(*map(float, b[k]), score=float(s[k]), label=j))
    found.sort(key=lambda d: -d.score)
    return found[:max_per_image]


# ---------------------------------------------------------------------------------------- whole detector


def faster_rcnn_preprocess(image, *, short_side: int = 600,
                           max_side: int = 1000) -> tuple[torch.Tensor, float]:
    """Resize (aspect kept) and ImageNet-normalise a picture for the SqueezeNet backbone.

    The short side becomes ``short_side`` unless the long side would exceed
    ``max_side``; Pillow bilinear; RGB in [0, 1], minus the ImageNet mean,
    divided by its std (:data:`sw.shared.IMAGENET_MEAN` / ``IMAGENET_STD``).

    Parameters
    ----------
    image : str, os.PathLike or PIL.Image.Image
        The picture.
    short_side, max_side : int, optional
        Target sizes in pixels.

    Returns
    -------
    x : torch.Tensor
        ``(1, 3, H, W)`` float32.
    scale : float
        Input pixels per original pixel.
    """
    from PIL import Image

    from sw.preprocess import as_rgb_image
    from sw.shared import IMAGENET_MEAN, IMAGENET_STD

    if short_side <= 0 or max_side < short_side:
        raise ValueError(f"need 0 < short_side <= max_side, got {short_side} and {max_side}")
    img = as_rgb_image(image)
    w, h = img.size
    scale = min(short_side / min(w, h), max_side / max(w, h))
    img = img.resize((max(round(w * scale), 1), max(round(h * scale), 1)), Image.Resampling.BILINEAR)
    x = (np.asarray(img, dtype=np.float32) / 255.0 - np.asarray(IMAGENET_MEAN, np.float32)) \
        / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None], scale


@dataclasses.dataclass
class FasterRCNNResult:
    """Everything :meth:`FasterRCNN.detect` computes for one picture.

    Attributes
    ----------
    input_size : (int, int)
        ``(width, height)`` of the network input.
    scale : float
        Input pixels per original pixel.
    proposals : numpy.ndarray
        ``(R, 4)`` RPN proposals in input pixels.
    proposal_scores : numpy.ndarray
        ``(R,)`` their object probabilities.
    roi_features : torch.Tensor
        ``(R, 512, 7, 7)`` pooled features (the engine part 2 input).
    cls_score, bbox_pred : torch.Tensor
        ``(R, C)`` and ``(R, 4 C)`` engine part 2 outputs.
    detections : list of Detection
        Final boxes in original-image pixels.
    """

    input_size: tuple[int, int]
    scale: float
    proposals: np.ndarray
    proposal_scores: np.ndarray
    roi_features: torch.Tensor
    cls_score: torch.Tensor
    bbox_pred: torch.Tensor
    detections: list[Detection]


class FasterRCNN(nn.Module):
    """SqueezeNet 1.1 Faster R-CNN: the two engine parts and the host steps between them.

    Parameters
    ----------
    rpn : RPNEngine
        Engine part 1.
    head : RCNNHeadEngine
        Engine part 2.
    """

    def __init__(self, rpn: RPNEngine, head: RCNNHeadEngine):
        super().__init__()
        self.rpn = rpn
        self.head = head

    @property
    def num_classes(self) -> int:
        """Classes including background."""
        return self.head.num_classes

    def forward(self, x: torch.Tensor):
        """Not a single graph: use :meth:`detect`, or the ``rpn`` and ``head`` engine parts."""
        raise TypeError("FasterRCNN has host steps between its engine parts: call detect(), or rpn / head")

    @torch.no_grad()
    def detect(self, image, *, short_side: int = 600, max_side: int = 1000, post_nms_top_n: int = 300,
               score_threshold: float = 0.05, nms_threshold: float = 0.3,
               max_per_image: int = 100) -> FasterRCNNResult:
        """Run the whole detector on one picture.

        Parameters
        ----------
        image : str, os.PathLike or PIL.Image.Image
            The picture.
        short_side, max_side : int, optional
            Input size (:func:`faster_rcnn_preprocess`).
        post_nms_top_n : int, optional
            Proposals sent to the R-CNN head.
        score_threshold, nms_threshold, max_per_image : optional
            Final filtering (:func:`rcnn_postprocess`).

        Returns
        -------
        FasterRCNNResult
        """
        x, scale = faster_rcnn_preprocess(image, short_side=short_side, max_side=max_side)
        input_size = (x.shape[3], x.shape[2])
        feat, cls, bbox = self.rpn(x)                                             # engine part 1
        proposals, scores = rpn_proposals(cls, bbox, input_size, post_nms_top_n=post_nms_top_n)   # host
        pooled = roi_max_pool(feat, proposals)                                    # host
        cls_score, bbox_pred = self.head(pooled)                                  # engine part 2
        dets = rcnn_postprocess(cls_score, bbox_pred, proposals, input_size, score_threshold=score_threshold,
                                nms_threshold=nms_threshold, max_per_image=max_per_image, scale=scale)
        return FasterRCNNResult(input_size, scale, proposals, scores, pooled, cls_score, bbox_pred, dets)


def _init_heads(modules: Sequence[tuple[nn.Conv2d, float]], seed: int) -> None:
    """Seeded Gaussian weights (the seed prototxt's fillers) and zero biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv, std in modules:
            nn.init.normal_(conv.weight, 0.0, std, generator=g)
            nn.init.zeros_(conv.bias)


def build_faster_rcnn(num_classes: int = len(VOC_CLASSES), *, seed: int = 0, pretrained: bool = True,
                      weights_dir: str | os.PathLike | None = None) -> FasterRCNN:
    """SqueezeNet 1.1 Faster R-CNN with a pretrained backbone and seeded random heads.

    Parameters
    ----------
    num_classes : int, optional
        Classes including background.
    seed : int, optional
        Seed of the private ``torch.Generator`` that draws the RPN and R-CNN
        head weights (so they do not depend on the global torch RNG).
    pretrained : bool, optional
        Load the ImageNet SqueezeNet 1.1 weights (:func:`sw.models.squeezenet.load_squeezenet11`);
        ``False`` keeps torch's default random backbone (for tests without the shared data).
    weights_dir : str or os.PathLike, optional
        SqueezeNet weight folder, passed to ``load_squeezenet11``.

    Returns
    -------
    FasterRCNN
        In eval mode. Its heads are untrained: detections are not meaningful.

    Raises
    ------
    FileNotFoundError
        If ``pretrained`` and the SqueezeNet weights are missing.
    """
    from sw.models.squeezenet import SqueezeNet11, load_squeezenet11

    backbone = load_squeezenet11(weights_dir) if pretrained else SqueezeNet11()
    rpn = RPNEngine(backbone.features)
    head = RCNNHeadEngine(num_classes)
    _init_heads([(rpn.rpn_conv, 0.01), (rpn.rpn_cls_score, 0.01), (rpn.rpn_bbox_pred, 0.01),
                 (head.conv1_last, 0.01), (head.cls_score, 0.01), (head.bbox_pred, 0.001)], seed)
    return FasterRCNN(rpn, head).eval()
