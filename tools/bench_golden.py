"""Golden-model speed: SqueezeNet 1.1 per inference beside PyTorch float32 and PyTorch int8 (QNNPACK).

Four ways to run one 224x224 picture, measured in the same process with the
same thread count (``--threads``, default 1), interleaved round by round so
that a change in the machine's load hits all four alike; medians over
``--runs`` rounds after ``--warmup`` rounds, as wall-clock and as this
process's CPU time, each also as a ratio to PyTorch float32:

* PyTorch float32: the float model (``sw.models.squeezenet``), eager;
* PyTorch int8 (QNNPACK): the same integer graph (weights, biases, scales, zero
  points) as ``torch.ao`` quantized modules on the ``qnnpack`` engine;
* golden model: :func:`quant.golden.infer` (quantize, integer graph, host ops);
* golden backend + per-layer check: what ``kindling classify`` does by
  default, :meth:`sw.networks.Runner.run_float` with ``check=True`` on the
  golden backend (the ISA interpreter runs the command list layer by layer and
  every layer is compared with the golden model's).

``python -m tools.bench_golden [--threads N] [--runs N] [--reference]``;
``--reference`` adds the golden model on its reference kernels
(``golden.reference_kernels()``). `make bench` runs it as its last section.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch

__all__ = ["QnnpackNetwork", "measure", "main"]


class QnnpackNetwork:
    """A :class:`~quant.quantize.QGraph` of convolutions, max pools, concats and a global average on QNNPACK.

    Modules are built once (as :func:`quant.torch_ref.qnnpack_conv` builds
    them for one convolution); :meth:`__call__` runs a float picture through
    quantize -> integer graph -> dequantize and returns the output as float.
    The global average keeps its input's quantization (PyTorch's quantized
    average) where the golden model requantizes: the work is the same.
    """

    def __init__(self, qgraph):
        from quant.quantize import QConcat, QConv, QFlatten, QGlobalAvgPool, QInput, QMaxPool

        torch.backends.quantized.engine = "qnnpack"
        self.qgraph = qgraph
        self.steps = []
        for node in qgraph.nodes:
            if isinstance(node, QInput):
                qp = qgraph.qparams(node.name)
                self.steps.append((node, lambda ins, s=qp.scale, z=qp.zero_point:
                                   torch.quantize_per_tensor(ins[0], s, z + 128, torch.quint8)))
            elif isinstance(node, QConv):
                self.steps.append((node, self._conv_module(node)))
            elif isinstance(node, QMaxPool):
                self.steps.append((node, lambda ins, n=node: torch.nn.functional.max_pool2d(
                    ins[0], n.kernel, n.stride, n.padding, ceil_mode=n.ceil_mode)))
            elif isinstance(node, QConcat):
                self.steps.append((node, lambda ins: torch.cat(ins, 1)))
            elif isinstance(node, QGlobalAvgPool):
                self.steps.append((node, lambda ins: torch.nn.functional.adaptive_avg_pool2d(ins[0], 1)))
            elif isinstance(node, QFlatten):
                self.steps.append((node, lambda ins: ins[0].reshape(1, -1)))
            else:
                raise TypeError(f"{node.name}: {type(node).__name__} has no QNNPACK equivalent here")

    @staticmethod
    def _conv_module(node):
        """The ``torch.ao`` quantized convolution of a QConv node, as :func:`quant.torch_ref.qnnpack_conv`."""
        t, left, b, r = node.padding
        relu = node.act_min == node.zp_out and node.act_min > -128
        w_scale = torch.from_numpy(np.asarray(node.weight_scale, dtype=np.float64))
        with warnings.catch_warnings():  # torch 2.13 flags quantized-tensor constructors as deprecated
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            qw = torch._make_per_channel_quantized_tensor(torch.from_numpy(node.weight.astype(np.int8)), w_scale,
                                                          torch.zeros(node.out_channels, dtype=torch.int64), 0)
        bias = torch.from_numpy(node.bias.astype(np.float64) * node.acc_scale).float()
        cls = torch.ao.nn.intrinsic.quantized.ConvReLU2d if relu else torch.ao.nn.quantized.Conv2d
        conv = cls(node.in_channels, node.out_channels, node.kernel_size, stride=node.stride, padding=(t, left),
                   dilation=node.dilation)
        conv.set_weight_bias(qw, bias)
        conv.scale, conv.zero_point = float(node.s_out), int(node.zp_out) + 128
        return lambda ins: conv(ins[0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        vals = {}
        for node, fn in self.steps:
            ins = [x] if not node.inputs else [vals[i] for i in node.inputs]
            vals[node.name] = fn(ins)
        return vals[self.qgraph.outputs[0]].dequantize()


def measure(fns: dict, runs: int, warmup: int) -> dict[str, dict[str, float]]:
    """Median wall-clock and CPU milliseconds of each function, interleaved round by round."""
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    with torch.no_grad():
        for i in range(warmup + runs):
            for name, fn in fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                if i >= warmup:
                    wall[name].append(1e3 * (time.perf_counter() - t0))
                    cpu[name].append(1e3 * (time.process_time() - c0))
    return {k: {"wall_ms": statistics.median(wall[k]), "cpu_ms": statistics.median(cpu[k])} for k in fns}


def _checks(runner, golden_mod, qgraph, qnet, fmodel, x) -> tuple[bool, list[str]]:
    """Sanity checks: every layer bit-exact (the result), and the top-1 class of each run (printed)."""
    res = runner.run_float(x)
    exact = res.run.exact or {}
    top = {"float32": int(fmodel(x).argmax()), "QNNPACK": int(qnet(x).argmax()),
           "golden": int(golden_mod.infer(qgraph, x)[0].argmax()), "golden backend": int(res.outputs[0].argmax())}
    ok = bool(exact) and all(exact.values())
    return ok, [f"per-layer check: {sum(exact.values())}/{len(exact)} engine layers bit-exact with the golden "
                f"model", "top-1 class: " + ", ".join(f"{k} {v}" for k, v in top.items())]


def main(argv=None) -> int:
    """Measure, print the table and the targets; 0 when every layer of the checked run is bit-exact."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every measurement (default 1)")
    ap.add_argument("--runs", type=int, default=15, help="measured rounds (default 15)")
    ap.add_argument("--warmup", type=int, default=3, help="rounds before measuring (default 3)")
    ap.add_argument("--image", default="images/coco_cat.jpg", help="picture, relative to the shared data")
    ap.add_argument("--reference", action="store_true", help="also the golden model on its reference kernels")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        print("error: --threads and --runs must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)

    from hw.isa import EngineConfig
    from quant import golden
    from sw.models.squeezenet import load_squeezenet11
    from sw.networks import Runner, quantized
    from sw.shared import imagenet_preprocess, require_shared

    x = imagenet_preprocess(require_shared(args.image))
    qgraph = quantized("squeezenet")
    fmodel = load_squeezenet11().eval()
    qnet = QnnpackNetwork(qgraph)
    runner = Runner("squeezenet", "golden", EngineConfig(), check=True, progress=False, qgraph=qgraph)
    fns = {"PyTorch float32": lambda: fmodel(x),
           "PyTorch int8 (QNNPACK)": lambda: qnet(x),
           "golden model": lambda: golden.infer(qgraph, x),
           "golden backend + per-layer check": lambda: runner.run_float(x)}
    if args.reference and hasattr(golden, "reference_kernels"):
        def reference():
            with golden.reference_kernels():
                golden.infer(qgraph, x)
        fns["golden model, reference kernels"] = reference
    load0 = os.getloadavg()
    res = measure(fns, args.runs, args.warmup)
    load1 = os.getloadavg()
    with torch.no_grad():
        ok, checks = _checks(runner, golden, qgraph, qnet, fmodel, x)
    runner.close()

    print(f"SqueezeNet 1.1 on {args.image} (224x224), torch {torch.__version__}, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), median of {args.runs} "
          f"interleaved rounds after {args.warmup} warm-up")
    print(f"load average {load0[0]:.1f} before, {load1[0]:.1f} after (other processes share the machine)")
    base = res["PyTorch float32"]
    print(f"| {'run':34s} | wall ms | x float32 | CPU ms | x float32 |")
    print(f"|{'-' * 36}|--------:|----------:|-------:|----------:|")
    for name, r in res.items():
        print(f"| {name:34s} | {r['wall_ms']:7.1f} | {r['wall_ms'] / base['wall_ms']:9.2f} | {r['cpu_ms']:6.1f} | "
              f"{r['cpu_ms'] / base['cpu_ms']:9.2f} |")
    for line in checks:
        print(line)
    g = res["golden model"]["wall_ms"] / base["wall_ms"]
    c = res["golden backend + per-layer check"]["wall_ms"] / base["wall_ms"]
    print(f"targets (wall clock): golden <= 2x float32: {g:.2f}x {'met' if g <= 2 else 'NOT met'}; "
          f"per-layer-checked <= 3x: {c:.2f}x {'met' if c <= 3 else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
