"""`make sim`: the eight Fire modules of SqueezeNet 1.1 in Verilator, at their real sizes, bit-exact or not.

Each Fire module runs alone (its commands only) on the activations the
quantized network computes for a real photograph, with the pretrained
weights, and its output is compared with the golden model's word for word.
Printed per module: bit-exact, cycles, MACs, MAC utilization (MACs /
(cycles x rows x cols)), the expand layers' utilization, and the simulator's
speed in cycles per second.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--image", default="images/coco_cat.jpg", help="image under ../shared (or a path)")
    ap.add_argument("--stalls", type=float, default=0.0, help="memory stall probability in the simulation")
    ap.add_argument("--modules", default="fire2,fire3,fire4,fire5,fire6,fire7,fire8,fire9")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    from hw.engine import Engine
    from hw.isa import EngineConfig
    from quant import golden
    from sw.backends import open_backend
    from sw.compiler import compile_graph
    from sw.driver import Driver
    from sw.models.squeezenet import FIRE_LAYERS, quantize_squeezenet11
    from sw.runtime import Session, run_layer
    from sw.shared import imagenet_preprocess, require_shared

    cfg = EngineConfig(rows=args.rows, cols=args.cols)
    t_start = time.monotonic()
    image = require_shared(args.image)
    print("[1/4] quantizing SqueezeNet 1.1 (calibration: ImageNet-preprocessed photographs) ...", flush=True)
    qg = quantize_squeezenet11("imagenet")
    print(f"[2/4] compiling for a {cfg.rows}x{cfg.cols} array (ibuf {cfg.ibuf_depth} words, "
          f"acc {cfg.acc_depth} pixels) ...", flush=True)
    prog = compile_graph(qg, cfg, reuse_memory=False)
    x = imagenet_preprocess(image)
    tensors = golden.run(qg, golden.quantize_input(x, qg.qparams(qg.inputs[0])))
    print("[3/4] building and starting the Verilator model ...", flush=True)
    wanted = [m.strip() for m in args.modules.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in FIRE_LAYERS]
    if unknown:
        ap.error(f"unknown module(s) {unknown}; choose from {list(FIRE_LAYERS)}")
    mem_words = max(1 << 20, 1 << (prog.mem_words - 1).bit_length())  # 1 << 20: the build the tests share
    rows = []
    with open_backend("verilator", top_factory=Engine, config=cfg, mem_words=mem_words, stalls=args.stalls,
                      verbose=args.verbose) as t:
        session = Session(prog, Driver(t, cfg))
        print(f"[4/4] running {len(wanted)} Fire modules on {image.name} (stalls {args.stalls:.0%}) ...", flush=True)
        for name in wanted:
            t0 = time.monotonic()
            c0 = t.cycles()
            r = run_layer(session, FIRE_LAYERS[name], tensors)
            sim_cycles = t.cycles() - c0
            wall = time.monotonic() - t0
            e_macs = fire_expand_macs(qg, FIRE_LAYERS[name])
            e_cycles = r.profile["op1"] + r.profile["op2"]
            rows.append((name, r, sim_cycles / wall, e_macs / (e_cycles * cfg.macs_per_cycle)))
            print(f"      {name}: {'bit-exact' if r.bit_exact else f'{r.mismatches} MISMATCHES'}, "
                  f"{r.cycles:,} cycles", flush=True)
            if not r.bit_exact:
                for c, y, xx, got, exp in r.first_mismatches:
                    print(f"        channel {c} pixel ({y},{xx}): engine {got}, golden {exp}")

    print()
    print(f"SqueezeNet 1.1 Fire modules on a {cfg.rows}x{cfg.cols} array, image {image.name}, "
          f"memory stalls {args.stalls:.0%}")
    hdr = (f"{'module':7s} {'shape':28s} {'bit-exact':9s} {'cycles':>10s} {'MACs':>12s} {'util':>6s} "
           f"{'expand util':>11s} {'sim cycles/s':>12s}")
    print(hdr)
    print("-" * len(hdr))
    tot_c = tot_m = 0
    for name, r, cps, eu in rows:
        print(f"{name:7s} {r.detail[:28]:28s} {'yes' if r.bit_exact else 'NO':9s} {r.cycles:>10,d} {r.macs:>12,d} "
              f"{r.utilization(cfg):>6.1%} {eu:>11.1%} {cps:>12,.0f}")
        tot_c += r.cycles
        tot_m += r.macs
    print("-" * len(hdr))
    print(f"{'total':7s} {'':28s} {'yes' if all(r.bit_exact for _, r, _, _ in rows) else 'NO':9s} {tot_c:>10,d} "
          f"{tot_m:>12,d} {tot_m / (tot_c * cfg.macs_per_cycle):>6.1%}")
    print(f"wall time {time.monotonic() - t_start:.1f} s")
    return 0 if all(r.bit_exact for _, r, _, _ in rows) else 1


def fire_expand_macs(qg, concat_name: str) -> int:
    """MACs of the two expand convolutions of the Fire module whose concat is ``concat_name``."""
    f = next(f for f in qg.fire_modules() if f.concat == concat_name)
    total = 0
    for n in (f.expand1x1, f.expand3x3):
        node = qg[n]
        c, h, w = node.shape
        total += c * h * w * node.weight.shape[1] * node.weight.shape[2] * node.weight.shape[3]
    return total


if __name__ == "__main__":
    sys.exit(main())
