"""Per-layer Verilator reports of the seed networks and of person_detect.tflite, for docs/BENCHMARKS.md.

    python -m tools.bench_seed [squeezenet10 squeezenext person_detect] [--reduced]

Every layer is compared with the golden model as it is produced; the tables print cycles, MACs and
utilization per layer (depthwise layers are the rows marked ``dw``).
"""

from __future__ import annotations

import argparse
import sys

import torch

from hw.isa import EngineConfig


def _seed(name: str, reduced: bool):
    from sw.models.seed import quantized_seed, seed_input
    from sw.networks import Runner

    qg, shape = quantized_seed(name, reduced)
    with Runner(name, "verilator", EngineConfig(), qgraph=qg, progress=False) as r:
        return r.run_float(seed_input(shape, 7)).report


def _person_detect():
    from sw.shared import require_shared
    from sw.usermodel import load_input, load_model, run_model

    model = load_model(str(require_shared("models/person_detect/person_detect.tflite")))
    x = load_input(require_shared("models/person_detect/person.bmp"), model.input_shape, model.preprocess)
    return run_model(model, [x], backend="verilator")[0].report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("networks", nargs="*", default=["squeezenet10", "squeezenext", "person_detect"])
    ap.add_argument("--reduced", action="store_true", help="the reduced seed networks")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ok = True
    for name in args.networks:
        rep = _person_detect() if name == "person_detect" else _seed(name, args.reduced)
        print(rep.table())
        dw = [r for r in rep.rows if r.detail.startswith("dw")]
        if dw:
            macs, cycles = sum(r.macs for r in dw), sum(r.cycles for r in dw)
            print(f"depthwise layers: {len(dw)}, {macs:,} MACs in {cycles:,} cycles, "
                  f"utilization {macs / (cycles * rep.config.macs_per_cycle):.1%}")
        print()
        ok &= bool(rep.bit_exact)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
