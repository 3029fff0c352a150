"""Per-layer reports of a whole-network run: printed, saved as CSV and JSON, and drawn as a PNG."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from hw.isa import PROFILE_FIELDS, EngineConfig
from sw.compiler import Program

__all__ = ["LayerRow", "NetworkReport", "network_report"]


@dataclasses.dataclass
class LayerRow:
    layer: str
    op: str
    detail: str
    out_shape: tuple
    commands: int
    macs: int
    cycles: int
    utilization: float
    read_bytes: int
    write_bytes: int
    bit_exact: bool | None
    profile: dict


@dataclasses.dataclass
class NetworkReport:
    network: str
    config: EngineConfig
    backend: str
    rows: list[LayerRow]
    cycles: int
    wall_s: float
    clock_mhz: float

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def utilization(self) -> float:
        return self.macs / (self.cycles * self.config.macs_per_cycle) if self.cycles else float("nan")

    @property
    def fps(self) -> float:
        return self.clock_mhz * 1e6 / self.cycles if self.cycles else float("nan")

    @property
    def bit_exact(self) -> bool | None:
        flags = [r.bit_exact for r in self.rows if r.bit_exact is not None]
        return all(flags) if flags else None

    def table(self) -> str:
        hdr = (f"{'layer':26s} {'op':5s} {'detail':34s} {'cmds':>4s} {'MACs':>12s} {'cycles':>10s} {'util':>6s} "
               f"{'read B':>10s} {'write B':>10s} {'exact':>5s}")
        lines = [hdr, "-" * len(hdr)]
        for r in self.rows:
            exact = "" if r.bit_exact is None else ("yes" if r.bit_exact else "NO")
            util = f"{r.utilization:6.1%}" if r.macs else "     -"
            lines.append(f"{r.layer[:26]:26s} {r.op:5s} {r.detail[:34]:34s} {r.commands:>4d} {r.macs:>12,d} "
                         f"{r.cycles:>10,d} {util} {r.read_bytes:>10,d} {r.write_bytes:>10,d} {exact:>5s}")
        lines.append("-" * len(hdr))
        exact = "" if self.bit_exact is None else ("yes" if self.bit_exact else "NO")
        lines.append(f"{'total':26s} {'':5s} {'':34s} {sum(r.commands for r in self.rows):>4d} {self.macs:>12,d} "
                     f"{self.cycles:>10,d} {self.utilization:6.1%} {sum(r.read_bytes for r in self.rows):>10,d} "
                     f"{sum(r.write_bytes for r in self.rows):>10,d} {exact:>5s}")
        lines.append(f"{self.network} on a {self.config.rows}x{self.config.cols} array ({self.backend}): "
                     f"{self.cycles:,} cycles, MAC utilization {self.utilization:.1%}, "
                     f"{self.fps:.1f} frames/s at {self.clock_mhz:g} MHz; simulation wall time {self.wall_s:.1f} s"
                     + (f" ({self.cycles / self.wall_s / 1e3:,.0f} kcycles/s)" if self.wall_s > 0 else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "network": self.network, "backend": self.backend, "config": dataclasses.asdict(self.config),
            "cycles": self.cycles, "macs": self.macs, "utilization": self.utilization, "clock_mhz": self.clock_mhz,
            "fps": self.fps, "wall_s": self.wall_s, "bit_exact": self.bit_exact,
            "layers": [dataclasses.asdict(r) | {"out_shape": list(r.out_shape)} for r in self.rows],
        }

    def save(self, stem: str | Path) -> list[Path]:
        """Write ``stem.csv``, ``stem.json`` and ``stem.png``; return the paths."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        csv_path, json_path, png_path = stem.with_suffix(".csv"), stem.with_suffix(".json"), stem.with_suffix(".png")
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["layer", "op", "detail", "out_shape", "commands", "macs", "cycles", "utilization",
                        "read_bytes", "write_bytes", "bit_exact", *PROFILE_FIELDS])
            for r in self.rows:
                w.writerow([r.layer, r.op, r.detail, "x".join(map(str, r.out_shape)), r.commands, r.macs, r.cycles,
                            f"{r.utilization:.4f}", r.read_bytes, r.write_bytes,
                            "" if r.bit_exact is None else int(r.bit_exact),
                            *(r.profile.get(k, "") for k in PROFILE_FIELDS)])
        json_path.write_text(json.dumps(self.to_dict(), indent=1))
        self.plot(png_path)
        return [csv_path, json_path, png_path]

    def plot(self, path: Path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [r.layer for r in self.rows]
        x = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(names) + 2), 5))
        bottom = np.zeros(len(names))
        # Where each layer's cycles went: load, the micro-ops, and the rest.
        parts = [("load", "band loads (+pool)"), ("op0", "conv / squeeze"), ("op1", "expand 1x1"),
                 ("op2", "expand 3x3")]
        for key, label in parts:
            vals = np.array([r.profile.get(key, 0) for r in self.rows], dtype=float)
            ax.bar(x, vals, bottom=bottom, label=label)
            bottom += vals
        rest = np.array([r.cycles for r in self.rows], dtype=float) - bottom
        ax.bar(x, np.maximum(rest, 0), bottom=bottom, label="fetch, checks", color="0.7")
        ax.set_ylabel("cycles")
        ax.set_xticks(x, names, rotation=70, ha="right", fontsize=7)
        ax2 = ax.twinx()
        util = [r.utilization if r.macs else np.nan for r in self.rows]
        ax2.plot(x, util, "ko-", label="MAC utilization")
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("MAC utilization")
        ax.set_title(f"{self.network}: {self.cycles:,} cycles, {self.utilization:.1%} utilization "
                     f"({self.config.rows}x{self.config.cols} array)")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def network_report(program: Program, profile: list[dict] | None, *, network: str, backend: str, wall_s: float,
                   cycles: int | None, clock_mhz: float = 100.0, exact: dict[str, bool] | None = None
                   ) -> NetworkReport:
    """Aggregate a profiled whole-program run by layer.

    ``profile`` is the driver's per-command records (``None`` for the golden backend: no cycles);
    ``exact`` maps a layer's output tensor to whether it matched the golden model.
    """
    rows = []
    cfg = program.config
    for layer, idx in program.layer_steps().items():
        steps = [program.steps[i] for i in idx]
        prof = {}
        for i in idx:
            for k, v in (profile[i] if profile else {}).items():
                prof[k] = prof.get(k, 0) + v
        cyc = prof.get("cycles", 0)
        macs = sum(s.macs for s in steps)
        out = steps[0].output
        shape = tuple(program.qgraph.tensors[out].shape) if out in program.qgraph.tensors else ()
        rows.append(LayerRow(
            layer=layer, op=steps[0].kind, detail=steps[0].detail, out_shape=shape, commands=len(steps),
            macs=macs, cycles=cyc, utilization=macs / (cyc * cfg.macs_per_cycle) if cyc else float("nan"),
            read_bytes=sum(s.read_bytes for s in steps), write_bytes=sum(s.write_bytes for s in steps),
            bit_exact=None if exact is None else exact.get(out), profile=prof))
    total = cycles if cycles is not None else sum(r.cycles for r in rows)
    return NetworkReport(network=network, config=cfg, backend=backend, rows=rows, cycles=total, wall_s=wall_s,
                         clock_mhz=clock_mhz)
