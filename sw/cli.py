"""``kindling``: classify, detect and report on the engine, on any backend.

Examples::

    kindling classify ../shared/images/coco_cat.jpg --backend verilator
    kindling detect ../shared/images/people_1.jpg --backend verilator --out-dir out
    kindling report squeezenet --backend verilator --out results/squeezenet
    kindling frcnn ../shared/images/coco_dog.jpg --backend verilator
    kindling compile rfsong
    kindling eval squeezenet ../shared/images --augment 1000 --csv eval.csv
    kindling sweep --rows 4 8 --cols 8 16 --networks tiny squeezenet --out results/sweep
    kindling run ../shared/models/person_detect/person_detect.tflite ../shared/models/person_detect/person.bmp
    kindling run mypackage.models:build_net picture.jpg --calibrate pictures/ --backend verilator
    kindling compile ../shared/models/person_detect/person_detect.tflite

Exit status: 0 success; 1 an engine layer differs from the golden model, or
the link or the engine failed; 2 bad input (a file that is not a picture, an
option out of range, a network the engine cannot run). Every expected failure
is one line on stderr naming the input and the reason (``--debug``: the
traceback instead); docs/RELIABILITY.md lists them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hw.isa import EngineConfig

#: Exit status of a link or engine failure (and of a run that is not bit-exact).
EXIT_LINK = 1
#: Exit status of bad input: files, option values, networks the engine cannot run.
EXIT_BAD_INPUT = 2
#: Exit status after Ctrl-C.
EXIT_INTERRUPTED = 130
#: Side of SqueezeNet's input; a ``.npy`` input is ``(1, 3, 224, 224)`` float.
NPY_INPUT_SHAPE = (1, 3, 224, 224)


class InputError(ValueError):
    """Bad input found by the command line's own checks (an option value, a file that cannot be used)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (argparse prints the usage first)."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _bounded(kind, low, high=None):
    """An argparse type: ``kind`` values in ``[low, high]`` (``low < value`` for floats)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if kind is float and not low < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text} must be a positive number")
        if kind is int and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} must be between {low} and {high}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _config(args) -> EngineConfig:
    """The engine configuration of the options, or :class:`InputError` naming the option at fault."""
    fields = {"rows": args.rows, "cols": args.cols, "ibuf_depth": args.ibuf_depth, "acc_depth": args.acc_depth}
    try:
        return EngineConfig(**fields)
    except ValueError as e:
        field = next((f for f in fields if str(e).startswith(f)), None)
        option = f"--{field.replace('_', '-')} {fields[field]}: " if field else ""
        raise InputError(f"{option}{e}") from None


def _check_options(args) -> None:
    """The checks every command makes before reading a model: engine options, backend and port."""
    if args.func is cmd_sweep:      # lists of engine options, checked point by point (sw.sweep.grid)
        return
    args.config = _config(args)
    if args.backend != "serial":
        return
    if not args.port:
        raise InputError("--backend serial needs --port (a device such as /dev/ttyUSB1, usb, or sim:<board>)")
    if args.port.startswith("sim:"):
        from hw.boards import BOARDS

        if args.port[4:] not in BOARDS:
            raise InputError(f"--port {args.port}: no simulated board {args.port[4:]!r} "
                             f"(choose from {', '.join('sim:' + b for b in BOARDS)})")


def _serial_options(args) -> dict:
    return {"timeout": args.timeout} if getattr(args, "timeout", None) else {}


def _output_folder(path: Path, option: str) -> Path:
    """Create the folder ``path`` (an output option) now, before any long run; errors name the option."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{option} {path}: cannot create the folder ({e.strerror or e})") from None
    return path


def _load_npy(path: str):
    """A ``.npy`` network input as a float32 array, checked (shape, finite values); errors name the file."""
    import numpy as np

    from sw.preprocess import check_input_file

    check_input_file(path, "a .npy input")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a NumPy .npy array ({e})") from None
    if not isinstance(a, np.ndarray) or a.shape != NPY_INPUT_SHAPE or a.dtype.kind not in "fiu":
        raise InputError(f"{path}: a {getattr(a, 'dtype', '?')} array of shape {getattr(a, 'shape', '?')}; "
                         f"the network takes a number array of shape {NPY_INPUT_SHAPE}")
    if not np.isfinite(a).all():
        raise InputError(f"{path}: the array holds NaN or infinite values")
    return a.astype(np.float32)


def _open_pictures(paths) -> list:
    """Every picture opened, decoded and made 8-bit RGB now, before any model is read: ``[(name, image)]``."""
    from sw.preprocess import as_rgb_image

    return [(p, as_rgb_image(p)) for p in paths]


def _runner(args, network: str, kind: str = "default"):
    from sw.networks import Runner

    return Runner(network, args.backend, args.config, check=not args.no_check, clock_mhz=args.clock,
                  port=args.port, kind=kind, progress=not args.quiet, serial_options=_serial_options(args))


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


def _run_each(args, network: str, inputs, run_all, show, *, kind: str = "default", fps_digits: int = 1) -> int:
    """Run ``network`` on every ``(name, input)``: ``run_all(runner, [input...])`` yields ``(Result, answer)``
    in order (pipelined on a DRAM board), ``show(name, input, Result, answer)`` prints it; then the run."""
    ok = True
    with _runner(args, network, kind) as r:
        for (name, item), (res, answer) in zip(inputs, run_all(r, [item for _, item in inputs]), strict=True):
            show(name, item, res, answer)
            if res.run.cycles:
                print(f"  {res.report.cycles:,} cycles, MAC utilization {res.report.utilization:.1%}, "
                      f"{res.report.fps:.{fps_digits}f} frames/s at {args.clock:g} MHz, "
                      f"wall {res.report.wall_s:.1f} s")
            if "fps" in res.extra:    # a board with the program in its DRAM
                fr = res.extra["frame"]
                print(f"  link: {fr.bytes_out:,} B out, {fr.bytes_in:,} B in this frame"
                      f"{' (after uploading the program)' if fr.uploaded else ''}; {res.extra['fps'].summary()}")
            ok &= _print_layers_exact(res)
    return 0 if ok else 1


def cmd_classify(args) -> int:
    npy = [i for i in args.images if Path(i).suffix == ".npy"]
    if npy and len(npy) != len(args.images):
        raise InputError("a mix of .npy inputs and pictures; they use different calibrations")
    arrays = [(i, _load_npy(i)) for i in npy]
    pictures = [] if npy else _open_pictures(args.images)

    import torch

    from sw.models.squeezenet import load_squeezenet11
    from sw.networks import classify_many
    from sw.shared import imagenet_preprocess

    inputs = [(i, torch.from_numpy(a)) for i, a in arrays] or [(name, imagenet_preprocess(im)) for name, im in pictures]
    fmodel = load_squeezenet11()

    def show(name, x, res, top):
        with torch.no_grad():
            flog = fmodel(x).reshape(-1)
        ilog = res.outputs[0].reshape(-1).double()
        cos = float(torch.nn.functional.cosine_similarity(ilog, flog.double(), dim=0))
        print(f"{name}:")
        for i, label, p in top:
            print(f"  {i:4d} {label:30s} {p:6.3f}")
        print(f"  float top-1 {int(flog.argmax())}, int8 top-1 {top[0][0]}, cosine(int8, float logits) {cos:.5f}")

    return _run_each(args, "squeezenet", inputs, lambda r, xs: classify_many(r, xs, args.top), show,
                     kind="noise255" if npy else "default")


def cmd_detect(args) -> int:
    inputs = _open_pictures(args.images)
    out_dir = _output_folder(Path(args.out_dir), "--out-dir")

    from sw.detect import draw_detections
    from sw.networks import detect_many
    from sw.preprocess import ssd_preprocess

    def show(name, image, res, dets):
        png = draw_detections(image, dets, out_dir / (Path(name).stem + "_det.png"))
        print(f"{name}: {len(dets)} detection(s) -> {png}")
        for d in dets:
            print(f"  person ({d.x1:7.1f}, {d.y1:7.1f}, {d.x2:7.1f}, {d.y2:7.1f}) score {d.score:.3f}")

    return _run_each(args, "rfsong", inputs, lambda r, images: detect_many(r, map(ssd_preprocess, images)), show,
                     fps_digits=2)


def cmd_report(args) -> int:
    from sw.preprocess import as_rgb_image, ssd_preprocess
    from sw.shared import require_shared

    if args.image:
        image = as_rgb_image(args.image)
    else:   # the project's own sample picture, from the shared data
        image = require_shared("images/coco_cat.jpg" if args.network == "squeezenet" else "images/people_1.jpg")
    if args.out:
        _output_folder(Path(args.out).parent, "--out")

    import torch

    from sw.shared import imagenet_preprocess
    x = imagenet_preprocess(image) if args.network == "squeezenet" else ssd_preprocess(image)[0]
    torch.set_num_threads(2)
    with _runner(args, args.network) as r:
        res = r.run_float(x)
    print(res.report.table())
    if args.out:
        for p in res.report.save(args.out):
            print(f"wrote {p}")
    return 0 if res.report.bit_exact in (True, None) else 1


def cmd_compile(args) -> int:
    from sw.compiler import compile_graph

    if _is_user_model(args.network):
        return cmd_compile_model(args)
    if args.network not in ("squeezenet", "rfsong"):
        raise InputError(f"{args.network}: not a network (squeezenet, rfsong), a .tflite file or a "
                         f"package.module:function PyTorch factory")
    from sw.networks import quantized

    prog = compile_graph(quantized(args.network), args.config)
    print(prog.summary())
    return 0


def _is_user_model(text: str) -> bool:
    return text.endswith(".tflite") or ":" in text


def _user_model(args, pictures=()):
    """The model of ``kindling run`` / ``kindling compile`` (a .tflite file or a PyTorch factory); ``compile``
    without ``--calibrate`` quantizes on seeded noise (the schedule does not depend on the scales)."""
    from sw.usermodel import load_model

    shape = tuple(args.input_shape) if getattr(args, "input_shape", None) else (3, 224, 224)
    return load_model(args.network, calibrate=getattr(args, "calibrate", None),
                      preprocess=getattr(args, "preprocess", None), input_shape=shape,
                      calibration_inputs=list(pictures), noise_calibration=args.func is cmd_compile)


def cmd_compile_model(args) -> int:
    """``kindling compile MODEL``: where each operator runs (and why not on the engine), then the schedule;
    for a model the pipeline refuses, every refusal, one a line."""
    from quant.graph import UnsupportedModelError
    from sw.usermodel import compile_model

    try:
        model = _user_model(args, getattr(args, "inputs", ()) or ())
    except UnsupportedModelError as e:
        if len(e.refusals) == 1:
            raise
        for line in e.refusals:
            print(f"kindling: refused: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(model.describe())
    print(compile_model(model, args.config).summary())
    return 0


def _print_output(name: str, values, real, top: int) -> None:
    import numpy as np

    flat, rflat = np.asarray(values).reshape(-1), np.asarray(real, dtype=np.float64).reshape(-1)
    if flat.size <= max(top, 10):
        ints = "" if flat.dtype.kind == "f" else f" {flat.tolist()}"
        print(f"  {name} {list(np.shape(values))}:{ints} = "
              f"{np.array2string(rflat, precision=4, separator=', ', max_line_width=10_000)}")
        return
    order = np.argsort(-rflat, kind="stable")[:top]
    print(f"  {name} {list(np.shape(values))}: top {top}: "
          + ", ".join(f"[{int(i)}] {rflat[i]:.4f}" for i in order))


def cmd_run(args) -> int:
    """``kindling run MODEL INPUT...``: the user's model on pictures (or .npy inputs), outputs printed."""
    from sw.preprocess import check_input_file
    from sw.usermodel import load_input, run_model

    if not _is_user_model(args.network):
        raise InputError(f"{args.network}: a model is a .tflite file or a package.module:function PyTorch factory")
    from quant.graph import UnsupportedModelError

    for path in args.inputs:
        check_input_file(path, "a picture or a .npy input")
    try:
        model = _user_model(args, args.inputs)
    except UnsupportedModelError as e:
        if len(e.refusals) == 1:
            raise
        raise InputError(f"{e} (and {len(e.refusals) - 1} more: kindling compile {args.network} lists them)") \
            from None
    xs = [load_input(p, model.input_shape, model.preprocess) for p in args.inputs]
    runs = run_model(model, xs, backend=args.backend, config=args.config, check=not args.no_check, port=args.port,
                     progress=not args.quiet, clock_mhz=args.clock)
    ok = True
    for path, r in zip(args.inputs, runs, strict=True):
        exact = "" if r.exact is None else (" (every engine layer equal to the golden model)" if all(r.exact.values())
                                            else " (engine layers DIFFER from the golden model)")
        cycles = f", {r.report.cycles:,} cycles" if r.report.cycles else ""
        print(f"{path}: {model.name} on {args.backend}{cycles}{exact}")
        for name, v in r.outputs.items():
            _print_output(name, v, r.real[name], args.top)
        ok &= r.exact is None or all(r.exact.values())
    return 0 if ok else EXIT_LINK


def cmd_frcnn(args) -> int:
    _open_pictures(args.images)     # every picture checked before the long quantization

    from sw.frcnn import run_faster_rcnn
    ok = True
    for img in args.images:
        out = run_faster_rcnn(img, args.backend, args.config, port=args.port, check=not args.no_check,
                              progress=not args.quiet, clock_mhz=args.clock)
        print(out.summary())
        ok &= out.bit_exact is not False
    return 0 if ok else 1


def cmd_eval(args) -> int:
    import time

    from sw import eval as ev

    specs = ev.collect_inputs(args.inputs)
    npy = specs[0].path.lower().endswith(".npy")
    if args.augment:
        specs = ev.augment_inputs(specs, args.augment, seed=args.seed)
    if args.csv:
        _output_folder(Path(args.csv).resolve().parent, "--csv")
    if args.jobs is not None and args.jobs > 1 and args.backend != "golden":
        raise InputError(f"--jobs {args.jobs}: only the golden backend runs in several processes")
    jobs = args.jobs or (ev.default_jobs() if args.backend == "golden" else 1)

    import torch

    torch.set_num_threads(1)
    t0 = time.monotonic()
    runner = None
    if args.backend != "golden":
        runner = _runner(args, args.network, "noise255" if npy and args.network == "squeezenet" else "default")
        runner.progress = False
    try:
        evaluator = ev.Evaluator(args.network, npy=npy, runner=runner)
        rows = list(ev.evaluate(evaluator, specs, jobs=jobs, progress=not args.quiet))
    finally:
        if runner is not None:
            runner.close()
    wall = time.monotonic() - t0
    summary = ev.summarize(evaluator.kind, rows)
    print(ev.format_summary(args.network, args.backend, evaluator.kind, summary, rows, wall,
                            per_input=len(rows) <= args.table_max))
    print(f"({jobs} process{'es' if jobs > 1 else ''}, load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores)")
    if args.csv:
        print(f"wrote {ev.write_csv(args.csv, rows)}")
    return 0 if summary["bit_exact"] in (True, None) else 1


def _add_eval(sub) -> None:
    from sw.eval import EVAL_NETWORKS

    p = sub.add_parser("eval", help="int8-vs-float agreement of a network over a folder of pictures or .npy inputs")
    p.add_argument("network", choices=list(EVAL_NETWORKS))
    p.add_argument("inputs", nargs="+", help="folders (pictures and .npy files one level deep) or files")
    p.add_argument("--augment", type=_bounded(int, 1, 10**7), default=0, metavar="N",
                   help="evaluate N random crops/flips of the pictures instead of the pictures themselves")
    p.add_argument("--seed", type=int, default=0, help="seed of --augment (default %(default)s)")
    p.add_argument("--jobs", type=_bounded(int, 1, 256), default=None,
                   help="worker processes (golden backend; default: the cores available)")
    p.add_argument("--csv", help="write one row per input to this CSV file")
    p.add_argument("--table-max", type=int, default=50, help="print the per-input table up to this many inputs")
    _add_common(p)
    p.set_defaults(func=cmd_eval)


def cmd_sweep(args) -> int:
    import json

    from sw import sweep

    points, skipped = sweep.grid(args.rows, args.cols, args.ibuf_depth, args.acc_depth, args.networks)
    clocks = sweep.parse_clocks(args.clocks)
    for line in skipped:
        print(f"skipped (not a valid configuration): {line}")
    if not points:
        raise InputError("no valid engine configuration in the grid")
    out = Path(args.out)
    _output_folder(out.resolve().parent, "--out")
    where = f"Ray cluster at {args.address}" if args.address else f"local Ray ({args.jobs or os.cpu_count()} CPUs)"
    print(f"sweep: {len(points)} points ({len(points) // len(args.networks)} configurations x "
          f"{len(args.networks)} networks) on {where}")

    partial = out.with_suffix(".jsonl")     # each point as it ends: a long sweep's progress survives it
    partial.write_text("")

    def on_row(r):
        with partial.open("a") as f:
            f.write(json.dumps(r) + "\n")
        if args.quiet:
            return
        util = f"{r['utilization']:.1%}" if r.get("utilization", "") != "" else "-"
        print(f"  {r['network']:11s} {r['rows']}x{r['cols']} ibuf {r['ibuf_depth']} acc {r['acc_depth']}: "
              f"{r['status'][:120]}, {r.get('cycles') or '-'} cycles, util {util}, {r.get('point_s', '-')} s",
              flush=True)

    rows = sweep.run_sweep(points, clocks, address=args.address, jobs=args.jobs, yosys=args.yosys,
                           ship_code=args.ship_code, deadline_s=args.deadline, progress=not args.quiet,
                           build_root=args.build_root, on_row=on_row)
    for p in [*sweep.write_table(rows, out), sweep.write_plot(rows, out.with_suffix(".png"))]:
        print(f"wrote {p}")
    print(out.with_suffix(".md").read_text(), end="")
    bad = [r for r in rows if r["status"] != "ok" and not r["status"].startswith(sweep.INFEASIBLE)]
    for r in bad:
        print(f"point failed: {r['network']} {r['rows']}x{r['cols']} ibuf {r['ibuf_depth']} acc "
              f"{r['acc_depth']}: {r['status']}", file=sys.stderr)
    if any(r["status"] == sweep.INTERRUPTED for r in rows):
        print("kindling: interrupted (the table holds the points done)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 1 if bad else 0


def _add_sweep(sub) -> None:
    from sw.sweep import SWEEP_NETWORKS

    p = sub.add_parser("sweep", help="engine configurations x networks in Verilator through Ray: table and plot")
    p.add_argument("--rows", type=int, nargs="+", default=[EngineConfig.rows], help="array rows to sweep")
    p.add_argument("--cols", type=int, nargs="+", default=[EngineConfig.cols], help="array columns to sweep")
    p.add_argument("--ibuf-depth", type=int, nargs="+", default=[EngineConfig.ibuf_depth])
    p.add_argument("--acc-depth", type=int, nargs="+", default=[EngineConfig.acc_depth])
    p.add_argument("--networks", nargs="+", choices=list(SWEEP_NETWORKS), default=["squeezenet", "rfsong"])
    p.add_argument("--clocks", nargs="+", default=["100", "ulx3s-85f", "ecpix5-85f"],
                   help="clocks for frames/s: MHz or board names (default %(default)s)")
    p.add_argument("--out", default="results/sweep", help="path stem of the .csv/.md/.png (default %(default)s)")
    p.add_argument("--address", help="Ray cluster address (ray://host:10001 or host:6379); default: a local Ray")
    p.add_argument("--jobs", type=_bounded(int, 1, 4096), default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--ship-code", action="store_true",
                   help="send this checkout to the cluster's workers (Ray runtime_env working_dir)")
    p.add_argument("--yosys", action="store_true", help="add an ECP5 resource estimate of each engine (Yosys)")
    p.add_argument("--build-root", help="Verilator build cache (default sim_build/ in the checkout)")
    p.add_argument("--deadline", type=_bounded(float, 0.0), default=6 * 3600.0,
                   help="seconds for the whole sweep; unfinished points are reported failed (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-point lines")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback instead of one line")
    p.set_defaults(func=cmd_sweep, network="sweep", backend="verilator", port=None)


def _add_common(p, *, link_timeout: bool = True):
    from sw.backends import BACKENDS

    p.add_argument("--backend", choices=list(BACKENDS), default="golden",
                   help="where the engine runs: " + "; ".join(f"{k}: {e.summary}" for k, e in BACKENDS.items())
                   + " (default: golden)")
    p.add_argument("--port", help="serial port of the board (with --backend serial), usb (the board's USB link, "
                   "or usb:VVVV:PPPP), or sim:<board>")
    if link_timeout:
        p.add_argument("--timeout", type=_bounded(float, 0.0), default=None,
                       help="seconds the board has to answer each request (--backend serial; default: the "
                            "driver's)")
    p.add_argument("--rows", type=int, default=EngineConfig.rows, help="array rows (default %(default)s)")
    p.add_argument("--cols", type=int, default=EngineConfig.cols, help="array columns (default %(default)s)")
    p.add_argument("--ibuf-depth", type=int, default=EngineConfig.ibuf_depth)
    p.add_argument("--acc-depth", type=int, default=EngineConfig.acc_depth)
    p.add_argument("--clock", type=_bounded(float, 0.0), default=100.0,
                   help="clock in MHz for frames/s (default %(default)s)")
    p.add_argument("--no-check", action="store_true", help="do not compare every layer with the golden model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback instead of one line")


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="kindling", description=__doc__.split("\n\n")[0],
                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("classify", help="SqueezeNet 1.1 top-k on pictures (or .npy inputs)")
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=_bounded(int, 1, 1000), default=5, help="classes to print (1..1000)")
    _add_common(p)
    p.set_defaults(func=cmd_classify, network="squeezenet")
    p = sub.add_parser("detect", help="RFSong-779 person detection; writes PNGs with the boxes")
    p.add_argument("images", nargs="+")
    p.add_argument("--out-dir", default="out")
    _add_common(p)
    p.set_defaults(func=cmd_detect, network="rfsong")
    p = sub.add_parser("frcnn", help="SqueezeNet 1.1 + Faster R-CNN end to end")
    p.add_argument("images", nargs="+")
    _add_common(p, link_timeout=False)
    p.set_defaults(func=cmd_frcnn, network="faster_rcnn")
    p = sub.add_parser("report", help="per-layer report of a whole network (table, CSV, JSON, PNG)")
    p.add_argument("network", choices=["squeezenet", "rfsong"])
    p.add_argument("--image", help="picture (default: coco_cat for squeezenet, people_1 for rfsong)")
    p.add_argument("--out", help="path stem for .csv/.json/.png (e.g. results/squeezenet)")
    _add_common(p)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("compile", help="print a network's schedule (squeezenet, rfsong, or a model as for run)")
    p.add_argument("network", metavar="MODEL", help="squeezenet, rfsong, a .tflite file or package.module:function")
    _add_model_options(p)
    _add_common(p, link_timeout=False)
    p.set_defaults(func=cmd_compile)
    _add_eval(sub)
    _add_sweep(sub)
    _add_run(sub)
    return ap


def _add_model_options(p):
    from sw.usermodel import PREPROCESSING

    p.add_argument("--calibrate", metavar="DIR", help="PyTorch model: folder of calibration pictures (default: "
                                                     "the inputs)")
    p.add_argument("--preprocess", choices=list(PREPROCESSING), default=None,
                   help="picture -> input: " + "; ".join(f"{k}: {v}" for k, v in PREPROCESSING.items())
                        + " (default: minus128 for .tflite, imagenet for PyTorch)")
    p.add_argument("--input-shape", type=lambda t: tuple(int(v) for v in t.split(",")), metavar="C,H,W",
                   help="PyTorch model: input shape (default 3,224,224)")


def _add_run(sub):
    p = sub.add_parser("run", help="run your own model (.tflite or a PyTorch factory) on pictures")
    p.add_argument("network", metavar="MODEL", help="a .tflite file or package.module:function (a PyTorch factory)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="pictures or .npy inputs")
    p.add_argument("--top", type=_bounded(int, 1, 1000), default=5, help="values to print of a long output")
    _add_model_options(p)
    _add_common(p)
    p.set_defaults(func=cmd_run)


def _link_errors() -> tuple[type, ...]:
    """Exceptions of the link and the engine: the transport's, and pyserial's (a port that cannot be opened)."""
    from sw.transport import TransportError

    try:
        from serial import SerialException
    except ImportError:   # pyserial is only needed for boards
        return (TransportError,)
    return TransportError, SerialException


#: Exceptions that mean bad input (files, options, models the engine refuses), besides :class:`ValueError`.
_INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                 PermissionError)


def _error_line(e: BaseException, args) -> tuple[int, str] | None:
    """``(exit status, message)`` for an expected failure, None for an unexpected one."""
    plain = e.strerror if isinstance(e, OSError) and e.strerror and e.filename is None else None
    text = " ".join(str(plain or e).split()) or type(e).__name__   # pyserial's: no "[Errno 2]" in front
    if isinstance(e, _link_errors()):
        where = args.port if args.backend == "serial" and args.port else f"{args.backend} backend"
        return EXIT_LINK, text if where in text else f"{where}: {text}"
    compiler = sys.modules.get("sw.compiler")    # not imported: no CompileError (and no wait for torch)
    if compiler is not None and isinstance(e, compiler.CompileError):
        return EXIT_BAD_INPUT, f"{args.network} cannot run on this engine: {text}"
    if isinstance(e, _INPUT_ERRORS):
        return EXIT_BAD_INPUT, text
    return None


def main(argv=None) -> int:
    """Run the command line; return the exit status (failures are one line on stderr, see the module doc)."""
    args = _parser().parse_args(argv)
    try:
        _check_options(args)
        return args.func(args)
    except KeyboardInterrupt:
        print("kindling: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        expected = _error_line(e, args)
        if expected is None or args.debug:
            raise
        print(f"kindling: error: {expected[1]}", file=sys.stderr)
        return expected[0]


if __name__ == "__main__":
    sys.exit(main())
