"""``kindling sweep``: engine configurations x networks, each point a Verilator build and a bit-exact run.

A point is one :class:`~hw.isa.EngineConfig` and one network: the network is
compiled for the configuration, the engine's Verilog built with Verilator
(:func:`sim.build.build` caches the model by its Verilog text, so every
configuration is built once per machine and reused by its other networks and
by later sweeps), the program run layer by layer and every layer compared with
the golden model. The point's row: cycles, MACs, MAC utilization, frames per
second at each asked clock, bit-exactness, simulator speed, build and run
times, and (``yosys=True``) an ECP5 resource estimate of the engine from Yosys.

The points run as Ray tasks (PyPI ``ray``): ``ray.init()`` with no address
starts a local Ray on this machine's cores, with no set-up; ``address`` joins
a running cluster (docs/SCALE.md). A point that fails (a configuration the
network cannot be compiled for, a build error, a crash, the deadline) is a row
with its reason, never the end of the sweep.

Networks (:data:`SWEEP_NETWORKS`): the two real ones on their sample
pictures, and small seeded ones for quick sweeps and the tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import subprocess
import time
import traceback
from pathlib import Path

from hw.isa import EngineConfig

__all__ = ["SWEEP_NETWORKS", "Point", "grid", "network_input", "run_point", "run_sweep", "parse_clocks",
           "yosys_estimate", "write_table", "write_plot"]

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Networks a sweep can run, and what each is.
SWEEP_NETWORKS = {
    "squeezenet": "SqueezeNet 1.1, coco_cat.jpg (224x224)",
    "rfsong": "RFSong-779, people_1.jpg (300x300)",
    "fire-small": "a 3x3/2 stem, max pool and a Fire module 16->8->16+16 on 43x43 (seeded random weights)",
    "conv-small": "three 3x3 convolutions 3->16->32->32 on 24x24 (seeded random weights)",
}

#: Status of a point the network cannot be compiled for (a reported result, not an error).
INFEASIBLE = "infeasible"
#: Status of the points not done when the sweep was interrupted (Ctrl-C).
INTERRUPTED = "failed: interrupted"


@dataclasses.dataclass(frozen=True)
class Point:
    """One sweep point: an engine configuration and a network."""

    config: EngineConfig
    network: str

    @property
    def label(self) -> str:
        c = self.config
        return f"{c.rows}x{c.cols} ibuf {c.ibuf_depth} acc {c.acc_depth}"


def grid(rows, cols, ibuf_depths, acc_depths, networks) -> tuple[list[Point], list[str]]:
    """Every valid configuration of the product, times the networks; and one line per combination skipped.

    Points are ordered network-major, so the first pass over the configurations
    builds each Verilator model once and the later networks find it cached.
    """
    configs, skipped = [], []
    for r, c, i, a in itertools.product(rows, cols, ibuf_depths, acc_depths):
        try:
            configs.append(EngineConfig(rows=r, cols=c, ibuf_depth=i, acc_depth=a))
        except ValueError as e:
            skipped.append(f"rows {r} cols {c} ibuf {i} acc {a}: {e}")
    for n in networks:
        if n not in SWEEP_NETWORKS:
            raise ValueError(f"unknown sweep network {n!r}; choose from {', '.join(SWEEP_NETWORKS)}")
    return [Point(cfg, n) for n in networks for cfg in configs], skipped


def parse_clocks(items) -> dict[str, float]:
    """``--clocks`` values (MHz numbers or board names) -> ``{column label: MHz}``."""
    from hw.boards import BOARDS

    out = {}
    for item in items:
        if item in BOARDS:
            out[item] = BOARDS[item].clk_hz / 1e6
            continue
        try:
            mhz = float(item)
        except ValueError:
            raise ValueError(f"--clocks {item}: neither a clock in MHz nor a board ({', '.join(BOARDS)})") from None
        if not 0 < mhz < math.inf:
            raise ValueError(f"--clocks {item}: a clock must be a positive number of MHz")
        out[f"{mhz:g}MHz"] = mhz
    return out


def _seeded_model(layers, seed: int):
    import torch
    from torch import nn

    model = nn.Sequential(*layers).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / max(1, p[0].numel()) ** 0.5))
    return model, gen


def network_input(name: str):
    """``(qgraph, x_q)``: the quantized network of a sweep and its int8 input."""
    import torch

    from quant import golden

    if name in ("squeezenet", "rfsong"):
        from sw.networks import quantized
        from sw.preprocess import ssd_preprocess
        from sw.shared import imagenet_preprocess, require_shared

        g = quantized(name)
        x = (imagenet_preprocess(require_shared("images/coco_cat.jpg")) if name == "squeezenet"
             else ssd_preprocess(require_shared("images/people_1.jpg"))[0])
        return g, golden.quantize_input(x, g.qparams(g.inputs[0]))
    from torch import nn

    from quant.quantize import quantize_model

    if name == "fire-small":
        from sw.models.squeezenet import Fire

        model, gen = _seeded_model([nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                                    Fire(16, 8, 16, 16)], seed=1)
        shape = (3, 43, 43)
    elif name == "conv-small":
        model, gen = _seeded_model([nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                    nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()], seed=2)
        shape = (3, 24, 24)
    else:
        raise ValueError(f"unknown sweep network {name!r}; choose from {', '.join(SWEEP_NETWORKS)}")
    g = quantize_model(model, torch.rand((4, *shape), generator=gen))
    return g, golden.quantize_input(torch.rand((1, *shape), generator=gen), g.qparams(g.inputs[0]))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:300]


def run_point(point: Point, clocks: dict[str, float], *, build_root=None, yosys: bool = False,
              timeout: float = 3600.0) -> dict:
    """Compile, build, run and check one point; its table row (``status`` ok, infeasible or failed: reason)."""
    import numpy as np

    from quant import golden
    from sw.compiler import CompileError, compile_graph
    from sw.driver import Driver
    from sw.runtime import Session, run_network

    cfg = point.config
    row = {"network": point.network, "rows": cfg.rows, "cols": cfg.cols, "ibuf_depth": cfg.ibuf_depth,
           "acc_depth": cfg.acc_depth, "macs_per_cycle": cfg.macs_per_cycle, "status": "failed", "bit_exact": "",
           "layers": "", "cycles": "", "macs": "", "utilization": "", **{f"fps@{k}": "" for k in clocks},
           "sim_kcycles_per_s": "", "build_s": "", "build_cached": "", "run_s": "", "point_s": "",
           "host": os.uname().nodename}
    t0 = time.monotonic()
    try:
        qgraph, x_q = network_input(point.network)
        try:
            program = compile_graph(qgraph, cfg)
        except CompileError as e:
            row["status"] = f"{INFEASIBLE}: {' '.join(str(e).split())[:200]}"
            return row
        from hw.engine import Engine
        from sw.backends import open_backend

        mem_words = max(1 << 20, 1 << (program.mem_words - 1).bit_length())
        backend = open_backend("verilator", top_factory=Engine, config=cfg, mem_words=mem_words, build_dir=build_root)
        try:
            row["build_s"] = round(backend.build.seconds, 1)
            row["build_cached"] = int(backend.build.cached)
            session = Session(program, Driver(backend, cfg, timed=True))
            reference = golden.run(qgraph, np.asarray(x_q))
            t1 = time.monotonic()
            run = run_network(session, x_q, reference=reference, timeout=timeout)
            row["run_s"] = round(time.monotonic() - t1, 1)
            row["sim_kcycles_per_s"] = round(backend.cycles_per_second / 1e3, 1)
        finally:
            backend.close()
        macs = sum(s.macs for s in program.steps)
        exact = all(run.exact.values())
        row.update(status="ok" if exact else "NOT BIT-EXACT", bit_exact=int(exact),
                   layers=f"{sum(run.exact.values())}/{len(run.exact)}", cycles=run.cycles, macs=macs,
                   utilization=round(macs / (run.cycles * cfg.macs_per_cycle), 4))
        for k, mhz in clocks.items():
            row[f"fps@{k}"] = round(mhz * 1e6 / run.cycles, 3)
        if not exact:
            row["status"] += "; first: " + "; ".join(f"{k} {v[:2]}" for k, v in run.first_mismatch.items())[:200]
    except Exception as e:     # a failing point is a row, not the end of the sweep
        row["status"] = f"failed: {_one_line(e)}"
        row["traceback"] = traceback.format_exc(limit=6)
    finally:
        row["point_s"] = round(time.monotonic() - t0, 1)
    if yosys:
        row.update(yosys_estimate(cfg, build_root=build_root))
    return row


def yosys_estimate(config: EngineConfig, *, build_root=None, timeout: float = 3600.0) -> dict:
    """ECP5 cells of the engine alone after Yosys ``synth_ecp5`` (cached by its Verilog): LUT4, FF, DSP, BRAM.

    A rough estimate before placement (no board top, no memory, no link); a
    failure gives ``{"yosys": reason}``.
    """
    from amaranth.back import verilog

    from hw.boards.build import _synth_summary, _yosys_cells, tool_env
    from hw.engine import Engine

    try:
        text = verilog.convert(Engine(config), name="engine")
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        # Beside the Verilator models (sim.build's root; sw does not import sim).
        root = build_root or os.environ.get("KINDLING_SIM_BUILD") or REPO_ROOT / "sim_build"
        d = Path(root) / f"yosys-{key}"
        out = d / "estimate.json"
        if out.exists():
            return json.loads(out.read_text())
        d.mkdir(parents=True, exist_ok=True)
        (d / "engine.v").write_text(text)
        env = {**os.environ, **tool_env("ecp5")}
        t0 = time.monotonic()
        proc = subprocess.run([env["YOSYS"], "-q", "-p", "read_verilog engine.v; synth_ecp5 -top engine; "
                               "tee -q -o stat.txt stat"], cwd=d, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode:
            return {"yosys": f"failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"}
        cells = _synth_summary("ecp5", _yosys_cells(d / "stat.txt"))
        est = {"yosys": "ecp5", **{f"ecp5_{k}": v for k, v in cells.items()},
               "yosys_s": round(time.monotonic() - t0, 1)}
        out.write_text(json.dumps(est))
        return est
    except Exception as e:
        return {"yosys": f"failed: {_one_line(e)}"}


def _point_task(point: Point, clocks, build_root, yosys, timeout):
    """A Ray task: one point (the worker's environment points at the repository; see docs/SCALE.md)."""
    import torch

    torch.set_num_threads(1)
    return run_point(point, clocks, build_root=build_root, yosys=yosys, timeout=timeout)


def _ray_init(address: str | None, jobs: int | None, ship_code: bool):
    import ray

    runtime_env = {"env_vars": {k: os.environ[k] for k in ("KINDLING_SHARED",) if k in os.environ}}
    if ship_code:
        runtime_env["working_dir"] = str(REPO_ROOT)
        runtime_env["excludes"] = ["sim_build/", "build/", "results/", ".venv/", ".git/", "*.fst", "*.vcd"]
    else:
        # Local workers import the project from where this process does.
        paths = [p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p]
        runtime_env["env_vars"]["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # "local": always a new private Ray, never one that happens to run on this machine already.
    kw = {"address": address} if address else {"address": "local", "num_cpus": jobs}
    ray.init(**kw, runtime_env=runtime_env, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", configure_logging=True)
    return ray


def run_sweep(points: list[Point], clocks: dict[str, float], *, address: str | None = None, jobs: int | None = None,
              build_root=None, yosys: bool = False, ship_code: bool = False, deadline_s: float = 6 * 3600.0,
              point_timeout: float = 3600.0, progress: bool = True, on_row=None) -> list[dict]:
    """Run every point as a Ray task; rows in the order of ``points``.

    ``jobs``: CPUs of the local Ray (default: all); ignored with ``address``.
    ``deadline_s``: the whole sweep's limit; points not done by then are rows
    with status ``failed: deadline``. ``on_row(row)`` is called as each point ends.
    """
    from tqdm import tqdm

    ray = _ray_init(address, jobs, ship_code)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_point_task)
        root = str(build_root) if build_root else None
        futures = {task.remote(p, clocks, root, yosys, point_timeout): i for i, p in enumerate(points)}
        rows: list[dict | None] = [None] * len(points)
        deadline = time.monotonic() + deadline_s
        pending = list(futures)
        bar = tqdm(total=len(points), desc="sweep", unit="point", disable=None if progress else True, leave=False)
        why = f"failed: deadline of {deadline_s:.0f} s"
        try:
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                done, pending = ray.wait(pending, num_returns=1, timeout=min(left, 60.0))
                for f in done:
                    i = futures[f]
                    try:
                        rows[i] = ray.get(f)
                    except Exception as e:     # the worker died: still a row
                        rows[i] = _failed_row(points[i], f"failed: {_one_line(e)}")
                    if on_row:
                        on_row(rows[i])
                    bar.update()
        except KeyboardInterrupt:       # Ctrl-C: the points done so far still make a table
            why = INTERRUPTED
        bar.close()
        for f in pending:
            ray.cancel(f, force=True)
            rows[futures[f]] = _failed_row(points[futures[f]], why)
        return rows
    finally:
        ray.shutdown()


def _failed_row(point: Point, status: str) -> dict:
    c = point.config
    return {"network": point.network, "rows": c.rows, "cols": c.cols, "ibuf_depth": c.ibuf_depth,
            "acc_depth": c.acc_depth, "macs_per_cycle": c.macs_per_cycle, "status": status}


def _columns(rows: list[dict]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(k for k in r if k != "traceback"))
    return list(cols)


def write_table(rows: list[dict], stem) -> list[Path]:
    """``stem.csv`` (every column) and ``stem.md`` (the main ones); the paths written."""
    import csv

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    with stem.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    fps = [c for c in cols if c.startswith("fps@")]
    est = [c for c in cols if c.startswith("ecp5_")]
    md_cols = ["network", "rows", "cols", "ibuf_depth", "acc_depth", "status", "layers", "cycles", "utilization",
               *fps, *est, "sim_kcycles_per_s", "build_s", "run_s"]
    lines = ["| " + " | ".join(md_cols) + " |", "|" + "|".join("---:" if c not in ("network", "status") else "---"
                                                            for c in md_cols) + "|"]
    for r in rows:
        cells = []
        for c in md_cols:
            v = r.get(c, "")
            if c == "utilization" and v != "":
                v = f"{v:.1%}"
            elif c == "cycles" and v != "":
                v = f"{v:,}"
            cells.append(str(v).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return [stem.with_suffix(".csv"), stem.with_suffix(".md")]


def write_plot(rows: list[dict], path, clock_label: str | None = None) -> Path:
    """MAC utilization and frames per second (at ``clock_label``, default the first clock) per point, per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(r["network"] for r in rows))
    configs = list(dict.fromkeys((r["rows"], r["cols"], r["ibuf_depth"], r["acc_depth"]) for r in rows))
    fps_cols = [k for k in _columns(rows) if k.startswith("fps@")]
    fps_key = f"fps@{clock_label}" if clock_label else (fps_cols[0] if fps_cols else None)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 1.1 * len(configs) * max(1, len(nets)) / 2 + 3), 7),
                             sharex=True)
    width = 0.8 / max(1, len(nets))
    for k, net in enumerate(nets):
        by = {(r["rows"], r["cols"], r["ibuf_depth"], r["acc_depth"]): r for r in rows if r["network"] == net}
        xs = [i + (k - (len(nets) - 1) / 2) * width for i in range(len(configs))]

        def value(cfg, key, by=by):
            r = by.get(cfg)
            return r[key] if r and r.get("status") == "ok" and r.get(key, "") != "" else float("nan")

        axes[0].bar(xs, [100 * value(c, "utilization") for c in configs], width, label=net)
        if fps_key:
            axes[1].bar(xs, [value(c, fps_key) for c in configs], width, label=net)
        for x, c in zip(xs, configs, strict=True):     # say why a bar is missing
            r = by.get(c)
            if r is not None and r.get("status") != "ok":
                axes[0].text(x, 2, r["status"].split(":")[0], rotation=90, ha="center", va="bottom",
                             fontsize="x-small")
    axes[0].set_ylabel("MAC utilization (%)")
    axes[0].set_ylim(0, 100)
    axes[0].legend(fontsize="small")
    axes[0].set_title("kindling sweep: Verilator runs, every layer compared with the golden model",
                      fontsize="medium")
    if fps_key:
        axes[1].set_ylabel(f"frames/s at {fps_key[4:]}")
        axes[1].set_yscale("log")
    axes[1].set_xticks(range(len(configs)))
    axes[1].set_xticklabels([f"{r}x{c}\nibuf {i}\nacc {a}" for r, c, i, a in configs], fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

