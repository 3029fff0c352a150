"""``kindling eval``: how far a network's int8 answers are from its float answers, over many inputs.

Every input (a picture, a ``.npy`` network input, or a crop/flip of a picture
made on the fly with ``augment``) goes through the float model and through the
quantized network on a backend; per input the two answers are compared:

* classifier (SqueezeNet 1.1): top-1 agreement (same class first), top-5
  agreement (the float top-1 class among the int8 top 5), the overlap of the two
  top-5 sets, mean and largest ``|int8 logit - float logit|``;
* detector (RFSong-779): the float and the int8 detections matched greedily
  (best score first) at IoU >= :data:`MATCH_IOU`, counted, and the mean IoU of
  the matched pairs.

Backends: ``golden`` runs the integer graph through the golden model
(``quant.golden.infer``; the golden *engine* backend, the ISA interpreter, is
bit-exact with it layer by layer, tests/test_golden_fast.py) and is spread
over worker processes; ``verilator`` and ``serial`` run the compiled program
on the engine through :class:`sw.networks.Runner` in this process (one engine),
with the per-layer check against the golden model when asked.

The worker processes are forked after the network is quantized, so each one
starts with the integer graph and the float model already in memory; each
runs PyTorch on one thread.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["EVAL_NETWORKS", "MATCH_IOU", "InputSpec", "collect_inputs", "augment_inputs", "Evaluator", "evaluate",
           "summarize", "format_summary", "write_csv", "match_detections"]

#: Networks ``kindling eval`` knows, and the kind of answer each gives.
EVAL_NETWORKS = {"squeezenet": "classifier", "rfsong": "detector"}
#: IoU at which an int8 detection counts as the float detection's twin.
MATCH_IOU = 0.5
#: Picture suffixes taken from a folder (case-insensitive); ``.npy`` files are network inputs.
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Input shape of each network's ``.npy`` files.
NPY_SHAPES = {"squeezenet": (1, 3, 224, 224), "rfsong": (1, 3, 300, 300)}
#: Crops of ``augment``: the fraction of the picture's area kept, and the aspect ratio range (log-uniform).
CROP_AREA = (0.35, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
#: Inputs per float-model batch on the golden backend (one thread: 4 runs SqueezeNet 1.1 at 9.7 ms an input
#: against 13.1 ms one at a time; 8 and 16 are slower again).
FLOAT_BATCH = 4


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One input of an evaluation: a file, and (for augmented pictures) the crop and flip made from it.

    ``crop`` is ``(left, top, right, bottom)`` in picture pixels, None for the whole picture.
    """

    name: str
    path: str
    crop: tuple[int, int, int, int] | None = None
    flip: bool = False


def collect_inputs(paths) -> list[InputSpec]:
    """Every picture and ``.npy`` file of ``paths`` (files, or folders read one level deep, sorted).

    Raises :class:`ValueError` for a missing path, a folder with nothing to
    evaluate, or a mix of pictures and ``.npy`` inputs (they use different
    calibrations).
    """
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in (*PICTURE_SUFFIXES, ".npy"))
            if not files:
                raise ValueError(f"{p}: no pictures ({', '.join(PICTURE_SUFFIXES)}) or .npy files in the folder")
            found += files
        elif p.is_file():
            found.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder")
    kinds = {f.suffix.lower() == ".npy" for f in found}
    if len(kinds) > 1:
        raise ValueError("a mix of .npy inputs and pictures; they use different calibrations")
    return [InputSpec(name=f.name, path=str(f)) for f in found]


def augment_inputs(specs: list[InputSpec], count: int, *, seed: int = 0) -> list[InputSpec]:
    """``count`` crops and flips of the pictures ``specs``, in turn, each from ``default_rng((seed, i))``.

    A crop keeps a random :data:`CROP_AREA` fraction of the picture with a
    random :data:`CROP_ASPECT` aspect ratio at a random place; half the inputs
    are mirrored. Only the picture sizes are read here.
    """
    from PIL import Image

    if not specs:
        raise ValueError("--augment needs at least one picture")
    if any(s.path.lower().endswith(".npy") for s in specs):
        raise ValueError("--augment makes crops of pictures, not of .npy inputs")
    sizes = []
    for s in specs:
        with Image.open(s.path) as im:
            sizes.append(im.size)
    out = []
    for i in range(count):
        k = i % len(specs)
        w, h = sizes[k]
        rng = np.random.default_rng((seed, i))
        area = rng.uniform(*CROP_AREA) * w * h
        aspect = math.exp(rng.uniform(math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1])))
        cw = min(w, max(8, round(math.sqrt(area * aspect))))
        ch = min(h, max(8, round(math.sqrt(area / aspect))))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        flip = bool(rng.integers(0, 2))
        out.append(InputSpec(name=f"{Path(specs[k].name).stem}#{i}", path=specs[k].path,
                             crop=(left, top, left + cw, top + ch), flip=flip))
    return out


def match_detections(a, b, threshold: float = MATCH_IOU) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of two detection lists (each highest score first) at IoU >= ``threshold``.

    Returns ``[(index in a, index in b, IoU)]``: each detection of ``a`` in
    turn takes the unmatched one of ``b`` it overlaps most, if that reaches the
    threshold.
    """
    from sw.detect import iou

    if not a or not b:
        return []
    ious = np.atleast_2d(iou(np.array([[d.x1, d.y1, d.x2, d.y2] for d in a]),
                             np.array([[d.x1, d.y1, d.x2, d.y2] for d in b])))
    taken = np.zeros(len(b), bool)
    pairs = []
    for i in range(len(a)):
        row = np.where(taken, -1.0, ious[i])
        j = int(row.argmax())
        if row[j] >= threshold:
            taken[j] = True
            pairs.append((i, j, float(row[j])))
    return pairs


class Evaluator:
    """One network's float model and quantized graph, and the comparison of their answers on one input.

    Parameters
    ----------
    network : str
        A key of :data:`EVAL_NETWORKS`.
    npy : bool
        The inputs are ``.npy`` network inputs (SqueezeNet: quantized with the
        ``noise255`` calibration of the ONNX test inputs).
    runner : sw.networks.Runner or None
        Run the int8 network on this engine; None: the golden model.
    """

    def __init__(self, network: str, *, npy: bool = False, runner=None):
        from sw.networks import quantized

        if network not in EVAL_NETWORKS:
            raise ValueError(f"kindling eval knows {', '.join(EVAL_NETWORKS)}, not {network!r}")
        self.network = network
        self.kind = EVAL_NETWORKS[network]
        self.npy = npy
        self.runner = runner
        self.qgraph = runner.qgraph if runner is not None else quantized(
            network, "noise255" if npy and network == "squeezenet" else "default")
        if network == "squeezenet":
            from sw.models.squeezenet import load_squeezenet11

            self.fmodel = load_squeezenet11().eval()
        else:
            from sw.networks import _rfsong_float

            self.fmodel = _rfsong_float().eval()
        # Channels-last: PyTorch's oneDNN float convolutions run 2.4x faster so on one thread (SqueezeNet 1.1).
        import torch

        self.fmodel = self.fmodel.to(memory_format=torch.channels_last)
        self._pictures: dict[str, object] = {}

    # -- inputs --------------------------------------------------------------------------------------
    def _picture(self, spec: InputSpec):
        from PIL import ImageOps

        from sw.preprocess import as_rgb_image

        im = self._pictures.get(spec.path)
        if im is None:
            im = self._pictures[spec.path] = as_rgb_image(spec.path)
        if spec.crop is not None:
            im = im.crop(spec.crop)
        if spec.flip:
            im = ImageOps.mirror(im)
        return im

    def network_input(self, spec: InputSpec):
        """The float network input of ``spec``, and the picture's size (detector boxes are in its pixels)."""
        import torch

        if spec.path.lower().endswith(".npy"):
            a = np.load(spec.path, allow_pickle=False)
            shape = NPY_SHAPES[self.network]
            if a.shape != shape or a.dtype.kind not in "fiu" or not np.isfinite(a).all():
                raise ValueError(f"{spec.path}: a {a.dtype} array of shape {a.shape}; {self.network} takes finite "
                                 f"numbers of shape {shape}")
            return torch.from_numpy(a.astype(np.float32)), (1.0, 1.0)
        im = self._picture(spec)
        if self.network == "squeezenet":
            from sw.shared import imagenet_preprocess

            return imagenet_preprocess(im), im.size
        from sw.preprocess import ssd_preprocess

        x, size = ssd_preprocess(im)
        return x, size

    # -- one input -----------------------------------------------------------------------------------
    def int8_outputs(self, x):
        """The int8 network's outputs (dequantized, host ops done) and whether every engine layer was exact."""
        if self.runner is None:
            from quant import golden

            return golden.infer(self.qgraph, x), None
        res = self.runner.run_float(x)
        return res.outputs, res.report.bit_exact

    def evaluate(self, spec: InputSpec) -> dict:
        """Float and int8 answers of one input, compared: one CSV row."""
        return self.evaluate_batch([spec])[0]

    def evaluate_batch(self, specs: list[InputSpec]) -> list[dict]:
        """:meth:`evaluate` of several inputs, the float model run once on all of them (one batch).

        The int8 side still runs one input at a time (the golden model and the
        engine take one picture); each row's ``seconds`` is its share of the batch.
        """
        import torch

        t0 = time.perf_counter()
        inputs = [self.network_input(s) for s in specs]
        with torch.no_grad():
            fouts = self.fmodel(torch.cat([x for x, _ in inputs]).contiguous(memory_format=torch.channels_last))
        rows = []
        for i, (spec, (x, size)) in enumerate(zip(specs, inputs, strict=True)):
            fout = fouts[i:i + 1] if torch.is_tensor(fouts) else [f[i:i + 1] for f in fouts]
            iout, exact = self.int8_outputs(x)
            row = {"input": spec.name, "file": spec.path, "crop": " ".join(map(str, spec.crop or ())),
                   "flip": int(spec.flip)}
            row.update(self._compare_classes(fout, iout) if self.kind == "classifier"
                       else self._compare_detections(fout, iout, size))
            row["bit_exact"] = "" if exact is None else int(bool(exact))
            rows.append(row)
        share = round((time.perf_counter() - t0) / len(specs), 4)
        for row in rows:
            row["seconds"] = share
        return rows

    @staticmethod
    def _compare_classes(fout, iout) -> dict:
        f = fout.reshape(-1).double().numpy()
        q = iout[0].reshape(-1).double().numpy()
        ftop = np.argsort(-f, kind="stable")[:5]
        qtop = np.argsort(-q, kind="stable")[:5]
        d = np.abs(q - f)
        return {"float_top1": int(ftop[0]), "int8_top1": int(qtop[0]), "top1_agree": int(ftop[0] == qtop[0]),
                "top5_agree": int(ftop[0] in qtop), "top5_overlap": len(set(ftop) & set(qtop)) / 5,
                "mean_abs_dlogit": float(d.mean()), "max_abs_dlogit": float(d.max())}

    def _compare_detections(self, fout, iout, size) -> dict:
        from sw.detect import ssd_postprocess
        from sw.models.rfsong import flatten_heads

        fdet = ssd_postprocess(fout[0], fout[1], size)
        loc, conf = flatten_heads([o.numpy() for o in iout])
        qdet = ssd_postprocess(loc, conf, size)
        pairs = match_detections(fdet, qdet)
        return {"float_dets": len(fdet), "int8_dets": len(qdet), "matched": len(pairs),
                "mean_iou": float(np.mean([p[2] for p in pairs])) if pairs else float("nan"),
                "mean_dscore": float(np.mean([abs(fdet[i].score - qdet[j].score) for i, j, _ in pairs]))
                if pairs else float("nan")}


_WORKER: Evaluator | None = None


def _init_worker():
    import torch

    torch.set_num_threads(1)


def _evaluate_batch(specs: list[InputSpec]) -> list[dict]:
    return _WORKER.evaluate_batch(specs)


def evaluate(evaluator: Evaluator, specs: list[InputSpec], *, jobs: int = 1, progress: bool = True):
    """Yield one row per input, in order; ``jobs`` > 1 forks that many workers (golden model only).

    On the golden backend the float model runs on :data:`FLOAT_BATCH` inputs at a time.
    """
    global _WORKER
    from tqdm import tqdm

    bar = tqdm(total=len(specs), desc=f"eval {evaluator.network}", unit="input", disable=None if progress else True,
               leave=False, smoothing=0.05)
    step = FLOAT_BATCH if evaluator.runner is None else 1
    batches = [specs[i:i + step] for i in range(0, len(specs), step)]
    try:
        if jobs <= 1 or len(batches) < 2:
            for b in batches:
                yield from evaluator.evaluate_batch(b)
                bar.update(len(b))
            return
        import multiprocessing

        if evaluator.runner is not None:
            raise ValueError("only the golden backend runs in several processes")
        _WORKER = evaluator      # inherited by the forked workers
        ctx = multiprocessing.get_context("fork")
        chunk = max(1, min(4, len(batches) // (4 * jobs)))
        with ctx.Pool(jobs, initializer=_init_worker) as pool:
            for rows in pool.imap(_evaluate_batch, batches, chunksize=chunk):
                yield from rows
                bar.update(len(rows))
    finally:
        _WORKER = None
        bar.close()


def _mean(rows, key) -> float:
    vals = [r[key] for r in rows if isinstance(r[key], (int, float)) and not math.isnan(r[key])]
    return float(np.mean(vals)) if vals else float("nan")


def summarize(kind: str, rows: list[dict]) -> dict:
    """The agreement figures over all rows."""
    out = {"inputs": len(rows)}
    if kind == "classifier":
        for k in ("top1_agree", "top5_agree", "top5_overlap", "mean_abs_dlogit"):
            out[k] = _mean(rows, k)
        out["max_abs_dlogit"] = max((r["max_abs_dlogit"] for r in rows), default=float("nan"))
    else:
        f = sum(r["float_dets"] for r in rows)
        q = sum(r["int8_dets"] for r in rows)
        m = sum(r["matched"] for r in rows)
        out.update(float_dets=f, int8_dets=q, matched=m, recall=m / f if f else float("nan"),
                   precision=m / q if q else float("nan"),
                   mean_iou=float(np.average([r["mean_iou"] for r in rows if r["matched"]],
                                             weights=[r["matched"] for r in rows if r["matched"]])) if m else
                   float("nan"))
    exact = [r["bit_exact"] for r in rows if r["bit_exact"] != ""]
    out["bit_exact"] = None if not exact else all(exact)
    return out


def format_summary(network: str, backend: str, kind: str, summary: dict, rows: list[dict], wall_s: float,
                   *, per_input: bool) -> str:
    """The agreement table (per input when ``per_input``), then the totals."""
    lines = []
    if kind == "classifier":
        from sw.shared import imagenet_labels

        labels = imagenet_labels()
        if per_input:
            lines.append(f"{'input':28s} {'float top-1':>26s} {'int8 top-1':>26s} {'top-1':>5s} {'top-5':>5s} "
                         f"{'mean|dlogit|':>12s}")
            for r in rows:
                lines.append(f"{r['input'][:28]:28s} {labels[r['float_top1']][:20]:>20s} {r['float_top1']:5d} "
                             f"{labels[r['int8_top1']][:20]:>20s} {r['int8_top1']:5d} "
                             f"{'yes' if r['top1_agree'] else 'NO':>5s} {'yes' if r['top5_agree'] else 'NO':>5s} "
                             f"{r['mean_abs_dlogit']:12.4f}")
        lines.append(f"{network} int8 ({backend}) vs float32 over {summary['inputs']} inputs: "
                     f"top-1 agreement {summary['top1_agree']:.1%}, top-5 agreement {summary['top5_agree']:.1%} "
                     f"(float top-1 in int8 top-5), top-5 overlap {summary['top5_overlap']:.1%}, "
                     f"mean |dlogit| {summary['mean_abs_dlogit']:.4f} (largest {summary['max_abs_dlogit']:.3f})")
    else:
        if per_input:
            lines.append(f"{'input':28s} {'float':>6s} {'int8':>6s} {'matched':>8s} {'mean IoU':>9s}")
            for r in rows:
                lines.append(f"{r['input'][:28]:28s} {r['float_dets']:6d} {r['int8_dets']:6d} {r['matched']:8d} "
                             f"{r['mean_iou']:9.3f}")
        lines.append(f"{network} int8 ({backend}) vs float32 over {summary['inputs']} inputs: "
                     f"{summary['matched']} of {summary['float_dets']} float detections matched at IoU >= "
                     f"{MATCH_IOU} ({summary['recall']:.1%}), {summary['matched']} of {summary['int8_dets']} int8 "
                     f"detections ({summary['precision']:.1%}), mean IoU {summary['mean_iou']:.3f}")
    if summary["bit_exact"] is not None:
        lines.append(f"every engine layer bit-exact with the golden model: {'yes' if summary['bit_exact'] else 'NO'}")
    n = summary["inputs"]
    lines.append(f"{n} inputs in {wall_s:.1f} s ({n / wall_s if wall_s else 0:.1f} inputs/s), float and int8 each")
    return "\n".join(lines)


def write_csv(path, rows: list[dict]) -> Path:
    """One row per input, the columns of :meth:`Evaluator.evaluate`."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["input"])
        w.writeheader()
        w.writerows(rows)
    return path


def default_jobs() -> int:
    """Worker processes for the golden backend: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
