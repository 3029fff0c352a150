"""LiteDRAM standalone cores, generated at build time from a config kept in the repository.

:func:`generate` runs ``litedram_gen CONFIG.yml [--sim] --output-dir DIR`` in a subprocess (so that
``hw`` never imports migen or LiteX), caches the output under ``build/litedram/<hash>`` keyed by the
config text, the ``--sim`` flag and the LiteDRAM version, and returns a :class:`DramCore`: the
Verilog path, the top module's ports, the control/status registers of its ``wb_ctrl`` bus and the
initialisation sequence that a host or an init sequencer must play over that bus.

With ``cpu: None`` the core does not initialise the SDRAM itself: its DFII starts under software
control, and ``init_done`` is a register. :attr:`DramCore.init_writes` is the LiteX BIOS's
``sdram_init()`` for this config as a list of (register, value, wait cycles) writes: the chip's
``init_sequence()`` from the generated ``sdram_phy.h``, then ``dfii_control = SEL`` (hand the DRAM
to the controller), then ``ddrctrl_init_done = 1`` (which opens the user ports).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

__all__ = ["DramGenError", "DramCore", "Port", "generate", "ULX3S_SDRAM_CONFIG", "ECPIX5_DDR3_CONFIG",
           "parse_ports",
           "parse_init_sequence"]

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent.parent
#: The ULX3S-85F's SDRAM core (MT48LC16M16, 32 MB, 16-bit, GENSDRPHY, 45 MHz sys clock).
ULX3S_SDRAM_CONFIG = HERE / "ulx3s_sdram.yml"
#: The ECPIX-5's DDR3 core (MT41K256M16, 512 MB, 16-bit, ECP5DDRPHY, 75 MHz sys clock, 128-bit port).
ECPIX5_DDR3_CONFIG = HERE / "ecpix5_ddr3.yml"

#: DFII command and control bits (litedram/init.py: the same names as the generated sdram_phy.h).
DFII_BITS = {
    "DFII_CONTROL_SEL": 0x01, "DFII_CONTROL_CKE": 0x02, "DFII_CONTROL_ODT": 0x04, "DFII_CONTROL_RESET_N": 0x08,
    "DFII_COMMAND_CS": 0x01, "DFII_COMMAND_WE": 0x02, "DFII_COMMAND_CAS": 0x04, "DFII_COMMAND_RAS": 0x08,
    "DFII_COMMAND_WRDATA": 0x10, "DFII_COMMAND_RDDATA": 0x20,
}


class DramGenError(RuntimeError):
    """litedram_gen is missing or failed, or its output is not the expected core."""


@dataclasses.dataclass(frozen=True)
class Port:
    """One port of the generated core's top module."""

    direction: str  # "input" or "output"
    width: int
    name: str


@dataclasses.dataclass(frozen=True)
class DramCore:
    """A generated LiteDRAM core.

    Attributes
    ----------
    verilog : Path
        ``gateware/<name>.v``.
    name : str
        Top module name.
    sim : bool
        Generated with ``--sim`` (SDRAMPHYModel inside: no SDRAM pads).
    ports : dict[str, Port]
        Top-module ports by name.
    csrs : dict[str, int]
        Control/status register byte addresses on ``wb_ctrl`` (from ``csr.csv``); the Wishbone
        word address is the byte address divided by 4.
    init_writes : list[tuple[str, int, int]]
        (register, value, cycles to wait after the write): the BIOS's ``sdram_init()``.
    native_data_width : int
        Width of ``user_port_native_0_{w,r}data_data`` (one native word).
    native_address_width : int
        Width of ``user_port_native_0_cmd_addr`` (addresses count native words).
    directory : Path
        The cache directory holding everything litedram_gen wrote.
    """

    verilog: Path
    name: str
    sim: bool
    ports: dict
    csrs: dict
    init_writes: list
    native_data_width: int
    native_address_width: int
    directory: Path

    @property
    def size_bytes(self) -> int:
        """Bytes the native port reaches."""
        return (1 << self.native_address_width) * self.native_data_width // 8


def parse_ports(verilog: str, module: str) -> dict[str, Port]:
    """The ports of ``module`` in LiteX's Verilog (``input  wire [N:0] name,`` lines)."""
    head = re.search(rf"^module {re.escape(module)}\s*\((.*?)\);", verilog, flags=re.MULTILINE | re.DOTALL)
    if head is None:
        raise DramGenError(f"no module {module!r} in the generated Verilog")
    ports = {}
    for direction, msb, name in re.findall(r"(input|output|inout)\s+wire\s+(?:\[(\d+):0\]\s+)?(\w+)", head.group(1)):
        ports[name] = Port(direction, int(msb) + 1 if msb else 1, name)
    return ports


def parse_init_sequence(sdram_phy_h: str) -> list[tuple[str, int, int]]:
    """``init_sequence()`` of a generated ``sdram_phy.h`` as (register, value, wait cycles) writes.

    ``command_p0(c)`` is two writes (``dfii_pi0_command = c``, ``dfii_pi0_command_issue = 1``);
    ``cdelay(n)`` (a busy loop of n iterations in the BIOS) becomes a wait of n cycles after the
    preceding write.
    """
    body = sdram_phy_h.partition("static inline void init_sequence(void)")[2].partition("\n}\n")[0]
    if not body:
        raise DramGenError("no init_sequence() in sdram_phy.h")

    def value(expr: str) -> int:
        total = 0
        for term in expr.split("|"):
            term = term.strip()
            total |= DFII_BITS[term] if term in DFII_BITS else int(term, 0)
        return total

    writes: list[list] = []
    for call, arg in re.findall(r"^\s*(\w+)\((.*)\);", body, flags=re.MULTILINE):
        if call == "cdelay":
            if not writes:
                raise DramGenError("init_sequence() starts with a delay")
            writes[-1][2] += int(arg, 0)
        elif call == "command_p0":
            writes += [["sdram_dfii_pi0_command", value(arg), 0], ["sdram_dfii_pi0_command_issue", 1, 0]]
        elif call.endswith("_write"):
            writes.append([call[: -len("_write")], value(arg), 0])
        else:
            raise DramGenError(f"unknown call {call}() in init_sequence()")
    return [tuple(w) for w in writes]


def _fix_inout(verilog: Path) -> None:
    """Declare the data pins ``inout``: LiteX's standalone core declares ``sdram_dq`` (``ddram_dq``,
    ``ddram_dqs_p``) an ``input`` although its ``TRELLIS_IO`` buffers drive them (Yosys then cannot connect
    them to the board's bidirectional pins)."""
    text = verilog.read_text()
    fixed = re.sub(r"^(\s*)input(\s+wire\s+(?:\[\d+:0\]\s+)?(?:sdram_dq|ddram_dq|ddram_dqs_p)\b)", r"\1inout\2",
                   text, flags=re.M)
    if fixed != text:
        verilog.write_text(fixed)


def _parse_csrs(csv_text: str) -> dict[str, int]:
    csrs = {}
    for line in csv_text.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and fields[0] == "csr_register":
            csrs[fields[1]] = int(fields[2], 0)
    return csrs


def _litedram_gen() -> list[str]:
    exe = Path(sys.executable).parent / "litedram_gen"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("litedram_gen")
    if found is None:
        raise DramGenError("litedram_gen not found: install the LiteX family (pip install -e '.[dram]')")
    return [found]


def _litedram_version() -> str:
    try:
        return importlib_metadata.version("litedram")
    except importlib_metadata.PackageNotFoundError:
        raise DramGenError("litedram is not installed: pip install -e '.[dram]'") from None


def default_cache_root() -> Path:
    return Path(os.environ.get("KINDLING_DRAM_BUILD", REPO_ROOT / "build" / "litedram")).resolve()


def generate(config: str | os.PathLike = ULX3S_SDRAM_CONFIG, *, sim: bool = False, name: str = "litedram_core",
             cache_root: str | os.PathLike | None = None) -> DramCore:
    """Generate (or reuse) the LiteDRAM core of ``config``.

    Raises
    ------
    DramGenError
        If litedram_gen is missing, fails, or writes no core (with the end of its log).
    """
    config = Path(config)
    if not config.is_file():
        raise DramGenError(f"LiteDRAM config {config} does not exist")
    text = config.read_text()
    key = hashlib.sha256(f"{text}\0{sim}\0{name}\0{_litedram_version()}".encode()).hexdigest()[:16]
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    directory = root / f"{config.stem}-{'sim' if sim else 'hw'}-{key}"
    verilog = directory / "gateware" / f"{name}.v"
    with open(root / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "done").exists():
            shutil.rmtree(directory, ignore_errors=True)
            cmd = [*_litedram_gen(), str(config.resolve()), "--name", name, "--output-dir", str(directory)]
            if sim:
                cmd.append("--sim")
            proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
            (root / f"{directory.name}.log").write_text(proc.stdout + proc.stderr)
            # With --sim, litedram_gen writes the Verilog and then fails to set up LiteX's own
            # Verilator build (it wants pythondata-misc-tapcfg for an Ethernet tap we do not use):
            # the core is complete when the Verilog ends with its last module.
            if not verilog.exists() or "endmodule" not in verilog.read_text()[-2000:]:
                tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
                raise DramGenError(f"litedram_gen {config.name} failed (exit {proc.returncode}):\n{tail}")
            _fix_inout(verilog)
            (directory / "done").write_text(" ".join(cmd) + "\n")
    vtext = verilog.read_text()
    ports = parse_ports(vtext, name)
    try:
        data_width = ports["user_port_native_0_wdata_data"].width
        address_width = ports["user_port_native_0_cmd_addr"].width
    except KeyError as exc:
        raise DramGenError(f"the core has no native user port native_0 ({exc})") from None
    csrs = _parse_csrs((directory / "csr.csv").read_text())
    init = parse_init_sequence((directory / "software" / "include" / "generated" / "sdram_phy.h").read_text())
    init += [("sdram_dfii_control", DFII_BITS["DFII_CONTROL_SEL"], 0), ("ddrctrl_init_done", 1, 0)]
    missing = sorted({reg for reg, _, _ in init} - csrs.keys())
    if missing:
        raise DramGenError(f"csr.csv lacks the init registers {missing}")
    return DramCore(verilog, name, sim, ports, csrs, init, data_width, address_width, directory)
