"""Frames per second of a network on each board: measured engine cycles, and the link's byte counts.

``python -m tools.board_fps [--board B ...] [--network squeezenet|rfsong ...]``

For each board of :data:`hw.boards.BOARDS` and each network:

* the network is compiled for the board's engine (:func:`sw.staging.program_config`),
  staged through the board's memory (:func:`sw.staging.plan_staging`: the
  same groups, slices and relocated commands the board runs), and run in
  Verilator on the engine with the board's configuration, behind a
  :class:`sw.staging.StagedTransport` over a :class:`~sim.verilator_backend.VerilatorBackend`
  whose memory is the board's size: the engine cycles of one inference
  (``CYCLES`` summed over the groups), checked bit-exact against the golden model;
* the link traffic of the same plan (:func:`sw.staging.traffic`) gives the
  seconds the UART needs per inference at the board's line rate;
* compute-bound frames/s = clock / cycles; link-bound = 1 / link seconds; the
  board as built (stop-and-wait: the engine waits for the link and the link
  for the engine) = 1 / (both).

Results go to ``results/boards_fps.json`` and a table on the console.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hw.boards import BOARDS, BoardSpec
from sw.staging import StagedTransport, compile_for_board, traffic

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Round trip the host adds to each frame on real hardware: the FTDI latency timer set to 1 ms
#: (``/sys/bus/usb-serial/devices/ttyUSB*/latency_timer``; the default 16 ms makes it 16x worse).
TURNAROUND_S = 0.001


def network(name: str):
    """``(qgraph, x_q)``: the quantized network and a quantized input picture."""
    import torch

    from quant import golden
    from sw.networks import quantized
    from sw.shared import require_shared

    torch.set_num_threads(1)
    g = quantized(name)
    if name == "squeezenet":
        from sw.shared import imagenet_preprocess

        x = imagenet_preprocess(require_shared("images/coco_cat.jpg"))
    else:
        from sw.preprocess import ssd_preprocess

        x, _ = ssd_preprocess(require_shared("images/people_1.jpg"))
    return g, np.asarray(golden.quantize_input(x, g.qparams(g.inputs[0])))


def measure(spec: BoardSpec, name: str, *, verbose: bool = False) -> dict:
    """Cycles (Verilator, staged as on the board), link traffic and frames/s of one network on one board."""
    from hw.engine import Engine
    from quant import golden
    from sw.backends import open_backend
    from sw.driver import Driver
    from sw.runtime import Session

    g, x_q = network(name)
    program, plan = compile_for_board(g, spec.engine, spec.mem_words, profile=False)
    t = traffic(plan)
    out = {"board": spec.name, "network": name, "ibuf_depth": program.config.ibuf_depth,
           "steps": len(program.steps), "units": plan.units,
           "groups": len(plan.groups), "macs": sum(s.macs for s in program.steps),
           "program_words": program.mem_words, "board_words": spec.mem_words,
           "payload_up": t.payload_up, "payload_down": t.payload_down, "wire_bytes": t.wire_up + t.wire_down,
           "frames": t.frames, "baud": spec.baud}
    t0 = time.monotonic()
    mem = 1 << max(12, (spec.mem_words - 1).bit_length())
    with open_backend("verilator", top_factory=Engine, config=spec.engine, mem_words=mem, latency=2,
                      verbose=verbose) as vl:
        staged = StagedTransport(vl, program, board_words=spec.mem_words)
        session = Session(program, Driver(staged, program.config))
        inf = session.run_int8(x_q, profile=False, timeout=7200)
        ref = golden.run(g, x_q)
        out["bit_exact"] = all(np.array_equal(v, ref[k]) for k, v in inf.tensors.items())
        out["cycles"] = inf.run.cycles
        out["active"] = inf.run.active
        out["sim_report"] = vl.report()
    out["sim_seconds"] = round(time.monotonic() - t0, 1)
    clk = spec.clk_hz
    link_s = t.seconds(spec.baud)
    link_s_rt = t.seconds(spec.baud, TURNAROUND_S)
    out.update({
        "clk_mhz": clk / 1e6,
        "utilization": out["macs"] / (out["cycles"] * spec.engine.macs_per_cycle),
        "compute_s": out["cycles"] / clk,
        "fps_compute": clk / out["cycles"],
        "link_s": link_s, "link_s_with_turnaround": link_s_rt,
        "fps_link": 1 / link_s, "fps_link_with_turnaround": 1 / link_s_rt,
        "fps_board": 1 / (out["cycles"] / clk + link_s_rt),
    })
    if "usb" in spec.links:   # the same traffic over the USB link (issue 11), host turnaround not counted
        out["link_s_usb"] = t.usb_seconds(clk)
        out["fps_link_usb"] = 1 / out["link_s_usb"]
        out["fps_board_usb"] = 1 / (out["cycles"] / clk + out["link_s_usb"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.board_fps", description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", action="append", choices=list(BOARDS), help="default: every board")
    ap.add_argument("--network", action="append", choices=["squeezenet", "rfsong"], help="default: both")
    ap.add_argument("--out", default=str(REPO_ROOT / "results" / "boards_fps.json"))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else []
    for b in args.board or list(BOARDS):
        for n in args.network or ["squeezenet", "rfsong"]:
            print(f"{b} / {n} ...", flush=True)
            try:
                r = measure(BOARDS[b], n, verbose=args.verbose)
            except Exception as e:   # report and go on with the other boards
                r = {"board": b, "network": n, "error": f"{type(e).__name__}: {e}"}
            results = [x for x in results if (x["board"], x["network"]) != (b, n)] + [r]
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(results, indent=1) + "\n")
            if "error" in r:
                print(f"  ERROR {r['error']}", flush=True)
                continue
            print(f"  {r['cycles']:,} cycles ({r['utilization']:.1%} of peak), bit-exact {r['bit_exact']}; "
                  f"{r['groups']} groups, {r['units']} commands; link {r['wire_bytes'] / 1e6:.2f} MB "
                  f"in {r['frames']} frames = {r['link_s']:.2f} s at {r['baud'] / 1e6:g} Mbaud; "
                  f"fps compute {r['fps_compute']:.2f}, link {r['fps_link']:.3f}, board {r['fps_board']:.3f} "
                  f"(Verilator {r['sim_seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
