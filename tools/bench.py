"""`make bench`: cycles, MAC utilization and simulator speed, for docs/BENCHMARKS.md.

1. SqueezeNet 1.1's eight Fire modules, each alone at its real size (as `make sim`).
2. Whole SqueezeNet 1.1 on coco_cat.jpg: per-layer table (each layer run alone), every layer checked against
   the golden model; then the whole program in one run (one START, every command: band loads overlap
   the previous command, across layers too), its cycles and utilization, every layer's output compared.
3. Whole RFSong-779 on people_1.jpg (same), unless --skip-rfsong.
4. Golden-model speed (tools.bench_golden): SqueezeNet 1.1 per inference, golden model and the
   per-layer-checked golden backend beside PyTorch float32 and int8 (QNNPACK), one thread.

Per-layer reports go to results/<network>.{csv,json,png}. Sections 1-3 run in
Verilator on the configured array; frames per second are at --clock MHz.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import numpy as np
import torch


def whole_program(runner, x, cfg, clock_mhz: float) -> bool:
    """The program in one run (one START, all its commands). The same run on the ISA interpreter
    (``sw.isa_exec``) must leave every layer's output in memory word for word the same (a later layer may
    reuse a dead tensor's memory, so it is what both left there), and the network's outputs must equal the
    golden model's. Prints cycles, utilization and frames per second; returns whether all were exact."""
    from quant import golden
    from sw.backends.golden import GoldenBackend
    from sw.driver import Driver
    from sw.runtime import Session

    g, p = runner.qgraph, runner.program
    x_q = golden.quantize_input(x, g.qparams(g.inputs[0]))
    names = list(dict.fromkeys(st.output for st in p.steps))
    inf = runner.session.run_int8(x_q, read=names)
    gold = Session(p, Driver(GoldenBackend(cfg, mem_words=p.mem_words), cfg)).run_int8(x_q, read=names)
    bad = [n for n in names if not np.array_equal(inf.tensors[n], gold.tensors[n])]
    reference = golden.run(g, x_q)
    bad += [f"{n} (output)" for n in p.outputs if not np.array_equal(inf.tensors[n], reference[n])]
    macs = sum(st.macs for st in p.steps)
    cycles = inf.run.cycles
    print(f"whole program in one run: {len(p.steps)} commands, {cycles:,} cycles, "
          f"{macs / (cycles * cfg.macs_per_cycle):.1%} MAC utilization, {clock_mhz * 1e6 / cycles:.1f} frames/s "
          f"at {clock_mhz:g} MHz; memory as the ISA interpreter left it for {len(names)} layer outputs, "
          f"outputs as the golden model: " + ("bit-exact" if not bad else f"DIFFER: {', '.join(bad)}"), flush=True)
    return not bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--clock", type=float, default=100.0, help="MHz, for frames per second")
    ap.add_argument("--skip-rfsong", action="store_true")
    ap.add_argument("--out", default="results")
    ap.add_argument("--golden-threads", type=int, default=1, help="threads for section 4 (default 1)")
    ap.add_argument("--skip-golden", action="store_true", help="leave out section 4")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    from hw.isa import EngineConfig
    from sw.networks import Runner
    from sw.preprocess import ssd_preprocess
    from sw.shared import imagenet_preprocess, require_shared
    from tools import run_fire

    cfg = EngineConfig(rows=args.rows, cols=args.cols)
    print(f"kindling benchmarks, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")
    print(f"configuration: {cfg}")
    print()
    print("== 1. SqueezeNet 1.1 Fire modules, each alone (make sim) ==", flush=True)
    rc = run_fire.main(["--rows", str(args.rows), "--cols", str(args.cols)])
    ok = rc == 0
    runs = [("squeezenet", imagenet_preprocess(require_shared("images/coco_cat.jpg")), "coco_cat.jpg")]
    if not args.skip_rfsong:
        runs.append(("rfsong", ssd_preprocess(require_shared("images/people_1.jpg"))[0], "people_1.jpg"))
    for i, (net, x, image) in enumerate(runs, start=2):
        print()
        print(f"== {i}. whole {net} on {image}, every layer checked against the golden model ==", flush=True)
        t0 = time.monotonic()
        with Runner(net, "verilator", cfg, check=True, clock_mhz=args.clock) as r:
            res = r.run_float(x)
            print(res.report.table())
            whole_ok = whole_program(r, x, cfg, args.clock)
            sim_report = r.transport.report()
        print(f"simulator: {sim_report}; total wall time with setup {time.monotonic() - t0:.1f} s")
        for p in res.report.save(f"{args.out}/{net}"):
            print(f"wrote {p}")
        ok &= res.report.bit_exact is True and whole_ok
    if not args.skip_golden:
        from tools import bench_golden

        print()
        print(f"== {len(runs) + 2}. golden-model speed, SqueezeNet 1.1 (tools.bench_golden) ==", flush=True)
        ok &= bench_golden.main(["--threads", str(args.golden_threads)]) == 0
        torch.set_num_threads(2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
