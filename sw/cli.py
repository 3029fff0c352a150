"""``kindling``: classify, detect and report on the engine, on any backend.

Examples::

    kindling classify ../shared/images/coco_cat.jpg --backend verilator
    kindling detect ../shared/images/people_1.jpg --backend verilator --out-dir out
    kindling report squeezenet --backend verilator --out results/squeezenet
    kindling frcnn ../shared/images/coco_dog.jpg --backend verilator
    kindling compile rfsong
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hw.isa import EngineConfig


def _config(args) -> EngineConfig:
    return EngineConfig(rows=args.rows, cols=args.cols, ibuf_depth=args.ibuf_depth, acc_depth=args.acc_depth)


def _add_common(p):
    p.add_argument("--backend", choices=["golden", "verilator", "serial"], default="golden",
                   help="where the engine runs (default: golden model)")
    p.add_argument("--port", help="serial port of the board (with --backend serial)")
    p.add_argument("--rows", type=int, default=EngineConfig.rows, help="array rows (default %(default)s)")
    p.add_argument("--cols", type=int, default=EngineConfig.cols, help="array columns (default %(default)s)")
    p.add_argument("--ibuf-depth", type=int, default=EngineConfig.ibuf_depth)
    p.add_argument("--acc-depth", type=int, default=EngineConfig.acc_depth)
    p.add_argument("--clock", type=float, default=100.0, help="clock in MHz for frames/s (default %(default)s)")
    p.add_argument("--no-check", action="store_true", help="do not compare every layer with the golden model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _print_layers_exact(res) -> bool:
    exact = res.run.exact
    if exact is None:
        return True
    bad = [k for k, v in exact.items() if not v]
    print(f"  engine layers bit-exact with the golden model: {len(exact) - len(bad)}/{len(exact)}"
          + (f"; DIFFERENT: {bad}" if bad else ""))
    for k in bad:
        print(f"    {k}: first mismatches (index, engine, golden) {res.run.first_mismatch[k]}")
    return not bad


def cmd_classify(args) -> int:
    import torch

    from sw.networks import Runner, classify
    ok = True
    raw = [Path(i) for i in args.images if Path(i).suffix == ".npy"]
    kind = "noise255" if raw and len(raw) == len(args.images) else "default"
    if raw and len(raw) != len(args.images):
        print("error: mix of .npy inputs and pictures; they use different calibrations", file=sys.stderr)
        return 2
    with Runner("squeezenet", args.backend, _config(args), check=not args.no_check, clock_mhz=args.clock,
                port=args.port, kind=kind, progress=not args.quiet) as r:
        from sw.models.squeezenet import load_squeezenet11
        from sw.shared import imagenet_preprocess
        fmodel = load_squeezenet11()
        for img in args.images:
            res, top = classify(r, img, args.top)
            x = torch.from_numpy(__import__("numpy").load(img)).float() if str(img).endswith(".npy") \
                else imagenet_preprocess(img)
            with torch.no_grad():
                flog = fmodel(x).reshape(-1)
            ilog = res.outputs[0].reshape(-1).double()
            cos = float(torch.nn.functional.cosine_similarity(ilog, flog.double(), dim=0))
            print(f"{img}:")
            for i, label, p in top:
                print(f"  {i:4d} {label:30s} {p:6.3f}")
            print(f"  float top-1 {int(flog.argmax())}, int8 top-1 {top[0][0]}, cosine(int8, float logits) "
                  f"{cos:.5f}")
            if res.run.cycles:
                print(f"  {res.report.cycles:,} cycles, MAC utilization {res.report.utilization:.1%}, "
                      f"{res.report.fps:.1f} frames/s at {args.clock:g} MHz, wall {res.report.wall_s:.1f} s")
            ok &= _print_layers_exact(res)
    return 0 if ok else 1


def cmd_detect(args) -> int:
    from sw.detect import draw_detections
    from sw.networks import Runner, detect
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = True
    with Runner("rfsong", args.backend, _config(args), check=not args.no_check, clock_mhz=args.clock,
                port=args.port, progress=not args.quiet) as r:
        for img in args.images:
            res, dets = detect(r, img)
            png = draw_detections(img, dets, out_dir / (Path(img).stem + "_det.png"))
            print(f"{img}: {len(dets)} detection(s) -> {png}")
            for d in dets:
                print(f"  person ({d.x1:7.1f}, {d.y1:7.1f}, {d.x2:7.1f}, {d.y2:7.1f}) score {d.score:.3f}")
            if res.run.cycles:
                print(f"  {res.report.cycles:,} cycles, MAC utilization {res.report.utilization:.1%}, "
                      f"{res.report.fps:.2f} frames/s at {args.clock:g} MHz, wall {res.report.wall_s:.1f} s")
            ok &= _print_layers_exact(res)
    return 0 if ok else 1


def cmd_report(args) -> int:
    import torch

    from sw.networks import Runner
    from sw.preprocess import ssd_preprocess
    from sw.shared import imagenet_preprocess, require_shared
    image = args.image or ("images/coco_cat.jpg" if args.network == "squeezenet" else "images/people_1.jpg")
    path = require_shared(image) if not Path(image).exists() else Path(image)
    x = imagenet_preprocess(path) if args.network == "squeezenet" else ssd_preprocess(path)[0]
    torch.set_num_threads(2)
    with Runner(args.network, args.backend, _config(args), check=not args.no_check, clock_mhz=args.clock,
                port=args.port, progress=not args.quiet) as r:
        res = r.run_float(x)
    print(res.report.table())
    if args.out:
        for p in res.report.save(args.out):
            print(f"wrote {p}")
    return 0 if res.report.bit_exact in (True, None) else 1


def cmd_compile(args) -> int:
    from sw.compiler import compile_graph
    from sw.networks import quantized
    prog = compile_graph(quantized(args.network), _config(args))
    print(prog.summary())
    return 0


def cmd_frcnn(args) -> int:
    from sw.frcnn import run_faster_rcnn
    ok = True
    for img in args.images:
        out = run_faster_rcnn(img, args.backend, _config(args), port=args.port, check=not args.no_check,
                              progress=not args.quiet, clock_mhz=args.clock)
        print(out.summary())
        ok &= out.bit_exact is not False
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="kindling", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("classify", help="SqueezeNet 1.1 top-k on pictures (or .npy inputs)")
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=5)
    _add_common(p)
    p.set_defaults(func=cmd_classify)
    p = sub.add_parser("detect", help="RFSong-779 person detection; writes PNGs with the boxes")
    p.add_argument("images", nargs="+")
    p.add_argument("--out-dir", default="out")
    _add_common(p)
    p.set_defaults(func=cmd_detect)
    p = sub.add_parser("frcnn", help="SqueezeNet 1.1 + Faster R-CNN end to end")
    p.add_argument("images", nargs="+")
    _add_common(p)
    p.set_defaults(func=cmd_frcnn)
    p = sub.add_parser("report", help="per-layer report of a whole network (table, CSV, JSON, PNG)")
    p.add_argument("network", choices=["squeezenet", "rfsong"])
    p.add_argument("--image", help="picture (default: coco_cat for squeezenet, people_1 for rfsong)")
    p.add_argument("--out", help="path stem for .csv/.json/.png (e.g. results/squeezenet)")
    _add_common(p)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("compile", help="print a network's schedule")
    p.add_argument("network", choices=["squeezenet", "rfsong"])
    _add_common(p)
    p.set_defaults(func=cmd_compile)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"kindling: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
