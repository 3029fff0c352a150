"""Verilator simulation speed of the engine: simulated cycles per second under build-option variants.

Each variant (Verilator arguments and make variables on top of
:data:`sim.build.VERILATOR_ARGS` / :data:`sim.build.MAKE_VARS`) is built
(cached like every model) and runs whole SqueezeNet 1.1 (coco_cat.jpg, every
command in one run) ``--runs`` times, the variants interleaved run by run so
that the machine's load hits them alike. Reported per variant: simulated
cycles, wall time, the simulator process's own CPU time, and cycles per wall
second and per CPU second (the steadier figure on a shared machine); the
outputs of every run must equal the golden model's, or the variant fails.

``python -m tools.verilator_speed [--variants baseline o3native ...] [--runs 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

#: name -> (extra Verilator arguments, make variables over sim.build.MAKE_VARS, what it is)
VARIANTS = {
    "baseline": ((), {}, "the build options of sim.build"),
    "o3native": ((), {"OPT_FAST": r"-O3\ -march=native", "OPT_GLOBAL": r"-O3\ -march=native"},
                 "g++ -O3 -march=native for the model and the runtime"),
    "nosplit": (("--output-split", "0", "--output-split-cfuncs", "0"), {},
                "one C++ file for the model (the compiler sees every function at once)"),
    "nosplit-o3native": (("--output-split", "0", "--output-split-cfuncs", "0"),
                         {"OPT_FAST": r"-O3\ -march=native", "OPT_GLOBAL": r"-O3\ -march=native"},
                         "both"),
    "threads2": (("--threads", "2"), {}, "Verilator's multithreaded model, two threads"),
    "pgo": ((), {}, "g++ profile-guided: a -fprofile-generate model runs SqueezeNet once, its profile builds this one"),
    "pgo-o3native": ((), {"OPT_FAST": r"-O3\ -march=native", "OPT_GLOBAL": r"-O3\ -march=native"},
                     "both"),
}

#: Compiler flags of the two PGO builds (the profile is copied into the second build before its compile).
PGO_GEN = ("-CFLAGS", "-fprofile-generate -fprofile-update=single", "-LDFLAGS", "-fprofile-generate")
PGO_USE = ("-CFLAGS", "-fprofile-use -fprofile-correction -Wno-missing-profile")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _open(variant: str, config, mem_words: int, *, args=None, profile: list | None = None):
    import sim.build as sb
    from hw.engine import Engine
    from sim.verilator_backend import VerilatorBackend

    v_args, make, _ = VARIANTS[variant]
    saved = sb.MAKE_VARS, sb.verilator_runner
    sb.MAKE_VARS = {**saved[0], **make}       # build() merges its make variables over this module constant
    if profile:
        # The runner copies "runtime objects" into the build directory between verilation and make:
        # the .gcda profile files ride along, so each object's compile finds its profile beside it.
        def runner(public_all, runtime_objs=None, make_vars=None):
            return saved[1](public_all, [*(runtime_objs or []), *profile], make_vars)

        sb.verilator_runner = runner
    try:
        return VerilatorBackend(Engine, config, mem_words=mem_words,
                                verilator_args=v_args if args is None else args)
    finally:
        sb.MAKE_VARS, sb.verilator_runner = saved


def _pgo(variant: str, config, mem_words: int, train) -> object:
    """The PGO model: build with -fprofile-generate, ``train(backend)``, close (the profile is written at exit)."""
    be = _open(variant, config, mem_words, args=PGO_GEN)
    gen_dir = be.build.directory
    try:
        train(be)
    finally:
        be.close()
    profile = sorted(gen_dir.glob("*.gcda"))
    if not profile:
        raise RuntimeError(f"the -fprofile-generate model in {gen_dir} wrote no .gcda profile")
    return _open(variant, config, mem_words, args=PGO_USE + ("-CFLAGS", f"-DKINDLING_PGO={gen_dir.name}"),
                 profile=profile)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=["baseline", "o3native"], choices=list(VARIANTS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=16)
    args = ap.parse_args(argv)

    import torch

    from hw.isa import EngineConfig
    from quant import golden
    from sw.compiler import compile_graph
    from sw.driver import Driver
    from sw.networks import quantized
    from sw.runtime import Session
    from sw.shared import imagenet_preprocess, require_shared

    torch.set_num_threads(1)
    cfg = EngineConfig(rows=args.rows, cols=args.cols)
    g = quantized("squeezenet")
    x_q = golden.quantize_input(imagenet_preprocess(require_shared("images/coco_cat.jpg")), g.qparams(g.inputs[0]))
    ref = golden.run(g, x_q)
    prog = compile_graph(g, cfg)
    mem = max(1 << 20, 1 << (prog.mem_words - 1).bit_length())
    sessions = {}
    for v in args.variants:
        t0 = time.monotonic()
        if v.startswith("pgo"):
            def train(backend):
                Session(prog, Driver(backend, cfg, timed=True)).run_int8(x_q, profile=False)

            be = _pgo(v, cfg, mem, train)
        else:
            be = _open(v, cfg, mem)
        sessions[v] = Session(prog, Driver(be, cfg, timed=True))
        print(f"{v}: model {be.build.directory.name} ({'cached' if be.build.cached else 'built'}, build "
              f"{be.build.build_seconds:.0f} s, ready in {time.monotonic() - t0:.0f} s)", flush=True)
    results = {v: [] for v in args.variants}
    ok = True
    try:
        for r in range(args.runs):
            for v in args.variants:
                s = sessions[v]
                pid = s.driver.t.pid
                c0, t0 = _cpu_seconds(pid), time.monotonic()
                inf = s.run_int8(x_q, profile=False)
                wall, cpu = time.monotonic() - t0, _cpu_seconds(pid) - c0
                exact = all(np.array_equal(inf.tensors[o], ref[o]) for o in prog.outputs)
                ok &= exact
                results[v].append((inf.run.cycles, wall, cpu))
                print(f"  run {r + 1} {v:18s} {inf.run.cycles:,} cycles {wall:6.2f} s wall {cpu:6.2f} s CPU "
                      f"{inf.run.cycles / wall / 1e3:6.0f} k/s wall {inf.run.cycles / cpu / 1e3:6.0f} k/s CPU "
                      f"{'exact' if exact else 'OUTPUT DIFFERS FROM THE GOLDEN MODEL'}", flush=True)
    finally:
        for s in sessions.values():
            s.driver.t.close()
    print(f"\nSqueezeNet 1.1 whole, {args.rows}x{args.cols} engine, median of {args.runs} interleaved runs; load "
          f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| variant | cycles | wall s | k cycles/s (wall) | sim CPU s | k cycles/s (CPU) | what |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for v, rs in results.items():
        cyc = rs[0][0]
        wall = statistics.median(r[1] for r in rs)
        cpu = statistics.median(r[2] for r in rs)
        print(f"| {v} | {cyc:,} | {wall:.2f} | {cyc / wall / 1e3:.0f} | {cpu:.2f} | {cyc / cpu / 1e3:.0f} | "
              f"{VARIANTS[v][2]} |")
    if len({rs[0][0] for rs in results.values()}) > 1:
        print("cycle counts differ between variants", file=sys.stderr)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
