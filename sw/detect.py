"""Host-side SSD detection: priors, box decoding, softmax, NMS, drawing.

The FPGA engine computes RFSong-779 up to its twelve head convolutions; the
host does everything after them (``../shared/DATA.md``):

1. permute/flatten the head outputs (:func:`sw.models.rfsong.flatten_heads`)
   into ``loc`` (7759 x 4) and ``conf`` (7759 x 2);
2. decode ``loc`` against the SSD priors (:func:`prior_boxes`) with the
   variances (0.1, 0.2) (:func:`decode`);
3. softmax over (background, person), keep person scores > 0.3;
4. greedy NMS at IoU 0.2 (:func:`nms`);
5. scale the normalized boxes to the pixels of the original picture.

:func:`ssd_postprocess` does steps 2-5; :func:`detect_image` runs a whole
float model on a picture. Boxes are in continuous corner form ``(x1, y1, x2,
y2)``: area is ``(x2 - x1) * (y2 - y1)``, no "+1" pixel convention.

Run ``python -m sw.detect PICTURE...`` to print the float detections of the
pretrained RFSong-779 and draw them to ``out/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import ImageDraw

__all__ = [
    "PriorConfig", "RFSONG779_PRIORS", "VARIANCES", "CONF_THRESHOLD", "NMS_THRESHOLD",
    "Detection", "prior_boxes", "decode", "center_to_corners", "softmax", "iou", "nms",
    "ssd_postprocess", "detect_image", "draw_detections", "main",
]

#: SSD box-encoding variances (centre, size).
VARIANCES = (0.1, 0.2)
#: Person score a detection must exceed.
CONF_THRESHOLD = 0.3
#: IoU above which the lower-scored of two detections is suppressed.
NMS_THRESHOLD = 0.2


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    """Geometry of an SSD's prior (default) boxes.

    Attributes
    ----------
    image_size : int
        Side of the square network input in pixels.
    feature_maps : tuple of int
        Side of each square feature map the heads run on.
    steps : tuple of int
        Pixel stride of each feature map: cell ``j`` is centred at
        ``(j + 0.5) * step / image_size``.
    min_sizes, max_sizes : tuple of int
        Box sides in pixels: the aspect-ratio boxes have side ``min``, the
        first box of a cell side ``sqrt(min * max)``.
    max_ratios : tuple of float
        Aspect ratio (w/h) of the first, ``sqrt(min * max)`` box of each map.
    aspect_ratios : tuple of tuple of float
        Aspect ratios (w/h) of the side-``min`` boxes of each map.
    clip : bool
        Clamp every ``(cx, cy, w, h)`` value to [0, 1].
    """

    image_size: int
    feature_maps: tuple[int, ...]
    steps: tuple[int, ...]
    min_sizes: tuple[int, ...]
    max_sizes: tuple[int, ...]
    max_ratios: tuple[float, ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    clip: bool = True

    def __post_init__(self):
        n = len(self.feature_maps)
        for name in ("steps", "min_sizes", "max_sizes", "max_ratios", "aspect_ratios"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} entries but feature_maps has {n}")

    @property
    def anchors_per_cell(self) -> tuple[int, ...]:
        """Number of priors per feature-map cell, one entry per map."""
        return tuple(1 + len(a) for a in self.aspect_ratios)

    @property
    def num_priors(self) -> int:
        """Total number of priors over all feature maps."""
        return sum(f * f * a for f, a in zip(self.feature_maps, self.anchors_per_cell, strict=True))


#: The priors of RFSong-779 as given in ``../shared/DATA.md`` (7759 boxes).
RFSONG779_PRIORS = PriorConfig(
    image_size=300,
    feature_maps=(38, 19, 10, 5, 3, 1),
    steps=(8, 16, 32, 64, 100, 300),
    min_sizes=(26, 60, 111, 162, 213, 264),
    max_sizes=(60, 111, 162, 213, 264, 315),
    max_ratios=(0.8, 0.8, 0.8, 0.9, 1.0, 1.0),
    aspect_ratios=((0.4, 1.0, 1.5), (0.4, 1.0, 1.6), (0.5, 1.1, 1.6),
                   (0.5, 1.1, 1.6), (0.5, 1.1, 1.6), (0.7, 1.4)),
)


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected object, in pixels of the original picture.

    Attributes
    ----------
    x1, y1, x2, y2 : float
        Corners of the box (continuous coordinates; may lie slightly outside
        the picture, the detector's boxes are not clipped).
    score : float
        Class probability after softmax.
    label : int
        Class index (1 = person for RFSong-779; 0 is always background).
    """

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    label: int = 1

    @property
    def box(self) -> np.ndarray:
        """The corners ``[x1, y1, x2, y2]`` as a float64 array."""
        return np.array([self.x1, self.y1, self.x2, self.y2], dtype=np.float64)


def prior_boxes(config: PriorConfig = RFSONG779_PRIORS) -> np.ndarray:
    """SSD prior boxes in normalized centre form.

    Cells are visited map by map, row-major with rows (y) outer; each cell
    gives first the box of side ``s' = sqrt(min * max) / image_size`` with
    aspect ratio ``r = max_ratio`` (``w = s' sqrt(r)``, ``h = s' / sqrt(r)``),
    then one box of side ``s = min / image_size`` per aspect ratio.

    Parameters
    ----------
    config : PriorConfig, optional
        Prior geometry; RFSong-779's by default.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``(config.num_priors, 4)``, columns
        ``(cx, cy, w, h)`` in [0, 1] (clamped when ``config.clip``).
    """
    rows = []
    for k, fmap in enumerate(config.feature_maps):
        step = config.steps[k] / config.image_size
        s_min = config.min_sizes[k] / config.image_size
        s_prime = math.sqrt(config.min_sizes[k] * config.max_sizes[k]) / config.image_size
        r = config.max_ratios[k]
        shapes = [(s_prime * math.sqrt(r), s_prime / math.sqrt(r))]
        shapes += [(s_min * math.sqrt(a), s_min / math.sqrt(a)) for a in config.aspect_ratios[k]]
        shapes = np.asarray(shapes)                                   # (A, 2): w, h
        centres = (np.arange(fmap) + 0.5) * step
        cy, cx = np.meshgrid(centres, centres, indexing="ij")        # rows (y) outer
        cells = np.stack([cx.ravel(), cy.ravel()], axis=1)            # (F*F, 2)
        boxes = np.concatenate([
            np.repeat(cells, len(shapes), axis=0),
            np.tile(shapes, (len(cells), 1)),
        ], axis=1)
        rows.append(boxes)
    priors = np.concatenate(rows, axis=0)
    if config.clip:
        priors = np.clip(priors, 0.0, 1.0)
    return priors.astype(np.float32)


def decode(loc: np.ndarray, priors: np.ndarray, variances: Sequence[float] = VARIANCES) -> np.ndarray:
    """Decode SSD location offsets against centre-form priors.

    ``cx = p_cx + l_x * v0 * p_w``, ``cy = p_cy + l_y * v0 * p_h``,
    ``w = p_w * exp(l_w * v1)``, ``h = p_h * exp(l_h * v1)``.

    Parameters
    ----------
    loc : numpy.ndarray
        Offsets ``(N, 4)`` (``l_x, l_y, l_w, l_h``), as the loc head outputs them.
    priors : numpy.ndarray
        Priors ``(N, 4)`` in centre form ``(cx, cy, w, h)``.
    variances : pair of float, optional
        ``(v0, v1)``, (0.1, 0.2) for SSD.

    Returns
    -------
    numpy.ndarray
        ``float64`` boxes ``(N, 4)`` in corner form ``(x1, y1, x2, y2)``, in
        the priors' (normalized) units.

    Raises
    ------
    ValueError
        If the shapes do not match.
    """
    loc = np.asarray(loc, dtype=np.float64)
    priors = np.asarray(priors, dtype=np.float64)
    if loc.ndim != 2 or loc.shape[1] != 4 or loc.shape != priors.shape:
        raise ValueError(f"loc and priors must both be (N, 4); got {loc.shape} and {priors.shape}")
    v0, v1 = variances
    centre = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
    return center_to_corners(np.concatenate([centre, size], axis=1))


def center_to_corners(boxes: np.ndarray) -> np.ndarray:
    """Convert ``(cx, cy, w, h)`` boxes to ``(x1, y1, x2, y2)``.

    Parameters
    ----------
    boxes : numpy.ndarray
        Array ``(..., 4)`` in centre form.

    Returns
    -------
    numpy.ndarray
        Array of the same shape in corner form.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    half = boxes[..., 2:] / 2
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of ``x`` along ``axis`` (float64)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Intersection over union of corner-form boxes.

    Parameters
    ----------
    a : numpy.ndarray
        One box ``(4,)`` or boxes ``(N, 4)``, as ``(x1, y1, x2, y2)``.
    b : numpy.ndarray
        One box ``(4,)`` or boxes ``(M, 4)``.

    Returns
    -------
    numpy.ndarray or float
        The ``(N, M)`` matrix of pairwise IoUs; a 1-D input drops its axis,
        two single boxes give a float. Degenerate boxes (zero area) have IoU
        0 with everything.

    Raises
    ------
    ValueError
        If an input is not ``(4,)`` or ``(K, 4)``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    for name, v in (("a", a), ("b", b)):
        if v.ndim not in (1, 2) or v.shape[-1] != 4:
            raise ValueError(f"{name} must have shape (4,) or (K, 4), got {v.shape}")
    a2, b2 = np.atleast_2d(a), np.atleast_2d(b)
    lt = np.maximum(a2[:, None, :2], b2[None, :, :2])
    rb = np.minimum(a2[:, None, 2:], b2[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.clip(a2[:, 2] - a2[:, 0], 0, None) * np.clip(a2[:, 3] - a2[:, 1], 0, None)
    area_b = np.clip(b2[:, 2] - b2[:, 0], 0, None) * np.clip(b2[:, 3] - b2[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    if a.ndim == 1 and b.ndim == 1:
        return float(out[0, 0])
    if a.ndim == 1:
        return out[0]
    if b.ndim == 1:
        return out[:, 0]
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression.

    Boxes are visited by decreasing score (ties: lower index first); a box is
    kept unless its IoU with an already kept box is greater than
    ``iou_threshold``.

    Parameters
    ----------
    boxes : numpy.ndarray
        ``(N, 4)`` corner-form boxes.
    scores : numpy.ndarray
        ``(N,)`` scores.
    iou_threshold : float
        Suppression threshold in [0, 1].
    top_k : int, optional
        Consider only the ``top_k`` highest-scored boxes.

    Returns
    -------
    numpy.ndarray
        ``int64`` indices of the kept boxes, highest score first.

    Raises
    ------
    ValueError
        On mismatched shapes or a threshold outside [0, 1].
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (boxes.shape[0],):
        raise ValueError(f"boxes must be (N, 4) and scores (N,); got {boxes.shape} and {scores.shape}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _to_numpy(x) -> np.ndarray:
    """A torch tensor or array-like as a numpy array (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def ssd_postprocess(
    loc,
    conf,
    image_size: tuple[int, int],
    *,
    priors: np.ndarray | None = None,
    variances: Sequence[float] = VARIANCES,
    conf_threshold: float = CONF_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    top_k: int | None = None,
    label: int = 1,
) -> list[Detection]:
    """Turn flattened SSD outputs into detections in picture pixels.

    Parameters
    ----------
    loc : array-like or torch.Tensor
        Location offsets ``(1, P, 4)`` or ``(P, 4)``.
    conf : array-like or torch.Tensor
        Class logits ``(1, P, C)`` or ``(P, C)`` (before softmax).
    image_size : (int, int)
        ``(width, height)`` of the original picture, e.g. the
        :class:`sw.preprocess.ImageSize` returned by
        :func:`sw.preprocess.ssd_preprocess`.
    priors : numpy.ndarray, optional
        Centre-form priors ``(P, 4)``; RFSong-779's by default.
    variances : pair of float, optional
        Box-encoding variances.
    conf_threshold : float, optional
        Keep boxes whose ``label`` probability is greater than this.
    nms_threshold : float, optional
        NMS IoU threshold.
    top_k : int, optional
        Consider only the ``top_k`` best boxes in NMS (all by default).
    label : int, optional
        Class whose detections are returned (1 = person).

    Returns
    -------
    list of Detection
        Highest score first. Boxes are not clipped to the picture.

    Raises
    ------
    ValueError
        If the shapes of ``loc``, ``conf`` and ``priors`` disagree or
        ``label`` is not a class of ``conf``.
    """
    loc = _to_numpy(loc)
    conf = _to_numpy(conf)
    if loc.ndim == 3:
        if loc.shape[0] != 1 or conf.ndim != 3 or conf.shape[0] != 1:
            raise ValueError(f"expected a batch of one; got loc {loc.shape}, conf {conf.shape}")
        loc, conf = loc[0], conf[0]
    if priors is None:
        priors = prior_boxes()
    if conf.ndim != 2 or conf.shape[0] != loc.shape[0] or loc.shape != priors.shape:
        raise ValueError(
            f"loc {loc.shape}, conf {conf.shape} and priors {priors.shape} disagree on the number of priors")
    if not 0 < label < conf.shape[1]:
        raise ValueError(f"label must be a foreground class in 1..{conf.shape[1] - 1}, got {label}")
    scores = softmax(conf, axis=1)[:, label]
    mask = scores > conf_threshold
    if not mask.any():
        return []
    boxes = decode(loc[mask], priors[mask], variances)
    scores = scores[mask]
    keep = nms(boxes, scores, nms_threshold, top_k)
    width, height = image_size
    boxes = boxes[keep] * np.array([width, height, width, height], dtype=np.float64)
    return [Detection(*map(float, b), score=float(s), label=label)
            for b, s in zip(boxes, scores[keep], strict=True)]


def detect_image(model, image, **kwargs) -> list[Detection]:
    """Run a float SSD model on one picture and post-process its outputs.

    Parameters
    ----------
    model : torch.nn.Module
        A model whose ``forward`` returns ``(loc, conf)`` flattened, such as
        :class:`sw.models.rfsong.RFSong779` (in eval mode).
    image : str, os.PathLike or PIL.Image.Image
        The picture.
    **kwargs
        Passed on to :func:`ssd_postprocess`.

    Returns
    -------
    list of Detection
        Detections in pixels of the original picture, highest score first.
    """
    import torch

    from sw.preprocess import ssd_preprocess

    x, size = ssd_preprocess(image)
    with torch.no_grad():
        loc, conf = model(x)
    return ssd_postprocess(loc, conf, size, **kwargs)


def draw_detections(
    image_path: str | os.PathLike,
    detections: Sequence[Detection],
    out_png: str | os.PathLike,
    *,
    color: tuple[int, int, int] = (255, 32, 32),
    width: int = 3,
    class_names: Sequence[str] | None = ("background", "person"),
) -> Path:
    """Draw detections over a picture and save it as PNG.

    Parameters
    ----------
    image_path : str or os.PathLike
        The original picture (boxes are in its pixels).
    detections : sequence of Detection
        Boxes to draw, each labelled with its class name and score.
    out_png : str or os.PathLike
        Where to write the PNG; parent folders are created.
    color : (int, int, int), optional
        RGB colour of boxes and labels.
    width : int, optional
        Line width in pixels.
    class_names : sequence of str, optional
        Names indexed by :attr:`Detection.label`; ``None`` prints the index.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from sw.preprocess import as_rgb_image

    img = as_rgb_image(image_path).copy()
    draw = ImageDraw.Draw(img)
    for d in detections:
        draw.rectangle([d.x1, d.y1, d.x2, d.y2], outline=color, width=width)
        known = class_names is not None and d.label < len(class_names)
        name = class_names[d.label] if known else str(d.label)
        text = f"{name} {d.score:.2f}"
        tx, ty = d.x1 + width, max(d.y1 - 12, 0)
        bbox = draw.textbbox((tx, ty), text)
        draw.rectangle(bbox, fill=color)
        draw.text((tx, ty), text, fill=(255, 255, 255))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format="PNG")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: float RFSong-779 detections of pictures, printed and drawn."""
    parser = argparse.ArgumentParser(prog="python -m sw.detect", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="pictures to run the detector on")
    parser.add_argument("--weights",
                        help="RFSong-779 state_dict (default: <shared>/models/rfsong779/epoches_114.pth)")
    parser.add_argument("--out-dir", default="out", help="folder for the annotated PNGs (default: out)")
    args = parser.parse_args(argv)

    import torch

    from sw.models.rfsong import load_rfsong779

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_rfsong779(args.weights)
    for path in args.images:
        dets = detect_image(model, path)
        print(f"{path}: {len(dets)} detection(s)")
        for d in dets:
            print(f"  ({d.x1:.1f}, {d.y1:.1f}, {d.x2:.1f}, {d.y2:.1f}, {d.score:.3f})")
        out = draw_detections(path, dets, Path(args.out_dir) / (Path(path).stem + "_det.png"))
        print(f"  drawn to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
